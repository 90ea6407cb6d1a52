//! Teams: list (members see their own), create and delete (admin), add and remove members
//! (admin). A team's name is what keys (`team`) and budgets (`team:<name>`) carry, so
//! usage, limits and budgets roll up per team.

use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::state::ApiState;
use crate::store::TeamRow;
use crate::users::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_teams, create_team))
        .routes(routes!(get_team, delete_team))
        .routes(routes!(add_member, remove_member))
}

/// A team as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TeamView {
    /// Stable id.
    pub id: String,
    /// Unique name, the one keys and budgets carry.
    pub name: String,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Members' user names, sorted.
    pub members: Vec<String>,
}

impl From<TeamRow> for TeamView {
    fn from(team: TeamRow) -> Self {
        Self {
            id: team.id,
            name: team.name,
            created_at_ms: team.created_at_ms,
            members: team.members,
        }
    }
}

/// A new team.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    /// Unique name.
    pub name: String,
}

/// The team with `id` if the caller may see it: admins and viewers see every team,
/// members only their own (any other is "not found").
async fn visible_team(state: &ApiState, caller: &Caller, id: &str) -> Result<TeamRow, ApiError> {
    let team = state
        .store
        .team_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if caller.role == Role::Member && !team.members.contains(&caller.user_name) {
        return Err(ApiError::NotFound);
    }
    Ok(team)
}

/// Teams: every team for admins and viewers, a member's own for members.
#[utoipa::path(
    get,
    path = "/api/teams",
    tag = "teams",
    responses((status = 200, description = "Teams by name", body = [TeamView]))
)]
async fn list_teams(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<axum::Json<Vec<TeamView>>, ApiError> {
    let only = (caller.role == Role::Member).then_some(caller.user_id.as_str());
    let teams = state.store.list_teams(only).await?;
    Ok(axum::Json(teams.into_iter().map(TeamView::from).collect()))
}

/// Creates a team (admin only).
#[utoipa::path(
    post,
    path = "/api/teams",
    tag = "teams",
    request_body = NewTeam,
    responses(
        (status = 201, description = "Created", body = TeamView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    )
)]
async fn create_team(
    State(state): State<ApiState>,
    caller: Caller,
    Json(new): Json<NewTeam>,
) -> Result<(StatusCode, axum::Json<TeamView>), ApiError> {
    caller.require(Role::Admin)?;
    let name = crate::keys::owner_name("team", &new.name)
        .map_err(|e| ApiError::invalid("name", e.to_string().trim_start_matches("team name ")))?;
    let id = format!("team_{}", hex::encode(rand::random::<[u8; 8]>()));
    let now = state.clock.now_ms();
    if !state.store.insert_team(&id, &name, now).await? {
        return Err(ApiError::Conflict(format!("a team named `{name}` exists")));
    }
    state.audit(&caller, "team.create", &name).await?;
    let team = TeamView {
        id,
        name,
        created_at_ms: now,
        members: Vec::new(),
    };
    Ok((StatusCode::CREATED, axum::Json(team)))
}

/// A team.
#[utoipa::path(
    get,
    path = "/api/teams/{id}",
    tag = "teams",
    params(("id" = String, Path, description = "The team's id")),
    responses(
        (status = 200, description = "The team", body = TeamView),
        (status = 404, description = "No such team, or not one the caller may see", body = ErrorBody),
    )
)]
async fn get_team(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TeamView>, ApiError> {
    Ok(axum::Json(visible_team(&state, &caller, &id).await?.into()))
}

/// Deletes a team and its memberships (admin only); keys keep the name they carry.
#[utoipa::path(
    delete,
    path = "/api/teams/{id}",
    tag = "teams",
    params(("id" = String, Path, description = "The team's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such team", body = ErrorBody),
    )
)]
async fn delete_team(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let team = visible_team(&state, &caller, &id).await?;
    state.store.delete_team(&id).await?;
    state.audit(&caller, "team.delete", &team.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a user to a team (admin only).
#[utoipa::path(
    put,
    path = "/api/teams/{id}/members/{user_id}",
    tag = "teams",
    params(
        ("id" = String, Path, description = "The team's id"),
        ("user_id" = String, Path, description = "The user's id"),
    ),
    responses(
        (status = 200, description = "The team with the user", body = TeamView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such team or user", body = ErrorBody),
    )
)]
async fn add_member(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<axum::Json<TeamView>, ApiError> {
    caller.require(Role::Admin)?;
    let team = visible_team(&state, &caller, &id).await?;
    let user = state
        .store
        .user_by_id(&user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if state
        .store
        .add_team_member(&id, &user_id, state.clock.now_ms())
        .await?
    {
        state
            .audit(
                &caller,
                "team.add_member",
                &format!("{}/{}", team.name, user.name),
            )
            .await?;
    }
    Ok(axum::Json(visible_team(&state, &caller, &id).await?.into()))
}

/// Removes a user from a team (admin only).
#[utoipa::path(
    delete,
    path = "/api/teams/{id}/members/{user_id}",
    tag = "teams",
    params(
        ("id" = String, Path, description = "The team's id"),
        ("user_id" = String, Path, description = "The user's id"),
    ),
    responses(
        (status = 200, description = "The team without the user", body = TeamView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such team, or the user is not in it", body = ErrorBody),
    )
)]
async fn remove_member(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<axum::Json<TeamView>, ApiError> {
    caller.require(Role::Admin)?;
    let team = visible_team(&state, &caller, &id).await?;
    let user = state
        .store
        .user_by_id(&user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !state.store.remove_team_member(&id, &user_id).await? {
        return Err(ApiError::NotFound);
    }
    state
        .audit(
            &caller,
            "team.remove_member",
            &format!("{}/{}", team.name, user.name),
        )
        .await?;
    Ok(axum::Json(visible_team(&state, &caller, &id).await?.into()))
}

#[cfg(test)]
mod tests;

//! Dollar budgets of keys, users and teams (`GET|PUT /api/budgets`,
//! `DELETE /api/budgets/{id}`) and users' own rate limits (`GET|PUT /api/limits/users/{name}`).
//!
//! Admins set them; viewers read every one; a member reads the budgets of their own keys
//! and of themselves. Money travels as exact dollar strings with twelve decimals (a
//! pico-dollar each), never as a float and never as an integer a browser would round.

use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::state::ApiState;
use crate::budgets::{Period, Subject, parse_dollars};
use crate::keys::owner_name;
use crate::store::{BudgetStatus, Limits};
use crate::usage::dollars;
use crate::users::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_budgets, set_budget))
        .routes(routes!(delete_budget))
        .routes(routes!(get_user_limits, set_user_limits))
}

/// How often a budget's money comes back (UTC calendar windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodView {
    /// Each UTC day.
    Day,
    /// Each UTC month.
    Month,
    /// Never: one window for all time.
    Total,
}

impl From<Period> for PeriodView {
    fn from(p: Period) -> Self {
        match p {
            Period::Day => Self::Day,
            Period::Month => Self::Month,
            Period::Total => Self::Total,
        }
    }
}

impl From<PeriodView> for Period {
    fn from(p: PeriodView) -> Self {
        match p {
            PeriodView::Day => Self::Day,
            PeriodView::Month => Self::Month,
            PeriodView::Total => Self::Total,
        }
    }
}

/// A budget and its money in the current window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    /// Stable id, `bud_…`.
    pub id: String,
    /// `key:<id>`, `user:<name>` or `team:<name>`.
    pub subject: String,
    /// How often its money comes back.
    pub period: PeriodView,
    /// Dollars per window, exact (`"12.500000000000"`).
    pub limit_usd: String,
    /// Spent in the current window.
    pub spent_usd: String,
    /// Held by gateways for calls in flight or ahead of need, not yet spent.
    pub leased_usd: String,
    /// What new calls can still be admitted against.
    pub available_usd: String,
    /// Start of the current window, Unix ms (0 for a total budget).
    pub window_start_ms: i64,
}

impl From<&BudgetStatus> for BudgetView {
    fn from(b: &BudgetStatus) -> Self {
        Self {
            id: b.budget.id.clone(),
            subject: b.budget.subject.clone(),
            period: b.budget.period.into(),
            limit_usd: dollars(u128::from(b.budget.limit_picos)),
            spent_usd: dollars(u128::from(b.spent_picos)),
            leased_usd: dollars(u128::from(b.leased_picos)),
            available_usd: dollars(u128::from(b.available_picos())),
            window_start_ms: b.window_start_ms,
        }
    }
}

/// Whose money a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// One key, by id.
    Key,
    /// Every key of a user, by name.
    User,
    /// Every key of a team, by name.
    Team,
}

/// A budget to create, or to change if its subject already has one of that period.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetAsk {
    /// Whose money.
    pub kind: SubjectKind,
    /// The key's id, or the user's or team's name.
    pub name: String,
    /// How often its money comes back.
    pub period: PeriodView,
    /// Dollars per window, as a decimal string (`"12.50"`), at most 12 decimals.
    pub usd: String,
}

/// A user's own rate limits (`null`: the configured default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserLimitsView {
    /// Requests per minute across all their keys (0 refuses every call).
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute across all their keys (0 refuses every call).
    pub tokens_per_minute: Option<u64>,
}

/// `name` as a user's name, or 422 if no user has it: a typo'd name would limit no one.
async fn existing_user(state: &ApiState, name: &str) -> Result<String, ApiError> {
    let name = owner_name("user", name)?;
    if state.store.user_by_name(&name).await?.is_none() {
        return Err(ApiError::invalid("user", "names no user"));
    }
    Ok(name)
}

/// The subjects a member may read budgets of: themselves and each of their keys.
async fn own_subjects(state: &ApiState, caller: &Caller) -> Result<HashSet<String>, ApiError> {
    let mut subjects: HashSet<String> = state
        .store
        .list_keys_of_user(&caller.user_name)
        .await?
        .into_iter()
        .map(|k| Subject::Key(k.id).to_string())
        .collect();
    subjects.insert(Subject::User(caller.user_name.clone()).to_string());
    Ok(subjects)
}

/// The budgets the caller may read, with their money in the current window.
#[utoipa::path(
    get,
    path = "/api/budgets",
    tag = "budgets",
    responses((status = 200, description = "Budgets", body = [BudgetView]))
)]
async fn list_budgets(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<axum::Json<Vec<BudgetView>>, ApiError> {
    let all = state.store.list_budgets(state.clock.now_ms()).await?;
    let visible: Vec<BudgetView> = if caller.role == Role::Member {
        let own = own_subjects(&state, &caller).await?;
        all.iter()
            .filter(|b| own.contains(&b.budget.subject))
            .map(BudgetView::from)
            .collect()
    } else {
        all.iter().map(BudgetView::from).collect()
    };
    Ok(axum::Json(visible))
}

/// Sets a budget (admins): created, or its limit changed if the subject already has one
/// of that period. Lowering it never takes back money already leased to gateways.
#[utoipa::path(
    put,
    path = "/api/budgets",
    tag = "budgets",
    request_body = BudgetAsk,
    responses(
        (status = 201, description = "Created", body = BudgetView),
        (status = 200, description = "Changed", body = BudgetView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "A field is wrong (no such key or user, a revoked key, a bad amount)", body = ErrorBody),
    )
)]
async fn set_budget(
    State(state): State<ApiState>,
    caller: Caller,
    Json(ask): Json<BudgetAsk>,
) -> Result<(StatusCode, axum::Json<BudgetView>), ApiError> {
    caller.require(Role::Admin)?;
    let subject = match ask.kind {
        SubjectKind::Key => match state.store.key_by_id(&ask.name).await? {
            None => return Err(ApiError::invalid("name", "names no key")),
            Some(key) if key.revoked_at_ms.is_some() => {
                return Err(ApiError::invalid("name", "names a revoked key"));
            }
            Some(_) => Subject::Key(ask.name),
        },
        SubjectKind::User => Subject::User(existing_user(&state, &ask.name).await?),
        SubjectKind::Team => Subject::Team(owner_name("team", &ask.name)?),
    };
    let limit_picos = parse_dollars(&ask.usd).map_err(|e| ApiError::invalid("usd", e))?;
    let now_ms = state.clock.now_ms();
    let set = state
        .store
        .set_budget(&subject.to_string(), ask.period.into(), limit_picos, now_ms)
        .await?;
    state.audit(&caller, "budget.set", &set.budget.id).await?;
    let status = state
        .store
        .list_budgets(now_ms)
        .await?
        .into_iter()
        .find(|b| b.budget.id == set.budget.id)
        .ok_or(ApiError::Internal)?;
    let code = if set.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(BudgetView::from(&status))))
}

/// Deletes a budget (admins); calls are no longer limited by it.
#[utoipa::path(
    delete,
    path = "/api/budgets/{id}",
    tag = "budgets",
    params(("id" = String, Path, description = "The budget's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such budget", body = ErrorBody),
    )
)]
async fn delete_budget(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if !state.store.delete_budget(&id).await? {
        return Err(ApiError::NotFound);
    }
    state.audit(&caller, "budget.delete", &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's own rate limits; a member reads only their own.
#[utoipa::path(
    get,
    path = "/api/limits/users/{name}",
    tag = "budgets",
    params(("name" = String, Path, description = "The user's name")),
    responses(
        (status = 200, description = "Their limits (`null`: the configured default)", body = UserLimitsView),
        (status = 404, description = "Another member's", body = ErrorBody),
    )
)]
async fn get_user_limits(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<UserLimitsView>, ApiError> {
    if caller.role == Role::Member && name != caller.user_name {
        return Err(ApiError::NotFound);
    }
    let limits = state.store.user_limits(&name).await?;
    Ok(axum::Json(UserLimitsView {
        requests_per_minute: limits.requests_per_minute,
        tokens_per_minute: limits.tokens_per_minute,
    }))
}

/// Sets a user's own rate limits (admins), shared by all their keys; gateways apply them
/// within their key cache time.
#[utoipa::path(
    put,
    path = "/api/limits/users/{name}",
    tag = "budgets",
    params(("name" = String, Path, description = "The user's name")),
    request_body = UserLimitsView,
    responses(
        (status = 200, description = "Set", body = UserLimitsView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "A bad name, or no such user", body = ErrorBody),
    )
)]
async fn set_user_limits(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(ask): Json<UserLimitsView>,
) -> Result<axum::Json<UserLimitsView>, ApiError> {
    caller.require(Role::Admin)?;
    let name = existing_user(&state, &name).await?;
    if ask
        .tokens_per_minute
        .is_some_and(|n| i64::try_from(n).is_err())
    {
        return Err(ApiError::invalid(
            "tokens_per_minute",
            format!("is at most {}", i64::MAX),
        ));
    }
    let limits = Limits {
        requests_per_minute: ask.requests_per_minute,
        tokens_per_minute: ask.tokens_per_minute,
    };
    state.store.set_user_limits(&name, limits).await?;
    state.audit(&caller, "user.limits", &name).await?;
    Ok(axum::Json(ask))
}

#[cfg(test)]
mod tests;

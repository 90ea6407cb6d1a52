//! The audit log: `GET /api/audit` (admin), newest first, in keyset pages.

use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Query;
use super::state::ApiState;
use crate::audit::AuditRecord;
use crate::users::Role;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most entries one page holds.
const MAX_PAGE: u32 = 500;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Which page of the log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries per page, 1 to 500 (default 100).
    pub limit: Option<u32>,
    /// The cursor of the previous page (`next` of its answer): entries older than it.
    pub before: Option<String>,
}

/// A page of the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub entries: Vec<AuditRecord>,
    /// The cursor of the next (older) page; absent on the last.
    pub next: Option<String>,
}

/// A cursor past `record`: its time and id, which order the log.
fn cursor(record: &AuditRecord) -> String {
    format!("{}:{}", record.entry.at_ms, record.id)
}

/// The time and id a cursor names.
fn parse_cursor(text: &str) -> Result<(i64, &str), ApiError> {
    let bad = || ApiError::invalid("before", "must be the `next` of a previous page");
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    let at = at.parse().map_err(|_| bad())?;
    if !id.starts_with("aud_") || !id.bytes().skip(4).all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((at, id))
}

/// The audit log (admin only): who changed what, when and from where.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries, newest first", body = AuditPage),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "A bad limit or cursor", body = ErrorBody),
    )
)]
async fn list_audit(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    caller.require(Role::Admin)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be from 1 to {MAX_PAGE}"),
        ));
    }
    let before = query.before.as_deref().map(parse_cursor).transpose()?;
    // One more than the page, to tell whether another follows.
    let mut entries = state.store.list_audit(before, i64::from(limit) + 1).await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next = if more {
        entries.last().map(cursor)
    } else {
        None
    };
    Ok(axum::Json(AuditPage { entries, next }))
}

#[cfg(test)]
mod tests {
    use crate::api::testing::TestApi;
    use crate::users::Role;
    use axum::http::StatusCode;
    use serde_json::json;

    #[tokio::test]
    async fn admins_page_through_the_log_others_may_not_read_it() {
        let api = TestApi::start().await;
        let admin = api.user(Role::Admin, "root").await;
        for i in 0..5 {
            api.clock.advance_ms(1);
            let new = json!({"name": format!("user{i}"), "role": "member", "password": "a long enough password"});
            assert_eq!(admin.post("/api/users", new).await.0, StatusCode::CREATED);
        }
        let (status, page) = admin.get("/api/audit?limit=2").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let targets = |page: &serde_json::Value| -> Vec<String> {
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["target"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(targets(&page), ["user4", "user3"]);
        assert_eq!(page["entries"][0]["actor"], "root");
        assert_eq!(page["entries"][0]["action"], "user.create");
        assert_eq!(page["entries"][0]["from"], admin.addr.ip().to_string());
        let next = page["next"].as_str().unwrap();
        let (_, page) = admin
            .get(&format!("/api/audit?limit=2&before={next}"))
            .await;
        assert_eq!(targets(&page), ["user2", "user1"]);
        let next = page["next"].as_str().unwrap();
        let (_, page) = admin
            .get(&format!("/api/audit?limit=2&before={next}"))
            .await;
        // user0, then root's login: the last page.
        assert_eq!(targets(&page)[0], "user0");
        assert_eq!(page["entries"][1]["action"], "session.login");
        assert!(page["next"].is_null());

        for role in [Role::Member, Role::Viewer] {
            let client = api.user(role, &format!("{role}-reader")).await;
            assert_eq!(client.get("/api/audit").await.0, StatusCode::FORBIDDEN);
        }
        for bad in [
            "limit=0",
            "limit=501",
            "before=nonsense",
            "before=1:aud_zz%27%20OR%201=1",
            "sort=id",
        ] {
            let (status, json) = admin.get(&format!("/api/audit?{bad}")).await;
            assert!(
                status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
                "{bad}: {status} {json}"
            );
        }
    }
}

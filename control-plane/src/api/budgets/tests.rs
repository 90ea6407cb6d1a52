//! `/api/budgets` and `/api/limits/users/{name}` for each role.

use crate::api::testing::{TestApi, TestClient};
use crate::users::Role;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

async fn put(client: &TestClient, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, json) = client
        .send(client.request(Method::PUT, path, Some(body)))
        .await;
    (status, json)
}

fn ask(kind: &str, name: &str, period: &str, usd: &str) -> Value {
    json!({"kind": kind, "name": name, "period": period, "usd": usd})
}

fn subjects(list: &Value) -> Vec<String> {
    let mut s: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["subject"].as_str().unwrap().to_owned())
        .collect();
    s.sort();
    s
}

async fn budgets_by_role(api: TestApi) {
    let admin = api.user(Role::Admin, "root").await;
    let alice = api.user(Role::Member, "alice").await;
    let viewer = api.user(Role::Viewer, "vera").await;
    let (status, key) = alice.post("/api/keys", json!({"name": "alice's"})).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    api.forbid(key["secret"].as_str().unwrap());
    let key_id = key["key"]["id"].as_str().unwrap();

    let (status, b) = put(&admin, "/api/budgets", ask("key", key_id, "day", "12.50")).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(
        b["limit_usd"], "12.500000000000",
        "exact dollars, as a string"
    );
    assert_eq!(b["available_usd"], "12.500000000000");
    assert_eq!(b["subject"], format!("key:{key_id}"));
    // The same subject and period again changes the limit.
    let (status, changed) = put(
        &admin,
        "/api/budgets",
        ask("key", key_id, "day", "0.000000000001"),
    )
    .await;
    assert_eq!(
        (status, &changed["id"], &changed["limit_usd"]),
        (StatusCode::OK, &b["id"], &json!("0.000000000001"))
    );
    for (body, field) in [
        (ask("key", "key_nope", "day", "1"), "name"),
        (ask("user", "", "day", "1"), "user"),
        (ask("team", "ml", "day", "-1"), "usd"),
        (ask("team", "ml", "day", "1e3"), "usd"),
        (ask("team", "ml", "day", "99999999999"), "usd"),
    ] {
        let (status, e) = put(&admin, "/api/budgets", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{e}"
        );
    }
    let (status, _) = put(&admin, "/api/budgets", ask("team", "ml", "week", "1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown period");
    assert_eq!(
        put(&admin, "/api/budgets", ask("team", "ml", "month", "100"))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        put(&admin, "/api/budgets", ask("user", "alice", "total", "5"))
            .await
            .0,
        StatusCode::CREATED
    );

    // Who sees what: alice her key's and her own, not the team's; viewers everything.
    assert_eq!(
        subjects(&alice.get("/api/budgets").await.1),
        [format!("key:{key_id}"), "user:alice".into()]
    );
    assert_eq!(subjects(&viewer.get("/api/budgets").await.1).len(), 3);
    let path = format!("/api/budgets/{}", b["id"].as_str().unwrap());
    for client in [&alice, &viewer] {
        let (status, _) = put(
            client,
            "/api/budgets",
            ask("user", "alice", "total", "1000"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "only admins set budgets");
        assert_eq!(client.delete(&path).await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(admin.delete(&path).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(&path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(subjects(&alice.get("/api/budgets").await.1), ["user:alice"]);
    let audit: Vec<String> = api
        .store()
        .list_audit(None, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert!(
        audit.contains(&"budget.set".to_owned()) && audit.contains(&"budget.delete".to_owned()),
        "{audit:?}"
    );
}

#[tokio::test]
async fn budgets_are_set_by_admins_and_read_by_whom_they_concern_on_sqlite() {
    budgets_by_role(TestApi::start().await).await;
}

#[tokio::test]
async fn budgets_are_set_by_admins_and_read_by_whom_they_concern_on_postgres() {
    budgets_by_role(TestApi::start_postgres().await).await;
}

#[tokio::test]
async fn a_users_limits_keep_zero_apart_from_the_default() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let alice = api.user(Role::Member, "alice").await;
    let path = "/api/limits/users/alice";
    let (status, set) = put(
        &admin,
        path,
        json!({"requests_per_minute": 0, "tokens_per_minute": null}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let (status, read) = alice.get(path).await;
    assert_eq!(
        (status, read),
        (
            StatusCode::OK,
            json!({"requests_per_minute": 0, "tokens_per_minute": null})
        )
    );
    assert_eq!(
        alice.get("/api/limits/users/root").await.0,
        StatusCode::NOT_FOUND,
        "another user's: 404"
    );
    let (status, _) = put(
        &alice,
        path,
        json!({"requests_per_minute": null, "tokens_per_minute": null}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, e) = put(
        &admin,
        path,
        json!({"requests_per_minute": null, "tokens_per_minute": u64::MAX}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let stored = api.store().user_limits("alice").await.unwrap();
    assert_eq!(
        (stored.requests_per_minute, stored.tokens_per_minute),
        (Some(0), None)
    );
}

#[tokio::test]
async fn a_careless_admin_is_told_of_a_revoked_key_or_a_user_who_does_not_exist() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    api.user(Role::Member, "alice").await;
    let (status, key) = admin.post("/api/keys", json!({"name": "gone"})).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    api.forbid(key["secret"].as_str().unwrap());
    let key_id = key["key"]["id"].as_str().unwrap();
    let (status, _) = admin
        .post(&format!("/api/keys/{key_id}/revoke"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    for (body, field) in [
        (ask("key", key_id, "day", "1"), "name"),
        (ask("user", "alcie", "day", "1"), "user"),
        (ask("user", "alice", "day", &"9".repeat(30)), "usd"),
    ] {
        let (status, e) = put(&admin, "/api/budgets", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{e}"
        );
    }
    let (status, e) = put(
        &admin,
        "/api/limits/users/alcie",
        json!({"requests_per_minute": 5, "tokens_per_minute": null}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        api.store().list_budgets(0).await.unwrap().is_empty(),
        "nothing stored"
    );
    assert_eq!(
        api.store()
            .user_limits("alcie")
            .await
            .unwrap()
            .requests_per_minute,
        None
    );
}

use crate::api::testing::TestApi;
use crate::users::Role;
use axum::http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn only_admins_create_users_and_members_never_an_admin() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let member = api.user(Role::Member, "alice").await;
    let viewer = api.user(Role::Viewer, "vera").await;
    let new = |role: &str| json!({"name": format!("new-{role}"), "role": role, "password": "a long enough password"});
    for client in [&member, &viewer] {
        for role in ["admin", "member"] {
            let (status, json) = client.post("/api/users", new(role)).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{} made a {role}: {json}",
                client.name
            );
            assert_eq!(json["error"]["code"], "forbidden");
        }
    }
    let (status, created) = admin.post("/api/users", new("admin")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["role"], "admin");
    assert!(created.get("password").is_none() && created.get("password_hash").is_none());
    let (status, json) = admin.post("/api/users", new("admin")).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (status, json) = admin
        .post(
            "/api/users",
            json!({"name": "shorty", "role": "member", "password": "short"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`password`"),
        "{json}"
    );
    let (status, _) = admin
        .post(
            "/api/users",
            json!({"name": "x", "role": "superuser", "password": "a long enough password"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an unknown role is refused"
    );
    let entries = api.store().list_audit(None, 10).await.unwrap();
    assert!(entries.iter().any(|e| e.entry.action == "user.create"
        && e.entry.target == "new-admin"
        && e.entry.actor == "root"));
}

#[tokio::test]
async fn admins_and_viewers_list_users_members_may_not() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let member = api.user(Role::Member, "alice").await;
    let viewer = api.user(Role::Viewer, "vera").await;
    for client in [&admin, &viewer] {
        let (status, users) = client.get("/api/users").await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["alice", "root", "vera"]);
    }
    assert_eq!(member.get("/api/users").await.0, StatusCode::FORBIDDEN);
}

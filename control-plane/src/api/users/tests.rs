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

#[tokio::test]
async fn members_see_only_themselves_and_no_one_changes_their_own_role() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let alice = api.user(Role::Member, "alice").await;
    let bob = api.user(Role::Member, "bob").await;
    let viewer = api.user(Role::Viewer, "vera").await;
    assert_eq!(
        alice.get(&format!("/api/users/{}", alice.id)).await.0,
        StatusCode::OK
    );
    let (status, json) = alice.get(&format!("/api/users/{}", bob.id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    assert_eq!(
        alice.get("/api/users/usr_nobody").await,
        (status, json),
        "the same as a missing user"
    );
    assert_eq!(
        viewer.get(&format!("/api/users/{}", bob.id)).await.0,
        StatusCode::OK
    );

    for (client, target) in [
        (&alice, &alice),
        (&admin, &admin),
        (&alice, &bob),
        (&viewer, &bob),
    ] {
        let (status, json) = client
            .patch(
                &format!("/api/users/{}", target.id),
                json!({"role": "admin"}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{} made {} admin: {json}",
            client.name,
            target.name
        );
    }
    assert_eq!(
        api.store()
            .user_by_id(&alice.id)
            .await
            .unwrap()
            .unwrap()
            .role,
        Role::Member
    );
    let (status, json) = admin
        .patch(&format!("/api/users/{}", bob.id), json!({"role": "viewer"}))
        .await;
    assert_eq!(
        (status, json["role"].as_str()),
        (StatusCode::OK, Some("viewer"))
    );
    // Bob's session now carries the viewer role, whatever his token says.
    assert_eq!(
        bob.post(
            "/api/users",
            json!({"name": "x", "role": "member", "password": "a long enough password"})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        bob.get("/api/users").await.0,
        StatusCode::OK,
        "viewers list users"
    );
    assert_eq!(
        admin
            .patch("/api/users/usr_nobody", json!({"disabled": true}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin
            .patch(&format!("/api/users/{}", bob.id), json!({"role": "root"}))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn disabling_ends_sessions_and_enabling_lets_the_user_back_in() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let mut alice = api.user(Role::Member, "alice").await;
    let (status, json) = admin
        .patch(
            &format!("/api/users/{}", alice.id),
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(json["disabled_at_ms"].is_i64());
    assert_eq!(alice.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        admin
            .patch(
                &format!("/api/users/{}", admin.id),
                json!({"disabled": true})
            )
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    admin
        .patch(
            &format!("/api/users/{}", alice.id),
            json!({"disabled": false}),
        )
        .await;
    alice.token = None;
    alice.login().await;
    assert_eq!(alice.get("/api/auth/me").await.0, StatusCode::OK);
}

#[tokio::test]
async fn passwords_change_with_the_current_one_or_by_an_admin_and_sessions_end() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let mut alice = api.user(Role::Member, "alice").await;
    let bob = api.user(Role::Member, "bob").await;
    let path = format!("/api/users/{}/password", alice.id);
    let (status, _) = alice
        .post(
            &path,
            json!({"password": "a brand new password", "current_password": "wrong"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        bob.post(&path, json!({"password": "a brand new password"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = alice
        .post(
            &path,
            json!({"password": "a brand new password", "current_password": alice.password}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        alice.get("/api/auth/me").await.0,
        StatusCode::UNAUTHORIZED,
        "every session ended"
    );
    alice.token = None;
    alice.password = "a brand new password".into();
    alice.login().await;

    let (status, json) = admin.post(&path, json!({"password": "short"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert_eq!(
        admin
            .post(&path, json!({"password": "reset by the admin"}))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(alice.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    let actions: Vec<String> = api
        .store()
        .list_audit(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert!(
        actions.contains(&"user.reset_password".to_owned())
            && actions.contains(&"user.change_password".to_owned())
    );
}

#[tokio::test]
async fn an_admin_ends_someones_sessions_a_member_only_their_own() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let alice = api.user(Role::Member, "alice").await;
    let bob = api.user(Role::Member, "bob").await;
    assert_eq!(
        alice
            .delete(&format!("/api/users/{}/sessions", bob.id))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(bob.get("/api/auth/me").await.0, StatusCode::OK);
    assert_eq!(
        admin
            .delete(&format!("/api/users/{}/sessions", bob.id))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        bob.get("/api/auth/me").await.0,
        StatusCode::UNAUTHORIZED,
        "revocation ends it at once"
    );
    assert_eq!(
        alice
            .delete(&format!("/api/users/{}/sessions", alice.id))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(alice.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
}

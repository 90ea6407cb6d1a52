use crate::api::testing::TestApi;
use crate::users::Role;
use axum::http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn admins_make_teams_members_see_only_their_own() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let alice = api.user(Role::Member, "alice").await;
    let bob = api.user(Role::Member, "bob").await;
    let viewer = api.user(Role::Viewer, "vera").await;
    for client in [&alice, &viewer] {
        let (status, _) = client.post("/api/teams", json!({"name": "sneaky"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{}", client.name);
    }
    let (status, red) = admin.post("/api/teams", json!({"name": "red"})).await;
    assert_eq!(status, StatusCode::CREATED, "{red}");
    let red_id = red["id"].as_str().unwrap();
    let (_, blue) = admin.post("/api/teams", json!({"name": "blue"})).await;
    let blue_id = blue["id"].as_str().unwrap();
    assert_eq!(
        admin.post("/api/teams", json!({"name": "red"})).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        admin.post("/api/teams", json!({"name": ""})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let (status, team) = admin
        .put(
            &format!("/api/teams/{red_id}/members/{}", alice.id),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{team}");
    assert_eq!(team["members"], json!(["alice"]));
    admin
        .put(
            &format!("/api/teams/{blue_id}/members/{}", bob.id),
            json!(null),
        )
        .await;
    assert_eq!(
        alice
            .put(
                &format!("/api/teams/{blue_id}/members/{}", alice.id),
                json!(null)
            )
            .await
            .0,
        StatusCode::FORBIDDEN,
        "a member cannot join a team"
    );
    assert_eq!(
        admin
            .put(
                &format!("/api/teams/{red_id}/members/usr_nobody"),
                json!(null)
            )
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let (_, mine) = alice.get("/api/teams").await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(mine[0]["name"], "red");
    assert_eq!(
        alice.get(&format!("/api/teams/{red_id}")).await.0,
        StatusCode::OK
    );
    let (status, json) = alice.get(&format!("/api/teams/{blue_id}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another team looks like no team: {json}"
    );
    let (_, all) = viewer.get("/api/teams").await;
    assert_eq!(all.as_array().unwrap().len(), 2);

    let path = format!("/api/teams/{red_id}/members/{}", alice.id);
    let (status, team) = admin.delete(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(team["members"], json!([]));
    assert_eq!(
        admin.delete(&path).await.0,
        StatusCode::NOT_FOUND,
        "not in it any more"
    );
    assert_eq!(
        viewer.delete(&format!("/api/teams/{blue_id}")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin.delete(&format!("/api/teams/{blue_id}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin.get(&format!("/api/teams/{blue_id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let actions: Vec<String> = api
        .store()
        .list_audit(None, 20)
        .await
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.entry.action, r.entry.target))
        .collect();
    for expected in [
        "team.create red",
        "team.add_member red/alice",
        "team.remove_member red/alice",
        "team.delete blue",
    ] {
        assert!(
            actions.contains(&expected.to_owned()),
            "{expected} not in {actions:?}"
        );
    }
}

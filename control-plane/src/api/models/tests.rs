use crate::api::testing::TestApi;
use crate::users::Role;
use axum::http::StatusCode;
use serde_json::json;

/// An API with provider `p` added through it, and an admin, a member and a viewer.
async fn with_provider() -> (
    TestApi,
    crate::api::testing::TestClient,
    crate::api::testing::TestClient,
    crate::api::testing::TestClient,
) {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let member = api.user(Role::Member, "alice").await;
    let viewer = api.user(Role::Viewer, "vera").await;
    let (status, json) = admin
        .post(
            "/api/providers",
            json!({"name": "p", "base_url": "https://p.example.com", "timeout_ms": 30000}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    (api, admin, member, viewer)
}

#[tokio::test]
async fn admins_add_models_and_future_prices_every_role_reads_them() {
    let (api, admin, member, viewer) = with_provider().await;
    let now = api.clock.clock().now_ms();
    let model = json!({"name": "gpt-x", "provider": "p", "upstream_model": "gpt-x-2026",
                       "price": {"input": 2.5, "output": 10, "cache_read": 1.25}});
    for client in [&member, &viewer] {
        let (status, _) = client.post("/api/models", model.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, created) = admin.post("/api/models", model.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["price"]["input"], 2.5);
    assert_eq!(created["prices"][0]["effective_from_ms"], now);
    assert!(
        api.state.catalog.current().route("gpt-x").is_some(),
        "served at once"
    );
    let (status, _) = admin.post("/api/models", model).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let later = now + 3_600_000;
    let price = json!({"effective_from_ms": later, "input": 3, "output": 12});
    for client in [&member, &viewer] {
        let (status, _) = client.post("/api/models/gpt-x/prices", price.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, repriced) = admin.post("/api/models/gpt-x/prices", price.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{repriced}");
    assert_eq!(repriced["price"]["input"], 2.5, "not in force yet");
    assert_eq!(repriced["prices"][1]["effective_from_ms"], later);
    let (status, _) = admin.post("/api/models/gpt-x/prices", price).await;
    assert_eq!(status, StatusCode::CONFLICT, "one price per instant");

    api.clock.advance_ms(3_600_000);
    for client in [&admin, &member, &viewer] {
        let (status, one) = client.get("/api/models/gpt-x").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["price"]["input"], 3.0);
        assert_eq!(one["prices"].as_array().unwrap().len(), 2);
        let (_, listed) = client.get("/api/models").await;
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "gpt-x")
        );
    }
    let catalog = api.state.catalog.current();
    assert_eq!(
        catalog.price_at("gpt-x", later - 1).map(|p| p.input),
        Some(2_500_000)
    );
    assert_eq!(
        catalog.price_at("gpt-x", later).map(|p| p.input),
        Some(3_000_000)
    );

    let actions: Vec<String> = api
        .store()
        .list_audit(None, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.action)
        .collect();
    assert!(actions.iter().any(|a| a == "model.create"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "model.price"), "{actions:?}");
}

#[tokio::test]
async fn prices_in_the_past_wrong_fields_and_unknown_models_are_refused() {
    let (api, admin, _, _) = with_provider().await;
    let now = api.clock.clock().now_ms();
    admin
        .post(
            "/api/models",
            json!({"name": "m2", "provider": "p", "price": {"input": 1, "output": 1}}),
        )
        .await;
    let cases = [
        (
            json!({"effective_from_ms": now - 1, "input": 1, "output": 1}),
            "effective_from_ms",
        ),
        (json!({"input": -1, "output": 1}), "input"),
        (json!({"input": 1, "output": 0.0000001}), "output"),
    ];
    for (body, field) in cases {
        let (status, json) = admin.post("/api/models/m2/prices", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{json}"
        );
    }
    let (status, _) = admin
        .post("/api/models/nope/prices", json!({"input": 1, "output": 1}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, json) = admin
        .post(
            "/api/models",
            json!({"name": "m3", "provider": "nope", "price": {"input": 1, "output": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`provider`")
    );
    let (status, _) = admin
        .post(
            "/api/models",
            json!({"name": "m4", "provider": "p", "price": {"input": 1}}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the output price is required"
    );
    let (status, json) = admin.get("/api/models/m2'%20OR%201=1--").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
}

#[tokio::test]
async fn a_removed_model_is_no_longer_served_but_stays_priced() {
    let (api, admin, member, _) = with_provider().await;
    admin
        .post(
            "/api/models",
            json!({"name": "gone", "provider": "p", "price": {"input": 4, "output": 4}}),
        )
        .await;
    let (status, json) = admin.delete("/api/providers/p").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a model still uses it: {json}"
    );
    let (status, _) = member.delete("/api/models/gone").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin.delete("/api/models/gone").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = member.get("/api/models/gone").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let catalog = api.state.catalog.current();
    assert!(catalog.route("gone").is_none());
    assert_eq!(
        catalog
            .price_at("gone", api.clock.clock().now_ms())
            .map(|p| p.input),
        Some(4_000_000),
        "calls made before are still priced"
    );
    let (status, _) = admin.delete("/api/providers/p").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

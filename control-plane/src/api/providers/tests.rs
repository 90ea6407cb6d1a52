use crate::api::testing::TestApi;
use crate::users::Role;
use axum::http::StatusCode;
use serde_json::{Value, json};

const PROVIDER_KEY: &str = "sk-live-PROVIDER-KEY-0123456789abcdef";

fn new_provider(name: &str, base_url: &str) -> Value {
    json!({"name": name, "base_url": base_url, "api_key": PROVIDER_KEY, "timeout_ms": 30000})
}

#[tokio::test]
async fn admins_add_providers_every_role_reads_them_and_no_answer_holds_the_key() {
    let api = TestApi::start().await;
    api.forbid(PROVIDER_KEY);
    api.forbid("PROVIDER-KEY");
    let admin = api.user(Role::Admin, "root").await;
    let member = api.user(Role::Member, "alice").await;
    let viewer = api.user(Role::Viewer, "vera").await;

    for client in [&member, &viewer] {
        let (status, json) = client
            .post(
                "/api/providers",
                new_provider("x", "https://api.example.com"),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{}: {json}", client.name);
    }
    let (status, created) = admin
        .post(
            "/api/providers",
            new_provider("openai-eu", "https://api.openai.com"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["source"], "api");
    assert_eq!(created["has_key"], true);
    assert_eq!(
        created["key_fingerprint"],
        crate::secrets::fingerprint(PROVIDER_KEY)
    );
    assert_eq!(
        api.state.catalog.current().providers["openai-eu"]
            .auth_value
            .as_deref(),
        Some(&*format!("Bearer {PROVIDER_KEY}")),
        "served at once"
    );
    let (status, _) = admin
        .post(
            "/api/providers",
            new_provider("openai-eu", "https://api.openai.com"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    for client in [&admin, &member, &viewer] {
        let (status, listed) = client.get("/api/providers").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "openai-eu"),
            "{listed}"
        );
        let (status, one) = client.get("/api/providers/openai-eu").await;
        assert_eq!(
            (status, &one["base_url"]),
            (StatusCode::OK, &json!("https://api.openai.com"))
        );
    }
    let (status, _) = viewer.get("/api/providers/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nothing stored holds the key in clear either.
    let stored = format!("{:?}", api.store().stored_catalog().await.unwrap());
    assert!(!stored.contains("PROVIDER-KEY"));
    let audit = api.store().list_audit(None, 50).await.unwrap();
    assert!(audit.iter().any(|e| e.entry.action == "provider.create"
        && e.entry.target == "openai-eu"
        && e.entry.actor == "root"));
    assert!(!format!("{audit:?}").contains("PROVIDER-KEY"));
}

#[tokio::test]
async fn a_base_url_inside_the_network_is_refused_naming_the_field() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    for url in [
        "http://169.254.169.254",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]",
        "http://metadata.google.internal",
        "http://127.0.0.1:9000",
        "http://localhost:8080",
        "http://10.1.2.3",
        "http://2130706433",
        "file:///etc/passwd",
        "gopher://127.0.0.1:25",
    ] {
        let (status, json) = admin.post("/api/providers", new_provider("x", url)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {json}");
        assert_eq!(json["error"]["code"], "invalid");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains("`base_url`"), "{url}: {message}");
    }
    assert!(
        api.store()
            .stored_catalog()
            .await
            .unwrap()
            .providers
            .is_empty()
    );
}

#[tokio::test]
async fn admins_change_and_remove_providers_and_the_config_files_stay_as_written() {
    let api = TestApi::start().await;
    api.forbid(PROVIDER_KEY);
    api.forbid("sk-rotated-SECRET-2");
    let config = crate::config::Config::parse(
        "[[providers]]\nname = \"from-file\"\nurl = \"https://api.example.com\"\n\
         [[models]]\nname = \"file-model\"\nprovider = \"from-file\"\nfree = true\n",
        std::path::Path::new("/tmp"),
        |_| None,
    )
    .unwrap();
    api.state.catalog.replace(config.catalog, 0);
    let admin = api.user(Role::Admin, "root").await;
    let member = api.user(Role::Member, "alice").await;
    admin
        .post("/api/providers", new_provider("p", "https://p.example.com"))
        .await;

    let (status, _) = member
        .patch("/api/providers/p", json!({"timeout_ms": 1000}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, changed) = admin
        .patch(
            "/api/providers/p",
            json!({"base_url": "https://q.example.com", "api_key": "sk-rotated-SECRET-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["base_url"], "https://q.example.com");
    assert_eq!(changed["timeout_ms"], 30000, "left out, kept");
    assert_eq!(
        changed["key_fingerprint"],
        crate::secrets::fingerprint("sk-rotated-SECRET-2")
    );
    let (status, json) = admin
        .patch(
            "/api/providers/p",
            json!({"base_url": "http://169.254.169.254"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    let (status, removed) = admin
        .patch("/api/providers/p", json!({"remove_api_key": true}))
        .await;
    assert_eq!(
        (status, &removed["has_key"]),
        (StatusCode::OK, &json!(false))
    );
    assert_eq!(api.state.catalog.current().providers["p"].auth_value, None);
    let (status, _) = admin.patch("/api/providers/nope", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, listed) = member.get("/api/providers/from-file").await;
    assert_eq!(
        (status, &listed["source"]),
        (StatusCode::OK, &json!("config"))
    );
    for (status, json) in [
        admin
            .patch("/api/providers/from-file", json!({"timeout_ms": 1000}))
            .await,
        admin.delete("/api/providers/from-file").await,
        admin
            .post(
                "/api/providers",
                new_provider("from-file", "https://x.example.com"),
            )
            .await,
    ] {
        assert_eq!(status, StatusCode::CONFLICT, "{json}");
    }

    let (status, _) = member.delete("/api/providers/p").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin.delete("/api/providers/p").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!api.state.catalog.current().providers.contains_key("p"));
    let (status, _) = admin.delete("/api/providers/p").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let actions: Vec<String> = api
        .store()
        .list_audit(None, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.action)
        .collect();
    for action in ["provider.create", "provider.update", "provider.delete"] {
        assert!(actions.iter().any(|a| a == action), "{actions:?}");
    }
}

#[tokio::test]
async fn injection_strings_in_paths_and_bodies_are_refused_or_find_nothing() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    admin
        .post("/api/providers", new_provider("p", "https://p.example.com"))
        .await;
    for path in [
        "/api/providers/p'%20OR%20'1'='1",
        "/api/providers/p%22%3B%20DROP%20TABLE%20providers%3B--",
        "/api/providers/%27%29%20UNION%20SELECT%20key_ciphertext%20FROM%20providers--",
    ] {
        let (status, json) = admin.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {json}");
        let (status, json) = admin.delete(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {json}");
    }
    let (status, json) = admin
        .post(
            "/api/providers",
            new_provider("p' OR '1'='1", "https://p.example.com"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    let (_, listed) = admin.get("/api/providers").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test]
async fn postgres_admins_add_and_remove_providers() {
    let api = TestApi::start_postgres().await;
    api.forbid(PROVIDER_KEY);
    let admin = api.user(Role::Admin, "root").await;
    let (status, created) = admin
        .post(
            "/api/providers",
            new_provider("pg-p", "https://p.example.com"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, one) = admin.get("/api/providers/pg-p").await;
    assert_eq!((status, &one["has_key"]), (StatusCode::OK, &json!(true)));
    let (status, _) = admin.delete("/api/providers/pg-p").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

//! `/api/keys` for each role, on SQLite and PostgreSQL.

use crate::api::testing::{TestApi, TestClient};
use crate::config::Config;
use crate::store::SecretMatch;
use crate::users::Role;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate_core::keys::hash_key;

/// The test API serving the models `m` and `n`.
async fn api_with_models(api: TestApi) -> TestApi {
    let config = Config::parse(
        "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9\"\n\
         [[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n\
         [[models]]\nname = \"n\"\nprovider = \"p\"\nfree = true\n",
        std::path::Path::new("/tmp"),
        |_| None,
    )
    .unwrap();
    api.state
        .catalog
        .replace(config.catalog, api.state.clock.now_ms());
    api
}

/// Creates a key through the API as `client`, registers its secret as one no other
/// answer may hold, and returns the answer.
async fn create(api: &TestApi, client: &TestClient, body: Value) -> Value {
    let (status, answer) = client.post("/api/keys", body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    api.forbid(answer["secret"].as_str().unwrap());
    answer
}

async fn audit_actions(api: &TestApi) -> Vec<(String, String, String)> {
    api.store()
        .list_audit(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.entry.actor, r.entry.action, r.entry.target))
        .collect()
}

async fn members_manage_only_their_own_keys(api: TestApi) {
    let api = api_with_models(api).await;
    let admin = api.user(Role::Admin, "root").await;
    let alice = api.user(Role::Member, "alice").await;
    let bob = api.user(Role::Member, "bob").await;
    let viewer = api.user(Role::Viewer, "vera").await;

    let own = create(&api, &alice, json!({"name": "alice's", "models": ["m"]})).await;
    assert_eq!(own["key"]["user"], "alice", "a member's key is theirs");
    assert!(own["secret"].as_str().unwrap().starts_with("tg-"));
    let alice_key = own["key"]["id"].as_str().unwrap().to_owned();
    let bobs = create(&api, &bob, json!({"name": "bob's"})).await;
    let bob_key = bobs["key"]["id"].as_str().unwrap().to_owned();

    // Listing: a member sees their own, viewers and admins every key; never a secret.
    let (status, list) = alice.get("/api/keys").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [alice_key.as_str()]);
    for client in [&viewer, &admin] {
        let (_, list) = client.get("/api/keys").await;
        assert_eq!(list.as_array().unwrap().len(), 2);
    }
    assert!(
        list.to_string().find("key_hash").is_none(),
        "no hash in a listing"
    );

    // Another member's key does not exist for alice, whatever she tries.
    assert_eq!(
        alice.get(&format!("/api/keys/{bob_key}")).await.0,
        StatusCode::NOT_FOUND
    );
    let rotate = json!({"grace_seconds": 60});
    assert_eq!(
        alice
            .post(&format!("/api/keys/{bob_key}/rotate"), rotate.clone())
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        alice
            .post(&format!("/api/keys/{bob_key}/revoke"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        alice
            .patch(
                &format!("/api/keys/{bob_key}"),
                json!({"expires_at_ms": null})
            )
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.store()
            .key_by_id(&bob_key)
            .await
            .unwrap()
            .unwrap()
            .revoked_at_ms,
        None,
        "bob's key untouched"
    );

    // Members set neither another user, a team nor limits; viewers write nothing.
    for body in [
        json!({"name": "x", "user": "bob"}),
        json!({"name": "x", "team": "ml"}),
        json!({"name": "x", "requests_per_minute": 1000}),
        json!({"name": "x", "tokens_per_minute": 1}),
    ] {
        let (status, e) = alice.post("/api/keys", body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    }
    assert_eq!(
        viewer.post("/api/keys", json!({"name": "v"})).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        viewer
            .post(&format!("/api/keys/{alice_key}/revoke"), json!({}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = alice
        .patch(
            &format!("/api/keys/{alice_key}"),
            json!({"requests_per_minute": 10_000}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a member cannot raise their own limits"
    );

    // Alice rotates her own key: both secrets work, the old one until the grace ends.
    let old_secret = own["secret"].as_str().unwrap();
    let (status, rotated) = alice
        .post(&format!("/api/keys/{alice_key}/rotate"), rotate)
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, old_secret);
    api.forbid(new_secret);
    let now = api.state.clock.now_ms();
    assert_eq!(rotated["key"]["old_secret_until_ms"], now + 60_000);
    let by_old = api
        .store()
        .key_grant_by_hash(&hash_key(old_secret.as_bytes()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (by_old.key.id.as_str(), by_old.secret),
        (alice_key.as_str(), SecretMatch::Previous)
    );
    let (status, e) = alice
        .post(
            &format!("/api/keys/{alice_key}/rotate"),
            json!({"grace_seconds": 31 * 86_400}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // She sets its expiry (but cannot lift it), then revokes it; a revoked key rotates no more.
    let at = now + 3_600_000;
    let (status, changed) = alice
        .patch(
            &format!("/api/keys/{alice_key}"),
            json!({"expires_at_ms": at}),
        )
        .await;
    assert_eq!(
        (status, &changed["expires_at_ms"]),
        (StatusCode::OK, &json!(at))
    );
    let (status, e) = alice
        .patch(
            &format!("/api/keys/{alice_key}"),
            json!({"expires_at_ms": now - 1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(
        e["error"]["message"]
            .as_str()
            .map(|m| m.contains("expires_at_ms")),
        Some(true)
    );
    let (status, e) = alice
        .patch(
            &format!("/api/keys/{alice_key}"),
            json!({"expires_at_ms": null}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a member does not lift an expiry: {e}"
    );
    let (status, revoked) = alice
        .post(&format!("/api/keys/{alice_key}/revoke"), json!({}))
        .await;
    assert_eq!(
        (status, &revoked["status"]),
        (StatusCode::OK, &json!("revoked"))
    );
    assert_eq!(
        alice
            .post(
                &format!("/api/keys/{alice_key}/rotate"),
                json!({"grace_seconds": 0})
            )
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Every change is in the audit log under its author, with the key's id, never a secret.
    let audit = audit_actions(&api).await;
    for action in ["key.create", "key.rotate", "key.update", "key.revoke"] {
        assert!(
            audit
                .iter()
                .any(|(actor, a, target)| actor == "alice" && a == action && target == &alice_key),
            "{action} not audited: {audit:?}"
        );
    }
    assert!(
        !format!("{audit:?}").contains(old_secret) && !format!("{audit:?}").contains(new_secret)
    );
}

#[tokio::test]
async fn members_manage_only_their_own_keys_on_sqlite() {
    members_manage_only_their_own_keys(TestApi::start().await).await;
}

#[tokio::test]
async fn members_manage_only_their_own_keys_on_postgres() {
    members_manage_only_their_own_keys(TestApi::start_postgres().await).await;
}

#[tokio::test]
async fn admins_set_owners_limits_and_model_limits_and_clear_them_with_null() {
    let api = api_with_models(TestApi::start().await).await;
    let admin = api.user(Role::Admin, "root").await;
    let key = create(
        &api,
        &admin,
        json!({"name": "svc", "user": "alice", "team": "ml", "requests_per_minute": 60,
               "tokens_per_minute": 0, "models": ["m", "n"]}),
    )
    .await;
    let id = key["key"]["id"].as_str().unwrap();
    assert_eq!(
        (
            &key["key"]["user"],
            &key["key"]["team"],
            &key["key"]["requests_per_minute"],
            &key["key"]["tokens_per_minute"]
        ),
        (&json!("alice"), &json!("ml"), &json!(60), &json!(0)),
        "0 stays 0 (every call refused), never 'no limit'"
    );

    let (status, changed) = admin
        .patch(
            &format!("/api/keys/{id}"),
            json!({"requests_per_minute": null, "team": null,
                   "model_limits": [{"model": "m", "requests_per_minute": 5, "tokens_per_minute": null}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (
            &changed["requests_per_minute"],
            &changed["team"],
            &changed["user"]
        ),
        (&Value::Null, &Value::Null, &json!("alice"))
    );
    assert_eq!(changed["tokens_per_minute"], 0, "an absent field stays");
    let (_, one) = admin.get(&format!("/api/keys/{id}")).await;
    assert_eq!(
        one["model_limits"],
        json!([{"model": "m", "requests_per_minute": 5, "tokens_per_minute": null}])
    );
    // The alice member now manages it: it is hers.
    let alice = api.user(Role::Member, "alice").await;
    assert_eq!(
        alice.get(&format!("/api/keys/{id}")).await.0,
        StatusCode::OK
    );

    for (body, field) in [
        (
            json!({"model_limits": [{"model": "nope", "requests_per_minute": 1, "tokens_per_minute": null}]}),
            "models",
        ),
        (json!({"user": ""}), "user"),
    ] {
        let (status, e) = admin.patch(&format!("/api/keys/{id}"), body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{e}"
        );
    }
    let (status, e) = admin
        .post("/api/keys", json!({"name": "x", "models": ["gpt-9"]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (status, _) = admin
        .patch(&format!("/api/keys/{id}"), json!({"secret": "tg-mine"}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused, never ignored"
    );
}

#[tokio::test]
async fn hostile_key_ids_are_404s_and_nothing_else() {
    let api = api_with_models(TestApi::start().await).await;
    let admin = api.user(Role::Admin, "root").await;
    create(&api, &admin, json!({"name": "k"})).await;
    // Percent-encoded as a client must send them: `' OR '1'='1`, `key_x'; DROP TABLE …`.
    for id in [
        "%27%20OR%20%271%27%3D%271",
        "key_x%27%3B%20DROP%20TABLE%20virtual_keys%3B%20--",
        "%00",
        "..%2F..%2Fetc%2Fpasswd",
        "key_%25",
    ] {
        let (status, e) = admin.get(&format!("/api/keys/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {e}");
        let (status, _) = admin
            .post(&format!("/api/keys/{id}/revoke"), json!({}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
    }
    assert_eq!(
        admin.get("/api/keys").await.1.as_array().unwrap().len(),
        1,
        "nothing dropped or revoked"
    );
}

#[tokio::test]
async fn numbers_past_what_the_store_holds_are_422s_naming_the_field_not_500s() {
    let api = api_with_models(TestApi::start().await).await;
    let admin = api.user(Role::Admin, "root").await;
    let (status, e) = admin
        .post(
            "/api/keys",
            json!({"name": "huge", "tokens_per_minute": u64::MAX}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens_per_minute"),
        "{e}"
    );
    let key = create(&api, &admin, json!({"name": "k"})).await;
    let id = key["key"]["id"].as_str().unwrap();
    for body in [
        json!({"tokens_per_minute": u64::MAX}),
        json!({"model_limits": [{"model": "m", "requests_per_minute": 1, "tokens_per_minute": u64::MAX}]}),
    ] {
        let (status, e) = admin.patch(&format!("/api/keys/{id}"), body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("tokens_per_minute"),
            "{e}"
        );
    }
    let (_, one) = admin.get(&format!("/api/keys/{id}")).await;
    assert_eq!(
        (&one["tokens_per_minute"], &one["model_limits"]),
        (&Value::Null, &json!([])),
        "a refused change leaves nothing behind"
    );
    // The largest the store holds is accepted; expiries at the ends of i64 are judged, not
    // overflowed; a grace of u64::MAX seconds is refused.
    let (status, e) = admin
        .patch(
            &format!("/api/keys/{id}"),
            json!({"tokens_per_minute": i64::MAX, "expires_at_ms": i64::MAX}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    let (status, _) = admin
        .patch(
            &format!("/api/keys/{id}"),
            json!({"expires_at_ms": i64::MIN}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = admin
        .post(
            &format!("/api/keys/{id}/rotate"),
            json!({"grace_seconds": u64::MAX}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_member_only_brings_their_keys_expiry_closer_never_later() {
    let api = api_with_models(TestApi::start().await).await;
    let admin = api.user(Role::Admin, "root").await;
    let alice = api.user(Role::Member, "alice").await;
    let now = api.state.clock.now_ms();
    let hour = 3_600_000;
    let key = create(
        &api,
        &admin,
        json!({"name": "contractor", "user": "alice", "expires_at_ms": now + hour}),
    )
    .await;
    let path = format!("/api/keys/{}", key["key"]["id"].as_str().unwrap());
    for later in [json!(now + 2 * hour), json!(null)] {
        let (status, e) = alice.patch(&path, json!({"expires_at_ms": later})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{later}: {e}");
    }
    let (status, e) = alice
        .patch(&path, json!({"expires_at_ms": now + hour / 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    // Past its expiry, the key is not revived by its member; an admin may.
    api.clock.advance_ms(hour);
    let (status, e) = alice
        .patch(&path, json!({"expires_at_ms": now + 3 * hour}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(alice.get(&path).await.1["status"], "expired");
    let (status, e) = admin
        .patch(&path, json!({"expires_at_ms": now + 3 * hour}))
        .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    // A key without expiry may be given one by its member.
    let own = create(&api, &alice, json!({"name": "own"})).await;
    let own_path = format!("/api/keys/{}", own["key"]["id"].as_str().unwrap());
    let at = api.state.clock.now_ms() + hour;
    let (status, e) = alice.patch(&own_path, json!({"expires_at_ms": at})).await;
    assert_eq!((status, &e["expires_at_ms"]), (StatusCode::OK, &json!(at)));
}

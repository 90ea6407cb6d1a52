use crate::api::caller::{CSRF_HEADER, REFRESHED_TOKEN_HEADER};
use crate::api::testing::{TEST_SESSION_SECRET, TestApi};
use crate::sessions::{self, SessionClaims, SessionSecret};
use crate::users::Role;
use axum::http::{Method, StatusCode, header};
use serde_json::json;

#[tokio::test]
async fn login_answers_a_token_and_sets_protected_cookies() {
    let api = TestApi::start().await;
    let alice = api.user(Role::Member, "alice").await;
    let body = json!({"name": "alice", "password": alice.password});
    let (status, headers, json) = api
        .anonymous()
        .send(
            api.anonymous()
                .request(Method::POST, "/api/auth/login", Some(body)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["user"]["name"], "alice");
    assert_eq!(json["user"]["role"], "member");
    assert!(json["user"].get("password_hash").is_none());
    let cookies: Vec<&str> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("tollgate_session="))
        .unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(session.contains(flag), "{session}");
    }
    assert!(session.contains(json["token"].as_str().unwrap()));
    let csrf = cookies
        .iter()
        .find(|c| c.starts_with("tollgate_csrf="))
        .unwrap();
    assert!(csrf.contains(json["csrf_token"].as_str().unwrap()));

    let (status, me) = alice.get("/api/auth/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["id"], alice.id);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_refusal() {
    let api = TestApi::start().await;
    let alice = api.user(Role::Member, "alice").await;
    let anonymous = api.anonymous();
    let (s1, wrong) = anonymous
        .post(
            "/api/auth/login",
            json!({"name": "alice", "password": "not her password"}),
        )
        .await;
    let (s2, unknown) = anonymous
        .post(
            "/api/auth/login",
            json!({"name": "mallory", "password": alice.password}),
        )
        .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"]["code"], "invalid_credentials");
}

#[tokio::test]
async fn tampered_foreign_and_expired_tokens_are_refused() {
    let api = TestApi::start().await;
    let mut alice = api.user(Role::Member, "alice").await;
    let token = alice.token.clone().unwrap();
    let (payload, tag) = token.split_once('.').unwrap();
    // The same session claimed as an admin, signed by another secret.
    let claims = SessionClaims {
        session_id: "ses_x".into(),
        user_id: alice.id.clone(),
        role: Role::Admin,
        exp: i64::MAX,
    };
    let elsewhere = SessionSecret::new(b"another-secret-another-secret-another".to_vec()).unwrap();
    let forged = sessions::sign(&elsewhere, &claims);
    let (forged_payload, _) = forged.split_once('.').unwrap();
    for bad in [
        format!("{forged_payload}.{tag}"),
        forged.clone(),
        format!("{payload}x.{tag}"),
        format!("{payload}.{}", &tag[1..]),
        String::new(),
    ] {
        alice.token = Some(bad.clone());
        let (status, json) = alice.get("/api/auth/me").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {json}");
        assert_eq!(json["error"]["code"], "unauthenticated");
    }
    alice.token = Some(token);
    assert_eq!(alice.get("/api/auth/me").await.0, StatusCode::OK);
    // Unused past its lifetime (12 h by default): expired.
    api.clock.advance_ms(12 * 3_600_000);
    assert_eq!(alice.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_session_used_past_half_its_lifetime_gets_a_fresh_token() {
    let api = TestApi::start().await;
    let mut alice = api.user(Role::Viewer, "alice").await;
    let first = alice.token.clone().unwrap();
    let secret = SessionSecret::new(TEST_SESSION_SECRET.to_vec()).unwrap();
    let (_, headers, _) = alice
        .send(alice.request(Method::GET, "/api/auth/me", None))
        .await;
    assert!(
        headers.get(REFRESHED_TOKEN_HEADER).is_none(),
        "fresh: no refresh"
    );

    api.clock.advance_ms(6 * 3_600_000 + 1);
    let (status, headers, _) = alice
        .send(alice.request(Method::GET, "/api/auth/me", None))
        .await;
    assert_eq!(status, StatusCode::OK);
    let fresh = headers
        .get(REFRESHED_TOKEN_HEADER)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("tollgate_session={fresh};")),
        "{cookie}"
    );
    let now = api.state.clock.now_ms();
    let claims = sessions::verify(&secret, &fresh, now).unwrap();
    assert_eq!(claims.exp, now + 12 * 3_600_000);

    // Past the first token's end, the fresh one (and the session) carry on.
    api.clock.advance_ms(6 * 3_600_000);
    assert_eq!(
        alice.get("/api/auth/me").await.0,
        StatusCode::UNAUTHORIZED,
        "the old token expired"
    );
    alice.token = Some(fresh);
    assert_eq!(alice.get("/api/auth/me").await.0, StatusCode::OK);
    assert_ne!(alice.token.as_deref(), Some(first.as_str()));
}

#[tokio::test]
async fn logout_ends_the_session_at_once() {
    let api = TestApi::start().await;
    let alice = api.user(Role::Member, "alice").await;
    let (status, headers, _) = alice
        .send(alice.request(Method::POST, "/api/auth/logout", None))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cleared = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(
        cleared.starts_with("tollgate_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let (status, json) = alice.get("/api/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_for_changes() {
    let api = TestApi::start().await;
    let alice = api.user(Role::Member, "alice").await;
    let token = alice.token.clone().unwrap();
    let cookie_request = |method: Method, path: &str, csrf: Option<&str>| {
        let mut request = api.anonymous().request(method, path, None);
        request.headers_mut().insert(
            header::COOKIE,
            format!("tollgate_session={token}").parse().unwrap(),
        );
        if let Some(csrf) = csrf {
            request
                .headers_mut()
                .insert(CSRF_HEADER, csrf.parse().unwrap());
        }
        request
    };
    let (status, _, _) = alice
        .send(cookie_request(Method::GET, "/api/auth/me", None))
        .await;
    assert_eq!(status, StatusCode::OK, "reads need no CSRF token");
    let (status, _, json) = alice
        .send(cookie_request(Method::POST, "/api/auth/logout", None))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json["error"]["code"], "csrf_failed");
    let (status, _, _) = alice
        .send(cookie_request(
            Method::POST,
            "/api/auth/logout",
            Some("forged-token"),
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let csrf = alice.csrf.clone().unwrap();
    let (status, _, _) = alice
        .send(cookie_request(
            Method::POST,
            "/api/auth/logout",
            Some(&csrf),
        ))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn failed_logins_are_limited_per_user_and_per_address() {
    let api = TestApi::start().await;
    let alice = api.user(Role::Member, "alice").await;
    let guesser = api.anonymous();
    for _ in 0..5 {
        let (status, _) = guesser
            .post(
                "/api/auth/login",
                json!({"name": "alice", "password": "guess guess guess"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits, from any address: the user is being guessed.
    let (status, json) = api
        .anonymous()
        .post(
            "/api/auth/login",
            json!({"name": "alice", "password": alice.password}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(json["error"]["code"], "too_many_attempts");
    api.clock.advance_ms(15 * 60_000);
    let (status, _) = api
        .anonymous()
        .post(
            "/api/auth/login",
            json!({"name": "alice", "password": alice.password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the window passed");

    // One address guessing many users is stopped after 20 failures.
    let sprayer = api.anonymous();
    for i in 0..20 {
        let (status, _) = sprayer
            .post(
                "/api/auth/login",
                json!({"name": format!("user{i}"), "password": "guess guess guess"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = sprayer
        .post(
            "/api/auth/login",
            json!({"name": "alice", "password": alice.password}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in_and_their_sessions_end() {
    let api = TestApi::start().await;
    let mut alice = api.user(Role::Member, "alice").await;
    api.store()
        .set_user_disabled(&alice.id, Some(api.state.clock.now_ms()))
        .await
        .unwrap();
    assert_eq!(alice.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    alice.token = None;
    let (status, json) = alice
        .post(
            "/api/auth/login",
            json!({"name": "alice", "password": alice.password}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json["error"]["code"], "invalid_credentials",
        "no hint that the user exists"
    );
}

#[tokio::test]
async fn injection_strings_in_the_authorization_header_and_login_are_refused_cleanly() {
    let api = TestApi::start().await;
    let alice = api.user(Role::Admin, "alice").await;
    let injections = [
        "' OR '1'='1",
        "x' OR 1=1 --",
        "'; DROP TABLE users; --",
        "ses_1' UNION SELECT * FROM users --",
        "eyJzZXNzaW9uX2lkIjoiJyBPUiAxPTEgLS0ifQ.AAAA",
    ];
    for injection in injections {
        let mut request = api.anonymous().request(Method::GET, "/api/users", None);
        request.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {injection}").parse().unwrap(),
        );
        let (status, _, json) = api.anonymous().send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{injection}: {json}");
        let (status, json) = api
            .anonymous()
            .post(
                "/api/auth/login",
                json!({"name": injection, "password": injection}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{injection}: {json}");
    }
    let (status, users) = alice.get("/api/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        users.as_array().unwrap().len(),
        1,
        "no table dropped, no user added"
    );
}

#[tokio::test]
async fn postgres_login_me_and_logout() {
    let api = TestApi::start_postgres().await;
    let alice = api.user(Role::Admin, "alice").await;
    assert_eq!(alice.get("/api/auth/me").await.1["role"], "admin");
    assert_eq!(
        alice.post("/api/auth/logout", json!(null)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(alice.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
}

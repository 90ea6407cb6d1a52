//! The layers every route shares: headers, JSON errors, body limit, CORS, OpenAPI.

use super::testing::{TestApi, test_settings};
use crate::config::ApiSettings;
use crate::users::Role;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let api = TestApi::start().await;
    let alice = api.user(Role::Member, "alice").await;
    for path in [
        "/healthz",
        "/api/auth/me",
        "/api/nowhere",
        "/api/openapi.json",
    ] {
        let (_, headers, _) = alice.send(alice.request(Method::GET, path, None)).await;
        for (name, value) in [
            ("content-security-policy", "default-src 'self'"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(
                headers.get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{path} {name}"
            );
        }
    }
}

#[tokio::test]
async fn axums_own_refusals_are_json_errors() {
    let mut settings = test_settings();
    settings.body_limit_bytes = 64;
    let api = TestApi::start_with(settings).await;
    let client = api.anonymous();
    let (status, json) = client.get("/api/nowhere").await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );
    let (status, json) = client.delete("/api/auth/login").await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let big = json!({"name": "x".repeat(100), "password": "y"});
    let (status, json) = client.post("/api/auth/login", big).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
    );
    let (status, json) = client.post("/api/auth/login", json!({"name": 1})).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let (status, _, json) = client.send(request).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
}

#[tokio::test]
async fn cors_answers_only_configured_origins() {
    let settings = ApiSettings {
        cors_origins: vec!["https://dash.example.com".into()],
        ..test_settings()
    };
    let api = TestApi::start_with(settings).await;
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/auth/me")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .body(Body::empty())
            .unwrap()
    };
    let client = api.anonymous();
    let (_, headers, _) = client.send(preflight("https://dash.example.com")).await;
    assert_eq!(
        headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
        "https://dash.example.com"
    );
    assert_eq!(
        headers
            .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
            .unwrap(),
        "true"
    );
    let (_, headers, _) = client.send(preflight("https://evil.example.com")).await;
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());

    // With no origin configured, no CORS header at all.
    let same_origin = TestApi::start().await;
    let (_, headers, _) = same_origin
        .anonymous()
        .send(preflight("https://dash.example.com"))
        .await;
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let api = TestApi::start().await;
    let (status, doc) = api.anonymous().get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/auth/login",
        "/api/auth/logout",
        "/api/auth/me",
        "/api/users",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["components"]["securitySchemes"]["session_bearer"].is_object());
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_session() {
    let api = TestApi::start().await;
    let client = api.anonymous();
    assert_eq!(
        client.get("/healthz").await,
        (StatusCode::OK, json!("ok\n"))
    );
    assert_eq!(
        client.get("/readyz").await,
        (StatusCode::OK, json!("ready\n"))
    );
}

/// Strings that change a query's meaning where SQL is built by pasting input.
const INJECTIONS: [&str; 6] = [
    "' OR '1'='1",
    "1; DROP TABLE users; --",
    "\" OR \"\"=\"",
    "x' UNION SELECT password_hash, name FROM users --",
    "../../etc/passwd",
    "%' OR 1=1 --",
];

/// Every route of the OpenAPI document, with an injection string in each path parameter
/// and in the query parameters the API reads, as an admin and as a member: each answer is
/// a 2xx or a 4xx, never a 500, and no table lost or gained a row.
#[tokio::test]
async fn injection_strings_in_every_path_and_query_are_refused_or_match_nothing() {
    let api = TestApi::start().await;
    let admin = api.user(Role::Admin, "root").await;
    let member = api.user(Role::Member, "alice").await;
    let (_, doc) = admin.get("/api/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(
        paths.len() >= 10,
        "the document lists the routes: {paths:?}"
    );
    let mut calls = 0;
    for (template, item) in paths {
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_none() || template.ends_with("/logout") {
                continue;
            }
            for injection in INJECTIONS {
                let encoded: String =
                    url::form_urlencoded::byte_serialize(injection.as_bytes()).collect();
                let mut path = template.clone();
                while let Some(start) = path.find('{') {
                    let end = path[start..].find('}').unwrap() + start;
                    path.replace_range(start..=end, &encoded);
                }
                let queries = [
                    "limit", "before", "group_by", "sort", "key", "user", "team", "model", "from",
                    "to",
                ]
                .map(|name| format!("{name}={encoded}"))
                .join("&");
                for (client, query) in [(&admin, ""), (&member, ""), (&admin, queries.as_str())] {
                    let uri = if query.is_empty() {
                        path.clone()
                    } else {
                        format!("{path}?{query}")
                    };
                    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                    let body = (method != Method::GET && method != Method::DELETE).then(
                        || json!({"name": injection, "password": injection, "role": injection}),
                    );
                    let (status, _, answer) = client
                        .send(client.request(method.clone(), &uri, body))
                        .await;
                    calls += 1;
                    assert!(
                        !status.is_server_error(),
                        "{method} {uri} as {}: {status} {answer}",
                        client.name
                    );
                }
            }
        }
    }
    assert!(calls > 100, "{calls} calls");
    let (_, users) = admin.get("/api/users").await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "root"], "no user added or lost");
}

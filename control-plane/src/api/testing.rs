//! The API under test: [`TestApi::start`] builds the router on a fresh SQLite store
//! ([`TestApi::start_postgres`]: a fresh schema of the test PostgreSQL database) with a
//! manual clock, and [`TestApi::user`] creates a user and signs them in through the API.
//! Requests go to the router with `tower::ServiceExt::oneshot`, no sockets.
//!
//! Every response body any test reads is scanned for the secrets the harness knows of:
//! every user's password, every client's session token (but the client's own), and what
//! a test registers with [`TestApi::forbid`] (provider keys, virtual key secrets). A body
//! holding one fails the test at once.

use super::state::ApiState;
use crate::catalog::admin::{AdminSettings, CatalogAdmin};
use crate::catalog::{Catalog, LiveCatalog};
use crate::clock::ManualClock;
use crate::config::ApiSettings;
use crate::secrets::{Keyring, MasterKey, MasterKeySource, SecretsSettings};
use crate::sessions::SessionSecret;
use crate::store::Store;
use crate::users::Role;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// The session secret of every test API.
pub const TEST_SESSION_SECRET: &[u8] = b"test-session-secret-test-session-secret!";

/// 2026-12-04T00:00:00Z, where every test clock starts.
pub const TEST_START_MS: i64 = 1_796_342_400_000;

/// A value no response may hold, and the one client allowed to see it (its own token).
#[derive(Clone)]
struct Secret {
    value: String,
    owner_token: Option<String>,
}

/// The API on a fresh store, with the secrets its responses are checked against.
#[derive(Clone)]
pub struct TestApi {
    /// The router under test.
    pub router: Router,
    /// What the router serves from.
    pub state: ApiState,
    /// The time the API reads; move it with `advance_ms`.
    pub clock: ManualClock,
    secrets: Arc<Mutex<Vec<Secret>>>,
    /// Client addresses handed out, so each client has its own IP.
    next_addr: Arc<AtomicU8>,
    _dir: Option<Arc<tempfile::TempDir>>,
}

/// The catalog admin of a test API: a fresh master key, public providers only, the
/// default output cap and budget grace.
fn test_catalog_admin(store: &Store, catalog: &LiveCatalog, clock: &ManualClock) -> CatalogAdmin {
    let master = MasterKeySource::Env {
        var: "TOLLGATE_MASTER_KEY".into(),
        key: Arc::new(MasterKey::generate()),
    };
    let keys = Keyring::load(SecretsSettings {
        master: Some(master),
        previous: None,
    })
    .unwrap();
    CatalogAdmin::new(
        store.clone(),
        Arc::new(keys),
        catalog.clone(),
        clock.clock(),
        AdminSettings {
            allow_private_upstreams: false,
            default_max_output_tokens: 16_384,
            budgets: crate::config::BudgetSettings::default(),
        },
    )
}

/// The `[api]` settings tests start from: defaults, with the test secret.
pub fn test_settings() -> ApiSettings {
    let env = |var: &str| {
        (var == "TOLLGATE_SESSION_SECRET")
            .then(|| String::from_utf8_lossy(TEST_SESSION_SECRET).into_owned())
    };
    let config = crate::config::Config::parse(
        "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n",
        std::path::Path::new("/tmp"),
        |var| env(var).or_else(|| (var == "TOLLGATE_FILTER_TOKEN").then(|| "f".repeat(32))),
    )
    .unwrap();
    config.api
}

impl TestApi {
    /// The API on a fresh SQLite store.
    pub async fn start() -> Self {
        Self::start_with(test_settings()).await
    }

    /// The API on a fresh SQLite store with these `[api]` settings.
    pub async fn start_with(settings: ApiSettings) -> Self {
        let (dir, store) = crate::store::test_stores::sqlite().await;
        Self::on(store, settings, Some(dir))
    }

    /// The API on a fresh schema of the test PostgreSQL database
    /// (`TOLLGATE_TEST_POSTGRES_URL`), so names never collide with other tests'.
    pub async fn start_postgres() -> Self {
        let url = crate::store::test_stores::fresh_postgres_url().await;
        let store = Store::open(&url).await.unwrap();
        Self::on(store, test_settings(), None)
    }

    fn on(store: Store, settings: ApiSettings, dir: Option<tempfile::TempDir>) -> Self {
        let clock = ManualClock::at(TEST_START_MS);
        let catalog = LiveCatalog::new(Catalog::default());
        let state = ApiState {
            catalog_admin: test_catalog_admin(&store, &catalog, &clock),
            store,
            clock: clock.clock(),
            catalog,
            session_secret: SessionSecret::new(TEST_SESSION_SECRET.to_vec()).unwrap(),
            settings: Arc::new(settings),
        };
        Self {
            router: super::router(state.clone(), None),
            state,
            clock,
            secrets: Arc::default(),
            next_addr: Arc::new(AtomicU8::new(1)),
            _dir: dir.map(Arc::new),
        }
    }

    /// The store the API serves from.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Registers a value no response may ever hold (a provider key, a key secret).
    pub fn forbid(&self, secret: &str) {
        self.secrets.lock().unwrap().push(Secret {
            value: secret.to_owned(),
            owner_token: None,
        });
    }

    /// A client with no session, from its own address.
    pub fn anonymous(&self) -> TestClient {
        let n = self.next_addr.fetch_add(1, Ordering::Relaxed);
        TestClient {
            api: self.clone(),
            addr: SocketAddr::from(([10, 0, 0, n], 40_000)),
            token: None,
            csrf: None,
            name: String::new(),
            id: String::new(),
            password: String::new(),
        }
    }

    /// Creates a user `name` with `role` in the store and signs them in through the API.
    pub async fn user(&self, role: Role, name: &str) -> TestClient {
        let password = format!("pw-{name}-{}", hex::encode(rand::random::<[u8; 8]>()));
        let user = crate::users::create(
            self.store(),
            &self.state.clock,
            name,
            role,
            password.clone(),
        )
        .await
        .unwrap();
        self.secrets.lock().unwrap().push(Secret {
            value: password.clone(),
            owner_token: None,
        });
        let mut client = self.anonymous();
        client.name = user.name;
        client.id = user.id;
        client.password = password;
        client.login().await;
        client
    }

    /// Sends `request` as is (after the secret scan of its answer, the answer).
    pub async fn send(
        &self,
        request: Request<Body>,
        own_token: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let response: Response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.scan(&text, own_token);
        for value in parts.headers.get_all(header::SET_COOKIE) {
            // Cookies carry the caller's own session only.
            self.scan(&String::from_utf8_lossy(value.as_bytes()), own_token);
        }
        (parts.status, parts.headers, text)
    }

    /// Fails if `text` holds a secret that `own_token`'s client may not see.
    fn scan(&self, text: &str, own_token: Option<&str>) {
        let secrets = self.secrets.lock().unwrap();
        for secret in secrets.iter() {
            let own = secret.owner_token.is_some() && secret.owner_token.as_deref() == own_token;
            assert!(
                own || !text.contains(&secret.value),
                "a response holds a secret it must not: {text}"
            );
        }
    }
}

/// A client of the test API: anonymous, or signed in as one user.
pub struct TestClient {
    api: TestApi,
    /// The client's address (each client its own).
    pub addr: SocketAddr,
    /// The session token, once signed in.
    pub token: Option<String>,
    /// The session's CSRF token, once signed in.
    pub csrf: Option<String>,
    /// The user's name.
    pub name: String,
    /// The user's id.
    pub id: String,
    /// The user's password.
    pub password: String,
}

impl TestClient {
    /// Signs in with the client's name and password; panics if refused.
    pub async fn login(&mut self) {
        let body = json!({"name": self.name, "password": self.password});
        let (status, json) = self.post("/api/auth/login", body).await;
        assert_eq!(status, StatusCode::OK, "login failed: {json}");
        let token = json["token"].as_str().unwrap().to_owned();
        self.api.secrets.lock().unwrap().push(Secret {
            value: token.clone(),
            owner_token: Some(token.clone()),
        });
        self.token = Some(token);
        self.csrf = json["csrf_token"].as_str().map(str::to_owned);
    }

    /// A request from this client, with its bearer token if signed in.
    pub fn request(&self, method: Method, path: &str, body: Option<Value>) -> Request<Body> {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let mut request = builder.body(body).unwrap();
        request.extensions_mut().insert(ConnectInfo(self.addr));
        request
    }

    /// Sends `request` (built by [`TestClient::request`] or by hand) from this client.
    pub async fn send(&self, mut request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        request.extensions_mut().insert(ConnectInfo(self.addr));
        let (status, headers, text) = self.api.send(request, self.token.as_deref()).await;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, json)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, json) = self.send(self.request(method, path, body)).await;
        (status, json)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

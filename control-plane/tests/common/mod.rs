//! The control plane started in-process for integration tests, and the filter's side of
//! its gRPC API: shared by the test binaries that `mod common;` it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::Path;
use std::sync::Arc;
use tollgate_control_plane::catalog::LiveCatalog;
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::config::{Config, ConfigSource};
use tollgate_control_plane::gateway::{GatewayService, Settings};
use tollgate_control_plane::server::{self, Listeners, Running};
use tollgate_control_plane::store::Store;
use tollgate_proto::v1::gateway_client::GatewayClient;
use tollgate_proto::v1::{UsageBatch, UsageRecord};
use tonic::Request;
use tonic::transport::Channel;

/// The filter token every test config names through `TOLLGATE_FILTER_TOKEN`.
pub const TOKEN: &str = "in-process-test-token-in-process-test-0";

/// The session secret every test config names through `TOLLGATE_SESSION_SECRET`.
pub const SESSION_SECRET: &str = "in-process-session-secret-in-process-0";

/// The config at `path`, with `TOLLGATE_FILTER_TOKEN` set to [`TOKEN`] and
/// `TOLLGATE_SESSION_SECRET` to [`SESSION_SECRET`].
pub fn source(path: &Path) -> ConfigSource {
    ConfigSource::new(path, |var| match var {
        "TOLLGATE_FILTER_TOKEN" => Some(TOKEN.to_owned()),
        "TOLLGATE_SESSION_SECRET" => Some(SESSION_SECRET.to_owned()),
        _ => None,
    })
}

/// `serve()` on the config at `path`, on the listeners its `[server]` names (port 0 for a
/// free one), with a gRPC client connected as the filter would be.
pub async fn start(path: &Path) -> (Running, Store, GatewayClient<Channel>) {
    let source = source(path);
    let config = source.load().expect("valid config");
    let store = Store::open(&config.storage.database_url)
        .await
        .expect("store");
    let listeners = Listeners::bind(&config.server).await.expect("bound");
    let setup = server::Setup {
        source,
        config,
        store: store.clone(),
        clock: Clock::system(),
    };
    let running = server::serve(setup, listeners, std::future::pending())
        .await
        .expect("serving");
    let client = GatewayClient::connect(format!("http://{}", running.grpc_addr()))
        .await
        .expect("connected");
    (running, store, client)
}

/// `message` with the filter's token, as the filter sends it.
pub fn with_token<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {TOKEN}").parse().expect("header value");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Reports one call to `model` (provider `alpha`) of 1000 uncached prompt tokens and no
/// output; returns the cost stored for it.
pub async fn charged(
    client: &mut GatewayClient<Channel>,
    store: &Store,
    request_id: &str,
    model: &str,
) -> i64 {
    let record = UsageRecord {
        request_id: request_id.into(),
        key_id: "key_test".into(),
        model: model.into(),
        provider: "alpha".into(),
        status: 200,
        input_uncached: 1_000,
        // Made now: a call is priced by the price in force when it was made.
        finished_at_ms: tollgate_control_plane::clock::Clock::system().now_ms(),
        ..UsageRecord::default()
    };
    let ack = client
        .report_usage(with_token(UsageBatch {
            records: vec![record],
        }))
        .await
        .expect("ReportUsage answered")
        .into_inner();
    assert_eq!(ack.stored, 1, "{request_id} stored");
    stored_cost(store, request_id).await
}

/// The cost stored for `request_id`.
pub async fn stored_cost(store: &Store, request_id: &str) -> i64 {
    let rows = store
        .list_usage(None, Some(request_id), 1)
        .await
        .expect("usage listed");
    rows.first()
        .unwrap_or_else(|| panic!("{request_id} stored"))
        .cost_picos
}

/// A config of one free model, for races between replicas on one database.
pub fn race_config(dir: &Path) -> Config {
    Config::parse(
        "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n",
        dir,
        |_| None,
    )
    .unwrap()
}

/// One replica's gRPC service on `store`: its own pool of the shared database.
pub fn replica(config: &Config, store: Store) -> Arc<GatewayService> {
    let settings = Settings {
        gateway: config.gateway,
        limits: config.limits,
        budgets: config.budgets,
        clock: Clock::system(),
    };
    Arc::new(GatewayService::new(
        LiveCatalog::new(config.catalog.clone()),
        settings,
        store,
    ))
}

/// A new, empty schema of the database the PostgreSQL tests use
/// (`TOLLGATE_TEST_POSTGRES_URL`, or a local one), as a URL: each test its own tables, as
/// the library's own store tests have them (`store::test_stores`, not visible from here).
pub async fn postgres_url() -> String {
    let base = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("test_{}", hex::encode(rand::random::<[u8; 8]>()));
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("PostgreSQL must be running for this test (see README)");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let joiner = if base.contains('?') { '&' } else { '?' };
    format!("{base}{joiner}options%5Bsearch_path%5D={schema}")
}

/// Two replicas, each with its own pool of the database at `url`, and a store to inspect it.
pub async fn two_replicas(config: &Config, url: &str) -> (Vec<Arc<GatewayService>>, Store) {
    let a = Store::open(url)
        .await
        .expect("the database must be reachable (PostgreSQL: see README)");
    let b = Store::open(url).await.unwrap();
    (vec![replica(config, a.clone()), replica(config, b)], a)
}

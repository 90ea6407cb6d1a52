//! The control plane started in-process on free ports, its catalog reloaded by a real
//! SIGHUP to this process. The only test in its binary: the signal reaches every server
//! the process runs, so no other test may share it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::config::ConfigSource;
use tollgate_control_plane::keys;
use tollgate_control_plane::reload::ReloadOutcome;
use tollgate_control_plane::server::{self, Listeners, Setup};
use tollgate_control_plane::store::Store;
use tollgate_proto::v1::gateway_client::GatewayClient;
use tollgate_proto::v1::{AuthorizeRequest, AuthorizeResponse, UsageBatch, UsageRecord};
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "reload-test-token-reload-test-token-0123";

/// The config file with model `m` at `input` USD per 1M tokens, plus `extra` TOML.
fn config_text(input: &str, extra: &str) -> String {
    format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [storage]\ndata_dir = \"data\"\n\
         [[providers]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:9000\"\n\
         [[models]]\nname = \"m\"\nprovider = \"alpha\"\ninput = {input}\noutput = 2\n{extra}"
    )
}

fn with_token<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {TOKEN}").parse().expect("header value");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Reports one call to `model` of 1000 uncached prompt tokens and no output.
async fn report(client: &mut GatewayClient<Channel>, request_id: &str, model: &str) {
    let record = UsageRecord {
        request_id: request_id.into(),
        key_id: "key_test".into(),
        model: model.into(),
        provider: "alpha".into(),
        status: 200,
        input_uncached: 1_000,
        ..UsageRecord::default()
    };
    let ack = client
        .report_usage(with_token(UsageBatch {
            records: vec![record],
        }))
        .await
        .expect("ReportUsage answered")
        .into_inner();
    assert_eq!(ack.stored, 1, "{request_id}");
}

async fn stored_cost(store: &Store, request_id: &str) -> i64 {
    let rows = store
        .list_usage(None, Some(request_id), 1)
        .await
        .expect("usage listed");
    rows.first()
        .unwrap_or_else(|| panic!("{request_id} stored"))
        .cost_picos
}

async fn authorize(
    client: &mut GatewayClient<Channel>,
    key_hash: &str,
    model: &str,
) -> AuthorizeResponse {
    client
        .authorize(with_token(AuthorizeRequest {
            key_hash: key_hash.into(),
            model: model.into(),
        }))
        .await
        .expect("Authorize answered")
        .into_inner()
}

/// Writes `text` to the config file, sends SIGHUP to this process, and returns the
/// outcome of the reload it caused.
async fn edit_and_hang_up(
    path: &Path,
    text: &str,
    reloads: &mut watch::Receiver<Option<ReloadOutcome>>,
) -> ReloadOutcome {
    std::fs::write(path, text).expect("config written");
    reloads.borrow_and_update();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -HUP: {status}");
    // Bounded so a lost signal fails the test instead of hanging it; not a timing check.
    tokio::time::timeout(Duration::from_secs(30), reloads.changed())
        .await
        .expect("a reload within 30 s of SIGHUP")
        .expect("the server is still running");
    reloads.borrow().clone().expect("an outcome")
}

#[tokio::test]
async fn sighup_reloads_prices_and_models_and_keeps_the_catalog_on_a_bad_edit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config_text("1", "")).expect("config written");
    let source = ConfigSource::new(&path, |var| {
        (var == "TOLLGATE_FILTER_TOKEN").then(|| TOKEN.to_owned())
    });
    let config = source.load().expect("valid config");
    let store = Store::open(&config.storage.database_url)
        .await
        .expect("SQLite store");
    let key = keys::create(
        &store,
        &config.catalog,
        &Clock::system(),
        "k",
        Vec::new(),
        None,
    )
    .await
    .expect("key issued");
    let key_hash = tollgate_core::keys::hash_key(key.secret.as_bytes());
    let listeners = Listeners::bind(&config.server).await.expect("bound");
    let setup = Setup {
        source,
        config,
        store: store.clone(),
        clock: Clock::system(),
    };
    let running = server::serve(setup, listeners, std::future::pending())
        .await
        .expect("serving");
    assert_ne!(
        running.grpc_addr().port(),
        0,
        "port 0 was bound to a real port"
    );
    let mut reloads = running.reloads();
    let mut client = GatewayClient::connect(format!("http://{}", running.grpc_addr()))
        .await
        .expect("gRPC connection");

    // 1000 tokens at $1 per 1M tokens: $0.001, 1e9 pico-dollars.
    report(&mut client, "before", "m").await;
    assert_eq!(stored_cost(&store, "before").await, 1_000_000_000);

    let repriced = edit_and_hang_up(&path, &config_text("3", ""), &mut reloads).await;
    assert!(
        matches!(
            &repriced,
            ReloadOutcome::Applied { providers: 1, models: 1, restart_needed, .. }
                if restart_needed.is_empty()
        ),
        "{repriced:?}"
    );
    report(&mut client, "after", "m").await;
    assert_eq!(stored_cost(&store, "after").await, 3_000_000_000);
    assert_eq!(
        stored_cost(&store, "before").await,
        1_000_000_000,
        "a stored call keeps the price it was charged"
    );

    let refused = edit_and_hang_up(&path, &config_text("-1", ""), &mut reloads).await;
    let ReloadOutcome::Refused { error, .. } = refused else {
        panic!("a negative price is refused: {refused:?}");
    };
    assert!(error.contains("models[0].input"), "{error}");
    report(&mut client, "after-bad-edit", "m").await;
    assert_eq!(stored_cost(&store, "after-bad-edit").await, 3_000_000_000);

    assert!(
        !authorize(&mut client, &key_hash, "fresh")
            .await
            .model_served
    );
    let fresh_model = "[[models]]\nname = \"fresh\"\nprovider = \"alpha\"\ninput = 5\noutput = 5\n";
    let added = edit_and_hang_up(&path, &config_text("3", fresh_model), &mut reloads).await;
    assert!(
        matches!(added, ReloadOutcome::Applied { models: 2, .. }),
        "{added:?}"
    );
    let answer = authorize(&mut client, &key_hash, "fresh").await;
    assert!(answer.model_served, "{answer:?}");
    assert_eq!(
        answer.route.map(|r| r.provider).as_deref(),
        Some("alpha"),
        "the key, allowed every model, is admitted to the new one"
    );
    report(&mut client, "fresh-call", "fresh").await;
    assert_eq!(stored_cost(&store, "fresh-call").await, 5_000_000_000);

    running.shutdown().await.expect("clean shutdown");
}

//! Reloads that take a model away while the filter still holds usage for it: the calls
//! were admitted and served under the old catalog, so they must still be charged.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::config::ConfigSource;
use tollgate_control_plane::reload::ReloadOutcome;
use tollgate_control_plane::server::{self, Listeners, Running, Setup};
use tollgate_control_plane::store::Store;
use tollgate_proto::v1::gateway_client::GatewayClient;
use tollgate_proto::v1::{UsageBatch, UsageRecord};
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "removed-model-token-removed-model-token-0";

/// Provider `alpha` serving each `(model, input price)`.
fn config_text(models: &[(&str, &str)]) -> String {
    let mut text = "[storage]\ndata_dir = \"data\"\n[[providers]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:9000\"\n".to_owned();
    for (name, input) in models {
        text.push_str(&format!(
            "[[models]]\nname = \"{name}\"\nprovider = \"alpha\"\ninput = {input}\noutput = 2\n"
        ));
    }
    text
}

async fn start(dir: &std::path::Path, text: &str) -> (Running, Store, GatewayClient<Channel>) {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).expect("config written");
    let source = ConfigSource::new(&path, |var| {
        (var == "TOLLGATE_FILTER_TOKEN").then(|| TOKEN.to_owned())
    });
    let config = source.load().expect("valid config");
    let store = Store::open(&config.storage.database_url)
        .await
        .expect("store");
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = Listeners::new(bind().await.expect("gRPC"), bind().await.expect("HTTP"));
    let setup = Setup {
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

/// Reports one call to `model` of 1000 uncached prompt tokens; returns its stored cost.
async fn charged(
    client: &mut GatewayClient<Channel>,
    store: &Store,
    request_id: &str,
    model: &str,
) -> i64 {
    let mut request = Request::new(UsageBatch {
        records: vec![UsageRecord {
            request_id: request_id.into(),
            key_id: "key_test".into(),
            model: model.into(),
            provider: "alpha".into(),
            status: 200,
            input_uncached: 1_000,
            ..UsageRecord::default()
        }],
    });
    let value = format!("Bearer {TOKEN}").parse().expect("header value");
    request.metadata_mut().insert("authorization", value);
    let ack = client
        .report_usage(request)
        .await
        .expect("ReportUsage answered")
        .into_inner();
    assert_eq!(ack.stored, 1, "{request_id} stored");
    let rows = store
        .list_usage(None, Some(request_id), 1)
        .await
        .expect("usage listed");
    rows.first().expect("the stored row").cost_picos
}

fn reload(running: &Running, dir: &std::path::Path, text: &str) {
    std::fs::write(dir.join("tollgate.toml"), text).expect("config written");
    let outcome = running.reload();
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn usage_for_a_model_a_reload_removed_is_charged_its_last_price() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, store, mut client) =
        start(dir.path(), &config_text(&[("old", "4"), ("kept", "1")])).await;
    // 1000 tokens at $4 per 1M tokens: $0.004, 4e9 pico-dollars.
    assert_eq!(
        charged(&mut client, &store, "before", "old").await,
        4_000_000_000
    );

    // `old` renamed to `new`: a call to `old` admitted just before is reported just after.
    reload(
        &running,
        dir.path(),
        &config_text(&[("new", "4"), ("kept", "1")]),
    );
    assert!(
        running.catalog().current().route("old").is_none(),
        "no longer routed"
    );
    assert_eq!(
        charged(&mut client, &store, "in-flight", "old").await,
        4_000_000_000,
        "a call served under the old catalog keeps its price"
    );

    // A second reload does not forget it; putting it back serves its new price.
    reload(
        &running,
        dir.path(),
        &config_text(&[("new", "4"), ("kept", "2")]),
    );
    assert_eq!(
        charged(&mut client, &store, "later", "old").await,
        4_000_000_000
    );
    reload(
        &running,
        dir.path(),
        &config_text(&[("old", "7"), ("kept", "2")]),
    );
    assert_eq!(
        charged(&mut client, &store, "back", "old").await,
        7_000_000_000
    );

    // A model never served is still charged nothing.
    assert_eq!(charged(&mut client, &store, "unknown", "never").await, 0);
    running.shutdown().await.expect("clean shutdown");
}

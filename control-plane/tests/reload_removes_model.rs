//! Reloads that take a model away while the filter still holds usage for it: the calls
//! were admitted and served under the old catalog, so they must still be charged.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::charged;
use tollgate_control_plane::reload::ReloadOutcome;
use tollgate_control_plane::server::Running;
use tollgate_control_plane::store::Store;
use tollgate_proto::v1::gateway_client::GatewayClient;
use tonic::transport::Channel;

/// Provider `alpha` serving each `(model, input price)`.
fn config_text(models: &[(&str, &str)]) -> String {
    let mut text = "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"data\"\n[[providers]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:9000\"\n".to_owned();
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
    common::start(&path).await
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

//! The control plane started in-process on free ports, its catalog reloaded by a real
//! SIGHUP to this process. The only test in its binary: the signal reaches every server
//! the process runs, so no other test may share it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{charged, start, stored_cost, with_token};
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::keys;
use tollgate_control_plane::reload::ReloadOutcome;
use tollgate_proto::v1::gateway_client::GatewayClient;
use tollgate_proto::v1::{AuthorizeRequest, AuthorizeResponse};
use tonic::transport::Channel;

/// The config file with model `m` at `input` USD per 1M tokens, plus `extra` TOML.
fn config_text(input: &str, extra: &str) -> String {
    format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [storage]\ndata_dir = \"data\"\n\
         [[providers]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:9000\"\n\
         [[models]]\nname = \"m\"\nprovider = \"alpha\"\ninput = {input}\noutput = 2\n{extra}"
    )
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
    let (running, store, mut client) = start(&path).await;
    let key = keys::create(
        &store,
        &running.catalog().current(),
        &Clock::system(),
        keys::KeySpec {
            name: "k".into(),
            ..keys::KeySpec::default()
        },
    )
    .await
    .expect("key issued");
    let key_hash = tollgate_core::keys::hash_key(key.secret.as_bytes());
    assert_ne!(
        running.grpc_addr().port(),
        0,
        "port 0 was bound to a real port"
    );
    let mut reloads = running.reloads();

    // 1000 tokens at $1 per 1M tokens: $0.001, 1e9 pico-dollars.
    assert_eq!(
        charged(&mut client, &store, "before", "m").await,
        1_000_000_000
    );

    let repriced = edit_and_hang_up(&path, &config_text("3", ""), &mut reloads).await;
    assert!(
        matches!(
            &repriced,
            ReloadOutcome::Applied { providers: 1, models: 1, restart_needed, .. }
                if restart_needed.is_empty()
        ),
        "{repriced:?}"
    );
    assert_eq!(
        charged(&mut client, &store, "after", "m").await,
        3_000_000_000
    );
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
    assert_eq!(
        charged(&mut client, &store, "after-bad-edit", "m").await,
        3_000_000_000
    );

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
    assert_eq!(
        charged(&mut client, &store, "fresh-call", "fresh").await,
        5_000_000_000
    );

    running.shutdown().await.expect("clean shutdown");
}

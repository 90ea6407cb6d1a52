//! A control plane serving provider keys stored through the API, through a master-key
//! rotation and a restart: it keeps answering every key, no restart needed.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{start, with_token};
use std::path::Path;
use tollgate_control_plane::catalog::admin::{DollarPrice, NewModel, NewProvider, rotate_master};
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::config::ProviderFile;
use tollgate_control_plane::keys;
use tollgate_control_plane::secrets::{Keyring, MasterKey};
use tollgate_proto::v1::AuthorizeRequest;
use tollgate_proto::v1::gateway_client::GatewayClient;
use tonic::transport::Channel;

/// A config whose master key is in `master.key` (and the previous one in `old.key` when
/// `with_previous`).
fn config_text(with_previous: bool) -> String {
    let previous = if with_previous {
        "previous_master_key_file = \"old.key\"\n"
    } else {
        ""
    };
    format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [storage]\ndata_dir = \"data\"\n\
         [secrets]\nmaster_key_file = \"master.key\"\n{previous}\
         [[providers]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:9000\"\n\
         [[models]]\nname = \"m\"\nprovider = \"alpha\"\ninput = 1\noutput = 2\n"
    )
}

fn write_key(dir: &Path, file: &str, key: &MasterKey) {
    std::fs::write(dir.join(file), key.to_base64().as_bytes()).unwrap();
}

/// The credential the control plane hands the filter for a call to `model`.
async fn served_credential(
    client: &mut GatewayClient<Channel>,
    key_hash: &str,
    model: &str,
) -> String {
    let answer = client
        .authorize(with_token(AuthorizeRequest {
            key_hash: key_hash.into(),
            model: model.into(),
        }))
        .await
        .expect("Authorize answered")
        .into_inner();
    answer.route.expect("a route").auth_value
}

fn provider(name: &str, key: &str) -> NewProvider {
    NewProvider {
        fields: ProviderFile {
            name: name.into(),
            url: Some(format!("https://{name}.example.com")),
            kind: None,
            auth_header: None,
            auth_scheme: None,
            api_key_env: None,
            timeout_ms: Some(30_000),
            forward_headers: Vec::new(),
            allow_background: false,
        },
        api_key: Some(key.to_owned().into()),
    }
}

async fn add_model(
    admin: &tollgate_control_plane::catalog::admin::CatalogAdmin,
    name: &str,
    provider: &str,
) {
    admin
        .create_model(NewModel {
            name: name.into(),
            provider: provider.into(),
            upstream_model: None,
            max_output_tokens: None,
            price: DollarPrice {
                input: 1.0,
                output: 1.0,
                cache_read: 0.0,
                cache_write: 0.0,
            },
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn provider_keys_are_served_through_a_master_key_rotation_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    let (old, new) = (MasterKey::generate(), MasterKey::generate());
    write_key(dir.path(), "master.key", &old);
    std::fs::write(&path, config_text(false)).unwrap();
    let (running, store, mut client) = start(&path).await;
    let admin = running.catalog_admin().clone();
    admin
        .create_provider(provider("vendor-a", "sk-vendor-a"))
        .await
        .unwrap();
    add_model(&admin, "model-a", "vendor-a").await;
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
    .unwrap();
    let hash = tollgate_core::keys::hash_key(key.secret.as_bytes());
    assert_eq!(
        served_credential(&mut client, &hash, "model-a").await,
        "Bearer sk-vendor-a"
    );

    // The new key becomes the master key, the old one the previous; the server keeps serving.
    write_key(dir.path(), "master.key", &new);
    write_key(dir.path(), "old.key", &old);
    admin
        .create_provider(provider("vendor-b", "sk-vendor-b"))
        .await
        .unwrap();
    add_model(&admin, "model-b", "vendor-b").await;
    let cli_path = dir.path().join("rotate.toml");
    std::fs::write(&cli_path, config_text(true)).unwrap();
    let cli_config = common::source(&cli_path).load().unwrap();
    let moved = rotate_master(&store, &Keyring::load(cli_config.secrets).unwrap())
        .await
        .unwrap();
    assert_eq!(moved, 1, "vendor-b was sealed under the new key already");
    assert_eq!(
        served_credential(&mut client, &hash, "model-a").await,
        "Bearer sk-vendor-a"
    );

    // It reads the rotated rows (as its periodic check would) and still serves both.
    admin.refresh().await.unwrap();
    assert_eq!(
        served_credential(&mut client, &hash, "model-a").await,
        "Bearer sk-vendor-a"
    );
    assert_eq!(
        served_credential(&mut client, &hash, "model-b").await,
        "Bearer sk-vendor-b"
    );

    // Restarted with the new key alone: nothing was lost.
    running.shutdown().await.unwrap();
    std::fs::remove_file(dir.path().join("old.key")).unwrap();
    let (_running, _store, mut client) = start(&path).await;
    assert_eq!(
        served_credential(&mut client, &hash, "model-a").await,
        "Bearer sk-vendor-a"
    );
    assert_eq!(
        served_credential(&mut client, &hash, "model-b").await,
        "Bearer sk-vendor-b"
    );
}

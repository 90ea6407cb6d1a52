//! `tollgate secrets …` and `tollgate envoy-config --stored-providers` as an operator runs
//! them: the binary, its config file and environment, the database it shares with servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use tollgate_control_plane::secrets::{MasterKey, seal};
use tollgate_control_plane::store::{ProviderRecord, Store};

const FILTER_TOKEN: &str = "filter-token-filter-token-filter-token";
const PROVIDER_KEY: &str = "sk-cli-PROVIDER-KEY-42";

/// Runs `tollgate ARGS` on `config` with `vars`; its stdout, or a panic with its stderr.
fn tollgate(config: &Path, vars: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TOLLGATE_MASTER_KEY")
        .env("TOLLGATE_FILTER_TOKEN", FILTER_TOKEN)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tollgate {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn an_operator_generates_a_key_renders_stored_providers_and_rotates_the_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        "[secrets]\nprevious_master_key_env = \"OLD_MASTER_KEY\"\n\
         [[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9\"\n\
         [[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n",
    )
    .unwrap();
    let old = MasterKey::generate();
    let old_text = old.to_base64();
    let before = [
        ("TOLLGATE_MASTER_KEY", old_text.as_str()),
        ("OLD_MASTER_KEY", old_text.as_str()),
    ];
    let generated = tollgate(&config, &before, &["secrets", "generate-key"]);
    let new = MasterKey::parse(&generated, "output").expect("a 32-byte base64 key");
    let new_text = new.to_base64();

    let store = Store::open(&format!(
        "sqlite://{}/.tollgate/tollgate.db",
        dir.path().display()
    ))
    .await
    .unwrap();
    let record = ProviderRecord {
        name: "api-provider".into(),
        kind: "anthropic".into(),
        base_url: "https://api.anthropic.example".into(),
        auth_header: "x-api-key".into(),
        auth_scheme: "raw".into(),
        timeout_ms: 30_000,
        forward_headers: Vec::new(),
        allow_background: false,
        key: Some(seal(&old, "api-provider", PROVIDER_KEY).unwrap()),
        created_at_ms: 1,
        updated_at_ms: 1,
    };
    assert!(store.insert_provider(&record).await.unwrap());

    let vars = [
        ("TOLLGATE_MASTER_KEY", new_text.as_str()),
        ("OLD_MASTER_KEY", old_text.as_str()),
    ];
    let bootstrap = tollgate(
        &config,
        &vars,
        &["envoy-config", "--without-filter", "--stored-providers"],
    );
    assert!(bootstrap.contains("api-provider"), "a cluster for it");
    assert!(bootstrap.contains("api.anthropic.example"));
    assert!(!bootstrap.contains("PROVIDER-KEY"), "never its key");
    let without = tollgate(&config, &vars, &["envoy-config", "--without-filter"]);
    assert!(!without.contains("api-provider"), "only when asked");

    let rotated = tollgate(&config, &vars, &["secrets", "rotate-master"]);
    assert!(
        rotated.starts_with("1 provider key(s) re-wrapped"),
        "{rotated}"
    );
    assert!(rotated.contains(new.id()), "{rotated}");
    assert!(!rotated.contains(new_text.as_str()) && !rotated.contains(old_text.as_str()));
    let stored = store.provider("api-provider").await.unwrap().unwrap();
    let sealed = stored.key.unwrap();
    assert_eq!(sealed.master_key_id, new.id());
    assert_eq!(
        &*tollgate_control_plane::secrets::open(&new, "api-provider", &sealed).unwrap(),
        PROVIDER_KEY,
        "nothing lost"
    );
    let audit = store.list_audit(None, 10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.entry.action == "secrets.rotate_master"
                && e.entry.target == new.id()
                && e.entry.actor == "cli"),
        "{audit:?}"
    );
    let again = tollgate(&config, &vars, &["secrets", "rotate-master"]);
    assert!(again.starts_with("0 provider key(s)"), "{again}");
}

//! Calls to the control plane's gRPC API from someone who is not the filter: the real
//! `tollgate` binary, started on free ports, called with tonic's client.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_proto::v1::gateway_client::GatewayClient;
use tollgate_proto::v1::{AuthorizeRequest, AuthorizeResponse, UsageBatch, UsageRecord};
use tonic::transport::Channel;
use tonic::{Code, Request};

const PROVIDER_SECRET: &str = "sk-provider-secret-never-for-strangers";
const TOKEN: &str = "0123456789abcdef0123456789abcdef-sidecar";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A control plane serving from its own directory; killed when dropped.
struct ControlPlane {
    _dir: tempfile::TempDir,
    config: PathBuf,
    grpc: String,
    child: Option<Child>,
}

impl ControlPlane {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("tollgate.toml");
        let grpc = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            &config,
            format!(
                "[server]\ngrpc_listen = \"{grpc}\"\nhttp_listen = \"127.0.0.1:{}\"\n\
                 [storage]\ndata_dir = \"data\"\n\
                 [[providers]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:9000\"\napi_key_env = \"TEST_PROVIDER_KEY\"\n\
                 [[models]]\nname = \"allowed\"\nprovider = \"alpha\"\nfree = true\n\
                 [[models]]\nname = \"other\"\nprovider = \"alpha\"\nfree = true\n",
                free_port()
            ),
        )
        .expect("write config");
        Self {
            _dir: dir,
            config,
            grpc,
            child: None,
        }
    }

    fn command(&self, token: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        c.arg("--config")
            .arg(&self.config)
            .env("TEST_PROVIDER_KEY", PROVIDER_SECRET)
            .env("TOLLGATE_FILTER_TOKEN", token)
            .env(
                "TOLLGATE_SESSION_SECRET",
                "sidecar-auth-session-secret-0123456789",
            )
            .env_remove("TOLLGATE_CONFIG");
        c
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = self
            .command(TOKEN)
            .args(args)
            .output()
            .expect("run tollgate");
        assert!(
            out.status.success(),
            "tollgate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    async fn serve(mut self) -> (Self, GatewayClient<Channel>) {
        let child = self
            .command(TOKEN)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tollgate serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match GatewayClient::connect(format!("http://{}", self.grpc)).await {
                Ok(client) => return (self, client),
                Err(e) if Instant::now() > deadline => panic!("control plane not up: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn usage_of(&self, request_id: &str) -> String {
        self.cli(&["usage", "list", "--request-id", request_id, "--json"])
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header value");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn authorize(key_hash: &str, model: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        key_hash: key_hash.into(),
        model: model.into(),
    }
}

/// Whether the provider's secret appears anywhere in the answer.
fn carries_secret(answer: &AuthorizeResponse) -> bool {
    format!("{answer:?}").contains(PROVIDER_SECRET)
}

fn key_hash_of(secret: &str) -> String {
    tollgate_core::keys::hash_key(secret.trim().as_bytes())
}

fn setup_key(cp: &ControlPlane) -> String {
    let secret = cp.cli(&[
        "keys", "create", "--name", "k", "--models", "allowed", "--quiet",
    ]);
    key_hash_of(&secret)
}

#[tokio::test]
async fn calls_without_the_sidecar_token_are_unauthenticated() {
    let cp = ControlPlane::new();
    let key_hash = setup_key(&cp);
    let (_cp, mut client) = cp.serve().await;
    let wrong = "f".repeat(TOKEN.len());
    for token in [None, Some(wrong.as_str()), Some(&TOKEN[..TOKEN.len() - 1])] {
        let answer = client
            .authorize(with_token(authorize(&key_hash, "allowed"), token))
            .await;
        assert_eq!(
            answer.map(|a| a.into_inner()).err().map(|s| s.code()),
            Some(Code::Unauthenticated),
            "token {token:?}"
        );
    }
    // The filter's own call, with the token, gets the route and its credential.
    let answer = client
        .authorize(with_token(authorize(&key_hash, "allowed"), Some(TOKEN)))
        .await
        .expect("authorized")
        .into_inner();
    assert_eq!(
        answer.route.map(|r| r.auth_value),
        Some(format!("Bearer {PROVIDER_SECRET}"))
    );
}

#[tokio::test]
async fn only_an_active_key_allowed_the_model_gets_the_credential() {
    let cp = ControlPlane::new();
    let key_hash = setup_key(&cp);
    let (cp, mut client) = cp.serve().await;
    let mut ask = async |hash: &str, model: &str| {
        client
            .authorize(with_token(authorize(hash, model), Some(TOKEN)))
            .await
            .expect("answered")
            .into_inner()
    };

    let made_up = ask(&"ab".repeat(32), "allowed").await;
    assert!(!carries_secret(&made_up), "{made_up:?}");
    assert_eq!(made_up.route, None);

    let not_allowed = ask(&key_hash, "other").await;
    assert!(!carries_secret(&not_allowed), "{not_allowed:?}");
    assert!(not_allowed.model_served, "403, not 404: the model exists");

    let unserved = ask(&key_hash, "no-such-model").await;
    assert!(!unserved.model_served && unserved.route.is_none());

    let allowed = ask(&key_hash, "allowed").await;
    assert!(carries_secret(&allowed) && allowed.model_served);

    let key_id = cp
        .cli(&["keys", "list", "--json"])
        .lines()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["id"].as_str().map(str::to_owned)
        })
        .expect("the key is listed");
    cp.cli(&["keys", "revoke", &key_id]);
    let revoked = ask(&key_hash, "allowed").await;
    assert!(!carries_secret(&revoked), "{revoked:?}");
}

#[tokio::test]
async fn report_usage_without_the_token_stores_nothing() {
    let (cp, mut client) = ControlPlane::new().serve().await;
    let batch = |id: &str| UsageBatch {
        records: vec![UsageRecord {
            request_id: id.into(),
            key_id: "key_victim".into(),
            model: "allowed".into(),
            provider: "alpha".into(),
            status: 200,
            ..UsageRecord::default()
        }],
    };
    for (id, token) in [
        ("forged-none", None),
        ("forged-wrong", Some("x".repeat(40))),
    ] {
        let sent = client
            .report_usage(with_token(batch(id), token.as_deref()))
            .await;
        assert_eq!(
            sent.err().map(|s| s.code()),
            Some(Code::Unauthenticated),
            "{id}"
        );
        assert_eq!(cp.usage_of(id), "", "{id} was stored");
    }
    let ack = client
        .report_usage(with_token(batch("honest"), Some(TOKEN)))
        .await
        .expect("stored")
        .into_inner();
    assert_eq!(ack.stored, 1);
    assert!(cp.usage_of("honest").contains("\"honest\""));
}

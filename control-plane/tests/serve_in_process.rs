//! `serve()` started in-process on pre-bound listeners and stopped by its shutdown future.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::config::ConfigSource;
use tollgate_control_plane::server::{self, Listeners, ServeError, Setup};
use tollgate_control_plane::store::Store;
use tollgate_proto::v1::AuthorizeRequest;
use tollgate_proto::v1::gateway_client::GatewayClient;
use tonic::Code;

const TOKEN: &str = "in-process-token-in-process-token-012345";
const SESSION_SECRET: &str = "in-process-session-secret-in-process-01";
const CONFIG: &str = "[storage]\ndata_dir = \"data\"\n[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n\
    [[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n";

async fn setup(
    dir: &std::path::Path,
    token: Option<&'static str>,
    session_secret: Option<&'static str>,
) -> Setup {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, CONFIG).expect("config written");
    let source = ConfigSource::new(path, move |var| {
        match var {
            "TOLLGATE_FILTER_TOKEN" => token,
            "TOLLGATE_SESSION_SECRET" => session_secret,
            _ => None,
        }
        .map(str::to_owned)
    });
    let config = source.load().expect("valid config");
    let store = Store::open(&config.storage.database_url)
        .await
        .expect("store");
    Setup {
        source,
        config,
        store,
        clock: Clock::system(),
    }
}

async fn listeners() -> Listeners {
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    Listeners::new(bind().await.expect("gRPC"), bind().await.expect("HTTP"))
}

#[tokio::test]
async fn serves_on_given_listeners_until_its_shutdown_future_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = server::serve(
        setup(dir.path(), Some(TOKEN), Some(SESSION_SECRET)).await,
        listeners().await,
        async {
            let _ = stopped.await;
        },
    )
    .await
    .expect("serving");
    let url = format!("http://{}", running.grpc_addr());
    let mut client = GatewayClient::connect(url.clone())
        .await
        .expect("connected");
    let refused = client
        .authorize(AuthorizeRequest {
            key_hash: "0".repeat(64),
            model: "m".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(running.catalog().current().models.contains_key("m"));

    stop.send(()).expect("server listening for the stop");
    running.wait().await.expect("clean stop");
    assert!(
        GatewayClient::connect(url).await.is_err(),
        "the listener is closed once serve has ended"
    );
}

#[tokio::test]
async fn without_the_filter_token_nothing_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = server::serve(
        setup(dir.path(), None, Some(SESSION_SECRET)).await,
        listeners().await,
        std::future::pending(),
    )
    .await
    .expect_err("an open gRPC API is refused");
    assert!(matches!(refused, ServeError::Config(_)), "{refused:?}");
    assert!(refused.to_string().contains("server.filter_token_env"));
}

#[tokio::test]
async fn without_a_session_secret_nothing_is_served() {
    // A default secret would let anyone who reads this code forge an admin's session.
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = server::serve(
        setup(dir.path(), Some(TOKEN), None).await,
        listeners().await,
        std::future::pending(),
    )
    .await
    .expect_err("sessions nobody can trust are refused");
    assert!(matches!(refused, ServeError::Config(_)), "{refused:?}");
    assert!(refused.to_string().contains("api.session_secret_env"));
}

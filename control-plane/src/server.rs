//! The running control plane: the filter's gRPC API and the HTTP API on bound listeners,
//! with a catalog that reloads on SIGHUP, until its shutdown future completes or
//! [`Running::shutdown`] is called.
//!
//! Tests start it in-process on port 0 and learn the bound addresses from [`Running`];
//! the `tollgate serve` command starts it the same way with the config's addresses.

use crate::api::{self, ApiState};
use crate::catalog::LiveCatalog;
use crate::catalog::admin::{AdminSettings, CatalogAdmin, CatalogError};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, ConfigSource, ServerSettings};
use crate::dashboard::{Dashboard, DashboardError};
use crate::filter_modules::{FilterModules, FilterModulesError};
use crate::gateway;
use crate::lease_sweeper;
use crate::reload::{ReloadOutcome, Reloader};
use crate::secrets::{Keyring, SecretsError};
use crate::store::Store;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The configuration cannot be served (e.g. no filter token).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The filter builds of `server.filter_dir` could not be read.
    #[error(transparent)]
    FilterModules(#[from] FilterModulesError),
    /// The dashboard of `server.dashboard_dir` is not there.
    #[error(transparent)]
    Dashboard(#[from] DashboardError),
    /// A listener could not be bound or read.
    #[error("cannot listen for the {api} API on {addr}: {source}")]
    Listen {
        /// `gRPC` or `HTTP`.
        api: &'static str,
        /// The address asked for.
        addr: String,
        /// The I/O error.
        source: io::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot listen for {signal}: {source}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(io::Error),
    /// A master key of `[secrets]` could not be loaded.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The providers and models stored through the API could not be served (e.g. a
    /// provider key under a master key this process lacks).
    #[error("the stored catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// The task running the servers panicked or was cancelled.
    #[error("server task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The two listening sockets, bound before serving so a caller can use port 0.
#[derive(Debug)]
pub struct Listeners {
    grpc: TcpListener,
    http: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `[server]`.
    pub async fn bind(server: &ServerSettings) -> Result<Self, ServeError> {
        let bind = async |api, addr: SocketAddr| {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Listen {
                    api,
                    addr: addr.to_string(),
                    source,
                })
        };
        Ok(Self {
            grpc: bind("gRPC", server.grpc_listen).await?,
            http: bind("HTTP", server.http_listen).await?,
        })
    }

    /// Listeners the caller bound itself.
    pub fn new(grpc: TcpListener, http: TcpListener) -> Self {
        Self { grpc, http }
    }
}

/// What a control plane serves from.
pub struct Setup {
    /// Where the configuration is read again on reload.
    pub source: ConfigSource,
    /// The configuration to start with, already read from `source`.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The time every part reads.
    pub clock: Clock,
}

/// A control plane that is serving.
#[derive(Debug)]
pub struct Running {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    reloader: Reloader,
    catalog_admin: CatalogAdmin,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Where the gRPC API listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The catalog in force.
    pub fn catalog(&self) -> &LiveCatalog {
        self.reloader.catalog()
    }

    /// What changes the catalog's stored part (the HTTP API's providers and models).
    pub fn catalog_admin(&self) -> &CatalogAdmin {
        &self.catalog_admin
    }

    /// Reloads the catalog from the config file now, as SIGHUP does.
    pub fn reload(&self) -> ReloadOutcome {
        self.reloader.reload()
    }

    /// The latest reload's outcome, changing with each reload (SIGHUP or [`Running::reload`]).
    pub fn reloads(&self) -> watch::Receiver<Option<ReloadOutcome>> {
        self.reloader.outcomes()
    }

    /// Stops taking calls, lets those in flight finish, and waits for the servers to end.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.stop.send_replace(true);
        self.task.await?
    }

    /// Waits until the servers end, after the shutdown future given to [`serve`] completes.
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task.await?
    }
}

/// Starts serving on `listeners` and returns once they accept calls; `shutdown` completing
/// stops the servers gracefully. SIGHUP reloads the catalog from `setup.source`.
pub async fn serve(
    setup: Setup,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServeError> {
    let Setup {
        source,
        config,
        store,
        clock,
    } = setup;
    let token = config.server.filter_token()?.clone();
    let session_secret = config.api.session_secret()?.clone();
    let filter_modules = config
        .server
        .filter_dir
        .as_deref()
        .map(FilterModules::load)
        .transpose()?;
    let dashboard = config
        .server
        .dashboard_dir
        .as_deref()
        .map(Dashboard::load)
        .transpose()?;
    let local_addr = |api, listener: &TcpListener| {
        listener.local_addr().map_err(|source| ServeError::Listen {
            api,
            addr: "an unknown address".into(),
            source,
        })
    };
    let grpc_addr = local_addr("gRPC", &listeners.grpc)?;
    let http_addr = local_addr("HTTP", &listeners.http)?;
    // Installed before returning: a SIGHUP sent once `serve` has returned reloads, never
    // meets the default action (which ends the process).
    let hangups = Hangups::new()?;

    let catalog = LiveCatalog::new(config.catalog.clone());
    let keys = Arc::new(Keyring::load(config.secrets.clone())?);
    let catalog_admin = CatalogAdmin::new(
        store.clone(),
        keys,
        catalog.clone(),
        clock.clone(),
        AdminSettings {
            allow_private_upstreams: config.catalog_settings.allow_private_upstreams,
            default_max_output_tokens: config.limits.max_output_tokens,
            budgets: config.budgets,
        },
    );
    // Before serving: a stored provider whose key cannot be opened stops the start.
    catalog_admin.refresh().await?;
    let gateway_settings = gateway::Settings {
        gateway: config.gateway,
        limits: config.limits,
        budgets: config.budgets,
        clock: clock.clone(),
    };
    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        database = %config.storage.redacted_url(),
        providers = config.catalog.providers.len(),
        models = config.catalog.models.len(),
        // Replicas on one database must agree on these: each grants and reclaims by its own.
        lease_ttl_ms = config.budgets.lease_ttl_ms,
        reclaim_grace_ms = config.budgets.reclaim_grace_ms,
        sweep_interval_ms = u64::try_from(config.budgets.sweep_interval.as_millis()).unwrap_or(u64::MAX),
        share_ttl_ms = config.limits.share_ttl_ms,
        share_clock_skew_ms = config.limits.share_clock_skew_ms,
        "tollgate control plane serving"
    );
    let api_state = ApiState {
        store: store.clone(),
        clock: clock.clone(),
        catalog: catalog.clone(),
        catalog_admin: catalog_admin.clone(),
        session_secret,
        settings: std::sync::Arc::new(config.api.clone()),
    };
    let reloader = Reloader::new(source, config, catalog.clone(), clock.clone());

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        // An error means every sender is gone: nothing can ask for a stop any more.
        let _ = stopped.wait_for(|s| *s).await;
    };
    let grpc = tonic::transport::Server::builder()
        .add_service(gateway::server(
            catalog,
            gateway_settings.clone(),
            store.clone(),
            token,
        ))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listeners.grpc),
            until_stopped(stopped.clone()),
        );
    let sweeper = lease_sweeper::run(
        store.clone(),
        gateway_settings.budgets,
        gateway_settings.limits,
        clock,
        until_stopped(stopped.clone()),
    );
    let api = api::router(api_state, dashboard);
    let routes = match filter_modules {
        Some(modules) => api.merge(modules.router()),
        None => api,
    };
    // The peer's address is what logins are limited and audited by.
    let http = axum::serve(
        listeners.http,
        routes.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(until_stopped(stopped.clone()));
    let trigger = {
        let stop = stop.clone();
        let stopped = until_stopped(stopped.clone());
        async move {
            tokio::select! {
                () = shutdown => {
                    tracing::info!("shutting down");
                    stop.send_replace(true);
                }
                () = stopped => {}
            }
        }
    };
    let refreshes = refresh_stored_catalog(catalog_admin.clone(), until_stopped(stopped.clone()));
    let reloads = reload_on_hangup(hangups, reloader.clone(), until_stopped(stopped));
    let task = tokio::spawn(async move {
        let (grpc, http, (), (), (), ()) =
            tokio::join!(grpc, http, trigger, reloads, sweeper, refreshes);
        grpc?;
        http.map_err(ServeError::Http)
    });
    Ok(Running {
        grpc_addr,
        http_addr,
        reloader,
        catalog_admin,
        stop,
        task,
    })
}

/// How often a replica checks whether another one (or the CLI) changed the stored
/// catalog: such changes are served everywhere within this.
const CATALOG_REFRESH: Duration = Duration::from_secs(2);

/// Reads the stored catalog again whenever its change count moved, until `stopped`.
async fn refresh_stored_catalog(admin: CatalogAdmin, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    let mut ticks = tokio::time::interval(CATALOG_REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = ticks.tick() => {
                // The catalog in force stays when this fails; the next tick tries again.
                match admin.refresh_if_changed().await {
                    Ok(true) => tracing::info!("stored catalog changed elsewhere; read again"),
                    Ok(false) => {}
                    Err(e) => tracing::error!("stored catalog not read again: {e}"),
                }
            }
        }
    }
}

/// Reloads on each SIGHUP until `stopped` completes.
async fn reload_on_hangup(
    mut hangups: Hangups,
    reloader: Reloader,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            more = hangups.recv() => {
                if !more {
                    return;
                }
                tracing::info!("SIGHUP: reloading the catalog");
                reloader.reload();
            }
        }
    }
}

/// SIGHUPs sent to this process.
struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangups {
    fn new() -> Result<Self, ServeError> {
        #[cfg(unix)]
        {
            let kind = tokio::signal::unix::SignalKind::hangup();
            let signal =
                tokio::signal::unix::signal(kind).map_err(|source| ServeError::Signal {
                    signal: "SIGHUP",
                    source,
                })?;
            Ok(Self { signal })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next SIGHUP; `false` once none can come.
    async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        {
            self.signal.recv().await.is_some()
        }
        #[cfg(not(unix))]
        std::future::pending().await
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM: when a person or a supervisor asks the
/// process to stop.
pub async fn terminate_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::SignalKind::terminate();
        let mut term = match tokio::signal::unix::signal(term) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

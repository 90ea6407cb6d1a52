//! `tollgate`: the control plane server and its command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use tollgate_control_plane::config::Config;
use tollgate_control_plane::envoy_config::{self, EnvoyConfigArgs};
use tollgate_control_plane::store::Store;
use tollgate_control_plane::{gateway, http, keys};
use tollgate_core::pricing::format_dollars;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate LLM gateway control plane"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        env = "TOLLGATE_CONFIG",
        default_value = "tollgate.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC API for the filter and the HTTP API until interrupted.
    Serve,
    /// Check the configuration file and exit.
    CheckConfig,
    /// Print the Envoy bootstrap for this configuration (holds the filter's token).
    EnvoyConfig(EnvoyConfigArgs),
    /// Manage virtual keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect recorded usage.
    #[command(subcommand)]
    Usage(UsageCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key; its secret is printed once and never stored.
    Create {
        /// A name people recognize.
        #[arg(long)]
        name: String,
        /// Comma-separated models the key may use (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Print the secret alone, for scripts.
        #[arg(long)]
        quiet: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; gateways refuse it once their cache expires.
    Revoke {
        /// The key's id (`key_…`).
        id: String,
    },
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Show the newest usage records.
    List {
        /// Only this key's records.
        #[arg(long)]
        key: Option<String>,
        /// Only this request's record.
        #[arg(long)]
        request_id: Option<String>,
        /// How many records at most.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let config = Config::load(&cli.config, |var| std::env::var(var).ok())?;

    match cli.command {
        Command::CheckConfig => {
            config.envoy.resolve_filter(config.filter_token()?)?;
            println!(
                "{}: ok ({} providers, {} models, database {})",
                cli.config.display(),
                config.providers.len(),
                config.models.len(),
                redact(&config.database_url)
            );
            Ok(())
        }
        Command::Serve => serve(config).await,
        Command::EnvoyConfig(args) => Ok(envoy_config::run(&config, &args)?),
        Command::Keys(cmd) => {
            let store = Store::open(&config.database_url).await?;
            keys_command(cmd, &store, &config).await
        }
        Command::Usage(UsageCommand::List {
            key,
            request_id,
            limit,
            json,
        }) => {
            let store = Store::open(&config.database_url).await?;
            let rows = store
                .list_usage(key.as_deref(), request_id.as_deref(), limit)
                .await?;
            for r in rows {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{}  {}  {}  {}  status={} in={} cached={} cache_write={} out={} cost={}{}",
                        r.request_id,
                        r.key_id,
                        r.model,
                        r.provider,
                        r.status,
                        r.input_uncached,
                        r.cache_read,
                        r.cache_write,
                        r.output,
                        format_dollars(u64::try_from(r.cost_picos).unwrap_or(0)),
                        if r.partial { " partial" } else { "" }
                    );
                }
            }
            Ok(())
        }
    }
}

async fn keys_command(cmd: KeysCommand, store: &Store, config: &Config) -> Result<()> {
    match cmd {
        KeysCommand::Create {
            name,
            models,
            quiet,
        } => {
            let issued = keys::create(store, config, &name, models).await?;
            if quiet {
                println!("{}", issued.secret);
            } else {
                println!("Created key {} ({}).", issued.row.id, issued.row.name);
                println!("Secret (shown once, store it now): {}", issued.secret);
            }
        }
        KeysCommand::List { json } => {
            for k in store.list_keys().await? {
                let status = if k.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let models = if k.models.is_empty() {
                    "*".to_owned()
                } else {
                    k.models.join(",")
                };
                if json {
                    let line = serde_json::json!({
                        "id": k.id, "name": k.name, "prefix": k.key_prefix, "models": k.models,
                        "status": status, "created_at_ms": k.created_at_ms, "revoked_at_ms": k.revoked_at_ms,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{}  {:8}  {}…  models={}  {}",
                        k.id, status, k.key_prefix, models, k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            keys::revoke(store, &id).await?;
            println!("Revoked {id}. Gateways refuse it within their key cache time.");
        }
    }
    Ok(())
}

async fn serve(config: Config) -> Result<()> {
    let token = config.filter_token()?.clone();
    let store = Store::open(&config.database_url)
        .await
        .with_context(|| format!("opening database {}", redact(&config.database_url)))?;
    let config = Arc::new(config);
    let grpc_addr = config.grpc_listen;
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_listen))?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {grpc_addr}"))?;
    tracing::info!(
        grpc = %grpc_addr,
        http = %config.http_listen,
        database = %redact(&config.database_url),
        models = config.models.len(),
        "tollgate control plane serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let grpc = {
        let mut stop = stop_rx.clone();
        tonic::transport::Server::builder()
            .add_service(gateway::server(Arc::clone(&config), store.clone(), token))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener),
                async move {
                    let _ = stop.changed().await;
                },
            )
    };
    let http = {
        let mut stop = stop_rx;
        axum::serve(http_listener, http::router(store)).with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
    };
    let stopper = async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(());
    };
    let (grpc, http, ()) = tokio::join!(grpc, http, stopper);
    grpc.context("gRPC server")?;
    http.context("HTTP server")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

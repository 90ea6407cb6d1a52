//! The `tollgate` command line: its schema, and one handler per subcommand, each writing
//! what it prints to the `impl Write` it is given.

mod check_config;
mod keys;
mod serve;
mod usage;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, ConfigSource};
use crate::envoy_config::EnvoyConfigArgs;
use crate::keys::KeyError;
use crate::server::ServeError;
use crate::store::{Store, StoreError};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use thiserror::Error;

/// Why a command failed.
#[derive(Debug, Error)]
pub enum CliError {
    /// The config file was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened.
    #[error("opening database {url}: {source}")]
    OpenStore {
        /// The database URL, without its password.
        url: String,
        /// Why.
        source: StoreError,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key operation was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The server could not start or failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The Envoy bootstrap could not be rendered or written.
    #[error(transparent)]
    EnvoyConfig(#[from] crate::envoy_config::EnvoyConfigError),
    /// Output could not be written.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// A record could not be written as JSON.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `tollgate [--config FILE] <command>`.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate LLM gateway control plane"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        env = "TOLLGATE_CONFIG",
        default_value = "tollgate.toml",
        global = true
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC API for the filter and the HTTP API until interrupted; SIGHUP
    /// reloads providers, models and prices from the config file.
    Serve,
    /// Check the configuration file and exit.
    CheckConfig,
    /// Print the Envoy bootstrap for this configuration (it holds the filter's token).
    EnvoyConfig(EnvoyConfigArgs),
    /// Manage virtual keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect recorded usage.
    #[command(subcommand)]
    Usage(UsageCommand),
}

/// `tollgate keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key; its secret is printed once and never stored.
    Create(CreateKeyArgs),
    /// List keys (never their secrets).
    List(ListKeysArgs),
    /// Revoke a key by id; gateways refuse it once their cache expires.
    Revoke(RevokeKeyArgs),
}

/// `tollgate keys create`.
#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// A name people recognize.
    #[arg(long)]
    pub name: String,
    /// Comma-separated models the key may use (default: all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Print the secret alone, for scripts.
    #[arg(long)]
    pub quiet: bool,
    /// The key's own requests per minute (0 refuses every call); default: `[limits]`.
    #[arg(long)]
    pub rpm: Option<u32>,
}

/// `tollgate keys list`.
#[derive(Debug, Args)]
pub struct ListKeysArgs {
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `tollgate keys revoke`.
#[derive(Debug, Args)]
pub struct RevokeKeyArgs {
    /// The key's id (`key_…`).
    pub id: String,
}

/// `tollgate usage …`.
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Show the newest usage records.
    List(ListUsageArgs),
}

/// `tollgate usage list`.
#[derive(Debug, Args)]
pub struct ListUsageArgs {
    /// Only this key's records.
    #[arg(long)]
    pub key: Option<String>,
    /// Only this request's record.
    #[arg(long)]
    pub request_id: Option<String>,
    /// How many records at most.
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// Runs the command with this process's environment and wall clock.
    pub async fn run(self, out: &mut impl Write) -> Result<(), CliError> {
        let source = ConfigSource::with_process_env(self.config);
        run(self.command, source, Clock::system(), out).await
    }
}

/// Runs `command` with the config from `source`, writing what it prints to `out`.
pub async fn run(
    command: Command,
    source: ConfigSource,
    clock: Clock,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let config = source.load()?;
    match command {
        Command::Serve => {
            serve::run(source, config, clock, crate::server::terminate_signal()).await
        }
        Command::CheckConfig => check_config::run(source.path(), &config, out),
        Command::EnvoyConfig(args) => Ok(crate::envoy_config::run(&config, &args)?),
        Command::Keys(command) => {
            let store = open_store(&config).await?;
            match command {
                KeysCommand::Create(args) => {
                    keys::create(&store, &config.catalog, &clock, args, out).await
                }
                KeysCommand::List(args) => keys::list(&store, &args, out).await,
                KeysCommand::Revoke(args) => keys::revoke(&store, &clock, &args, out).await,
            }
        }
        Command::Usage(UsageCommand::List(args)) => {
            let store = open_store(&config).await?;
            usage::list(&store, &args, out).await
        }
    }
}

/// Opens the configured database, naming it (without its password) if that fails.
async fn open_store(config: &Config) -> Result<Store, CliError> {
    Store::open(&config.storage.database_url)
        .await
        .map_err(|source| CliError::OpenStore {
            url: config.storage.redacted_url(),
            source,
        })
}

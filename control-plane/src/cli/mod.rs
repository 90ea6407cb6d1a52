//! The `tollgate` command line: its schema, and one handler per subcommand, each writing
//! what it prints to the `impl Write` it is given.

mod budgets;
mod check_config;
mod keys;
mod secrets;
mod serve;
mod teams;
mod usage;
mod users;

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
    /// A catalog change (a master-key rotation) was refused or failed.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::admin::CatalogError),
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
    /// No budget has that id.
    #[error("no budget with id `{0}`")]
    NoSuchBudget(String),
    /// A user could not be created or changed.
    #[error(transparent)]
    User(#[from] crate::users::UserError),
    /// No team has that name.
    #[error("no team `{0}`")]
    NoSuchTeam(String),
    /// A team with that name exists.
    #[error("a team named `{0}` exists")]
    TeamExists(String),
    /// The user is not in the team.
    #[error("`{user}` is not in team `{team}`")]
    NotInTeam {
        /// The team.
        team: String,
        /// The user.
        user: String,
    },
    /// The password and its confirmation at the prompt differ.
    #[error("the two passwords differ")]
    PasswordsDiffer,
    /// A command was given nothing to do.
    #[error("nothing to change: give at least one of {0}")]
    NothingToChange(&'static str),
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
    /// Write a consistent copy of the SQLite database to a new file, while it serves.
    Backup(BackupArgs),
    /// Manage the people who use the HTTP API, and users' rate limits.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage teams and their members.
    #[command(subcommand)]
    Teams(TeamsCommand),
    /// Manage spend limits of keys, users and teams.
    #[command(subcommand)]
    Budgets(BudgetsCommand),
    /// Manage the master key that seals provider keys at rest.
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

/// `tollgate secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print a new random master key (base64), for TOLLGATE_MASTER_KEY or a key file.
    GenerateKey,
    /// Re-wrap every stored provider key under the configured master key, opening them
    /// with it or with `secrets.previous_master_key_*`; all in one transaction.
    RotateMaster,
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
    /// Change a key's limits, user, team or expiry; gateways apply it once their cache expires.
    Update(UpdateKeyArgs),
    /// Give a key a new secret; the old one keeps working for the grace period.
    Rotate(RotateKeyArgs),
}

/// A duration typed by a person: `90d`, `12h`, `30m`, `1h 30m`.
fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 90d, 12h, 30m)"))
}

/// A limit given on the command line: a number, or `none` for no value of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitArg(pub Option<u64>);

/// Parses `N` or `none`.
fn limit_arg(text: &str) -> Result<LimitArg, String> {
    if text == "none" {
        return Ok(LimitArg(None));
    }
    let n: u64 = text
        .parse()
        .map_err(|_| format!("`{text}` is neither a whole number (0 blocks) nor `none`"))?;
    if i64::try_from(n).is_err() {
        return Err(format!("`{text}` is more than {}", i64::MAX));
    }
    Ok(LimitArg(Some(n)))
}

/// Parses a requests-per-minute `N` (at most u32::MAX) or `none`.
fn rpm_arg(text: &str) -> Result<LimitArg, String> {
    let limit = limit_arg(text)?;
    match limit.0 {
        Some(n) if u32::try_from(n).is_err() => Err(format!("`{text}` is more than {}", u32::MAX)),
        _ => Ok(limit),
    }
}

/// A per-model limit: `MODEL:RPM:TPM`, each limit a number or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimitArg {
    /// The model (may itself hold colons).
    pub model: String,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

/// Parses `MODEL:RPM:TPM`.
fn model_limit_arg(text: &str) -> Result<ModelLimitArg, String> {
    let mut parts = text.rsplitn(3, ':');
    let (Some(tpm), Some(rpm), Some(model)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "`{text}` is not MODEL:RPM:TPM (e.g. gpt-4o:60:none)"
        ));
    };
    if model.is_empty() {
        return Err(format!("`{text}` names no model"));
    }
    let rpm = rpm_arg(rpm)?.0.and_then(|n| u32::try_from(n).ok());
    Ok(ModelLimitArg {
        model: model.to_owned(),
        rpm,
        tpm: limit_arg(tpm)?.0,
    })
}

/// Parses dollars exactly into pico-dollars.
fn usd_arg(text: &str) -> Result<u64, String> {
    crate::budgets::parse_dollars(text).map_err(|e| e.to_string())
}

/// `tollgate keys update`.
#[derive(Debug, Args)]
pub struct UpdateKeyArgs {
    /// The key's id (`key_…`).
    pub id: String,
    /// Its own requests per minute (0 refuses every call); `none`: the `[limits]` default.
    #[arg(long, value_name = "N|none", value_parser = rpm_arg, allow_negative_numbers = true)]
    pub rpm: Option<LimitArg>,
    /// Its own tokens per minute (0 refuses every call); `none`: the `[limits]` default.
    #[arg(long, value_name = "N|none", value_parser = limit_arg, allow_negative_numbers = true)]
    pub tpm: Option<LimitArg>,
    /// The user the key belongs to.
    #[arg(long, conflicts_with = "no_user")]
    pub user: Option<String>,
    /// The key belongs to no user any more.
    #[arg(long)]
    pub no_user: bool,
    /// The team the key belongs to.
    #[arg(long, conflicts_with = "no_team")]
    pub team: Option<String>,
    /// The key belongs to no team any more.
    #[arg(long)]
    pub no_team: bool,
    /// The key stops working this long from now (`90d`, `12h`).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, conflicts_with = "no_expiry")]
    pub expires_in: Option<std::time::Duration>,
    /// The key no longer expires.
    #[arg(long)]
    pub no_expiry: bool,
    /// A limit for one model, `MODEL:RPM:TPM` (`none` for either: no such limit; both
    /// `none` removes it); repeat for several models.
    #[arg(long = "model-limit", value_name = "MODEL:RPM:TPM", value_parser = model_limit_arg)]
    pub model_limits: Vec<ModelLimitArg>,
}

/// `tollgate users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user who signs in to the API; the password is read from standard input
    /// (first line) or, on a terminal, prompted for without echo. Never an argument:
    /// arguments are visible to every user of the machine.
    Create(CreateUserArgs),
    /// List users (never their password hashes).
    List(ListUsersArgs),
    /// Give a user a role.
    SetRole(SetRoleArgs),
    /// Disable a user: their sessions end at once, their keys stop within the key cache TTL.
    Disable(UserNameArgs),
    /// Enable a disabled user again.
    Enable(UserNameArgs),
    /// Set a user's password (read like `create`'s); their sessions end.
    ResetPassword(UserNameArgs),
    /// Set a user's own rate limits, shared by all their keys.
    Limit(UserLimitArgs),
}

/// `tollgate users create`.
#[derive(Debug, Args)]
pub struct CreateUserArgs {
    /// The user's name: the one their keys, budgets and usage carry.
    pub name: String,
    /// `admin` (everything), `member` (own keys and usage) or `viewer` (read-only).
    #[arg(long, default_value = "member", value_parser = role_arg)]
    pub role: crate::users::Role,
}

/// Parses a role name.
fn role_arg(text: &str) -> Result<crate::users::Role, String> {
    text.parse()
        .map_err(|e: crate::users::UnknownRole| e.to_string())
}

/// `tollgate backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The new file to write (it must not exist).
    pub path: PathBuf,
}

/// `tollgate users set-role`.
#[derive(Debug, Args)]
pub struct SetRoleArgs {
    /// The user's name.
    pub name: String,
    /// `admin`, `member` or `viewer`.
    #[arg(value_parser = role_arg)]
    pub role: crate::users::Role,
}

/// A command on one user, by name.
#[derive(Debug, Args)]
pub struct UserNameArgs {
    /// The user's name.
    pub name: String,
}

/// `tollgate teams …`.
#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Create a team; keys name it with `--team`, budgets with `--team`.
    Create(TeamNameArgs),
    /// List teams with their members.
    List(ListTeamsArgs),
    /// Add a user to a team.
    Add(TeamMemberArgs),
    /// Remove a user from a team.
    Remove(TeamMemberArgs),
}

/// A command on one team, by name.
#[derive(Debug, Args)]
pub struct TeamNameArgs {
    /// The team's name.
    pub name: String,
}

/// `tollgate teams list`.
#[derive(Debug, Args)]
pub struct ListTeamsArgs {
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `tollgate teams add|remove`.
#[derive(Debug, Args)]
pub struct TeamMemberArgs {
    /// The team's name.
    pub team: String,
    /// The user's name.
    pub user: String,
}

/// `tollgate users list`.
#[derive(Debug, Args)]
pub struct ListUsersArgs {
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `tollgate users limit`.
#[derive(Debug, Args)]
pub struct UserLimitArgs {
    /// The user's name, as given to `keys create --user`.
    pub name: String,
    /// Requests per minute (0 refuses every call); `none`: the `[limits]` default.
    #[arg(long, value_name = "N|none", value_parser = rpm_arg, allow_negative_numbers = true)]
    pub rpm: Option<LimitArg>,
    /// Tokens per minute (0 refuses every call); `none`: the `[limits]` default.
    #[arg(long, value_name = "N|none", value_parser = limit_arg, allow_negative_numbers = true)]
    pub tpm: Option<LimitArg>,
}

/// `tollgate budgets …`.
#[derive(Debug, Subcommand)]
pub enum BudgetsCommand {
    /// Set the spend limit of a key, user or team for a period (created, or changed).
    Set(SetBudgetArgs),
    /// List budgets with their money in the current window.
    List(ListBudgetsArgs),
    /// Delete a budget; calls are no longer held against it.
    Delete(DeleteBudgetArgs),
}

/// `tollgate budgets set`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["key", "user", "team"])))]
pub struct SetBudgetArgs {
    /// A key's budget, by key id.
    #[arg(long)]
    pub key: Option<String>,
    /// A user's budget (all their keys).
    #[arg(long)]
    pub user: Option<String>,
    /// A team's budget (all its keys).
    #[arg(long)]
    pub team: Option<String>,
    /// `day` or `month` (UTC calendar), or `total`.
    #[arg(long)]
    pub period: crate::budgets::Period,
    /// The limit in US dollars per period, e.g. 12.50 (exact to the pico-dollar).
    #[arg(long, value_name = "DOLLARS", value_parser = usd_arg, allow_negative_numbers = true)]
    pub usd: u64,
}

/// `tollgate budgets list`.
#[derive(Debug, Args)]
pub struct ListBudgetsArgs {
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `tollgate budgets delete`.
#[derive(Debug, Args)]
pub struct DeleteBudgetArgs {
    /// The budget's id (`bud_…`).
    pub id: String,
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
    #[arg(long, allow_negative_numbers = true)]
    pub rpm: Option<u32>,
    /// The key's own tokens per minute (0 refuses every call); default: `[limits]`.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    pub tpm: Option<u64>,
    /// The user the key belongs to: their limits and budgets apply to it.
    #[arg(long)]
    pub user: Option<String>,
    /// The team the key belongs to: its budgets apply to it.
    #[arg(long)]
    pub team: Option<String>,
    /// The key stops working this long from now (`90d`, `12h`); default: never.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub expires_in: Option<std::time::Duration>,
}

/// `tollgate keys rotate`.
#[derive(Debug, Args)]
pub struct RotateKeyArgs {
    /// The key's id (`key_…`).
    pub id: String,
    /// How long the old secret keeps working (`0s`: it stops at once; at most 30d).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub grace: std::time::Duration,
    /// Print the new secret alone, for scripts.
    #[arg(long)]
    pub quiet: bool,
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
    /// Recompute the hourly and daily usage rollups from the stored records (after
    /// records were loaded, restored or deleted by hand; ingest keeps them otherwise).
    RebuildRollups,
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
    #[arg(long, default_value_t = 20, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(1..))]
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
        Command::EnvoyConfig(args) => {
            let mut config = config;
            if args.stored_providers {
                let stored = open_store(&config).await?.stored_catalog().await?;
                let providers = crate::catalog::stored::providers_without_keys(&stored)
                    .map_err(crate::catalog::admin::CatalogError::from)?;
                for p in providers {
                    config.catalog.providers.entry(p.name.clone()).or_insert(p);
                }
            }
            Ok(crate::envoy_config::run(&config, &args)?)
        }
        Command::Keys(command) => {
            let store = open_store(&config).await?;
            match command {
                KeysCommand::Create(args) => {
                    keys::create(&store, &config.catalog, &clock, args, out).await
                }
                KeysCommand::List(args) => keys::list(&store, &clock, &args, out).await,
                KeysCommand::Revoke(args) => keys::revoke(&store, &clock, &args, out).await,
                KeysCommand::Update(args) => {
                    keys::update(&store, &config.catalog, &clock, args, out).await
                }
                KeysCommand::Rotate(args) => keys::rotate(&store, &clock, &args, out).await,
            }
        }
        Command::Users(command) => {
            let store = open_store(&config).await?;
            match command {
                UsersCommand::Create(args) => {
                    let password = users::read_password()?;
                    users::create(&store, &clock, &args, password, out).await
                }
                UsersCommand::List(args) => users::list(&store, &args, out).await,
                UsersCommand::SetRole(args) => users::set_role(&store, &clock, &args, out).await,
                UsersCommand::Disable(args) => {
                    users::set_disabled(&store, &clock, &args.name, true, out).await
                }
                UsersCommand::Enable(args) => {
                    users::set_disabled(&store, &clock, &args.name, false, out).await
                }
                UsersCommand::ResetPassword(args) => {
                    let password = users::read_password()?;
                    users::reset_password(&store, &clock, &args.name, password, out).await
                }
                UsersCommand::Limit(args) => users::limit(&store, &config.limits, &args, out).await,
            }
        }
        Command::Teams(command) => {
            let store = open_store(&config).await?;
            match command {
                TeamsCommand::Create(args) => teams::create(&store, &clock, &args.name, out).await,
                TeamsCommand::List(args) => teams::list(&store, &args, out).await,
                TeamsCommand::Add(args) => teams::add(&store, &clock, &args, out).await,
                TeamsCommand::Remove(args) => teams::remove(&store, &clock, &args, out).await,
            }
        }
        Command::Budgets(command) => {
            let store = open_store(&config).await?;
            match command {
                BudgetsCommand::Set(args) => budgets::set(&store, &clock, &args, out).await,
                BudgetsCommand::List(args) => budgets::list(&store, &clock, &args, out).await,
                BudgetsCommand::Delete(args) => budgets::delete(&store, &clock, &args, out).await,
            }
        }
        Command::Secrets(SecretsCommand::GenerateKey) => secrets::generate_key(out),
        Command::Secrets(SecretsCommand::RotateMaster) => {
            let store = open_store(&config).await?;
            secrets::rotate(&store, &config, &clock, out).await
        }
        Command::Backup(args) => {
            let store = open_store(&config).await?;
            store.backup_to(&args.path).await?;
            writeln!(out, "Backed up to {}.", args.path.display())?;
            Ok(())
        }
        Command::Usage(UsageCommand::List(args)) => {
            let store = open_store(&config).await?;
            usage::list(&store, &args, out).await
        }
        Command::Usage(UsageCommand::RebuildRollups) => {
            let store = open_store(&config).await?;
            usage::rebuild_rollups(&store, out).await
        }
    }
}

/// A note for a budget or limit set on a subject no active key has (a revoked key, or a
/// user or team name no key carries, often a typo): it limits no call until one does.
async fn idle_subject_note(
    store: &Store,
    subject: &crate::budgets::Subject,
) -> Result<Option<String>, CliError> {
    use crate::budgets::Subject;
    let keys = store.list_keys().await?;
    let mut active = keys.iter().filter(|k| k.revoked_at_ms.is_none());
    let note = match subject {
        Subject::Key(id) => (!active.any(|k| &k.id == id))
            .then(|| format!("Note: key {id} is revoked; this applies to no call.")),
        Subject::User(name) => (!active.any(|k| k.user.as_ref() == Some(name))).then(|| {
            format!(
                "Note: no active key belongs to user `{name}` (names are case-sensitive); \
                 this applies to no call until `keys create --user {name}` or \
                 `keys update KEY_ID --user {name}`."
            )
        }),
        Subject::Team(name) => (!active.any(|k| k.team.as_ref() == Some(name))).then(|| {
            format!(
                "Note: no active key belongs to team `{name}` (names are case-sensitive); \
                 this applies to no call until `keys create --team {name}` or \
                 `keys update KEY_ID --team {name}`."
            )
        }),
    };
    Ok(note)
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

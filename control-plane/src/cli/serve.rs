//! `tollgate serve`: runs the control plane until SIGINT or SIGTERM.

use super::{CliError, open_store};
use crate::clock::Clock;
use crate::config::{Config, ConfigSource};
use crate::server::{self, Listeners, Setup};
use std::future::Future;

/// Opens the database, binds the configured addresses and serves until `shutdown`.
pub(super) async fn run(
    source: ConfigSource,
    config: Config,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    // Refused before touching the database or the ports.
    config.server.filter_token()?;
    let store = open_store(&config).await?;
    let listeners = Listeners::bind(&config.server).await?;
    let setup = Setup {
        source,
        config,
        store,
        clock,
    };
    server::serve(setup, listeners, shutdown)
        .await?
        .wait()
        .await?;
    Ok(())
}

//! `tollgate`: the control plane's command line; the work is in the library's `cli`.

use clap::Parser;
use std::io::IsTerminal;
use tollgate_control_plane::cli::{Cli, CliError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().run(&mut std::io::stdout()).await {
        // The reader went away (`tollgate keys list | head`): what it wanted was written.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

//! `tollgate envoy-config`: the Envoy bootstrap rendered from the same `tollgate.toml` as
//! the control plane, so the providers Envoy can reach, the filter's settings and the
//! names both sides must agree on (route header, metadata namespace) have one source.

mod render;
mod section;
mod upstream;

pub use render::{RenderError, Variant, render};
pub use section::{
    ControlPlaneAddress, DEFAULT_CA_BUNDLE, EnvoyFile, EnvoySection, ResolvedFilter,
};
pub use upstream::{Host, Transport, Upstream};

use crate::config::Config;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `tollgate envoy-config`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnvoyConfigArgs {
    /// Write to this file (created private, mode 0600) instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// The same Envoy without json_to_metadata and the Tollgate filter (benchmark baseline).
    #[arg(long)]
    pub without_filter: bool,
}

/// Why `tollgate envoy-config` failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyConfigError {
    /// Rendering failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file, or `-` for stdout.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Runs `tollgate envoy-config`: renders and writes the bootstrap.
pub fn run(config: &Config, args: &EnvoyConfigArgs) -> Result<(), EnvoyConfigError> {
    let variant = if args.without_filter {
        Variant::WithoutFilter
    } else {
        Variant::WithFilter
    };
    let text = render(config, variant)?;
    match &args.output {
        Some(path) => write_private(path, &text),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|source| EnvoyConfigError::Write {
                path: PathBuf::from("-"),
                source,
            }),
    }
}

/// Writes `text` to a file only its owner can read: it may hold the filter's token.
fn write_private(path: &Path, text: &str) -> Result<(), EnvoyConfigError> {
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(0o600);
            let file = options.open(path)?;
            // `mode` applies only to a new file; an existing one is narrowed too.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            (&file).write_all(text.as_bytes())
        }
        #[cfg(not(unix))]
        {
            options.open(path)?.write_all(text.as_bytes())
        }
    };
    write().map_err(|source| EnvoyConfigError::Write {
        path: path.to_owned(),
        source,
    })
}

//! `tollgate envoy-config`: the Envoy bootstrap rendered from the same `tollgate.toml` as
//! the control plane, so the providers Envoy can reach, the filter's settings and the
//! names both sides must agree on (route header, metadata namespace) have one source.

mod access_log;
mod edge;
mod metrics;
mod render;
mod replies;
mod section;
mod upstream;

pub use edge::{CorsSettings, EdgeSettings};
pub use render::{RenderError, Variant, render};
pub use section::{
    AdminAddress, ControlPlaneAddress, DEFAULT_CA_BUNDLE, EnvoyFile, EnvoySection, FilterToken,
    ResolvedFilter,
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
    /// Also a cluster for each provider added through the HTTP API (read from the
    /// database); the config file's provider wins a name both use.
    #[arg(long)]
    pub stored_providers: bool,
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

/// Writes `text` to a new file only its owner (this user) can read, since it may hold the
/// filter's token, then renames it to `path`. Writing through an existing `path` would
/// follow a symlink planted there, or leave the token in a file another user owns; the
/// rename also means Envoy never reads a half-written file.
fn write_private(path: &Path, text: &str) -> Result<(), EnvoyConfigError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let write = || -> std::io::Result<()> {
        // Created 0600 (tempfile's default on Unix).
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(text.as_bytes())?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|source| EnvoyConfigError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    #[test]
    fn output_replaces_a_symlink_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = dir.path().join("envoy.yaml");
        symlink(&victim, &out).unwrap();

        write_private(&out, "secret").unwrap();

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "the link's target is left alone");
        let meta = std::fs::symlink_metadata(&out).unwrap();
        assert!(meta.file_type().is_file(), "the link itself is replaced");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "secret");
    }

    #[test]
    fn output_over_an_existing_file_is_private_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("envoy.yaml");
        std::fs::write(&out, "an older, longer bootstrap").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&out, "new").unwrap();
        let meta = std::fs::metadata(&out).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
    }
}

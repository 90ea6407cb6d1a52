//! `tollgate check-config`: validates the file and says what it holds.

use super::CliError;
use crate::config::Config;
use crate::envoy_config;
use std::io::Write;
use std::path::Path;

/// Checks what only `serve` and `envoy-config` would otherwise find missing or wrong (the
/// filter token, the filter's settings, names Envoy's file must keep apart) and prints a
/// one-line summary of the file at `path`.
pub(super) fn run(path: &Path, config: &Config, out: &mut impl Write) -> Result<(), CliError> {
    // Rendering (and dropping) Envoy's file runs every check `envoy-config` makes; without
    // the filter, since a control plane host need not hold the .wasm.
    envoy_config::render(config, envoy_config::Variant::WithoutFilter)
        .map_err(envoy_config::EnvoyConfigError::from)?;
    writeln!(
        out,
        "{}: ok ({} providers, {} models, database {})",
        path.display(),
        config.catalog.providers.len(),
        config.catalog.models.len(),
        config.storage.redacted_url()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[storage]\ndatabase_url = \"postgres://u:secret@db/t\"\n\
        [[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n\
        [[models]]\nname = \"n\"\nprovider = \"p\"\nfree = true\n";

    #[test]
    fn a_valid_file_is_summarized_without_the_database_password() {
        let config = Config::parse(FILE, Path::new("/"), |_| Some("t".repeat(32))).unwrap();
        let mut out = Vec::new();
        run(Path::new("t.toml"), &config, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "t.toml: ok (1 providers, 2 models, database postgres://…@db/t)\n"
        );
    }

    #[test]
    fn what_envoy_config_refuses_is_refused() {
        // A provider's cluster would shadow the control plane's: envoy-config refuses it.
        let file = FILE
            .replace("name = \"p\"", "name = \"tollgate_control_plane\"")
            .replace("provider = \"p\"", "provider = \"tollgate_control_plane\"");
        let config = Config::parse(&file, Path::new("/"), |_| Some("t".repeat(32))).unwrap();
        let mut out = Vec::new();
        let e = run(Path::new("t.toml"), &config, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("envoy.filter.control_plane_cluster"),
            "{e}"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_missing_filter_token_is_named() {
        let config = Config::parse(FILE, Path::new("/"), |_| None).unwrap();
        let mut out = Vec::new();
        let e = run(Path::new("t.toml"), &config, &mut out).unwrap_err();
        assert!(e.to_string().contains("server.filter_token_env"), "{e}");
        assert!(out.is_empty());
    }
}

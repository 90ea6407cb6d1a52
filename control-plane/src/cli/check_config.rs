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
    // Valid, but the opposite of what leaving the field out means.
    let l = &config.limits;
    for (field, value) in [
        (
            "limits.requests_per_minute",
            l.requests_per_minute.map(u64::from),
        ),
        ("limits.tokens_per_minute", l.tokens_per_minute),
        (
            "limits.user_requests_per_minute",
            l.user_requests_per_minute.map(u64::from),
        ),
        ("limits.user_tokens_per_minute", l.user_tokens_per_minute),
    ] {
        if value == Some(0) {
            writeln!(
                out,
                "note: `{field}` is 0: every call of a key or user without its own value is refused \
                 (leave the field out for no limit)"
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variable is set (to a valid token), except the master key's.
    fn any_variable_but_the_master_key(var: &str) -> Option<String> {
        (var != "TOLLGATE_MASTER_KEY").then(|| "t".repeat(32))
    }

    const FILE: &str = "[storage]\ndatabase_url = \"postgres://u:secret@db/t\"\n\
        [[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n\
        [[models]]\nname = \"n\"\nprovider = \"p\"\nfree = true\n";

    #[test]
    fn a_valid_file_is_summarized_without_the_database_password() {
        let config = Config::parse(FILE, Path::new("/"), any_variable_but_the_master_key).unwrap();
        let mut out = Vec::new();
        run(Path::new("t.toml"), &config, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "t.toml: ok (1 providers, 2 models, database postgres://…@db/t)\n"
        );
    }

    #[test]
    fn a_default_limit_of_zero_is_pointed_out() {
        // 0 blocks and absent is unlimited: a file that writes 0 meaning "no limit" is
        // valid, and would refuse every call of keys without their own limit.
        let file = format!("[limits]\nrequests_per_minute = 0\nuser_tokens_per_minute = 0\n{FILE}");
        let config = Config::parse(&file, Path::new("/"), any_variable_but_the_master_key).unwrap();
        let mut out = Vec::new();
        run(Path::new("t.toml"), &config, &mut out).unwrap();
        let said = String::from_utf8(out).unwrap();
        assert!(said.starts_with("t.toml: ok"), "{said}");
        for field in [
            "limits.requests_per_minute",
            "limits.user_tokens_per_minute",
        ] {
            assert!(said.contains(&format!("note: `{field}` is 0")), "{said}");
        }
        assert!(!said.contains("limits.tokens_per_minute"), "{said}");
    }

    #[test]
    fn what_envoy_config_refuses_is_refused() {
        // A provider's cluster would shadow the control plane's: envoy-config refuses it.
        let file = FILE
            .replace("name = \"p\"", "name = \"tollgate_control_plane\"")
            .replace("provider = \"p\"", "provider = \"tollgate_control_plane\"");
        let config = Config::parse(&file, Path::new("/"), any_variable_but_the_master_key).unwrap();
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

//! `[secrets]`: where the master key that wraps provider keys comes from.

use super::raw::SecretsFile;
use super::{ConfigError, Env, field_error};
use crate::secrets::{MasterKey, MasterKeySource, SecretsSettings};
use std::path::Path;
use std::sync::Arc;

/// The variable read when `[secrets]` names no source.
const DEFAULT_MASTER_KEY_ENV: &str = "TOLLGATE_MASTER_KEY";

/// Validates `[secrets]`: each configured key is loaded now, so a bad one stops the start
/// naming its field. Without any, the default variable is used if it is set.
pub(super) fn validate(
    file: SecretsFile,
    env: &Env<'_>,
    base: &Path,
) -> Result<SecretsSettings, ConfigError> {
    let master = source(
        "secrets.master_key",
        file.master_key_env,
        file.master_key_file,
        env,
        base,
    )?;
    let master = match master {
        Some(m) => Some(m),
        // Not named: the default variable, when set.
        None => env_source("secrets.master_key_env", DEFAULT_MASTER_KEY_ENV, env, true)?,
    };
    let previous = source(
        "secrets.previous_master_key",
        file.previous_master_key_env,
        file.previous_master_key_file,
        env,
        base,
    )?;
    if previous.is_some() && master.is_none() {
        return Err(field_error(
            "secrets.previous_master_key_env",
            "is set without a master key: a rotation needs the new key too",
        ));
    }
    Ok(SecretsSettings { master, previous })
}

/// The source `{prefix}_env` or `{prefix}_file` names (not both), loaded.
fn source(
    prefix: &str,
    var: Option<String>,
    path: Option<std::path::PathBuf>,
    env: &Env<'_>,
    base: &Path,
) -> Result<Option<MasterKeySource>, ConfigError> {
    match (var, path) {
        (Some(_), Some(_)) => Err(field_error(
            format!("{prefix}_file"),
            format!("and `{prefix}_env` are exclusive: give the key one way"),
        )),
        (Some(var), None) => env_source(&format!("{prefix}_env"), &var, env, false),
        (None, Some(path)) => {
            let source = MasterKeySource::File {
                path: base.join(path),
            };
            source
                .load()
                .map_err(|e| field_error(format!("{prefix}_file"), e.to_string()))?;
            Ok(Some(source))
        }
        (None, None) => Ok(None),
    }
}

/// The key in variable `var`; unset is an error unless `optional`.
fn env_source(
    field: &str,
    var: &str,
    env: &Env<'_>,
    optional: bool,
) -> Result<Option<MasterKeySource>, ConfigError> {
    match env(var) {
        None if optional => Ok(None),
        None => Err(field_error(
            field,
            format!("names the environment variable `{var}`, which is not set"),
        )),
        Some(text) => {
            let key = MasterKey::parse(&text, &format!("the environment variable `{var}`"))
                .map_err(|e| field_error(field, e.to_string()))?;
            Ok(Some(MasterKeySource::Env {
                var: var.to_owned(),
                key: Arc::new(key),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn validated(file: SecretsFile, vars: &[(&str, &str)]) -> Result<SecretsSettings, String> {
        let env = |v: &str| {
            vars.iter()
                .find(|(name, _)| *name == v)
                .map(|(_, value)| (*value).to_owned())
        };
        validate(file, &env, Path::new("/nonexistent")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_default_variable_is_optional_and_a_named_one_required() {
        let none = validated(SecretsFile::default(), &[]).unwrap();
        assert_eq!(none, SecretsSettings::default());
        let default = validated(SecretsFile::default(), &[("TOLLGATE_MASTER_KEY", KEY)]).unwrap();
        assert!(
            matches!(default.master, Some(MasterKeySource::Env { ref var, .. }) if var == "TOLLGATE_MASTER_KEY")
        );
        let named = SecretsFile {
            master_key_env: Some("MK".into()),
            ..SecretsFile::default()
        };
        let e = validated(named, &[]).unwrap_err();
        assert!(
            e.contains("secrets.master_key_env") && e.contains("`MK`"),
            "{e}"
        );
    }

    #[test]
    fn each_refusal_names_its_field_and_never_the_value() {
        let e = validated(
            SecretsFile::default(),
            &[("TOLLGATE_MASTER_KEY", "not-a-key-123")],
        )
        .unwrap_err();
        assert!(e.contains("secrets.master_key_env"), "{e}");
        assert!(!e.contains("not-a-key-123"), "{e}");
        let both = SecretsFile {
            master_key_env: Some("MK".into()),
            master_key_file: Some(PathBuf::from("k")),
            ..SecretsFile::default()
        };
        assert!(
            validated(both, &[("MK", KEY)])
                .unwrap_err()
                .contains("secrets.master_key_file")
        );
        let missing_file = SecretsFile {
            master_key_file: Some(PathBuf::from("missing.key")),
            ..SecretsFile::default()
        };
        let e = validated(missing_file, &[]).unwrap_err();
        assert!(
            e.contains("secrets.master_key_file") && e.contains("missing.key"),
            "{e}"
        );
        let lone_previous = SecretsFile {
            previous_master_key_env: Some("OLD".into()),
            ..SecretsFile::default()
        };
        let e = validated(lone_previous, &[("OLD", KEY)]).unwrap_err();
        assert!(e.contains("secrets.previous_master_key_env"), "{e}");
    }

    #[test]
    fn a_key_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("master.key"), KEY).unwrap();
        let file = SecretsFile {
            master_key_file: Some(PathBuf::from("master.key")),
            ..SecretsFile::default()
        };
        let s = validate(file, &|_| None, dir.path()).unwrap();
        let Some(MasterKeySource::File { path }) = &s.master else {
            panic!("a file source");
        };
        assert_eq!(path, &dir.path().join("master.key"));
    }
}

//! `[storage]`: which database holds keys and usage.

use super::raw::StorageFile;
use super::{ConfigError, Env, field_error};
use std::path::{Path, PathBuf};

/// The validated `[storage]` section; applied only when the process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    /// sqlx URL: `sqlite://…` (default, under the data dir) or `postgres://…`.
    pub database_url: String,
}

impl StorageSettings {
    /// The database URL without its password, for logs and messages.
    pub fn redacted_url(&self) -> String {
        let url = &self.database_url;
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://…@{}", &url[..scheme], &url[at + 1..])
            }
            _ => url.clone(),
        }
    }
}

/// Validates `[storage]`; a relative data dir is taken from `base`, and `env` resolves
/// `database_url_env`.
pub(super) fn validate(
    file: StorageFile,
    base: &Path,
    env: &Env<'_>,
) -> Result<StorageSettings, ConfigError> {
    let given = [
        file.database_url.is_some(),
        file.database_url_env.is_some(),
        file.data_dir.is_some(),
    ];
    if given.into_iter().filter(|g| *g).count() > 1 {
        return Err(field_error(
            "storage.database_url",
            "`storage.database_url_env` and `storage.data_dir` are exclusive: give one (the data \
             dir only places the SQLite file)",
        ));
    }
    // A DSN with a password belongs in a secret (a Kubernetes Secret's variable), not in
    // the file, which lives in a ConfigMap.
    let from_env = match file.database_url_env {
        Some(var) => Some((
            "storage.database_url_env",
            env(&var).ok_or_else(|| {
                field_error(
                    "storage.database_url_env",
                    format!("names the environment variable `{var}`, which is not set"),
                )
            })?,
        )),
        None => file.database_url.map(|url| ("storage.database_url", url)),
    };
    let database_url = match (from_env, file.data_dir) {
        (Some((field, url)), _) => {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(field_error(
                    field,
                    "must start with sqlite:, postgres:// or postgresql://",
                ));
            }
            url
        }
        (None, dir) => {
            let dir = base.join(dir.unwrap_or_else(|| PathBuf::from(".tollgate")));
            format!("sqlite://{}", dir.join("tollgate.db").display())
        }
    };
    Ok(StorageSettings { database_url })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(database_url: Option<&str>, data_dir: Option<&str>) -> Result<String, String> {
        let file = StorageFile {
            database_url: database_url.map(str::to_owned),
            database_url_env: None,
            data_dir: data_dir.map(PathBuf::from),
        };
        validate(file, Path::new("/srv"), &|_| None)
            .map(|s| s.database_url)
            .map_err(|e| e.to_string())
    }

    fn url_from_env(var: &str, value: Option<&str>) -> Result<String, String> {
        let file = StorageFile {
            database_url_env: Some(var.to_owned()),
            ..StorageFile::default()
        };
        let env = |name: &str| (name == "DSN").then(|| value.map(str::to_owned)).flatten();
        validate(file, Path::new("/srv"), &env)
            .map(|s| s.database_url)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_url_can_come_from_a_variable() {
        assert_eq!(
            url_from_env("DSN", Some("postgres://u:pw@db/t")).unwrap(),
            "postgres://u:pw@db/t"
        );
        let e = url_from_env("DSN", None).unwrap_err();
        assert!(
            e.contains("storage.database_url_env") && e.contains("DSN"),
            "{e}"
        );
        let e = url_from_env("DSN", Some("mysql://u:pw@db/t")).unwrap_err();
        assert!(e.contains("storage.database_url_env"), "{e}");
        assert!(!e.contains("pw"), "the value is not shown: {e}");
        let both = StorageFile {
            database_url: Some("postgres://db/t".into()),
            database_url_env: Some("DSN".into()),
            data_dir: None,
        };
        let e = validate(both, Path::new("/srv"), &|_| Some("postgres://x".into())).unwrap_err();
        assert!(e.to_string().contains("exclusive"), "{e}");
    }

    #[test]
    fn the_sqlite_file_goes_under_the_data_dir() {
        assert_eq!(
            url(None, None).unwrap(),
            "sqlite:///srv/.tollgate/tollgate.db"
        );
        assert_eq!(
            url(None, Some("data")).unwrap(),
            "sqlite:///srv/data/tollgate.db"
        );
        assert_eq!(
            url(None, Some("/var/lib/t")).unwrap(),
            "sqlite:///var/lib/t/tollgate.db"
        );
    }

    #[test]
    fn a_url_is_checked_and_exclusive_with_the_data_dir() {
        assert_eq!(
            url(Some("postgres://db/t"), None).unwrap(),
            "postgres://db/t"
        );
        for refused in [
            url(Some("mysql://x"), None),
            url(Some("sqlite://x.db"), Some("d")),
        ] {
            let e = refused.unwrap_err();
            assert!(e.contains("storage.database_url"), "{e}");
        }
    }

    #[test]
    fn the_password_is_redacted() {
        let s = StorageSettings {
            database_url: "postgres://user:hunter2@db:5432/t".into(),
        };
        assert_eq!(s.redacted_url(), "postgres://…@db:5432/t");
        let s = StorageSettings {
            database_url: "sqlite:///srv/t.db".into(),
        };
        assert_eq!(s.redacted_url(), "sqlite:///srv/t.db");
    }
}

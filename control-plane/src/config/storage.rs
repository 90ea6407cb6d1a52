//! `[storage]`: which database holds keys and usage.

use super::raw::StorageFile;
use super::{ConfigError, field_error};
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

/// Validates `[storage]`; a relative data dir is taken from `base`.
pub(super) fn validate(file: StorageFile, base: &Path) -> Result<StorageSettings, ConfigError> {
    let database_url = match (file.database_url, file.data_dir) {
        (Some(_), Some(_)) => {
            return Err(field_error(
                "storage.database_url",
                "and `storage.data_dir` are exclusive: the data dir only places the SQLite file",
            ));
        }
        (Some(url), None) => {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(field_error(
                    "storage.database_url",
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
            data_dir: data_dir.map(PathBuf::from),
        };
        validate(file, Path::new("/srv"))
            .map(|s| s.database_url)
            .map_err(|e| e.to_string())
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

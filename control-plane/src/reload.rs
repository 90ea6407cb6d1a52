//! Reloading the catalog from the config file while serving.
//!
//! The file is read and validated whole again. If it is valid its catalog replaces the one
//! in force; fields applied only at start (listen addresses, storage, the filter's token,
//! `[gateway]`) are compared with what is running and named if they changed, since only a
//! restart applies them. If it is invalid, the catalog in force stays.

use crate::catalog::LiveCatalog;
use crate::clock::Clock;
use crate::config::{Config, ConfigSource};
use std::sync::Arc;
use tokio::sync::watch;

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file was valid and its catalog is in force.
    Applied {
        /// Providers in the new catalog.
        providers: usize,
        /// Models in the new catalog.
        models: usize,
        /// Changed fields the running process keeps until restarted.
        restart_needed: Vec<&'static str>,
        /// When it was applied, Unix ms.
        at_ms: i64,
    },
    /// The file was refused; the catalog in force stays.
    Refused {
        /// Why, naming the field at fault.
        error: String,
        /// When it was refused, Unix ms.
        at_ms: i64,
    },
}

/// Reloads the catalog from its source; cheap to clone, every clone reports to the same
/// watchers.
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: ConfigSource,
    /// The configuration the process started with: what start-only fields are compared to.
    started: Config,
    catalog: LiveCatalog,
    clock: Clock,
    outcomes: watch::Sender<Option<ReloadOutcome>>,
}

impl Reloader {
    /// Reloads `catalog` from `source`, for a process that started with `started`.
    pub fn new(source: ConfigSource, started: Config, catalog: LiveCatalog, clock: Clock) -> Self {
        let (outcomes, _) = watch::channel(None);
        Self {
            inner: Arc::new(Inner {
                source,
                started,
                catalog,
                clock,
                outcomes,
            }),
        }
    }

    /// Reads the source again and applies its catalog if it is valid; logs and reports
    /// the outcome to every [`Reloader::outcomes`] watcher.
    pub fn reload(&self) -> ReloadOutcome {
        let inner = &self.inner;
        // The file is a few KB: read here rather than on a blocking thread.
        let outcome = match inner.source.load() {
            Ok(config) => {
                let restart_needed = inner.started.restart_needed(&config);
                let providers = config.catalog.providers.len();
                let models = config.catalog.models.len();
                inner.catalog.replace(config.catalog);
                tracing::info!(
                    file = %inner.source.path().display(),
                    providers,
                    models,
                    "catalog reloaded"
                );
                for field in &restart_needed {
                    tracing::warn!(
                        field,
                        "`{field}` changed in the config file; it applies only after a restart"
                    );
                }
                ReloadOutcome::Applied {
                    providers,
                    models,
                    restart_needed,
                    at_ms: inner.clock.now_ms(),
                }
            }
            Err(e) => {
                tracing::error!(
                    file = %inner.source.path().display(),
                    "reload refused, the catalog in force stays: {e}"
                );
                ReloadOutcome::Refused {
                    error: e.to_string(),
                    at_ms: inner.clock.now_ms(),
                }
            }
        };
        inner.outcomes.send_replace(Some(outcome.clone()));
        outcome
    }

    /// The latest outcome (`None` before the first reload), changing with each reload.
    pub fn outcomes(&self) -> watch::Receiver<Option<ReloadOutcome>> {
        self.inner.outcomes.subscribe()
    }

    /// The catalog this reloads.
    pub fn catalog(&self) -> &LiveCatalog {
        &self.inner.catalog
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::path::Path;

    const TOKEN: &str = "reload-token-reload-token-reload-token";

    fn text(grpc: &str, price: &str) -> String {
        format!(
            "[server]\ngrpc_listen = \"{grpc}\"\n[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n\
             [[models]]\nname = \"m\"\nprovider = \"p\"\ninput = {price}\noutput = 1\n"
        )
    }

    fn env(var: &str) -> Option<String> {
        (var == "TOLLGATE_FILTER_TOKEN").then(|| TOKEN.to_owned())
    }

    fn reloader(dir: &Path, first: &str, clock: Clock) -> Reloader {
        let path = dir.join("t.toml");
        std::fs::write(&path, first).unwrap();
        let source = ConfigSource::new(&path, env);
        let started = source.load().unwrap();
        let catalog = LiveCatalog::new(started.catalog.clone());
        Reloader::new(source, started, catalog, clock)
    }

    fn input_price(r: &Reloader) -> u64 {
        r.catalog().current().models["m"].price.input
    }

    #[test]
    fn a_valid_file_replaces_the_catalog_and_names_start_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let time = ManualClock::at(7_000);
        let r = reloader(dir.path(), &text("127.0.0.1:1", "1"), time.clock());
        let mut outcomes = r.outcomes();
        assert_eq!(*outcomes.borrow_and_update(), None);
        std::fs::write(dir.path().join("t.toml"), text("127.0.0.1:2", "2")).unwrap();
        time.advance_ms(5);
        let outcome = r.reload();
        assert_eq!(
            outcome,
            ReloadOutcome::Applied {
                providers: 1,
                models: 1,
                restart_needed: vec!["server.grpc_listen"],
                at_ms: 7_005,
            }
        );
        assert_eq!(input_price(&r), 2_000_000);
        assert!(outcomes.has_changed().unwrap());
        assert_eq!(*outcomes.borrow_and_update(), Some(outcome));
    }

    #[test]
    fn an_invalid_file_keeps_the_catalog_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let r = reloader(dir.path(), &text("127.0.0.1:1", "1"), Clock::system());
        std::fs::write(dir.path().join("t.toml"), text("127.0.0.1:1", "-3")).unwrap();
        let ReloadOutcome::Refused { error, .. } = r.reload() else {
            panic!("a negative price is refused");
        };
        assert!(error.contains("models[0].input"), "{error}");
        assert_eq!(input_price(&r), 1_000_000);
        std::fs::remove_file(dir.path().join("t.toml")).unwrap();
        assert!(matches!(r.reload(), ReloadOutcome::Refused { .. }));
        assert_eq!(input_price(&r), 1_000_000);
    }
}

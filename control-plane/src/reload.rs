//! Reloading the catalog from the config file while serving.
//!
//! The file is read and validated whole again. If it is valid its catalog replaces the one
//! in force; fields applied only at start (listen addresses, storage, the filter's token,
//! `[gateway]`) are compared with what is running and named if they changed, since only a
//! restart applies them. If it is invalid, the catalog in force stays.

use crate::catalog::LiveCatalog;
use crate::clock::Clock;
use crate::config::{Config, ConfigSource};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// A reload that started later finished first; what this one read is older, so it
    /// was dropped and the later outcome stands.
    Superseded {
        /// When it was dropped, Unix ms.
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
    /// Numbers reloads in the order they start reading the file.
    tickets: AtomicU64,
    /// The ticket of the latest reload that finished: one holding an older ticket read an
    /// older file, and must not undo it (a SIGHUP racing [`Reloader::reload`]).
    finished: Mutex<u64>,
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
                tickets: AtomicU64::new(0),
                finished: Mutex::new(0),
            }),
        }
    }

    /// Reads the source again and applies its catalog if it is valid; logs and reports
    /// the outcome to every [`Reloader::outcomes`] watcher.
    pub fn reload(&self) -> ReloadOutcome {
        let inner = &self.inner;
        let ticket = inner
            .tickets
            .fetch_add(1, Ordering::SeqCst)
            .saturating_add(1);
        // The file is a few KB: read here rather than on a blocking thread.
        let loaded = inner.source.load();
        // Held while the outcome is applied and sent, so outcomes land in ticket order; a
        // panic elsewhere cannot leave the number inconsistent, so poisoning is ignored.
        let mut finished = inner
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *finished > ticket {
            tracing::info!("a later reload finished first; this one's read of the file is dropped");
            return ReloadOutcome::Superseded {
                at_ms: inner.clock.now_ms(),
            };
        }
        *finished = ticket;
        // The running grace, not the file's, is what slow calls of the new providers get.
        let loaded = loaded.map_err(|e| e.to_string()).and_then(|config| {
            match inner.started.budgets.covers(&config.catalog.providers) {
                Ok(()) => Ok(config),
                Err(e) => Err(format!(
                    "{e} (the grace in force: a longer one applies only after a restart)"
                )),
            }
        });
        let outcome = match loaded {
            Ok(config) => {
                let restart_needed = inner.started.restart_needed(&config);
                let providers = config.catalog.providers.len();
                let models = config.catalog.models.len();
                inner.catalog.replace(config.catalog, inner.clock.now_ms());
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
                    error: e,
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
        // The price in force from now on.
        r.catalog().current().models["m"].prices.at(i64::MAX).input
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
    fn a_reload_that_read_an_older_file_does_not_undo_a_later_one() {
        use std::sync::{Mutex, mpsc};
        type Hold = Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text("127.0.0.1:1", "1")).unwrap();
        // Once armed, the next read of the file stops halfway until released.
        let hold: Arc<Mutex<Hold>> = Arc::default();
        let source = ConfigSource::new(&path, {
            let hold = Arc::clone(&hold);
            move |var| {
                let armed = hold.lock().unwrap().take();
                if let Some((entered, release)) = armed {
                    entered.send(()).unwrap();
                    release.recv().unwrap();
                }
                env(var)
            }
        });
        let started = source.load().unwrap();
        let catalog = LiveCatalog::new(started.catalog.clone());
        let r = Reloader::new(source, started, catalog, Clock::system());
        let mut outcomes = r.outcomes();

        // A SIGHUP's reload reads price 2 and is held; meanwhile the file gets price 3
        // and another reload (e.g. `Running::reload`) applies it.
        std::fs::write(&path, text("127.0.0.1:1", "2")).unwrap();
        let (entered, is_entered) = mpsc::channel();
        let (release, released) = mpsc::channel();
        *hold.lock().unwrap() = Some((entered, released));
        let first = std::thread::spawn({
            let r = r.clone();
            move || r.reload()
        });
        is_entered.recv().unwrap();
        std::fs::write(&path, text("127.0.0.1:1", "3")).unwrap();
        let second = r.reload();
        assert!(
            matches!(second, ReloadOutcome::Applied { .. }),
            "{second:?}"
        );
        release.send(()).unwrap();
        let first = first.join().unwrap();

        assert!(
            matches!(first, ReloadOutcome::Superseded { .. }),
            "{first:?}"
        );
        assert_eq!(input_price(&r), 3_000_000, "the newest file stays in force");
        assert_eq!(*outcomes.borrow_and_update(), Some(second));
    }

    #[test]
    fn a_provider_slower_than_the_running_grace_is_refused() {
        // The grace is applied only at start: a reload that raises a provider's timeout
        // past it (raising the grace in the file too) would let that provider's slow calls
        // report after their lease's money was handed out again.
        let dir = tempfile::tempdir().unwrap();
        // Default grace 660000 ms, default timeout 600000 ms.
        let r = reloader(dir.path(), &text("127.0.0.1:1", "1"), Clock::system());
        let slower = text("127.0.0.1:1", "2").replace(
            "[[providers]]",
            "[budgets]\nreclaim_grace_ms = 990000\n[[providers]]",
        );
        let slower = slower.replace(
            "url = \"http://127.0.0.1:9000\"\n",
            "url = \"http://127.0.0.1:9000\"\ntimeout_ms = 900000\n",
        );
        std::fs::write(dir.path().join("t.toml"), slower).unwrap();
        let ReloadOutcome::Refused { error, .. } = r.reload() else {
            panic!("a provider slower than the running grace is refused");
        };
        assert!(
            error.contains("budgets.reclaim_grace_ms")
                && error.contains("660000")
                && error.contains("`p`"),
            "{error}"
        );
        assert_eq!(input_price(&r), 1_000_000, "the catalog in force stays");
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

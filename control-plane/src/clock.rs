//! The control plane's one reading of the time: every timestamp it writes (keys created
//! and revoked, catalog reloads) comes from a [`Clock`], so tests can set the time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The time source the control plane reads; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock(Source);

#[derive(Debug, Clone, Default)]
enum Source {
    /// The operating system's wall clock.
    #[default]
    System,
    /// A time that moves only when a [`ManualClock`] moves it.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// Now, in Unix ms.
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Source::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }
}

/// A clock that stands still until told to move, for tests; its [`Clock`]s follow it.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `ms` (Unix ms).
    pub fn at(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }

    /// A [`Clock`] reading this one.
    pub fn clock(&self) -> Clock {
        Clock(Source::Manual(Arc::clone(&self.0)))
    }

    /// Moves the time forward by `ms`.
    pub fn advance_ms(&self, ms: i64) {
        // fetch_update with saturation: a test moving far ahead must not wrap into the past.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(ms))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let manual = ManualClock::at(1_000);
        let clock = manual.clock();
        assert_eq!(clock.now_ms(), 1_000);
        assert_eq!(clock.now_ms(), 1_000);
        manual.advance_ms(250);
        assert_eq!(clock.now_ms(), 1_250);
        manual.advance_ms(i64::MAX);
        assert_eq!(clock.now_ms(), i64::MAX, "saturates instead of wrapping");
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        // 2020-09-13 in Unix ms: any real clock is past it.
        assert!(Clock::system().now_ms() > 1_600_000_000_000);
    }
}

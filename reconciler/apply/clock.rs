//! The time a change's records carry. A command plans against one instant
//! (its start, so that its plan is reproducible), but each record and
//! point it writes takes the time it is made: a rollback after a
//! 30-second health check is 30 seconds after its change, not beside it.
//! The start may be injected (`SITEKEEPER_NOW`, for tests); later times
//! then advance from it by the real time elapsed.

use std::time::Instant;

/// A start instant, and the monotonic clock that advances from it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: jiff::Timestamp,
    started: Instant,
}

impl Clock {
    /// A clock that reads `start` now.
    pub fn starting(start: jiff::Timestamp) -> Self {
        Self {
            start,
            started: Instant::now(),
        }
    }

    /// The instant the command started: what it plans against.
    pub fn start(&self) -> jiff::Timestamp {
        self.start
    }

    /// Now: the start plus the time elapsed since (saturating at the
    /// largest time jiff can hold).
    pub fn now(&self) -> jiff::Timestamp {
        let elapsed = jiff::SignedDuration::try_from(self.started.elapsed())
            .unwrap_or(jiff::SignedDuration::MAX);
        self.start
            .checked_add(elapsed)
            .unwrap_or(jiff::Timestamp::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_readings_advance_from_the_start() {
        let start: jiff::Timestamp = "2026-11-20T10:00:00Z".parse().unwrap();
        let clock = Clock::starting(start);
        assert_eq!(clock.start(), start);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let later = clock.now();
        assert!(
            later >= start + jiff::SignedDuration::from_millis(20),
            "{later}"
        );
        assert!(
            later < start + jiff::SignedDuration::from_secs(60),
            "{later}"
        );
        assert!(clock.now() >= later, "it never goes back");
    }
}

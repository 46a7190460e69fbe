//! The one clock (issue 12, item 5). Every wall-clock reading in Gatehouse goes through here:
//! [`now`] where nothing needs to steer time, an injected [`Clock`] where a test must (schedules,
//! grace periods, leases, signature windows). `clippy.toml` forbids `chrono::Utc::now` and
//! `std::time::SystemTime::now` everywhere else, so a new reading cannot bypass it.
//!
//! - [`SystemClock`]: the system's wall clock (production).
//! - [`ManualClock`]: moves only when told (grace periods and leases pass at once).
//! - `gatehouse_platform::clock::TokioClock`: follows tokio's pausable clock (schedules under
//!   `start_paused` tests run without real waiting). It lives there because this crate has no
//!   runtime.
//! - Any `Fn() -> DateTime<Utc>` closure is a clock too, for a test that wants a fixed instant.
//!
//! Durations (timeouts, backoff, "how long since") use tokio's monotonic clock instead
//! (`tokio::time::Instant`; `clippy.toml` forbids `std::time::Instant::now`).

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex, PoisonError};

/// Now, as a component sees it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// A clock shared by the components that take one.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock: the one place Gatehouse reads the time of day.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one reading the rule leads to
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system's wall clock, for code no test needs to steer ([`SystemClock`]).
pub fn now() -> DateTime<Utc> {
    SystemClock.now()
}

/// The system clock, shared ([`SharedClock`]).
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A fixed or computed instant: `Arc::new(|| at)` is a clock.
impl<F> Clock for F
where
    F: Fn() -> DateTime<Utc> + Send + Sync + 'static,
{
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// A clock tests set by hand. Cheap to clone; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    /// Move forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *t += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    }

    /// Jump to `at` (backwards too: a clock stepped back by NTP).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_the_time_of_day() {
        let before = SystemClock.now();
        let read = now();
        let after = system().now();
        assert!(before <= read && read <= after, "{before} {read} {after}");
        // Not some fixed instant: within a day of what the OS says.
        let os = std::time::UNIX_EPOCH.elapsed().expect("after 1970").as_secs() as i64;
        assert!((read.timestamp() - os).abs() < 86_400, "{read} vs {os}");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let c = ManualClock::new(t0);
        let shared: SharedClock = Arc::new(c.clone());
        assert_eq!(shared.now(), t0);
        c.advance(std::time::Duration::from_secs(90));
        assert_eq!(shared.now(), t0 + chrono::Duration::seconds(90));
        c.set(t0);
        assert_eq!(shared.now(), t0);
    }

    #[test]
    fn a_closure_is_a_clock() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let c: SharedClock = Arc::new(move || t0);
        assert_eq!(c.now(), t0);
    }
}

//! [`TokioClock`]: the [`Clock`] that follows tokio's pausable clock. The rest of the one clock
//! is `gatehouse_domain::clock` (this crate adds only what needs a runtime).

pub use gatehouse_domain::clock::{Clock, ManualClock, SharedClock, SystemClock, now, system};

use chrono::{DateTime, Utc};

/// A wall time that advances with `tokio::time`: under `start_paused` tests it jumps as the
/// runtime auto-advances, so schedules run without real waiting.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `base` now.
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.start.elapsed();
        self.base + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_the_paused_runtime() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let c = TokioClock::starting_at(t0);
        assert_eq!(c.now(), t0);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(c.now(), t0 + chrono::Duration::hours(1));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(c.now(), t0 + chrono::Duration::minutes(61));
    }
}

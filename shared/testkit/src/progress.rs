//! A deadline on progress instead of on total time (issue 17), for the tests that push many
//! events through real queues and processes (crash, replica, soak): on a busy machine they get
//! slower, and a bound on their total time turns "slow" into "red". [`Progress`] fails only when
//! none of the counters it is fed (events processed, people converged, ...) has reached a new
//! high for a whole window, which is what a lost event, a stuck processor or a stale commit
//! look like; a test that progresses at any speed never trips it.
//!
//! The window is [`DEFAULT_WINDOW`] unless `GATEHOUSE_TEST_STALL_SECS` says otherwise.

use std::fmt::Debug;
use std::time::Duration;
use tokio::time::Instant;

/// Long enough for anything a healthy run waits on without progressing: a killed processor's
/// Pub/Sub leases lapse after at most 60 s, an SQS message comes back after its 5 s visibility,
/// a process restarts and opens its store, all on a 2-core machine saturated by other work.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// The window: `GATEHOUSE_TEST_STALL_SECS` seconds, or [`DEFAULT_WINDOW`].
///
/// # Panics
/// If the variable is set and is not a whole number of seconds.
pub fn window() -> Duration {
    match std::env::var("GATEHOUSE_TEST_STALL_SECS") {
        Ok(s) => Duration::from_secs(
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("GATEHOUSE_TEST_STALL_SECS must be whole seconds, got {s:?}")),
        ),
        Err(_) => DEFAULT_WINDOW,
    }
}

/// Watches counters of a test's progress; see the module docs.
#[derive(Debug)]
pub struct Progress {
    what: String,
    window: Duration,
    best: Vec<u64>,
    since: Instant,
    started: Instant,
}

impl Progress {
    /// A watch on `what` (for the failure message) that tolerates `window` without progress.
    pub fn new(what: impl Into<String>, window: Duration) -> Self {
        let now = Instant::now();
        Progress {
            what: what.into(),
            window,
            best: Vec::new(),
            since: now,
            started: now,
        }
    }

    /// A watch with the [`window`] from the environment.
    pub fn from_env(what: impl Into<String>) -> Self {
        Self::new(what, window())
    }

    /// Records the counters (always in the same order); returns true if one of them is higher
    /// than ever before (progress), which restarts the window.
    ///
    /// # Panics
    /// When no counter has reached a new high for the window; the message names `what`, the
    /// counters, and `detail()` (say, which people differ and which events are missing).
    pub fn note<D: Debug>(&mut self, counters: &[u64], detail: impl FnOnce() -> D) -> bool {
        let now = Instant::now();
        let mut progressed = self.best.len() < counters.len();
        self.best.resize(self.best.len().max(counters.len()), 0);
        for (best, &c) in self.best.iter_mut().zip(counters) {
            if c > *best {
                *best = c;
                progressed = true;
            }
        }
        if progressed {
            self.since = now;
            return true;
        }
        let stalled = now - self.since;
        assert!(
            stalled < self.window,
            "{}: no progress for {stalled:?} (window {:?}, {:?} since the watch began); \
             counters {counters:?}, best {:?}; {:?}",
            self.what,
            self.window,
            now - self.started,
            self.best,
            detail()
        );
        false
    }

    /// How long since the watch began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slow_progress_never_trips_however_long_it_takes() {
        let mut p = Progress::new("slow", Duration::from_secs(10));
        // 100 steps, each 9 s apart: 900 s in all, far beyond the window.
        for i in 1..=100u64 {
            tokio::time::advance(Duration::from_secs(9)).await;
            assert!(p.note(&[i, 0], || "detail"));
        }
        assert!(p.elapsed() >= Duration::from_secs(900));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "stuck: no progress for")]
    async fn a_stall_for_the_window_fails_naming_what_and_the_detail() {
        let mut p = Progress::new("stuck", Duration::from_secs(10));
        assert!(p.note(&[5, 3], || "first"));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!p.note(&[5, 3], || "still within the window"));
        tokio::time::advance(Duration::from_secs(2)).await;
        p.note(&[5, 3], || "user0175 differs");
    }

    #[tokio::test(start_paused = true)]
    async fn a_counter_going_down_and_back_up_is_not_progress() {
        let mut p = Progress::new("flapping", Duration::from_secs(10));
        assert!(p.note(&[0, 7], || ""));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!p.note(&[0, 6], || ""));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!p.note(&[0, 7], || ""));
        tokio::time::advance(Duration::from_secs(2)).await;
        let flapped = std::panic::AssertUnwindSafe(|| p.note(&[0, 7], || "flapping"));
        assert!(
            std::panic::catch_unwind(flapped).is_err(),
            "a flapping counter is no progress"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn any_one_counter_reaching_a_new_high_restarts_the_window() {
        let mut p = Progress::new("either", Duration::from_secs(10));
        assert!(p.note(&[1, 1], || ""));
        for step in 2..20u64 {
            tokio::time::advance(Duration::from_secs(8)).await;
            // Alternate which counter moves.
            let c = if step % 2 == 0 { [step, 1] } else { [1, step] };
            assert!(p.note(&c, || ""), "step {step}");
        }
    }
}

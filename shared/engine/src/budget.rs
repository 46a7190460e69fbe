//! The Looker admin-API monthly budget. Looker meters every API call (login included) per
//! calendar month; Gatehouse counts its own calls on the Looker client's [`CallMeter`] (in
//! memory, nothing on the hot path), and [`Budget::flush`] adds that count to the month's row
//! in the state store (`calls = calls + delta`, so restarts keep it and replicas add up), reads
//! back the month's total over every process and sets the gauges:
//!
//! * `gatehouse_looker_api_calls_month`: calls this UTC month, all processes;
//! * `gatehouse_looker_api_budget_remaining`: quota − that (negative once over);
//! * `gatehouse_looker_api_budget_low`: 1 once the calls left are at most
//!   `warning_remaining` × quota, with one WARN log when it gets there (once per month and
//!   process, not on every flush).
//!
//! [`Budget::run`] flushes every `flush_interval` and right at each UTC month start, so the
//! calls counted before midnight go to the month they were made in; the app flushes once more
//! after its tasks have stopped.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use gatehouse_domain::ports::{BackendError, LookerCallCounts, call_month};
use gatehouse_platform::config::LookerBudgetConfig;
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_targets::client::looker::CallMeter;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Calls this UTC month, every process sharing the state store.
pub const METRIC_CALLS_MONTH: &str = gatehouse_platform::events::LOOKER_API_CALLS_MONTH.name;
/// The monthly quota minus [`METRIC_CALLS_MONTH`].
pub const METRIC_REMAINING: &str = gatehouse_platform::events::LOOKER_API_BUDGET_REMAINING.name;
/// 1 when the calls left are at or below the warning threshold, else 0.
pub const METRIC_LOW: &str = "gatehouse_looker_api_budget_low";

/// Wall-clock time for month boundaries (injected: tests use a fixed or tokio-paused clock).
pub type Now = gatehouse_domain::clock::SharedClock;

/// What one flush found.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetStatus {
    /// `YYYY-MM` (UTC) the gauges describe.
    pub month: String,
    /// Calls counted this month by every process, after this flush.
    pub calls: u64,
    /// Quota − calls (negative once over).
    pub remaining: i64,
    /// Remaining is at or below the warning threshold.
    pub low: bool,
}

#[derive(Default)]
struct Seen {
    /// Month of the last successful flush: calls still in the meter were made after it.
    month: Option<String>,
    /// Month in which this process already warned.
    warned: Option<String>,
}

/// The budget of one process: its meter, the shared count and the gauges.
pub struct Budget<S> {
    store: S,
    meter: CallMeter,
    /// Further meters (the rotator's Looker kind), taken together with `meter`.
    more: Vec<CallMeter>,
    quota: u64,
    warning_remaining: f64,
    flush_interval: Duration,
    now: Now,
    seen: Mutex<Seen>,
}

impl<S: LookerCallCounts> Budget<S> {
    /// A budget of `quota` calls a month, counting `meter`, kept in `store`.
    pub fn new(store: S, meter: CallMeter, quota: u64, cfg: &LookerBudgetConfig, now: Now) -> Self {
        Budget {
            store,
            meter,
            more: Vec::new(),
            quota,
            warning_remaining: cfg.warning_remaining,
            flush_interval: cfg.flush_interval,
            now,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Count `meters` too (other Looker clients of this process, e.g. the rotator's).
    pub fn with_meters(mut self, meters: impl IntoIterator<Item = CallMeter>) -> Self {
        self.more.extend(meters);
        self
    }

    /// Take the count of every meter (a failed flush gives the sum back to the first).
    fn take(&self) -> u64 {
        self.meter.take() + self.more.iter().map(CallMeter::take).sum::<u64>()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Flush at the clock's now.
    pub async fn flush(&self) -> Result<BudgetStatus, BackendError> {
        self.flush_at(self.now.now()).await
    }

    /// Add the calls counted since the last flush to the store, read back the month's total,
    /// set the gauges and warn if the budget just became low. Calls counted before a month
    /// change go to the month of the previous flush ([`Budget::run`] flushes at the boundary).
    /// On a store error the calls go back to the meter for the next flush.
    pub async fn flush_at(&self, now: DateTime<Utc>) -> Result<BudgetStatus, BackendError> {
        let month = call_month(now);
        let previous = self.seen().month.clone();
        let mut delta = self.take();
        let result = async {
            if let Some(prev) = previous.filter(|p| *p != month && delta > 0) {
                self.store.add_looker_calls(&prev, delta).await?;
                delta = 0;
            }
            if delta == 0 {
                self.store.looker_calls(&month).await
            } else {
                self.store.add_looker_calls(&month, delta).await
            }
        }
        .await;
        let calls = match result {
            Ok(c) => c,
            Err(e) => {
                self.meter.give_back(delta);
                return Err(e);
            }
        };
        let remaining = i64::try_from(self.quota)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(calls).unwrap_or(i64::MAX));
        let low = (remaining as f64) <= self.quota as f64 * self.warning_remaining;
        gatehouse_platform::events::looker_budget(calls, remaining, low);
        let mut seen = self.seen();
        if low && seen.warned.as_deref() != Some(month.as_str()) {
            tracing::warn!(
                %month,
                calls,
                remaining,
                quota = self.quota,
                warning_remaining = self.warning_remaining,
                "looker admin-api budget is low"
            );
            seen.warned = Some(month.clone());
        }
        seen.month = Some(month.clone());
        Ok(BudgetStatus {
            month,
            calls,
            remaining,
            low,
        })
    }

    /// How long to wait from `now` until the next flush: the flush interval, or less if the
    /// UTC month ends sooner.
    pub fn next_wait(&self, now: DateTime<Utc>) -> Duration {
        let until_month = (next_month_start(now) - now).to_std().unwrap_or(Duration::ZERO);
        self.flush_interval.min(until_month.max(Duration::from_millis(1)))
    }

    /// Flush now, then every interval and at each month start, until `stop`. Errors are
    /// logged (the calls stay counted in memory until a flush succeeds).
    pub async fn run(&self, stop: Shutdown) {
        loop {
            if let Err(e) = self.flush().await {
                let pending = self.meter.pending() + self.more.iter().map(CallMeter::pending).sum::<u64>();
                tracing::warn!(error = %e, pending, "cannot flush the looker call count");
            }
            let wait = self.next_wait(self.now.now());
            tokio::select! {
                _ = stop.wait() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// 00:00 UTC on the first day of the month after `now`'s.
fn next_month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(now + chrono::Duration::days(31))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The store in memory (unit tests do no I/O); `fail` makes every call an error.
    #[derive(Clone, Default)]
    struct MemCounts {
        months: Arc<Mutex<BTreeMap<String, u64>>>,
        fail: Arc<AtomicBool>,
    }

    impl MemCounts {
        fn get(&self, month: &str) -> u64 {
            self.months.lock().unwrap().get(month).copied().unwrap_or(0)
        }
        fn check(&self) -> Result<(), BackendError> {
            match self.fail.load(Ordering::SeqCst) {
                true => Err(BackendError::new("store down", "injected")),
                false => Ok(()),
            }
        }
    }

    impl LookerCallCounts for MemCounts {
        async fn add_looker_calls(&self, month: &str, delta: u64) -> Result<u64, BackendError> {
            self.check()?;
            let mut m = self.months.lock().unwrap();
            let c = m.entry(month.to_string()).or_default();
            *c += delta;
            Ok(*c)
        }
        async fn looker_calls(&self, month: &str) -> Result<u64, BackendError> {
            self.check()?;
            Ok(self.get(month))
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn cfg(warning_remaining: f64) -> LookerBudgetConfig {
        LookerBudgetConfig {
            monthly_call_quota: Some(100),
            warning_remaining,
            flush_interval: Duration::from_secs(30),
        }
    }

    fn budget(store: &MemCounts, meter: &CallMeter, now: DateTime<Utc>) -> Budget<MemCounts> {
        Budget::new(
            store.clone(),
            meter.clone(),
            100,
            &cfg(0.1),
            Arc::new(move || now),
        )
    }

    fn calls(meter: &CallMeter, n: usize) {
        (0..n).for_each(|_| meter.record());
    }

    /// A gauge's value in Prometheus text.
    fn gauge(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.split(' ').next() == Some(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Log lines at WARN, captured.
    #[derive(Clone, Default)]
    struct Logs(gatehouse_testkit::logs::LogBuffer);

    impl Logs {
        fn warnings(&self) -> usize {
            self.0.text().matches("looker admin-api budget is low").count()
        }
    }

    /// Runs `f` on a current-thread runtime with a Prometheus recorder and a log capture of
    /// its own; returns the rendered metrics text.
    fn observed<F: std::future::Future<Output = ()>>(logs: &Logs, f: F) -> String {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let logs = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.0.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            metrics::with_local_recorder(&recorder, || rt.block_on(f))
        });
        handle.render()
    }

    #[test]
    fn gauges_follow_the_stored_count_and_the_warning_is_logged_once() {
        let (store, meter, logs) = (MemCounts::default(), CallMeter::new(), Logs::default());
        let b = budget(&store, &meter, at("2026-03-10T12:00:00Z"));
        let text = observed(&logs, async {
            calls(&meter, 85);
            let s = b.flush().await.unwrap();
            assert_eq!((s.calls, s.remaining, s.low), (85, 15, false));
            // Another replica adds its calls: the gauge shows the sum read back.
            store.add_looker_calls("2026-03", 4).await.unwrap();
            calls(&meter, 1);
            let s = b.flush().await.unwrap();
            assert_eq!(
                (s.calls, s.remaining, s.low),
                (90, 10, true),
                "10 left = 10 % of 100"
            );
            calls(&meter, 3);
            let s = b.flush().await.unwrap();
            assert_eq!((s.calls, s.remaining, s.low), (93, 7, true));
            calls(&meter, 10);
            let s = b.flush().await.unwrap();
            assert_eq!(
                (s.calls, s.remaining),
                (103, -3),
                "over the quota shows as negative"
            );
        });
        assert_eq!(store.get("2026-03"), 103);
        assert_eq!(meter.pending(), 0);
        assert_eq!(gauge(&text, METRIC_CALLS_MONTH), Some(103.0), "{text}");
        assert_eq!(gauge(&text, METRIC_REMAINING), Some(-3.0), "{text}");
        assert_eq!(gauge(&text, METRIC_LOW), Some(1.0), "{text}");
        assert_eq!(
            logs.warnings(),
            1,
            "one warning when it crossed, not one per flush"
        );
    }

    #[test]
    fn every_meter_of_the_process_is_counted() {
        let (store, meter, logs) = (MemCounts::default(), CallMeter::new(), Logs::default());
        let rotator = CallMeter::new();
        let b = budget(&store, &meter, at("2026-03-10T12:00:00Z")).with_meters([rotator.clone()]);
        observed(&logs, async {
            calls(&meter, 3);
            calls(&rotator, 2);
            assert_eq!(b.flush().await.unwrap().calls, 5);
        });
        assert_eq!((meter.pending(), rotator.pending()), (0, 0));
    }

    #[test]
    fn a_flush_with_nothing_counted_still_reads_the_shared_total() {
        let (store, meter, logs) = (MemCounts::default(), CallMeter::new(), Logs::default());
        let b = budget(&store, &meter, at("2026-03-10T12:00:00Z"));
        let text = observed(&logs, async {
            store.add_looker_calls("2026-03", 30).await.unwrap();
            let s = b.flush().await.unwrap();
            assert_eq!((s.calls, s.remaining, s.low), (30, 70, false));
        });
        assert_eq!(gauge(&text, METRIC_LOW), Some(0.0), "{text}");
        assert_eq!(logs.warnings(), 0);
    }

    #[test]
    fn the_month_rolls_over_at_utc_month_start() {
        let (store, meter, logs) = (MemCounts::default(), CallMeter::new(), Logs::default());
        let b = Budget::new(
            store.clone(),
            meter.clone(),
            100,
            &cfg(0.5),
            Arc::new(|| at("2026-01-01T00:00:00Z")),
        );
        let text = observed(&logs, async {
            calls(&meter, 60);
            let s = b.flush_at(at("2026-01-31T23:59:30Z")).await.unwrap();
            assert_eq!((s.month.as_str(), s.calls, s.low), ("2026-01", 60, true));
            // Counted before midnight, flushed at the boundary: January's calls.
            calls(&meter, 5);
            let s = b.flush_at(at("2026-02-01T00:00:00Z")).await.unwrap();
            assert_eq!(
                (s.month.as_str(), s.calls, s.remaining, s.low),
                ("2026-02", 0, 100, false)
            );
            calls(&meter, 55);
            let s = b.flush_at(at("2026-02-03T08:00:00Z")).await.unwrap();
            assert_eq!((s.month.as_str(), s.calls, s.low), ("2026-02", 55, true));
        });
        assert_eq!(store.get("2026-01"), 65);
        assert_eq!(store.get("2026-02"), 55);
        assert_eq!(gauge(&text, METRIC_CALLS_MONTH), Some(55.0), "{text}");
        assert_eq!(logs.warnings(), 2, "one warning per month the budget ran low in");
    }

    #[test]
    fn the_run_loop_flushes_at_month_start_even_between_intervals() {
        let b = Budget::new(
            MemCounts::default(),
            CallMeter::new(),
            100,
            &LookerBudgetConfig {
                flush_interval: Duration::from_secs(3600),
                ..cfg(0.1)
            },
            gatehouse_domain::clock::system(),
        );
        assert_eq!(
            b.next_wait(at("2026-12-31T23:59:50Z")),
            Duration::from_secs(10),
            "wakes at the new year"
        );
        assert_eq!(b.next_wait(at("2026-02-10T00:00:00Z")), Duration::from_secs(3600));
        assert_eq!(
            next_month_start(at("2028-02-29T10:00:00Z")),
            at("2028-03-01T00:00:00Z")
        );
    }

    /// On tokio's paused clock: the loop's flushes land in the right month with no real wait.
    #[tokio::test(start_paused = true)]
    async fn the_run_loop_on_a_paused_clock_flushes_each_month_into_its_own_row() {
        let (store, meter) = (MemCounts::default(), CallMeter::new());
        let base = at("2026-04-30T23:00:00Z");
        let start = tokio::time::Instant::now();
        let now: Now = Arc::new(move || base + chrono::Duration::from_std(start.elapsed()).unwrap());
        let b = Arc::new(Budget::new(
            store.clone(),
            meter.clone(),
            100,
            &LookerBudgetConfig {
                flush_interval: Duration::from_secs(7200),
                ..cfg(0.1)
            },
            now,
        ));
        let (trigger, shutdown) = gatehouse_platform::shutdown::Shutdown::new();
        let task = tokio::spawn({
            let b = b.clone();
            async move { b.run(shutdown).await }
        });
        tokio::task::yield_now().await; // the first flush (April, nothing counted)
        calls(&meter, 7);
        // 23:00 → midnight is sooner than the 2 h interval: the loop wakes at 00:00.
        tokio::time::sleep(Duration::from_secs(3600 + 1)).await;
        calls(&meter, 2);
        tokio::time::sleep(Duration::from_secs(7200)).await;
        trigger.trigger();
        task.await.unwrap();
        assert_eq!(
            store.get("2026-04"),
            7,
            "counted before midnight, flushed at midnight"
        );
        assert_eq!(store.get("2026-05"), 2);
    }

    #[test]
    fn calls_a_failed_flush_could_not_store_are_kept_for_the_next() {
        let (store, meter, logs) = (MemCounts::default(), CallMeter::new(), Logs::default());
        let b = budget(&store, &meter, at("2026-03-10T12:00:00Z"));
        observed(&logs, async {
            calls(&meter, 12);
            store.fail.store(true, Ordering::SeqCst);
            assert!(b.flush().await.is_err());
            assert_eq!(meter.pending(), 12, "given back");
            store.fail.store(false, Ordering::SeqCst);
            calls(&meter, 1);
            assert_eq!(b.flush().await.unwrap().calls, 13);
        });
        assert_eq!(store.get("2026-03"), 13);
    }
}

//! The one retry policy (backon), wrapped around every client call and behind every delayed
//! retry (a released queue message, a Graph inbox row, a failed rotation).
//!
//! It reads nothing but the error core ([`Classified`]): `Throttled` and `Transient` are
//! retried, at most `retries` times, exponentially from `min_delay` to `max_delay`, never sooner
//! than the server's `Retry-After` (a persisted retry honours it up to
//! [`RetryPolicy::max_retry_after`]); everything
//! else (`Unauthorized`, `NotFound`, `Conflict`, `Permanent`) is returned at once. The SDKs'
//! own retries are off everywhere (aws-config `RetryConfig::disabled()`, the Google clients'
//! retry policies) so attempts are never multiplied.

use backon::{ExponentialBuilder, Retryable};
use gatehouse_domain::error::{Classified, chain};
use std::future::Future;
use std::time::Duration;

/// How often and how long to retry. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: one attempt only).
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// A `Retry-After` longer than this is cut to it in a persisted retry ([`RetryPolicy::delay`]):
    /// a broken or hostile server cannot park the work forever.
    pub fn max_retry_after(&self) -> Duration {
        self.max_delay.saturating_mul(4)
    }

    /// The backoff of in-process retries (with jitter, `retries` times).
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries)
            .with_jitter()
    }

    /// The backoff's next delay for a failure, at least its `Retry-After` (in full: the number
    /// of in-process retries is bounded, and the call's own timeout bounds each attempt).
    pub fn honour(&self, e: &impl Classified, backoff: Duration) -> Duration {
        e.retry_after().map_or(backoff, |r| r.max(backoff))
    }

    /// The delay before the retry after `attempt` earlier failures, for retries that are
    /// persisted or redelivered rather than slept on (released queue messages, Graph inbox rows,
    /// rotations): the same exponential schedule (doubling from `min_delay` to `max_delay`) without jitter, at least `retry_after`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        // Integer doubling (backon's float factor drifts by nanoseconds; a persisted schedule
        // should be exact).
        let exp = self
            .min_delay
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        retry_after.map_or(exp, |r| r.min(self.max_retry_after()).max(exp))
    }

    /// Call `f` until it succeeds, fails with what retrying cannot fix, or the retries are spent;
    /// the last failure is returned. `what` names the call in the log.
    pub async fn call<T, E, F, Fut>(&self, what: &str, f: F) -> Result<T, E>
    where
        E: Classified,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_when(what, |_| false, f).await
    }

    /// [`RetryPolicy::call`], also retrying what `also` accepts.
    pub async fn call_when<T, E, F, Fut>(&self, what: &str, also: impl Fn(&E) -> bool, f: F) -> Result<T, E>
    where
        E: Classified,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        f.retry(self.backoff())
            .when(|e: &E| e.is_retryable() || also(e))
            .adjust(|e: &E, d| d.map(|d| self.honour(e, d)))
            .notify(|e: &E, d| {
                tracing::warn!(call = what, kind = ?e.kind(), error = %chain(e), retry_in = ?d, "call failed; retrying");
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_domain::error::{Error, Kind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries: 3,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        }
    }

    async fn count(p: &RetryPolicy, e: Error) -> usize {
        let calls = AtomicUsize::new(0);
        let r: Result<(), Error> = p
            .call("test", || {
                calls.fetch_add(1, Ordering::SeqCst);
                let e = e.clone();
                async move { Err(e) }
            })
            .await;
        assert!(r.is_err());
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn only_throttled_and_transient_failures_are_retried_a_bounded_number_of_times() {
        let p = policy();
        assert_eq!(count(&p, Error::new(Kind::Transient, "503")).await, 4);
        assert_eq!(count(&p, Error::new(Kind::Throttled, "429")).await, 4);
        for k in [
            Kind::Unauthorized,
            Kind::NotFound,
            Kind::Conflict,
            Kind::Permanent,
        ] {
            assert_eq!(count(&p, Error::new(k, "no")).await, 1, "{k:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_is_waited_for_before_the_next_attempt() {
        let p = policy();
        let start = tokio::time::Instant::now();
        let at = std::sync::Mutex::new(Vec::new());
        let r: Result<(), Error> = p
            .call("test", || {
                at.lock().unwrap().push(start.elapsed());
                async {
                    Err(Error::new(Kind::Throttled, "429")
                        .with_status(429)
                        .with_retry_after(Some(Duration::from_millis(150))))
                }
            })
            .await;
        assert!(r.is_err());
        let at = at.into_inner().unwrap();
        assert_eq!(at.len(), 4);
        // Paused time: the gaps are exactly the slept delays.
        for w in at.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(150), "{at:?}");
        }
    }

    #[test]
    fn delayed_retries_follow_the_same_schedule_and_honour_retry_after() {
        let p = policy();
        assert_eq!(p.delay(0, None), Duration::from_millis(10));
        assert_eq!(p.delay(1, None), Duration::from_millis(20));
        assert_eq!(p.delay(2, None), Duration::from_millis(40));
        assert_eq!(p.delay(30, None), Duration::from_millis(40));
        assert_eq!(
            p.delay(0, Some(Duration::from_millis(70))),
            Duration::from_millis(70)
        );
        // A Retry-After shorter than the backoff does not shorten it; an absurd one is cut.
        assert_eq!(
            p.delay(2, Some(Duration::from_millis(1))),
            Duration::from_millis(40)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(86_400))),
            Duration::from_millis(160)
        );
    }
}

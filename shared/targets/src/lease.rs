//! The lease a queue delivery is worked on under, and the fence every write passes.
//!
//! SQS (visibility timeout) and Pub/Sub (ack deadline) hand a message to another consumer once
//! its lease ends, and on a FIFO queue / with ordering keys that consumer then works on the same
//! person. The worker extends the lease while the work runs, but an extension can come late (a
//! starved machine, a slow queue): then two processors would act on one person at once, both
//! planning from the same read of Looker and writing twice, or interleaving one's revocations
//! with the other's grants.
//!
//! So the worker keeps, per delivery, the latest instant until which it *knows* it holds the
//! lease ([`Lease`]), and the one apply loop ([`crate::apply`]) asks [`Lease::check`] before every
//! write: no I/O, one lock. A lease that is over, or within [`Lease::margin`] of its end (the
//! time a write may need to reach its target), is lost for good: nothing more is written under
//! it, the apply fails with [`LeaseLost`], and the worker lets the delivery go without settling
//! it (it comes back, or is already another consumer's, and the subject's version check makes
//! whoever handles it next plan from fresh state).
//!
//! What the worker knows:
//! - a delivery is leased from before the receive that returned it was sent (the backend
//!   started its lease later, never earlier) for the visibility asked for;
//! - an extension sent at `sent` and answered at `answered` holds the lease until
//!   `sent + visibility`, but only if it was answered while the lease was still held: one
//!   answered after that proves nothing (the message may have been handed out meanwhile, and
//!   some backends — moto — accept an old receipt handle even then).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The lease of one delivery (cheap to clone: clones share it). See the module docs.
#[derive(Clone, Debug)]
pub struct Lease {
    visibility: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// Held (known) until this instant.
    until: Instant,
    /// Lost for good: once set, never cleared.
    lost: bool,
    /// When the first lease began (for the error's figures).
    taken: Instant,
}

/// The lease of a delivery may have lapsed: nothing more is written under it.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the queue lease of this delivery may have lapsed (known held until {held_for_ms} ms after it was taken, \
     {margin_ms} ms kept free for a write in flight); no more writes under it, the message comes back"
)]
pub struct LeaseLost {
    held_for_ms: u128,
    margin_ms: u128,
}

impl Lease {
    /// A delivery received by a request sent at `leased_at`, for `visibility`.
    pub fn new(leased_at: Instant, visibility: Duration) -> Self {
        Lease {
            visibility,
            state: Arc::new(Mutex::new(State {
                until: leased_at + visibility,
                lost: false,
                taken: leased_at,
            })),
        }
    }

    /// How close to its end a lease no longer allows a write: a quarter of the visibility, the
    /// time a write may take to reach its target and still land before another consumer can
    /// have received the message. The worker extends when half is left, so an extension may
    /// come a quarter of the visibility late before any write is refused.
    pub fn margin(&self) -> Duration {
        self.visibility / 4
    }

    /// The visibility each extension asks for.
    pub fn visibility(&self) -> Duration {
        self.visibility
    }

    /// When the worker should extend: once half the lease is left.
    pub fn renew_at(&self) -> Instant {
        let s = self.lock();
        s.until.checked_sub(self.visibility / 2).unwrap_or(s.until)
    }

    /// An extension sent at `sent` succeeded, answered at `answered`.
    pub fn extended(&self, sent: Instant, answered: Instant) {
        let mut s = self.lock();
        if s.lost {
            return;
        }
        if answered >= s.until {
            // The lease had ended before the answer came: the message may have been handed to
            // another consumer in between, whatever this answer says.
            s.lost = true;
            return;
        }
        s.until = s.until.max(sent + self.visibility);
    }

    /// Whether a write may go out now: `Err` when the lease is over or within [`Lease::margin`]
    /// of its end (and from then on, always).
    pub fn check(&self) -> Result<(), LeaseLost> {
        let now = Instant::now();
        let mut s = self.lock();
        if !s.lost && now + self.margin() < s.until {
            return Ok(());
        }
        s.lost = true;
        Err(LeaseLost {
            held_for_ms: s.until.saturating_duration_since(s.taken).as_millis(),
            margin_ms: self.margin().as_millis(),
        })
    }

    /// Whether [`Lease::check`] has refused (or an extension came too late): the lease is not
    /// extended any more.
    pub fn is_lost(&self) -> bool {
        self.lock().lost
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is one assignment: the state stays consistent even after a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIS: Duration = Duration::from_secs(4);

    #[tokio::test(start_paused = true)]
    async fn a_fresh_lease_allows_writes_until_the_margin_before_its_end() {
        let lease = Lease::new(Instant::now(), VIS);
        assert_eq!(lease.margin(), Duration::from_secs(1));
        assert!(lease.check().is_ok());
        tokio::time::advance(Duration::from_millis(2_999)).await;
        assert!(lease.check().is_ok(), "1 ms more than the margin is left");
        tokio::time::advance(Duration::from_millis(1)).await;
        let e = lease.check().expect_err("only the margin is left");
        assert!(e.to_string().contains("may have lapsed"), "{e}");
        assert!(lease.is_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn an_extension_answered_in_time_moves_the_end_from_when_it_was_sent() {
        let t0 = Instant::now();
        let lease = Lease::new(t0, VIS);
        assert_eq!(lease.renew_at(), t0 + Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(500)).await;
        lease.extended(sent, Instant::now());
        assert_eq!(lease.renew_at(), sent + Duration::from_secs(2));
        // Past the first lease's end, within the second.
        tokio::time::advance(Duration::from_millis(2_000)).await;
        assert!(lease.check().is_ok());
        // The second's end (sent + 4 s) less the margin.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(lease.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_extension_answered_after_the_lease_ended_proves_nothing_and_the_loss_sticks() {
        let t0 = Instant::now();
        let lease = Lease::new(t0, VIS);
        let sent = t0 + Duration::from_secs(2);
        tokio::time::advance(VIS).await;
        lease.extended(sent, Instant::now());
        assert!(lease.is_lost(), "answered at the lease's end");
        assert!(lease.check().is_err());
        // A later, timely-looking extension does not bring it back.
        let now = Instant::now();
        lease.extended(now, now);
        assert!(lease.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_check_is_final_even_if_an_extension_succeeds_afterwards() {
        let t0 = Instant::now();
        let lease = Lease::new(t0, VIS);
        tokio::time::advance(Duration::from_millis(3_500)).await;
        assert!(lease.check().is_err(), "within the margin");
        let now = Instant::now();
        lease.extended(now, now);
        assert!(lease.check().is_err(), "a write refused once is refused for good");
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_extension_never_shortens_the_lease() {
        let t0 = Instant::now();
        let lease = Lease::new(t0, VIS);
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        lease.extended(now, now);
        lease.extended(t0, now);
        assert_eq!(lease.renew_at(), now + Duration::from_secs(2));
    }
}

//! An in-memory [`RotationStore`] (tests of the scheduler under tokio's paused clock; one
//! process only).

use crate::state::{Rotation, RotationStore, SecretState, Started};
use chrono::{DateTime, Utc};
use gatehouse_domain::ports::{BackendError, LedgerEntry, RotationRequest};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[derive(Default)]
struct Inner {
    rotations: Vec<Rotation>,
    leases: BTreeMap<String, (String, DateTime<Utc>)>,
    secrets: BTreeMap<String, SecretState>,
    ledger: Vec<LedgerEntry>,
    requests: Vec<(RotationRequest, bool)>,
}

/// In-memory rotator state. Cheap to clone; clones share the state.
#[derive(Clone, Default)]
pub struct MemoryRotations(Arc<Mutex<Inner>>);

impl MemoryRotations {
    fn st(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record a rotation request (what [`RotationStore::record_request`] does for a request
    /// received from the rotation queue); `true` if it was new.
    pub fn add_request(&self, r: RotationRequest) -> bool {
        let mut st = self.st();
        let new = !st.requests.iter().any(|(q, _)| q.envelope_id == r.envelope_id);
        if new {
            st.requests.push((r, false));
        }
        new
    }

    /// Make a handled request pending again: what a second rotator that read the requests just
    /// before the first marked this one handled still acts on (tests of that race).
    pub fn reopen_request(&self, envelope_id: &str) {
        for (r, handled) in self.st().requests.iter_mut() {
            if r.envelope_id == envelope_id {
                *handled = false;
            }
        }
    }
}

impl RotationStore for MemoryRotations {
    async fn start(&self, r: &Rotation) -> Result<Started, BackendError> {
        let mut st = self.st();
        if st.rotations.iter().any(|x| x.id == r.id) {
            return Ok(Started::Existed(r.id.clone()));
        }
        if let Some(a) = st
            .rotations
            .iter()
            .find(|x| x.secret == r.secret && x.phase.is_active())
        {
            return Ok(Started::AlreadyActive(a.id.clone()));
        }
        st.rotations.push(r.clone());
        Ok(Started::New(r.id.clone()))
    }

    async fn get(&self, id: &str) -> Result<Option<Rotation>, BackendError> {
        Ok(self.st().rotations.iter().find(|r| r.id == id).cloned())
    }

    async fn history(&self, secret: &str) -> Result<Vec<Rotation>, BackendError> {
        let mut all: Vec<Rotation> = self
            .st()
            .rotations
            .iter()
            .filter(|r| r.secret == secret)
            .cloned()
            .collect();
        // Stable: equal start times keep insertion order, like the databases' row order.
        all.sort_by_key(|r| r.started_at);
        Ok(all)
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Rotation>, BackendError> {
        let mut due: Vec<Rotation> = self
            .st()
            .rotations
            .iter()
            .filter(|r| !r.phase.is_terminal() && r.due_at <= now)
            .cloned()
            .collect();
        due.sort_by_key(|r| r.due_at);
        Ok(due)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, BackendError> {
        Ok(self
            .st()
            .rotations
            .iter()
            .filter(|r| !r.phase.is_terminal())
            .map(|r| r.due_at)
            .min())
    }

    async fn claim(
        &self,
        id: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        let mut st = self.st();
        if !st.rotations.iter().any(|r| r.id == id) {
            return Ok(false);
        }
        match st.leases.get(id) {
            Some((o, u)) if o != owner && *u > now => Ok(false),
            _ => {
                st.leases.insert(id.to_string(), (owner.to_string(), until));
                Ok(true)
            }
        }
    }

    async fn save(&self, r: &Rotation, owner: &str) -> Result<bool, BackendError> {
        let mut st = self.st();
        if st.leases.get(&r.id).map(|(o, _)| o.as_str()) != Some(owner) {
            return Ok(false);
        }
        match st.rotations.iter_mut().find(|x| x.id == r.id) {
            Some(x) => {
                *x = r.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), BackendError> {
        let mut st = self.st();
        if st.leases.get(id).map(|(o, _)| o.as_str()) == Some(owner) {
            st.leases.remove(id);
        }
        Ok(())
    }

    async fn secret_state(&self, secret: &str) -> Result<SecretState, BackendError> {
        Ok(self.st().secrets.get(secret).cloned().unwrap_or_default())
    }

    async fn set_backoff(
        &self,
        secret: &str,
        failures: u32,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), BackendError> {
        let mut st = self.st();
        let s = st.secrets.entry(secret.to_string()).or_default();
        s.failures = failures;
        s.retry_at = retry_at;
        Ok(())
    }

    async fn claim_fire(
        &self,
        secret: &str,
        prev: Option<DateTime<Utc>>,
        fire: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        let mut st = self.st();
        let s = st.secrets.entry(secret.to_string()).or_default();
        if s.last_fire != prev {
            return Ok(false);
        }
        s.last_fire = Some(fire);
        Ok(true)
    }

    async fn append_ledger(&self, entries: &[LedgerEntry]) -> Result<(), BackendError> {
        self.st().ledger.extend_from_slice(entries);
        Ok(())
    }

    async fn ledger(&self) -> Result<Vec<LedgerEntry>, BackendError> {
        Ok(self
            .st()
            .ledger
            .iter()
            .filter(|e| e.subject.starts_with("secret:"))
            .cloned()
            .collect())
    }

    async fn record_request(&self, r: &RotationRequest, _at: DateTime<Utc>) -> Result<bool, BackendError> {
        Ok(self.add_request(r.clone()))
    }

    async fn pending_requests(&self) -> Result<Vec<RotationRequest>, BackendError> {
        Ok(self
            .st()
            .requests
            .iter()
            .filter(|(_, handled)| !handled)
            .map(|(r, _)| r.clone())
            .collect())
    }

    async fn mark_handled(&self, envelope_id: &str, _at: DateTime<Utc>) -> Result<(), BackendError> {
        for (r, handled) in self.st().requests.iter_mut() {
            if r.envelope_id == envelope_id {
                *handled = true;
            }
        }
        Ok(())
    }
}

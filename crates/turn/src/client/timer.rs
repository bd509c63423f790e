//! One table for every deadline of the client, ordered by time.
//!
//! Each key has at most one deadline; setting it again moves it. The
//! earliest deadline is found in O(log n), so `poll_timeout` stays cheap
//! with thousands of permissions and channels.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use rustc_hash::FxHashMap;
use stun::TransactionId;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum TimerKey {
    /// Retransmission or timeout of a transaction.
    Transaction(TransactionId),
    /// Refresh of the allocation.
    Refresh,
    /// Expiry of the allocation.
    Expiry,
    /// Refresh of the permission for a peer IP.
    Permission(IpAddr),
    /// Refresh of a channel binding (by number).
    Channel(u16),
}

/// Deadlines by key, and by time.
#[derive(Debug, Default)]
pub(super) struct Timers {
    by_key: FxHashMap<TimerKey, Instant>,
    queue: BTreeSet<(Instant, TimerKey)>,
}

impl Timers {
    /// Sets (or moves) the deadline of `key`.
    pub(super) fn set(&mut self, key: TimerKey, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.queue.remove(&(old, key));
        }
        self.queue.insert((at, key));
    }

    /// Removes the deadline of `key`, if any.
    pub(super) fn cancel(&mut self, key: TimerKey) {
        if let Some(old) = self.by_key.remove(&key) {
            self.queue.remove(&(old, key));
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest key due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<TimerKey> {
        let &(at, key) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.remove(&(at, key));
        self.by_key.remove(&key);
        Some(key)
    }

    /// Drops every deadline except those of transactions.
    pub(super) fn cancel_refreshes(&mut self) {
        let keys: Vec<TimerKey> = self
            .by_key
            .keys()
            .filter(|k| !matches!(k, TimerKey::Transaction(_)))
            .copied()
            .collect();
        for k in keys {
            self.cancel(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_moves() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(TimerKey::Refresh, t0 + Duration::from_secs(5));
        t.set(TimerKey::Channel(0x4000), t0 + Duration::from_secs(3));
        t.set(TimerKey::Refresh, t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(4)),
            Some(TimerKey::Refresh)
        );
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(4)),
            Some(TimerKey::Channel(0x4000))
        );
        assert_eq!(t.pop_due(t0 + Duration::from_secs(4)), None);
        t.set(TimerKey::Expiry, t0);
        t.cancel_refreshes();
        assert_eq!(t.next(), None);
    }
}

//! Sending new allocations elsewhere: 300 Try Alternate with
//! ALTERNATE-SERVER (RFC 8489 §10), when the relay is draining for
//! maintenance or above a configured load.
//!
//! Only an authenticated Allocate is redirected (RFC 8489 §14.8: 300 "MUST
//! only be sent if the request included ... a valid MESSAGE-INTEGRITY", and
//! the response is sealed like any other), and only a new one: refreshes,
//! permissions, channels and data of live allocations are never touched, so
//! calls in progress finish on this relay while new ones go to the next.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::types::Transport;

/// One alternate relay address and the client transport it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alternate {
    /// The client transport this address is for (a UDP client is sent to
    /// a UDP address, a TLS client to a TLS one).
    pub transport: Transport,
    /// The alternate relay's listener address.
    pub addr: SocketAddr,
}

/// When and where new allocations are redirected; shared by every shard
/// (the drain switch and the round-robin position are atomics).
#[derive(Debug, Clone, Default)]
pub struct Redirect {
    /// Alternate relays; several of one transport take turns.
    pub alternates: Vec<Alternate>,
    /// Redirect when this many allocations (of every shard) exist already;
    /// 0: never for load.
    pub above_allocations: u32,
    /// Draining for maintenance: every new allocation is redirected (or,
    /// with no alternate for its transport and family, refused with 508).
    pub draining: Arc<AtomicBool>,
    next: Arc<AtomicUsize>,
}

/// What to do with a new, authenticated Allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Allocate here.
    Admit,
    /// 300 with this ALTERNATE-SERVER.
    Alternate(SocketAddr),
    /// Draining with nowhere to send the client: 508.
    Refuse,
}

impl PartialEq for Redirect {
    fn eq(&self, other: &Self) -> bool {
        self.alternates == other.alternates && self.above_allocations == other.above_allocations
    }
}

impl Redirect {
    /// No alternates, no load threshold, not draining.
    pub fn new(alternates: Vec<Alternate>, above_allocations: u32) -> Self {
        Redirect {
            alternates,
            above_allocations,
            ..Redirect::default()
        }
    }

    /// Starts (`true`) or ends draining.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    /// Whether the relay is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Takes the drain switch and round-robin position of `running`, so a
    /// reloaded configuration keeps the live state.
    pub fn keep_state_of(&mut self, running: &Redirect) {
        self.draining = running.draining.clone();
        self.next = running.next.clone();
    }

    /// The verdict for a new Allocate from `client` over `transport`, with
    /// `allocations` existing now.
    pub(crate) fn verdict(
        &self,
        transport: Transport,
        client: &SocketAddr,
        allocations: u32,
    ) -> Verdict {
        let draining = self.is_draining();
        let loaded = self.above_allocations > 0 && allocations >= self.above_allocations;
        if !draining && !loaded {
            return Verdict::Admit;
        }
        let candidates: Vec<SocketAddr> = self
            .alternates
            .iter()
            .filter(|a| a.transport == transport && a.addr.is_ipv4() == client.is_ipv4())
            .map(|a| a.addr)
            .collect();
        if candidates.is_empty() {
            // Above the load threshold with nowhere to go, this relay still
            // serves (the hard limits are the quotas); a draining one does not.
            return if draining {
                Verdict::Refuse
            } else {
                Verdict::Admit
            };
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
        Verdict::Alternate(candidates[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alt(t: Transport, s: &str) -> Alternate {
        Alternate {
            transport: t,
            addr: s.parse().unwrap(),
        }
    }

    #[test]
    fn admits_unless_draining_or_loaded() {
        let r = Redirect::new(vec![alt(Transport::Udp, "192.0.2.1:3478")], 10);
        let c: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(r.verdict(Transport::Udp, &c, 9), Verdict::Admit);
        assert_eq!(
            r.verdict(Transport::Udp, &c, 10),
            Verdict::Alternate("192.0.2.1:3478".parse().unwrap())
        );
        r.set_draining(true);
        assert_eq!(
            r.verdict(Transport::Udp, &c, 0),
            Verdict::Alternate("192.0.2.1:3478".parse().unwrap())
        );
        r.set_draining(false);
        assert_eq!(r.verdict(Transport::Udp, &c, 0), Verdict::Admit);
    }

    #[test]
    fn matches_transport_and_family_and_takes_turns() {
        let r = Redirect::new(
            vec![
                alt(Transport::Udp, "192.0.2.1:3478"),
                alt(Transport::Tls, "192.0.2.1:5349"),
                alt(Transport::Udp, "[2001:db8::1]:3478"),
                alt(Transport::Udp, "192.0.2.2:3478"),
            ],
            0,
        );
        r.set_draining(true);
        let v4: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::7]:5000".parse().unwrap();
        let a = r.verdict(Transport::Udp, &v4, 0);
        let b = r.verdict(Transport::Udp, &v4, 0);
        let mut got = [a, b];
        got.sort_by_key(|v| format!("{v:?}"));
        assert_eq!(
            got,
            [
                Verdict::Alternate("192.0.2.1:3478".parse().unwrap()),
                Verdict::Alternate("192.0.2.2:3478".parse().unwrap()),
            ]
        );
        assert_eq!(
            r.verdict(Transport::Udp, &v6, 0),
            Verdict::Alternate("[2001:db8::1]:3478".parse().unwrap())
        );
        assert_eq!(
            r.verdict(Transport::Tls, &v4, 0),
            Verdict::Alternate("192.0.2.1:5349".parse().unwrap())
        );
        // Draining with no TCP alternate: refused, not admitted.
        assert_eq!(r.verdict(Transport::Tcp, &v4, 0), Verdict::Refuse);
    }

    #[test]
    fn loaded_without_alternate_still_admits() {
        let r = Redirect::new(vec![], 1);
        let c: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(r.verdict(Transport::Udp, &c, 5), Verdict::Admit);
    }

    #[test]
    fn reload_keeps_the_drain_switch() {
        let running = Redirect::new(vec![], 0);
        running.set_draining(true);
        let mut new = Redirect::new(vec![alt(Transport::Udp, "192.0.2.1:3478")], 0);
        assert!(!new.is_draining());
        new.keep_state_of(&running);
        assert!(new.is_draining());
        running.set_draining(false);
        assert!(!new.is_draining(), "one switch, shared");
    }
}

//! Outstanding requests and their retransmission schedule (RFC 8489 §6.2).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun::{Key, Method};

/// Initial retransmission timeout (RFC 8489 §6.2.1 default).
pub const RTO: Duration = Duration::from_millis(500);
/// Transmissions of a request over UDP before giving up (Rc).
pub const RC: u32 = 7;
/// Multiple of RTO waited after the last transmission (Rm).
pub const RM: u32 = 16;
/// Timeout of a transaction over a reliable transport (Ti = 39.5 s).
pub const RELIABLE_TIMEOUT: Duration = Duration::from_millis(39_500);
/// Most transactions outstanding at once.
pub const MAX_TRANSACTIONS: usize = 1000;

/// What a request asks for; enough to encode it again with a new nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestKind {
    /// Allocate.
    Allocate,
    /// Refresh; LIFETIME 0 deletes the allocation.
    Refresh { lifetime: u32 },
    /// RFC 8016: Refresh with the MOBILITY-TICKET on a new 5-tuple.
    Move { lifetime: u32 },
    /// CreatePermission for one peer IP.
    CreatePermission { peer: IpAddr },
    /// ChannelBind (new binding or refresh).
    ChannelBind { peer: SocketAddr, channel: u16 },
    /// RFC 6062 Connect.
    Connect { peer: SocketAddr },
}

impl RequestKind {
    /// The STUN method.
    pub(super) fn method(self) -> Method {
        match self {
            RequestKind::Allocate => Method::ALLOCATE,
            RequestKind::Refresh { .. } | RequestKind::Move { .. } => Method::REFRESH,
            RequestKind::CreatePermission { .. } => Method::CREATE_PERMISSION,
            RequestKind::ChannelBind { .. } => Method::CHANNEL_BIND,
            RequestKind::Connect { .. } => Method::CONNECT,
        }
    }

    /// The peer the request is about (port 0 for a permission).
    pub(super) fn peer(self) -> Option<SocketAddr> {
        match self {
            RequestKind::Allocate | RequestKind::Refresh { .. } | RequestKind::Move { .. } => None,
            RequestKind::CreatePermission { peer } => Some(SocketAddr::new(peer, 0)),
            RequestKind::ChannelBind { peer, .. } | RequestKind::Connect { peer } => Some(peer),
        }
    }
}

/// Authentication retries already spent by a request and its resends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Retries {
    /// Resent once after 438 Stale Nonce.
    pub(super) stale_nonce: bool,
    /// Resent once after a 401 to a request that carried credentials.
    pub(super) unauthorized: bool,
}

/// What to do when a transaction's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Send the request again and wait until the instant.
    Retransmit(Instant),
    /// Give up.
    TimedOut,
}

/// One outstanding request.
#[derive(Debug)]
pub(super) struct Transaction {
    /// What was asked.
    pub(super) kind: RequestKind,
    /// The encoded request, for retransmission.
    pub(super) payload: Vec<u8>,
    /// First transmission; lifetimes granted by the response count from here.
    pub(super) started: Instant,
    /// Key the request was signed with; `None` if it carried no credentials.
    pub(super) key: Option<Key>,
    /// Retries spent so far in this chain of resends.
    pub(super) retries: Retries,
    sends: u32,
    next_at: Instant,
    interval: Duration,
    reliable: bool,
}

impl Transaction {
    /// A transaction whose first transmission happens at `now`.
    pub(super) fn new(
        kind: RequestKind,
        payload: Vec<u8>,
        now: Instant,
        reliable: bool,
        key: Option<Key>,
        retries: Retries,
    ) -> Self {
        let next_at = if reliable {
            now + RELIABLE_TIMEOUT
        } else {
            now + RTO
        };
        Transaction {
            kind,
            payload,
            started: now,
            key,
            retries,
            sends: 1,
            next_at,
            interval: RTO,
            reliable,
        }
    }

    /// When the timer must fire next.
    pub(super) fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Advances the schedule when the timer fires: over UDP, transmissions
    /// at 0, RTO, 3·RTO, 7·RTO … (Rc in all) and a timeout Rm·RTO after the
    /// last one; over a stream, a timeout after 39.5 s. Deadlines count from
    /// the schedule, not from a late `now`, so a slow driver does not drift.
    pub(super) fn on_timer(&mut self) -> Step {
        if self.reliable || self.sends >= RC {
            return Step::TimedOut;
        }
        self.sends += 1;
        if self.sends == RC {
            self.next_at += RTO * RM;
        } else {
            self.interval *= 2;
            self.next_at += self.interval;
        }
        Step::Retransmit(self.next_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_schedule_matches_rfc_8489() {
        let t0 = Instant::now();
        let mut t = Transaction::new(
            RequestKind::Allocate,
            vec![],
            t0,
            false,
            None,
            Retries::default(),
        );
        let mut fires = vec![t.next_at()];
        while let Step::Retransmit(at) = t.on_timer() {
            fires.push(at);
        }
        let ms: Vec<u128> = fires.iter().map(|f| (*f - t0).as_millis()).collect();
        // Retransmissions at 0.5 … 31.5 s, then the timeout at 39.5 s.
        assert_eq!(ms, [500, 1500, 3500, 7500, 15500, 31500, 39500]);
    }

    #[test]
    fn reliable_has_one_deadline() {
        let t0 = Instant::now();
        let mut t = Transaction::new(
            RequestKind::Allocate,
            vec![],
            t0,
            true,
            None,
            Retries::default(),
        );
        assert_eq!(t.next_at(), t0 + RELIABLE_TIMEOUT);
        assert_eq!(t.on_timer(), Step::TimedOut);
    }
}

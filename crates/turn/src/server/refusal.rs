//! Why the server refuses a request: one enum that gives the STUN error
//! code, the reason phrase and the counter in [`Stats`] from one place, so
//! no handler picks a bare number or forgets to count.

use super::stats::{AuthFailure, Stats};

/// A refusal the server answers with an error response.
///
/// The 401/438 challenges are not refusals (they invite the client to
/// authenticate) and keep their own path; 420 carries the list of unknown
/// attributes, see [`Refusal::UnknownAttributes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 400: a malformed or contradictory request.
    BadRequest,
    /// 403: the peer policy refuses the peer address.
    PeerForbidden,
    /// 405: RFC 8016: mobility is off on this relay.
    MobilityForbidden,
    /// 420: comprehension-required attributes the server does not know.
    UnknownAttributes,
    /// 437: no allocation on this 5-tuple, or another allocation's request.
    AllocationMismatch,
    /// 440: the relay has no address of the requested family.
    AddressFamilyNotSupported,
    /// 441: the request is signed by another user than the allocation's.
    WrongCredentials,
    /// 442: REQUESTED-TRANSPORT is neither UDP nor (when enabled) TCP.
    UnsupportedTransport,
    /// 443: the peer's address family has no relayed address.
    PeerFamilyMismatch,
    /// 446: RFC 6062: a connection to this peer exists already.
    ConnectionExists,
    /// 447: RFC 6062: the TCP connection to the peer failed.
    ConnectionFailed,
    /// 486: a per-user, per-IP or total allocation quota.
    Quota,
    /// 508: no relay port, socket, reservation, permission, channel or
    /// connection slot left.
    Capacity,
}

impl Refusal {
    /// The STUN error code.
    pub const fn code(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::PeerForbidden => 403,
            Refusal::MobilityForbidden => 405,
            Refusal::UnknownAttributes => 420,
            Refusal::AllocationMismatch => 437,
            Refusal::AddressFamilyNotSupported => 440,
            Refusal::WrongCredentials => 441,
            Refusal::UnsupportedTransport => 442,
            Refusal::PeerFamilyMismatch => 443,
            Refusal::ConnectionExists => 446,
            Refusal::ConnectionFailed => 447,
            Refusal::Quota => 486,
            Refusal::Capacity => 508,
        }
    }

    /// The reason phrase sent with the code.
    pub fn reason(self) -> &'static str {
        stun::attr::reason_phrase(self.code())
    }

    /// Counts the refusal in its own counter (if it has one) and, for every
    /// refusal but 420, in [`Stats::error_responses`].
    pub(crate) fn count(self, stats: &mut Stats) {
        match self {
            Refusal::PeerForbidden => stats.peer_refused += 1,
            Refusal::UnknownAttributes => {
                stats.unknown_attributes += 1;
                return;
            }
            Refusal::WrongCredentials => stats.auth_failure(AuthFailure::WrongCredentials),
            Refusal::Quota => stats.quota_refused += 1,
            Refusal::Capacity => stats.capacity_refused += 1,
            Refusal::BadRequest
            | Refusal::MobilityForbidden
            | Refusal::AllocationMismatch
            | Refusal::AddressFamilyNotSupported
            | Refusal::UnsupportedTransport
            | Refusal::PeerFamilyMismatch
            | Refusal::ConnectionExists
            | Refusal::ConnectionFailed => {}
        }
        stats.error_responses += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Refusal; 13] = [
        Refusal::BadRequest,
        Refusal::PeerForbidden,
        Refusal::MobilityForbidden,
        Refusal::UnknownAttributes,
        Refusal::AllocationMismatch,
        Refusal::AddressFamilyNotSupported,
        Refusal::WrongCredentials,
        Refusal::UnsupportedTransport,
        Refusal::PeerFamilyMismatch,
        Refusal::ConnectionExists,
        Refusal::ConnectionFailed,
        Refusal::Quota,
        Refusal::Capacity,
    ];

    #[test]
    fn codes_are_distinct_errors_with_phrases() {
        let mut codes: Vec<u16> = ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len());
        for r in ALL {
            assert!((400..600).contains(&r.code()), "{r:?}");
            assert_ne!(r.reason(), "Error", "{r:?} has no reason phrase");
        }
    }

    #[test]
    fn each_refusal_counts_once_where_it_belongs() {
        for r in ALL {
            let mut s = Stats::default();
            r.count(&mut s);
            let specific = s.peer_refused
                + s.unknown_attributes
                + s.auth_failures_for(AuthFailure::WrongCredentials)
                + s.quota_refused
                + s.capacity_refused;
            assert!(specific <= 1, "{r:?}");
            // Every refusal shows somewhere in the counters.
            assert!(specific + s.error_responses > 0, "{r:?}");
        }
        let mut s = Stats::default();
        Refusal::Quota.count(&mut s);
        assert_eq!((s.quota_refused, s.error_responses), (1, 1));
        Refusal::UnknownAttributes.count(&mut s);
        assert_eq!((s.unknown_attributes, s.error_responses), (1, 1));
    }
}

//! Counters of the server, read by the driver for metrics. Nothing here is
//! labelled by user or address.

use crate::bandwidth::Exceeded;
use crate::Transport;

/// Why an authenticated request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// MESSAGE-INTEGRITY did not verify with any key of the user.
    BadIntegrity,
    /// No such user.
    UnknownUser,
    /// A REST credential past its expiry.
    Expired,
    /// The NONCE was stale or not ours (438).
    StaleNonce,
    /// The request used another user than the allocation's (441).
    WrongCredentials,
    /// USERNAME, REALM or NONCE missing, or the password algorithm
    /// attributes malformed (400).
    BadRequest,
    /// REALM is not ours.
    WrongRealm,
}

impl AuthFailure {
    /// Every reason, in label order.
    pub const ALL: [AuthFailure; 7] = [
        AuthFailure::BadIntegrity,
        AuthFailure::UnknownUser,
        AuthFailure::Expired,
        AuthFailure::StaleNonce,
        AuthFailure::WrongCredentials,
        AuthFailure::BadRequest,
        AuthFailure::WrongRealm,
    ];

    /// Metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Expired => "expired",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::WrongCredentials => "wrong_credentials",
            AuthFailure::BadRequest => "bad_request",
            AuthFailure::WrongRealm => "wrong_realm",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Server counters (monotonic, except where named `current`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations created, by client transport (udp, tcp, tls).
    pub allocations_created: [u64; 3],
    /// Allocations alive now, by client transport.
    pub allocations_current: [u64; 3],
    /// Packets relayed from clients to peers.
    pub packets_to_peer: u64,
    /// Payload bytes relayed from clients to peers (RFC 6062 streams
    /// included).
    pub bytes_to_peer: u64,
    /// Packets relayed from peers to clients.
    pub packets_to_client: u64,
    /// Payload bytes relayed from peers to clients (RFC 6062 streams
    /// included).
    pub bytes_to_client: u64,
    /// 401 challenges to requests without credentials (not failures).
    pub challenges: u64,
    /// Authentication failures, indexed like [`AuthFailure::ALL`].
    pub auth_failures: [u64; 7],
    /// Requests or packets refused by the peer policy.
    pub peer_refused: u64,
    /// Allocate requests sent to an alternate relay (300).
    pub redirected: u64,
    /// Allocations refused by a quota (486).
    pub quota_refused: u64,
    /// Allocations or bindings refused for lack of capacity (508).
    pub capacity_refused: u64,
    /// Unauthenticated answers not sent because of the rate limit.
    pub rate_limited: u64,
    /// Bytes that were neither valid STUN nor ChannelData, or failed FINGERPRINT.
    pub malformed: u64,
    /// Requests answered 420 for unknown comprehension-required attributes.
    pub unknown_attributes: u64,
    /// Data dropped: no allocation for the 5-tuple or relay address.
    pub dropped_no_allocation: u64,
    /// Data dropped: no permission for the peer.
    pub dropped_no_permission: u64,
    /// Data dropped: channel not bound.
    pub dropped_no_channel: u64,
    /// Data dropped by a bandwidth limit: packets by direction (to peer,
    /// to client) and limit (allocation, total).
    pub bandwidth_dropped_packets: [[u64; 2]; 2],
    /// Payload bytes of those packets, by direction.
    pub bandwidth_dropped_bytes: [u64; 2],
    /// RFC 8016: allocations moved to a new 5-tuple by a MOBILITY-TICKET.
    pub mobility_moves: u64,
    /// RFC 8016: Refresh requests with a MOBILITY-TICKET refused (unknown
    /// or stale ticket, another user's, or mobility off) and Allocate
    /// requests asking for mobility while it is off.
    pub mobility_refused: u64,
    /// Other error responses sent (400, 403, 437, 442, 443, 446, 447 ...).
    pub error_responses: u64,
}

impl Stats {
    pub(crate) fn auth_failure(&mut self, f: AuthFailure) {
        self.auth_failures[f.index()] += 1;
    }

    /// The count for one authentication failure reason.
    pub fn auth_failures_for(&self, f: AuthFailure) -> u64 {
        self.auth_failures[f.index()]
    }

    pub(crate) fn bandwidth_dropped(&mut self, direction: usize, e: Exceeded, len: usize) {
        let limit = match e {
            Exceeded::Allocation => 0,
            Exceeded::Total => 1,
        };
        self.bandwidth_dropped_packets[direction][limit] += 1;
        self.bandwidth_dropped_bytes[direction] += len as u64;
    }

    pub(crate) fn transport_index(t: Transport) -> usize {
        match t {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        }
    }
}

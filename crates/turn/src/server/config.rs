//! Server configuration.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::auth::Credentials;
use crate::policy::PeerPolicy;

use super::Redirect;

/// Default allocation lifetime (RFC 8656 §3.2).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// Default maximum allocation lifetime (RFC 8656 §3.2).
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Permission lifetime (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long a channel number and peer stay unusable for another binding
/// after a binding expires (RFC 8656 §12: 5 minutes).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);
/// How long a RESERVATION-TOKEN holds its port (RFC 8656 §7.2: ~30 s).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// How long the server waits for a ConnectionBind after a ConnectionAttempt
/// or a successful Connect (RFC 6062 §5.2, §5.3: 30 s).
pub const CONNECTION_BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// Relay addresses: where the driver binds relay sockets and what the server
/// advertises in XOR-RELAYED-ADDRESS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayAddresses {
    /// IPv4 address relay sockets bind.
    pub ipv4: Option<IpAddr>,
    /// IPv6 address relay sockets bind.
    pub ipv6: Option<IpAddr>,
    /// IPv4 address advertised instead of `ipv4` (behind NAT).
    pub external_ipv4: Option<IpAddr>,
    /// IPv6 address advertised instead of `ipv6`.
    pub external_ipv6: Option<IpAddr>,
}

impl RelayAddresses {
    /// Every relay address, internal and external (for the peer policy).
    pub fn all(&self) -> Vec<IpAddr> {
        [self.ipv4, self.ipv6, self.external_ipv4, self.external_ipv6]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Limits that bound every table of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Allocations per TURN REST username (486 beyond). A REST username is
    /// issued per browser session (per call member), so this bounds one
    /// session: one peer connection makes 2–6 allocations (one per TURN URL
    /// and local interface), and a member of an 8-person mesh holds 7 peer
    /// connections, hence the default of 64.
    pub allocations_per_user: u32,
    /// Allocations per static (long-term) user, 0 for no limit (the
    /// default): a static user is usually shared by every caller of a
    /// deployment, so a per-user cap would refuse the second or third
    /// caller. The per-IP and total caps still apply.
    pub allocations_per_static_user: u32,
    /// Allocations per client IP address (486 beyond).
    pub allocations_per_ip: u32,
    /// Allocations in total (486 beyond).
    pub allocations_total: u32,
    /// Permissions per allocation (508 beyond).
    pub permissions_per_allocation: u32,
    /// Channel bindings per allocation (508 beyond; at most 4096 exist).
    pub channels_per_allocation: u32,
    /// RFC 6062 peer connections per allocation (508 beyond).
    pub connections_per_allocation: u32,
    /// Unauthenticated answers (Binding responses, 401/438 challenges) per
    /// second per source address.
    pub unauthenticated_rate: u32,
    /// Burst of unauthenticated answers per source address.
    pub unauthenticated_burst: u32,
    /// Source addresses tracked by the rate limiter.
    pub rate_limiter_sources: usize,
    /// Relayed payload bytes per second per allocation and direction
    /// (coturn's `max-bps`), 0 for no limit (the default). Data beyond it
    /// is dropped and counted; see [`crate::bandwidth`].
    pub bytes_per_sec_per_allocation: u64,
    /// Relayed payload bytes per second of the whole server per direction
    /// (coturn's `bps-capacity`), 0 for no limit (the default).
    pub bytes_per_sec_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            allocations_per_user: 64,
            allocations_per_static_user: 0,
            allocations_per_ip: 100,
            allocations_total: 10_000,
            permissions_per_allocation: 256,
            channels_per_allocation: 256,
            connections_per_allocation: 64,
            unauthenticated_rate: 50,
            unauthenticated_burst: 100,
            rate_limiter_sources: 65_536,
            bytes_per_sec_per_allocation: 0,
            bytes_per_sec_total: 0,
        }
    }
}

/// Everything the sans-IO server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Credentials (static users, REST secrets) and the REALM.
    pub credentials: Credentials,
    /// Peer policy. The server adds the relay addresses to it itself.
    pub policy: PeerPolicy,
    /// Relay addresses.
    pub relay: RelayAddresses,
    /// Port range for relay sockets.
    pub ports: RangeInclusive<u16>,
    /// Default allocation lifetime.
    pub default_lifetime: Duration,
    /// Maximum allocation lifetime.
    pub max_lifetime: Duration,
    /// How long a nonce stays fresh before 438.
    pub nonce_lifetime: Duration,
    /// SOFTWARE attribute sent in responses (`None`: no attribute).
    pub software: Option<String>,
    /// Offer SHA-256 as password algorithm (RFC 8489 §9.2) next to MD5.
    pub offer_sha256: bool,
    /// Accept RFC 6062 TCP allocations (REQUESTED-TRANSPORT TCP).
    pub tcp_relay: bool,
    /// RFC 8016 mobility: hand MOBILITY-TICKETs to clients that ask and
    /// move an allocation to the 5-tuple that presents its ticket (see
    /// [`super::mobility`]). On by default: a move needs the allocation
    /// user's credentials as well as the ticket.
    pub mobility: bool,
    /// Limits.
    pub limits: Limits,
    /// When new allocations go to another relay (300 ALTERNATE-SERVER).
    pub redirect: Redirect,
    /// Secret for stateless nonces and reservation tokens (random by
    /// default). Relays of one pool should share it ([`Self::pool_secret`]):
    /// a client sent to another relay by 300 ALTERNATE-SERVER keeps its
    /// nonce (Chromium does), and the other relay must accept it.
    pub secret: [u8; 32],
}

impl ServerConfig {
    /// The nonce and token secret of a pool of relays, derived from what
    /// they share (the realm and a TURN REST secret): HMAC-SHA256 keyed with
    /// the shared secret, so it reveals nothing of it.
    pub fn pool_secret(realm: &str, shared: &[u8]) -> [u8; 32] {
        use hmac::digest::KeyInit;
        use hmac::Mac as _;
        type HmacSha256 = hmac::Hmac<sha2::Sha256>;
        // HMAC takes keys of any length; the fallback is unreachable.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(shared)
            .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
        mac.update(b"onionrtc relay pool nonce and token key v1\0");
        mac.update(realm.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A configuration with defaults for everything but credentials
    /// and relay addresses.
    pub fn new(credentials: Credentials, relay: RelayAddresses) -> Self {
        ServerConfig {
            credentials,
            policy: PeerPolicy::default(),
            relay,
            ports: 49152..=65535,
            default_lifetime: DEFAULT_LIFETIME,
            max_lifetime: MAX_LIFETIME,
            nonce_lifetime: Duration::from_secs(600),
            software: None,
            offer_sha256: true,
            tcp_relay: true,
            mobility: true,
            limits: Limits::default(),
            redirect: Redirect::default(),
            secret: rand::random(),
        }
    }
}

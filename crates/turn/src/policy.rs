//! Peer policy: which peer addresses a client may relay to.
//!
//! An open TURN relay is a proxy into whatever network it sits in. By default
//! [`PeerPolicy`] refuses every peer that is not a public unicast address:
//! loopback, private, link-local (including the cloud metadata address
//! 169.254.169.254), CGNAT, multicast, reserved, documentation and benchmark
//! ranges, the relay's own addresses and port 0. IPv6 addresses that embed an
//! IPv4 address (IPv4-mapped, -compatible, -translated, NAT64, 6to4, Teredo)
//! are also judged by that IPv4 address, so `::ffff:127.0.0.1` is loopback.
//!
//! ## Precedence of [`PeerPolicy::check`]
//! 1. peer port 0 → denied (`port-zero`);
//! 2. an operator [`deny`](PeerPolicy::deny) CIDR matches the address or an
//!    IPv4 address it embeds → denied (`operator-deny`);
//! 3. an operator [`allow`](PeerPolicy::allow) CIDR matches the address (or,
//!    for `::ffff:a.b.c.d`, the IPv4 address, which is the same destination on
//!    a dual-stack socket) → allowed, overriding the defaults below;
//! 4. the address, or an IPv4 address it embeds, is one of the relay's own
//!    [`relay_addresses`](PeerPolicy::relay_addresses) → denied
//!    (`relay-address`), whatever the port. A peer that is a live allocation
//!    of this relay is let through by the server *before* it asks the policy;
//! 5. the default deny list (see [`DenyReason`] for the classes).
//!
//! [`dangerous_allow_loopback_peers`](PeerPolicy::dangerous_allow_loopback_peers)
//! lifts the loopback rule (127.0.0.0/8, `::1` and their embedded forms),
//! including for the relay's own loopback addresses, and nothing else.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: an address and a prefix length.
///
/// Parsed from `"10.0.0.0/8"`, `"fe80::/10"` or a bare address (a host
/// route, /32 or /128). Bits beyond the prefix must be zero, so a typo such as
/// `"10.0.0.1/8"` is an error rather than a silently wider rule. An IPv4 CIDR
/// never contains an IPv6 address and vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a string or an (address, prefix) pair is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error(
        "invalid CIDR {0:?}: expected an IP address or a network such as 10.0.0.0/8 or fe80::/10"
    )]
    BadAddress(String),
    /// The prefix length is not a decimal number.
    #[error("invalid CIDR {0:?}: the prefix length after '/' must be a decimal number")]
    BadPrefix(String),
    /// The prefix length exceeds 32 (IPv4) or 128 (IPv6).
    #[error(
        "invalid CIDR {input:?}: the prefix length must be at most {max} for this address family"
    )]
    PrefixTooLong {
        /// The rejected input.
        input: String,
        /// The largest prefix length of the address family.
        max: u8,
    },
    /// The address has bits set beyond the prefix.
    #[error("invalid CIDR {input:?}: the address has bits set beyond the prefix (did you mean {suggestion}?)")]
    HostBitsSet {
        /// The rejected input.
        input: String,
        /// The network with the host bits cleared.
        suggestion: Cidr,
    },
}

const fn mask32(prefix_len: u8) -> u32 {
    match u32::MAX.checked_shl(32u32.saturating_sub(prefix_len as u32)) {
        Some(m) if prefix_len > 0 => m,
        _ => 0,
    }
}

const fn mask128(prefix_len: u8) -> u128 {
    match u128::MAX.checked_shl(128u32.saturating_sub(prefix_len as u32)) {
        Some(m) if prefix_len > 0 => m,
        _ => 0,
    }
}

impl Cidr {
    /// A network from its address and prefix length; errors if the prefix is
    /// too long for the family or the address has host bits set.
    pub fn new(network: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        let input = || format!("{network}/{prefix_len}");
        let max = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix_len > max {
            return Err(CidrError::PrefixTooLong {
                input: input(),
                max,
            });
        }
        let masked = match network {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix_len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix_len))),
        };
        let cidr = Cidr {
            network: masked,
            prefix_len,
        };
        if masked != network {
            return Err(CidrError::HostBitsSet {
                input: input(),
                suggestion: cidr,
            });
        }
        Ok(cidr)
    }

    /// The host route of one address (/32 or /128).
    pub const fn host(ip: IpAddr) -> Self {
        let prefix_len = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        Cidr {
            network: ip,
            prefix_len,
        }
    }

    /// An IPv4 network from a table of constants (host bits checked by a test).
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix_len: u8) -> Self {
        Cidr {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix_len,
        }
    }

    /// An IPv6 network from a table of constants (host bits checked by a test).
    const fn v6(segments: [u16; 8], prefix_len: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix_len,
        }
    }

    /// The network address (host bits zero).
    pub const fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is inside this network (same address family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                (u32::from(n) ^ u32::from(a)) & mask32(self.prefix_len) == 0
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                (u128::from(n) ^ u128::from(a)) & mask128(self.prefix_len) == 0
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(s.to_owned()))?;
        let Some(prefix) = prefix else {
            return Ok(Cidr::host(network));
        };
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::BadPrefix(s.to_owned()));
        }
        let prefix_len: u8 = prefix
            .parse()
            .map_err(|_| CidrError::BadPrefix(s.to_owned()))?;
        Cidr::new(network, prefix_len).map_err(|e| match e {
            CidrError::PrefixTooLong { max, .. } => CidrError::PrefixTooLong {
                input: s.to_owned(),
                max,
            },
            CidrError::HostBitsSet { suggestion, .. } => CidrError::HostBitsSet {
                input: s.to_owned(),
                suggestion,
            },
            other => other,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Why [`PeerPolicy::check`] refused a peer. [`as_str`](Self::as_str) gives a
/// stable label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// Peer port 0.
    PortZero,
    /// An operator `deny` CIDR.
    OperatorDeny,
    /// One of the relay's own addresses.
    RelayAddress,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 169.254.0.0/16 (including 169.254.169.254), fe80::/10.
    LinkLocal,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7.
    Private,
    /// Shared address space of carrier-grade NAT, 100.64.0.0/10.
    SharedCgnat,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4 (future use).
    Reserved,
    /// IETF protocol assignments, 192.0.0.0/24.
    ProtocolAssignment,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32.
    Documentation,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmark,
    /// Deprecated site-local fec0::/10.
    SiteLocal,
    /// Discard-only 100::/64.
    DiscardOnly,
}

impl DenyReason {
    /// A stable lower-case label, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            DenyReason::PortZero => "port-zero",
            DenyReason::OperatorDeny => "operator-deny",
            DenyReason::RelayAddress => "relay-address",
            DenyReason::Loopback => "loopback",
            DenyReason::Unspecified => "unspecified",
            DenyReason::LinkLocal => "link-local",
            DenyReason::Private => "private",
            DenyReason::SharedCgnat => "shared-cgnat",
            DenyReason::Multicast => "multicast",
            DenyReason::Broadcast => "broadcast",
            DenyReason::Reserved => "reserved",
            DenyReason::ProtocolAssignment => "protocol-assignment",
            DenyReason::Documentation => "documentation",
            DenyReason::Benchmark => "benchmark",
            DenyReason::SiteLocal => "site-local",
            DenyReason::DiscardOnly => "discard-only",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer denied by policy: {}", self.as_str())
    }
}

impl std::error::Error for DenyReason {}

/// Default IPv4 deny list, first match wins (broadcast before reserved).
const V4_DEFAULT_DENY: &[(Cidr, DenyReason)] = &[
    (Cidr::v4(0, 0, 0, 0, 8), DenyReason::Unspecified),
    (Cidr::v4(127, 0, 0, 0, 8), DenyReason::Loopback),
    (Cidr::v4(169, 254, 0, 0, 16), DenyReason::LinkLocal),
    (Cidr::v4(10, 0, 0, 0, 8), DenyReason::Private),
    (Cidr::v4(172, 16, 0, 0, 12), DenyReason::Private),
    (Cidr::v4(192, 168, 0, 0, 16), DenyReason::Private),
    (Cidr::v4(100, 64, 0, 0, 10), DenyReason::SharedCgnat),
    (Cidr::v4(224, 0, 0, 0, 4), DenyReason::Multicast),
    (Cidr::v4(255, 255, 255, 255, 32), DenyReason::Broadcast),
    (Cidr::v4(240, 0, 0, 0, 4), DenyReason::Reserved),
    (Cidr::v4(192, 0, 0, 0, 24), DenyReason::ProtocolAssignment),
    (Cidr::v4(192, 0, 2, 0, 24), DenyReason::Documentation),
    (Cidr::v4(198, 51, 100, 0, 24), DenyReason::Documentation),
    (Cidr::v4(203, 0, 113, 0, 24), DenyReason::Documentation),
    (Cidr::v4(198, 18, 0, 0, 15), DenyReason::Benchmark),
];

/// Default IPv6 deny list (embedded IPv4 forms are handled separately).
const V6_DEFAULT_DENY: &[(Cidr, DenyReason)] = &[
    (Cidr::v6([0; 8], 128), DenyReason::Unspecified),
    (
        Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        DenyReason::Loopback,
    ),
    (
        Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        DenyReason::LinkLocal,
    ),
    (
        Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        DenyReason::Private,
    ),
    (
        Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        DenyReason::Multicast,
    ),
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        DenyReason::Documentation,
    ),
    (
        Cidr::v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        DenyReason::Benchmark,
    ),
    (
        Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        DenyReason::SiteLocal,
    ),
    (
        Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        DenyReason::DiscardOnly,
    ),
];

/// The IPv4 addresses an IPv6 address embeds (at most two, for Teredo).
///
/// - IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` (not `::` or
///   `::1`) and IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765): the last 32
///   bits;
/// - NAT64 `64:ff9b::/96` and the local-use `64:ff9b:1::/48`: the last 32
///   bits (the /96 layout of RFC 6052; operators of a local NAT64 with a
///   shorter prefix should add a `deny` or `allow` rule for it);
/// - 6to4 `2002::/16`: bits 16..48;
/// - Teredo `2001::/32`: the server in bits 32..64 and the client in the last
///   32 bits, inverted.
fn embedded_v4(ip: IpAddr) -> [Option<Ipv4Addr>; 2] {
    let IpAddr::V6(v6) = ip else {
        return [None, None];
    };
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from(bits as u32);
    let top96 = bits >> 32;
    if top96 == 0xffff || top96 == 0xffff_0000 || (top96 == 0 && bits > 1) {
        return [Some(low32), None];
    }
    if top96 == 0x0064_ff9b_0000_0000_0000_0000 || bits >> 80 == 0x0064_ff9b_0001 {
        return [Some(low32), None];
    }
    if bits >> 112 == 0x2002 {
        return [Some(Ipv4Addr::from((bits >> 80) as u32)), None];
    }
    if bits >> 96 == 0x2001_0000 {
        let server = Ipv4Addr::from((bits >> 64) as u32);
        let client = Ipv4Addr::from(!(bits as u32));
        return [Some(server), Some(client)];
    }
    [None, None]
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

fn default_verdict(
    list: &[(Cidr, DenyReason)],
    ip: IpAddr,
    allow_loopback: bool,
) -> Option<DenyReason> {
    list.iter()
        .find(|(c, _)| c.contains(ip))
        .map(|&(_, r)| r)
        .filter(|&r| !(allow_loopback && r == DenyReason::Loopback))
}

/// Which peers a client may relay to. [`Default`] is the safe default policy
/// described in the [module documentation](self); the setters refine it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    allow_loopback: bool,
    relay_addresses: Vec<IpAddr>,
}

impl PeerPolicy {
    /// The safe default policy (same as [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows a network, overriding the default deny list (but not operator
    /// `deny` rules, the relay's own addresses or port 0).
    #[must_use]
    pub fn allow(mut self, cidr: Cidr) -> Self {
        self.allow.push(cidr);
        self
    }

    /// Denies a network; matches the peer address or an IPv4 address it
    /// embeds, and wins over every `allow`.
    #[must_use]
    pub fn deny(mut self, cidr: Cidr) -> Self {
        self.deny.push(cidr);
        self
    }

    /// **Dangerous**: allows loopback peers (127.0.0.0/8, `::1` and their
    /// IPv4-embedding forms), including the relay's own loopback addresses.
    /// For tests and single-host labs only; it allows nothing else.
    #[must_use]
    pub fn dangerous_allow_loopback_peers(mut self, allow: bool) -> Self {
        self.allow_loopback = allow;
        self
    }

    /// The relay's own relayed addresses, internal and external; peers on
    /// them are denied on every port. IPv4-mapped addresses are stored as
    /// IPv4. Replaces any previous list.
    #[must_use]
    pub fn relay_addresses(mut self, addresses: Vec<IpAddr>) -> Self {
        self.relay_addresses = addresses.into_iter().map(|a| a.to_canonical()).collect();
        self
    }

    /// Whether a client may relay to `peer`; the reason if not.
    pub fn check(&self, peer: SocketAddr) -> Result<(), DenyReason> {
        if peer.port() == 0 {
            return Err(DenyReason::PortZero);
        }
        self.check_ip(peer.ip())
    }

    /// Whether a client may relay to `ip` on some port: the check for
    /// CreatePermission, whose XOR-PEER-ADDRESS port is ignored
    /// (RFC 8656 §9.1), so port 0 is not a reason to refuse there.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), DenyReason> {
        let embedded = embedded_v4(ip);
        let forms = || std::iter::once(ip).chain(embedded.into_iter().flatten().map(IpAddr::V4));

        if self.deny.iter().any(|c| forms().any(|f| c.contains(f))) {
            return Err(DenyReason::OperatorDeny);
        }
        let canonical = ip.to_canonical();
        if self
            .allow
            .iter()
            .any(|c| c.contains(ip) || c.contains(canonical))
        {
            return Ok(());
        }
        let is_relay =
            |r: &IpAddr| !(self.allow_loopback && is_loopback(*r)) && forms().any(|f| f == *r);
        if self.relay_addresses.iter().any(is_relay) {
            return Err(DenyReason::RelayAddress);
        }
        let direct = match ip {
            IpAddr::V4(_) => default_verdict(V4_DEFAULT_DENY, ip, self.allow_loopback),
            IpAddr::V6(_) => default_verdict(V6_DEFAULT_DENY, ip, self.allow_loopback),
        };
        if let Some(reason) = direct {
            return Err(reason);
        }
        for v4 in embedded.into_iter().flatten() {
            if let Some(reason) =
                default_verdict(V4_DEFAULT_DENY, IpAddr::V4(v4), self.allow_loopback)
            {
                return Err(reason);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn verdict(policy: &PeerPolicy, peer: &str) -> &'static str {
        match policy.check(sa(peer)) {
            Ok(()) => "allow",
            Err(r) => r.as_str(),
        }
    }

    #[test]
    fn cidr_parse_and_display() {
        let table: &[(&str, &str)] = &[
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("fe80::/10", "fe80::/10"),
            ("1.2.3.4", "1.2.3.4/32"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::/0", "::/0"),
            ("192.168.1.128/25", "192.168.1.128/25"),
        ];
        for (input, shown) in table {
            let c = cidr(input);
            assert_eq!(c.to_string(), *shown, "{input}");
            assert_eq!(cidr(shown), c, "{input}: display round-trips");
        }
    }

    #[test]
    fn cidr_errors() {
        let table: &[(&str, &str)] = &[
            ("", "not-address"),
            ("10.0.0/8", "not-address"),
            ("hello", "not-address"),
            ("10.0.0.0/", "prefix"),
            ("10.0.0.0/x", "prefix"),
            ("10.0.0.0/+8", "prefix"),
            ("10.0.0.0/0008", "prefix"),
            ("10.0.0.0/8/8", "prefix"),
            ("10.0.0.0/33", "too-long"),
            ("::/129", "too-long"),
            ("10.0.0.1/8", "host-bits"),
            ("fe80::1/10", "host-bits"),
        ];
        for (input, kind) in table {
            let err = input.parse::<Cidr>().unwrap_err();
            let got = match &err {
                CidrError::BadAddress(_) => "not-address",
                CidrError::BadPrefix(_) => "prefix",
                CidrError::PrefixTooLong { .. } => "too-long",
                CidrError::HostBitsSet { .. } => "host-bits",
            };
            assert_eq!(got, *kind, "{input}: {err}");
            assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
        }
        let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(err.to_string().contains("did you mean 10.0.0.0/8"), "{err}");
    }

    #[test]
    fn cidr_contains() {
        let table: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("::/0", "1.2.3.4", false),
            ("::/0", "2606:4700::1111", true),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
            ("1.2.3.4", "1.2.3.4", true),
            ("1.2.3.4", "1.2.3.5", false),
            ("10.0.0.0/8", "::ffff:10.0.0.1", false),
        ];
        for (net, ip, expected) in table {
            assert_eq!(
                cidr(net).contains(ip.parse().unwrap()),
                *expected,
                "{net} ∋ {ip}"
            );
        }
    }

    #[test]
    fn default_tables_have_no_host_bits() {
        for (c, _) in V4_DEFAULT_DENY.iter().chain(V6_DEFAULT_DENY) {
            assert_eq!(Cidr::new(c.network(), c.prefix_len()), Ok(*c), "{c}");
        }
    }

    #[test]
    fn default_policy_table() {
        let p = PeerPolicy::default();
        let table: &[(&str, &str)] = &[
            // Public addresses.
            ("8.8.8.8:53", "allow"),
            ("1.1.1.1:3478", "allow"),
            ("[2606:4700::1111]:443", "allow"),
            ("[::ffff:8.8.8.8]:53", "allow"),
            ("[64:ff9b::808:808]:53", "allow"),
            ("[2002:808:808::1]:53", "allow"),
            ("[2001:0:808:808::f7f7:f7f7]:53", "allow"),
            ("172.32.0.1:1", "allow"),
            ("100.128.0.1:1", "allow"),
            ("198.20.0.1:1", "allow"),
            ("192.0.1.1:1", "allow"),
            ("[2001:db9::1]:1", "allow"),
            ("[2001:3::1]:1", "allow"),
            // Port 0.
            ("8.8.8.8:0", "port-zero"),
            ("[2606:4700::1111]:0", "port-zero"),
            // Loopback.
            ("127.0.0.1:80", "loopback"),
            ("127.255.255.254:80", "loopback"),
            ("[::1]:80", "loopback"),
            // Unspecified.
            ("0.0.0.0:80", "unspecified"),
            ("0.1.2.3:80", "unspecified"),
            ("[::]:80", "unspecified"),
            // Link-local and cloud metadata.
            ("169.254.169.254:80", "link-local"),
            ("169.254.0.1:80", "link-local"),
            ("[fe80::1]:80", "link-local"),
            ("[febf:ffff::1]:80", "link-local"),
            // Private.
            ("10.1.2.3:80", "private"),
            ("172.16.0.1:80", "private"),
            ("172.31.255.255:80", "private"),
            ("192.168.1.1:80", "private"),
            ("[fc00::1]:80", "private"),
            ("[fd12:3456::1]:80", "private"),
            // CGNAT.
            ("100.64.0.1:80", "shared-cgnat"),
            ("100.127.255.255:80", "shared-cgnat"),
            // Multicast, broadcast, reserved.
            ("224.0.0.1:80", "multicast"),
            ("239.255.255.250:1900", "multicast"),
            ("[ff02::1]:80", "multicast"),
            ("255.255.255.255:80", "broadcast"),
            ("240.0.0.1:80", "reserved"),
            ("255.255.255.254:80", "reserved"),
            // IETF protocol assignments.
            ("192.0.0.8:80", "protocol-assignment"),
            // Documentation.
            ("192.0.2.1:80", "documentation"),
            ("198.51.100.1:80", "documentation"),
            ("203.0.113.1:80", "documentation"),
            ("[2001:db8::1]:80", "documentation"),
            // Benchmark.
            ("198.18.0.1:80", "benchmark"),
            ("198.19.255.255:80", "benchmark"),
            ("[2001:2::1]:80", "benchmark"),
            // Site-local, discard-only.
            ("[fec0::1]:80", "site-local"),
            ("[100::1]:80", "discard-only"),
            // IPv4-mapped.
            ("[::ffff:127.0.0.1]:80", "loopback"),
            ("[::ffff:10.1.2.3]:80", "private"),
            ("[::ffff:169.254.169.254]:80", "link-local"),
            ("[::ffff:0.0.0.0]:80", "unspecified"),
            ("[::ffff:255.255.255.255]:80", "broadcast"),
            // IPv4-compatible.
            ("[::127.0.0.1]:80", "loopback"),
            ("[::10.0.0.1]:80", "private"),
            ("[::0.0.0.2]:80", "unspecified"),
            // IPv4-translated.
            ("[::ffff:0:7f00:1]:80", "loopback"),
            ("[::ffff:0:808:808]:80", "allow"),
            // NAT64.
            ("[64:ff9b::a00:1]:80", "private"),
            ("[64:ff9b::7f00:1]:80", "loopback"),
            ("[64:ff9b::a9fe:a9fe]:80", "link-local"),
            ("[64:ff9b:1::a00:1]:80", "private"),
            ("[64:ff9b:1:ffff::c0a8:1]:80", "private"),
            // 6to4: v4 in bits 16..48.
            ("[2002:7f00:1::1]:80", "loopback"),
            ("[2002:a00:1::]:80", "private"),
            ("[2002:c0a8:101:1::1]:80", "private"),
            // Teredo: server in bits 32..64, client inverted in the last 32.
            ("[2001:0:a00:1::f7f7:f7f7]:80", "private"),
            ("[2001:0:808:808::80ff:fffe]:80", "loopback"),
            ("[2001:0:808:808::f5ff:fefe]:80", "private"),
        ];
        for (peer, expected) in table {
            assert_eq!(verdict(&p, peer), *expected, "{peer}");
        }
    }

    #[test]
    fn allow_overrides_default_deny() {
        let p = PeerPolicy::default()
            .allow(cidr("10.0.0.0/8"))
            .allow(cidr("fd00::/8"))
            .allow(cidr("169.254.1.1"));
        let table: &[(&str, &str)] = &[
            ("10.1.2.3:80", "allow"),
            ("[::ffff:10.1.2.3]:80", "allow"),
            ("[fd00::1]:80", "allow"),
            ("169.254.1.1:80", "allow"),
            ("169.254.169.254:80", "link-local"),
            ("192.168.1.1:80", "private"),
            ("[fc00::1]:80", "private"),
            ("10.1.2.3:0", "port-zero"),
            // NAT64 and 6to4 forms are not the same destination: not allowed.
            ("[64:ff9b::a00:1]:80", "private"),
            ("[2002:a00:1::]:80", "private"),
        ];
        for (peer, expected) in table {
            assert_eq!(verdict(&p, peer), *expected, "{peer}");
        }
    }

    #[test]
    fn operator_deny_beats_allow_and_defaults() {
        let p = PeerPolicy::default()
            .allow(cidr("10.0.0.0/8"))
            .deny(cidr("10.9.0.0/16"))
            .deny(cidr("8.8.8.0/24"))
            .deny(cidr("2606:4700::/32"));
        let table: &[(&str, &str)] = &[
            ("10.1.2.3:80", "allow"),
            ("10.9.1.1:80", "operator-deny"),
            ("8.8.8.8:53", "operator-deny"),
            ("8.8.4.4:53", "allow"),
            ("[2606:4700::1111]:443", "operator-deny"),
            // Denied through every embedding.
            ("[::ffff:8.8.8.8]:53", "operator-deny"),
            ("[::8.8.8.8]:53", "operator-deny"),
            ("[64:ff9b::808:808]:53", "operator-deny"),
            ("[2002:808:808::1]:53", "operator-deny"),
            ("[2001:0:808:808::f7f7:f7f7]:53", "operator-deny"),
            ("[2001:0:101:101::f7f7:f7f7]:53", "operator-deny"),
            ("[::ffff:10.9.0.1]:80", "operator-deny"),
        ];
        for (peer, expected) in table {
            assert_eq!(verdict(&p, peer), *expected, "{peer}");
        }
    }

    #[test]
    fn relay_addresses_denied_on_every_port() {
        let p = PeerPolicy::default().relay_addresses(vec![
            "1.2.3.4".parse().unwrap(),
            "2606:4700::5".parse().unwrap(),
            "::ffff:5.6.7.8".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ]);
        for port in [1, 80, 3478, 49152, 65535] {
            for peer in [
                "1.2.3.4",
                "[2606:4700::5]",
                "5.6.7.8",
                "[::ffff:1.2.3.4]",
                "[64:ff9b::102:304]",
            ] {
                assert_eq!(
                    verdict(&p, &format!("{peer}:{port}")),
                    "relay-address",
                    "{peer}:{port}"
                );
            }
            assert_eq!(verdict(&p, &format!("1.2.3.5:{port}")), "allow");
            assert_eq!(verdict(&p, &format!("127.0.0.1:{port}")), "relay-address");
        }
        assert_eq!(verdict(&p, "1.2.3.4:0"), "port-zero");
        // An explicit allow of a relay address wins (documented precedence).
        let p = p.allow(cidr("1.2.3.4"));
        assert_eq!(verdict(&p, "1.2.3.4:80"), "allow");
    }

    #[test]
    fn dangerous_loopback_switch() {
        let relay: Vec<IpAddr> = vec![
            "127.0.0.1".parse().unwrap(),
            "::1".parse().unwrap(),
            "8.8.8.8".parse().unwrap(),
        ];
        let off = PeerPolicy::default().relay_addresses(relay.clone());
        let on = off.clone().dangerous_allow_loopback_peers(true);
        let table: &[(&str, &str, &str)] = &[
            // peer, switch off, switch on
            ("127.0.0.1:3478", "relay-address", "allow"),
            ("127.0.0.2:3478", "loopback", "allow"),
            ("[::1]:3478", "relay-address", "allow"),
            ("[::ffff:127.0.0.1]:3478", "relay-address", "allow"),
            ("[::127.0.0.1]:3478", "relay-address", "allow"),
            ("[64:ff9b::7f00:2]:3478", "loopback", "allow"),
            ("8.8.8.8:3478", "relay-address", "relay-address"),
            ("10.0.0.1:80", "private", "private"),
            ("169.254.169.254:80", "link-local", "link-local"),
            ("[fe80::1]:80", "link-local", "link-local"),
            ("0.0.0.0:80", "unspecified", "unspecified"),
            ("[::]:80", "unspecified", "unspecified"),
            ("127.0.0.1:0", "port-zero", "port-zero"),
            // Teredo: loopback client (a relay address), private server.
            ("[2001:0:a00:1::80ff:fffe]:80", "relay-address", "private"),
            // Teredo: loopback client, relay's own server address.
            (
                "[2001:0:808:808::80ff:fffe]:80",
                "relay-address",
                "relay-address",
            ),
        ];
        for (peer, when_off, when_on) in table {
            assert_eq!(verdict(&off, peer), *when_off, "{peer} (off)");
            assert_eq!(verdict(&on, peer), *when_on, "{peer} (on)");
        }
        let on = on.deny(cidr("127.0.0.0/8"));
        assert_eq!(verdict(&on, "127.0.0.2:80"), "operator-deny");
    }

    #[test]
    fn labels_are_distinct() {
        let all = [
            DenyReason::PortZero,
            DenyReason::OperatorDeny,
            DenyReason::RelayAddress,
            DenyReason::Loopback,
            DenyReason::Unspecified,
            DenyReason::LinkLocal,
            DenyReason::Private,
            DenyReason::SharedCgnat,
            DenyReason::Multicast,
            DenyReason::Broadcast,
            DenyReason::Reserved,
            DenyReason::ProtocolAssignment,
            DenyReason::Documentation,
            DenyReason::Benchmark,
            DenyReason::SiteLocal,
            DenyReason::DiscardOnly,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), all.len());
        assert_eq!(
            DenyReason::Loopback.to_string(),
            "peer denied by policy: loopback"
        );
    }
}

//! Who the client is: the TCP peer, or — when the peer is one of
//! `trusted_proxies` — the right-most address of the one forwarding header
//! (`forwarded_header`, default `X-Forwarded-For`) that is not itself a
//! trusted proxy.
//!
//! ```text
//! peer 127.0.0.1 (trusted)  X-Forwarded-For: 1.2.3.4, 203.0.113.9
//!                                            ^client   ^added by nginx  → 203.0.113.9
//! peer 198.51.100.7 (not trusted), any header                           → 198.51.100.7
//! peer 127.0.0.1 (trusted), header "junk" or missing                    → 127.0.0.1 (counted)
//! ```
//!
//! Design decisions:
//! - One header, never several: proxies append to the header they know and
//!   pass the others from the client untouched, so reading a second header
//!   would let the client choose its address.
//! - The walk is right to left and stops at the first address that is not
//!   a trusted proxy: everything left of it was written by the client.
//! - A header the walk cannot read (a token that is not an IP address, more
//!   than [`MAX_HOPS`] trusted hops) gives the proxy's own address: a broken
//!   proxy configuration then shares one limit instead of letting anyone
//!   pick one. Such requests are counted (`onionrtc_signal_forwarded_malformed_total`).
//! - Handlers get the address one way: the [`ClientAddr`] extractor.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode};

use crate::state::SignalState;

/// At most this many header entries are examined (right to left).
pub const MAX_HOPS: usize = 32;

/// An IP network (`ADDRESS/PREFIX`, or one address): the relay's peer
/// policy type, shared.
pub use turn::policy::Cidr;

/// A forwarding header that is not a header name, or is RFC 7239's
/// `Forwarded` (its `for=` syntax is not read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected an HTTP header that holds addresses only, such as x-forwarded-for or x-real-ip \
     (RFC 7239 Forwarded is not supported)"
)]
pub struct HeaderNameError;

/// The trusted proxies and the header they write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRule {
    /// Peers whose header is believed.
    pub trusted: Vec<Cidr>,
    /// The one header read (lower case), e.g. `x-forwarded-for`.
    pub header: HeaderName,
}

impl Default for ForwardRule {
    fn default() -> Self {
        ForwardRule {
            trusted: Vec::new(),
            header: HeaderName::from_static("x-forwarded-for"),
        }
    }
}

/// What [`ForwardRule::resolve`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// The client's address.
    pub ip: IpAddr,
    /// The peer was trusted but its header could not be read.
    pub malformed: bool,
}

impl ForwardRule {
    /// A rule reading `header` (any case) from `trusted` peers.
    pub fn new(trusted: Vec<Cidr>, header: &str) -> Result<ForwardRule, HeaderNameError> {
        let header =
            HeaderName::from_bytes(header.trim().as_bytes()).map_err(|_| HeaderNameError)?;
        if header == "forwarded" {
            return Err(HeaderNameError);
        }
        Ok(ForwardRule { trusted, header })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        // IPv4-mapped peers (a dual-stack socket) count as IPv4.
        let ip = ip.to_canonical();
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> Resolved {
        let peer = peer.to_canonical();
        let own = Resolved {
            ip: peer,
            malformed: false,
        };
        if !self.is_trusted(peer) {
            return own;
        }
        let bad = Resolved {
            ip: peer,
            malformed: true,
        };
        // Several header lines are one list, in order.
        let mut values = Vec::new();
        for v in headers.get_all(&self.header) {
            match v.to_str() {
                Ok(s) => values.push(s),
                Err(_) => return bad,
            }
        }
        if values.is_empty() {
            // A trusted proxy that forwards nothing: the request is its own
            // (e.g. a local health check). Not malformed.
            return own;
        }
        let mut last_trusted = None;
        for (hops, token) in values.iter().rev().flat_map(|v| v.rsplit(',')).enumerate() {
            if hops >= MAX_HOPS {
                return bad;
            }
            let Some(ip) = parse_entry(token) else {
                return bad;
            };
            if !self.is_trusted(ip) {
                return Resolved {
                    ip,
                    malformed: false,
                };
            }
            last_trusted = Some(ip);
        }
        // Every hop is a trusted proxy: the left-most one is the client.
        Resolved {
            ip: last_trusted.unwrap_or(peer),
            malformed: false,
        }
    }
}

/// One entry of `X-Forwarded-For`: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`,
/// `1.2.3.4:5678` or `[2001:db8::1]:5678` (ports are dropped).
fn parse_entry(token: &str) -> Option<IpAddr> {
    let t = token.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = t.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|a| IpAddr::V6(a).to_canonical())
}

/// The client's address, for handlers: `ClientAddr(ip)`. Needs
/// `ConnectInfo<SocketAddr>` (the accept loop of [`crate::serve_state`]
/// sets it); counts unreadable headers from trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<SignalState> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SignalState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "no peer address\n"));
        };
        let r = state.config().forward.resolve(peer.ip(), &parts.headers);
        if r.malformed {
            state
                .inner
                .counters
                .forwarded_malformed
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(ClientAddr(r.ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn rule(trusted: &[&str]) -> ForwardRule {
        ForwardRule {
            trusted: trusted.iter().map(|s| cidr(s)).collect(),
            ..ForwardRule::default()
        }
    }

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        assert!(cidr("127.0.0.1/32").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1/32").contains(ip("127.0.0.2")));
        assert!(cidr("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.1")));
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(cidr("::1/128").contains(ip("::1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:1::9")));
        // One address is its host network.
        assert_eq!(cidr("127.0.0.1"), cidr("127.0.0.1/32"));
        // IPv4-mapped peers (a dual-stack socket) count as IPv4.
        let rule = ForwardRule::new(vec![cidr("127.0.0.1/32")], "x-forwarded-for").unwrap();
        assert!(rule.is_trusted(ip("::ffff:127.0.0.1")));
        let rule = ForwardRule::new(vec![cidr("::/0")], "x-forwarded-for").unwrap();
        assert!(!rule.is_trusted(ip("::ffff:127.0.0.1")));
        for bad in [
            "127.0.0.1/33",
            "::1/129",
            "10.0.0.1/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
            "/8",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let r = rule(&["127.0.0.1/32"]);
        let got = r.resolve(ip("198.51.100.7"), &xff(&["1.2.3.4"]));
        assert_eq!(got.ip, ip("198.51.100.7"));
        assert!(!got.malformed);
        // No trusted proxies at all: never believed, even from loopback.
        let got = rule(&[]).resolve(ip("127.0.0.1"), &xff(&["1.2.3.4"]));
        assert_eq!(got.ip, ip("127.0.0.1"));
    }

    #[test]
    fn right_most_untrusted_wins() {
        let r = rule(&["127.0.0.1/32", "::1/128", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        assert_eq!(
            r.resolve(peer, &xff(&["203.0.113.9"])).ip,
            ip("203.0.113.9")
        );
        // A client's own spoofed entry is left of the one nginx appended.
        assert_eq!(
            r.resolve(peer, &xff(&["1.2.3.4, 203.0.113.9"])).ip,
            ip("203.0.113.9")
        );
        // Chained trusted proxies are skipped.
        assert_eq!(
            r.resolve(peer, &xff(&["1.2.3.4, 203.0.113.9, 10.1.1.1"]))
                .ip,
            ip("203.0.113.9")
        );
        // Several header lines are one list.
        assert_eq!(
            r.resolve(peer, &xff(&["1.2.3.4", "203.0.113.9,10.1.1.1"]))
                .ip,
            ip("203.0.113.9")
        );
        // Junk left of the client's address is the client's business.
        assert_eq!(
            r.resolve(peer, &xff(&["junk, 203.0.113.9"])).ip,
            ip("203.0.113.9")
        );
        // Forms with ports and brackets.
        assert_eq!(
            r.resolve(peer, &xff(&["[2001:db8::7]:443"])).ip,
            ip("2001:db8::7")
        );
        assert_eq!(
            r.resolve(peer, &xff(&["[2001:db8::7]"])).ip,
            ip("2001:db8::7")
        );
        assert_eq!(
            r.resolve(peer, &xff(&["203.0.113.9:5555"])).ip,
            ip("203.0.113.9")
        );
        assert_eq!(
            r.resolve(peer, &xff(&["::ffff:203.0.113.9"])).ip,
            ip("203.0.113.9")
        );
        // Only trusted hops: the left-most.
        assert_eq!(
            r.resolve(peer, &xff(&["10.0.0.5, 127.0.0.1"])).ip,
            ip("10.0.0.5")
        );
        // No header from a trusted proxy: its own request.
        let got = r.resolve(peer, &HeaderMap::new());
        assert_eq!((got.ip, got.malformed), (peer, false));
        // Another header is never read.
        let mut other = HeaderMap::new();
        other.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        assert_eq!(r.resolve(peer, &other).ip, peer);
    }

    #[test]
    fn a_configured_header_replaces_the_default() {
        assert!(ForwardRule::new(vec![], "Forwarded").is_err());
        assert!(ForwardRule::new(vec![], "x forwarded").is_err());
        let Ok(r) = ForwardRule::new(vec![cidr("127.0.0.1/32")], "X-Real-IP") else {
            panic!("x-real-ip");
        };
        let mut h = xff(&["1.2.3.4"]);
        h.insert("x-real-ip", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(r.resolve(ip("127.0.0.1"), &h).ip, ip("203.0.113.9"));
    }

    #[test]
    fn malformed_headers_give_the_proxy() {
        let r = rule(&["127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        for bad in [
            "",
            "unknown",
            "1.2.3.4, ",
            "1.2.3.4, not-an-ip",
            "999.1.1.1",
            "fe80::1%eth0",
            "[2001:db8::1",
            "1.2.3.4 5.6.7.8",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                "x-forwarded-for",
                HeaderValue::from_str(bad).unwrap_or(HeaderValue::from_static("x")),
            );
            let got = r.resolve(peer, &h);
            assert_eq!((got.ip, got.malformed), (peer, true), "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap_or(HeaderValue::from_static("x")),
        );
        assert!(r.resolve(peer, &h).malformed);
        // Too many trusted hops.
        let long = vec!["127.0.0.1"; MAX_HOPS + 1].join(",");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(&long).unwrap_or(HeaderValue::from_static("x")),
        );
        assert!(r.resolve(peer, &h).malformed);
    }
}

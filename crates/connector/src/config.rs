//! [`ConnectorConfig`]: what the connector connects to, how, and its limits.
//! The URL forms are the command line contract of `onionrtc connect`:
//! `--relay tls://HOST:PORT|tcp://HOST:PORT`, `--web https://HOST:PORT|
//! http://HOST:PORT`, `--via direct|socks5://HOST:PORT|tor`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;

use crate::tor::TorOptions;

/// Where the TURN side listens when not told otherwise (UDP and TCP).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3479";
/// Where the web proxy listens when not told otherwise.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8081";

/// A configuration value that cannot be used. Each variant names the flag.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL is malformed or has the wrong scheme.
    #[error("invalid {flag} {value:?}: {reason}")]
    Url {
        /// The flag, e.g. `--relay`.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// What is expected.
        reason: &'static str,
    },
    /// A listen address is not a loopback address.
    #[error(
        "{flag} {addr} is not a loopback address: the connector only listens on \
         127.0.0.0/8 or ::1, so nobody else on the network can use it"
    )]
    NotLoopback {
        /// The flag.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// `--relay-spki` is not the base64 of 32 bytes.
    #[error("invalid --relay-spki {0:?}: expected the base64 SHA-256 of the certificate's SubjectPublicKeyInfo (44 characters)")]
    BadPin(String),
    /// `--tor-nodes` is not a known preset.
    #[error("invalid --tor-nodes {0:?}: expected any, europe or scandinavia")]
    BadNodes(String),
    /// A limit is zero or out of range.
    #[error("invalid {key}: {reason}")]
    Limit {
        /// The limit.
        key: &'static str,
        /// What is expected.
        reason: &'static str,
    },
}

fn url_error(flag: &'static str, value: &str, reason: &'static str) -> ConfigError {
    ConfigError::Url {
        flag,
        value: value.to_owned(),
        reason,
    }
}

/// A TCP endpoint upstream: host name or IP address, port, and whether the
/// stream is wrapped in TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether the stream is TLS (`tls://`, `https://`).
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets). A name is resolved
    /// by the SOCKS proxy in socks5/tor mode, never locally.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `tls://HOST:PORT` or `tcp://HOST:PORT` (`--relay`). The port
    /// defaults to 443 for tls:// and 3478 for tcp://.
    pub fn parse_relay(value: &str) -> Result<Endpoint, ConfigError> {
        let (scheme, rest) = value.split_once("://").ok_or_else(|| {
            url_error(
                "--relay",
                value,
                "expected tls://HOST:PORT or tcp://HOST:PORT",
            )
        })?;
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "tls" | "turns" => (true, 443),
            "tcp" | "turn" => (false, 3478),
            _ => {
                return Err(url_error(
                    "--relay",
                    value,
                    "the scheme must be tls:// (TURN over TLS) or tcp:// (TURN over TCP)",
                ))
            }
        };
        let (host, port) = split_authority("--relay", value, rest, default_port)?;
        Ok(Endpoint { tls, host, port })
    }

    /// Parses `https://HOST[:PORT]` or `http://HOST[:PORT]` (`--web`); a
    /// trailing `/` is accepted, any other path is not.
    pub fn parse_web(value: &str) -> Result<Endpoint, ConfigError> {
        let (scheme, rest) = value
            .split_once("://")
            .ok_or_else(|| url_error("--web", value, "expected https://HOST[:PORT]"))?;
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "https" => (true, 443),
            "http" => (false, 80),
            _ => {
                return Err(url_error(
                    "--web",
                    value,
                    "the scheme must be https:// or http://",
                ))
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_authority("--web", value, rest, default_port)?;
        Ok(Endpoint { tls, host, port })
    }

    /// `HOST:PORT`, with IPv6 addresses in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header value for a web upstream: the authority without
    /// the scheme's default port.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            }
        } else {
            self.authority()
        }
    }

    /// Whether the host is an onion address (`*.onion`): reached only
    /// through Tor, authenticated by the address itself.
    pub fn is_onion(&self) -> bool {
        self.host.ends_with(".onion")
    }

    /// The web origin, e.g. `https://call.example.org`.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host_header())
    }
}

/// Splits `HOST[:PORT]` (IPv6 in brackets) and checks the host.
fn split_authority(
    flag: &'static str,
    value: &str,
    rest: &str,
    default_port: u16,
) -> Result<(String, u16), ConfigError> {
    if rest.contains(['/', '?', '#', '@']) {
        return Err(url_error(
            flag,
            value,
            "only SCHEME://HOST:PORT is accepted (no path, query or user)",
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| url_error(flag, value, "unclosed '[' in an IPv6 address"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(url_error(flag, value, "bad IPv6 address in brackets"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| url_error(flag, value, "expected :PORT after ']'"))?,
            ),
        };
        (host.to_owned(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (rest.to_owned(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(url_error(flag, value, "the port must be 1-65535")),
        },
    };
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    if !(valid_name || host.parse::<IpAddr>().is_ok()) {
        return Err(url_error(flag, value, "bad host name"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tls" } else { "tcp" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// How upstream streams leave this machine (`--via`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Straight TCP connections (e.g. TLS to port 443 from a network that
    /// only lets TCP 443 out).
    Direct,
    /// Through a SOCKS5 proxy (an external tor, I2P's SOCKS proxy) at
    /// `HOST:PORT`, with fresh random credentials per flow.
    Socks5 {
        /// The proxy's host (usually 127.0.0.1).
        host: String,
        /// The proxy's port.
        port: u16,
    },
    /// Through Tor: embedded (arti) or a tor the connector launches and
    /// stops ([`TorOptions::binary`]).
    Tor(TorOptions),
}

impl Via {
    /// Parses `direct`, `socks5://HOST:PORT` or `tor` (with default
    /// [`TorOptions`]).
    pub fn parse(value: &str) -> Result<Via, ConfigError> {
        match value {
            "direct" => Ok(Via::Direct),
            "tor" => Ok(Via::Tor(TorOptions::default())),
            _ => {
                let Some(rest) = value
                    .strip_prefix("socks5://")
                    .or_else(|| value.strip_prefix("socks5h://"))
                else {
                    return Err(url_error(
                        "--via",
                        value,
                        "expected direct, socks5://HOST:PORT or tor",
                    ));
                };
                let (host, port) = split_authority("--via", value, rest, 9050)?;
                Ok(Via::Socks5 { host, port })
            }
        }
    }

    /// `direct`, `socks5` or `tor`: the `mode` of `/connector.json`.
    pub fn mode(&self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Socks5 { .. } => "socks5",
            Via::Tor(_) => "tor",
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Direct => f.write_str("direct"),
            Via::Socks5 { host, port } => {
                if host.contains(':') {
                    write!(f, "socks5://[{host}]:{port}")
                } else {
                    write!(f, "socks5://{host}:{port}")
                }
            }
            Via::Tor(o) if o.embedded() => f.write_str("tor (embedded)"),
            Via::Tor(o) => write!(
                f,
                "tor ({}, nodes: {})",
                o.launched_binary().display(),
                o.nodes
            ),
        }
    }
}

/// How the relay's TLS certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RelayTrust {
    /// Mozilla's root store (built in) and the relay's host name.
    #[default]
    WebPki,
    /// Only the CA certificates (PEM) in this file, and the host name.
    CaFile(PathBuf),
    /// The SHA-256 of the certificate's SubjectPublicKeyInfo must be this
    /// (host name and expiry are not checked; the handshake signature is).
    SpkiSha256([u8; 32]),
    /// As [`RelayTrust::SpkiSha256`], any of these keys (a site's
    /// `/.well-known/onionrtc.json` pins its current and next key).
    SpkiPins(Vec<[u8; 32]>),
}

impl RelayTrust {
    /// Parses `--relay-spki` (base64 SHA-256, the form of Chromium's
    /// `--ignore-certificate-errors-spki-list`).
    pub fn parse_spki(value: &str) -> Result<RelayTrust, ConfigError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| ConfigError::BadPin(value.to_owned()))?;
        let pin: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ConfigError::BadPin(value.to_owned()))?;
        Ok(RelayTrust::SpkiSha256(pin))
    }
}

/// Bounds on flows, queues and waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// TURN flows (UDP 5-tuples and TCP connections) at once. Default 1000.
    pub max_flows: usize,
    /// Client datagrams queued per flow (while dialling, or while the
    /// upstream is slow); beyond, datagrams are dropped. Default 256.
    pub flow_queue: usize,
    /// A UDP flow (or TCP connection) without any datagram (bytes) from its
    /// client for this long is closed. Default 120 s: during a call
    /// browsers send media and ICE consent checks (RFC 7675, at most every
    /// few seconds) through the allocation, so only an abandoned allocation
    /// is silent this long.
    pub idle_timeout: Duration,
    /// A STUN request from the client that is unanswered on an open
    /// upstream for this long marks the upstream dead: it is closed and
    /// dialled again. Default 10 s (UDP TURN clients retransmit for about
    /// 40 s, so the request still reaches the new upstream).
    pub dead_timeout: Duration,
    /// How long one dial (TCP, SOCKS, TLS handshake) may take. Default 30 s
    /// (a Tor circuit is built on demand).
    pub dial_timeout: Duration,
    /// Web proxy connections at once. Default 256.
    pub max_web_connections: usize,
    /// Flows without an authenticated allocation yet (from the client's
    /// Allocate until the relay's success response to one), at once; more
    /// are refused. Default 64: a group call opens about ten at once, and
    /// a web page flooding the TURN port with Allocates can hold at most
    /// this many upstream connections (the relay's per-address cap is
    /// shared with the user's own flows). Never more than `max_flows`.
    pub max_pending_flows: usize,
    /// A flow whose upstream carried no success response to Allocate
    /// within this long of connecting is closed. Default 20 s (a Tor
    /// circuit, TLS and two Allocates take seconds).
    pub auth_timeout: Duration,
    /// How long a browser may take to send a request's headers to the web
    /// proxy, and stay idle between requests. Default 10 s.
    pub web_header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: 1000,
            flow_queue: 256,
            idle_timeout: Duration::from_secs(120),
            dead_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(30),
            max_web_connections: 256,
            max_pending_flows: 64,
            auth_timeout: Duration::from_secs(20),
            web_header_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let limit = |key, reason| Err(ConfigError::Limit { key, reason });
        if self.max_flows == 0 || self.max_flows > 100_000 {
            return limit("max_flows", "must be 1-100000");
        }
        if self.flow_queue == 0 || self.flow_queue > 65_536 {
            return limit("flow_queue", "must be 1-65536");
        }
        if self.max_web_connections == 0 || self.max_web_connections > 65_536 {
            return limit("max_web_connections", "must be 1-65536");
        }
        if self.max_pending_flows == 0 || self.max_pending_flows > 100_000 {
            return limit("max_pending_flows", "must be 1-100000");
        }
        for (key, d) in [
            ("auth_timeout", self.auth_timeout),
            ("web_header_timeout", self.web_header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("dead_timeout", self.dead_timeout),
            ("dial_timeout", self.dial_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(86_400) {
                return limit(key, "must be between 1 ms and 1 day");
            }
        }
        Ok(())
    }
}

/// Everything the connector needs. Build it with [`ConnectorConfig::new`]
/// and set fields; [`Connector::start`](crate::Connector::start) validates.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// The relay's TURN-over-TLS or TURN-over-TCP listener.
    pub relay: Endpoint,
    /// The signaling site to proxy, if any.
    pub web: Option<Endpoint>,
    /// How upstream streams are made.
    pub via: Via,
    /// TURN listeners (UDP and TCP on the same port; port 0 picks one).
    pub listen: SocketAddr,
    /// The web proxy's listener (only with `web`).
    pub web_listen: SocketAddr,
    /// How the relay's certificate is checked (tls:// only).
    pub relay_trust: RelayTrust,
    /// CA certificates (PEM) trusted for the web site besides Mozilla's
    /// roots (`--ca`); `None`: the relay's CA file, if any.
    pub web_ca: Option<PathBuf>,
    /// Bounds.
    pub limits: Limits,
    /// Circuit racing, spares and health thresholds.
    pub circuits: Circuits,
}

/// Circuit racing and hopping (docs/connector.md "Circuit racing and
/// hopping").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuits {
    /// Upstreams raced at a flow's start (`--race K`; 1: no race). `None`:
    /// [`DEFAULT_RACE`] through Tor or SOCKS, 1 direct (there is only one
    /// path to choose).
    pub race: Option<usize>,
    /// Spare upstreams dialled when a flow degrades, at most (0: none; never
    /// more than the race width, none without racing). Default 3.
    pub spares: usize,
    /// The client sent and nothing came back from the relay for this long:
    /// the circuit stalled. Default 2 s.
    pub stall: Duration,
    /// The smoothed RTT of a flow's TURN transactions over this many times
    /// its first RTTs (and over them plus `rtt_margin`): degraded. Default 4.
    pub rtt_factor: u32,
    /// See `rtt_factor`. Default 500 ms.
    pub rtt_margin: Duration,
    /// A degraded flow whose client sent nothing for this long is closed
    /// (the browser moved to its new pair). Default 5 s.
    pub degraded_idle: Duration,
}

/// Upstreams raced per flow through Tor or SOCKS by default.
pub const DEFAULT_RACE: usize = 3;
/// The largest `--race`.
pub const MAX_RACE: usize = 8;

impl Default for Circuits {
    fn default() -> Self {
        Circuits {
            race: None,
            spares: DEFAULT_RACE,
            stall: Duration::from_secs(2),
            rtt_factor: 4,
            rtt_margin: Duration::from_millis(500),
            degraded_idle: Duration::from_secs(5),
        }
    }
}

impl Circuits {
    /// The race width along `via`.
    pub fn race_for(&self, via: &Via) -> usize {
        self.race.unwrap_or(match via {
            Via::Direct => 1,
            _ => DEFAULT_RACE,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let limit = |key, reason| Err(ConfigError::Limit { key, reason });
        if self.race.is_some_and(|k| k == 0 || k > MAX_RACE) {
            return limit("--race", "must be 1-8");
        }
        if self.spares > MAX_RACE {
            return limit("spares", "must be 0-8");
        }
        if self.rtt_factor < 2 || self.rtt_factor > 100 {
            return limit("rtt_factor", "must be 2-100");
        }
        for (key, d) in [
            ("stall", self.stall),
            ("rtt_margin", self.rtt_margin),
            ("degraded_idle", self.degraded_idle),
        ] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return limit(key, "must be between 1 ms and 1 hour");
            }
        }
        Ok(())
    }
}

impl ConnectorConfig {
    /// A configuration for `relay` with the defaults: no web proxy, direct,
    /// 127.0.0.1:3479, 127.0.0.1:8081, Mozilla's roots.
    pub fn new(relay: Endpoint) -> ConnectorConfig {
        ConnectorConfig {
            relay,
            web: None,
            via: Via::Direct,
            listen: SocketAddr::from(([127, 0, 0, 1], 3479)),
            web_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            relay_trust: RelayTrust::WebPki,
            web_ca: None,
            limits: Limits::default(),
            circuits: Circuits::default(),
        }
    }

    /// Checks what depends on several fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() {
            return Err(ConfigError::NotLoopback {
                flag: "--listen",
                addr: self.listen,
            });
        }
        if self.web.is_some() && !self.web_listen.ip().is_loopback() {
            return Err(ConfigError::NotLoopback {
                flag: "--web-listen",
                addr: self.web_listen,
            });
        }
        self.limits.validate()?;
        self.circuits.validate()
    }

    /// Warnings the user must see: plain-text upstreams whose metadata a
    /// Tor exit (or anyone on the path) can read.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.relay.tls && !self.relay.is_onion() {
            w.push(format!(
                "--relay {} is plain TCP: a Tor exit or anyone on the path can read TURN \
                 usernames, peer addresses and the relay's answers (media stays DTLS-SRTP \
                 encrypted); use tls://",
                self.relay
            ));
        }
        if let Some(web) = &self.web {
            if !web.tls && !web.is_onion() {
                w.push(format!(
                    "--web {} is plain HTTP: a Tor exit or anyone on the path can read and \
                     change the web app, the signaling messages and the TURN credentials; \
                     use https://",
                    web.origin()
                ));
            }
        }
        if self.relay.tls && self.relay_trust == RelayTrust::WebPki {
            if let Ok(ip) = self.relay.host.parse::<IpAddr>() {
                w.push(format!(
                    "--relay names the IP address {ip}: its certificate must list that \
                     address; --relay-spki or --relay-ca may be needed"
                ));
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn race_width() {
        let c = Circuits::default();
        assert_eq!(c.race_for(&Via::Direct), 1);
        assert_eq!(
            c.race_for(&Via::parse("socks5://127.0.0.1:9050").unwrap()),
            3
        );
        assert_eq!(c.race_for(&Via::parse("tor").unwrap()), 3);
        let one = Circuits {
            race: Some(1),
            ..Circuits::default()
        };
        assert_eq!(one.race_for(&Via::parse("tor").unwrap()), 1);
        let mut config = ConnectorConfig::new(Endpoint::parse_relay("tls://r.example").unwrap());
        for (k, ok) in [(0, false), (1, true), (8, true), (9, false)] {
            config.circuits.race = Some(k);
            assert_eq!(config.validate().is_ok(), ok, "--race {k}");
        }
    }

    #[test]
    fn relay_urls() {
        let e = Endpoint::parse_relay("tls://Relay.Example.org:443").unwrap();
        assert_eq!(
            e,
            Endpoint {
                tls: true,
                host: "relay.example.org".into(),
                port: 443
            }
        );
        assert_eq!(e.to_string(), "tls://relay.example.org:443");
        let e = Endpoint::parse_relay("tcp://[::1]:3478").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.authority(), "[::1]:3478");
        assert_eq!(Endpoint::parse_relay("tls://h").unwrap().port, 443);
        for bad in [
            "udp://h:1",
            "h:1",
            "tls://:1",
            "tls://h:0",
            "tls://h:x",
            "tls://h:1/p",
            "tls://u@h:1",
            "tls://[::1:1",
            "tls://h h:1",
        ] {
            assert!(Endpoint::parse_relay(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn web_urls() {
        let e = Endpoint::parse_web("https://call.example.org/").unwrap();
        assert_eq!(e.port, 443);
        assert_eq!(e.host_header(), "call.example.org");
        assert_eq!(e.origin(), "https://call.example.org");
        let e = Endpoint::parse_web("http://127.0.0.1:8080").unwrap();
        assert_eq!(e.host_header(), "127.0.0.1:8080");
        assert_eq!(e.origin(), "http://127.0.0.1:8080");
        assert!(Endpoint::parse_web("https://h/app").is_err());
        assert!(Endpoint::parse_web("ws://h").is_err());
    }

    #[test]
    fn via() {
        assert_eq!(Via::parse("direct").unwrap(), Via::Direct);
        assert_eq!(
            Via::parse("socks5://127.0.0.1:9050").unwrap(),
            Via::Socks5 {
                host: "127.0.0.1".into(),
                port: 9050
            }
        );
        assert_eq!(Via::parse("tor").unwrap().mode(), "tor");
        assert!(Via::parse("socks4://h:1").is_err());
        assert!(Via::parse("http://h:1").is_err());
    }

    #[test]
    fn spki_pin() {
        let pin = "aMTOpr5xZaUPJoGENzQNUFEotpNEVuJM8OWABnP/SXo=";
        assert!(matches!(
            RelayTrust::parse_spki(pin),
            Ok(RelayTrust::SpkiSha256(_))
        ));
        assert!(RelayTrust::parse_spki("aGVsbG8=").is_err());
        assert!(RelayTrust::parse_spki("not base64!").is_err());
    }

    #[test]
    fn loopback_only_and_warnings() {
        let mut c = ConnectorConfig::new(Endpoint::parse_relay("tcp://relay:3478").unwrap());
        assert!(c.validate().is_ok());
        assert_eq!(c.warnings().len(), 1);
        c.listen = "0.0.0.0:3479".parse().unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::NotLoopback { .. })));
        c.listen = "[::1]:3479".parse().unwrap();
        c.web = Some(Endpoint::parse_web("http://site").unwrap());
        c.web_listen = "192.0.2.1:8081".parse().unwrap();
        assert!(c.validate().is_err());
        assert_eq!(c.warnings().len(), 2);
        c.limits.idle_timeout = Duration::ZERO;
        c.web_listen = "127.0.0.1:8081".parse().unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::Limit { .. })));
    }
}

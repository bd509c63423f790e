//! The relay's configuration: the `[relay]` table of the TOML file, command
//! line overrides and the `ONIONRTC_AUTH_SECRET` environment variable,
//! resolved into one validated [`RelayConfig`].
//!
//! ## Loading
//! [`RelayConfig::load`] is the whole pipeline the binary runs:
//!
//! 1. [`RelayConfig::from_file`] (or [`RelayConfig::defaults`] without a
//!    file) parses the file and checks every value on its own: a typo in a
//!    key, a bad IP address, URL, CIDR or port range is an error naming the
//!    key and the value;
//! 2. [`RelayConfig::apply_overrides`] replaces values with command line
//!    flags;
//! 3. [`RelayConfig::apply_env_secret`] puts `ONIONRTC_AUTH_SECRET` first in
//!    the shared-secret list;
//! 4. [`RelayConfig::validate`] checks what depends on several keys (there
//!    are credentials, a relay address, TLS files for `tls://` listeners),
//!    builds the credentials and loads the TLS certificate and key.
//!
//! Validation runs last, so a file without credentials plus `--user` is
//! fine. The key names are a contract with operators' files; the
//! `docs/configuration.md` table lists them all.
//!
//! ## Secrets
//! Passwords and shared secrets are held as [`Secret`], whose `Debug` and
//! `Display` print `<redacted>`; [`RelayConfig::redacted_toml`] prints the
//! resolved configuration without them.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use turn::auth::{Credentials, CredentialsError};
use turn::policy::{Cidr, CidrError, PeerPolicy};
use turn::server::{Alternate, Limits, Redirect, RelayAddresses, ServerConfig};
use turn::Transport;

use crate::tls::{self, TlsError};

/// The environment variable holding the current TURN REST shared secret.
pub const ENV_AUTH_SECRET: &str = "ONIONRTC_AUTH_SECRET";
/// Listeners when `listen` is absent.
pub const DEFAULT_LISTEN: [&str; 2] = ["udp://127.0.0.1:3478", "tcp://127.0.0.1:3478"];
/// Realm when `realm` is absent.
pub const DEFAULT_REALM: &str = "onionrtc";
/// Relay port range when `relay_ports` is absent.
pub const DEFAULT_RELAY_PORTS: RangeInclusive<u16> = 49152..=65535;
/// Smallest accepted `max_frame`: one Ethernet MTU.
pub const MIN_MAX_FRAME: usize = 1500;
/// Largest accepted `max_frame`: a 65535-byte payload plus a 20-byte header.
pub const MAX_MAX_FRAME: usize = 65555;
/// Largest accepted `busy_poll_us` (a millisecond: beyond it a spinning
/// shard is a busy loop, not a short wait).
const MAX_BUSY_POLL_US: u32 = 1000;
/// Largest accepted `threads`.
pub const MAX_THREADS: usize = 1024;
/// What [`Secret`] and [`RelayConfig::redacted_toml`] print for a secret.
pub const REDACTED: &str = "<redacted>";

/// Why a configuration could not be loaded. Every variant names the key (or
/// flag) and, unless it is a secret, the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong
    /// type (the message names the key, its line and column).
    #[error("invalid configuration {origin}: {source}")]
    Parse {
        /// The file name, or "text" for [`RelayConfig::from_toml_str`].
        origin: String,
        /// The TOML error.
        source: Box<toml::de::Error>,
    },
    /// A value is malformed or out of range.
    #[error("invalid {key} {value:?}: {reason}")]
    Invalid {
        /// The key or flag.
        key: &'static str,
        /// The value as given (never a secret).
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// An entry of `allowed_peers` or `denied_peers` is not a CIDR.
    #[error("invalid {key} entry: {source}")]
    Cidr {
        /// The key.
        key: &'static str,
        /// The CIDR error (it quotes the entry).
        source: CidrError,
    },
    /// A `--user` flag is not `NAME:PASSWORD` (the value is not repeated: it
    /// may hold a password).
    #[error("invalid --user: {0} (expected NAME:PASSWORD; the value is not shown)")]
    BadUserFlag(&'static str),
    /// No relay address: `relay_ip` is absent and no listener has a specific
    /// IPv4 address.
    #[error(
        "relay_ip is not set and cannot be derived from the listen addresses ({listen}): \
         set relay_ip (or --relay-ip) to the IPv4 address relay sockets bind"
    )]
    MissingRelayIp {
        /// The listeners, comma-separated.
        listen: String,
    },
    /// Neither static users nor shared secrets.
    #[error("no credentials: set users or auth_secrets (or ONIONRTC_AUTH_SECRET)")]
    NoCredentials,
    /// A `tls://` listener without certificate or key.
    #[error("listener {listener} needs tls_cert and tls_key (or --tls-cert and --tls-key)")]
    MissingTls {
        /// The listener.
        listener: String,
    },
    /// Only one of `tls_cert` and `tls_key` is set.
    #[error("{present} is set but {missing} is not: give both or neither")]
    HalfTls {
        /// The key that is set.
        present: &'static str,
        /// The key that is missing.
        missing: &'static str,
    },
    /// `external_ip6` without `relay_ip6`.
    #[error("external_ip6 is set but relay_ip6 is not: IPv6 relaying needs relay_ip6")]
    ExternalWithoutRelayIp6,
    /// The credentials were refused (empty realm, bad user name, password
    /// rejected by SASLprep, empty secret).
    #[error("invalid credentials: {0}")]
    Credentials(#[from] CredentialsError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `ONIONRTC_AUTH_SECRET` is set but not valid UTF-8.
    #[error("ONIONRTC_AUTH_SECRET is not valid UTF-8")]
    EnvNotUnicode,
}

fn invalid(key: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.into(),
        reason: reason.into(),
    }
}

/// A password or shared secret. `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for building credentials; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenProto {
    /// STUN/TURN over UDP.
    Udp,
    /// STUN/TURN over TCP (RFC 8656 §3.1, RFC 6062 control connections).
    Tcp,
    /// STUN/TURN over TLS over TCP.
    Tls,
}

impl ListenProto {
    /// The URL scheme: `udp`, `tcp` or `tls`.
    pub const fn scheme(self) -> &'static str {
        match self {
            ListenProto::Udp => "udp",
            ListenProto::Tcp => "tcp",
            ListenProto::Tls => "tls",
        }
    }

    /// Whether the listener is a TCP socket (TCP or TLS).
    pub const fn is_stream(self) -> bool {
        !matches!(self, ListenProto::Udp)
    }
}

/// One listener: `udp://127.0.0.1:3478`, `tcp://[::1]:3478`,
/// `tls://0.0.0.0:5349`. Host names are not accepted; port 0 asks the system
/// for a free port (tests: the relay logs the port it got).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listen {
    /// Transport.
    pub proto: ListenProto,
    /// Address and port to bind.
    pub addr: SocketAddr,
}

impl Listen {
    fn parse(key: &'static str, s: &str) -> Result<Self, ConfigError> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(invalid(
                key,
                s,
                "expected udp://IP:PORT, tcp://IP:PORT or tls://IP:PORT",
            ));
        };
        let proto = match scheme {
            "udp" => ListenProto::Udp,
            "tcp" => ListenProto::Tcp,
            "tls" => ListenProto::Tls,
            _ => {
                return Err(invalid(
                    key,
                    s,
                    format!("unknown scheme {scheme:?}: the scheme must be udp, tcp or tls"),
                ))
            }
        };
        let addr: SocketAddr = rest.parse().map_err(|_| {
            invalid(
                key,
                s,
                "the address must be IP:PORT such as 127.0.0.1:3478 or [::1]:3478 \
                 (host names are not resolved)",
            )
        })?;
        Ok(Listen { proto, addr })
    }
}

impl FromStr for Listen {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Listen::parse("listen", s)
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.proto.scheme(), self.addr)
    }
}

/// The TLS certificate chain and private key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Command line overrides: a set flag replaces the file's value; a non-empty
/// `listen` or `users` list replaces the whole list; a `true` switch turns
/// the setting on. `Debug` does not show the passwords in `users`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen URL` (repeatable).
    pub listen: Vec<String>,
    /// `--user NAME:PASSWORD` (repeatable).
    pub users: Vec<String>,
    /// `--realm`.
    pub realm: Option<String>,
    /// `--relay-ip`.
    pub relay_ip: Option<String>,
    /// `--relay-ip6`.
    pub relay_ip6: Option<String>,
    /// `--external-ip`.
    pub external_ip: Option<String>,
    /// `--external-ip6`.
    pub external_ip6: Option<String>,
    /// `--relay-ports A-B`.
    pub relay_ports: Option<String>,
    /// `--metrics ADDR`.
    pub metrics: Option<String>,
    /// `--tls-cert` (relative to the working directory).
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` (relative to the working directory).
    pub tls_key: Option<PathBuf>,
    /// `--dangerous-allow-loopback-peers`.
    pub dangerous_allow_loopback_peers: bool,
    /// `--log-client-addresses`.
    pub log_client_addresses: bool,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self
            .users
            .iter()
            .map(|u| u.split_once(':').map_or("?", |(name, _)| name))
            .collect();
        f.debug_struct("Overrides")
            .field("listen", &self.listen)
            .field("users", &users)
            .field("realm", &self.realm)
            .field("relay_ip", &self.relay_ip)
            .field("relay_ip6", &self.relay_ip6)
            .field("external_ip", &self.external_ip)
            .field("external_ip6", &self.external_ip6)
            .field("relay_ports", &self.relay_ports)
            .field("metrics", &self.metrics)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field(
                "dangerous_allow_loopback_peers",
                &self.dangerous_allow_loopback_peers,
            )
            .field("log_client_addresses", &self.log_client_addresses)
            .finish()
    }
}

/// The whole configuration file: `[relay]` and the tables of other
/// subcommands, kept opaque here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    relay: Option<RelayFile>,
    /// Accepted and left to `onionrtc serve`.
    #[serde(rename = "serve")]
    _serve: Option<toml::Table>,
    /// Accepted and left to `onionrtc serve`.
    #[serde(rename = "sip")]
    _sip: Option<toml::Table>,
}

/// The `[relay]` table as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayFile {
    listen: Option<Vec<String>>,
    realm: Option<String>,
    relay_ip: Option<String>,
    relay_ip6: Option<String>,
    external_ip: Option<String>,
    external_ip6: Option<String>,
    relay_ports: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    users: Option<BTreeMap<String, String>>,
    auth_secrets: Option<Vec<String>>,
    max_allocations_per_user: Option<u32>,
    max_allocations_per_static_user: Option<u32>,
    max_allocations_per_ip: Option<u32>,
    max_allocations_total: Option<u32>,
    max_bytes_per_sec_per_allocation: Option<u64>,
    max_bytes_per_sec_total: Option<u64>,
    allowed_peers: Option<Vec<String>>,
    denied_peers: Option<Vec<String>>,
    dangerous_allow_loopback_peers: Option<bool>,
    metrics: Option<String>,
    log_client_addresses: Option<bool>,
    software: Option<bool>,
    max_connections: Option<u32>,
    max_connections_per_ip: Option<u32>,
    handshake_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_frame: Option<usize>,
    tcp_relay: Option<bool>,
    mobility: Option<bool>,
    threads: Option<usize>,
    busy_poll_us: Option<u32>,
    unauthenticated_rate: Option<u32>,
    unauthenticated_burst: Option<u32>,
    default_lifetime_secs: Option<u64>,
    max_lifetime_secs: Option<u64>,
    alternate_servers: Option<Vec<String>>,
    redirect_above_allocations: Option<u32>,
    control_socket: Option<PathBuf>,
}

/// The resolved relay configuration the driver runs with. Build it with
/// [`RelayConfig::load`] (or the steps it is made of); call
/// [`validate`](Self::validate) before use if you build it step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Listeners.
    pub listen: Vec<Listen>,
    /// REALM of the long-term credentials.
    pub realm: String,
    /// IPv4 address relay sockets bind (derived from the first specific
    /// IPv4 listener when not set; `0.0.0.0` until validated means unset).
    pub relay_ip: IpAddr,
    /// IPv6 address relay sockets bind (dual-stack allocations).
    pub relay_ip6: Option<IpAddr>,
    /// IPv4 address advertised instead of `relay_ip` (behind NAT).
    pub external_ip: Option<IpAddr>,
    /// IPv6 address advertised instead of `relay_ip6`.
    pub external_ip6: Option<IpAddr>,
    /// Relay socket ports.
    pub relay_ports: RangeInclusive<u16>,
    /// TLS certificate and key, for `tls://` listeners.
    pub tls: Option<TlsFiles>,
    /// Static long-term users, sorted by name.
    pub users: Vec<(String, Secret)>,
    /// TURN REST shared secrets; all accepted, the first is current.
    pub auth_secrets: Vec<Secret>,
    /// Allocations per TURN REST username (one browser session).
    pub max_allocations_per_user: u32,
    /// Allocations per static user; 0: no per-user limit.
    pub max_allocations_per_static_user: u32,
    /// Allocations per client IP address.
    pub max_allocations_per_ip: u32,
    /// Allocations in total.
    pub max_allocations_total: u32,
    /// Relayed payload bytes per second per allocation and direction
    /// (coturn's `max-bps`); 0: no limit.
    pub max_bytes_per_sec_per_allocation: u64,
    /// Relayed payload bytes per second of the relay per direction
    /// (coturn's `bps-capacity`); 0: no limit.
    pub max_bytes_per_sec_total: u64,
    /// Networks allowed despite the default deny list.
    pub allowed_peers: Vec<Cidr>,
    /// Extra networks refused.
    pub denied_peers: Vec<Cidr>,
    /// **Dangerous**: allow loopback peers (tests only).
    pub dangerous_allow_loopback_peers: bool,
    /// Prometheus endpoint; `None` is off.
    pub metrics: Option<SocketAddr>,
    /// Log client addresses in clear (privacy: masked unless true).
    pub log_client_addresses: bool,
    /// Send a SOFTWARE attribute.
    pub software: bool,
    /// TCP/TLS client connections in total.
    pub max_connections: u32,
    /// TCP/TLS client connections per client IP address.
    pub max_connections_per_ip: u32,
    /// Time for a stream to finish its TLS handshake or first STUN message.
    pub handshake_timeout: Duration,
    /// Time a stream without allocation or traffic stays open.
    pub idle_timeout: Duration,
    /// Largest STUN or ChannelData frame accepted on streams, in bytes.
    pub max_frame: usize,
    /// Accept RFC 6062 TCP allocations.
    pub tcp_relay: bool,
    /// RFC 8016 mobility: MOBILITY-TICKETs for clients that ask, and
    /// allocations that follow them to a new 5-tuple.
    pub mobility: bool,
    /// Worker threads (resolved: never 0).
    pub threads: usize,
    /// After a loop turn that had work, each shard polls its sockets
    /// without sleeping for this long before it blocks (0: off). Cuts the
    /// wake-up latency of a packet at the price of CPU spent spinning.
    pub busy_poll_us: u32,
    /// Unauthenticated answers per second per source.
    pub unauthenticated_rate: u32,
    /// Burst of unauthenticated answers per source.
    pub unauthenticated_burst: u32,
    /// Allocation lifetime when the client asks for none.
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted.
    pub max_lifetime: Duration,
    /// Relays new allocations are sent to (300 ALTERNATE-SERVER, RFC 8489)
    /// when this one drains or is above `redirect_above_allocations`; each
    /// client transport goes to an alternate of the same transport.
    pub alternate_servers: Vec<Listen>,
    /// Redirect new allocations when this many exist; 0: never for load.
    pub redirect_above_allocations: u32,
    /// The control socket (`onionrtc ctl`); `None`: none.
    pub control_socket: Option<PathBuf>,
    /// Whether `relay_ip` was derived from `listen` (and follows it when
    /// `--listen` replaces the listeners).
    relay_ip_derived: bool,
}

/// The number of CPU cores, at least 1.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn parse_ip(key: &'static str, s: &str, v6: bool) -> Result<IpAddr, ConfigError> {
    let ip: IpAddr = s
        .parse()
        .map_err(|_| invalid(key, s, "not an IP address (host names are not resolved)"))?;
    let (want, other_key) = if v6 {
        ("an IPv6", "the IPv4 key")
    } else {
        ("an IPv4", "the IPv6 key")
    };
    if ip.is_ipv6() != v6 {
        return Err(invalid(
            key,
            s,
            format!("not {want} address (use {other_key})"),
        ));
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(invalid(
            key,
            s,
            format!("must be a specific unicast address, not {ip}"),
        ));
    }
    if let IpAddr::V6(a) = ip {
        if a.to_ipv4_mapped().is_some() {
            return Err(invalid(key, s, "an IPv4-mapped address: use the IPv4 key"));
        }
    }
    Ok(ip)
}

fn parse_ports(key: &'static str, s: &str) -> Result<RangeInclusive<u16>, ConfigError> {
    let reason = "expected START-END with ports 1..=65535, such as 49152-65535";
    let (a, b) = s.split_once('-').ok_or_else(|| invalid(key, s, reason))?;
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p != 0);
    let (Some(start), Some(end)) = (port(a), port(b)) else {
        return Err(invalid(key, s, reason));
    };
    if start > end {
        return Err(invalid(
            key,
            s,
            format!("the start port {start} is above the end port {end}"),
        ));
    }
    Ok(start..=end)
}

fn parse_metrics(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse::<SocketAddr>().map_err(|_| {
        invalid(
            key,
            s,
            "expected IP:PORT such as 127.0.0.1:9641 (host names are not resolved)",
        )
    })
}

fn parse_realm(key: &'static str, s: &str) -> Result<String, ConfigError> {
    // RFC 8489 §14.9: fewer than 128 characters.
    if s.is_empty() || s.chars().count() > 127 {
        return Err(invalid(key, s, "the realm must have 1 to 127 characters"));
    }
    Ok(s.to_owned())
}

fn parse_cidrs(key: &'static str, list: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|source| ConfigError::Cidr { key, source })
        })
        .collect()
}

fn parse_listen_list(key: &'static str, list: &[String]) -> Result<Vec<Listen>, ConfigError> {
    if list.is_empty() {
        return Err(invalid(key, "[]", "give at least one listener"));
    }
    let mut out: Vec<Listen> = Vec::with_capacity(list.len());
    for s in list {
        let l = Listen::parse(key, s)?;
        let clash = out.iter().find(|o| {
            // Port 0 asks the system for a free port: never a clash.
            o.addr == l.addr && l.addr.port() != 0 && o.proto.is_stream() == l.proto.is_stream()
        });
        if let Some(o) = clash {
            return Err(invalid(
                key,
                s,
                format!("{o} already uses this address and port"),
            ));
        }
        out.push(l);
    }
    Ok(out)
}

/// A whole number in `min..=max`.
fn in_range<T>(key: &'static str, v: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    if v < min || v > max {
        return Err(invalid(
            key,
            v.to_string(),
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

fn at_least_one(key: &'static str, v: u32) -> Result<u32, ConfigError> {
    in_range(key, v, 1, u32::MAX)
}

fn secs(key: &'static str, v: u64) -> Result<Duration, ConfigError> {
    // At most a year: larger values are typos and overflow deadlines.
    in_range(key, v, 1, 365 * 24 * 3600).map(Duration::from_secs)
}

/// The first listener's IPv4 address, if it is a specific address.
fn derive_relay_ip(listen: &[Listen]) -> Option<IpAddr> {
    listen
        .iter()
        .map(|l| l.addr.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_unspecified())
}

impl RelayConfig {
    /// The defaults: [`DEFAULT_LISTEN`] on loopback, realm `onionrtc`,
    /// relay_ip 127.0.0.1, and no credentials (add them with
    /// [`with_auth_secret`](Self::with_auth_secret) or overrides).
    pub fn defaults() -> Self {
        let listen: Vec<Listen> = DEFAULT_LISTEN
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let limits = Limits::default();
        RelayConfig {
            relay_ip: derive_relay_ip(&listen).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            listen,
            realm: DEFAULT_REALM.to_owned(),
            relay_ip6: None,
            external_ip: None,
            external_ip6: None,
            relay_ports: DEFAULT_RELAY_PORTS,
            tls: None,
            users: Vec::new(),
            auth_secrets: Vec::new(),
            max_allocations_per_user: limits.allocations_per_user,
            max_allocations_per_static_user: limits.allocations_per_static_user,
            max_allocations_per_ip: limits.allocations_per_ip,
            max_allocations_total: limits.allocations_total,
            max_bytes_per_sec_per_allocation: limits.bytes_per_sec_per_allocation,
            max_bytes_per_sec_total: limits.bytes_per_sec_total,
            allowed_peers: Vec::new(),
            denied_peers: Vec::new(),
            dangerous_allow_loopback_peers: false,
            metrics: None,
            log_client_addresses: false,
            software: false,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_frame: 4096,
            tcp_relay: true,
            mobility: true,
            threads: cores(),
            busy_poll_us: 0,
            unauthenticated_rate: limits.unauthenticated_rate,
            unauthenticated_burst: limits.unauthenticated_burst,
            default_lifetime: turn::server::DEFAULT_LIFETIME,
            max_lifetime: turn::server::MAX_LIFETIME,
            alternate_servers: Vec::new(),
            redirect_above_allocations: 0,
            control_socket: None,
            relay_ip_derived: true,
        }
    }

    /// Puts `secret` first (current) in the shared-secret list; an equal
    /// secret further down the list is dropped.
    #[must_use]
    pub fn with_auth_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.put_secret_first(secret.into());
        self
    }

    fn put_secret_first(&mut self, secret: Secret) {
        self.auth_secrets.retain(|s| *s != secret);
        self.auth_secrets.insert(0, secret);
    }

    /// Reads and parses a configuration file; relative TLS paths resolve
    /// against the file's directory. Does not [`validate`](Self::validate).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Self::parse(&text, base, &path.display().to_string())
    }

    /// Parses configuration text; relative TLS paths resolve against
    /// `base_dir`. Every value is checked on its own; checks across keys wait
    /// for [`validate`](Self::validate).
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        Self::parse(text, base_dir, "text")
    }

    fn parse(text: &str, base_dir: &Path, origin: &str) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            source: Box::new(e),
        })?;
        Self::resolve(file.relay.unwrap_or_default(), base_dir)
    }

    fn resolve(f: RelayFile, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut c = RelayConfig::defaults();
        if let Some(list) = &f.listen {
            c.listen = parse_listen_list("listen", list)?;
        }
        if let Some(v) = &f.realm {
            c.realm = parse_realm("realm", v)?;
        }
        c.resolve_numbers(&f)?;
        c.relay_ip_derived = f.relay_ip.is_none();
        c.relay_ip = match &f.relay_ip {
            Some(v) => parse_ip("relay_ip", v, false)?,
            None => derive_relay_ip(&c.listen).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        };
        c.relay_ip6 = f
            .relay_ip6
            .map(|v| parse_ip("relay_ip6", &v, true))
            .transpose()?;
        c.external_ip = f
            .external_ip
            .map(|v| parse_ip("external_ip", &v, false))
            .transpose()?;
        c.external_ip6 = f
            .external_ip6
            .map(|v| parse_ip("external_ip6", &v, true))
            .transpose()?;
        if let Some(v) = &f.relay_ports {
            c.relay_ports = parse_ports("relay_ports", v)?;
        }
        c.tls = match (f.tls_cert, f.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: base_dir.join(cert),
                key: base_dir.join(key),
            }),
            (None, None) => None,
            (Some(_), None) => return Err(half_tls("tls_cert", "tls_key")),
            (None, Some(_)) => return Err(half_tls("tls_key", "tls_cert")),
        };
        c.users = (f.users.unwrap_or_default().into_iter())
            .map(|(name, password)| (name, Secret(password)))
            .collect();
        c.auth_secrets = (f.auth_secrets.unwrap_or_default().into_iter())
            .map(Secret)
            .collect();
        c.allowed_peers = parse_cidrs("allowed_peers", f.allowed_peers.as_deref().unwrap_or(&[]))?;
        c.denied_peers = parse_cidrs("denied_peers", f.denied_peers.as_deref().unwrap_or(&[]))?;
        c.dangerous_allow_loopback_peers = f.dangerous_allow_loopback_peers.unwrap_or(false);
        c.log_client_addresses = f.log_client_addresses.unwrap_or(false);
        c.software = f.software.unwrap_or(false);
        c.tcp_relay = f.tcp_relay.unwrap_or(true);
        c.mobility = f.mobility.unwrap_or(true);
        c.metrics = f
            .metrics
            .map(|v| parse_metrics("metrics", &v))
            .transpose()?;
        c.alternate_servers = (f.alternate_servers.unwrap_or_default().iter())
            .map(|s| Listen::parse("alternate_servers", s))
            .collect::<Result<_, _>>()?;
        if let Some(bad) = c.alternate_servers.iter().find(|a| {
            a.addr.ip().is_unspecified() || a.addr.ip().is_multicast() || a.addr.port() == 0
        }) {
            return Err(invalid(
                "alternate_servers",
                bad.to_string(),
                "an alternate must be a specific address and port clients can reach",
            ));
        }
        c.redirect_above_allocations = f.redirect_above_allocations.unwrap_or(0);
        c.control_socket = f.control_socket.map(|p| base_dir.join(p));
        Ok(c)
    }

    /// The numeric keys: limits, timeouts, sizes, lifetimes.
    fn resolve_numbers(&mut self, f: &RelayFile) -> Result<(), ConfigError> {
        let set = |slot: &mut u32, key, v: Option<u32>| -> Result<(), ConfigError> {
            if let Some(v) = v {
                *slot = at_least_one(key, v)?;
            }
            Ok(())
        };
        set(
            &mut self.max_allocations_per_user,
            "max_allocations_per_user",
            f.max_allocations_per_user,
        )?;
        if let Some(v) = f.max_allocations_per_static_user {
            // 0 means no per-user limit for static users (as coturn's
            // user-quota); the per-IP and total caps still apply.
            self.max_allocations_per_static_user = v;
        }
        set(
            &mut self.max_allocations_per_ip,
            "max_allocations_per_ip",
            f.max_allocations_per_ip,
        )?;
        set(
            &mut self.max_allocations_total,
            "max_allocations_total",
            f.max_allocations_total,
        )?;
        let rate = |key, v: Option<u64>, slot: &mut u64| -> Result<(), ConfigError> {
            if let Some(v) = v {
                // 0 means no limit.
                *slot = in_range(key, v, 0, turn::bandwidth::MAX_RATE)?;
            }
            Ok(())
        };
        rate(
            "max_bytes_per_sec_per_allocation",
            f.max_bytes_per_sec_per_allocation,
            &mut self.max_bytes_per_sec_per_allocation,
        )?;
        rate(
            "max_bytes_per_sec_total",
            f.max_bytes_per_sec_total,
            &mut self.max_bytes_per_sec_total,
        )?;
        set(
            &mut self.max_connections,
            "max_connections",
            f.max_connections,
        )?;
        set(
            &mut self.max_connections_per_ip,
            "max_connections_per_ip",
            f.max_connections_per_ip,
        )?;
        set(
            &mut self.unauthenticated_rate,
            "unauthenticated_rate",
            f.unauthenticated_rate,
        )?;
        set(
            &mut self.unauthenticated_burst,
            "unauthenticated_burst",
            f.unauthenticated_burst,
        )?;
        if let Some(v) = f.handshake_timeout_secs {
            self.handshake_timeout = secs("handshake_timeout_secs", v)?;
        }
        if let Some(v) = f.idle_timeout_secs {
            self.idle_timeout = secs("idle_timeout_secs", v)?;
        }
        if let Some(v) = f.max_frame {
            self.max_frame = in_range("max_frame", v, MIN_MAX_FRAME, MAX_MAX_FRAME)?;
        }
        if let Some(v) = f.threads {
            self.threads = match in_range("threads", v, 0, MAX_THREADS)? {
                0 => cores(),
                n => n,
            };
        }
        if let Some(v) = f.busy_poll_us {
            self.busy_poll_us = in_range("busy_poll_us", v, 0, MAX_BUSY_POLL_US)?;
        }
        if let Some(v) = f.default_lifetime_secs {
            self.default_lifetime = secs("default_lifetime_secs", v)?;
        }
        if let Some(v) = f.max_lifetime_secs {
            self.max_lifetime = secs("max_lifetime_secs", v)?;
        }
        if self.default_lifetime > self.max_lifetime {
            return Err(invalid(
                "default_lifetime_secs",
                self.default_lifetime.as_secs().to_string(),
                format!(
                    "must not exceed max_lifetime_secs ({})",
                    self.max_lifetime.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// Applies command line flags: each given flag replaces the value; a
    /// non-empty `listen` or `users` list replaces the list.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if !o.listen.is_empty() {
            self.listen = parse_listen_list("--listen", &o.listen)?;
            if self.relay_ip_derived {
                self.relay_ip =
                    derive_relay_ip(&self.listen).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            }
        }
        if !o.users.is_empty() {
            self.users = parse_user_flags(&o.users)?;
        }
        if let Some(v) = &o.realm {
            self.realm = parse_realm("--realm", v)?;
        }
        if let Some(v) = &o.relay_ip {
            self.relay_ip = parse_ip("--relay-ip", v, false)?;
            self.relay_ip_derived = false;
        }
        let ip =
            |key, v: &Option<String>, v6| v.as_deref().map(|s| parse_ip(key, s, v6)).transpose();
        if let Some(ip) = ip("--relay-ip6", &o.relay_ip6, true)? {
            self.relay_ip6 = Some(ip);
        }
        if let Some(ip) = ip("--external-ip", &o.external_ip, false)? {
            self.external_ip = Some(ip);
        }
        if let Some(ip) = ip("--external-ip6", &o.external_ip6, true)? {
            self.external_ip6 = Some(ip);
        }
        if let Some(v) = &o.relay_ports {
            self.relay_ports = parse_ports("--relay-ports", v)?;
        }
        if let Some(v) = &o.metrics {
            self.metrics = Some(parse_metrics("--metrics", v)?);
        }
        if o.tls_cert.is_some() || o.tls_key.is_some() {
            let old = self.tls.take();
            let cert = o
                .tls_cert
                .clone()
                .or_else(|| old.as_ref().map(|t| t.cert.clone()));
            let key = o.tls_key.clone().or_else(|| old.map(|t| t.key));
            self.tls = match (cert, key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (Some(_), None) => return Err(half_tls("--tls-cert", "--tls-key")),
                (None, _) => return Err(half_tls("--tls-key", "--tls-cert")),
            };
        }
        self.dangerous_allow_loopback_peers |= o.dangerous_allow_loopback_peers;
        self.log_client_addresses |= o.log_client_addresses;
        Ok(())
    }

    /// Puts the value of `ONIONRTC_AUTH_SECRET` first in the shared-secret
    /// list if it is set and not empty. Takes the value as a parameter;
    /// [`env_auth_secret`] reads it from the process environment.
    pub fn apply_env_secret(&mut self, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.put_secret_first(Secret::new(v));
        }
    }

    /// Checks what depends on several keys, builds the credentials and loads
    /// the TLS certificate and key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.to_server_config()?;
        self.tls_server_config()?;
        Ok(())
    }

    /// The checks across keys that need no I/O.
    fn check(&self) -> Result<(), ConfigError> {
        if self.relay_ip.is_unspecified() || !self.relay_ip.is_ipv4() {
            let listen: Vec<String> = self.listen.iter().map(Listen::to_string).collect();
            return Err(ConfigError::MissingRelayIp {
                listen: listen.join(", "),
            });
        }
        if self.users.is_empty() && self.auth_secrets.is_empty() {
            return Err(ConfigError::NoCredentials);
        }
        if self.tls.is_none() {
            if let Some(l) = self.listen.iter().find(|l| l.proto == ListenProto::Tls) {
                return Err(ConfigError::MissingTls {
                    listener: l.to_string(),
                });
            }
        }
        if self.external_ip6.is_some() && self.relay_ip6.is_none() {
            return Err(ConfigError::ExternalWithoutRelayIp6);
        }
        if let Some(a) = (self.alternate_servers.iter()).find(|a| self.listen.contains(a)) {
            return Err(invalid(
                "alternate_servers",
                a.to_string(),
                "this relay listens there itself: clients would be sent back to it",
            ));
        }
        Ok(())
    }

    /// The whole pipeline: the file (or [`defaults`](Self::defaults)), the
    /// overrides, the environment secret, then [`validate`](Self::validate).
    pub fn load(
        file: Option<&Path>,
        overrides: &Overrides,
        env_secret: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut c = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::defaults(),
        };
        c.apply_overrides(overrides)?;
        c.apply_env_secret(env_secret);
        c.validate()?;
        Ok(c)
    }

    /// The rustls configuration for `tls://` listeners, if TLS files are set.
    pub fn tls_server_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
        match &self.tls {
            Some(t) => Ok(Some(tls::server_config(&t.cert, &t.key)?)),
            None => Ok(None),
        }
    }

    /// The sans-IO server's configuration (after the checks across keys).
    pub fn to_server_config(&self) -> Result<ServerConfig, ConfigError> {
        self.check()?;
        let credentials = Credentials::new(
            &self.realm,
            self.users.iter().map(|(n, p)| (n.as_str(), p.expose())),
            self.auth_secrets.iter().map(|s| s.expose().as_bytes()),
        )?;
        let relay = RelayAddresses {
            ipv4: Some(self.relay_ip),
            ipv6: self.relay_ip6,
            external_ipv4: self.external_ip,
            external_ipv6: self.external_ip6,
        };
        let mut policy = PeerPolicy::new();
        for &c in &self.allowed_peers {
            policy = policy.allow(c);
        }
        for &c in &self.denied_peers {
            policy = policy.deny(c);
        }
        let mut config = ServerConfig::new(credentials, relay);
        config.policy = policy.dangerous_allow_loopback_peers(self.dangerous_allow_loopback_peers);
        config.ports = self.relay_ports.clone();
        config.default_lifetime = self.default_lifetime;
        config.max_lifetime = self.max_lifetime;
        config.software =
            (self.software).then(|| format!("OnionRTC {}", env!("CARGO_PKG_VERSION")));
        config.tcp_relay = self.tcp_relay;
        config.mobility = self.mobility;
        config.limits = Limits {
            allocations_per_user: self.max_allocations_per_user,
            allocations_per_static_user: self.max_allocations_per_static_user,
            allocations_per_ip: self.max_allocations_per_ip,
            allocations_total: self.max_allocations_total,
            unauthenticated_rate: self.unauthenticated_rate,
            unauthenticated_burst: self.unauthenticated_burst,
            bytes_per_sec_per_allocation: self.max_bytes_per_sec_per_allocation,
            bytes_per_sec_total: self.max_bytes_per_sec_total,
            ..Limits::default()
        };
        let alternates = (self.alternate_servers.iter())
            .map(|a| Alternate {
                transport: match a.proto {
                    ListenProto::Udp => Transport::Udp,
                    ListenProto::Tcp => Transport::Tcp,
                    ListenProto::Tls => Transport::Tls,
                },
                addr: a.addr,
            })
            .collect();
        config.redirect = Redirect::new(alternates, self.redirect_above_allocations);
        // Relays sharing a REST secret form a pool: they share the nonce key
        // too, so a client redirected from one to another keeps its nonce.
        if let Some(shared) = self.auth_secrets.first() {
            config.secret = ServerConfig::pool_secret(&self.realm, shared.expose().as_bytes());
        }
        Ok(config)
    }
}

/// Builds the lines of [`RelayConfig::redacted_toml`].
struct TomlOut(String);

impl TomlOut {
    fn kv(&mut self, key: &str, value: impl fmt::Display) {
        let _ = writeln!(self.0, "{key} = {value}");
    }

    fn opt(&mut self, key: &str, value: Option<impl fmt::Display>, absent: &str) {
        match value {
            Some(v) => self.kv(key, quote(&v.to_string())),
            None => {
                let _ = writeln!(self.0, "# {key}: {absent}");
            }
        }
    }
}

/// A TOML basic string.
pub(crate) fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML key: bare if it can be, quoted otherwise.
pub(crate) fn toml_key(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        s.to_owned()
    } else {
        quote(s)
    }
}

pub(crate) fn string_list<T: fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", items.join(", "))
}

impl RelayConfig {
    /// The resolved configuration as TOML under `[relay]`, every key with
    /// its effective value. Passwords and secrets print as `<redacted>`;
    /// absent optional keys print as comments.
    pub fn redacted_toml(&self) -> String {
        let mut t = TomlOut(String::new());
        let _ = writeln!(
            t.0,
            "# OnionRTC relay configuration as resolved; passwords and secrets are redacted."
        );
        let _ = writeln!(t.0, "[relay]");
        t.kv("listen", string_list(&self.listen));
        t.kv("realm", quote(&self.realm));
        t.kv("relay_ip", quote(&self.relay_ip.to_string()));
        t.opt("relay_ip6", self.relay_ip6, "not set");
        t.opt(
            "external_ip",
            self.external_ip,
            "not set (relay_ip is advertised)",
        );
        t.opt(
            "external_ip6",
            self.external_ip6,
            "not set (relay_ip6 is advertised)",
        );
        let ports = format!("{}-{}", self.relay_ports.start(), self.relay_ports.end());
        t.kv("relay_ports", quote(&ports));
        let path = |f: fn(&TlsFiles) -> &PathBuf| {
            (self.tls.as_ref()).map(|tls| f(tls).display().to_string())
        };
        t.opt("tls_cert", path(|t| &t.cert), "not set");
        t.opt("tls_key", path(|t| &t.key), "not set");
        let users: Vec<String> = (self.users.iter())
            .map(|(name, _)| format!("{} = {}", toml_key(name), quote(REDACTED)))
            .collect();
        match users.is_empty() {
            true => t.kv("users", "{}"),
            false => t.kv("users", format!("{{ {} }}", users.join(", "))),
        }
        let secrets = vec![REDACTED; self.auth_secrets.len()];
        let note = match secrets.len() {
            0 => String::new(),
            n => format!("  # {n} secret(s); the first is current"),
        };
        t.kv("auth_secrets", string_list(&secrets) + &note);
        t.kv("max_allocations_per_user", self.max_allocations_per_user);
        t.kv(
            "max_allocations_per_static_user",
            self.max_allocations_per_static_user,
        );
        t.kv("max_allocations_per_ip", self.max_allocations_per_ip);
        t.kv("max_allocations_total", self.max_allocations_total);
        t.kv(
            "max_bytes_per_sec_per_allocation",
            self.max_bytes_per_sec_per_allocation,
        );
        t.kv("max_bytes_per_sec_total", self.max_bytes_per_sec_total);
        t.kv("allowed_peers", string_list(&self.allowed_peers));
        t.kv("denied_peers", string_list(&self.denied_peers));
        t.kv(
            "dangerous_allow_loopback_peers",
            self.dangerous_allow_loopback_peers,
        );
        t.opt("metrics", self.metrics, "not set (no metrics endpoint)");
        t.kv("log_client_addresses", self.log_client_addresses);
        t.kv("software", self.software);
        t.kv("max_connections", self.max_connections);
        t.kv("max_connections_per_ip", self.max_connections_per_ip);
        t.kv("handshake_timeout_secs", self.handshake_timeout.as_secs());
        t.kv("idle_timeout_secs", self.idle_timeout.as_secs());
        t.kv("max_frame", self.max_frame);
        t.kv("tcp_relay", self.tcp_relay);
        t.kv("mobility", self.mobility);
        t.kv("threads", self.threads);
        t.kv("busy_poll_us", self.busy_poll_us);
        t.kv("unauthenticated_rate", self.unauthenticated_rate);
        t.kv("unauthenticated_burst", self.unauthenticated_burst);
        t.kv("default_lifetime_secs", self.default_lifetime.as_secs());
        t.kv("max_lifetime_secs", self.max_lifetime.as_secs());
        t.kv("alternate_servers", string_list(&self.alternate_servers));
        t.kv(
            "redirect_above_allocations",
            self.redirect_above_allocations,
        );
        t.opt(
            "control_socket",
            self.control_socket.as_ref().map(|p| p.display()),
            "not set (no control socket)",
        );
        t.0
    }
}

fn half_tls(present: &'static str, missing: &'static str) -> ConfigError {
    ConfigError::HalfTls { present, missing }
}

/// Parses `--user NAME:PASSWORD` flags (split at the first colon).
fn parse_user_flags(flags: &[String]) -> Result<Vec<(String, Secret)>, ConfigError> {
    let mut users: Vec<(String, Secret)> = Vec::with_capacity(flags.len());
    for f in flags {
        let (name, password) = f.split_once(':').ok_or(ConfigError::BadUserFlag(
            "no colon between name and password",
        ))?;
        if name.is_empty() {
            return Err(ConfigError::BadUserFlag("the name is empty"));
        }
        if password.is_empty() {
            return Err(ConfigError::BadUserFlag("the password is empty"));
        }
        if users.iter().any(|(n, _)| n == name) {
            return Err(CredentialsError::DuplicateUser(name.to_owned()).into());
        }
        users.push((name.to_owned(), Secret::new(password)));
    }
    users.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(users)
}

/// Reads `ONIONRTC_AUTH_SECRET` from the process environment.
pub fn env_auth_secret() -> Result<Option<String>, ConfigError> {
    match std::env::var(ENV_AUTH_SECRET) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::EnvNotUnicode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_syntax() {
        assert_eq!(parse_ports("k", "1-65535").unwrap(), 1..=65535);
        assert_eq!(parse_ports("k", " 5 - 6 ").unwrap(), 5..=6);
        for bad in ["", "-", "1-", "-1", "1-2-3", "0-0", "65536-65536", "a-b"] {
            assert!(parse_ports("k", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn listen_round_trips_through_display() {
        for s in [
            "udp://127.0.0.1:3478",
            "tcp://[::1]:3478",
            "tls://[::]:5349",
        ] {
            assert_eq!(s.parse::<Listen>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn derived_relay_ip_skips_ipv6_and_unspecified() {
        let listen = parse_listen_list(
            "listen",
            &[
                "udp://[::1]:1".into(),
                "udp://0.0.0.0:2".into(),
                "tcp://10.0.0.1:3".into(),
            ],
        )
        .unwrap();
        assert_eq!(derive_relay_ip(&listen), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(derive_relay_ip(&listen[..2]), None);
    }

    #[test]
    fn toml_keys_and_strings_are_quoted_when_needed() {
        assert_eq!(toml_key("alice_1-x"), "alice_1-x");
        assert_eq!(toml_key("bob smith"), "\"bob smith\"");
        assert_eq!(toml_key(""), "\"\"");
        let nasty = "a \"quoted\" \\ realm\u{e9}";
        let table: toml::Table = toml::from_str(&format!("k = {}", quote(nasty))).unwrap();
        assert_eq!(table["k"].as_str(), Some(nasty));
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }
}

//! `onionrtc serve`: the relay and the signaling server (with the web app)
//! in one process, on embedded defaults.
//!
//! ```text
//! load: [relay] (RelayConfig::from_file or defaults) + the data dir's
//!       turn-secret (generated on first run, first in auth_secrets)
//!       and room-key (the key of the stored room-name hash)
//!       [serve] (strict) + --data-dir/--listen
//! run:  relay::start (its own thread) → bind the web listener →
//!       signal::serve on a 2-worker tokio runtime → "Open http://…/"
//!       → SIGINT/SIGTERM (or the relay dying) → stop both
//! ```
//!
//! Design decisions:
//! - The `[serve]` table is parsed here with `deny_unknown_fields`: the
//!   relay's loader accepts it as an opaque table.
//! - The TURN REST secret lives in `DATA_DIR/turn-secret` (mode 0600), so
//!   credentials handed out before a restart stay valid after it. Secrets in
//!   `[relay] auth_secrets` are still accepted, after the generated one.
//! - The key of the room-name hash the statistics store keeps instead of
//!   room names lives in `DATA_DIR/room-key` (0600, same generator), so
//!   an operator can still find a room's calls by name after a restart.
//! - The data directory is made 0700 and its files 0600 at startup, however
//!   they were left (`signal::store::secure_data_dir`, with a warning).
//! - TURN URLs for browsers are derived from the relay's bound listeners; an
//!   unspecified address (0.0.0.0, ::) cannot be given to a browser, so then
//!   `[serve] turn_urls` is required.

use std::fs::{OpenOptions, Permissions};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use rand::RngCore as _;
use relay::config::{Listen, ListenProto, RelayConfig, REDACTED};
use serde::Deserialize;
use turn::policy::Cidr;

/// The web listener when neither `--listen` nor `[serve] listen` is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The data directory when neither `--data-dir` nor `[serve] data_dir` is
/// given (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "onionrtc-data";
/// The TURN REST secret's file in the data directory.
pub const SECRET_FILE: &str = "turn-secret";
/// The file of the key of the room-name hash in the data directory.
pub const ROOM_KEY_FILE: &str = "room-key";
/// The operator token's file in the data directory (when `[serve]
/// admin_token` is not set).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The relay's next TLS key in the data directory (when `[serve]
/// tls_next_key` is not set): generated on first run, its pin published in
/// `/.well-known/onionrtc.json` so a rotation to it locks no client out.
pub const NEXT_KEY_FILE: &str = "tls-next-key.pem";
/// Web connections per address by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Default `[serve] max_room_size`.
pub const DEFAULT_MAX_ROOM_SIZE: usize = 6;
/// Echo test sessions at once (`[serve] echo_max_sessions`).
pub const DEFAULT_ECHO_MAX_SESSIONS: usize = 20;
/// Echo test sessions a minute per client address.
pub const DEFAULT_ECHO_SESSIONS_PER_MINUTE: u32 = 10;
/// A request header must arrive within this many seconds by default.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Idle web connections are closed after this many seconds by default.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Stored statistics expire after this many days by default.
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
/// TURN credentials are valid this long by default.
pub const DEFAULT_CREDENTIAL_TTL_SECS: u64 = 600;
/// How long the signaling server may take to stop after SIGINT/SIGTERM
/// (it waits up to 5 s for WebSockets to close, then flushes the store).
const STOP_GRACE: Duration = Duration::from_secs(12);

/// Flags of `onionrtc serve`.
#[derive(Args, Debug)]
pub struct ServeFlags {
    /// Configuration file (TOML: `[relay]` and `[serve]` tables).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: the TURN secret and the statistics database
    /// (default ./onionrtc-data, created with mode 0700). Replaces
    /// `[serve] data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Web listener IP:PORT (default 127.0.0.1:8080). Replaces
    /// `[serve] listen`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also publish the site and the relay's TURN over TCP/TLS as a v3
    /// onion service (launches tor). Same as `[serve] onion = true`.
    #[arg(long)]
    pub onion: bool,
    /// With --onion: the tor binary to launch (default `tor` from PATH).
    /// Replaces `[serve] tor_binary`.
    #[arg(long, value_name = "PATH")]
    pub tor_binary: Option<PathBuf>,
    /// With --onion: a file of torrc lines added to the launched tor's
    /// (e.g. a private test network's). Replaces `[serve] tor_extra_config`.
    #[arg(long, value_name = "FILE")]
    pub tor_extra_config: Option<PathBuf>,
}

/// The configuration file as `serve` reads it: `[serve]` strictly, the rest
/// left to the relay's loader (which rejects unknown tables).
#[derive(Debug, Default, Deserialize)]
struct File {
    serve: Option<ServeFile>,
    sip: Option<SipFile>,
}

/// The `[sip]` table as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipFile {
    enabled: Option<bool>,
    domain: Option<String>,
    digest_algorithms: Option<Vec<String>>,
    listen: Option<Vec<String>>,
    messages_per_sec: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    media_ports: Option<String>,
    media_address: Option<String>,
    media_timeout: Option<u64>,
}

/// The resolved `[sip]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    /// SIP over WebSocket at `/sip` and `/api/sip/turn` (default off).
    pub enabled: bool,
    /// The SIP domain and digest realm.
    pub domain: String,
    /// Digest challenge algorithms, in the order offered.
    pub algorithms: Vec<signal::sip_ws::SipAlgorithm>,
    /// SIP over UDP, TCP and TLS listeners (default none).
    pub listen: Vec<signal::sip_net::SipListen>,
    /// Messages per second per UDP flow or TCP connection.
    pub messages_per_sec: u32,
    /// The certificate and key of `tls://` listeners: `[sip] tls_cert` and
    /// `tls_key`, else the relay's. Read again on every reload.
    pub tls: Option<relay::config::TlsFiles>,
    /// The plain-RTP media bridge (`media_ports`, `media_address`); off
    /// when `None`.
    pub media: Option<signal::sip_media::MediaSettings>,
}

/// The default `[sip] messages_per_sec`.
pub const SIP_MESSAGES_PER_SEC: u32 = 50;

/// The `[serve]` table as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    allowed_origins: Option<Vec<String>>,
    admin_token: Option<String>,
    stats_retention_days: Option<u32>,
    turn_urls: Option<Vec<String>>,
    relay_addresses: Option<Vec<String>>,
    credential_ttl_secs: Option<u64>,
    store_stats_samples: Option<bool>,
    database_url: Option<String>,
    redis_url: Option<String>,
    relay_choice: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    forwarded_header: Option<String>,
    hostnames: Option<Vec<String>>,
    max_connections_per_ip: Option<usize>,
    max_web_connections: Option<usize>,
    max_room_size: Option<usize>,
    header_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    echo_max_sessions: Option<usize>,
    echo_sessions_per_minute: Option<u32>,
    onion: Option<bool>,
    tor_binary: Option<PathBuf>,
    tor_extra_config: Option<PathBuf>,
    tls_next_key: Option<PathBuf>,
}

/// The resolved `[serve]` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ServeSettings {
    /// Web listener (HTTP, WebSocket, web app, API, metrics).
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Origins allowed to open the WebSocket besides the page's own.
    pub allowed_origins: Vec<String>,
    /// Bearer token of the operator views; `None`: `DATA_DIR/admin-token`
    /// (generated on first run).
    pub admin_token: Option<String>,
    /// Days stored statistics are kept.
    pub stats_retention_days: u32,
    /// TURN URLs given to browsers; `None`: derived from the relay listeners.
    pub turn_urls: Option<Vec<String>>,
    /// Which of them a member gets.
    pub relay_choice: signal::RelayChoice,
    /// Networks relay candidates must be in; `None`: the addresses the
    /// local relay hands out ([`default_relay_addresses`]).
    pub relay_addresses: Option<Vec<Cidr>>,
    /// Lifetime of the TURN credentials handed out.
    pub credential_ttl: Duration,
    /// Store every statistics sample, not only per-call aggregates.
    pub store_stats_samples: bool,
    /// The statistics store in PostgreSQL (checked: this machine or a Unix
    /// socket); `None`: `DATA_DIR/signal.sqlite`.
    pub database_url: Option<String>,
    /// Rooms in Redis shared by several nodes (checked: `rediss://` unless
    /// on this machine); `None`: rooms in this process.
    pub redis_url: Option<String>,
    /// Reverse proxies whose forwarding header is believed, and that header.
    pub forward: signal::ForwardRule,
    /// The site's names besides loopback (operator views answer 421 to
    /// other `Host`s).
    pub hostnames: Vec<String>,
    /// Web connections at once per address.
    pub max_connections_per_ip: usize,
    /// Web connections at once in all; 0: sized from the open-file limit.
    pub max_web_connections: usize,
    /// Members per room (2..=8).
    pub max_room_size: usize,
    /// Header-read timeout of the web listener.
    pub header_timeout: Duration,
    /// Idle timeout of web connections.
    pub idle_timeout: Duration,
    /// Echo test sessions at once; 0 turns the echo test off.
    pub echo_max_sessions: usize,
    /// Echo test sessions a minute per client address.
    pub echo_sessions_per_minute: u32,
    /// The `[sip]` table.
    pub sip: SipSettings,
    /// `[serve] onion` / `--onion`: the onion service, if on.
    pub onion: Option<crate::onion::OnionSettings>,
    /// The relay's next TLS key (PEM), pinned in the well-known document;
    /// `None`: `DATA_DIR/tls-next-key.pem`, generated when missing.
    pub tls_next_key: Option<PathBuf>,
}

impl std::fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeSettings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("allowed_origins", &self.allowed_origins)
            .field("admin_token", &self.admin_token.as_ref().map(|_| REDACTED))
            .field("stats_retention_days", &self.stats_retention_days)
            .field("turn_urls", &self.turn_urls)
            .field("relay_choice", &self.relay_choice)
            .field("relay_addresses", &self.relay_addresses)
            .field("credential_ttl", &self.credential_ttl)
            .field("store_stats_samples", &self.store_stats_samples)
            .field(
                "database_url",
                &self.database_url.as_deref().map(pgconn::redact),
            )
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(signal::cluster::redact),
            )
            .field("forward", &self.forward)
            .field("hostnames", &self.hostnames)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_room_size", &self.max_room_size)
            .field("max_web_connections", &self.max_web_connections)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("echo_max_sessions", &self.echo_max_sessions)
            .field("echo_sessions_per_minute", &self.echo_sessions_per_minute)
            .field("sip", &self.sip)
            .field("tls_next_key", &self.tls_next_key)
            .field("onion", &self.onion)
            .finish()
    }
}

/// An invalid value of a `[serve]` key or of a flag (`--listen`).
fn invalid(key: &str, value: impl std::fmt::Display, reason: &str) -> anyhow::Error {
    let table = if key.starts_with("--") {
        ""
    } else {
        "[serve] "
    };
    anyhow::anyhow!("invalid {table}{key} {:?}: {reason}", value.to_string())
}

/// Parses `[serve]` out of the file text (absent table: defaults).
#[cfg(test)]
fn parse_file(text: &str, origin: &str) -> anyhow::Result<Option<ServeFile>> {
    Ok(parse_tables(text, origin)?.serve)
}

fn parse_tables(text: &str, origin: &str) -> anyhow::Result<File> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("invalid configuration {origin}: {e}"))
}

fn parse_listen(key: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse().map_err(|_| {
        invalid(
            key,
            s,
            "expected IP:PORT such as 127.0.0.1:8080 (host names are not resolved)",
        )
    })
}

fn check_origin(s: &str) -> anyhow::Result<()> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| {
            invalid(
                "allowed_origins",
                s,
                "an origin starts with https:// or http://",
            )
        })?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err(invalid(
            "allowed_origins",
            s,
            "an origin is scheme://host[:port], without path, query or user",
        ));
    }
    Ok(())
}

fn check_turn_url(s: &str) -> anyhow::Result<()> {
    let rest = s
        .strip_prefix("turn:")
        .or_else(|| s.strip_prefix("turns:"))
        .ok_or_else(|| invalid("turn_urls", s, "a TURN URL starts with turn: or turns:"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(invalid(
            "turn_urls",
            s,
            "expected turn:HOST:PORT?transport=udp|tcp or turns:HOST:PORT?transport=tcp",
        ));
    }
    Ok(())
}

/// A site name of `[serve] hostnames`: a DNS name or an IP address,
/// without scheme, port or path.
fn check_hostname(s: &str) -> anyhow::Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && (s.parse::<IpAddr>().is_ok()
            || s.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "hostnames",
            s,
            "expected a host name or IP address without scheme or port, e.g. call.example.org",
        ))
    }
}

/// Resolves the `[serve]` table and the flags: flags win over the file, the
/// file over the defaults. A relative `data_dir` in the file is relative to
/// the file's directory; the flag's to the working directory.
fn resolve(file: ServeFile, base_dir: &Path, flags: &ServeFlags) -> anyhow::Result<ServeSettings> {
    let listen = match (&flags.listen, &file.listen) {
        (Some(s), _) => parse_listen("--listen", s)?,
        (None, Some(s)) => parse_listen("listen", s)?,
        (None, None) => parse_listen("listen", DEFAULT_LISTEN)?,
    };
    let data_dir = match (&flags.data_dir, &file.data_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => base_dir.join(d),
        (None, None) => PathBuf::from(DEFAULT_DATA_DIR),
    };
    if data_dir.as_os_str().is_empty() {
        bail!("invalid [serve] data_dir \"\": give a directory");
    }
    let allowed_origins = file.allowed_origins.unwrap_or_default();
    for o in &allowed_origins {
        check_origin(o)?;
    }
    if let Some(t) = &file.admin_token {
        if t.len() < 16 || t.contains(char::is_whitespace) {
            // The value is a secret: not quoted.
            bail!("invalid [serve] admin_token: use at least 16 characters without spaces");
        }
    }
    let stats_retention_days = file.stats_retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
    if !(1..=3650).contains(&stats_retention_days) {
        return Err(invalid(
            "stats_retention_days",
            stats_retention_days,
            "must be between 1 and 3650",
        ));
    }
    if let Some(urls) = &file.turn_urls {
        if urls.is_empty() {
            bail!("invalid [serve] turn_urls []: give at least one URL, or leave it out");
        }
        for u in urls {
            check_turn_url(u)?;
        }
    }
    let relay_addresses = match &file.relay_addresses {
        None => None,
        Some(list) if list.is_empty() => {
            bail!("invalid [serve] relay_addresses []: give at least one network, or leave it out")
        }
        Some(list) => Some(
            list.iter()
                .map(|c| {
                    c.parse::<Cidr>()
                        .map_err(|e| invalid("relay_addresses", c, &e.to_string()))
                })
                .collect::<anyhow::Result<Vec<Cidr>>>()?,
        ),
    };
    let ttl = file
        .credential_ttl_secs
        .unwrap_or(DEFAULT_CREDENTIAL_TTL_SECS);
    if !(60..=86_400).contains(&ttl) {
        return Err(invalid(
            "credential_ttl_secs",
            ttl,
            "must be between 60 and 86400",
        ));
    }
    let mut trusted_proxies = Vec::new();
    for c in file.trusted_proxies.unwrap_or_default() {
        trusted_proxies.push(
            c.parse::<Cidr>()
                .map_err(|e| invalid("trusted_proxies", &c, &e.to_string()))?,
        );
    }
    let header = file
        .forwarded_header
        .unwrap_or_else(|| "x-forwarded-for".to_owned());
    let forward = signal::ForwardRule::new(trusted_proxies, &header)
        .map_err(|e| invalid("forwarded_header", &header, &e.to_string()))?;
    let hostnames = file.hostnames.unwrap_or_default();
    for h in &hostnames {
        check_hostname(h)?;
    }
    let max_connections_per_ip = file
        .max_connections_per_ip
        .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP);
    if !(4..=100_000).contains(&max_connections_per_ip) {
        return Err(invalid(
            "max_connections_per_ip",
            max_connections_per_ip,
            "must be between 4 and 100000",
        ));
    }
    let max_web_connections = file.max_web_connections.unwrap_or(0);
    if max_web_connections != 0 && max_web_connections < 16 {
        return Err(invalid(
            "max_web_connections",
            max_web_connections,
            "must be 0 (sized from the open-file limit) or at least 16",
        ));
    }
    let max_room_size = file.max_room_size.unwrap_or(DEFAULT_MAX_ROOM_SIZE);
    if !(2..=signal::MAX_ROOM_SIZE).contains(&max_room_size) {
        return Err(invalid(
            "max_room_size",
            max_room_size,
            "must be between 2 and 8 (a full mesh: every member sends to every other)",
        ));
    }
    let header_timeout = file
        .header_timeout_secs
        .unwrap_or(DEFAULT_HEADER_TIMEOUT_SECS);
    if !(1..=300).contains(&header_timeout) {
        return Err(invalid(
            "header_timeout_secs",
            header_timeout,
            "must be between 1 and 300",
        ));
    }
    let idle_timeout = file.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
    if !(5..=3600).contains(&idle_timeout) {
        return Err(invalid(
            "idle_timeout_secs",
            idle_timeout,
            "must be between 5 and 3600",
        ));
    }
    let echo_max_sessions = file.echo_max_sessions.unwrap_or(DEFAULT_ECHO_MAX_SESSIONS);
    if echo_max_sessions > 10_000 {
        return Err(invalid(
            "echo_max_sessions",
            echo_max_sessions,
            "must be between 0 (echo test off) and 10000",
        ));
    }
    let echo_sessions_per_minute = file
        .echo_sessions_per_minute
        .unwrap_or(DEFAULT_ECHO_SESSIONS_PER_MINUTE);
    if !(1..=1000).contains(&echo_sessions_per_minute) {
        return Err(invalid(
            "echo_sessions_per_minute",
            echo_sessions_per_minute,
            "must be between 1 and 1000",
        ));
    }
    let onion = if flags.onion || file.onion.unwrap_or(false) {
        let settings = crate::onion::OnionSettings {
            tor_binary: flags.tor_binary.clone().or(file.tor_binary),
            extra_config: flags
                .tor_extra_config
                .clone()
                .or_else(|| file.tor_extra_config.map(|f| base_dir.join(f))),
        };
        if forward.trusted.iter().any(|c| {
            // Overlap: the CIDR holds the range's first address, or the
            // range holds the CIDR's network address.
            c.contains(std::net::IpAddr::V4(signal::onion::IDENTITY_BASE))
                || c.to_string()
                    .split('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .is_some_and(signal::onion::is_identity)
        }) {
            bail!(
                "invalid [serve] trusted_proxies with onion = true: it covers {}/{}, the \
                 addresses of onion callers (they could choose their address with {})",
                signal::onion::IDENTITY_BASE,
                signal::onion::IDENTITY_PREFIX,
                forward.header
            );
        }
        Some(settings)
    } else {
        if flags.tor_binary.is_some() || flags.tor_extra_config.is_some() {
            bail!("--tor-binary and --tor-extra-config need --onion");
        }
        None
    };
    if let Some(url) = &file.database_url {
        if !pgconn::is_url(url) {
            bail!("invalid [serve] database_url: give a postgres:// URL");
        }
        // The message names no part of the URL (it holds the password).
        pgconn::Target::parse(url)
            .map_err(|e| anyhow::anyhow!("invalid [serve] database_url: {e}"))?;
    }
    if let Some(url) = &file.redis_url {
        // The message names no part of the URL (it may hold the password).
        signal::cluster::check_url(url)
            .map_err(|e| anyhow::anyhow!("invalid [serve] redis_url: {e}"))?;
    }
    Ok(ServeSettings {
        listen,
        data_dir,
        allowed_origins,
        admin_token: file.admin_token,
        stats_retention_days,
        turn_urls: file.turn_urls,
        relay_choice: match file.relay_choice.as_deref() {
            None | Some("all") => signal::RelayChoice::All,
            Some("per-room") => signal::RelayChoice::PerRoom,
            Some(other) => bail!(
                "invalid [serve] relay_choice {other:?}: \"all\" (every turn_urls URL to every \
                 member) or \"per-room\" (one relay's URLs per room)"
            ),
        },
        relay_addresses,
        credential_ttl: Duration::from_secs(ttl),
        store_stats_samples: file.store_stats_samples.unwrap_or(false),
        database_url: file.database_url,
        redis_url: file.redis_url,
        forward,
        hostnames,
        max_connections_per_ip,
        max_web_connections,
        max_room_size,
        header_timeout: Duration::from_secs(header_timeout),
        idle_timeout: Duration::from_secs(idle_timeout),
        echo_max_sessions,
        echo_sessions_per_minute,
        sip: SipSettings {
            enabled: false,
            domain: String::new(),
            algorithms: Vec::new(),
            listen: Vec::new(),
            messages_per_sec: SIP_MESSAGES_PER_SEC,
            tls: None,
            media: None,
        },
        onion,
        tls_next_key: file.tls_next_key.map(|k| base_dir.join(k)),
    })
}

/// The default `[sip] domain`: the site's first name (`[serve]
/// hostnames`), else the web listener's address.
fn default_sip_domain(serve: &ServeSettings) -> Option<String> {
    if let Some(h) = serve.hostnames.first() {
        return Some(h.to_ascii_lowercase());
    }
    let ip = serve.listen.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

/// Resolves `[sip]`; `relay_tls` is the relay's certificate, which
/// `tls://` listeners use unless `[sip]` names its own.
fn resolve_sip(
    file: SipFile,
    serve: &ServeSettings,
    base_dir: &Path,
    relay_tls: Option<&relay::config::TlsFiles>,
) -> anyhow::Result<SipSettings> {
    let enabled = file.enabled.unwrap_or(false);
    let domain = match file.domain {
        Some(d) => {
            let d = d.trim().to_ascii_lowercase();
            let ok = !d.is_empty()
                && d.len() <= 253
                && (d.parse::<IpAddr>().is_ok()
                    || d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
            if !ok {
                bail!("invalid [sip] domain {d:?}: a host name such as example.org, or an IP address");
            }
            d
        }
        None => match default_sip_domain(serve) {
            Some(d) => d,
            None if enabled => bail!(
                "[sip] domain is required when the web listener's address is unspecified and                  [serve] hostnames is empty"
            ),
            None => String::new(),
        },
    };
    let names = file
        .digest_algorithms
        .unwrap_or_else(|| vec!["SHA-256".to_owned(), "MD5".to_owned()]);
    let mut algorithms = Vec::new();
    for n in &names {
        let Some(a) = signal::sip_ws::SipAlgorithm::parse(n) else {
            bail!("invalid [sip] digest_algorithms entry {n:?}: \"MD5\" or \"SHA-256\"");
        };
        if algorithms.contains(&a) {
            bail!("invalid [sip] digest_algorithms: {n:?} appears twice");
        }
        algorithms.push(a);
    }
    if algorithms.is_empty() {
        bail!("invalid [sip] digest_algorithms []: give at least one of \"MD5\", \"SHA-256\"");
    }
    let mut listen: Vec<signal::sip_net::SipListen> = Vec::new();
    for l in file.listen.unwrap_or_default() {
        let Some(parsed) = signal::sip_net::SipListen::parse(&l) else {
            bail!(
                "invalid [sip] listen entry {l:?}: \"udp://IP:PORT\", \"tcp://IP:PORT\" or \
                 \"tls://IP:PORT\" (an IP address, IPv6 in brackets, and a port other than 0)"
            );
        };
        if listen.contains(&parsed) {
            bail!("invalid [sip] listen: {l:?} appears twice");
        }
        if parsed.transport != signal::sip_net::SipTransport::Udp && parsed.addr == serve.listen {
            bail!("invalid [sip] listen {l:?}: the web listener [serve] listen uses that address");
        }
        listen.push(parsed);
    }
    if !listen.is_empty() && !enabled {
        bail!("[sip] listen is set but [sip] enabled is not true");
    }
    let messages_per_sec = file.messages_per_sec.unwrap_or(SIP_MESSAGES_PER_SEC);
    if messages_per_sec == 0 || messages_per_sec > 1_000_000 {
        bail!("invalid [sip] messages_per_sec {messages_per_sec}: 1 to 1000000");
    }
    let own_tls = match (file.tls_cert, file.tls_key) {
        (Some(cert), Some(key)) => Some(relay::config::TlsFiles {
            cert: base_dir.join(cert),
            key: base_dir.join(key),
        }),
        (None, None) => None,
        (Some(_), None) => bail!("[sip] tls_cert is set without tls_key"),
        (None, Some(_)) => bail!("[sip] tls_key is set without tls_cert"),
    };
    let wants_tls = listen
        .iter()
        .any(|l| l.transport == signal::sip_net::SipTransport::Tls);
    let tls = match (wants_tls, own_tls) {
        (false, _) => None,
        (true, Some(own)) => Some(own),
        (true, None) => match relay_tls {
            Some(t) => Some(t.clone()),
            None => bail!(
                "a tls:// entry in [sip] listen needs a certificate: set [sip] tls_cert and \
                 tls_key, or the relay's tls_cert and tls_key"
            ),
        },
    };
    let media = match file.media_ports {
        None => {
            if file.media_address.is_some() || file.media_timeout.is_some() {
                bail!("[sip] media_address or media_timeout is set but [sip] media_ports is not");
            }
            None
        }
        Some(ports) => {
            if listen.is_empty() {
                bail!(
                    "[sip] media_ports is set but [sip] listen is empty (the bridge is for phones)"
                );
            }
            let Some((first, last)) = signal::sip_media::MediaSettings::parse_ports(&ports) else {
                bail!(
                    "invalid [sip] media_ports {ports:?}: \"FIRST-LAST\", 1 <= FIRST < LAST, \
                     at least 4 ports (4 per bridged call)"
                );
            };
            let address = match &file.media_address {
                Some(a) => match a.trim().parse::<IpAddr>() {
                    Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => ip,
                    _ => bail!(
                        "invalid [sip] media_address {a:?}: an IP address of this machine \
                         that phones can reach (not 0.0.0.0)"
                    ),
                },
                None => match listen
                    .iter()
                    .map(|l| l.addr.ip())
                    .find(|ip| !ip.is_unspecified())
                {
                    Some(ip) => ip,
                    None => bail!(
                        "[sip] media_address is required when every [sip] listen address is \
                         unspecified (0.0.0.0 or [::])"
                    ),
                },
            };
            let idle = match file.media_timeout {
                None => signal::sip_media::IDLE_TIMEOUT,
                Some(s) if (1..=86_400).contains(&s) => std::time::Duration::from_secs(s),
                Some(s) => bail!(
                    "invalid [sip] media_timeout {s}: seconds without media before a bridged                      call is hung up, 1 to 86400"
                ),
            };
            Some(signal::sip_media::MediaSettings {
                address,
                idle,
                // Set by `load`, which has the relay's listeners.
                relay: None,
                first,
                last,
            })
        }
    };
    Ok(SipSettings {
        enabled,
        domain,
        algorithms,
        listen,
        messages_per_sec,
        tls,
        media,
    })
}

/// Where the SIP gateways' endpoints reach the relay: its first UDP
/// listener, a wildcard address taken as loopback.
fn gateway_relay(relay: &RelayConfig) -> Option<SocketAddr> {
    let l = relay
        .listen
        .iter()
        .find(|l| l.proto == relay::config::ListenProto::Udp)?;
    let ip = match l.addr.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, l.addr.port()))
}

/// What `serve` runs with, secret not yet loaded.
#[derive(Debug)]
pub struct Loaded {
    /// The relay (without the generated secret).
    pub relay: RelayConfig,
    /// The `[serve]` settings.
    pub serve: ServeSettings,
}

/// Reads the file (if any), resolves `[serve]` and `[relay]` and checks
/// that browsers can be given TURN URLs. Touches no data directory.
pub fn load(flags: &ServeFlags) -> anyhow::Result<Loaded> {
    let (file, sip, relay, base) = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read configuration file {}", path.display()))?;
            let tables = parse_tables(&text, &path.display().to_string())?;
            let relay = RelayConfig::from_file(path)?;
            let base = path.parent().unwrap_or(Path::new("")).to_owned();
            (
                tables.serve.unwrap_or_default(),
                tables.sip.unwrap_or_default(),
                relay,
                base,
            )
        }
        None => (
            ServeFile::default(),
            SipFile::default(),
            RelayConfig::defaults(),
            PathBuf::new(),
        ),
    };
    let mut serve = resolve(file, &base, flags)?;
    serve.sip = resolve_sip(sip, &serve, &base, relay.tls.as_ref())?;
    if let Some(m) = serve.sip.media.as_mut() {
        m.relay = gateway_relay(&relay);
    }
    if serve.turn_urls.is_none() {
        if let Some(l) = relay.listen.iter().find(|l| l.addr.ip().is_unspecified()) {
            bail!(
                "the relay listens on {l}, an unspecified address that browsers cannot be \
                 given: set [serve] turn_urls to the address(es) browsers reach the relay on, \
                 e.g. [\"turn:203.0.113.7:3478?transport=udp\", \
                 \"turn:203.0.113.7:3478?transport=tcp\"]"
            );
        }
    }
    // Validate the relay as serve will run it: with a secret.
    relay
        .clone()
        .with_auth_secret("placeholder-for-the-generated-secret")
        .validate()?;
    Ok(Loaded { relay, serve })
}

/// Whether `file` has a `[serve]` table (a file that does not parse has
/// none: the relay's loader reports the error).
pub fn has_serve_table(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .is_some_and(|t| t.contains_key("serve") || t.contains_key("sip"))
}

/// `onionrtc check-config FILE` for a file with a `[serve]` table: checks it
/// as `onionrtc serve --config FILE` reads it and prints both tables,
/// secrets redacted.
pub fn check_config(file: &Path) -> anyhow::Result<()> {
    let flags = ServeFlags {
        config: Some(file.to_owned()),
        data_dir: None,
        listen: None,
        onion: false,
        tor_binary: None,
        tor_extra_config: None,
    };
    let loaded = load(&flags)?;
    if let Some(key) = &loaded.serve.tls_next_key {
        next_key_pin(key)?;
    }
    if let Some(files) = &loaded.serve.sip.tls {
        sip_tls_config(files)?;
    }
    print!("{}", loaded.relay.redacted_toml());
    println!();
    print!("{}", redacted_toml(&loaded.serve, &loaded.relay));
    Ok(())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn toml_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The resolved `[serve]` table, admin token redacted.
fn redacted_toml(s: &ServeSettings, relay: &RelayConfig) -> String {
    let urls = s
        .turn_urls
        .clone()
        .unwrap_or_else(|| derive_turn_urls(&relay.listen));
    let mut out = String::from(
        "# The TURN REST secret is DATA_DIR/turn-secret (generated on first run), \
         used before [relay] auth_secrets.\n[serve]\n",
    );
    out.push_str(&format!("listen = {}\n", toml_str(&s.listen.to_string())));
    out.push_str(&format!(
        "data_dir = {}\n",
        toml_str(&s.data_dir.display().to_string())
    ));
    out.push_str(&format!(
        "allowed_origins = {}\n",
        toml_list(&s.allowed_origins)
    ));
    if s.admin_token.is_some() {
        out.push_str(&format!("admin_token = {}\n", toml_str(REDACTED)));
    } else {
        out.push_str(&format!(
            "# admin_token: DATA_DIR/{ADMIN_TOKEN_FILE} (generated on first run)\n"
        ));
    }
    out.push_str(&format!(
        "stats_retention_days = {}\n",
        s.stats_retention_days
    ));
    out.push_str(&format!("turn_urls = {}\n", toml_list(&urls)));
    let relays = s
        .relay_addresses
        .clone()
        .unwrap_or_else(|| default_relay_addresses(relay));
    let relays: Vec<String> = relays.iter().map(Cidr::to_string).collect();
    out.push_str(&format!("relay_addresses = {}\n", toml_list(&relays)));
    out.push_str(&format!(
        "relay_choice = \"{}\"\n",
        match s.relay_choice {
            signal::RelayChoice::All => "all",
            signal::RelayChoice::PerRoom => "per-room",
        }
    ));
    out.push_str(&format!(
        "credential_ttl_secs = {}\n",
        s.credential_ttl.as_secs()
    ));
    out.push_str(&format!(
        "store_stats_samples = {}\n",
        s.store_stats_samples
    ));
    match &s.database_url {
        Some(url) => out.push_str(&format!(
            "database_url = {}\n",
            toml_str(&pgconn::redact(url))
        )),
        None => out.push_str("# database_url: unset, statistics in DATA_DIR/signal.sqlite\n"),
    }
    match &s.redis_url {
        Some(url) => out.push_str(&format!(
            "redis_url = {}\n",
            toml_str(&signal::cluster::redact(url))
        )),
        None => out.push_str("# redis_url: unset, rooms in this process only\n"),
    }
    let proxies: Vec<String> = s.forward.trusted.iter().map(ToString::to_string).collect();
    out.push_str(&format!("trusted_proxies = {}\n", toml_list(&proxies)));
    out.push_str(&format!(
        "forwarded_header = {}\n",
        toml_str(s.forward.header.as_str())
    ));
    out.push_str(&format!("hostnames = {}\n", toml_list(&s.hostnames)));
    out.push_str(&format!(
        "max_connections_per_ip = {}\n",
        s.max_connections_per_ip
    ));
    out.push_str(&format!("max_room_size = {}\n", s.max_room_size));
    out.push_str(&format!("echo_max_sessions = {}\n", s.echo_max_sessions));
    out.push_str(&format!(
        "echo_sessions_per_minute = {}\n",
        s.echo_sessions_per_minute
    ));
    out.push_str(&format!("onion = {}\n", s.onion.is_some()));
    if let Some(o) = &s.onion {
        if let Some(b) = &o.tor_binary {
            out.push_str(&format!(
                "tor_binary = {}\n",
                toml_str(&b.display().to_string())
            ));
        }
        if let Some(f) = &o.extra_config {
            out.push_str(&format!(
                "tor_extra_config = {}\n",
                toml_str(&f.display().to_string())
            ));
        }
    }
    out.push_str(&format!(
        "max_web_connections = {}{}\n",
        s.max_web_connections,
        if s.max_web_connections == 0 {
            " # sized from the open-file limit at startup"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "header_timeout_secs = {}\nidle_timeout_secs = {}\n",
        s.header_timeout.as_secs(),
        s.idle_timeout.as_secs()
    ));
    match &s.tls_next_key {
        Some(k) => out.push_str(&format!(
            "tls_next_key = {}\n",
            toml_str(&k.display().to_string())
        )),
        None => out.push_str(&format!(
            "# tls_next_key: DATA_DIR/{NEXT_KEY_FILE} (generated on first run when the relay has TLS)\n"
        )),
    }
    let algs: Vec<String> = s
        .sip
        .algorithms
        .iter()
        .map(|a| a.name().to_owned())
        .collect();
    let listen: Vec<String> = s.sip.listen.iter().map(ToString::to_string).collect();
    out.push_str(&format!(
        "\n[sip]\nenabled = {}\ndomain = {}\ndigest_algorithms = {}\nlisten = {}\nmessages_per_sec = {}\n",
        s.sip.enabled,
        toml_str(&s.sip.domain),
        toml_list(&algs),
        toml_list(&listen),
        s.sip.messages_per_sec
    ));
    if let Some(t) = &s.sip.tls {
        out.push_str(&format!(
            "tls_cert = {}\ntls_key = {}\n",
            toml_str(&t.cert.display().to_string()),
            toml_str(&t.key.display().to_string())
        ));
    }
    match &s.sip.media {
        Some(m) => out.push_str(&format!(
            "media_ports = \"{}-{}\"\nmedia_address = {}\nmedia_timeout = {}\n",
            m.first,
            m.last,
            toml_str(&m.address.to_string()),
            m.idle.as_secs()
        )),
        None => out.push_str("# media_ports: unset (no plain-RTP media bridge)\n"),
    }
    out
}

/// The addresses the local relay hands out in XOR-RELAYED-ADDRESS (its
/// relay IPs and external IPs), as host networks: the default of
/// `[serve] relay_addresses`.
pub fn default_relay_addresses(relay: &RelayConfig) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = Vec::new();
    let ips = [
        Some(relay.relay_ip),
        relay.relay_ip6,
        relay.external_ip,
        relay.external_ip6,
    ];
    for ip in ips.into_iter().flatten() {
        let c = Cidr::host(ip);
        if !ip.is_unspecified() && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The TURN URL of one relay listener (`turns:` for TLS).
fn turn_url(l: &Listen) -> String {
    let host = match l.addr.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let port = l.addr.port();
    match l.proto {
        ListenProto::Udp => format!("turn:{host}:{port}?transport=udp"),
        ListenProto::Tcp => format!("turn:{host}:{port}?transport=tcp"),
        ListenProto::Tls => format!("turns:{host}:{port}?transport=tcp"),
    }
}

/// TURN URLs for browsers from the listeners (UDP first, then TCP, then TLS).
fn derive_turn_urls(listen: &[Listen]) -> Vec<String> {
    let mut sorted: Vec<&Listen> = listen.iter().collect();
    sorted.sort_by_key(|l| match l.proto {
        ListenProto::Udp => 0,
        ListenProto::Tcp => 1,
        ListenProto::Tls => 2,
    });
    sorted.into_iter().map(turn_url).collect()
}

/// What `--onion` publishes: the web listener on port 80, and each TURN
/// TCP/TLS listener on its own port (UDP cannot cross Tor).
fn onion_targets(web: SocketAddr, relay: &[Listen]) -> Vec<crate::onion::Target> {
    let mut out = vec![crate::onion::Target {
        name: "web".into(),
        virtual_port: crate::onion::WEB_PORT,
        listener: web,
    }];
    for l in relay {
        let name = match l.proto {
            ListenProto::Udp => continue,
            ListenProto::Tcp => "turn_tcp",
            ListenProto::Tls => "turn_tls",
        };
        if out.iter().any(|t| t.virtual_port == l.addr.port()) {
            tracing::warn!(
                "onion service: port {} is taken; {name} on {} is not published",
                l.addr.port(),
                l.addr
            );
            continue;
        }
        out.push(crate::onion::Target {
            name: name.into(),
            virtual_port: l.addr.port(),
            listener: l.addr,
        });
    }
    out
}

/// The onion URLs of the well-known document: the site, and TURN over TCP
/// and TLS on the relay's own ports (what `onion_targets` publishes).
fn onion_urls(hosts: &[String], relay: &[Listen]) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts {
        out.push(format!("http://{h}"));
        for l in relay {
            match l.proto {
                ListenProto::Udp => {}
                ListenProto::Tcp => out.push(format!("turn:{h}:{}?transport=tcp", l.addr.port())),
                ListenProto::Tls => out.push(format!("turns:{h}:{}?transport=tcp", l.addr.port())),
            }
        }
    }
    out
}

/// The bound listeners of a running relay (ports resolved).
fn bound_listeners(h: &relay::RelayHandle) -> Vec<Listen> {
    let with = |proto, addrs: &[SocketAddr]| -> Vec<Listen> {
        addrs.iter().map(|&addr| Listen { proto, addr }).collect()
    };
    let mut out = with(ListenProto::Udp, h.udp_addrs());
    out.extend(with(ListenProto::Tcp, h.tcp_addrs()));
    out.extend(with(ListenProto::Tls, h.tls_addrs()));
    out
}

/// Creates the data directory (mode 0700); an existing one, and every file
/// in it, is made private (0700, 0600) with a warning if it was not.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    signal::store::secure_data_dir(dir)
        .with_context(|| format!("cannot prepare the data directory {}", dir.display()))
}

/// The TURN REST secret of `DATA_DIR/turn-secret`: [`load_or_create_secret_file`]
/// with standard base64.
pub fn load_or_create_secret(dir: &Path) -> anyhow::Result<String> {
    load_or_create_secret_file(
        dir,
        SECRET_FILE,
        "TURN secret",
        &base64::engine::general_purpose::STANDARD,
    )
    .map(|(secret, _)| secret)
}

/// The operator token of `DATA_DIR/admin-token` (URL-safe base64, so it
/// goes into a header, a form or a shell unquoted), and whether it was
/// generated now.
pub fn load_or_create_admin_token(dir: &Path) -> anyhow::Result<(String, bool)> {
    load_or_create_secret_file(
        dir,
        ADMIN_TOKEN_FILE,
        "operator token",
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    )
}

/// A secret kept in `DATA_DIR/file`, generated on first run (32 random
/// bytes, encoded with `engine`) with mode 0600, and whether it was made
/// now. An existing file readable by others is set back to 0600, with a
/// warning. `what` names it in messages; the secret is never printed.
pub fn load_or_create_secret_file(
    dir: &Path,
    file: &str,
    what: &str,
    engine: &impl base64::Engine,
) -> anyhow::Result<(String, bool)> {
    let path = dir.join(file);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let secret = engine.encode(bytes);
            f.write_all(format!("{secret}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!("generated a {what} in {}", path.display());
            return Ok((secret, true));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create {}", path.display()));
        }
    }
    let meta = std::fs::symlink_metadata(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(&path, Permissions::from_mode(0o600))
            .with_context(|| format!("cannot chmod 600 {}", path.display()))?;
        tracing::warn!(
            "{} was readable by other users (mode {mode:o}); set it to 0600. \
             Consider replacing the secret (delete the file and restart).",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!(
            "{} is empty: delete it to have a new secret generated",
            path.display()
        );
    }
    Ok((secret.to_owned(), false))
}

/// The pin of the next TLS key in `path` (PEM).
fn next_key_pin(path: &Path) -> anyhow::Result<[u8; 32]> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read [serve] tls_next_key {}", path.display()))?;
    connector::tls::key_pem_spki_sha256(&pem).with_context(|| {
        format!(
            "invalid [serve] tls_next_key {}: expected a PEM private key (RSA, ECDSA or Ed25519)",
            path.display()
        )
    })
}

/// The TLS configuration of the `[sip]` `tls://` listeners, from `files`.
fn sip_tls_config(files: &relay::config::TlsFiles) -> anyhow::Result<signal::sip_net::SipTls> {
    let config = relay::tls::server_config(&files.cert, &files.key)
        .context("cannot load the certificate of the [sip] tls:// listeners")?;
    Ok(signal::sip_net::SipTls::new(config))
}

/// On reload: the `[sip]` TLS listeners read their certificate and key
/// again; a broken pair keeps the old one, with one log line.
fn reload_sip_tls(live: Option<&signal::sip_net::SipTls>, files: Option<&relay::config::TlsFiles>) {
    let (Some(live), Some(files)) = (live, files) else {
        return;
    };
    match sip_tls_config(files) {
        Ok(fresh) => {
            live.follow(&fresh);
            tracing::info!("[sip] TLS: certificate reloaded");
        }
        Err(e) => tracing::warn!("[sip] TLS: keeping the old certificate: {e:#}"),
    }
}

/// The relay's TLS pins for `/.well-known/onionrtc.json`: the key of its
/// current certificate, then the next key — `[serve] tls_next_key`, else
/// `DATA_DIR/tls-next-key.pem`, generated (ECDSA P-256, mode 0600) when
/// missing, e.g. right after a rotation moved it away. No TLS listener:
/// no pins.
fn tls_pins(
    relay: &RelayConfig,
    next_key: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<Vec<[u8; 32]>> {
    let Some(files) = &relay.tls else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(&files.cert)
        .with_context(|| format!("cannot read tls_cert {}", files.cert.display()))?;
    let current = connector::tls::cert_pem_spki_sha256(&pem)
        .with_context(|| format!("tls_cert {} holds no certificate", files.cert.display()))?;
    let path = match next_key {
        Some(p) => p.to_owned(),
        None => {
            let p = data_dir.join(NEXT_KEY_FILE);
            create_next_key(&p)?;
            p
        }
    };
    let next = next_key_pin(&path)?;
    if next == current {
        tracing::warn!(
            "the next TLS key {} is the relay's current key: make a new one (see docs/serve.md,              \"Rotating the relay's certificate\"), or a later rotation locks clients out",
            path.display()
        );
        return Ok(vec![current]);
    }
    Ok(vec![current, next])
}

/// Writes a new ECDSA P-256 key to `path` (mode 0600) unless it exists.
fn create_next_key(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let key = rcgen::KeyPair::generate().context("cannot generate the next TLS key")?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(key.serialize_pem().as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(
        "generated the relay's next TLS key in {} (its pin is published now; see docs/serve.md)",
        path.display()
    );
    Ok(())
}

/// The well-known document, kept current across reloads.
#[derive(Clone)]
struct WellKnown {
    turn_urls: Vec<String>,
    onion: Vec<String>,
    next_key: Option<PathBuf>,
    data_dir: PathBuf,
    body: Arc<std::sync::Mutex<String>>,
}

impl WellKnown {
    fn new(
        (next_key, data_dir): (Option<PathBuf>, PathBuf),
        turn_urls: Vec<String>,
        onion: Vec<String>,
        relay: &RelayConfig,
    ) -> anyhow::Result<WellKnown> {
        let w = WellKnown {
            turn_urls,
            onion,
            next_key,
            data_dir,
            body: Arc::default(),
        };
        w.update(relay)?;
        Ok(w)
    }

    /// Renders the document for `relay`'s certificate.
    fn update(&self, relay: &RelayConfig) -> anyhow::Result<()> {
        let pins = tls_pins(relay, self.next_key.as_deref(), &self.data_dir)?;
        let text = connector::wellknown::Document::render(&self.turn_urls, &pins, &self.onion);
        *self.body.lock().unwrap_or_else(|e| e.into_inner()) = text;
        Ok(())
    }

    /// After a reload that read `fresh`: the document follows the
    /// certificate (a rotation moved the next key in: a new one is made).
    fn follow(&self, fresh: Option<RelayConfig>) {
        if let Some(c) = fresh {
            if let Err(e) = self.update(&c) {
                tracing::error!("/.well-known/onionrtc.json not updated: {e:#}");
            }
        }
    }

    fn renderer(&self) -> signal::WellKnownRenderer {
        let body = Arc::clone(&self.body);
        Arc::new(move || body.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The address to print for the bound web listener: an unspecified address
/// is shown as loopback, which a local browser can open.
fn openable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(a) if a.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(a) if a.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// The web app, embedded in the binary.
fn web_assets() -> signal::WebAssets {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    signal::WebAssets {
        files: vec![
            (
                "/index.html",
                HTML,
                include_bytes!("../../../web/index.html"),
            ),
            ("/app.js", JS, include_bytes!("../../../web/app.js")),
            (
                "/signaling.js",
                JS,
                include_bytes!("../../../web/signaling.js"),
            ),
            ("/stats.js", JS, include_bytes!("../../../web/stats.js")),
            ("/ui.js", JS, include_bytes!("../../../web/ui.js")),
            ("/peer.js", JS, include_bytes!("../../../web/peer.js")),
            ("/media.js", JS, include_bytes!("../../../web/media.js")),
            (
                "/privacy.html",
                HTML,
                include_bytes!("../../../web/privacy.html"),
            ),
            ("/echo.js", JS, include_bytes!("../../../web/echo.js")),
            ("/style.css", CSS, include_bytes!("../../../web/style.css")),
        ],
    }
}

/// SIGINT and SIGTERM, caught from the moment this is made (before the
/// relay starts, so a signal sent during startup or on seeing "Open" stops
/// `serve` cleanly instead of killing it).
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    /// Requests from the relay's control socket (`[relay] control_socket`).
    control: Option<tokio::sync::mpsc::UnboundedReceiver<relay::control::Pending>>,
    /// What the control socket's `log-level` calls.
    set_log_level: Option<relay::SetLogLevel>,
}

/// What [`StopSignals::recv`] saw.
enum Event {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP.
    Reload,
    /// A control-socket request (`onionrtc ctl`).
    Control(relay::control::Pending),
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
            control: None,
            set_log_level: None,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM, SIGHUP or control request.
    async fn recv(&mut self) -> Event {
        let control = async {
            match &mut self.control {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT: stopping"),
            _ = self.term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = self.hup.recv() => {
                tracing::info!("SIGHUP: reloading the relay's configuration");
                return Event::Reload;
            }
            Some(p) = control => return Event::Control(p),
        }
        Event::Stop
    }
}

/// Resolves when a relay shard has stopped on its own.
async fn relay_stopped(handle: &relay::RelayHandle) {
    while handle.is_running() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The relay's configuration as a SIGHUP finds it: the file read again
/// (with `flags`), the data dir's TURN secret first. `[serve]` settings are
/// read at startup only; a change to them is named in the log.
fn reload_relay(
    flags: &ServeFlags,
    serve_at_start: &ServeSettings,
    secret: &str,
) -> anyhow::Result<RelayConfig> {
    let loaded = load(flags)?;
    if &loaded.serve != serve_at_start {
        tracing::warn!(
            "[serve] settings are read at startup only: restart serve to apply the changes to them"
        );
    }
    Ok(loaded.relay.with_auth_secret(secret.to_owned()))
}

/// `onionrtc serve`: runs until SIGINT or SIGTERM; SIGHUP reloads the
/// relay's configuration (see `relay::RelayHandle::reload`).
pub fn run(loaded: Loaded, flags: &ServeFlags) -> anyhow::Result<()> {
    let set_log_level = crate::relay_cmd::init_tracing();
    let serve_at_start = loaded.serve.clone();
    let Loaded { relay, mut serve } = loaded;
    if serve.relay_addresses.is_none() {
        serve.relay_addresses = Some(default_relay_addresses(&relay));
    }
    prepare_data_dir(&serve.data_dir)?;
    let secret = load_or_create_secret(&serve.data_dir)?;
    let (room_key, _) = load_or_create_secret_file(
        &serve.data_dir,
        ROOM_KEY_FILE,
        "room key",
        &base64::engine::general_purpose::STANDARD,
    )?;
    let mut serve = serve;
    for c in &serve.forward.trusted {
        if c.to_string().ends_with("/0") {
            tracing::warn!(
                "[serve] trusted_proxies has {c}: every client can then choose its address \
                 with {}; list only your reverse proxies",
                serve.forward.header
            );
        }
    }
    let token_note = match &serve.admin_token {
        Some(_) => "operator token: [serve] admin_token".to_owned(),
        None => {
            let (token, new) = load_or_create_admin_token(&serve.data_dir)?;
            serve.admin_token = Some(token);
            format!(
                "operator token: {}{}",
                serve.data_dir.join(ADMIN_TOKEN_FILE).display(),
                if new { " (generated now)" } else { "" }
            )
        }
    };
    let relay = relay.with_auth_secret(secret.clone());
    if relay.dangerous_allow_loopback_peers {
        tracing::warn!(
            "dangerous_allow_loopback_peers is on: clients may relay to loopback addresses \
             of this machine (tests only)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("serve")
        .build()
        .context("cannot start the async runtime")?;
    let mut signals = rt.block_on(async { StopSignals::install() })?;
    let handle = relay::start(&relay).context("cannot start the relay")?;
    let control_socket = match &relay.control_socket {
        Some(path) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let c = relay::control::ControlSocket::start(path, move |p| tx.send(p).is_ok())?;
            tracing::info!("control socket on {}", path.display());
            signals.control = Some(rx);
            signals.set_log_level = Some(set_log_level);
            Some(c)
        }
        None => None,
    };
    let room_key = signal::store::RoomKey::new(room_key.as_bytes());
    let reload = || reload_relay(flags, &serve_at_start, &secret);
    let result = rt.block_on(serve_web(
        &handle,
        &relay,
        serve,
        secret.clone(),
        room_key,
        &token_note,
        signals,
        &reload,
    ));
    drop(control_socket);
    rt.shutdown_timeout(Duration::from_secs(1));
    let stopped = handle.shutdown().context("the relay stopped with an error");
    let result = result.and(stopped);
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn serve_web(
    handle: &relay::RelayHandle,
    relay_config: &RelayConfig,
    serve: ServeSettings,
    secret: String,
    room_key: signal::store::RoomKey,
    token_note: &str,
    mut signals: StopSignals,
    reload: &(dyn Fn() -> anyhow::Result<RelayConfig> + Sync),
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let web_addr = listener.local_addr()?;
    let turn_urls = match serve.turn_urls.clone() {
        Some(u) => u,
        None => derive_turn_urls(&bound_listeners(handle)),
    };
    for l in bound_listeners(handle) {
        tracing::info!("relay listening on {l}");
    }
    tracing::info!("web listening on http://{web_addr} (TURN URLs {turn_urls:?}; {token_note})");
    // The site's names: loopback, [serve] hostnames, and the listener's own
    // address when it is a specific one (an IP literal cannot be rebound).
    let mut hostnames = serve.hostnames;
    if !web_addr.ip().is_unspecified() {
        hostnames.push(web_addr.ip().to_string());
    }
    let onion = match &serve.onion {
        Some(settings) => {
            let started = std::time::Instant::now();
            let svc = crate::onion::OnionService::start(
                settings,
                &serve.data_dir,
                &onion_targets(web_addr, &bound_listeners(handle)),
            )
            .await?;
            tracing::info!(
                "onion service {} (tor PID {}) ready in {:.1} s",
                svc.hostname(),
                svc.tor_pid().unwrap_or(0),
                started.elapsed().as_secs_f64()
            );
            hostnames.push(svc.hostname().to_owned());
            Some(svc)
        }
        None => None,
    };
    let onion_addresses: Vec<String> = onion.iter().map(|o| o.hostname().to_owned()).collect();
    let well_known = WellKnown::new(
        (serve.tls_next_key.clone(), serve.data_dir.clone()),
        turn_urls.clone(),
        onion_urls(&onion_addresses, &bound_listeners(handle)),
        relay_config,
    )?;
    let fronts: Vec<signal::onion::Front> = onion
        .iter()
        .flat_map(|o| o.fronts().iter().cloned())
        .collect();
    let relay_metrics = handle.metrics();
    let metrics = move || {
        let mut text = relay_metrics.render();
        if !fronts.is_empty() {
            text.push_str(&signal::onion::render_metrics(&fronts));
        }
        text
    };
    let config = signal::SignalConfig {
        data_dir: serve.data_dir,
        turn_urls,
        relay_choice: serve.relay_choice,
        relay_addresses: serve.relay_addresses.unwrap_or_default(),
        turn_secret: secret,
        credential_ttl: serve.credential_ttl,
        allowed_origins: serve.allowed_origins,
        admin_token: serve.admin_token,
        forward: serve.forward,
        hostnames,
        onion_addresses,
        max_connections_per_ip: serve.max_connections_per_ip,
        max_web_connections: serve.max_web_connections,
        max_room_size: serve.max_room_size,
        header_timeout: serve.header_timeout,
        idle_timeout: serve.idle_timeout,
        stats_retention_days: serve.stats_retention_days,
        room_key: Some(room_key),
        store_stats_samples: serve.store_stats_samples,
        database_url: serve.database_url,
        redis_url: serve.redis_url,
        metrics: Some(Arc::new(metrics)),
        web_root: web_assets(),
        echo: (serve.echo_max_sessions > 0).then(|| {
            Arc::new(signal::echo::Echo::new(
                Arc::new(crate::echo::EchoServer),
                serve.echo_max_sessions,
                serve.echo_sessions_per_minute,
            ))
        }),
        sip: serve.sip.enabled.then(|| signal::sip_ws::SipSettings {
            domain: serve.sip.domain.clone(),
            algorithms: serve.sip.algorithms.clone(),
            messages_per_sec: serve.sip.messages_per_sec,
            media: serve.sip.media.clone(),
        }),
        well_known: Some(well_known.renderer()),
        ..signal::SignalConfig::default()
    };
    if serve.sip.enabled {
        tracing::info!(
            "SIP over WebSocket on ws://{}/sip (domain {})",
            openable(web_addr),
            serve.sip.domain
        );
    }

    // Open the store before saying "Open": a failure is reported first.
    let state = tokio::task::spawn_blocking(move || signal::SignalState::new(config))
        .await
        .context("opening the statistics store panicked")?
        .context("cannot open the statistics store")?;
    tracing::info!(
        "web connections: at most {} at once ({} per address)",
        state.max_web_connections(),
        state.config().max_connections_per_ip
    );
    let sip_tls = match &serve.sip.tls {
        Some(files) => Some(sip_tls_config(files)?),
        None => None,
    };
    if !serve.sip.listen.is_empty() {
        let bound = signal::sip_net::start(&state, &serve.sip.listen, sip_tls.clone())
            .await
            .context("cannot open a [sip] listen address")?;
        for (l, addr) in serve.sip.listen.iter().zip(&bound) {
            let scheme = l.to_string();
            let scheme = scheme.split("://").next().unwrap_or("");
            tracing::info!("SIP over {} on {addr}", scheme.to_ascii_uppercase());
        }
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(signal::serve_state(state, listener, async move {
        let _ = stop_rx.await;
    }));
    println!("Open http://{}/", openable(web_addr));
    if let Some(o) = &onion {
        for (name, port) in o.ports() {
            let url = match name.as_str() {
                "web" => format!("http://{}/", o.hostname()),
                "turn_tls" => format!("turns:{}:{port}?transport=tcp", o.hostname()),
                _ => format!("turn:{}:{port}?transport=tcp", o.hostname()),
            };
            tracing::info!("onion service: {name} at {url}");
        }
        println!("Onion http://{}/", o.hostname());
    }
    {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }

    let why = loop {
        tokio::select! {
            event = signals.recv() => match event {
                Event::Stop => break None,
                // Reading files and waiting for the relay thread blocks.
                Event::Reload => tokio::task::block_in_place(|| {
                    let mut fresh = None;
                    relay::reload_logged(handle, || {
                        let c = reload()?;
                        fresh = Some(c.clone());
                        Ok(c)
                    });
                    well_known.follow(fresh);
                    reload_sip_tls(sip_tls.as_ref(), serve.sip.tls.as_ref());
                }),
                Event::Control(p) => {
                    let answer = tokio::task::block_in_place(|| {
                        let mut fresh = None;
                        let answer = relay::control(
                            handle,
                            p.request,
                            || {
                                let c = reload()?;
                                fresh = Some(c.clone());
                                Ok(c)
                            },
                            signals.set_log_level.as_ref(),
                        );
                        if fresh.is_some() {
                            reload_sip_tls(sip_tls.as_ref(), serve.sip.tls.as_ref());
                        }
                        well_known.follow(fresh);
                        answer
                    });
                    let _ = p.reply.send(answer);
                }
            },
            () = relay_stopped(handle) => break Some("the relay stopped unexpectedly"),
            r = &mut server => {
                return match r {
                    Ok(Ok(())) => Err(anyhow::anyhow!("the signaling server stopped unexpectedly")),
                    Ok(Err(e)) => Err(e.context("the signaling server failed")),
                    Err(e) => Err(anyhow::anyhow!("the signaling server panicked: {e}")),
                };
            }
        }
    };
    let _ = stop_tx.send(());
    if let Some(o) = onion {
        // New onion connections stop first; spliced ones close with the
        // listeners they reach.
        o.stop().await;
    }
    match tokio::time::timeout(STOP_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e.context("the signaling server failed while stopping")),
        Ok(Err(e)) => bail!("the signaling server panicked: {e}"),
        Err(_) => tracing::warn!(
            "the signaling server did not stop within {STOP_GRACE:?}; closing its connections"
        ),
    }
    match why {
        None => Ok(()),
        Some(reason) => bail!(reason),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use base64::Engine as _;

    fn flags() -> ServeFlags {
        ServeFlags {
            config: None,
            data_dir: None,
            listen: None,
            onion: false,
            tor_binary: None,
            tor_extra_config: None,
        }
    }

    fn settings(text: &str) -> anyhow::Result<ServeSettings> {
        let file = parse_file(text, "text")?.unwrap_or_default();
        resolve(file, Path::new("/etc/onionrtc"), &flags())
    }

    fn sip(text: &str, serve: &str) -> anyhow::Result<SipSettings> {
        let tables = parse_tables(text, "text")?;
        let serve = settings(serve)?;
        resolve_sip(
            tables.sip.unwrap_or_default(),
            &serve,
            Path::new("/etc/onionrtc"),
            None,
        )
    }

    #[test]
    fn sip_tls_certificate() {
        let relay = relay::config::TlsFiles {
            cert: "/etc/relay/cert.pem".into(),
            key: "/etc/relay/key.pem".into(),
        };
        let text = "[sip]\nenabled = true\nlisten = [\"tls://127.0.0.1:5061\"]\n";
        let tables = parse_tables(text, "text").unwrap();
        let serve = settings("").unwrap();
        let base = Path::new("/etc/onionrtc");
        // The relay's certificate by default; none at all is an error.
        let s = resolve_sip(tables.sip.unwrap_or_default(), &serve, base, Some(&relay)).unwrap();
        assert_eq!(s.tls.as_ref(), Some(&relay));
        assert!(sip(text, "").unwrap_err().to_string().contains("tls_cert"));
        // Its own, relative to the configuration file; both or neither.
        let own = format!("{text}tls_cert = \"sip.pem\"\ntls_key = \"sip.key\"\n");
        let t = parse_tables(&own, "text").unwrap();
        let s = resolve_sip(t.sip.unwrap_or_default(), &serve, base, Some(&relay)).unwrap();
        let tls = s.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/etc/onionrtc/sip.pem"));
        assert_eq!(tls.key, Path::new("/etc/onionrtc/sip.key"));
        assert!(sip(&format!("{text}tls_cert = \"a\"\n"), "").is_err());
        // No tls:// listener: no certificate is needed or kept.
        let s = sip(
            "[sip]\nenabled = true\nlisten = [\"udp://127.0.0.1:5060\"]\n",
            "",
        )
        .unwrap();
        assert!(s.tls.is_none());
    }

    #[test]
    fn sip_table() {
        use signal::sip_ws::SipAlgorithm as A;
        // Off by default; the domain is the site's name, else the listener's address.
        let s = sip("", "").unwrap();
        assert!(!s.enabled);
        assert_eq!(s.domain, "127.0.0.1");
        assert_eq!(s.algorithms, vec![A::Sha256, A::Md5]);
        let s = sip("", "[serve]\nhostnames = [\"Call.Example.org\"]").unwrap();
        assert_eq!(s.domain, "call.example.org");
        let s = sip(
            "[sip]\nenabled = true\ndomain = \"sip.example.org\"\ndigest_algorithms = [\"SHA-256\"]",
            "",
        )
        .unwrap();
        assert!(s.enabled);
        assert_eq!(
            (s.domain.as_str(), s.algorithms),
            ("sip.example.org", vec![A::Sha256])
        );
        for bad in [
            "[sip]\ndomain = \"a b\"",
            "[sip]\ndigest_algorithms = []",
            "[sip]\ndigest_algorithms = [\"SHA-512\"]",
            "[sip]\ndigest_algorithms = [\"MD5\", \"md5\"]",
            "[sip]\nunknown = 1",
            // Listeners: valid entries, only with enabled, not the web listener.
            "[sip]\nenabled = true\nlisten = [\"udp://127.0.0.1\"]",
            "[sip]\nenabled = true\nlisten = [\"tls://127.0.0.1:5061\"]",
            "[sip]\nenabled = true\nlisten = [\"udp://sip.example.org:5060\"]",
            "[sip]\nenabled = true\nlisten = [\"udp://127.0.0.1:5060\", \"udp://127.0.0.1:5060\"]",
            "[sip]\nenabled = true\nlisten = [\"tcp://127.0.0.1:8080\"]",
            "[sip]\nlisten = [\"udp://127.0.0.1:5060\"]",
            "[sip]\nenabled = true\nmessages_per_sec = 0",
        ] {
            assert!(sip(bad, "").is_err(), "{bad}");
        }
        assert!(s.listen.is_empty());
        assert_eq!(s.messages_per_sec, SIP_MESSAGES_PER_SEC);
        let s = sip(
            "[sip]\nenabled = true\nlisten = [\"udp://127.0.0.1:5060\", \"tcp://[::1]:5060\"]\nmessages_per_sec = 500",
            "",
        )
        .unwrap();
        let listen: Vec<String> = s.listen.iter().map(ToString::to_string).collect();
        assert_eq!(listen, ["udp://127.0.0.1:5060", "tcp://[::1]:5060"]);
        assert_eq!(s.messages_per_sec, 500);
        // An unspecified listener and no name: a domain is needed when on.
        let any = "[serve]\nlisten = \"0.0.0.0:8080\"";
        assert!(sip("[sip]\nenabled = true", any).is_err());
        assert!(sip("", any).is_ok());

        // The media bridge: off by default; the address defaults to the
        // first specific listen IP.
        let on =
            "[sip]\nenabled = true\nlisten = [\"udp://0.0.0.0:5060\", \"udp://192.0.2.5:5062\"]\n";
        assert_eq!(sip(on, "").unwrap().media, None);
        let m = sip(&format!("{on}media_ports = \"30000-30399\""), "")
            .unwrap()
            .media
            .unwrap();
        assert_eq!(
            (m.address, m.first, m.last),
            ("192.0.2.5".parse().unwrap(), 30_000, 30_399)
        );
        assert_eq!(m.capacity(), 100);
        let m = sip(
            &format!("{on}media_ports = \"30000-30003\"\nmedia_address = \"::1\""),
            "",
        )
        .unwrap()
        .media
        .unwrap();
        assert_eq!(m.address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(m.idle, signal::sip_media::IDLE_TIMEOUT);
        let m = sip(
            &format!("{on}media_ports = \"30000-30003\"\nmedia_timeout = 5"),
            "",
        )
        .unwrap()
        .media
        .unwrap();
        assert_eq!(m.idle, std::time::Duration::from_secs(5));
        for bad in [
            "media_ports = \"30000-30099\"\nmedia_timeout = 0",
            "media_ports = \"30000-30099\"\nmedia_timeout = 86401",
            "media_timeout = 30",
            "media_ports = \"30000-30002\"",
            "media_ports = \"x\"",
            "media_ports = \"30000-30099\"\nmedia_address = \"0.0.0.0\"",
            "media_ports = \"30000-30099\"\nmedia_address = \"phones.example\"",
            "media_address = \"192.0.2.5\"",
        ] {
            assert!(sip(&format!("{on}{bad}"), "").is_err(), "{bad}");
        }
        // Needs a specific address, and phones (listen).
        let any_listen = "[sip]\nenabled = true\nlisten = [\"udp://0.0.0.0:5060\"]\nmedia_ports = \"30000-30099\"";
        assert!(sip(any_listen, "").is_err());
        assert!(sip("[sip]\nenabled = true\nmedia_ports = \"30000-30099\"", "").is_err());
    }

    #[test]
    fn defaults_and_file_values() {
        let s = settings("").unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("onionrtc-data"));
        assert_eq!(s.stats_retention_days, 7);
        assert_eq!(s.credential_ttl, Duration::from_secs(600));
        assert!(s.turn_urls.is_none() && s.admin_token.is_none());
        assert!(!s.store_stats_samples);
        assert!(s.forward.trusted.is_empty());
        assert_eq!(s.forward.header.as_str(), "x-forwarded-for");
        assert_eq!(s.max_connections_per_ip, DEFAULT_MAX_CONNECTIONS_PER_IP);
        assert_eq!(s.max_room_size, DEFAULT_MAX_ROOM_SIZE);
        assert_eq!(s.max_web_connections, 0);

        let s = settings(
            r#"
            [serve]
            listen = "0.0.0.0:443"
            data_dir = "data"
            allowed_origins = ["https://call.example.org"]
            admin_token = "0123456789abcdef0123"
            stats_retention_days = 30
            turn_urls = ["turns:call.example.org:443?transport=tcp"]
            credential_ttl_secs = 3600
            store_stats_samples = true
            trusted_proxies = ["127.0.0.1", "::1/128"]
            forwarded_header = "X-Real-IP"
            hostnames = ["call.example.org"]
            max_connections_per_ip = 16
            max_web_connections = 5000
            max_room_size = 8
            header_timeout_secs = 5
            idle_timeout_secs = 30
            "#,
        )
        .unwrap();
        assert_eq!(s.forward.trusted.len(), 2);
        assert_eq!(s.forward.header.as_str(), "x-real-ip");
        assert_eq!(s.hostnames, ["call.example.org"]);
        assert_eq!(s.max_room_size, 8);
        assert_eq!(
            (s.max_connections_per_ip, s.max_web_connections),
            (16, 5000)
        );
        assert_eq!(s.header_timeout, Duration::from_secs(5));
        assert_eq!(s.idle_timeout, Duration::from_secs(30));
        assert_eq!(s.listen.port(), 443);
        assert_eq!(s.data_dir, PathBuf::from("/etc/onionrtc/data"));
        assert_eq!(s.credential_ttl, Duration::from_secs(3600));
        assert!(s.store_stats_samples);
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = parse_file("[serve]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"x\"", "t")
            .unwrap()
            .unwrap();
        let f = ServeFlags {
            config: None,
            data_dir: Some("y".into()),
            listen: Some("127.0.0.1:2".into()),
            ..flags()
        };
        let s = resolve(file, Path::new("/base"), &f).unwrap();
        assert_eq!(s.listen.port(), 2);
        assert_eq!(s.data_dir, PathBuf::from("y"));
    }

    #[test]
    fn echo_keys() {
        let s = settings("[serve]").unwrap();
        assert_eq!(
            (s.echo_max_sessions, s.echo_sessions_per_minute),
            (DEFAULT_ECHO_MAX_SESSIONS, DEFAULT_ECHO_SESSIONS_PER_MINUTE)
        );
        let s = settings("[serve]\necho_max_sessions = 0\necho_sessions_per_minute = 3").unwrap();
        assert_eq!((s.echo_max_sessions, s.echo_sessions_per_minute), (0, 3));
        for (text, needle) in [
            ("[serve]\necho_max_sessions = 10001", "echo_max_sessions"),
            (
                "[serve]\necho_sessions_per_minute = 0",
                "echo_sessions_per_minute",
            ),
        ] {
            let e = settings(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn onion_keys() {
        assert_eq!(settings("[serve]").unwrap().onion, None);
        let s = settings("[serve]\nonion = true\ntor_extra_config = \"extra\"").unwrap();
        assert_eq!(
            s.onion,
            Some(crate::onion::OnionSettings {
                tor_binary: None,
                extra_config: Some(PathBuf::from("/etc/onionrtc/extra")),
            })
        );
        let f = ServeFlags {
            onion: true,
            tor_binary: Some("/opt/tor".into()),
            ..flags()
        };
        let s = resolve(ServeFile::default(), Path::new("/b"), &f).unwrap();
        assert_eq!(s.onion.unwrap().tor_binary, Some(PathBuf::from("/opt/tor")));
        // Tor flags without onion mode, and trusted proxies covering the
        // onion callers' identities, are refused.
        let f = ServeFlags {
            tor_binary: Some("/opt/tor".into()),
            ..flags()
        };
        let e = resolve(ServeFile::default(), Path::new("/b"), &f).unwrap_err();
        assert!(e.to_string().contains("--onion"), "{e}");
        for cidr in ["127.0.0.0/8", "127.200.0.0/16", "127.128.0.1", "0.0.0.0/0"] {
            let text = format!("[serve]\nonion = true\ntrusted_proxies = [\"{cidr}\"]");
            let e = settings(&text).unwrap_err().to_string();
            assert!(e.contains("127.128.0.0/9"), "{cidr}: {e}");
        }
        assert!(settings("[serve]\nonion = true\ntrusted_proxies = [\"127.0.0.1/32\"]").is_ok());
        let shown = redacted_toml(
            &settings("[serve]\nonion = true").unwrap(),
            &RelayConfig::defaults(),
        );
        assert!(shown.contains("onion = true\n"), "{shown}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, needle) in [
            ("[serve]\nlisen = \"x\"", "unknown field `lisen`"),
            ("[serve]\nlisten = \"localhost:80\"", "listen"),
            (
                "[serve]\nallowed_origins = [\"example.org\"]",
                "allowed_origins",
            ),
            (
                "[serve]\nallowed_origins = [\"https://a/b\"]",
                "allowed_origins",
            ),
            ("[serve]\nadmin_token = \"short\"", "admin_token"),
            ("[serve]\nstats_retention_days = 0", "stats_retention_days"),
            ("[serve]\nturn_urls = []", "turn_urls"),
            ("[serve]\nturn_urls = [\"stun:x:1\"]", "turn_urls"),
            ("[serve]\ncredential_ttl_secs = 5", "credential_ttl_secs"),
            (
                "[serve]\ntrusted_proxies = [\"127.0.0.1/33\"]",
                "trusted_proxies",
            ),
            (
                "[serve]\ntrusted_proxies = [\"10.0.0.1/8\"]",
                "trusted_proxies",
            ),
            (
                "[serve]\nforwarded_header = \"forwarded\"",
                "forwarded_header",
            ),
            ("[serve]\nforwarded_header = \"x y\"", "forwarded_header"),
            ("[serve]\nhostnames = [\"https://a.example\"]", "hostnames"),
            ("[serve]\nhostnames = [\"a.example:443\"]", "hostnames"),
            (
                "[serve]\nmax_connections_per_ip = 0",
                "max_connections_per_ip",
            ),
            ("[serve]\nmax_web_connections = 3", "max_web_connections"),
            ("[serve]\nmax_room_size = 1", "max_room_size"),
            ("[serve]\nmax_room_size = 9", "max_room_size"),
            ("[serve]\nheader_timeout_secs = 0", "header_timeout_secs"),
            ("[serve]\nidle_timeout_secs = 1", "idle_timeout_secs"),
            ("[serve]\ndatabase_url = \"/var/db\"", "database_url"),
            (
                "[serve]\ndatabase_url = \"postgres://u:pw@db.example/s\"",
                "not a loopback",
            ),
            ("[serve]\ntrust_loopback_metrics = true", "unknown field"),
        ] {
            let e = settings(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let e = settings("[serve]\nadmin_token = \"short secret\"")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("short secret"), "{e}");
        let e = settings("[serve]\ndatabase_url = \"postgres://u:s3cret@192.0.2.9/s\"")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn relay_choice_is_all_or_per_room() {
        assert_eq!(
            settings("[serve]").unwrap().relay_choice,
            signal::RelayChoice::All
        );
        assert_eq!(
            settings("[serve]\nrelay_choice = \"per-room\"")
                .unwrap()
                .relay_choice,
            signal::RelayChoice::PerRoom
        );
        let e = settings("[serve]\nrelay_choice = \"random\"").unwrap_err();
        assert!(format!("{e:#}").contains("per-room"), "{e:#}");
    }

    #[test]
    fn redis_url_needs_tls_off_this_machine_and_is_shown_redacted() {
        for (text, needle) in [
            ("[serve]\nredis_url = \"127.0.0.1:6379\"", "redis://"),
            (
                "[serve]\nredis_url = \"redis://:s3cret@redis.example:6379/\"",
                "needs TLS: use rediss://",
            ),
            (
                "[serve]\nredis_url = \"redis://:s3cret@192.0.2.9/\"",
                "needs TLS",
            ),
        ] {
            let e = settings(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let relay = RelayConfig::defaults();
        for url in [
            "redis://:s3cret@127.0.0.1:6379/",
            "rediss://onionrtc:s3cret@redis.example:6380/0",
        ] {
            let s = settings(&format!("[serve]\nredis_url = \"{url}\"\n")).unwrap();
            assert_eq!(s.redis_url.as_deref(), Some(url));
            let shown = redacted_toml(&s, &relay);
            assert!(shown.contains("redis_url = "), "{shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
            let debug = format!("{s:?}");
            assert!(debug.contains("redis_url"), "{debug}");
            assert!(!debug.contains("s3cret"), "{debug}");
        }
        let unset = redacted_toml(&settings("[serve]\n").unwrap(), &relay);
        assert!(unset.contains("# redis_url: unset"), "{unset}");
    }

    #[test]
    fn database_url_is_accepted_and_shown_redacted() {
        let text =
            "[serve]\ndatabase_url = \"postgres://stats:s3cret-pw@127.0.0.1:5432/onionrtc\"\n";
        let s = settings(text).unwrap();
        assert_eq!(
            s.database_url.as_deref(),
            Some("postgres://stats:s3cret-pw@127.0.0.1:5432/onionrtc")
        );
        let relay = RelayConfig::defaults();
        let shown = redacted_toml(&s, &relay);
        assert!(
            shown
                .contains("database_url = \"postgres://stats:<redacted>@127.0.0.1:5432/onionrtc\""),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!format!("{s:?}").contains("s3cret"));
        // The shown text parses back (check-config output is a config).
        let unset = redacted_toml(&settings("[serve]\n").unwrap(), &relay);
        assert!(unset.contains("# database_url: unset"), "{unset}");
    }

    #[test]
    fn turn_urls_from_listeners() {
        let l = |s: &str| -> Listen { s.parse().unwrap() };
        let urls = derive_turn_urls(&[
            l("tls://127.0.0.1:5349"),
            l("tcp://[::1]:3478"),
            l("udp://127.0.0.1:3478"),
        ]);
        assert_eq!(
            urls,
            [
                "turn:127.0.0.1:3478?transport=udp",
                "turn:[::1]:3478?transport=tcp",
                "turns:127.0.0.1:5349?transport=tcp",
            ]
        );
    }

    #[test]
    fn unspecified_relay_address_needs_turn_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[relay]\nlisten = [\"udp://0.0.0.0:3478\"]\nrelay_ip = \"192.0.2.1\"\n",
        )
        .unwrap();
        let f = ServeFlags {
            config: Some(path.clone()),
            ..flags()
        };
        let e = load(&f).unwrap_err().to_string();
        assert!(e.contains("turn_urls") && e.contains("0.0.0.0:3478"), "{e}");
        std::fs::write(
            &path,
            "[relay]\nlisten = [\"udp://0.0.0.0:3478\"]\nrelay_ip = \"192.0.2.1\"\n\
             [serve]\nturn_urls = [\"turn:192.0.2.1:3478?transport=udp\"]\n",
        )
        .unwrap();
        load(&f).unwrap();
    }

    #[test]
    fn relay_addresses_default_to_what_the_relay_hands_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[relay]\nlisten = [\"udp://192.0.2.1:3478\"]\nexternal_ip = \"203.0.113.7\"\n\
             relay_ip6 = \"2001:db8::1\"\nexternal_ip6 = \"2001:db8::7\"\n",
        )
        .unwrap();
        let f = ServeFlags {
            config: Some(path.clone()),
            ..flags()
        };
        let loaded = load(&f).unwrap();
        assert!(loaded.serve.relay_addresses.is_none());
        let got: Vec<String> = default_relay_addresses(&loaded.relay)
            .iter()
            .map(Cidr::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "192.0.2.1/32",
                "2001:db8::1/128",
                "203.0.113.7/32",
                "2001:db8::7/128"
            ]
        );
        let shown = redacted_toml(&loaded.serve, &loaded.relay);
        assert!(
            shown.contains("relay_addresses = [\"192.0.2.1/32\""),
            "{shown}"
        );

        let s = settings("[serve]\nrelay_addresses = [\"198.51.100.0/24\", \"2001:db8:5::9\"]\n")
            .unwrap();
        let set: Vec<String> = s
            .relay_addresses
            .unwrap()
            .iter()
            .map(Cidr::to_string)
            .collect();
        assert_eq!(set, ["198.51.100.0/24", "2001:db8:5::9/128"]);
        for bad in ["[]", "[\"relay.example\"]", "[\"10.0.0.1/8\"]"] {
            let e = settings(&format!("[serve]\nrelay_addresses = {bad}\n")).unwrap_err();
            assert!(e.to_string().contains("relay_addresses"), "{e}");
        }
    }

    #[test]
    fn secret_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        prepare_data_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let s1 = load_or_create_secret(&data).unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&s1)
                .unwrap()
                .len(),
            32
        );
        let path = data.join(SECRET_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_secret(&data).unwrap(), s1);
        // Looser permissions are fixed.
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create_secret(&data).unwrap(), s1);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // An empty file is an error, not an empty secret.
        std::fs::write(&path, "\n").unwrap();
        assert!(load_or_create_secret(&data).is_err());
        // The room key is another secret of its own.
        let k = load_or_create_secret_file(
            &data,
            ROOM_KEY_FILE,
            "room key",
            &base64::engine::general_purpose::STANDARD,
        )
        .unwrap()
        .0;
        assert_ne!(k, s1);
        let path = data.join(ROOM_KEY_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            load_or_create_secret_file(
                &data,
                ROOM_KEY_FILE,
                "room key",
                &base64::engine::general_purpose::STANDARD
            )
            .unwrap()
            .0,
            k
        );

        // The operator token: its own file, URL-safe, made once.
        let (t1, new) = load_or_create_admin_token(&data).unwrap();
        assert!(new);
        assert!(t1.len() >= 43 && !t1.contains(['+', '/', '=']), "{t1}");
        let path = data.join(ADMIN_TOKEN_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_admin_token(&data).unwrap(), (t1, false));
    }

    #[test]
    fn an_open_data_dir_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("signal.sqlite"), "").unwrap();
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(data.join("signal.sqlite"), Permissions::from_mode(0o644))
            .unwrap();
        prepare_data_dir(&data).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("signal.sqlite")), 0o600);
        // A file is not a data directory.
        assert!(prepare_data_dir(&data.join("signal.sqlite")).is_err());
    }
}

//! [`SignalConfig`]: everything the signaling server needs, with the
//! defaults of docs/signaling.md, and [`WebAssets`], the embedded web app.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::client_addr::ForwardRule;
use crate::store::RoomKey;

/// Renders Prometheus text for `GET /metrics` (under `serve`, the relay's).
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Renders the JSON of `GET /.well-known/onionrtc.json` (the connector's
/// document: TURN URLs, TLS pins, onion addresses). Called per request, so
/// a certificate reload shows at once; it must not depend on the client.
pub type WellKnownRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Which of `turn_urls` a member is given (`[serve] relay_choice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayChoice {
    /// Every URL: each browser allocates on every relay listed. A relay
    /// that is down costs nothing (failover), but every relay carries
    /// allocations of every call.
    #[default]
    All,
    /// The URLs of one relay (URLs grouped by host), the same for every
    /// member of a room on every node: chosen by the keyed room hash
    /// (`room_key`, shared by the nodes), so calls spread over the relays
    /// and each call stays on one. A relay that is down fails the rooms
    /// that hash to it.
    PerRoom,
}

/// The signaling server's configuration. Build it with `Default` and set
/// fields: `SignalConfig { turn_secret, turn_urls, ..Default::default() }`.
#[derive(Clone)]
pub struct SignalConfig {
    /// Where `signal.sqlite` lives (created with mode 0700 if missing).
    /// Default `./onionrtc-data`.
    pub data_dir: PathBuf,
    /// What goes into `iceServers[0].urls`, e.g.
    /// `turn:relay.example:3478?transport=udp`.
    pub turn_urls: Vec<String>,
    /// Which of `turn_urls` a member gets. Default [`RelayChoice::All`].
    pub relay_choice: RelayChoice,
    /// The networks our relays hand out addresses in: a relay candidate
    /// whose address is outside them is dropped by the sanitizer (and
    /// counted). Empty (the default): no relay candidate passes. `serve`
    /// sets it from `[serve] relay_addresses`, by default the local relay's
    /// relay and external addresses.
    pub relay_addresses: Vec<turn::policy::Cidr>,
    /// The TURN REST shared secret (the relay's current `auth_secret`).
    pub turn_secret: String,
    /// How long issued TURN credentials are valid. Default 600 s.
    pub credential_ttl: Duration,
    /// Origins accepted for the WebSocket upgrade besides the page's own
    /// (`http(s)://` + `Host`), e.g. `https://call.example`.
    pub allowed_origins: Vec<String>,
    /// The operator token: `/api/calls`, `/api/calls/{id}`, `/calls` and
    /// `/metrics` require `Authorization: Bearer <token>` (or, for the
    /// `/calls` pages, a session cookie from the token form) from every
    /// client, loopback included. `None`: those endpoints answer 403.
    pub admin_token: Option<String>,
    /// Which peers' forwarding header is believed, and which header
    /// (see [`crate::client_addr`]). Default: nobody's.
    pub forward: ForwardRule,
    /// Names of the site besides loopback names and addresses (`localhost`,
    /// `127.0.0.1`, `[::1]`, any port): the operator endpoints answer 421 to
    /// a request whose `Host` is none of them (DNS rebinding). Host names or
    /// IP addresses, without port, e.g. `call.example.org`.
    pub hostnames: Vec<String>,
    /// The onion addresses (`NAME.onion`, no scheme or port) this site is
    /// published at by `serve --onion`, for `/.well-known/onionrtc.json`;
    /// each is also in `hostnames`. Empty without onion mode.
    pub onion_addresses: Vec<String>,
    /// Stored statistics older than this many days are deleted. Default 7.
    pub stats_retention_days: u32,
    /// The key of the room-name hash stored instead of room names (under
    /// `serve`: `DATA_DIR/room-key`). `None`: a random key per process, so
    /// looking up a room by name finds only calls since the start.
    pub room_key: Option<RoomKey>,
    /// Store every statistics sample (per-second byte counts and bit rates,
    /// which show when each person talks), not only per-call aggregates.
    /// Default false.
    pub store_stats_samples: bool,
    /// The statistics store in PostgreSQL (`postgres://…` on this machine
    /// or a Unix socket; see [`pgconn`]) instead of `data_dir/signal.sqlite`.
    /// Default `None`. Shown redacted by `Debug`.
    pub database_url: Option<String>,
    /// Rooms in Redis shared by several nodes (`redis://` on loopback,
    /// `rediss://` elsewhere; see [`crate::cluster`]) instead of this
    /// process's memory. Default `None`. The nodes must share `room_key`.
    /// Shown redacted by `Debug`.
    pub redis_url: Option<String>,
    /// Largest WebSocket message in bytes. Default 65,536.
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection. Default 50.
    pub messages_per_sec: u32,
    /// Message burst per connection. Default 100.
    pub messages_burst: u32,
    /// Joins per minute per client address (IPv6: per /64). Default 20.
    pub joins_per_minute_per_ip: u32,
    /// Rooms at once. Default 10,000.
    pub max_rooms: usize,
    /// Members per room (a full mesh: each member holds a peer connection
    /// to every other). Default 6; at most [`crate::MAX_ROOM_SIZE`] (8),
    /// at least 2 (values outside are clamped).
    pub max_room_size: usize,
    /// WebSocket connections at once (joined or not). Default 20,000.
    pub max_connections: usize,
    /// A connection that has not joined within this time is closed.
    /// Default 30 s.
    pub join_timeout: Duration,
    /// Web connections (HTTP and WebSocket) at once per address: the TCP
    /// peer's for peers that are not trusted proxies, and WebSockets per
    /// client address (IPv6: per /64). Default 64.
    pub max_connections_per_ip: usize,
    /// Web connections at once in all. 0 (default): half the process's
    /// open-file limit at startup minus [`crate::listener::FD_RESERVE`],
    /// leaving the other half to the relay; a larger value is lowered to
    /// that.
    pub max_web_connections: usize,
    /// A request's header must arrive within this time. Default 10 s.
    pub header_timeout: Duration,
    /// A connection on which nothing is read or written for this long is
    /// closed (HTTP keep-alive; WebSockets are pinged every 20 s). Default
    /// 60 s.
    pub idle_timeout: Duration,
    /// Renders the Prometheus text for `GET /metrics`; `None` answers 404.
    /// The signaling server's own gauges and counters are appended.
    pub metrics: Option<MetricsRenderer>,
    /// The web app's files.
    pub web_root: WebAssets,
    /// The echo test (`/api/echo`); `None` answers 404.
    pub echo: Option<Arc<crate::echo::Echo>>,
    /// SIP over WebSocket at `/sip` and `/api/sip/turn`; `None` (the
    /// default): both answer 404.
    pub sip: Option<crate::sip_ws::SipSettings>,
    /// `GET /.well-known/onionrtc.json`; `None` (the default) answers 404.
    pub well_known: Option<WellKnownRenderer>,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            data_dir: PathBuf::from("./onionrtc-data"),
            turn_urls: Vec::new(),
            relay_choice: RelayChoice::All,
            relay_addresses: Vec::new(),
            turn_secret: String::new(),
            credential_ttl: Duration::from_secs(600),
            allowed_origins: Vec::new(),
            admin_token: None,
            forward: ForwardRule::default(),
            hostnames: Vec::new(),
            onion_addresses: Vec::new(),
            stats_retention_days: 7,
            room_key: None,
            store_stats_samples: false,
            database_url: None,
            redis_url: None,
            max_message_bytes: 65_536,
            messages_per_sec: 50,
            messages_burst: 100,
            joins_per_minute_per_ip: 20,
            max_rooms: 10_000,
            max_room_size: 6,
            max_connections: 20_000,
            join_timeout: Duration::from_secs(30),
            max_connections_per_ip: 64,
            max_web_connections: 0,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            metrics: None,
            web_root: WebAssets::default(),
            echo: None,
            sip: None,
            well_known: None,
        }
    }
}

impl fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalConfig")
            .field("data_dir", &self.data_dir)
            .field("turn_urls", &self.turn_urls)
            .field("relay_choice", &self.relay_choice)
            .field("relay_addresses", &self.relay_addresses)
            .field("turn_secret", &"<redacted>")
            .field("credential_ttl", &self.credential_ttl)
            .field("allowed_origins", &self.allowed_origins)
            .field("forward", &self.forward)
            .field("hostnames", &self.hostnames)
            .field("onion_addresses", &self.onion_addresses)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("stats_retention_days", &self.stats_retention_days)
            .field("room_key", &self.room_key)
            .field("store_stats_samples", &self.store_stats_samples)
            .field(
                "database_url",
                &self.database_url.as_deref().map(pgconn::redact),
            )
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(crate::cluster::redact),
            )
            .field("max_message_bytes", &self.max_message_bytes)
            .field("messages_per_sec", &self.messages_per_sec)
            .field("messages_burst", &self.messages_burst)
            .field("joins_per_minute_per_ip", &self.joins_per_minute_per_ip)
            .field("max_rooms", &self.max_rooms)
            .field("max_room_size", &self.max_room_size)
            .field("max_connections", &self.max_connections)
            .field("join_timeout", &self.join_timeout)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_web_connections", &self.max_web_connections)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("metrics", &self.metrics.as_ref().map(|_| "<fn>"))
            .field("web_root", &self.web_root)
            .field("echo", &self.echo)
            .field("sip", &self.sip)
            .finish()
    }
}

/// The web app's files, embedded in the binary: `(path, content type,
/// bytes)`, e.g. `("/app.js", "text/javascript; charset=utf-8",
/// include_bytes!(…))`. `GET /` and `GET /index.html` answer the
/// `"/index.html"` entry; other paths their own entry; anything else 404.
#[derive(Clone, Default)]
pub struct WebAssets {
    /// `(path starting with '/', content type, body)`.
    pub files: Vec<(&'static str, &'static str, &'static [u8])>,
}

impl WebAssets {
    /// The entry for a request path (`/` means `/index.html`).
    pub fn get(&self, path: &str) -> Option<(&'static str, &'static [u8])> {
        let path = if path == "/" { "/index.html" } else { path };
        self.files
            .iter()
            .find(|(p, _, _)| *p == path)
            .map(|(_, ctype, body)| (*ctype, *body))
    }
}

impl fmt::Debug for WebAssets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|(p, t, b)| (p, t, b.len())))
            .finish()
    }
}

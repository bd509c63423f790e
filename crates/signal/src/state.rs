//! [`SignalState`]: the configuration, rooms, limiters and store shared by
//! every request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::config::SignalConfig;
use crate::listener::{self, WebLimits};
use crate::operator::Sessions;
use crate::ratelimit::JoinLimiter;
use crate::rooms::{RoomBackend, Rooms};
use crate::store::{RoomKey, Store, StoreError, StoreOptions};

/// Everything the handlers share. Cloning is cheap (one `Arc`).
#[derive(Debug, Clone)]
pub struct SignalState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: SignalConfig,
    pub(crate) rooms: RoomBackend,
    pub(crate) joins: JoinLimiter,
    pub(crate) store: Store,
    pub(crate) next_conn: AtomicU64,
    pub(crate) connections: AtomicUsize,
    pub(crate) counters: Counters,
    pub(crate) shutdown: watch::Sender<bool>,
    /// The web listener's limits and counters.
    pub(crate) web: WebLimits,
    /// Operator sessions of the `/calls` pages.
    pub(crate) sessions: Sessions,
    /// SIP over WebSocket, when `[sip]` is enabled.
    pub(crate) sip: Option<Arc<crate::sip_ws::SipRuntime>>,
    /// Random per-process key; tokens are compared as HMACs under it, so the
    /// comparison is constant-time whatever their lengths.
    token_key: [u8; 32],
    token_mac: Option<String>,
}

/// Monotonic counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) joins: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) candidates_dropped: AtomicU64,
    pub(crate) foreign_relay_candidates: AtomicU64,
    pub(crate) descriptions_rejected: AtomicU64,
    pub(crate) sdp_lines_removed: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) samples: AtomicU64,
    /// Requests from a trusted proxy whose forwarding header was unreadable.
    pub(crate) forwarded_malformed: AtomicU64,
    /// `refresh` messages answered with new credentials.
    pub(crate) refreshes: AtomicU64,
    /// Messages whose `to` named no other member of the sender's room.
    pub(crate) misaddressed: AtomicU64,
}

impl SignalState {
    /// Opens the store (creating `data_dir`, or connecting to
    /// `database_url`) and sets everything up. Blocking (SQLite,
    /// PostgreSQL's client); call it before serving, not on an async task.
    pub fn new(config: SignalConfig) -> Result<SignalState, StoreError> {
        if config.turn_secret.is_empty() || config.turn_urls.is_empty() {
            tracing::warn!("signal: no TURN secret or URLs configured; calls will not connect");
        }
        let room_key = config.room_key.clone().unwrap_or_else(|| {
            tracing::warn!("signal: no room key configured; room hashes change on restart");
            RoomKey::random()
        });
        let rooms = match &config.redis_url {
            None => RoomBackend::Local(Rooms::new(config.max_rooms, config.max_room_size)),
            Some(url) => {
                crate::cluster::check_url(url)
                    .map_err(|e| StoreError::Config(format!("redis_url: {e}")))?;
                if config.room_key.is_none() {
                    return Err(StoreError::Config(
                        "redis_url needs the room key shared by the nodes".into(),
                    ));
                }
                RoomBackend::Redis(Arc::new(
                    crate::cluster::Cluster::new(
                        url,
                        room_key.clone(),
                        config.max_rooms,
                        config.max_room_size,
                        config.joins_per_minute_per_ip,
                    )
                    .map_err(StoreError::Config)?,
                ))
            }
        };
        let options = StoreOptions {
            room_key,
            keep_samples: config.store_stats_samples,
        };
        let store = match &config.database_url {
            Some(url) => Store::open_postgres(url, options)?,
            None => Store::open(&config.data_dir, options)?,
        };
        let sip = match &config.sip {
            Some(settings) => Some(Arc::new(crate::sip_ws::SipRuntime::new(
                settings,
                &config.data_dir,
            )?)),
            None => None,
        };
        let token_key: [u8; 32] = rand::random();
        let token_mac = config
            .admin_token
            .as_deref()
            .map(|t| turn::auth::rest_password(&token_key, t));
        let (shutdown, _) = watch::channel(false);
        let max_web = listener::total_cap(listener::nofile_limit(), config.max_web_connections);
        if config.max_web_connections > max_web {
            tracing::warn!(
                "signal: max_web_connections {} lowered to {max_web} (half the open-file limit \
                 minus {} is the web side's share; the rest is the relay's)",
                config.max_web_connections,
                listener::FD_RESERVE
            );
        }
        let web = WebLimits::new(max_web, config.max_connections_per_ip.max(1));
        Ok(SignalState {
            inner: Arc::new(Inner {
                rooms,
                joins: JoinLimiter::new(config.joins_per_minute_per_ip),
                store,
                next_conn: AtomicU64::new(1),
                connections: AtomicUsize::new(0),
                counters: Counters::default(),
                shutdown,
                web,
                sessions: Sessions::default(),
                sip,
                token_key,
                token_mac,
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SignalConfig {
        &self.inner.config
    }

    /// The statistics store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Rooms at the moment.
    pub fn rooms(&self) -> usize {
        self.inner.rooms.len()
    }

    /// Members of all rooms at the moment.
    pub fn members(&self) -> usize {
        self.inner.rooms.members()
    }

    /// Tells every WebSocket connection to close (code 1001, going away).
    pub fn close_all(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Whether `presented` is the admin token (constant-time).
    pub(crate) fn token_matches(&self, presented: &str) -> bool {
        match &self.inner.token_mac {
            None => false,
            Some(expected) => {
                let mac = self.mac(presented);
                mac.as_bytes().ct_eq(expected.as_bytes()).into()
            }
        }
    }

    /// An HMAC of `text` under this process's random key.
    pub(crate) fn mac(&self, text: &str) -> String {
        turn::auth::rest_password(&self.inner.token_key, text)
    }

    /// The most web connections (HTTP and WebSocket) at once, as sized at
    /// startup.
    pub fn max_web_connections(&self) -> usize {
        self.inner.web.max_total
    }

    /// The signaling server's own metrics, Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            push_metric(&mut out, name, kind, help, value);
        };
        metric(
            "onionrtc_signal_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections() as u64,
        );
        metric(
            "onionrtc_signal_rooms",
            "gauge",
            "Rooms with at least one member (rooms on Redis: with a member on this node).",
            self.rooms() as u64,
        );
        metric(
            "onionrtc_signal_members",
            "gauge",
            "Members of all rooms (rooms on Redis: members on this node).",
            self.members() as u64,
        );
        metric(
            "onionrtc_signal_joins_total",
            "counter",
            "Successful joins.",
            get(&c.joins),
        );
        metric(
            "onionrtc_signal_forwarded_total",
            "counter",
            "Offers, answers and candidates forwarded to another member.",
            get(&c.forwarded),
        );
        metric(
            "onionrtc_signal_misaddressed_total",
            "counter",
            "Offers, answers and candidates whose `to` named no other member of the sender's room (no-such-member).",
            get(&c.misaddressed),
        );
        metric(
            "onionrtc_signal_credential_refreshes_total",
            "counter",
            "TURN credentials renewed by `refresh`.",
            get(&c.refreshes),
        );
        metric(
            "onionrtc_signal_candidates_dropped_total",
            "counter",
            "Trickled candidates the sanitizer dropped.",
            get(&c.candidates_dropped),
        );
        metric(
            "onionrtc_signal_foreign_relay_candidates_total",
            "counter",
            "Relay candidates (in descriptions or trickled) whose address is outside relay_addresses, dropped.",
            get(&c.foreign_relay_candidates),
        );
        metric(
            "onionrtc_signal_descriptions_rejected_total",
            "counter",
            "Offers and answers refused (bad-sdp): control or non-ASCII characters, malformed lines.",
            get(&c.descriptions_rejected),
        );
        metric(
            "onionrtc_signal_sdp_lines_removed_total",
            "counter",
            "SDP lines the sanitizer removed (header extensions, address-bearing and unneeded lines; candidates not counted).",
            get(&c.sdp_lines_removed),
        );
        metric(
            "onionrtc_signal_errors_total",
            "counter",
            "Error messages sent to pages.",
            get(&c.errors),
        );
        metric(
            "onionrtc_signal_stats_samples_total",
            "counter",
            "Statistics samples queued for the store.",
            get(&c.samples),
        );
        metric(
            "onionrtc_signal_stats_dropped_total",
            "counter",
            "Statistics samples dropped because the store's queue was full.",
            self.inner.store.dropped(),
        );
        metric(
            "onionrtc_signal_forwarded_malformed_total",
            "counter",
            "Requests from a trusted proxy whose forwarding header could not be read (the proxy's address was used).",
            get(&c.forwarded_malformed),
        );
        let w = &self.inner.web;
        metric(
            "onionrtc_signal_web_connections",
            "gauge",
            "Open web connections (HTTP and WebSocket).",
            w.open() as u64,
        );
        metric(
            "onionrtc_signal_web_connections_max",
            "gauge",
            "The total web-connection cap sized at startup.",
            w.max_total as u64,
        );
        metric(
            "onionrtc_signal_web_idle_closed_total",
            "counter",
            "Web connections closed after the idle timeout.",
            get(&w.idle_closed),
        );
        metric(
            "onionrtc_signal_web_accept_errors_total",
            "counter",
            "Failed accepts of the web listener (e.g. out of file descriptors).",
            get(&w.accept_errors),
        );
        out.push_str(
            "# HELP onionrtc_signal_web_refused_total Web connections refused, by reason.\n\
             # TYPE onionrtc_signal_web_refused_total counter\n",
        );
        for (reason, v) in [
            ("total", &w.refused_total),
            ("per_address", &w.refused_per_address),
            ("websocket_per_address", &w.refused_ws_per_address),
            ("websocket_total", &w.refused_ws_total),
        ] {
            out.push_str(&format!(
                "onionrtc_signal_web_refused_total{{reason=\"{reason}\"}} {}\n",
                get(v)
            ));
        }
        if let Some(sip) = &self.inner.sip {
            out.push_str(&sip.metrics());
        }
        if let crate::rooms::RoomBackend::Redis(cluster) = &self.inner.rooms {
            let r = &cluster.counters;
            push_metric(
                &mut out,
                "onionrtc_signal_redis_up",
                "gauge",
                "1 when Redis answered the last operation and this node's subscription is live (joins are accepted).",
                u64::from(cluster.is_up()),
            );
            for (name, help, v) in [
                ("onionrtc_signal_redis_errors_total", "Redis operations that failed or timed out.", &r.errors),
                ("onionrtc_signal_redis_outages_total", "Times Redis became unreachable (each logged once).", &r.outages),
                ("onionrtc_signal_redis_published_total", "Messages published to members on other nodes.", &r.published),
                ("onionrtc_signal_redis_received_total", "Messages received on this node's channel.", &r.received),
                ("onionrtc_signal_redis_swept_total", "Members removed because their node stopped refreshing them (crashed or cut off).", &r.swept),
            ] {
                push_metric(&mut out, name, "counter", help, get(v));
            }
        }
        out
    }
}

/// Appends one metric with its HELP and TYPE lines (Prometheus text).
pub(crate) fn push_metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    ));
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

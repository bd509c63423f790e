//! `GET /sip`: SIP over WebSocket (RFC 7118, subprotocol `sip`) into the
//! sans-IO [`sip::Core`] (registrar + B2BUA), and `GET /api/sip/turn`:
//! TURN credentials for a SIP account (HTTP Basic).
//!
//! ```text
//! /sip upgrade: origin check (as /ws) → subprotocol `sip` required → per-address
//!   and total caps → one task per connection:
//!   loop select { shutdown | outgoing queue → send | ping/idle | frame → core.receive → dispatch }
//!   on exit: core.closed (its registrations go, its calls end)
//! tick task (every 250 ms, from `maintenance`): core.tick → dispatch
//! ```
//!
//! The core is behind one mutex, held only for synchronous work (parsing,
//! one SQLite lookup on authentication); what it sends goes into each
//! connection's bounded queue (full: dropped and counted). Responses go back
//! on the connection the request came on. Every SDP body goes through the
//! same [`Sanitizer`] as `/ws`. Nothing here logs a client address or a
//! SIP URI.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::json;
use sip::auth::FailureLimits;
use sip::{ConnId, Core, Out};

/// A digest algorithm of `[sip] digest_algorithms`.
pub use sip::Algorithm as SipAlgorithm;
use tokio::sync::mpsc;

use crate::client_addr::ClientAddr;
use crate::ratelimit::TokenBucket;
use crate::sanitize::Sanitizer;
use crate::sip_media::Bridges;
use crate::state::{now_unix, SignalState};
use crate::store::StoreError;
use crate::users::{RealmAccounts, UserStore};
use crate::ws::{
    self, origin_allowed, stopped, CLOSE_TIMEOUT, IDLE_TIMEOUT, OUT_QUEUE, PING_EVERY, SEND_TIMEOUT,
};

/// How often the core's timers run.
pub const TICK_EVERY: Duration = Duration::from_millis(250);
/// Failed `/api/sip/turn` logins per address per minute.
pub const TURN_FAILURES_PER_ADDRESS: u32 = 20;
/// Failed `/api/sip/turn` logins per account and address per 15 minutes.
pub const TURN_FAILURES_PER_ACCOUNT: u32 = 5;

/// `[sip]` as the signaling server uses it (present: `/sip` is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    /// The SIP domain and digest realm.
    pub domain: String,
    /// Challenge algorithms in the order offered.
    pub algorithms: Vec<sip::Algorithm>,
    /// Messages per second per UDP flow or TCP connection (burst: twice).
    pub messages_per_sec: u32,
    /// The plain-RTP media bridge for phones (`[sip] media_ports`), off
    /// when `None`.
    pub media: Option<crate::sip_media::MediaSettings>,
}

/// Where the core's messages for one connection go: a call leg knows its
/// transport through its connection.
#[derive(Debug)]
pub(crate) enum Sink {
    /// A `/sip` WebSocket (text frames).
    Ws(mpsc::Sender<String>),
    /// A SIP-over-TCP connection's writer.
    Stream(mpsc::Sender<Vec<u8>>),
    /// A UDP flow: the listener's socket and the flow's address.
    Udp(Arc<tokio::net::UdpSocket>, std::net::SocketAddr),
}

#[derive(Debug, Default)]
pub(crate) struct SipCounters {
    queue_full: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) udp_flows_full: AtomicU64,
    pub(crate) udp_send_errors: AtomicU64,
    pub(crate) tls_handshake_failed: AtomicU64,
    turn_issued: AtomicU64,
    turn_denied: AtomicU64,
    turn_refused: AtomicU64,
}

/// The SIP service: the core, the connections' queues, the accounts.
#[derive(Debug)]
pub(crate) struct SipRuntime {
    pub(crate) domain: String,
    pub(crate) core: Mutex<Core>,
    pub(crate) conns: Mutex<HashMap<ConnId, Sink>>,
    pub(crate) next: AtomicU64,
    pub(crate) users: UserStore,
    turn_failures: Mutex<FailureLimits>,
    pub(crate) counters: SipCounters,
    /// `[sip] messages_per_sec`.
    pub(crate) messages_per_sec: u32,
    /// The plain-RTP bridges (`[sip] media_ports`).
    pub(crate) media: Option<Bridges>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct SdpSanitizer<'a> {
    sanitizer: Sanitizer<'a>,
    media: Option<&'a Bridges>,
    config: &'a crate::SignalConfig,
}

impl SdpSanitizer<'_> {
    /// Our relay with fresh credentials, for a gateway's endpoint.
    fn relay_access(&self, bridges: &Bridges) -> Option<crate::sip_gateway::RelayAccess> {
        let server = bridges.relay()?;
        let creds = crate::echo::relay_credentials(self.config);
        Some(crate::sip_gateway::RelayAccess {
            server,
            username: creds.username,
            password: creds.credential,
        })
    }
}

impl sip::SdpFilter for SdpSanitizer<'_> {
    fn filter(&self, sdp: &str) -> Option<String> {
        self.sanitizer.sdp(sdp).ok().map(|s| s.sdp)
    }

    /// With the media bridge on: plain RTP between phones goes through
    /// the bridge (the SDP names the bridge's ports instead of `0.0.0.0`),
    /// and a call between a browser and a phone through a gateway
    /// ([`crate::sip_gateway`]); what goes to a browser passes the
    /// sanitizer either way.
    fn filter_call(&self, call: sip::CallSdp, sdp: &str) -> Option<String> {
        let Some(bridges) = self.media else {
            return self.filter(sdp);
        };
        let plain = crate::sip_media::is_plain_rtp(sdp);
        let for_browser = |out: String| {
            if call.to_websocket {
                self.filter(&out)
            } else {
                Some(out)
            }
        };
        match call.leg {
            // An answer from a leg that has a gateway.
            Some(leg) if !call.from_caller => {
                if let Some(out) = bridges.gateway_answer((call.call, leg), call.peer, sdp) {
                    return for_browser(out?);
                }
            }
            // An offer from a phone to a browser, or from a browser to a
            // phone (the browser's offer sanitized first, like any).
            Some(leg) if plain == call.to_websocket => {
                let relay = self.relay_access(bridges)?;
                let offer = if plain {
                    sdp.to_owned()
                } else {
                    self.filter(sdp)?
                };
                // The phone's SIP address: the sender's, or the recipient's.
                let phone = if plain { call.peer } else { call.to_peer };
                let out = bridges.gateway_offer((call.call, leg), !plain, phone, &offer, relay)?;
                return for_browser(out);
            }
            Some(_) => {}
            // Within the dialog: not through a gateway (yet).
            None if bridges.has_gateway(call.call) => return None,
            None => {}
        }
        let clean = self.filter(sdp)?;
        if plain {
            let side = usize::from(!call.from_caller);
            bridges.rewrite(call.call, side, call.peer, sdp, &clean)
        } else {
            Some(clean)
        }
    }
}

impl SipRuntime {
    /// Opens the accounts store. Blocking.
    pub(crate) fn new(
        settings: &SipSettings,
        data_dir: &std::path::Path,
    ) -> Result<Self, StoreError> {
        let users = UserStore::open(data_dir)?;
        let others = users.other_realms(&settings.domain);
        if others > 0 {
            tracing::warn!(
                "sip: {others} account(s) were created for another realm than [sip] domain {:?} \
                 and cannot log in (the realm is part of the stored hash: set their password again \
                 after removing and re-adding them)",
                settings.domain
            );
        }
        let mut config = sip::Config::new(&settings.domain);
        config.algorithms = settings.algorithms.clone();
        Ok(SipRuntime {
            domain: config.domain.clone(),
            core: Mutex::new(Core::new(config, Instant::now())),
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            users,
            turn_failures: Mutex::new(FailureLimits::new(
                TURN_FAILURES_PER_ADDRESS,
                TURN_FAILURES_PER_ACCOUNT,
            )),
            counters: SipCounters::default(),
            messages_per_sec: settings.messages_per_sec,
            media: settings.media.clone().map(Bridges::new),
        })
    }

    pub(crate) fn dispatch(&self, outs: Vec<Out>) {
        if outs.is_empty() {
            return;
        }
        let conns = lock(&self.conns);
        for o in outs {
            let Some(sink) = conns.get(&o.conn) else {
                continue;
            };
            let sent = match sink {
                // Everything the core writes is text (it parses UTF-8 only).
                Sink::Ws(tx) => tx
                    .try_send(String::from_utf8_lossy(&o.data).into_owned())
                    .is_ok(),
                Sink::Stream(tx) => tx.try_send(o.data).is_ok(),
                Sink::Udp(socket, flow) => {
                    let to = crate::sip_net::udp_destination(&o.data, *flow);
                    if socket.try_send_to(&o.data, to).is_err() {
                        self.counters
                            .udp_send_errors
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    true
                }
            };
            if !sent {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn receive(&self, conn: ConnId, data: &[u8], config: &crate::SignalConfig) {
        let accounts = RealmAccounts {
            store: &self.users,
            realm: &self.domain,
        };
        let filter = SdpSanitizer {
            sanitizer: Sanitizer::new(&config.relay_addresses),
            media: self.media.as_ref(),
            config,
        };
        let outs = lock(&self.core).receive(conn, data, Instant::now(), &accounts, &filter);
        self.dispatch(outs);
        self.release_media();
    }

    /// Runs the core's timers.
    pub(crate) fn tick(&self) {
        let now = Instant::now();
        let outs = lock(&self.core).tick(now);
        self.dispatch(outs);
        if let Some(media) = &self.media {
            let answered = lock(&self.core).answered_calls();
            for call in media.idle(now, media.idle_timeout(), &answered) {
                let outs = lock(&self.core).hang_up(call, now);
                self.dispatch(outs);
            }
        }
        self.release_media();
        lock(&self.turn_failures).prune(now_unix());
    }

    /// Closes the media bridges of calls that ended.
    fn release_media(&self) {
        let ended = lock(&self.core).take_ended();
        if let Some(media) = &self.media {
            for call in ended {
                media.release(call);
            }
        }
    }

    /// The SIP metrics, Prometheus text format.
    pub(crate) fn metrics(&self) -> String {
        let c = lock(&self.core).counters().clone();
        let (regs, calls) = {
            let core = lock(&self.core);
            (core.registrations(), core.active_calls())
        };
        let open = lock(&self.conns).len();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            crate::state::push_metric(&mut out, name, kind, help, value);
        };
        metric(
            "onionrtc_sip_connections",
            "gauge",
            "Open SIP connections: WebSockets, TCP connections and UDP flows.",
            open as u64,
        );
        metric(
            "onionrtc_sip_registrations",
            "gauge",
            "Registered SIP contacts.",
            regs as u64,
        );
        metric(
            "onionrtc_sip_calls",
            "gauge",
            "SIP calls being set up, connected or ending.",
            calls as u64,
        );
        metric(
            "onionrtc_sip_messages_received_total",
            "counter",
            "SIP messages received.",
            c.received,
        );
        metric(
            "onionrtc_sip_malformed_total",
            "counter",
            "SIP messages that could not be parsed (answered 400 or dropped).",
            c.malformed,
        );
        metric(
            "onionrtc_sip_too_large_total",
            "counter",
            "SIP messages over the size limit (answered 413 or dropped).",
            c.too_large,
        );
        metric(
            "onionrtc_sip_unmatched_total",
            "counter",
            "SIP responses and ACKs matching no transaction or dialog (dropped).",
            c.unmatched,
        );
        metric(
            "onionrtc_sip_challenges_total",
            "counter",
            "Digest challenges sent (401/407).",
            c.challenges,
        );
        metric(
            "onionrtc_sip_auth_failures_total",
            "counter",
            "SIP authentications with wrong credentials.",
            c.auth_failures,
        );
        metric("onionrtc_sip_auth_refused_total", "counter", "SIP authentications refused because the address, or the account from that address, failed too often.", c.auth_refused);
        metric(
            "onionrtc_sip_sdp_rejected_total",
            "counter",
            "SIP SDP bodies the sanitizer refused (the call leg fails with 488).",
            c.sdp_rejected,
        );
        metric(
            "onionrtc_sip_register_total",
            "counter",
            "SIP contacts registered or refreshed.",
            c.registrations,
        );
        metric(
            "onionrtc_sip_calls_total",
            "counter",
            "SIP calls set up (INVITEs forwarded).",
            c.calls,
        );
        metric(
            "onionrtc_sip_calls_answered_total",
            "counter",
            "SIP calls answered.",
            c.calls_answered,
        );
        metric(
            "onionrtc_sip_messages_forwarded_total",
            "counter",
            "SIP MESSAGE requests forwarded to a contact.",
            c.messages_forwarded,
        );
        metric(
            "onionrtc_sip_queue_full_total",
            "counter",
            "SIP messages dropped because a connection's queue was full.",
            get(&self.counters.queue_full),
        );
        metric(
            "onionrtc_sip_rate_limited_total",
            "counter",
            "SIP WebSocket and TCP connections closed, or UDP datagrams dropped, for sending too fast.",
            get(&self.counters.rate_limited),
        );
        metric(
            "onionrtc_sip_udp_flows_full_total",
            "counter",
            "SIP UDP datagrams dropped because the flow table was full.",
            get(&self.counters.udp_flows_full),
        );
        metric(
            "onionrtc_sip_udp_send_errors_total",
            "counter",
            "SIP UDP datagrams that could not be sent (socket buffer full or error).",
            get(&self.counters.udp_send_errors),
        );
        metric(
            "onionrtc_sip_tls_handshake_failures_total",
            "counter",
            "SIP-over-TLS connections closed because the TLS handshake failed or did not finish in time.",
            get(&self.counters.tls_handshake_failed),
        );
        metric(
            "onionrtc_sip_turn_issued_total",
            "counter",
            "TURN credentials issued by /api/sip/turn.",
            get(&self.counters.turn_issued),
        );
        metric(
            "onionrtc_sip_turn_denied_total",
            "counter",
            "/api/sip/turn requests without valid credentials (401).",
            get(&self.counters.turn_denied),
        );
        metric(
            "onionrtc_sip_turn_refused_total",
            "counter",
            "/api/sip/turn requests refused after too many failures (429).",
            get(&self.counters.turn_refused),
        );
        if let Some(media) = &self.media {
            let c = &media.counters;
            let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
                crate::state::push_metric(&mut out, name, kind, help, value);
            };
            metric(
                "onionrtc_sip_media_bridges",
                "gauge",
                "Open plain-RTP media bridges (one per bridged call).",
                media.open() as u64,
            );
            metric(
                "onionrtc_sip_media_bridges_total",
                "counter",
                "Plain-RTP media bridges opened.",
                get(&c.opened),
            );
            metric(
                "onionrtc_sip_media_ports_exhausted_total",
                "counter",
                "Calls refused (488) because [sip] media_ports had no room.",
                get(&c.exhausted),
            );
            metric(
                "onionrtc_sip_media_packets_total",
                "counter",
                "RTP and RTCP datagrams forwarded by the media bridges.",
                get(&c.forwarded),
            );
            metric(
                "onionrtc_sip_media_foreign_total",
                "counter",
                "Datagrams dropped because they came from another source than the latched phone.",
                get(&c.foreign),
            );
            metric(
                "onionrtc_sip_media_malformed_total",
                "counter",
                "Datagrams dropped because they were oversized or not RTP/RTCP.",
                get(&c.malformed),
            );
            metric(
                "onionrtc_sip_media_rate_limited_total",
                "counter",
                "Datagrams dropped because a bridge port received too many.",
                get(&c.rate_limited),
            );
            metric(
                "onionrtc_sip_media_no_peer_total",
                "counter",
                "Datagrams dropped because the other phone's address was not known yet.",
                get(&c.no_peer),
            );
            metric(
                "onionrtc_sip_media_send_errors_total",
                "counter",
                "Datagrams the bridge could not send.",
                get(&c.send_errors),
            );
            metric(
                "onionrtc_sip_media_idle_total",
                "counter",
                "Bridged calls hung up because no media flowed for [sip] media_timeout (or a gateway's endpoint failed).",
                get(&c.idle),
            );
            metric(
                "onionrtc_sip_gateways",
                "gauge",
                "WebRTC-to-RTP gateways open (calls between a browser and a phone).",
                media.open_gateways() as u64,
            );
            metric(
                "onionrtc_sip_gateways_total",
                "counter",
                "WebRTC-to-RTP gateways opened.",
                get(&c.gateways_opened),
            );
        }
        out
    }
}

/// Whether the upgrade offers the `sip` subprotocol (RFC 7118 §4).
fn offers_sip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"))
}

/// The `/sip` upgrade handler.
pub(crate) async fn handler(
    State(state): State<SignalState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(rt) = state.inner.sip.clone() else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if !origin_allowed(&headers, &state.config().allowed_origins) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if !offers_sip(&headers) {
        return (
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol sip is required\n",
        )
            .into_response();
    }
    let Some((slot, guard)) = ws::admit(&state, client) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    // A little above the SIP limit, so that a message just over it still
    // gets its 413; far larger ones close the connection.
    let hard = sip::MAX_MESSAGE_BYTES + 1024;
    ws.protocols(["sip"])
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| async move {
            run(state, rt, client, socket).await;
            drop((guard, slot));
        })
}

async fn run(state: SignalState, rt: Arc<SipRuntime>, ip: IpAddr, mut socket: WebSocket) {
    let conn = rt.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<String>(OUT_QUEUE);
    lock(&rt.conns).insert(conn, Sink::Ws(tx));
    lock(&rt.core).connected(conn, ip, "WSS", true);
    let config = state.config();
    let mut bucket = TokenBucket::new(
        f64::from(config.messages_per_sec),
        config.messages_burst,
        Instant::now(),
    );
    let mut shutdown = state.inner.shutdown.subscribe();
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + PING_EVERY, PING_EVERY);
    let mut last_seen = Instant::now();
    let close: Option<(u16, &'static str)> = loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break Some((close_code::AWAY, "server shutting down")),
            _ = ping.tick() => {
                if last_seen.elapsed() > IDLE_TIMEOUT {
                    break Some((close_code::POLICY, "idle"));
                }
                let ping = socket.send(Message::Ping(Default::default()));
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, ping).await, Ok(Ok(()))) {
                    break None;
                }
            }
            out = rx.recv() => {
                let Some(text) = out else { break None };
                let send = socket.send(Message::Text(text.into()));
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, send).await, Ok(Ok(()))) {
                    break None;
                }
            }
            msg = socket.recv() => {
                if matches!(msg, Some(Ok(_))) {
                    last_seen = Instant::now();
                }
                let data: Vec<u8> = match msg {
                    None | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => {
                        // Over the transport limit (or broken): counted, closed.
                        lock(&rt.core).refused_too_large();
                        break Some((close_code::SIZE, "message too large"));
                    }
                };
                if !bucket.take(Instant::now()) {
                    rt.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    break Some((close_code::POLICY, "rate limit"));
                }
                rt.receive(conn, &data, config);
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    }
    lock(&rt.conns).remove(&conn);
    let outs = lock(&rt.core).closed(conn, Instant::now());
    rt.dispatch(outs);
}

/// `user:password` of an `Authorization: Basic …` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") || b64.len() > 4096 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// `GET /api/sip/turn`: `{"iceServers", "iceTransportPolicy": "relay",
/// "credentialTtl"}` for a SIP account (HTTP Basic); a random TURN user
/// name per request, never the SIP user.
pub(crate) async fn turn(
    State(state): State<SignalState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let Some(rt) = state.inner.sip.clone() else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let now = now_unix();
    let challenge = || {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            "SIP account credentials required\n",
        )
            .into_response();
        let v = format!("Basic realm=\"{}\", charset=\"UTF-8\"", rt.domain);
        if let Ok(v) = v.parse() {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    };
    let refused = || {
        rt.counters.turn_refused.fetch_add(1, Ordering::Relaxed);
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins; try later\n",
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        r
    };
    if lock(&rt.turn_failures).address_blocked(ip, now) {
        return refused();
    }
    let Some((user, password)) = basic(&headers) else {
        rt.counters.turn_denied.fetch_add(1, Ordering::Relaxed);
        return challenge();
    };
    if lock(&rt.turn_failures).account_blocked(&user, ip, now) {
        return refused();
    }
    let check = Arc::clone(&rt);
    let u = user.clone();
    let ok = tokio::task::spawn_blocking(move || {
        check.users.check_password(&u, &check.domain, &password)
    })
    .await
    .unwrap_or(false);
    if !ok {
        lock(&rt.turn_failures).failed(&user, ip, now);
        rt.counters.turn_denied.fetch_add(1, Ordering::Relaxed);
        return challenge();
    }
    rt.counters.turn_issued.fetch_add(1, Ordering::Relaxed);
    let (servers, ttl) = ws::ice_servers(state.config(), None);
    let mut r = Json(json!({
        "iceServers": servers,
        "iceTransportPolicy": "relay",
        "credentialTtl": ttl,
    }))
    .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn subprotocol_and_basic() {
        let mut h = HeaderMap::new();
        assert!(!offers_sip(&h));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat, SIP"),
        );
        assert!(offers_sip(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2U6cHc6eA=="),
        );
        assert_eq!(basic(&h), Some(("alice".into(), "pw:x".into())));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(basic(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic(&h), None);
    }
}

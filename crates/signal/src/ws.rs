//! `GET /ws`: the origin check, the upgrade, and one task per connection.
//!
//! ```text
//! loop select {
//!   shutdown / kill (own queue overflowed) / join timeout  → close
//!   outgoing queue (from other members)                    → send
//!   frame from the page → size check → token bucket → parse → handle
//! }
//! on exit: leave the room (the other members get peer-left)
//! ```
//!
//! Replies to the page itself (`joined`, `credentials`, `error`) are sent
//! directly; what other members send arrives through this connection's bounded queue
//! ([`OUT_QUEUE`]). Every send has a timeout ([`SEND_TIMEOUT`]).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{mpsc, Notify};

use crate::client_addr::ClientAddr;
use crate::protocol::{self, ErrorCode, Incoming};
use crate::ratelimit::TokenBucket;
use crate::rooms::{Member, Route};

use crate::sanitize::{valid_mid, CandidateDrop, Sanitizer};
use crate::state::{now_ms, now_unix, SignalState};
use crate::stats::{Cumulative, StatsSample};
use crate::store::SampleRecord;

/// The `protocol` of `joined`: 2 has member ids, `members`, `to`/`from`
/// and `refresh`.
pub const PROTOCOL_VERSION: u32 = 2;
/// Messages waiting for a slow page at most; beyond, its connection closes.
pub const OUT_QUEUE: usize = 128;
/// A send to a page that takes longer closes the connection.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Sending the close frame gives up after this long.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The server pings every connection this often (browsers answer pings
/// without the page's help).
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// A connection that sends nothing (not even a pong) for this long is
/// closed, so a vanished member does not hold its room's slot.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most one stats sample per member per this interval is stored.
pub const STATS_INTERVAL: Duration = Duration::from_millis(500);
/// At most this many stats samples per member and call are stored (when
/// samples are kept; the per-call aggregates take every sample).
pub const MAX_SAMPLES_PER_MEMBER: u32 = 7200;

/// The upgrade handler. `client` is the real client behind a trusted
/// proxy: its WebSockets are capped per address (`max_connections_per_ip`)
/// and its joins counted.
pub(crate) async fn handler(
    State(state): State<SignalState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let config = state.config();
    if !origin_allowed(&headers, &config.allowed_origins) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let Some((slot, guard)) = admit(&state, client) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    // The transport limit is a little above the protocol limit, so that a
    // message just over it still gets a `too-large` answer; far larger
    // ones are cut off by the WebSocket layer before they are buffered.
    let limit = config.max_message_bytes;
    let hard = limit.saturating_add(limit / 8).saturating_add(1024);
    ws.max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| async move {
            let conn = Connection::new(state, client);
            conn.run(socket).await;
            drop((guard, slot));
        })
}

/// A WebSocket's place under the per-address cap and the total cap (both
/// released on drop); `None` (counted) when either is full.
pub(crate) fn admit(
    state: &SignalState,
    client: IpAddr,
) -> Option<(crate::listener::AddrSlot, ConnGuard)> {
    let web = &state.inner.web;
    let Some(slot) = web.ws.acquire(client) else {
        web.refused_ws_per_address.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let Some(guard) = ConnGuard::acquire(state) else {
        web.refused_ws_total.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    Some((slot, guard))
}

/// Counts open connections; refuses beyond `max_connections`.
pub(crate) struct ConnGuard(SignalState);

impl ConnGuard {
    pub(crate) fn acquire(state: &SignalState) -> Option<ConnGuard> {
        let max = state.config().max_connections;
        let counter = &state.inner.connections;
        let prev = counter.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnGuard(state.clone()))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.inner.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the upgrade's `Origin` is the page's own (`http(s)://` + `Host`)
/// or an allowed one. A request without `Origin` is not from a browser page
/// (browsers always send it on WebSocket upgrades) and is accepted: the
/// check protects pages from cross-site use, not the server from clients.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        let host = host.trim();
        for scheme in ["http://", "https://"] {
            if origin
                .get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
                && origin
                    .get(scheme.len()..)
                    .is_some_and(|h| !h.is_empty() && h.eq_ignore_ascii_case(host))
            {
                return true;
            }
        }
    }
    allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Where a joined connection is.
struct Joined {
    room: String,
    /// This member's id.
    member_id: String,
    side: u8,
    call_id: String,
    started_ms: i64,
    last_stats: Option<Instant>,
    stats_count: u32,
    /// The room name's stored form, computed with the first sample.
    room_hash: Option<String>,
    /// This member's cumulative counters, for the call's totals.
    counters: Cumulative,
}

/// The token bucket's verdict on one frame.
enum Token {
    /// Within the limit.
    Pass,
    /// Over the limit: the frame is dropped; `first` of this episode.
    Refused { first: bool },
    /// Kept going far over the limit: close.
    Exhausted,
}

/// What to do after a message.
enum Flow {
    Continue,
    Close(u16, &'static str),
}

struct Connection {
    state: SignalState,
    id: u64,
    ip: IpAddr,
    tx: mpsc::Sender<String>,
    rx: mpsc::Receiver<String>,
    kill: Arc<Notify>,
    joined: Option<Joined>,
    ever_joined: bool,
    bucket: TokenBucket,
    /// Messages refused by the bucket since it was last full.
    rejected: u32,
}

impl Connection {
    fn new(state: SignalState, ip: IpAddr) -> Self {
        let config = state.config();
        let bucket = TokenBucket::new(
            f64::from(config.messages_per_sec),
            config.messages_burst,
            Instant::now(),
        );
        let id = state.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        Connection {
            state,
            id,
            ip,
            tx,
            rx,
            kill: Arc::new(Notify::new()),
            joined: None,
            ever_joined: false,
            bucket,
            rejected: 0,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let join_deadline = tokio::time::sleep(self.state.config().join_timeout);
        tokio::pin!(join_deadline);
        let mut shutdown = self.state.inner.shutdown.subscribe();
        let kill = Arc::clone(&self.kill);
        let start = tokio::time::Instant::now();
        let mut ping = tokio::time::interval_at(start + PING_EVERY, PING_EVERY);
        let mut last_seen = Instant::now();
        let flow = loop {
            let flow = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => Flow::Close(close_code::AWAY, "server shutting down"),
                _ = kill.notified() => Flow::Close(close_code::POLICY, "too slow"),
                _ = &mut join_deadline, if !self.ever_joined => Flow::Close(close_code::POLICY, "join timeout"),
                _ = ping.tick() => {
                    if last_seen.elapsed() > IDLE_TIMEOUT {
                        Flow::Close(close_code::POLICY, "idle")
                    } else {
                        let ping = socket.send(Message::Ping(Default::default()));
                        match tokio::time::timeout(SEND_TIMEOUT, ping).await {
                            Ok(Ok(())) => Flow::Continue,
                            _ => break None,
                        }
                    }
                },
                out = self.rx.recv() => match out {
                    Some(text) => {
                        if send(&mut socket, text).await {
                            Flow::Continue
                        } else {
                            break None;
                        }
                    }
                    None => Flow::Close(close_code::ERROR, "internal error"),
                },
                msg = socket.recv() => {
                    if matches!(msg, Some(Ok(_))) {
                        last_seen = Instant::now();
                    }
                    match msg {
                        None | Some(Ok(Message::Close(_))) => break None,
                        Some(Ok(Message::Text(text))) => self.on_frame(&mut socket, Some(text.as_str()), text.len()).await,
                        Some(Ok(Message::Binary(data))) => self.on_frame(&mut socket, None, data.len()).await,
                        Some(Ok(Message::Ping(_))) => self.charge(),
                        Some(Ok(Message::Pong(_))) => Flow::Continue,
                        Some(Err(e)) => {
                            let text = e.to_string();
                            if text.contains("Space limit exceeded") || text.contains("too long") {
                                self.reply(&mut socket, ErrorCode::TooLarge).await;
                                Flow::Close(close_code::SIZE, "message too large")
                            } else {
                                break None;
                            }
                        }
                    }
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Close(code, reason) => break Some((code, reason)),
            }
        };
        if let Some((code, reason)) = flow {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let close = socket.send(Message::Close(Some(frame)));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
        }
        self.leave().await;
    }

    /// Takes a token from the connection's bucket.
    fn take_token(&mut self) -> Token {
        let now = Instant::now();
        if self.rejected > 0 && self.bucket.is_full(now) {
            self.rejected = 0;
        }
        if self.bucket.take(now) {
            return Token::Pass;
        }
        self.rejected += 1;
        if self.rejected > self.state.config().messages_burst.max(1) {
            Token::Exhausted
        } else {
            Token::Refused {
                first: self.rejected == 1,
            }
        }
    }

    /// Charges a ping to the bucket silently (the WebSocket layer answers
    /// pings, so a ping flood costs the server too).
    fn charge(&mut self) -> Flow {
        match self.take_token() {
            Token::Pass | Token::Refused { .. } => Flow::Continue,
            Token::Exhausted => Flow::Close(close_code::POLICY, "rate limit"),
        }
    }

    /// One data frame: `text` is `None` for a binary frame.
    async fn on_frame(&mut self, socket: &mut WebSocket, text: Option<&str>, len: usize) -> Flow {
        if len > self.state.config().max_message_bytes {
            self.reply(socket, ErrorCode::TooLarge).await;
            return Flow::Close(close_code::SIZE, "message too large");
        }
        match self.take_token() {
            Token::Pass => {}
            Token::Refused { first } => {
                // One error per episode, not one per refused message.
                if first {
                    self.reply(socket, ErrorCode::RateLimited).await;
                }
                return Flow::Continue;
            }
            Token::Exhausted => return Flow::Close(close_code::POLICY, "rate limit"),
        }
        let Some(text) = text else {
            self.reply(socket, ErrorCode::BadMessage).await;
            return Flow::Continue;
        };
        match protocol::parse(text) {
            Err(code) => self.reply(socket, code).await,
            Ok(msg) => return self.on_message(socket, msg).await,
        }
        Flow::Continue
    }

    async fn on_message(&mut self, socket: &mut WebSocket, msg: Incoming) -> Flow {
        match msg {
            Incoming::Join { room } => return self.on_join(socket, room).await,
            Incoming::Offer { sdp, to } => {
                self.forward_description(socket, "offer", &sdp, to.as_deref())
                    .await;
            }
            Incoming::Answer { sdp, to } => {
                self.forward_description(socket, "answer", &sdp, to.as_deref())
                    .await;
            }
            Incoming::Candidate { candidate, to } => {
                let Some(route) = self.route(socket, to.as_deref()).await else {
                    return Flow::Continue;
                };
                let text = match candidate {
                    None => protocol::candidate(None, &route.from),
                    Some(mut c) => {
                        let config = self.state.config();
                        let counters = &self.state.inner.counters;
                        let clean = if c.sdp_mid.as_deref().is_none_or(valid_mid) {
                            Sanitizer::new(&config.relay_addresses).candidate(&c.candidate)
                        } else {
                            Err(CandidateDrop::Malformed)
                        };
                        match clean {
                            Ok(clean) => {
                                c.candidate = clean;
                                protocol::candidate(Some(&c), &route.from)
                            }
                            Err(why) => {
                                if why == CandidateDrop::ForeignRelay {
                                    counters
                                        .foreign_relay_candidates
                                        .fetch_add(1, Ordering::Relaxed);
                                }
                                counters.candidates_dropped.fetch_add(1, Ordering::Relaxed);
                                return Flow::Continue;
                            }
                        }
                    }
                };
                self.deliver(socket, &route, text).await;
            }
            Incoming::Bye => self.leave().await,
            Incoming::Stats(value) => self.on_stats(&value),
            Incoming::Refresh => return self.on_refresh(socket).await,
        }
        Flow::Continue
    }

    /// `refresh`: new TURN credentials for a member, without leaving.
    async fn on_refresh(&mut self, socket: &mut WebSocket) -> Flow {
        if self.joined.is_none() {
            self.reply(socket, ErrorCode::NotJoined).await;
            return Flow::Continue;
        }
        let room = self.joined.as_ref().map(|j| j.room.clone());
        let (servers, ttl) = ice_servers(self.state.config(), room.as_deref());
        self.state
            .inner
            .counters
            .refreshes
            .fetch_add(1, Ordering::Relaxed);
        let msg = json!({
            "type": "credentials",
            "iceServers": servers,
            "iceTransportPolicy": "relay",
            "credentialTtl": ttl,
        });
        if send(socket, msg.to_string()).await {
            Flow::Continue
        } else {
            Flow::Close(close_code::ERROR, "send failed")
        }
    }

    async fn on_join(&mut self, socket: &mut WebSocket, room: String) -> Flow {
        if self.joined.is_some() {
            self.reply(socket, ErrorCode::AlreadyJoined).await;
            return Flow::Continue;
        }
        let inner = &self.state.inner;
        let member = Member {
            conn: self.id,
            tx: self.tx.clone(),
            kill: Arc::clone(&self.kill),
        };
        let joined = inner
            .rooms
            .join(&room, self.ip, &inner.joins, member, now_ms())
            .await;
        let info = match joined {
            Ok(info) => info,
            Err(code) => {
                self.reply(socket, code).await;
                return Flow::Continue;
            }
        };
        inner.counters.joins.fetch_add(1, Ordering::Relaxed);
        let (servers, ttl) = ice_servers(self.state.config(), Some(&room));
        let peers = info.members.len();
        let joined = json!({
            "type": "joined",
            "protocol": PROTOCOL_VERSION,
            "room": room,
            "callId": info.call_id,
            "memberId": info.member_id,
            "members": info.members,
            "peers": peers,
            "initiator": peers > 0,
            "iceServers": servers,
            "iceTransportPolicy": "relay",
            "credentialTtl": ttl,
        });
        self.joined = Some(Joined {
            room,
            member_id: info.member_id,
            side: info.side,
            call_id: info.call_id,
            started_ms: info.started_ms,
            last_stats: None,
            stats_count: 0,
            room_hash: None,
            counters: Cumulative::default(),
        });
        self.ever_joined = true;
        if send(socket, joined.to_string()).await {
            Flow::Continue
        } else {
            Flow::Close(close_code::ERROR, "send failed")
        }
    }

    /// Where a message goes (see [`crate::rooms::Rooms::route`]); on an
    /// error the sender is told and `None` returned.
    async fn route(&mut self, socket: &mut WebSocket, to: Option<&str>) -> Option<Route> {
        let result = match self.joined.as_ref() {
            None => Err(ErrorCode::NotJoined),
            Some(j) => {
                self.state
                    .inner
                    .rooms
                    .route(&j.room, self.id, &j.member_id, to)
                    .await
            }
        };
        match result {
            Ok(route) => Some(route),
            Err(code) => {
                if code == ErrorCode::NoSuchMember {
                    self.state
                        .inner
                        .counters
                        .misaddressed
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.reply(socket, code).await;
                None
            }
        }
    }

    async fn deliver(&mut self, socket: &mut WebSocket, route: &Route, text: String) {
        if self.state.inner.rooms.deliver(route, text).await {
            self.state
                .inner
                .counters
                .forwarded
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.reply(socket, ErrorCode::ServerUnavailable).await;
        }
    }

    async fn forward_description(
        &mut self,
        socket: &mut WebSocket,
        ty: &str,
        sdp: &str,
        to: Option<&str>,
    ) {
        let Some(route) = self.route(socket, to).await else {
            return;
        };
        let config = self.state.config();
        let counters = &self.state.inner.counters;
        let clean = match Sanitizer::new(&config.relay_addresses).sdp(sdp) {
            Ok(clean) => clean,
            Err(_) => {
                counters
                    .descriptions_rejected
                    .fetch_add(1, Ordering::Relaxed);
                self.reply(socket, ErrorCode::BadSdp).await;
                return;
            }
        };
        let r = clean.report;
        counters
            .foreign_relay_candidates
            .fetch_add(u64::from(r.foreign_relays), Ordering::Relaxed);
        counters
            .sdp_lines_removed
            .fetch_add(u64::from(r.lines_removed), Ordering::Relaxed);
        let text = protocol::description(ty, &clean.sdp, &route.from);
        self.deliver(socket, &route, text).await;
    }

    fn on_stats(&mut self, value: &serde_json::Value) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        let now = Instant::now();
        if j.last_stats
            .is_some_and(|t| now.saturating_duration_since(t) < STATS_INTERVAL)
        {
            return;
        }
        let Some(sample) = StatsSample::from_json(value) else {
            return;
        };
        j.last_stats = Some(now);
        let store = self.state.store();
        let keep_sample = store.keeps_samples() && j.stats_count < MAX_SAMPLES_PER_MEMBER;
        j.stats_count = j.stats_count.saturating_add(1);
        let room_hash = j
            .room_hash
            .get_or_insert_with(|| store.room_hash(&j.room))
            .clone();
        let record = SampleRecord {
            call_id: j.call_id.clone(),
            room_hash,
            call_started_ms: j.started_ms,
            side: j.side,
            ts_ms: now_ms(),
            increment: j.counters.advance(&sample),
            sample,
            keep_sample,
        };
        if store.record(record) {
            self.state
                .inner
                .counters
                .samples
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn leave(&mut self) {
        if let Some(j) = self.joined.take() {
            self.state
                .inner
                .rooms
                .leave(&j.room, self.id, &j.member_id)
                .await;
        }
    }

    async fn reply(&mut self, socket: &mut WebSocket, code: ErrorCode) {
        self.state
            .inner
            .counters
            .errors
            .fetch_add(1, Ordering::Relaxed);
        // A failed send shows up as a closed socket on the next receive.
        let _ = send(socket, protocol::error(code)).await;
    }
}

/// The host of a TURN URL (`turn:HOST:PORT?transport=udp`,
/// `turns:[V6]:PORT`): what tells one relay from another.
fn turn_url_host(url: &str) -> &str {
    let rest = url.split_once(':').map_or(url, |(_, r)| r);
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => rest,
    }
}

/// The TURN URLs a member of `room` gets (see [`crate::RelayChoice`]).
pub(crate) fn turn_urls_for<'a>(
    config: &'a crate::SignalConfig,
    room: Option<&str>,
) -> Vec<&'a str> {
    let all = || config.turn_urls.iter().map(String::as_str).collect();
    let (crate::RelayChoice::PerRoom, Some(room), Some(key)) =
        (config.relay_choice, room, config.room_key.as_ref())
    else {
        return all();
    };
    let mut hosts: Vec<&str> = Vec::new();
    for u in &config.turn_urls {
        let h = turn_url_host(u);
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    if hosts.len() < 2 {
        return all();
    }
    let digest = key.hash(&format!("relay-choice:{room}"));
    let n = digest
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    let host = hosts[(n % hosts.len() as u64) as usize];
    config
        .turn_urls
        .iter()
        .map(String::as_str)
        .filter(|u| turn_url_host(u) == host)
        .collect()
}

/// `iceServers` with fresh TURN REST credentials (a random id per
/// issue, never a name) and their lifetime in seconds; the URLs of
/// [`turn_urls_for`] `room`.
pub(crate) fn ice_servers(
    config: &crate::SignalConfig,
    room: Option<&str>,
) -> (serde_json::Value, u64) {
    let ttl = config.credential_ttl.as_secs();
    let id = format!("{:016x}", rand::random::<u64>());
    let username = turn::auth::rest_username(now_unix().saturating_add(ttl), Some(&id));
    let credential = turn::auth::rest_password(config.turn_secret.as_bytes(), &username);
    let servers = json!([{
        "urls": turn_urls_for(config, room),
        "username": username,
        "credential": credential,
    }]);
    (servers, ttl)
}

/// Completes when the server shuts down.
pub(crate) async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone: the server is gone too.
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

/// Sends one text frame with [`SEND_TIMEOUT`]; false on failure.
async fn send(socket: &mut WebSocket, text: String) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn turn_url_hosts() {
        for (url, host) in [
            ("turn:192.0.2.1:3478?transport=udp", "192.0.2.1"),
            ("turns:relay.example:5349?transport=tcp", "relay.example"),
            ("turn:[2001:db8::1]:3478?transport=udp", "[2001:db8::1]"),
            ("turn:[2001:db8::1]", "[2001:db8::1]"),
            ("turn:relay.example", "relay.example"),
        ] {
            assert_eq!(turn_url_host(url), host, "{url}");
        }
    }

    #[test]
    fn relay_choice_per_room_gives_one_relay_the_same_for_a_room() {
        let urls = [
            "turn:192.0.2.1:3478?transport=udp",
            "turns:192.0.2.1:5349?transport=tcp",
            "turn:192.0.2.2:3478?transport=udp",
            "turns:192.0.2.2:5349?transport=tcp",
        ];
        let mut config = crate::SignalConfig {
            turn_urls: urls.iter().map(|u| u.to_string()).collect(),
            room_key: Some(crate::store::RoomKey::new(b"shared by the nodes")),
            ..Default::default()
        };
        // All (the default): every URL, whatever the room.
        assert_eq!(turn_urls_for(&config, Some("a")), urls);
        config.relay_choice = crate::RelayChoice::PerRoom;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..40 {
            let room = format!("room-{i}");
            let got = turn_urls_for(&config, Some(&room));
            assert_eq!(got.len(), 2, "{room}: one relay's two URLs: {got:?}");
            let host = turn_url_host(got[0]);
            assert!(got.iter().all(|u| turn_url_host(u) == host), "{got:?}");
            // Every member, on every node with the same key, gets the same.
            assert_eq!(turn_urls_for(&config.clone(), Some(&room)), got);
            seen.insert(host.to_owned());
        }
        assert_eq!(seen.len(), 2, "40 rooms spread over both relays");
        // Without a room (SIP) or a key: every URL.
        assert_eq!(turn_urls_for(&config, None), urls);
        config.room_key = None;
        assert_eq!(turn_urls_for(&config, Some("a")), urls);
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://call.example/".to_owned()];
        assert!(origin_allowed(&headers(None, "a:1"), &allowed));
        assert!(origin_allowed(
            &headers(Some("http://a:1"), "a:1"),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(Some("https://A:1"), "a:1"),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(Some("https://call.example"), "a:1"),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(Some("http://a:2"), "a:1"),
            &allowed
        ));
        assert!(!origin_allowed(&headers(Some("null"), "a:1"), &allowed));
        assert!(!origin_allowed(&headers(Some("http://"), ""), &allowed));
        assert!(!origin_allowed(
            &headers(Some("http://evil.example"), "a:1"),
            &[]
        ));
    }
}

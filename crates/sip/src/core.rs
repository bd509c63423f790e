//! The sans-IO SIP core: registrar and back-to-back user agent.
//!
//! ```text
//! transport ──connected(conn, peer, transport)──▶ Core
//!           ──receive(conn, bytes, now)─────────▶ Core ──▶ Vec<Out{conn, bytes}>
//!           ──tick(now) (every ~250 ms)─────────▶ Core ──▶ Vec<Out>
//!           ──closed(conn, now)─────────────────▶ Core ──▶ Vec<Out>
//! ```
//!
//! Every call is two (or, when forking, more) dialogs of our own: the
//! caller's leg (we are its UAS) and one leg per registered contact of the
//! callee (we are their UAC). Nothing of a request is copied into another
//! leg but the two user names, the Max-Forwards count and the SDP, which
//! first goes through the [`SdpFilter`] (the `/ws` sanitizer in `serve`):
//! Via, Contact, Record-Route, Call-ID, tags, User-Agent and every other
//! header are ours. Responses go back on the connection their request came
//! on; requests to a user go on the connection each contact registered on.
//!
//! Timers (RFC 3261 §17, T1 = 500 ms): client transactions on unreliable
//! transports retransmit (A/E), INVITE legs without a provisional answer
//! give up after 64·T1 (B), ringing legs are cancelled after 3 minutes (C),
//! a 2xx to the caller is retransmitted until its ACK for at most 64·T1;
//! server transactions remember their last response for 64·T1 to answer
//! retransmissions and absorb ACKs of non-2xx responses, and on unreliable
//! transports re-send a non-2xx final response to an INVITE until its ACK
//! (G, H).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::auth::FailureLimits;
use crate::digest::{self, Algorithm, Credentials, NonceCheck, Nonces};
use crate::header::{split_commas, unquote, via_branch, NameAddr, SipUri};
use crate::message::{is_token, Message, ParseError};
use crate::registrar::{Binding, RegisterError, Registrar};
use crate::ConnId;

/// RFC 3261 T1.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2.
pub const T2: Duration = Duration::from_secs(4);
/// 64·T1: transaction timeouts (B, F, H, J).
pub const TX_TIMEOUT: Duration = Duration::from_secs(32);
/// How long an ended call is kept when all its legs are on reliable
/// transports (to acknowledge a late final response).
pub const REAP_RELIABLE: Duration = Duration::from_secs(5);
/// How long a callee's devices ring before the call is cancelled (Timer C).
pub const RING_TIMEOUT: Duration = Duration::from_secs(180);
/// Server transactions remembered at most (and client transactions
/// retransmitted at most).
pub const MAX_SERVER_TX: usize = 16_384;
/// What this core implements.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, UPDATE";

/// The core's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SIP domain and digest realm.
    pub domain: String,
    /// Challenge algorithms, in the order offered.
    pub algorithms: Vec<Algorithm>,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts_per_user: usize,
    pub max_registrations: usize,
    pub max_calls: usize,
    /// Nonce lifetime in seconds.
    pub nonce_ttl: u64,
    /// Failed authentications per address per minute.
    pub failures_per_address: u32,
    /// Failed authentications per account and address per 15 minutes.
    pub failures_per_account: u32,
}

impl Config {
    /// Defaults for `domain`.
    pub fn new(domain: &str) -> Config {
        Config {
            domain: domain.to_ascii_lowercase(),
            // RFC 8760: most preferred first. JsSIP and SIP.js keep only the
            // last challenge they receive, so MD5 goes last for them.
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            max_contacts_per_user: 10,
            max_registrations: 100_000,
            max_calls: 10_000,
            nonce_ttl: 300,
            failures_per_address: 20,
            failures_per_account: 5,
        }
    }
}

/// The account store, as the core sees it.
pub trait Accounts {
    /// `H(user:realm:password)` (lower-case hex) of `user` for `alg`.
    fn ha1(&self, user: &str, alg: Algorithm) -> Option<String>;
}

/// The SDP rules applied to every body forwarded.
pub trait SdpFilter {
    /// The body to forward, or `None` to refuse it.
    fn filter(&self, sdp: &str) -> Option<String>;

    /// A body forwarded within a call: where a media bridge rewrites the
    /// addresses. The default is [`SdpFilter::filter`].
    fn filter_call(&self, call: CallSdp, sdp: &str) -> Option<String> {
        let _ = call;
        self.filter(sdp)
    }
}

/// Which call an SDP body belongs to, and who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallSdp {
    /// The call's number (what [`Core::take_ended`] later reports).
    pub call: u64,
    /// Sent by the caller's side (else by the callee's).
    pub from_caller: bool,
    /// The sender's address on its SIP connection.
    pub peer: Option<IpAddr>,
    /// The callee leg an initial offer goes to, or its answer comes from
    /// (a forked call filters the offer once per leg); `None` within an
    /// established dialog (re-INVITE, UPDATE).
    pub leg: Option<usize>,
    /// The body goes to a WebSocket client (a browser: WebRTC media);
    /// else to a phone (UDP, TCP or TLS).
    pub to_websocket: bool,
    /// The recipient's address on its SIP connection (a phone's media
    /// usually comes from there before its answer does).
    pub to_peer: Option<IpAddr>,
}

/// Ended calls remembered at most until [`Core::take_ended`] (more: the
/// oldest are forgotten; a driver drains them on every tick).
pub const MAX_ENDED: usize = 65_536;

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub conn: ConnId,
    pub data: Vec<u8>,
}

/// What the core counts (read under the same lock as the core).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub received: u64,
    /// Messages that could not be parsed (answered 400 or dropped).
    pub malformed: u64,
    /// Messages over the size limit (answered 413 or dropped).
    pub too_large: u64,
    pub challenges: u64,
    pub auth_failures: u64,
    /// Authentications refused because the address or account was locked.
    pub auth_refused: u64,
    pub sdp_rejected: u64,
    pub registrations: u64,
    pub calls: u64,
    pub calls_answered: u64,
    pub messages_forwarded: u64,
    /// Responses and ACKs that matched no transaction or dialog.
    pub unmatched: u64,
}

#[derive(Debug, Clone)]
struct ConnInfo {
    peer: IpAddr,
    /// The peer's port, when the transport knows it (UDP, TCP): `rport`.
    port: Option<u16>,
    /// `WS`, `WSS`, `UDP`, `TCP` or `TLS` (for our Via).
    transport: String,
    reliable: bool,
    /// Our own `host[:port]` on this transport (Via sent-by and Contact);
    /// `None`: the domain.
    sent_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    Calling,
    Early,
    Confirmed,
    Done,
}

#[derive(Debug)]
struct Leg {
    conn: ConnId,
    call_id: String,
    to_tag: Option<String>,
    target: String,
    invite: Message,
    state: LegState,
    provisional: bool,
    cancel_pending: bool,
    cseq: u32,
    deadline: Instant,
}

#[derive(Debug)]
struct Retx {
    conn: ConnId,
    data: Vec<u8>,
    next: Instant,
    interval: Duration,
    until: Instant,
    cap: Duration,
}

/// A re-INVITE or UPDATE with an offer, forwarded to the other side and
/// waiting for its final response.
#[derive(Debug)]
struct Pending {
    /// The request as its sender sent it (answered from it).
    req: Message,
    /// Its sender: `None` the caller, `Some(i)` leg `i`.
    from_leg: Option<usize>,
    /// What we sent to the other side, and on which connection.
    sent: Message,
    sent_conn: ConnId,
}

/// Where a request in one of our dialogs goes, and its identifiers.
#[derive(Debug)]
struct DialogIds {
    conn: ConnId,
    target: String,
    from: String,
    to: String,
    call_id: String,
}

#[derive(Debug)]
struct Call {
    a_conn: ConnId,
    a_invite: Message,
    a_branch: String,
    a_target: String,
    our_tag: String,
    a_cseq: u32,
    callee: String,
    legs: Vec<Leg>,
    answered: Option<usize>,
    final_sent: bool,
    ended: bool,
    reap_at: Option<Instant>,
    a_2xx: Option<Retx>,
    best: (u8, u16),
    pending: Option<Pending>,
}

#[derive(Debug)]
struct ServerTx {
    response: Option<Vec<u8>>,
    code: u16,
    until: Instant,
    /// Timer G (RFC 3261 §17.2.1): a non-2xx final response to an INVITE
    /// on an unreliable transport, re-sent until its ACK (Timer H: 64·T1).
    resend: Option<(Instant, Duration)>,
}

type ServerKey = (ConnId, String, String);

/// The registrar and B2BUA.
#[derive(Debug)]
pub struct Core {
    config: Config,
    epoch: Instant,
    conns: HashMap<ConnId, ConnInfo>,
    registrar: Registrar,
    nonces: Nonces,
    failures: FailureLimits,
    calls: HashMap<u64, Call>,
    next_call: u64,
    a_index: HashMap<(ConnId, String), u64>,
    b_index: HashMap<String, (u64, usize)>,
    server_tx: HashMap<ServerKey, ServerTx>,
    client_retx: HashMap<String, Retx>,
    out: Vec<Out>,
    counters: Counters,
    /// Calls ended since the last [`Core::take_ended`].
    ended: Vec<u64>,
}

fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn branch() -> String {
    format!("z9hG4bK{}", token())
}

/// The standard reason phrase of the codes this core sends.
fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

/// The sender's top Via with `received` (RFC 3261 §18.2.1) and, when it
/// asked with a bare `rport` and the transport knows the port, `rport=PORT`
/// (RFC 3581).
fn with_received(via: &str, c: &ConnInfo) -> String {
    let mut out = String::with_capacity(via.len() + 40);
    let mut parts = via.split(';');
    out.push_str(parts.next().unwrap_or(""));
    for p in parts {
        out.push(';');
        if p.trim().eq_ignore_ascii_case("rport") {
            if let Some(port) = c.port {
                out.push_str(&format!("rport={port}"));
                continue;
            }
        }
        out.push_str(p);
    }
    out.push_str(&format!(";received={}", c.peer));
    out
}

/// How good a failure is to report to the caller (lower is better).
fn rank(code: u16) -> u8 {
    match code {
        600..=699 => 0,
        486 => 1,
        487 => 4,
        400..=499 => 2,
        _ => 3,
    }
}

/// The failure code the caller sees for a callee's `code`: nothing of the
/// callee's own authentication or redirection is passed on.
fn caller_code(code: u16) -> u16 {
    match code {
        486 | 600 | 603 | 604 | 606 | 488 | 480 | 404 | 408 | 487 => code,
        _ => 480,
    }
}

impl Core {
    pub fn new(config: Config, now: Instant) -> Core {
        Core {
            registrar: Registrar::new(config.max_contacts_per_user, config.max_registrations),
            nonces: Nonces::new(config.nonce_ttl),
            failures: FailureLimits::new(config.failures_per_address, config.failures_per_account),
            config,
            epoch: now,
            conns: HashMap::new(),
            calls: HashMap::new(),
            next_call: 1,
            a_index: HashMap::new(),
            b_index: HashMap::new(),
            server_tx: HashMap::new(),
            client_retx: HashMap::new(),
            out: Vec::new(),
            counters: Counters::default(),
            ended: Vec::new(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Registered contacts at the moment.
    pub fn registrations(&self) -> usize {
        self.registrar.len()
    }

    /// Calls at the moment.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// The calls (numbers given to [`SdpFilter::filter_call`]) that ended
    /// since the last call: their media can go. A number may be reported
    /// twice (when the call ends and when it is forgotten).
    pub fn take_ended(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.ended)
    }

    /// What the filter learns about a body `conn` sent within call `call`
    /// towards `to`.
    fn call_sdp(
        &self,
        call: u64,
        from_caller: bool,
        conn: ConnId,
        leg: Option<usize>,
        to: ConnId,
    ) -> CallSdp {
        let t = self.transport(to);
        CallSdp {
            call,
            from_caller,
            peer: self.conns.get(&conn).map(|c| c.peer),
            leg,
            to_websocket: t.eq_ignore_ascii_case("ws") || t.eq_ignore_ascii_case("wss"),
            to_peer: self.conns.get(&to).map(|c| c.peer),
        }
    }

    fn note_ended(&mut self, key: u64) {
        if self.ended.len() >= MAX_ENDED {
            self.ended.remove(0);
        }
        self.ended.push(key);
    }

    /// The calls answered and not ended (what [`Core::hang_up`] acts on).
    pub fn answered_calls(&self) -> HashSet<u64> {
        self.calls
            .iter()
            .filter(|(_, c)| !c.ended && c.answered.is_some() && c.final_sent)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Hangs up an answered call from our side (BYE to both), e.g. when
    /// its media stopped; a call not answered yet is left to its timers.
    pub fn hang_up(&mut self, key: u64, now: Instant) -> Vec<Out> {
        let answered = self
            .calls
            .get(&key)
            .is_some_and(|c| !c.ended && c.answered.is_some() && c.final_sent);
        if answered {
            if let Some(call) = self.calls.get_mut(&key) {
                call.a_2xx = None;
            }
            self.request_caller(key, "BYE", now);
            self.end_call(key, None, now);
        }
        self.take()
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() + 1
    }

    /// A new connection (or, for UDP, a new remote address).
    pub fn connected(&mut self, conn: ConnId, peer: IpAddr, transport: &str, reliable: bool) {
        self.conns.insert(
            conn,
            ConnInfo {
                peer,
                port: None,
                transport: transport.to_ascii_uppercase(),
                reliable,
                sent_by: None,
            },
        );
    }

    /// A new UDP flow or TCP connection from `peer`; `sent_by` is our own
    /// `host[:port]` on that listener (our Via's sent-by and our Contact,
    /// where the phone sends its responses and in-dialog requests).
    pub fn connected_at(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        transport: &str,
        reliable: bool,
        sent_by: &str,
    ) {
        self.conns.insert(
            conn,
            ConnInfo {
                peer: peer.ip(),
                port: Some(peer.port()),
                transport: transport.to_ascii_uppercase(),
                reliable,
                sent_by: Some(sent_by.to_string()),
            },
        );
    }

    /// The connections (flows) that a registration or a call still uses:
    /// a UDP transport keeps these and may forget the others.
    pub fn conns_in_use(&self) -> HashSet<ConnId> {
        let mut set = self.registrar.conns();
        for c in self.calls.values() {
            set.insert(c.a_conn);
            set.extend(c.legs.iter().map(|l| l.conn));
        }
        set
    }

    /// A stream message whose Content-Length exceeds the limit: its header
    /// section `head` gets 413 when it can be answered (the transport then
    /// closes the connection); counted either way.
    pub fn refused_too_large_head(&mut self, conn: ConnId, head: &[u8]) -> Vec<Out> {
        self.bad_input(conn, head, ParseError::TooLarge);
        self.take()
    }

    /// Counts input the transport refused before parsing (too large).
    pub fn refused_too_large(&mut self) {
        self.counters.too_large += 1;
    }

    /// A connection closed: its registrations go, its calls end.
    pub fn closed(&mut self, conn: ConnId, now: Instant) -> Vec<Out> {
        self.conns.remove(&conn);
        self.registrar.conn_closed(conn);
        // Its server transactions are left to expire (64·T1, bounded):
        // connection numbers are never reused, nothing can match them, and
        // a close then costs nothing per transaction of other connections.
        self.client_retx.retain(|_, r| r.conn != conn);
        let keys: Vec<u64> = self.calls.keys().copied().collect();
        for key in keys {
            let Some(call) = self.calls.get_mut(&key) else {
                continue;
            };
            if call.a_conn == conn {
                call.final_sent = true;
                call.a_2xx = None;
                self.end_call(key, None, now);
                continue;
            }
            let legs: Vec<usize> = (0..call.legs.len())
                .filter(|&i| call.legs[i].conn == conn)
                .collect();
            for i in legs {
                let Some(call) = self.calls.get_mut(&key) else {
                    break;
                };
                if call.answered == Some(i) {
                    call.legs[i].state = LegState::Done;
                    self.end_call(key, Some(i), now);
                    break;
                }
                if call.legs[i].state != LegState::Done {
                    call.legs[i].state = LegState::Done;
                    self.leg_failed(key, 480, now);
                }
            }
        }
        self.take()
    }

    fn take(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    fn send(&mut self, conn: ConnId, msg: &Message) -> Vec<u8> {
        let data = msg.to_bytes();
        self.out.push(Out {
            conn,
            data: data.clone(),
        });
        data
    }

    /// Sends a request, retransmitted on unreliable transports.
    fn send_request(&mut self, conn: ConnId, msg: &Message, now: Instant) {
        let data = self.send(conn, msg);
        let reliable = self.conns.get(&conn).is_none_or(|c| c.reliable);
        if reliable || msg.method() == Some("ACK") {
            return;
        }
        if self.client_retx.len() >= MAX_SERVER_TX {
            return;
        }
        if let Some(b) = msg.get("Via").and_then(via_branch) {
            let cap = if msg.method() == Some("INVITE") {
                Duration::MAX
            } else {
                T2
            };
            self.client_retx.insert(
                b.to_string(),
                Retx {
                    conn,
                    data,
                    next: now + T1,
                    interval: T1,
                    until: now + TX_TIMEOUT,
                    cap,
                },
            );
        }
    }

    fn transport(&self, conn: ConnId) -> String {
        self.conns
            .get(&conn)
            .map(|c| c.transport.clone())
            .unwrap_or_else(|| "WSS".into())
    }

    fn our_via(&self, conn: ConnId, branch: &str) -> String {
        let info = self.conns.get(&conn);
        let host = info
            .and_then(|c| c.sent_by.as_deref())
            .unwrap_or(&self.config.domain);
        // RFC 3581: ask for the response at the address we send from.
        let rport = if info.is_some_and(|c| !c.reliable) {
            ";rport"
        } else {
            ""
        };
        format!(
            "SIP/2.0/{} {host};branch={branch}{rport}",
            self.transport(conn),
        )
    }

    fn our_contact(&self, conn: ConnId) -> String {
        let t = self.transport(conn).to_ascii_lowercase();
        let t = match t.as_str() {
            "wss" | "ws" => "ws",
            "tls" => "tls",
            "tcp" => "tcp",
            _ => "udp",
        };
        let host = self
            .conns
            .get(&conn)
            .and_then(|c| c.sent_by.as_deref())
            .unwrap_or(&self.config.domain);
        format!("<sip:b2bua@{host};transport={t}>")
    }

    fn aor(&self, user: &str) -> String {
        format!("<sip:{user}@{}>", self.config.domain)
    }

    /// A response to `req` (which came on `conn`).
    fn response(&self, req: &Message, conn: ConnId, code: u16, to_tag: Option<&str>) -> Message {
        let mut r = Message::response(code, reason(code));
        for (i, v) in req.get_all("Via").enumerate() {
            // RFC 3261 §18.2.1: the sender's own address, back to the sender.
            let received = i == 0 && !v.to_ascii_lowercase().contains(";received=");
            match (received, self.conns.get(&conn)) {
                (true, Some(c)) => r.push("Via", with_received(v, c)),
                _ => r.push("Via", v),
            }
        }
        if let Some(f) = req.get("From") {
            r.push("From", f);
        }
        if let Some(t) = req.get("To") {
            let tagged = NameAddr::parse(t).is_some_and(|n| n.tag().is_some());
            if tagged || code == 100 {
                r.push("To", t);
            } else {
                let tag = to_tag.map(str::to_string).unwrap_or_else(token);
                r.push("To", format!("{t};tag={tag}"));
            }
        }
        r.push("Call-ID", req.call_id());
        if let Some(c) = req.get("CSeq") {
            r.push("CSeq", c);
        }
        r
    }

    /// Sends `resp` to `req` and remembers it in the server transaction.
    fn reply(&mut self, conn: ConnId, req: &Message, resp: Message, now: Instant) {
        let code = resp.code().unwrap_or(500);
        let data = self.send(conn, &resp);
        let Some(b) = req.get("Via").and_then(via_branch) else {
            return;
        };
        let key = (conn, b.to_string(), req.method().unwrap_or("").to_string());
        if self.server_tx.len() >= MAX_SERVER_TX && !self.server_tx.contains_key(&key) {
            return;
        }
        let unreliable = self.conns.get(&conn).is_some_and(|c| !c.reliable);
        let resend =
            (unreliable && code >= 300 && req.method() == Some("INVITE")).then_some((now + T1, T1));
        self.server_tx.insert(
            key,
            ServerTx {
                response: Some(data),
                code,
                until: now + TX_TIMEOUT,
                resend,
            },
        );
    }

    fn reply_code(&mut self, conn: ConnId, req: &Message, code: u16, now: Instant) {
        let r = self.response(req, conn, code, None);
        self.reply(conn, req, r, now);
    }

    /// One message from `conn`.
    pub fn receive(
        &mut self,
        conn: ConnId,
        data: &[u8],
        now: Instant,
        accounts: &dyn Accounts,
        sdp: &dyn SdpFilter,
    ) -> Vec<Out> {
        self.counters.received += 1;
        // Keep-alives (RFC 5626 §3.5.1 CRLF ping over streams, §4.4.1).
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            if data.starts_with(b"\r\n\r\n") {
                self.out.push(Out {
                    conn,
                    data: b"\r\n".to_vec(),
                });
            }
            return self.take();
        }
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.bad_input(conn, data, e);
                return self.take();
            }
        };
        if msg.method().is_some() {
            self.on_request(conn, msg, now, accounts, sdp);
        } else {
            self.on_response(conn, msg, now, sdp);
        }
        self.take()
    }

    /// Answers what can be answered of a bad message (a request whose
    /// start line and Via we can read gets 400/413); the rest is dropped.
    fn bad_input(&mut self, conn: ConnId, data: &[u8], e: ParseError) {
        let code = if e == ParseError::TooLarge {
            self.counters.too_large += 1;
            413
        } else {
            self.counters.malformed += 1;
            400
        };
        // Only a request whose mandatory headers can be read is answered.
        let head = &data[..data.len().min(8192)];
        let text = String::from_utf8_lossy(head);
        let Some(end) = text.find("\r\n\r\n") else {
            return;
        };
        let mut lines = text[..end].split("\r\n");
        let start = lines.next().unwrap_or("");
        let method = start.split(' ').next().unwrap_or("");
        if !is_token(method) || method == "ACK" || method.starts_with("SIP/") {
            return;
        }
        let mut r = Message::response(code, reason(code));
        for line in lines.take(crate::message::MAX_HEADERS) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = crate::message::canonical(name.trim());
            if ["Via", "From", "To", "Call-ID", "CSeq"].contains(&name.as_str()) {
                r.push(&name, value.trim());
            }
        }
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if r.get(name).is_none() {
                return;
            }
        }
        if let Some(to) = r.headers.iter_mut().find(|h| h.name == "To") {
            if !to.value.contains(";tag=") {
                to.value.push_str(&format!(";tag={}", token()));
            }
        }
        self.send(conn, &r);
    }

    fn on_request(
        &mut self,
        conn: ConnId,
        req: Message,
        now: Instant,
        accounts: &dyn Accounts,
        sdp: &dyn SdpFilter,
    ) {
        let method = req.method().unwrap_or("").to_string();
        // Server transaction: a retransmission gets the last response; an
        // ACK of a non-2xx final response ends here.
        if let Some(b) = req.get("Via").and_then(via_branch) {
            let lookup = if method == "ACK" {
                "INVITE"
            } else {
                method.as_str()
            };
            if let Some(tx) = self
                .server_tx
                .get_mut(&(conn, b.to_string(), lookup.to_string()))
            {
                if method == "ACK" {
                    if tx.code >= 300 {
                        tx.resend = None;
                        return;
                    }
                } else {
                    if let Some(r) = tx.response.clone() {
                        self.out.push(Out { conn, data: r });
                    }
                    return;
                }
            }
        }
        let call_id = req.call_id().to_string();
        if let Some(&(key, leg)) = self.b_index.get(&call_id) {
            let ok = self
                .calls
                .get(&key)
                .is_some_and(|c| c.legs.get(leg).is_some_and(|l| l.conn == conn));
            if ok {
                self.b_request(conn, key, leg, req, now, sdp);
            } else if method != "ACK" {
                self.reply_code(conn, &req, 481, now);
            }
            return;
        }
        if let Some(&key) = self.a_index.get(&(conn, call_id)) {
            self.a_request(conn, key, req, now, sdp);
            return;
        }
        let to_tagged = req
            .get("To")
            .and_then(NameAddr::parse)
            .is_some_and(|n| n.tag().is_some());
        match method.as_str() {
            "ACK" => self.counters.unmatched += 1,
            "OPTIONS" if !to_tagged => {
                let mut r = self.response(&req, conn, 200, None);
                r.push("Allow", ALLOW);
                r.push("Accept", "application/sdp");
                self.reply(conn, &req, r, now);
            }
            "REGISTER" => self.register(conn, &req, now, accounts),
            "INVITE" if !to_tagged => self.invite(conn, req, now, accounts, sdp),
            "MESSAGE" if !to_tagged => self.message(conn, &req, now, accounts),
            "INVITE" | "MESSAGE" | "OPTIONS" | "BYE" | "CANCEL" | "UPDATE" => {
                self.reply_code(conn, &req, 481, now)
            }
            _ => {
                let mut r = self.response(&req, conn, 405, None);
                r.push("Allow", ALLOW);
                self.reply(conn, &req, r, now);
            }
        }
    }

    /// Digest authentication of `req`: the user name, or the answer sent.
    fn authenticate(
        &mut self,
        conn: ConnId,
        req: &Message,
        now: Instant,
        accounts: &dyn Accounts,
        proxy: bool,
    ) -> Option<String> {
        let secs = self.secs(now);
        let peer = self.conns.get(&conn).map(|c| c.peer)?;
        if self.failures.address_blocked(peer, secs) {
            self.counters.auth_refused += 1;
            self.reply_code(conn, req, 403, now);
            return None;
        }
        let name = if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        let creds = req
            .get_all(name)
            .filter_map(Credentials::parse)
            .find(|c| c.realm.eq_ignore_ascii_case(&self.config.domain));
        let mut stale = false;
        if let Some(c) = creds {
            let alg = c.algorithm().filter(|a| self.config.algorithms.contains(a));
            let nc = c.nc.clone().unwrap_or_default();
            match (alg, self.nonces.check(&c.nonce, &nc, secs)) {
                (Some(alg), NonceCheck::Fresh) => {
                    if self.failures.account_blocked(&c.username, peer, secs) {
                        self.counters.auth_refused += 1;
                        self.reply_code(conn, req, 403, now);
                        return None;
                    }
                    let ha1 = accounts.ha1(&c.username, alg);
                    let method = req.method().unwrap_or("");
                    let uri_ok = Some(c.uri.as_str()) == req.uri();
                    let good = match &ha1 {
                        Some(h) => c.verify(alg, h, method) && uri_ok,
                        None => {
                            // The same work for an unknown user.
                            let _ = c.verify(alg, &alg.hash("x"), method);
                            false
                        }
                    };
                    if good {
                        return Some(c.username);
                    }
                    self.counters.auth_failures += 1;
                    self.failures.failed(&c.username, peer, secs);
                    self.reply_code(conn, req, 403, now);
                    return None;
                }
                (_, NonceCheck::Stale) => stale = true,
                _ => {}
            }
        }
        self.counters.challenges += 1;
        let code = if proxy { 407 } else { 401 };
        let mut r = self.response(req, conn, code, None);
        let header = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        for alg in self.config.algorithms.clone() {
            let nonce = self.nonces.issue(secs);
            r.push(
                header,
                digest::challenge(alg, &self.config.domain, &nonce, stale),
            );
        }
        self.reply(conn, req, r, now);
        None
    }

    fn register(&mut self, conn: ConnId, req: &Message, now: Instant, accounts: &dyn Accounts) {
        let Some(user) = self.authenticate(conn, req, now, accounts, false) else {
            return;
        };
        let to_user = req
            .get("To")
            .and_then(NameAddr::parse)
            .and_then(|n| SipUri::parse(&n.uri))
            .and_then(|u| u.user);
        if to_user.as_deref() != Some(user.as_str()) {
            self.reply_code(conn, req, 403, now);
            return;
        }
        let default = match req.get("Expires") {
            Some(e) => match e.parse::<u32>() {
                Ok(v) => v,
                Err(_) => return self.reply_code(conn, req, 400, now),
            },
            None => self.config.default_expires,
        };
        let contacts: Vec<&str> = req.get_all("Contact").flat_map(split_commas).collect();
        if contacts.len() > self.config.max_contacts_per_user {
            return self.reply_code(conn, req, 403, now);
        }
        if contacts == ["*"] {
            if default != 0 {
                return self.reply_code(conn, req, 400, now);
            }
            self.registrar.unbind_all(&user);
            self.reply_code(conn, req, 200, now);
            return;
        }
        let mut updates = Vec::new();
        for c in &contacts {
            let Some(na) = NameAddr::parse(c) else {
                return self.reply_code(conn, req, 400, now);
            };
            if SipUri::parse(&na.uri).is_none() {
                return self.reply_code(conn, req, 400, now);
            }
            let expires = match na.params.get("expires") {
                Some(e) => match e.parse::<u32>() {
                    Ok(v) => v,
                    Err(_) => return self.reply_code(conn, req, 400, now),
                },
                None => default,
            };
            if expires != 0 && expires < self.config.min_expires {
                let mut r = self.response(req, conn, 423, None);
                r.push("Min-Expires", self.config.min_expires.to_string());
                self.reply(conn, req, r, now);
                return;
            }
            let expires = expires.min(self.config.max_expires);
            let instance = na
                .params
                .get("+sip.instance")
                .map(|i| unquote(i).to_string());
            let reg_id = na.params.get("reg-id").and_then(|r| r.parse().ok());
            updates.push((
                expires,
                Binding {
                    uri: na.uri.clone(),
                    instance,
                    reg_id,
                    conn,
                    expires: now + Duration::from_secs(u64::from(expires)),
                },
            ));
        }
        let mut outbound = false;
        for (expires, b) in updates {
            outbound |= b.reg_id.is_some() && b.instance.is_some();
            if expires == 0 {
                self.registrar.unbind(&user, &b);
                continue;
            }
            match self.registrar.bind(&user, b) {
                Ok(()) => self.counters.registrations += 1,
                Err(RegisterError::TooManyContacts) => return self.reply_code(conn, req, 403, now),
                Err(RegisterError::Full) => return self.reply_code(conn, req, 503, now),
            }
        }
        let mut r = self.response(req, conn, 200, None);
        // Only this connection's own contacts: other devices' contacts are
        // none of its business.
        for b in self.registrar.lookup(&user, now) {
            if b.conn != conn {
                continue;
            }
            let left = b.expires.saturating_duration_since(now).as_secs();
            let mut v = format!("<{}>;expires={left}", b.uri);
            if let (Some(i), Some(id)) = (&b.instance, b.reg_id) {
                v.push_str(&format!(";+sip.instance=\"{i}\";reg-id={id}"));
            }
            r.push("Contact", v);
        }
        let supports_outbound = req
            .get_all("Supported")
            .flat_map(|s| s.split(','))
            .any(|s| s.trim().eq_ignore_ascii_case("outbound"));
        if outbound && supports_outbound {
            r.push("Require", "outbound");
        }
        self.reply(conn, req, r, now);
    }

    /// The local user a request URI names (our domain only).
    fn local_user(&self, uri: &str) -> Option<String> {
        let u = SipUri::parse(uri)?;
        if u.host != self.config.domain {
            return None;
        }
        u.user
    }

    /// Max-Forwards of a request to forward, or the 483/400 sent.
    fn max_forwards(&mut self, conn: ConnId, req: &Message, now: Instant) -> Option<u32> {
        match req.get("Max-Forwards").map(|v| v.parse::<u32>()) {
            None => Some(70),
            Some(Ok(0)) => {
                self.reply_code(conn, req, 483, now);
                None
            }
            Some(Ok(n)) => Some(n.min(70) - 1),
            Some(Err(_)) => {
                self.reply_code(conn, req, 400, now);
                None
            }
        }
    }

    fn from_user_is(req: &Message, user: &str) -> bool {
        req.get("From")
            .and_then(NameAddr::parse)
            .and_then(|n| SipUri::parse(&n.uri))
            .and_then(|u| u.user)
            .is_some_and(|u| u == user)
    }

    fn invite(
        &mut self,
        conn: ConnId,
        req: Message,
        now: Instant,
        accounts: &dyn Accounts,
        sdp: &dyn SdpFilter,
    ) {
        let Some(mf) = self.max_forwards(conn, &req, now) else {
            return;
        };
        let Some(callee) = req.uri().and_then(|u| self.local_user(u)) else {
            return self.reply_code(conn, &req, 404, now);
        };
        let Some(caller) = self.authenticate(conn, &req, now, accounts, true) else {
            return;
        };
        if !Self::from_user_is(&req, &caller) {
            return self.reply_code(conn, &req, 403, now);
        }
        let is_sdp = req
            .get("Content-Type")
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"));
        if !is_sdp || req.body.trim().is_empty() {
            // Offerless INVITEs (late offer) are not supported.
            return self.reply_code(conn, &req, 488, now);
        }
        if accounts.ha1(&callee, Algorithm::Md5).is_none()
            && accounts.ha1(&callee, Algorithm::Sha256).is_none()
        {
            return self.reply_code(conn, &req, 404, now);
        }
        // The calling device itself does not ring (a user calling their
        // own other devices).
        let mut bindings = self.registrar.lookup(&callee, now);
        bindings.retain(|b| b.conn != conn);
        if bindings.is_empty() {
            return self.reply_code(conn, &req, 480, now);
        }
        if self.calls.len() >= self.config.max_calls {
            return self.reply_code(conn, &req, 503, now);
        }
        let Some(a_target) = req.get("Contact").and_then(NameAddr::parse).map(|n| n.uri) else {
            return self.reply_code(conn, &req, 400, now);
        };
        // Numbers are never reused, even for a refused offer: a bridge
        // released late for one can never be another call's.
        let key = self.next_call;
        self.next_call += 1;
        // Each device gets the offer filtered for it (a browser and a
        // phone of one user need different media: a gateway for one).
        // A device whose offer is refused gets no leg: leg numbers count
        // the others.
        let mut offers: Vec<(Binding, String)> = Vec::with_capacity(bindings.len());
        for b in bindings {
            let c = self.call_sdp(key, true, conn, Some(offers.len()), b.conn);
            if let Some(o) = sdp.filter_call(c, &req.body) {
                offers.push((b, o));
            }
        }
        if offers.is_empty() {
            self.counters.sdp_rejected += 1;
            self.note_ended(key);
            return self.reply_code(conn, &req, 488, now);
        }
        let our_tag = token();
        let trying = self.response(&req, conn, 100, None);
        self.reply(conn, &req, trying, now);
        self.counters.calls += 1;
        let mut legs = Vec::new();
        for (b, offer) in offers {
            let call_id = format!("{}{}", token(), token());
            let from_tag = token();
            let mut m = Message::request("INVITE", &b.uri);
            m.push("Via", self.our_via(b.conn, &branch()));
            m.push("Max-Forwards", mf.to_string());
            m.push("From", format!("{};tag={from_tag}", self.aor(&caller)));
            m.push("To", self.aor(&callee));
            m.push("Call-ID", call_id.as_str());
            m.push("CSeq", "1 INVITE");
            m.push("Contact", self.our_contact(b.conn));
            m.push("Allow", ALLOW);
            m.push("Content-Type", "application/sdp");
            m.body = offer;
            self.send_request(b.conn, &m, now);
            self.b_index.insert(call_id.clone(), (key, legs.len()));
            legs.push(Leg {
                conn: b.conn,
                call_id,
                to_tag: None,
                target: b.uri,
                invite: m,
                state: LegState::Calling,
                provisional: false,
                cancel_pending: false,
                cseq: 1,
                deadline: now + TX_TIMEOUT,
            });
        }
        let a_branch = req
            .get("Via")
            .and_then(via_branch)
            .unwrap_or("")
            .to_string();
        self.a_index.insert((conn, req.call_id().to_string()), key);
        self.calls.insert(
            key,
            Call {
                a_conn: conn,
                a_invite: req,
                a_branch,
                a_target,
                our_tag,
                a_cseq: 0,
                callee,
                legs,
                answered: None,
                final_sent: false,
                ended: false,
                reap_at: None,
                a_2xx: None,
                best: (u8::MAX, 480),
                pending: None,
            },
        );
    }

    fn message(&mut self, conn: ConnId, req: &Message, now: Instant, accounts: &dyn Accounts) {
        let Some(mf) = self.max_forwards(conn, req, now) else {
            return;
        };
        let Some(callee) = req.uri().and_then(|u| self.local_user(u)) else {
            return self.reply_code(conn, req, 404, now);
        };
        let Some(caller) = self.authenticate(conn, req, now, accounts, true) else {
            return;
        };
        if !Self::from_user_is(req, &caller) {
            return self.reply_code(conn, req, 403, now);
        }
        let ctype = req.get("Content-Type").unwrap_or("text/plain").trim();
        let valid_type = ctype
            .split(';')
            .next()
            .and_then(|t| t.split_once('/'))
            .is_some_and(|(a, b)| is_token(a.trim()) && is_token(b.trim()));
        if !valid_type {
            return self.reply_code(conn, req, 415, now);
        }
        let bindings = self.registrar.lookup(&callee, now);
        if bindings.is_empty() {
            return self.reply_code(conn, req, 480, now);
        }
        for b in bindings {
            let mut m = Message::request("MESSAGE", &b.uri);
            m.push("Via", self.our_via(b.conn, &branch()));
            m.push("Max-Forwards", mf.to_string());
            m.push("From", format!("{};tag={}", self.aor(&caller), token()));
            m.push("To", self.aor(&callee));
            m.push("Call-ID", format!("{}{}", token(), token()));
            m.push("CSeq", "1 MESSAGE");
            m.push("Content-Type", ctype);
            m.body = req.body.clone();
            self.send_request(b.conn, &m, now);
            self.counters.messages_forwarded += 1;
        }
        self.reply_code(conn, req, 202, now);
    }

    /// A request in the caller's dialog (or its CANCEL).
    fn a_request(
        &mut self,
        conn: ConnId,
        key: u64,
        req: Message,
        now: Instant,
        sdp: &dyn SdpFilter,
    ) {
        let method = req.method().unwrap_or("").to_string();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        match method.as_str() {
            "ACK" => call.a_2xx = None,
            "CANCEL" => {
                let same = req.get("Via").and_then(via_branch) == Some(call.a_branch.as_str());
                if !same {
                    return self.reply_code(conn, &req, 481, now);
                }
                // The same To tag as the INVITE's responses (RFC 3261 §9.2).
                let tag = call.our_tag.clone();
                let r = self.response(&req, conn, 200, Some(&tag));
                self.reply(conn, &req, r, now);
                let Some(call) = self.calls.get_mut(&key) else {
                    return;
                };
                if !call.final_sent {
                    call.final_sent = true;
                    let invite = call.a_invite.clone();
                    let tag = call.our_tag.clone();
                    let r = self.response(&invite, conn, 487, Some(&tag));
                    self.reply(conn, &invite, r, now);
                    self.end_call(key, None, now);
                }
            }
            "BYE" => {
                let tag = call.our_tag.clone();
                let r = self.response(&req, conn, 200, Some(&tag));
                self.reply(conn, &req, r, now);
                if let Some(call) = self.calls.get_mut(&key) {
                    call.final_sent = true;
                    call.a_2xx = None;
                }
                self.end_call(key, None, now);
            }
            "INVITE" | "UPDATE" if !req.body.trim().is_empty() => {
                self.forward_offer(key, None, conn, req, now, sdp);
            }
            _ => {
                let tag = call.our_tag.clone();
                self.answer_in_dialog(conn, &req, Some(&tag), now);
            }
        }
    }

    /// A request in a callee's dialog.
    fn b_request(
        &mut self,
        conn: ConnId,
        key: u64,
        leg: usize,
        req: Message,
        now: Instant,
        sdp: &dyn SdpFilter,
    ) {
        let method = req.method().unwrap_or("").to_string();
        match method.as_str() {
            "ACK" => {}
            "BYE" => {
                self.reply_code(conn, &req, 200, now);
                let Some(call) = self.calls.get_mut(&key) else {
                    return;
                };
                let was_answered = call.answered == Some(leg);
                call.legs[leg].state = LegState::Done;
                if was_answered {
                    self.end_call(key, Some(leg), now);
                } else {
                    self.leg_failed(key, 480, now);
                }
            }
            "INVITE" | "UPDATE" if !req.body.trim().is_empty() => {
                self.forward_offer(key, Some(leg), conn, req, now, sdp);
            }
            _ => self.answer_in_dialog(conn, &req, None, now),
        }
    }

    /// A re-INVITE or UPDATE with a new offer (hold, renegotiation) from
    /// the caller (`from_leg` `None`) or the answered leg: its SDP
    /// sanitized, sent in the other side's dialog; the final response comes
    /// back through [`Core::pending_response`]. One at a time per call
    /// (else 491, RFC 3261 §14.1).
    fn forward_offer(
        &mut self,
        key: u64,
        from_leg: Option<usize>,
        conn: ConnId,
        req: Message,
        now: Instant,
        sdp: &dyn SdpFilter,
    ) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let tag = from_leg.is_none().then(|| call.our_tag.clone());
        let Some(answered) = call.answered else {
            return self.reply_code(conn, &req, 491, now);
        };
        if call.ended || (from_leg.is_some() && from_leg != Some(answered)) {
            return self.reply_code(conn, &req, 481, now);
        }
        if call.pending.is_some() {
            let r = self.response(&req, conn, 491, tag.as_deref());
            return self.reply(conn, &req, r, now);
        }
        let to = match from_leg {
            None => call.legs.get(answered).map_or(conn, |l| l.conn),
            Some(_) => call.a_conn,
        };
        let within = self.call_sdp(key, from_leg.is_none(), conn, None, to);
        let Some(body) = sdp.filter_call(within, &req.body) else {
            self.counters.sdp_rejected += 1;
            let r = self.response(&req, conn, 488, tag.as_deref());
            return self.reply(conn, &req, r, now);
        };
        let method = req.method().unwrap_or("INVITE").to_string();
        if method == "INVITE" {
            let r = self.response(&req, conn, 100, None);
            self.reply(conn, &req, r, now);
        }
        let sent = match from_leg {
            None => self.leg_request(key, answered, &method, None, None, Some(body), now),
            Some(_) => self.caller_request(key, &method, None, None, Some(body), now),
        };
        if let (Some((sent, sent_conn)), Some(call)) = (sent, self.calls.get_mut(&key)) {
            call.pending = Some(Pending {
                req,
                from_leg,
                sent,
                sent_conn,
            });
        }
    }

    /// A response to a forwarded re-INVITE/UPDATE: a final one goes back
    /// to the sender (SDP sanitized), a re-INVITE's is acknowledged. False
    /// when `resp` answers no pending request.
    fn pending_response(
        &mut self,
        conn: ConnId,
        resp: &Message,
        now: Instant,
        sdp: &dyn SdpFilter,
    ) -> bool {
        let call_id = resp.call_id().to_string();
        let key = match self.b_index.get(&call_id) {
            Some(&(key, _)) => key,
            None => match self.a_index.get(&(conn, call_id)) {
                Some(&key) => key,
                None => return false,
            },
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        let matches = call.pending.as_ref().is_some_and(|p| {
            p.sent_conn == conn
                && p.sent.call_id() == resp.call_id()
                && p.sent.cseq() == resp.cseq()
        });
        if !matches {
            return false;
        }
        let code = resp.code().unwrap_or(500);
        if code < 200 {
            return true;
        }
        let Some(p) = call.pending.take() else {
            return true;
        };
        let (sender, tag) = match p.from_leg {
            None => (call.a_conn, Some(call.our_tag.clone())),
            Some(i) => (call.legs.get(i).map_or(0, |l| l.conn), None),
        };
        let (seq, method) = p.sent.cseq().map_or((0, ""), |(n, m)| (n, m));
        if method == "INVITE" {
            // 2xx: a new transaction; non-2xx: the INVITE's own.
            let branch = (code >= 300)
                .then(|| p.sent.get("Via").and_then(via_branch).map(str::to_string))
                .flatten();
            match p.from_leg {
                None => {
                    let answered = call.answered.unwrap_or(0);
                    self.leg_request(key, answered, "ACK", Some(seq), branch, None, now);
                }
                Some(_) => {
                    self.caller_request(key, "ACK", Some(seq), branch, None, now);
                }
            }
        }
        let mut code = match code {
            200..=299 | 488 | 491 | 500 | 503 | 403 => code,
            _ => 488,
        };
        let body = if code < 300 {
            // The answer comes from the side the offer was sent to.
            let c = self.call_sdp(key, p.from_leg.is_some(), conn, None, sender);
            let b = sdp.filter_call(c, &resp.body);
            if b.is_none() {
                self.counters.sdp_rejected += 1;
                code = 488;
            }
            b
        } else {
            None
        };
        let mut r = self.response(&p.req, sender, code, tag.as_deref());
        if let Some(b) = body {
            r.push("Contact", self.our_contact(sender));
            r.push("Content-Type", "application/sdp");
            r.body = b;
        }
        self.reply(sender, &p.req, r, now);
        true
    }

    /// What both sides of a dialog get from us alone: OPTIONS and
    /// refreshes without a new offer are answered here; a re-INVITE
    /// without an offer is not supported (488); CANCEL outside its INVITE
    /// is unknown (481); the rest is not implemented (501).
    fn answer_in_dialog(&mut self, conn: ConnId, req: &Message, tag: Option<&str>, now: Instant) {
        let method = req.method().unwrap_or("");
        let code = match method {
            "UPDATE" | "OPTIONS" if req.body.trim().is_empty() => 200,
            "INVITE" | "UPDATE" => 488,
            "CANCEL" => 481,
            _ => 501,
        };
        let mut r = self.response(req, conn, code, tag);
        if code == 200 {
            r.push("Contact", self.our_contact(conn));
            r.push("Allow", ALLOW);
        }
        self.reply(conn, req, r, now);
    }

    /// A request to the caller inside its dialog (a BYE).
    fn request_caller(&mut self, key: u64, method: &str, now: Instant) {
        self.caller_request(key, method, None, None, None, now);
    }

    /// A request in the caller's dialog: a new CSeq unless `cseq` (an
    /// ACK's) is given, a new branch unless `branch` is; the SDP `body`,
    /// if any. Returns what was sent and on which connection.
    fn caller_request(
        &mut self,
        key: u64,
        method: &str,
        cseq: Option<u32>,
        branch_id: Option<String>,
        body: Option<String>,
        now: Instant,
    ) -> Option<(Message, ConnId)> {
        let call = self.calls.get_mut(&key)?;
        let cseq = match cseq {
            Some(n) => n,
            None => {
                call.a_cseq += 1;
                call.a_cseq
            }
        };
        let ids = DialogIds {
            conn: call.a_conn,
            target: call.a_target.clone(),
            from: format!(
                "<sip:{}@{}>;tag={}",
                call.callee, self.config.domain, call.our_tag
            ),
            to: call.a_invite.get("From").unwrap_or("").to_string(),
            call_id: call.a_invite.call_id().to_string(),
        };
        self.send_in_dialog(ids, method, cseq, branch_id, body, now)
    }

    /// Builds and sends a request in the dialog `ids`: our Via (a new
    /// branch unless given), our Contact (INVITE, UPDATE), the SDP body.
    fn send_in_dialog(
        &mut self,
        ids: DialogIds,
        method: &str,
        cseq: u32,
        branch_id: Option<String>,
        body: Option<String>,
        now: Instant,
    ) -> Option<(Message, ConnId)> {
        let conn = ids.conn;
        let mut m = Message::request(method, &ids.target);
        m.push("Via", self.our_via(conn, &branch_id.unwrap_or_else(branch)));
        m.push("Max-Forwards", "70");
        m.push("From", ids.from);
        m.push("To", ids.to);
        m.push("Call-ID", ids.call_id);
        m.push("CSeq", format!("{cseq} {method}"));
        if matches!(m.method(), Some("INVITE" | "UPDATE")) {
            m.push("Contact", self.our_contact(conn));
            m.push("Allow", ALLOW);
        }
        if let Some(b) = body {
            m.push("Content-Type", "application/sdp");
            m.body = b;
        }
        self.send_request(conn, &m, now);
        Some((m, conn))
    }

    /// A request in leg `i`'s dialog (after its 2xx), as
    /// [`Core::caller_request`].
    #[allow(clippy::too_many_arguments)]
    fn leg_request(
        &mut self,
        key: u64,
        i: usize,
        method: &str,
        cseq: Option<u32>,
        branch_id: Option<String>,
        body: Option<String>,
        now: Instant,
    ) -> Option<(Message, ConnId)> {
        let leg = self.calls.get_mut(&key)?.legs.get_mut(i)?;
        let cseq = match cseq {
            Some(n) => n,
            None => {
                leg.cseq += 1;
                leg.cseq
            }
        };
        let to = format!(
            "{};tag={}",
            leg.invite.get("To").unwrap_or(""),
            leg.to_tag.as_deref().unwrap_or("")
        );
        let ids = DialogIds {
            conn: leg.conn,
            target: leg.target.clone(),
            from: leg.invite.get("From").unwrap_or("").to_string(),
            to,
            call_id: leg.call_id.clone(),
        };
        self.send_in_dialog(ids, method, cseq, branch_id, body, now)
    }

    /// A request to a callee leg: BYE or ACK (of a 2xx) in its dialog, or
    /// CANCEL / ACK of a non-2xx in its INVITE transaction.
    fn request_leg(&mut self, key: u64, i: usize, method: &str, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(leg) = call.legs.get_mut(i) else {
            return;
        };
        let inv = &leg.invite;
        let same_tx = method == "CANCEL" || (method == "ACK" && leg.state != LegState::Confirmed);
        let uri = if same_tx {
            inv.uri().unwrap_or("").to_string()
        } else {
            leg.target.clone()
        };
        let mut m = Message::request(method, &uri);
        if same_tx {
            m.push("Via", inv.get("Via").unwrap_or(""));
        } else {
            m.push("Via", String::new());
        }
        m.push("Max-Forwards", "70");
        m.push("From", inv.get("From").unwrap_or(""));
        let to = match (&leg.to_tag, method) {
            (Some(t), m) if m != "CANCEL" => format!("{};tag={t}", inv.get("To").unwrap_or("")),
            _ => inv.get("To").unwrap_or("").to_string(),
        };
        m.push("To", to);
        m.push("Call-ID", leg.call_id.as_str());
        let seq = match method {
            "BYE" => {
                leg.cseq += 1;
                leg.cseq
            }
            _ => 1,
        };
        m.push("CSeq", format!("{seq} {method}"));
        let conn = leg.conn;
        if !same_tx {
            let via = self.our_via(conn, &branch());
            if let Some(h) = m.headers.iter_mut().find(|h| h.name == "Via") {
                h.value = via;
            }
        }
        self.send_request(conn, &m, now);
    }

    fn cancel_leg(&mut self, key: u64, i: usize, now: Instant) {
        let Some(leg) = self.calls.get_mut(&key).and_then(|c| c.legs.get_mut(i)) else {
            return;
        };
        match leg.state {
            LegState::Calling | LegState::Early if leg.provisional => {
                leg.state = LegState::Done;
                self.request_leg(key, i, "CANCEL", now);
            }
            LegState::Calling | LegState::Early => {
                leg.cancel_pending = true;
                leg.state = LegState::Done;
            }
            LegState::Confirmed => {
                leg.state = LegState::Done;
                self.request_leg(key, i, "BYE", now);
            }
            LegState::Done => {}
        }
    }

    /// Ends a call: every leg but `except` is cancelled or hung up, the
    /// caller too when `except` is a leg; the call is kept for 64·T1 to
    /// acknowledge late responses.
    fn end_call(&mut self, key: u64, except: Option<usize>, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.ended {
            return;
        }
        call.ended = true;
        if self.ended.len() >= MAX_ENDED {
            self.ended.remove(0);
        }
        self.ended.push(key);
        // Late responses are acknowledged for 64·T1 on unreliable
        // transports; reliable ones deliver them within moments.
        let conns = std::iter::once(call.a_conn).chain(call.legs.iter().map(|l| l.conn));
        let reliable = conns
            .into_iter()
            .all(|c| self.conns.get(&c).is_none_or(|i| i.reliable));
        call.reap_at = Some(now + if reliable { REAP_RELIABLE } else { TX_TIMEOUT });
        let n = call.legs.len();
        let bye_caller = except.is_some() && call.final_sent && call.answered.is_some();
        for i in 0..n {
            if Some(i) != except {
                self.cancel_leg(key, i, now);
            }
        }
        if bye_caller {
            if let Some(call) = self.calls.get_mut(&key) {
                call.a_2xx = None;
            }
            self.request_caller(key, "BYE", now);
        }
    }

    /// A leg failed with `code`: when every leg has, the caller hears it.
    fn leg_failed(&mut self, key: u64, code: u16, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let r = (rank(code), caller_code(code));
        if r.0 < call.best.0 {
            call.best = r;
        }
        let all_done = call.legs.iter().all(|l| l.state == LegState::Done);
        if !all_done || call.final_sent || call.answered.is_some() {
            return;
        }
        call.final_sent = true;
        let code = call.best.1;
        let invite = call.a_invite.clone();
        let (conn, tag) = (call.a_conn, call.our_tag.clone());
        let resp = self.response(&invite, conn, code, Some(&tag));
        self.reply(conn, &invite, resp, now);
        self.end_call(key, None, now);
    }

    fn on_response(&mut self, conn: ConnId, resp: Message, now: Instant, sdp: &dyn SdpFilter) {
        if let Some(b) = resp.get("Via").and_then(via_branch) {
            if let Some(r) = self.client_retx.get(b) {
                let code = resp.code().unwrap_or(0);
                let invite = resp.cseq().is_some_and(|c| c.1 == "INVITE");
                if r.conn == conn && (code >= 200 || invite) {
                    self.client_retx.remove(b);
                }
            }
        }
        if self.pending_response(conn, &resp, now, sdp) {
            return;
        }
        let Some(&(key, i)) = self.b_index.get(resp.call_id()) else {
            self.counters.unmatched += 1;
            return;
        };
        let ok = self
            .calls
            .get(&key)
            .and_then(|c| c.legs.get(i))
            .is_some_and(|l| l.conn == conn);
        // Our initial INVITE is CSeq 1; other responses in the leg (to a
        // BYE, or a late one to a re-INVITE) end here.
        if !ok || resp.cseq() != Some((1, "INVITE")) {
            return;
        }
        let code = resp.code().unwrap_or(500);
        let to_tag = resp
            .get("To")
            .and_then(NameAddr::parse)
            .and_then(|n| n.tag().map(str::to_string));
        let a_conn = self.calls.get(&key).map_or(conn, |c| c.a_conn);
        let from_callee = self.call_sdp(key, false, conn, Some(i), a_conn);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if (200..300).contains(&code)
            && call.answered == Some(i)
            && call.legs[i].state == LegState::Confirmed
        {
            // A retransmitted 2xx: its ACK again.
            self.request_leg(key, i, "ACK", now);
            return;
        }
        let leg = &mut call.legs[i];
        if code < 200 {
            leg.provisional = true;
            if leg.state == LegState::Calling {
                leg.deadline = now + RING_TIMEOUT;
            }
            if leg.cancel_pending {
                leg.cancel_pending = false;
                self.request_leg(key, i, "CANCEL", now);
                return;
            }
            if leg.state == LegState::Done || call.final_sent || call.ended {
                return;
            }
            if code > 100 {
                leg.state = LegState::Early;
                let body = if resp.body.trim().is_empty() {
                    None
                } else {
                    sdp.filter_call(from_callee, &resp.body)
                };
                let invite = call.a_invite.clone();
                let (a_conn, tag) = (call.a_conn, call.our_tag.clone());
                let mut r = self.response(
                    &invite,
                    a_conn,
                    if code == 183 { 183 } else { 180 },
                    Some(&tag),
                );
                r.push("Contact", self.our_contact(a_conn));
                if let Some(b) = body {
                    r.push("Content-Type", "application/sdp");
                    r.body = b;
                }
                self.send(a_conn, &r);
            }
            return;
        }
        if code < 300 {
            leg.to_tag = to_tag;
            if let Some(t) = resp.get("Contact").and_then(NameAddr::parse) {
                leg.target = t.uri;
            }
            let was = leg.state;
            leg.state = LegState::Confirmed;
            self.request_leg(key, i, "ACK", now);
            let Some(call) = self.calls.get_mut(&key) else {
                return;
            };
            let late = was == LegState::Done || call.answered.is_some() || call.ended;
            let answer = if late {
                sdp.filter(&resp.body)
            } else {
                sdp.filter_call(from_callee, &resp.body)
            };
            if late || answer.is_none() {
                if answer.is_none() {
                    self.counters.sdp_rejected += 1;
                }
                call.legs[i].state = LegState::Done;
                self.request_leg(key, i, "BYE", now);
                if answer.is_none() {
                    self.leg_failed(key, 488, now);
                }
                return;
            }
            call.answered = Some(i);
            call.final_sent = true;
            self.counters.calls_answered += 1;
            let invite = call.a_invite.clone();
            let (a_conn, tag) = (call.a_conn, call.our_tag.clone());
            let mut r = self.response(&invite, a_conn, 200, Some(&tag));
            r.push("Contact", self.our_contact(a_conn));
            r.push("Allow", ALLOW);
            r.push("Content-Type", "application/sdp");
            r.body = answer.unwrap_or_default();
            let data = self.send(a_conn, &r);
            if let Some(call) = self.calls.get_mut(&key) {
                call.a_2xx = Some(Retx {
                    conn: a_conn,
                    data,
                    next: now + T1,
                    interval: T1,
                    until: now + TX_TIMEOUT,
                    cap: T2,
                });
                let others: Vec<usize> = (0..call.legs.len()).filter(|&j| j != i).collect();
                for j in others {
                    self.cancel_leg(key, j, now);
                }
            }
            return;
        }
        // Final failure: acknowledged in the same transaction.
        leg.to_tag = to_tag;
        let was = leg.state;
        leg.state = LegState::Done;
        self.request_leg(key, i, "ACK", now);
        if was != LegState::Done {
            self.leg_failed(key, code, now);
        }
    }

    /// Timers; call every 100–500 ms.
    pub fn tick(&mut self, now: Instant) -> Vec<Out> {
        let secs = self.secs(now);
        self.registrar.expire(now);
        self.nonces.prune(secs);
        self.failures.prune(secs);
        self.server_tx.retain(|_, t| t.until > now);
        let mut resend = Vec::new();
        for ((conn, _, _), t) in self.server_tx.iter_mut() {
            let (Some((next, interval)), Some(data)) = (t.resend, &t.response) else {
                continue;
            };
            if now >= next {
                resend.push(Out {
                    conn: *conn,
                    data: data.clone(),
                });
                let interval = (interval * 2).min(T2);
                t.resend = Some((now + interval, interval));
            }
        }
        self.client_retx.retain(|_, r| {
            if now >= r.until {
                return false;
            }
            if now >= r.next {
                resend.push(Out {
                    conn: r.conn,
                    data: r.data.clone(),
                });
                r.interval = (r.interval * 2).min(r.cap);
                r.next = now + r.interval;
            }
            true
        });
        self.out.extend(resend);
        let keys: Vec<u64> = self.calls.keys().copied().collect();
        for key in keys {
            let Some(call) = self.calls.get_mut(&key) else {
                continue;
            };
            if call.reap_at.is_some_and(|t| now >= t) {
                self.remove_call(key);
                continue;
            }
            let mut retx = None;
            let mut gave_up = false;
            if let Some(r) = &mut call.a_2xx {
                if now >= r.until {
                    gave_up = true;
                } else if now >= r.next {
                    retx = Some(Out {
                        conn: r.conn,
                        data: r.data.clone(),
                    });
                    r.interval = (r.interval * 2).min(r.cap);
                    r.next = now + r.interval;
                }
            }
            if let Some(o) = retx {
                self.out.push(o);
            }
            if gave_up {
                // No ACK from the caller: hang up both sides.
                if let Some(call) = self.calls.get_mut(&key) {
                    call.a_2xx = None;
                }
                self.request_caller(key, "BYE", now);
                self.end_call(key, None, now);
                continue;
            }
            let Some(call) = self.calls.get_mut(&key) else {
                continue;
            };
            let expired: Vec<(usize, bool)> = call
                .legs
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    matches!(l.state, LegState::Calling | LegState::Early) && now >= l.deadline
                })
                .map(|(i, l)| (i, l.provisional))
                .collect();
            for (i, provisional) in expired {
                self.cancel_leg(key, i, now);
                self.leg_failed(key, if provisional { 480 } else { 408 }, now);
            }
        }
        self.take()
    }

    fn remove_call(&mut self, key: u64) {
        if let Some(call) = self.calls.remove(&key) {
            self.note_ended(key);
            self.a_index
                .remove(&(call.a_conn, call.a_invite.call_id().to_string()));
            for l in &call.legs {
                self.b_index.remove(&l.call_id);
            }
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

//! Authentication and admission against the live relay: wrong passwords,
//! expired and valid TURN REST credentials, stale and foreign nonces (and
//! the client's recovery), the per-user allocation quota, and the rate limit
//! on unauthenticated answers. Each refusal must show in its counter.
//!
//! Also home of [`Driver`], the small synchronous driver that runs the
//! sans-IO `turn::client::Client` over a real UDP socket or TCP stream
//! (used by `policy` and `badinput` too), and of hand-made STUN requests
//! signed with the long-term key.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun::attr::{self, Attribute};
use stun::{Class, Key, Message, MessageEncoder, MessageType, Method};
use stun::{PasswordAlgorithm, StreamDecoder, TransactionId};
use turn::client::{Client, ClientConfig, Event};
use turn::Transport;

use crate::support::*;

// ---- metrics -----------------------------------------------------------------

/// The value of one metric line, e.g. `onionrtc_allocations_total{transport="tcp"}`.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// The current value of `name` (counters are published every ~250 ms).
pub fn metric_now(relay: &TestRelay, name: &str) -> u64 {
    metric(&relay.handle().metrics().render(), name)
}

/// Polls `name` for up to 5 s until `ok` holds, and returns its last value
/// (the caller asserts, so a failure prints the value).
pub fn wait_metric(relay: &TestRelay, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = metric_now(relay, name);
        if ok(v) || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The metric names of the auth failure counter.
pub fn auth_failures(reason: &str) -> String {
    format!("onionrtc_auth_failures_total{{reason=\"{reason}\"}}")
}

// ---- hand-made STUN ----------------------------------------------------------

/// Long-term credentials for a hand-made request.
pub struct Signer<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
    pub key: &'a Key,
}

/// A request with `attrs`, then (if `signer`) USERNAME, REALM, NONCE and an
/// MD5 MESSAGE-INTEGRITY, then FINGERPRINT.
pub fn encode_request(
    method: Method,
    txid: TransactionId,
    attrs: &[Attribute<'_>],
    signer: Option<&Signer<'_>>,
) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let typ = MessageType::new(method, Class::Request);
    let mut enc = MessageEncoder::new(&mut buf, typ, txid).unwrap();
    for a in attrs {
        enc.push(a).unwrap();
    }
    if let Some(s) = signer {
        enc.push(&Attribute::Username(s.username)).unwrap();
        enc.push(&Attribute::Realm(s.realm)).unwrap();
        enc.push(&Attribute::Nonce(s.nonce)).unwrap();
        enc.message_integrity(s.key).unwrap();
    }
    enc.fingerprint().unwrap();
    let n = enc.finish();
    buf.truncate(n);
    buf
}

/// A fresh random transaction ID.
pub fn txid() -> TransactionId {
    TransactionId(rand::random())
}

/// The ERROR-CODE of a response, `None` for a success.
pub fn error_code(resp: &[u8]) -> Option<u16> {
    let msg = Message::parse(resp).expect("a STUN response");
    if msg.class() == Class::Success {
        return None;
    }
    match msg.get(attr::ERROR_CODE) {
        Some(Ok(Attribute::ErrorCode(e))) => Some(e.code),
        other => panic!("error response without ERROR-CODE: {other:?}"),
    }
}

/// REALM and NONCE of a 401 or 438 response.
pub fn realm_nonce(resp: &[u8]) -> (String, String) {
    let msg = Message::parse(resp).expect("a STUN response");
    let realm = match msg.get(attr::REALM) {
        Some(Ok(Attribute::Realm(r))) => r.to_owned(),
        other => panic!("no REALM: {other:?}"),
    };
    let nonce = match msg.get(attr::NONCE) {
        Some(Ok(Attribute::Nonce(n))) => n.to_owned(),
        other => panic!("no NONCE: {other:?}"),
    };
    (realm, nonce)
}

/// The MD5 long-term key.
pub fn long_term_key(user: &str, realm: &str, password: &str) -> Key {
    Key::long_term(PasswordAlgorithm::Md5, user, realm, password).unwrap()
}

// ---- a synchronous driver for turn::client -------------------------------------

enum Wire {
    Udp(UdpSocket),
    Stream {
        sock: TcpStream,
        decoder: StreamDecoder,
        closed: bool,
    },
}

impl Wire {
    /// A UDP socket bound to `local` (any port), or a TCP connection from
    /// it to `server`.
    fn open(transport: Transport, server: SocketAddr, local: IpAddr) -> Self {
        match transport {
            Transport::Udp => Wire::Udp(UdpSocket::bind((local, 0)).unwrap()),
            Transport::Tcp => {
                let domain = socket2::Domain::for_address(server);
                let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
                s.bind(&SocketAddr::new(local, 0).into()).unwrap();
                s.connect_timeout(&server.into(), Duration::from_secs(5))
                    .unwrap();
                let sock: TcpStream = s.into();
                sock.set_nodelay(true).unwrap();
                Wire::Stream {
                    sock,
                    decoder: StreamDecoder::new(70_000),
                    closed: false,
                }
            }
            Transport::Tls => panic!("the test driver speaks UDP and TCP only"),
        }
    }
}

/// Runs a `turn::client::Client` over a real socket to the relay, and
/// lets the test send hand-made requests on the same 5-tuple (their
/// responses are taken out before the client sees them). Every wait is
/// bounded.
pub struct Driver {
    pub client: Client,
    wire: Wire,
    server: SocketAddr,
    events: VecDeque<Event>,
    raw_wanted: Vec<TransactionId>,
    raw_got: HashMap<TransactionId, Vec<u8>>,
    buf: Vec<u8>,
}

impl Driver {
    /// A client of `config` whose socket is bound to `local` (any port).
    /// UDP and TCP only.
    pub fn new(config: ClientConfig, local: IpAddr) -> Self {
        let server = config.server;
        let wire = Wire::open(config.transport, server, local);
        Driver {
            client: Client::new(config, Instant::now()),
            wire,
            server,
            events: VecDeque::new(),
            raw_wanted: Vec::new(),
            raw_got: HashMap::new(),
            buf: vec![0; 70_000],
        }
    }

    /// RFC 8016: opens a new socket (UDP) or connection (TCP) from
    /// 127.0.0.1 and moves the allocation there; the old socket closes.
    pub fn move_to(&mut self, transport: Transport) {
        self.wire = Wire::open(transport, self.server, IpAddr::V4(Ipv4Addr::LOCALHOST));
        self.client
            .move_to(Instant::now(), self.server, transport)
            .unwrap();
    }

    /// A UDP client of the test user from 127.0.0.1.
    pub fn udp(relay: &TestRelay) -> Self {
        Self::with_user(relay, Transport::Udp, USER, PASSWORD)
    }

    /// A client from 127.0.0.1 with these credentials.
    pub fn with_user(relay: &TestRelay, transport: Transport, user: &str, password: &str) -> Self {
        let server = SocketAddr::from(([127, 0, 0, 1], relay.port));
        let config = ClientConfig::new(server, transport, user, password);
        Self::new(config, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        match &mut self.wire {
            Wire::Udp(s) => {
                s.send_to(bytes, self.server).unwrap();
            }
            Wire::Stream { sock, .. } => sock.write_all(bytes).unwrap(),
        }
    }

    fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            self.send_bytes(&t.payload);
        }
    }

    /// Waits up to `wait` for bytes from the relay and returns whole
    /// datagrams or stream frames.
    fn receive(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let wait = wait.max(Duration::from_millis(1));
        let mut out = Vec::new();
        match &mut self.wire {
            Wire::Udp(s) => {
                s.set_read_timeout(Some(wait)).unwrap();
                for i in 0..256 {
                    if i == 1 {
                        s.set_nonblocking(true).unwrap();
                    }
                    match s.recv_from(&mut self.buf) {
                        Ok((n, from)) if from == self.server => out.push(self.buf[..n].to_vec()),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                s.set_nonblocking(false).unwrap();
            }
            Wire::Stream {
                sock,
                decoder,
                closed,
            } => {
                if *closed {
                    std::thread::sleep(wait);
                    return out;
                }
                sock.set_read_timeout(Some(wait)).unwrap();
                match sock.read(&mut self.buf) {
                    Ok(0) => *closed = true,
                    Ok(n) => decoder.push(&self.buf[..n]).unwrap(),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => *closed = true,
                }
                while let Some((_, frame)) = decoder.next_frame().unwrap() {
                    out.push(frame.to_vec());
                }
            }
        }
        out
    }

    fn dispatch(&mut self, now: Instant, frame: &[u8]) {
        if let Ok(msg) = Message::parse(frame) {
            let id = msg.transaction_id();
            if msg.class().is_response() && self.raw_wanted.contains(&id) {
                self.raw_got.insert(id, frame.to_vec());
                return;
            }
        }
        match self.client.config().transport {
            Transport::Udp => self.client.handle_datagram(now, self.server, frame),
            _ => {
                let _ = self.client.handle_stream_bytes(now, frame);
            }
        }
    }

    /// Sends what the client queued, waits up to `wait` for the relay, hands
    /// over what came, runs the client's timers and collects its events.
    pub fn step(&mut self, wait: Duration) {
        self.flush();
        for frame in self.receive(wait) {
            self.dispatch(Instant::now(), &frame);
        }
        self.client.handle_timeout(Instant::now());
        self.flush();
        while let Some(e) = self.client.poll_event() {
            self.events.push_back(e);
        }
    }

    /// Steps for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.step(Duration::from_millis(10));
        }
    }

    /// The first event (already collected or arriving within `limit`) that
    /// `pred` accepts; it is removed from the queue.
    pub fn wait_event(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.events.iter().position(&mut pred) {
                return self.events.remove(i);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.step(Duration::from_millis(10));
        }
    }

    /// Every event collected so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Allocates; the relayed addresses, or the error code and reason.
    pub fn allocate(&mut self) -> Result<Vec<SocketAddr>, (u16, String)> {
        self.client.allocate(Instant::now()).unwrap();
        let ev = self
            .wait_event(Duration::from_secs(10), |e| {
                matches!(
                    e,
                    Event::Allocated { .. }
                        | Event::AllocationFailed { .. }
                        | Event::TransactionTimedOut { .. }
                )
            })
            .expect("no answer to Allocate within 10 s");
        match ev {
            Event::Allocated { relayed, .. } => Ok(relayed),
            Event::AllocationFailed { code, reason } => Err((code, reason)),
            other => panic!("Allocate: {other:?}"),
        }
    }

    /// Deletes the allocation and waits for the answer.
    pub fn deallocate(&mut self) {
        self.client.deallocate(Instant::now()).unwrap();
        let ev = self.wait_event(Duration::from_secs(10), |e| {
            matches!(e, Event::Deallocated | Event::RefreshFailed { .. })
        });
        assert_eq!(ev, Some(Event::Deallocated));
    }

    /// Sends a hand-made request with transaction ID `id` and returns its
    /// response (retransmitted every 500 ms over UDP); `None` after `limit`.
    pub fn exchange(&mut self, id: TransactionId, req: &[u8], limit: Duration) -> Option<Vec<u8>> {
        self.raw_wanted.push(id);
        let reliable = matches!(self.wire, Wire::Stream { .. });
        let start = Instant::now();
        let mut next_send = start;
        let resp = loop {
            if let Some(r) = self.raw_got.remove(&id) {
                break Some(r);
            }
            let now = Instant::now();
            if now >= start + limit {
                break None;
            }
            if now >= next_send {
                self.send_bytes(req);
                next_send = if reliable {
                    start + limit
                } else {
                    now + Duration::from_millis(500)
                };
            }
            self.step(Duration::from_millis(10));
        };
        self.raw_wanted.retain(|t| *t != id);
        resp
    }

    /// Sends `method` with `attrs` and no credentials; returns the REALM
    /// and NONCE of the 401 it must get.
    pub fn challenge(&mut self, method: Method, attrs: &[Attribute<'_>]) -> (String, String) {
        let id = txid();
        let req = encode_request(method, id, attrs, None);
        let resp = self
            .exchange(id, &req, Duration::from_secs(5))
            .expect("no challenge within 5 s");
        assert_eq!(error_code(&resp), Some(401), "challenge to {method}");
        realm_nonce(&resp)
    }

    /// A hand-made request signed for the test user (after a challenge of
    /// its own); a 438 is retried once with the new nonce. The response's
    /// error code, `None` for success.
    pub fn signed(&mut self, method: Method, attrs: &[Attribute<'_>]) -> Option<u16> {
        let (realm, mut nonce) = self.challenge(method, attrs);
        let key = long_term_key(USER, &realm, PASSWORD);
        for _ in 0..2 {
            let id = txid();
            let signer = Signer {
                username: USER,
                realm: &realm,
                nonce: &nonce,
                key: &key,
            };
            let req = encode_request(method, id, attrs, Some(&signer));
            let resp = self
                .exchange(id, &req, Duration::from_secs(5))
                .expect("no response within 5 s");
            match error_code(&resp) {
                Some(438) => nonce = realm_nonce(&resp).1,
                code => return code,
            }
        }
        Some(438)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const ALLOCATE_UDP: [Attribute<'static>; 1] = [Attribute::RequestedTransport(17)];

// ---- tests ---------------------------------------------------------------------

#[test]
fn wrong_password_is_401_and_counted() {
    let relay = TestRelay::start(|_| {});
    let mut bad = Driver::with_user(&relay, Transport::Udp, USER, "not-the-password");
    let err = bad.allocate().unwrap_err();
    assert_eq!(err.0, 401, "{err:?}");
    let name = auth_failures("bad_integrity");
    let v = wait_metric(&relay, &name, |v| v >= 1);
    assert!(v >= 1, "{name} = {v}");

    let mut unknown = Driver::with_user(&relay, Transport::Udp, "mallory", PASSWORD);
    assert_eq!(unknown.allocate().unwrap_err().0, 401);
    let name = auth_failures("unknown_user");
    let v = wait_metric(&relay, &name, |v| v >= 1);
    assert!(v >= 1, "{name} = {v}");

    // Nothing was allocated; the right password works.
    let created = r#"onionrtc_allocations_total{transport="udp"}"#;
    assert_eq!(metric_now(&relay, created), 0);
    Driver::udp(&relay).allocate().unwrap();
    assert_eq!(wait_metric(&relay, created, |v| v == 1), 1);
}

#[test]
fn rest_credentials_expired_401_valid_ok() {
    let relay = TestRelay::start(|_| {});
    let now = unix_now();

    let user = turn::auth::rest_username(now - 60, Some("bob"));
    let pass = turn::auth::rest_password(b"rest-secret", &user);
    let mut expired = Driver::with_user(&relay, Transport::Udp, &user, &pass);
    assert_eq!(expired.allocate().unwrap_err().0, 401);
    let name = auth_failures("expired");
    let v = wait_metric(&relay, &name, |v| v >= 1);
    assert!(v >= 1, "{name} = {v}");

    // A current username with a password made from another secret.
    let user = turn::auth::rest_username(now + 3600, Some("eve"));
    let pass = turn::auth::rest_password(b"not-the-secret", &user);
    let before = metric_now(&relay, &auth_failures("bad_integrity"));
    let mut forged = Driver::with_user(&relay, Transport::Udp, &user, &pass);
    assert_eq!(forged.allocate().unwrap_err().0, 401);
    let name = auth_failures("bad_integrity");
    let v = wait_metric(&relay, &name, |v| v > before);
    assert!(v > before, "{name} = {v}");

    let user = turn::auth::rest_username(now + 3600, Some("carol"));
    let pass = turn::auth::rest_password(b"rest-secret", &user);
    let mut valid = Driver::with_user(&relay, Transport::Udp, &user, &pass);
    let relayed = valid.allocate().unwrap();
    assert_eq!(relayed.len(), 1, "{relayed:?}");
}

/// A nonce the relay did not issue to this client (one character changed)
/// is answered 438 with a fresh nonce, which then works.
#[test]
fn tampered_nonce_is_438_and_the_fresh_nonce_works() {
    let relay = TestRelay::start(|_| {});
    let mut d = Driver::udp(&relay);
    let (realm, nonce) = d.challenge(Method::ALLOCATE, &ALLOCATE_UDP);
    let mut chars: Vec<char> = nonce.chars().collect();
    let i = chars.len() - 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let key = long_term_key(USER, &realm, PASSWORD);

    let send = |d: &mut Driver, nonce: &str| {
        let id = txid();
        let signer = Signer {
            username: USER,
            realm: &realm,
            nonce,
            key: &key,
        };
        let req = encode_request(Method::ALLOCATE, id, &ALLOCATE_UDP, Some(&signer));
        d.exchange(id, &req, Duration::from_secs(5))
            .expect("no response")
    };
    let resp = send(&mut d, &tampered);
    assert_eq!(error_code(&resp), Some(438));
    let (_, fresh) = realm_nonce(&resp);
    assert_ne!(fresh, tampered);
    let name = auth_failures("stale_nonce");
    assert_eq!(wait_metric(&relay, &name, |v| v == 1), 1);

    let resp = send(&mut d, &fresh);
    assert_eq!(error_code(&resp), None, "Allocate with the fresh nonce");
    let msg = Message::parse(&resp).unwrap();
    assert!(matches!(
        msg.get(attr::XOR_RELAYED_ADDRESS),
        Some(Ok(Attribute::XorRelayedAddress(_)))
    ));
    assert_eq!(metric_now(&relay, &auth_failures("bad_integrity")), 0);
}

/// The turn client holds a nonce of relay A; relay B on the same port, not
/// of A's pool (another REST secret, so another nonce key), answers 438 and
/// the client retries with B's nonce at once, without a new 401 round trip.
/// (Relays of one pool accept each other's nonces: see
/// `browser::chromium_follows_alternate_server_from_a_draining_relay`.)
#[test]
fn nonce_from_another_relay_is_438_and_the_client_recovers() {
    let relay_a = TestRelay::start(|_| {});
    let port = relay_a.port;
    let mut d = Driver::udp(&relay_a);
    d.allocate().unwrap();
    d.deallocate();
    drop(relay_a);

    let listen = relay::config::Listen {
        proto: relay::config::ListenProto::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let relay_b = TestRelay::start(|c| {
        c.listen = vec![listen];
        c.auth_secrets = vec![relay::config::Secret::new("another-pool-secret")];
    });
    assert_eq!(relay_b.handle().udp_addrs(), &[listen.addr]);
    let relayed = d.allocate().expect("the client recovers from 438");
    assert_eq!(relayed.len(), 1);
    let name = auth_failures("stale_nonce");
    assert_eq!(wait_metric(&relay_b, &name, |v| v == 1), 1);
    assert_eq!(metric_now(&relay_b, "onionrtc_auth_challenges_total"), 0);
    assert_eq!(metric_now(&relay_b, &auth_failures("bad_integrity")), 0);
}

#[test]
fn third_allocation_of_a_user_is_486_and_counted() {
    let relay = TestRelay::start(|c| c.max_allocations_per_static_user = 2);
    let mut d1 = Driver::udp(&relay);
    let mut d2 = Driver::udp(&relay);
    let mut d3 = Driver::udp(&relay);
    d1.allocate().unwrap();
    d2.allocate().unwrap();
    let err = d3.allocate().unwrap_err();
    assert_eq!(err.0, 486, "{err:?}");
    let name = "onionrtc_quota_refused_total";
    assert_eq!(wait_metric(&relay, name, |v| v == 1), 1);

    // Deleting one allocation gives the quota back.
    d1.deallocate();
    d3.allocate()
        .expect("allocation after the quota was released");
    assert_eq!(metric_now(&relay, name), 1);
}

/// 1000 Binding requests from one UDP source: the relay answers the burst
/// and the refill, drops the rest and counts each drop. Another source is
/// still answered.
#[test]
fn unauthenticated_binding_burst_is_rate_limited() {
    const N: usize = 1000;
    let relay = TestRelay::start(|c| {
        c.unauthenticated_rate = 5;
        c.unauthenticated_burst = 10;
    });
    let server = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    for i in 0..N {
        let req = encode_request(Method::BINDING, txid(), &[], None);
        sock.send_to(&req, server).unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let sent_in = start.elapsed();
    let mut answers = 0u64;
    let mut buf = [0u8; 1500];
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let msg = Message::parse(&buf[..n]).unwrap();
        assert_eq!(msg.method(), Method::BINDING);
        answers += 1;
    }
    let window = start.elapsed().as_secs_f64();
    let most = 10 + (5.0 * window).ceil() as u64 + 1;
    eprintln!("{answers} answers to {N} Binding requests sent in {sent_in:?}");
    assert!(answers >= 10, "{answers} answers: the burst must pass");
    assert!(
        answers <= most,
        "{answers} answers, expected at most {most}"
    );
    let name = "onionrtc_rate_limited_total";
    let want = N as u64 - answers;
    let v = wait_metric(&relay, name, |v| v >= want);
    assert_eq!(v, want, "{name}");

    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let id = txid();
    other
        .send_to(&encode_request(Method::BINDING, id, &[], None), server)
        .unwrap();
    let (n, _) = other
        .recv_from(&mut buf)
        .expect("another source is answered");
    assert_eq!(Message::parse(&buf[..n]).unwrap().transaction_id(), id);
}

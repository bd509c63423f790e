//! Server unit tests in simulated time: no sockets, no sleeps.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun::attr::{self, Attribute};
use stun::{
    AddressFamily, ChannelData, Class, Key, Message, MessageEncoder, MessageType, Method,
    PasswordAlgorithm, TransactionId,
};

use super::*;
use crate::auth::{rest_password, rest_username, Credentials};
use crate::{FiveTuple, Transport};

const REALM: &str = "test.realm";
const UNIX0: u64 = 1_800_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn relay_v4() -> IpAddr {
    "192.0.2.10".parse().unwrap()
}

fn config() -> ServerConfig {
    let creds = Credentials::new(
        REALM,
        [("alice", "alice-pw"), ("bob", "bob-pw")],
        [b"rest-secret".to_vec(), b"old-secret".to_vec()],
    )
    .unwrap();
    let mut c = ServerConfig::new(
        creds,
        RelayAddresses {
            ipv4: Some(relay_v4()),
            ipv6: Some("2001:db8::10".parse().unwrap()),
            ..Default::default()
        },
    );
    c.ports = 50000..=50999;
    c
}

/// A test client: builds requests, feeds them to the server in simulated
/// time, and reads what comes back.
struct H {
    s: Server,
    now: Instant,
    ft: FiveTuple,
    user: String,
    password: String,
    nonce: String,
    realm: String,
    algorithm: PasswordAlgorithm,
    next_tx: u8,
}

fn ft(client: &str, transport: Transport) -> FiveTuple {
    FiveTuple {
        client: addr(client),
        server: addr("192.0.2.1:3478"),
        transport,
    }
}

impl H {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(c: ServerConfig) -> Self {
        let now = Instant::now();
        H {
            s: Server::new(c, now, UNIX0),
            now,
            ft: ft("203.0.113.5:40000", Transport::Udp),
            user: "alice".into(),
            password: "alice-pw".into(),
            nonce: String::new(),
            realm: REALM.into(),
            algorithm: PasswordAlgorithm::Md5,
            next_tx: 0,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }

    fn txid(&mut self) -> TransactionId {
        self.next_tx = self.next_tx.wrapping_add(1);
        TransactionId([self.next_tx; 12])
    }

    fn key(&self) -> Key {
        Key::long_term(self.algorithm, &self.user, &self.realm, &self.password).unwrap()
    }

    /// Encodes a request with `attrs`, authenticated if a nonce is known.
    fn build(
        &self,
        method: Method,
        txid: TransactionId,
        attrs: &[Attribute<'_>],
        auth: bool,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut e =
            MessageEncoder::new(&mut buf, MessageType::new(method, Class::Request), txid).unwrap();
        for a in attrs {
            e.push(a).unwrap();
        }
        if auth {
            e.push(&Attribute::Username(&self.user)).unwrap();
            e.push(&Attribute::Realm(&self.realm)).unwrap();
            e.push(&Attribute::Nonce(&self.nonce)).unwrap();
            if self.algorithm == PasswordAlgorithm::Sha256 {
                e.push_password_algorithms(&[(2, &[]), (1, &[])]).unwrap();
                e.push(&Attribute::PasswordAlgorithm(
                    attr::PasswordAlgorithmEntry {
                        algorithm: 2,
                        params: &[],
                    },
                ))
                .unwrap();
                e.message_integrity_sha256(&self.key()).unwrap();
            } else {
                e.message_integrity(&self.key()).unwrap();
            }
        }
        e.fingerprint().unwrap();
        let n = e.finish();
        buf.truncate(n);
        buf
    }

    fn feed(&mut self, bytes: &[u8]) {
        let r = self.s.handle_client_packet(self.now, self.ft, bytes);
        assert!(r.is_none(), "a request produced data");
    }

    /// All outputs, binding relays as they are asked for.
    fn outputs(&mut self) -> Vec<Output> {
        let mut v = Vec::new();
        while let Some(o) = self.s.poll_output() {
            if let Output::BindRelay { token, .. } = &o {
                let t = *token;
                v.push(o);
                self.s.relay_bound(self.now, t, Ok(()));
                continue;
            }
            v.push(o);
        }
        v
    }

    /// The messages transmitted to `ft`.
    fn replies(&mut self) -> Vec<Vec<u8>> {
        let ft = self.ft;
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Transmit {
                    five_tuple,
                    payload,
                } if five_tuple == ft => Some(payload),
                _ => None,
            })
            .collect()
    }

    /// Sends a request and returns the single reply.
    fn request(&mut self, method: Method, attrs: &[Attribute<'_>]) -> Vec<u8> {
        let txid = self.txid();
        let auth = !self.nonce.is_empty();
        let req = self.build(method, txid, attrs, auth);
        self.feed(&req);
        let mut r = self.replies();
        assert_eq!(r.len(), 1, "expected one reply to {method}");
        let reply = r.remove(0);
        let m = Message::parse(&reply).unwrap();
        assert_eq!(m.transaction_id(), txid);
        reply
    }

    /// Gets a nonce from a 401 challenge.
    fn login(&mut self) {
        self.nonce.clear();
        let r = self.request(Method::ALLOCATE, &[Attribute::RequestedTransport(17)]);
        let m = Message::parse(&r).unwrap();
        assert_eq!(code(&m), Some(401));
        self.take_nonce(&m);
    }

    fn take_nonce(&mut self, m: &Message<'_>) {
        match m.get(attr::NONCE) {
            Some(Ok(Attribute::Nonce(n))) => self.nonce = n.to_string(),
            other => panic!("no nonce: {other:?}"),
        }
    }

    fn allocate_with(&mut self, attrs: &[Attribute<'_>]) -> Vec<u8> {
        if self.nonce.is_empty() {
            self.login();
        }
        self.request(Method::ALLOCATE, attrs)
    }

    /// Allocates and returns the relayed addresses.
    fn allocate(&mut self) -> Vec<SocketAddr> {
        let r = self.allocate_with(&[Attribute::RequestedTransport(17)]);
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.class(), Class::Success, "allocate failed: {:?}", code(&m));
        m.verify_integrity(&self.key()).unwrap();
        relayed(&m)
    }

    fn expect_code(&mut self, method: Method, attrs: &[Attribute<'_>], want: u16) {
        let r = self.request(method, attrs);
        let m = Message::parse(&r).unwrap();
        assert_eq!(code(&m), Some(want), "{method} {attrs:?}");
    }

    fn expect_ok(&mut self, method: Method, attrs: &[Attribute<'_>]) {
        let r = self.request(method, attrs);
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.class(), Class::Success, "{method} failed: {:?}", code(&m));
        m.verify_integrity(&self.key()).unwrap();
    }

    fn peer_data(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; PEER_DATA_HEADROOM + data.len() + PEER_DATA_TAILROOM];
        buf[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + data.len()].copy_from_slice(data);
        let f = self
            .s
            .handle_peer_data(self.now, relay, peer, &mut buf, data.len())?;
        assert_eq!(f.five_tuple, self.ft);
        Some(buf[f.start..f.end].to_vec())
    }
}

fn code(m: &Message<'_>) -> Option<u16> {
    match m.get(attr::ERROR_CODE) {
        Some(Ok(Attribute::ErrorCode(e))) => Some(e.code),
        _ => None,
    }
}

fn relayed(m: &Message<'_>) -> Vec<SocketAddr> {
    m.attributes()
        .filter_map(|a| match a {
            Ok(Attribute::XorRelayedAddress(a)) => Some(a),
            _ => None,
        })
        .collect()
}

fn lifetime(m: &Message<'_>) -> Option<u32> {
    match m.get(attr::LIFETIME) {
        Some(Ok(Attribute::Lifetime(l))) => Some(l),
        _ => None,
    }
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let typ = MessageType::new(Method::SEND, Class::Indication);
    let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([9; 12])).unwrap();
    e.push(&Attribute::XorPeerAddress(peer)).unwrap();
    e.push(&Attribute::Data(data)).unwrap();
    let n = e.finish();
    buf.truncate(n);
    buf
}

fn channel_data(n: u16, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4 + data.len() + 4];
    let len = ChannelData::encode(n, data, &mut b, false).unwrap();
    b.truncate(len);
    b
}

const PEER: &str = "198.18.0.1:1";

fn public_peer() -> SocketAddr {
    // Sans-IO tests send nothing; any address the default policy allows will do.
    addr("93.184.216.34:5000")
}

#[test]
fn binding_answers_with_the_reflexive_address() {
    let mut h = H::new();
    let r = h.request(Method::BINDING, &[]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert!(
        matches!(m.get(attr::XOR_MAPPED_ADDRESS), Some(Ok(Attribute::XorMappedAddress(a))) if a == h.ft.client)
    );
    m.verify_fingerprint().unwrap();
    assert!(
        m.get(attr::SOFTWARE).is_none(),
        "SOFTWARE is off by default"
    );
}

#[test]
fn challenge_then_allocate() {
    let mut h = H::new();
    let r = h.request(Method::ALLOCATE, &[Attribute::RequestedTransport(17)]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(401));
    assert!(matches!(
        m.get(attr::REALM),
        Some(Ok(Attribute::Realm(REALM)))
    ));
    assert!(m.get(attr::PASSWORD_ALGORITHMS).is_some());
    assert!(!m.has_integrity());
    h.take_nonce(&m);
    assert!(h.nonce.starts_with("obMatJos2"));
    let r = h.request(Method::ALLOCATE, &[Attribute::RequestedTransport(17)]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    m.verify_integrity(&h.key()).unwrap();
    let rel = relayed(&m);
    assert_eq!(rel.len(), 1);
    assert_eq!(rel[0].ip(), relay_v4());
    assert!((50000..=50999).contains(&rel[0].port()));
    assert_eq!(lifetime(&m), Some(600));
    assert!(
        matches!(m.get(attr::XOR_MAPPED_ADDRESS), Some(Ok(Attribute::XorMappedAddress(a))) if a == h.ft.client)
    );
    assert_eq!(h.s.allocation_count(), 1);
    assert_eq!(h.s.stats().allocations_created[0], 1);
    assert_eq!(h.s.stats().challenges, 1);
}

#[test]
fn wrong_password_is_401_and_counted() {
    let mut h = H::new();
    h.login();
    h.password = "wrong".into();
    // The server's 401 carries no integrity; read it raw.
    let txid = h.txid();
    let req = h.build(
        Method::ALLOCATE,
        txid,
        &[Attribute::RequestedTransport(17)],
        true,
    );
    h.feed(&req);
    let r = h.replies();
    let m = Message::parse(&r[0]).unwrap();
    assert_eq!(code(&m), Some(401));
    assert_eq!(h.s.stats().auth_failures_for(AuthFailure::BadIntegrity), 1);
    assert_eq!(h.s.allocation_count(), 0);
}

#[test]
fn unknown_user_and_wrong_realm() {
    let mut h = H::new();
    h.login();
    h.user = "mallory".into();
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 401);
    assert_eq!(h.s.stats().auth_failures_for(AuthFailure::UnknownUser), 1);
    h.user = "alice".into();
    h.realm = "other.realm".into();
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 401);
    assert_eq!(h.s.stats().auth_failures_for(AuthFailure::WrongRealm), 1);
}

#[test]
fn stale_nonce_is_438_and_the_new_nonce_works() {
    let mut h = H::new();
    h.login();
    h.advance(Duration::from_secs(601));
    let r = h.request(Method::ALLOCATE, &[Attribute::RequestedTransport(17)]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(438));
    assert_eq!(h.s.stats().auth_failures_for(AuthFailure::StaleNonce), 1);
    h.take_nonce(&m);
    h.allocate();
}

#[test]
fn nonce_is_bound_to_the_client_address() {
    let mut h = H::new();
    h.login();
    h.ft = ft("203.0.113.6:40000", Transport::Udp);
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 438);
}

#[test]
fn rest_credentials_valid_rotated_and_expired() {
    let mut h = H::new();
    h.user = rest_username(UNIX0 + 100, Some("abc"));
    h.password = rest_password(b"rest-secret", &h.user);
    h.allocate();
    // The old secret still works (rotation).
    let mut h = H::new();
    h.user = rest_username(UNIX0 + 100, None);
    h.password = rest_password(b"old-secret", &h.user);
    h.allocate();
    // Expired once the clock passes the expiry.
    let mut h = H::new();
    h.user = rest_username(UNIX0 + 100, Some("abc"));
    h.password = rest_password(b"rest-secret", &h.user);
    h.login();
    h.advance(Duration::from_secs(101));
    let r = h.request(Method::ALLOCATE, &[Attribute::RequestedTransport(17)]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(401));
    assert_eq!(h.s.stats().auth_failures_for(AuthFailure::Expired), 1);
}

#[test]
fn sha256_password_algorithm() {
    let mut h = H::new();
    h.login();
    h.algorithm = PasswordAlgorithm::Sha256;
    let r = h.allocate_with(&[Attribute::RequestedTransport(17)]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    m.verify_integrity_sha256(&h.key()).unwrap();
}

#[test]
fn userhash_authenticates_static_users() {
    let mut h = H::new();
    h.login();
    let txid = h.txid();
    let mut buf = vec![0u8; 1024];
    let mut e = MessageEncoder::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, Class::Request),
        txid,
    )
    .unwrap();
    e.push(&Attribute::RequestedTransport(17)).unwrap();
    e.push(&Attribute::UserHash(stun::integrity::userhash(
        "alice", REALM,
    )))
    .unwrap();
    e.push(&Attribute::Realm(REALM)).unwrap();
    e.push(&Attribute::Nonce(&h.nonce)).unwrap();
    e.message_integrity(&h.key()).unwrap();
    let n = e.finish();
    h.feed(&buf[..n]);
    let r = h.replies();
    let m = Message::parse(&r[0]).unwrap();
    assert_eq!(m.class(), Class::Success, "{:?}", code(&m));
}

#[test]
fn missing_attributes_are_400() {
    let mut h = H::new();
    h.login();
    h.expect_code(Method::ALLOCATE, &[], 400);
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(99)], 442);
    // TCP relaying needs a TCP/TLS control connection.
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(6)], 400);
    let both = [
        Attribute::RequestedTransport(17),
        Attribute::RequestedAddressFamily(AddressFamily::V4),
        Attribute::AdditionalAddressFamily(AddressFamily::V6),
    ];
    h.expect_code(Method::ALLOCATE, &both, 400);
    let token_and_even = [
        Attribute::RequestedTransport(17),
        Attribute::EvenPort(false),
        Attribute::ReservationToken([1; 8]),
    ];
    h.expect_code(Method::ALLOCATE, &token_and_even, 400);
    assert_eq!(h.s.allocation_count(), 0);
}

#[test]
fn unknown_comprehension_required_attribute_is_420() {
    let mut h = H::new();
    h.login();
    let attrs = [
        Attribute::RequestedTransport(17),
        Attribute::Unknown {
            typ: 0x7777,
            value: b"x",
        },
        Attribute::Unknown {
            typ: 0xC001,
            value: b"optional",
        },
    ];
    let r = h.request(Method::ALLOCATE, &attrs);
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(420));
    match m.get(attr::UNKNOWN_ATTRIBUTES) {
        Some(Ok(Attribute::UnknownAttributes(u))) => {
            assert_eq!(u.iter().collect::<Vec<_>>(), vec![0x7777])
        }
        other => panic!("{other:?}"),
    }
    // Optional unknown attributes alone are ignored.
    let attrs = [
        Attribute::RequestedTransport(17),
        Attribute::Unknown {
            typ: 0xC001,
            value: b"optional",
        },
    ];
    h.expect_ok(Method::ALLOCATE, &attrs);
}

#[test]
fn allocation_mismatch_and_retransmission() {
    let mut h = H::new();
    h.login();
    let txid = h.txid();
    let req = h.build(
        Method::ALLOCATE,
        txid,
        &[Attribute::RequestedTransport(17)],
        true,
    );
    h.feed(&req);
    let first = h.replies();
    h.feed(&req);
    let again = h.replies();
    let a = Message::parse(&first[0]).unwrap();
    let b = Message::parse(&again[0]).unwrap();
    assert_eq!(a.class(), Class::Success);
    assert_eq!(b.class(), Class::Success);
    assert_eq!(relayed(&a), relayed(&b));
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 437);
    assert_eq!(h.s.allocation_count(), 1);
}

#[test]
fn allocation_expires_in_simulated_time() {
    let mut h = H::new();
    let relay = h.allocate()[0];
    h.advance(Duration::from_secs(599));
    assert_eq!(h.s.allocation_count(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.s.allocation_count(), 0);
    let out = h.outputs();
    assert!(out.contains(&Output::ReleaseRelay {
        addr: relay,
        protocol: RelayProtocol::Udp
    }));
    assert!(out.contains(&Output::AllocationEnded {
        five_tuple: h.ft,
        reason: EndReason::Expired
    }));
    assert_eq!(h.s.stats().allocations_current[0], 0);
    h.expect_code(Method::REFRESH, &[], 437);
}

#[test]
fn refresh_extends_caps_and_deletes() {
    let mut h = H::new();
    h.allocate();
    h.advance(Duration::from_secs(500));
    let r = h.request(Method::REFRESH, &[Attribute::Lifetime(100_000)]);
    assert_eq!(lifetime(&Message::parse(&r).unwrap()), Some(3600));
    h.advance(Duration::from_secs(3599));
    assert_eq!(h.s.allocation_count(), 1);
    h.login();
    let r = h.request(Method::REFRESH, &[]);
    assert_eq!(lifetime(&Message::parse(&r).unwrap()), Some(600));
    let r = h.request(Method::REFRESH, &[Attribute::Lifetime(0)]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(lifetime(&m), Some(0));
    assert_eq!(h.s.allocation_count(), 0);
    assert_eq!(h.s.stats().allocations_current, [0, 0, 0]);
}

#[test]
fn requested_lifetime_on_allocate() {
    let mut h = H::new();
    let r = h.allocate_with(&[Attribute::RequestedTransport(17), Attribute::Lifetime(30)]);
    // Below the default: the default applies.
    assert_eq!(lifetime(&Message::parse(&r).unwrap()), Some(600));
    let mut h = H::new();
    let r = h.allocate_with(&[Attribute::RequestedTransport(17), Attribute::Lifetime(1200)]);
    assert_eq!(lifetime(&Message::parse(&r).unwrap()), Some(1200));
}

#[test]
fn wrong_user_on_existing_allocation_is_441() {
    let mut h = H::new();
    h.allocate();
    h.user = "bob".into();
    h.password = "bob-pw".into();
    h.expect_code(Method::REFRESH, &[], 441);
    assert_eq!(
        h.s.stats().auth_failures_for(AuthFailure::WrongCredentials),
        1
    );
}

#[test]
fn permission_lifetime_and_data_both_ways() {
    let mut h = H::new();
    let relay = h.allocate()[0];
    let peer = public_peer();
    // No permission yet: Send is dropped, peer data too.
    assert!(h
        .s
        .handle_client_packet(h.now, h.ft, &send_indication(peer, b"x"))
        .is_none());
    assert!(h.peer_data(relay, peer, b"in").is_none());
    assert_eq!(h.s.stats().dropped_no_permission, 2);
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer)],
    );
    let pkt = send_indication(peer, b"hello");
    let s = h.s.handle_client_packet(h.now, h.ft, &pkt).unwrap();
    assert_eq!((s.relay, s.peer, s.data), (relay, peer, &b"hello"[..]));
    assert_eq!(s.to, Destination::Network);
    // Peer → client without a channel: a Data indication.
    let out = h.peer_data(relay, peer, b"world").unwrap();
    let m = Message::parse(&out).unwrap();
    assert_eq!((m.method(), m.class()), (Method::DATA, Class::Indication));
    assert!(
        matches!(m.get(attr::XOR_PEER_ADDRESS), Some(Ok(Attribute::XorPeerAddress(p))) if p == peer)
    );
    assert!(matches!(
        m.get(attr::DATA),
        Some(Ok(Attribute::Data(b"world")))
    ));
    // The permission covers the IP, any port.
    let other_port = SocketAddr::new(peer.ip(), 6000);
    assert!(h
        .s
        .handle_client_packet(h.now, h.ft, &send_indication(other_port, b"x"))
        .is_some());
    // It lasts 300 s.
    h.advance(Duration::from_secs(299));
    assert!(h.peer_data(relay, peer, b"x").is_some());
    h.advance(Duration::from_secs(1));
    assert!(h.peer_data(relay, peer, b"x").is_none());
    assert!(h.s.handle_client_packet(h.now, h.ft, &pkt).is_none());
    // Refreshing reinstates it.
    h.login();
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer)],
    );
    assert!(h.peer_data(relay, peer, b"x").is_some());
    assert_eq!(h.s.stats().packets_to_peer, 2);
}

#[test]
fn channels_bind_relay_expire_and_cool_down() {
    let mut h = H::new();
    let relay = h.allocate()[0];
    let peer = public_peer();
    let bind = |n: u16, p: SocketAddr| [Attribute::ChannelNumber(n), Attribute::XorPeerAddress(p)];
    h.expect_code(Method::CHANNEL_BIND, &bind(0x3FFF, peer), 400);
    h.expect_code(Method::CHANNEL_BIND, &bind(0x8000, peer), 400);
    h.expect_ok(Method::CHANNEL_BIND, &bind(0x4000, peer));
    // Client → peer over the channel, zero copy.
    let cd = channel_data(0x4000, b"media");
    let s = h.s.handle_client_packet(h.now, h.ft, &cd).unwrap();
    assert_eq!((s.relay, s.peer, s.data), (relay, peer, &b"media"[..]));
    // Unknown channel: dropped.
    assert!(h
        .s
        .handle_client_packet(h.now, h.ft, &channel_data(0x4001, b"x"))
        .is_none());
    assert_eq!(h.s.stats().dropped_no_channel, 1);
    // Peer → client: ChannelData, unpadded over UDP.
    let out = h.peer_data(relay, peer, b"abcde").unwrap();
    assert_eq!(out, [0x40, 0x00, 0x00, 0x05, b'a', b'b', b'c', b'd', b'e']);
    // Uniqueness rules.
    let other = addr("93.184.216.35:5000");
    h.expect_code(Method::CHANNEL_BIND, &bind(0x4000, other), 400);
    h.expect_code(Method::CHANNEL_BIND, &bind(0x4001, peer), 400);
    // Re-binding the same pair refreshes.
    h.advance(Duration::from_secs(299));
    h.login();
    h.expect_ok(Method::CHANNEL_BIND, &bind(0x4000, peer));
    // The permission (300 s) is refreshed separately; ChannelData needs it too.
    h.advance(Duration::from_secs(290));
    h.login();
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer)],
    );
    h.expect_ok(Method::REFRESH, &[]);
    h.advance(Duration::from_secs(299));
    let r = h.s.handle_client_packet(h.now, h.ft, &cd);
    assert!(r.is_some(), "{:?}", h.s.stats());
    h.login();
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer)],
    );
    h.expect_ok(Method::REFRESH, &[]);
    // The binding made at t=299 s ends at t=899 s.
    h.advance(Duration::from_secs(10));
    assert!(h.s.handle_client_packet(h.now, h.ft, &cd).is_some());
    h.advance(Duration::from_secs(1));
    assert!(
        h.s.handle_client_packet(h.now, h.ft, &cd).is_none(),
        "channel expired"
    );
    // Within the 5-minute cooldown the number cannot go to another peer.
    h.login();
    h.expect_code(Method::CHANNEL_BIND, &bind(0x4000, other), 400);
    h.advance(Duration::from_secs(300));
    h.login();
    h.expect_ok(Method::CHANNEL_BIND, &bind(0x4000, other));
}

#[test]
fn channel_data_is_padded_on_streams() {
    let mut h = H::new();
    h.ft = ft("203.0.113.5:40000", Transport::Tcp);
    let relay = h.allocate()[0];
    let peer = public_peer();
    h.expect_ok(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4abc),
            Attribute::XorPeerAddress(peer),
        ],
    );
    let out = h.peer_data(relay, peer, b"abcde").unwrap();
    assert_eq!(out.len(), 12);
    assert_eq!(&out[..9], &[0x4a, 0xbc, 0, 5, b'a', b'b', b'c', b'd', b'e']);
    // Data indications are padded too (attribute padding).
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr("93.184.216.36:1"))],
    );
    let out = h.peer_data(relay, addr("93.184.216.36:1"), b"abc").unwrap();
    assert_eq!(out.len() % 4, 0);
    assert!(Message::parse(&out).is_ok());
}

#[test]
fn peer_policy_refuses_private_and_own_addresses() {
    let mut h = H::new();
    let relay = h.allocate()[0];
    for p in [
        "127.0.0.1:5000",
        "10.0.0.1:5000",
        "169.254.169.254:80",
        "0.0.0.0:5000",
        "192.168.1.1:5000",
        "[::1]:5000",
        "[::ffff:127.0.0.1]:5000",
        "[fe80::1]:5000",
        PEER,
    ] {
        let p = addr(p);
        if p.is_ipv4() {
            h.expect_code(
                Method::CREATE_PERMISSION,
                &[Attribute::XorPeerAddress(p)],
                403,
            );
            h.expect_code(
                Method::CHANNEL_BIND,
                &[
                    Attribute::ChannelNumber(0x4000),
                    Attribute::XorPeerAddress(p),
                ],
                403,
            );
        } else {
            // An IPv6 peer on an IPv4-only allocation: family mismatch first.
            h.expect_code(
                Method::CREATE_PERMISSION,
                &[Attribute::XorPeerAddress(p)],
                443,
            );
        }
    }
    // Another port on the relay's own address is refused...
    let own_other = SocketAddr::new(relay.ip(), relay.port() ^ 1);
    h.expect_code(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(own_other)],
        403,
    );
    assert!(h.s.stats().peer_refused >= 10);
    // ... and nothing is relayed to refused peers.
    assert!(h
        .s
        .handle_client_packet(h.now, h.ft, &send_indication(addr("10.0.0.1:5000"), b"x"))
        .is_none());
}

#[test]
fn a_live_allocation_on_this_relay_is_a_valid_peer() {
    let mut c = config();
    c.relay.ipv4 = Some("127.0.0.1".parse().unwrap());
    let mut h = H::with(c);
    let relay_a = h.allocate()[0];
    let ft_a = h.ft;
    // A second client, a second allocation on the same (loopback) relay IP.
    h.ft = ft("203.0.113.9:40000", Transport::Udp);
    h.nonce.clear();
    h.user = "bob".into();
    h.password = "bob-pw".into();
    let relay_b = h.allocate()[0];
    assert_eq!(relay_a.ip(), relay_b.ip());
    // B may reach A's relayed address, but no other port on that IP.
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(relay_a)],
    );
    let pkt = send_indication(relay_a, b"hi");
    let s = h.s.handle_client_packet(h.now, h.ft, &pkt).unwrap();
    assert_eq!((s.relay, s.peer), (relay_b, relay_a));
    // The data goes straight to A, seen as coming from B's relayed address.
    let Destination::Allocation { id, from } = s.to else {
        panic!("not routed inside the relay: {:?}", s.to);
    };
    assert_eq!(from, relay_b);
    let mut buf = [0u8; PEER_DATA_HEADROOM + 2 + PEER_DATA_TAILROOM];
    buf[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + 2].copy_from_slice(b"hi");
    // A has no permission for B yet: dropped.
    assert!(h
        .s
        .handle_allocation_data(h.now, id, from, &mut buf, 2)
        .is_none());
    let stray = SocketAddr::new(relay_a.ip(), 1);
    assert!(h
        .s
        .handle_client_packet(h.now, h.ft, &send_indication(stray, b"x"))
        .is_none());
    // Once A is gone, B's permission no longer reaches that address.
    h.ft = ft_a;
    h.user = "alice".into();
    h.password = "alice-pw".into();
    h.nonce.clear();
    h.login();
    h.expect_ok(Method::REFRESH, &[Attribute::Lifetime(0)]);
    h.ft = ft("203.0.113.9:40000", Transport::Udp);
    assert!(h
        .s
        .handle_client_packet(h.now, h.ft, &send_indication(relay_a, b"x"))
        .is_none());
}

#[test]
fn dangerous_loopback_switch_allows_loopback_peers() {
    let mut c = config();
    c.policy = crate::policy::PeerPolicy::default().dangerous_allow_loopback_peers(true);
    let mut h = H::with(c);
    h.allocate();
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr("127.0.0.1:9"))],
    );
    h.expect_code(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr("10.0.0.1:9"))],
        403,
    );
}

#[test]
fn quotas_are_486() {
    let mut c = config();
    c.limits.allocations_per_static_user = 2;
    let mut h = H::with(c);
    for i in 0..2 {
        h.ft = ft(&format!("203.0.113.5:{}", 40000 + i), Transport::Udp);
        h.nonce.clear();
        h.allocate();
    }
    h.ft = ft("203.0.113.5:40009", Transport::Udp);
    h.nonce.clear();
    h.login();
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 486);
    assert_eq!(h.s.stats().quota_refused, 1);
    // Another user is not affected; the total quota is.
    let mut c = config();
    c.limits.allocations_total = 1;
    let mut h = H::with(c);
    h.allocate();
    h.ft = ft("203.0.113.77:1", Transport::Udp);
    h.nonce.clear();
    h.user = "bob".into();
    h.password = "bob-pw".into();
    h.login();
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 486);
}

#[test]
fn per_user_quota_counts_rest_sessions_and_spares_static_users() {
    // Defaults: a static user shared by many callers is not capped per user
    // (only per IP and in total); a REST username (one browser session) is.
    let mut c = config();
    c.limits.allocations_per_ip = 1000;
    let rest_limit = c.limits.allocations_per_user;
    assert!(rest_limit >= 42, "an 8-person mesh member needs 7 x 6");
    assert_eq!(c.limits.allocations_per_static_user, 0);
    let mut h = H::with(c);
    for i in 0..(rest_limit + 5) {
        h.ft = ft(&format!("203.0.113.5:{}", 10000 + i), Transport::Udp);
        h.nonce.clear();
        h.allocate();
    }
    assert_eq!(h.s.stats().quota_refused, 0);
    h.user = rest_username(UNIX0 + 100, Some("member"));
    h.password = rest_password(b"rest-secret", &h.user);
    for i in 0..rest_limit {
        h.ft = ft(&format!("203.0.113.6:{}", 10000 + i), Transport::Udp);
        h.nonce.clear();
        h.allocate();
    }
    h.ft = ft("203.0.113.6:9999", Transport::Udp);
    h.nonce.clear();
    h.login();
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 486);
    assert_eq!(h.s.stats().quota_refused, 1);
}

#[test]
fn per_ip_quota() {
    let mut c = config();
    c.limits.allocations_per_ip = 1;
    let mut h = H::with(c);
    h.allocate();
    h.ft = ft("203.0.113.5:40001", Transport::Udp);
    h.user = "bob".into();
    h.password = "bob-pw".into();
    h.nonce.clear();
    h.login();
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 486);
}

#[test]
fn even_port_and_reservation_token() {
    let mut h = H::new();
    let r = h.allocate_with(&[Attribute::RequestedTransport(17), Attribute::EvenPort(true)]);
    let m = Message::parse(&r).unwrap();
    let port = relayed(&m)[0].port();
    assert_eq!(port % 2, 0);
    let token = match m.get(attr::RESERVATION_TOKEN) {
        Some(Ok(Attribute::ReservationToken(t))) => t,
        other => panic!("{other:?}"),
    };
    // A second client uses the token and gets port + 1.
    h.ft = ft("203.0.113.5:40001", Transport::Udp);
    h.nonce.clear();
    let r = h.allocate_with(&[
        Attribute::RequestedTransport(17),
        Attribute::ReservationToken(token),
    ]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(relayed(&m)[0].port(), port + 1);
    // A token works once; an unknown one is 508.
    h.ft = ft("203.0.113.5:40002", Transport::Udp);
    h.nonce.clear();
    h.login();
    h.expect_code(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        508,
    );
}

#[test]
fn reservation_expires_after_30s() {
    let mut h = H::new();
    let r = h.allocate_with(&[Attribute::RequestedTransport(17), Attribute::EvenPort(true)]);
    let m = Message::parse(&r).unwrap();
    let Some(Ok(Attribute::ReservationToken(token))) = m.get(attr::RESERVATION_TOKEN) else {
        panic!()
    };
    h.advance(Duration::from_secs(31));
    h.ft = ft("203.0.113.5:40001", Transport::Udp);
    h.nonce.clear();
    h.login();
    h.expect_code(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        508,
    );
}

#[test]
fn dual_stack_and_address_families() {
    let mut h = H::new();
    let r = h.allocate_with(&[
        Attribute::RequestedTransport(17),
        Attribute::AdditionalAddressFamily(AddressFamily::V6),
    ]);
    let rel = relayed(&Message::parse(&r).unwrap());
    assert_eq!(rel.len(), 2);
    assert!(rel[0].is_ipv4() && rel[1].is_ipv6());
    // IPv6 only.
    let mut h = H::new();
    let r = h.allocate_with(&[
        Attribute::RequestedTransport(17),
        Attribute::RequestedAddressFamily(AddressFamily::V6),
    ]);
    let rel = relayed(&Message::parse(&r).unwrap());
    assert_eq!(rel.len(), 1);
    assert!(rel[0].is_ipv6());
    // An IPv4 peer on an IPv6 allocation: 443.
    h.expect_code(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(public_peer())],
        443,
    );
    h.expect_code(
        Method::REFRESH,
        &[Attribute::RequestedAddressFamily(AddressFamily::V4)],
        443,
    );
    // No IPv6 relay address configured.
    let mut c = config();
    c.relay.ipv6 = None;
    let mut h = H::with(c.clone());
    h.login();
    h.expect_code(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::RequestedAddressFamily(AddressFamily::V6),
        ],
        440,
    );
    let mut h = H::with(c);
    let r = h.allocate_with(&[
        Attribute::RequestedTransport(17),
        Attribute::AdditionalAddressFamily(AddressFamily::V6),
    ]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(relayed(&m).len(), 1);
    assert!(matches!(
        m.get(attr::ADDRESS_ERROR_CODE),
        Some(Ok(Attribute::AddressErrorCode(e))) if e.code == 440 && e.family == AddressFamily::V6
    ));
}

#[test]
fn external_address_is_advertised_but_local_is_bound() {
    let mut c = config();
    c.relay.external_ipv4 = Some("198.51.100.77".parse().unwrap());
    let mut h = H::with(c);
    h.login();
    let txid = h.txid();
    let req = h.build(
        Method::ALLOCATE,
        txid,
        &[Attribute::RequestedTransport(17)],
        true,
    );
    h.feed(&req);
    let mut bound = None;
    while let Some(o) = h.s.poll_output() {
        if let Output::BindRelay { token, addrs, .. } = o {
            bound = Some(addrs[0]);
            h.s.relay_bound(h.now, token, Ok(()));
        }
    }
    let bound = bound.unwrap();
    assert_eq!(bound.ip(), relay_v4());
    let r = h.replies();
    let _ = r;
    assert!(h.s.is_relay_address(&SocketAddr::new(
        "198.51.100.77".parse().unwrap(),
        bound.port()
    )));
}

#[test]
fn bind_failures_retry_then_508() {
    let mut h = H::new();
    h.login();
    let txid = h.txid();
    let req = h.build(
        Method::ALLOCATE,
        txid,
        &[Attribute::RequestedTransport(17)],
        true,
    );
    h.feed(&req);
    let mut binds = 0;
    let mut reply = None;
    for _ in 0..10 {
        match h.s.poll_output() {
            Some(Output::BindRelay { token, addrs, .. }) => {
                binds += 1;
                h.s.relay_bound(h.now, token, Err(addrs[0]));
            }
            Some(Output::Transmit { payload, .. }) => reply = Some(payload),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(binds, 3);
    let r = reply.unwrap();
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(508));
    assert_eq!(h.s.allocation_count(), 0);
    // The quota taken for the attempt was given back.
    assert_eq!(h.s.admission.admitted(), 0);
    h.s.check_invariants();
}

#[test]
fn port_exhaustion_is_508() {
    let mut c = config();
    c.ports = 50000..=50000;
    c.limits.allocations_per_ip = 10;
    let mut h = H::with(c);
    h.allocate();
    h.ft = ft("203.0.113.5:40001", Transport::Udp);
    h.nonce.clear();
    h.login();
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 508);
    assert_eq!(h.s.stats().capacity_refused, 1);
}

#[test]
fn unauthenticated_answers_are_rate_limited_on_udp_only() {
    let mut c = config();
    c.limits.unauthenticated_rate = 10;
    c.limits.unauthenticated_burst = 20;
    let mut h = H::with(c);
    let mut answered = 0;
    for i in 0..200u32 {
        let txid = TransactionId([(i % 251) as u8; 12]);
        let req = h.build(Method::BINDING, txid, &[], false);
        h.feed(&req);
        answered += h.replies().len();
    }
    assert_eq!(answered, 20);
    assert_eq!(h.s.stats().rate_limited, 180);
    // The bucket refills.
    h.advance(Duration::from_secs(1));
    let req = h.build(Method::BINDING, TransactionId([1; 12]), &[], false);
    h.feed(&req);
    assert_eq!(h.replies().len(), 1);
    // 401 challenges count against the same bucket.
    for _ in 0..50 {
        let req = h.build(
            Method::ALLOCATE,
            TransactionId([2; 12]),
            &[Attribute::RequestedTransport(17)],
            false,
        );
        h.feed(&req);
    }
    assert!(h.replies().len() <= 10);
    // Streams are not limited.
    h.ft = ft("203.0.113.5:40001", Transport::Tls);
    for _ in 0..100 {
        let req = h.build(Method::BINDING, TransactionId([3; 12]), &[], false);
        h.feed(&req);
    }
    assert_eq!(h.replies().len(), 100);
}

#[test]
fn client_disconnect_ends_stream_allocations() {
    let mut h = H::new();
    h.ft = ft("203.0.113.5:40000", Transport::Tls);
    h.allocate();
    assert_eq!(h.s.stats().allocations_current[2], 1);
    h.s.client_disconnected(h.now, h.ft);
    assert_eq!(h.s.allocation_count(), 0);
    assert!(h.outputs().iter().any(|o| matches!(
        o,
        Output::AllocationEnded {
            reason: EndReason::Disconnected,
            ..
        }
    )));
}

#[test]
fn rfc6062_connect_and_connection_bind() {
    let mut h = H::new();
    h.ft = ft("203.0.113.5:40000", Transport::Tcp);
    let r = h.allocate_with(&[Attribute::RequestedTransport(6)]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    let relay = relayed(&m)[0];
    let peer = public_peer();
    // ChannelBind and Send make no sense on a TCP allocation.
    h.expect_code(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(peer),
        ],
        400,
    );
    // Connect: the driver is asked to connect; the answer waits for it.
    let txid = h.txid();
    let req = h.build(
        Method::CONNECT,
        txid,
        &[Attribute::XorPeerAddress(peer)],
        true,
    );
    h.feed(&req);
    let out = h.outputs();
    let id = match out.as_slice() {
        [Output::ConnectPeer {
            connection_id,
            relay: r,
            peer: p,
        }] => {
            assert_eq!((*r, *p), (relay, peer));
            *connection_id
        }
        other => panic!("{other:?}"),
    };
    // A second Connect to the same peer: 446.
    h.expect_code(Method::CONNECT, &[Attribute::XorPeerAddress(peer)], 446);
    h.s.peer_connect_result(h.now, id, true);
    let r = h.replies();
    let m = Message::parse(&r[0]).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert!(matches!(m.get(attr::CONNECTION_ID), Some(Ok(Attribute::ConnectionId(x))) if x == id));
    // ConnectionBind on a new data connection.
    let control = h.ft;
    h.ft = ft("203.0.113.5:40001", Transport::Tcp);
    h.expect_code(
        Method::CONNECTION_BIND,
        &[Attribute::ConnectionId(id ^ 1)],
        400,
    );
    let txid = h.txid();
    let req = h.build(
        Method::CONNECTION_BIND,
        txid,
        &[Attribute::ConnectionId(id)],
        true,
    );
    h.feed(&req);
    let out = h.outputs();
    assert!(
        matches!(&out[0], Output::Transmit { five_tuple, payload } if *five_tuple == h.ft && Message::parse(payload).unwrap().class() == Class::Success)
    );
    assert_eq!(
        out[1],
        Output::BindConnection {
            connection_id: id,
            data: h.ft
        }
    );
    // Binding twice is refused.
    h.expect_code(Method::CONNECTION_BIND, &[Attribute::ConnectionId(id)], 400);
    // Closing the data connection closes the peer connection.
    h.s.client_disconnected(h.now, h.ft);
    assert!(h
        .outputs()
        .contains(&Output::ClosePeerConnection { connection_id: id }));
    // The allocation is still there; its control connection closing ends it.
    h.s.client_disconnected(h.now, control);
    assert_eq!(h.s.allocation_count(), 0);
}

#[test]
fn rfc6062_failed_connect_is_447_and_policy_applies() {
    let mut h = H::new();
    h.ft = ft("203.0.113.5:40000", Transport::Tls);
    h.allocate_with(&[Attribute::RequestedTransport(6)]);
    h.expect_code(
        Method::CONNECT,
        &[Attribute::XorPeerAddress(addr("127.0.0.1:22"))],
        403,
    );
    h.expect_code(
        Method::CONNECT,
        &[Attribute::XorPeerAddress(addr("10.1.2.3:22"))],
        403,
    );
    let txid = h.txid();
    let req = h.build(
        Method::CONNECT,
        txid,
        &[Attribute::XorPeerAddress(public_peer())],
        true,
    );
    h.feed(&req);
    let id = match h.outputs().as_slice() {
        [Output::ConnectPeer { connection_id, .. }] => *connection_id,
        other => panic!("{other:?}"),
    };
    h.s.peer_connect_result(h.now, id, false);
    let r = h.replies();
    assert_eq!(code(&Message::parse(&r[0]).unwrap()), Some(447));
}

#[test]
fn rfc6062_incoming_connection_attempt_and_timeout() {
    let mut h = H::new();
    h.ft = ft("203.0.113.5:40000", Transport::Tcp);
    let r = h.allocate_with(&[Attribute::RequestedTransport(6)]);
    let relay = relayed(&Message::parse(&r).unwrap())[0];
    let peer = public_peer();
    // Without a permission the connection is refused.
    assert_eq!(h.s.peer_connection_incoming(h.now, relay, peer), None);
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer)],
    );
    let id = h.s.peer_connection_incoming(h.now, relay, peer).unwrap();
    let r = h.replies();
    let m = Message::parse(&r[0]).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::CONNECTION_ATTEMPT, Class::Indication)
    );
    assert!(matches!(m.get(attr::CONNECTION_ID), Some(Ok(Attribute::ConnectionId(x))) if x == id));
    assert!(
        matches!(m.get(attr::XOR_PEER_ADDRESS), Some(Ok(Attribute::XorPeerAddress(p))) if p == peer)
    );
    // No ConnectionBind within 30 s: closed.
    h.advance(Duration::from_secs(29));
    assert!(h.outputs().is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.outputs(),
        vec![Output::ClosePeerConnection { connection_id: id }]
    );
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut h = H::new();
    h.allocate();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = h.build(
        Method::ALLOCATE,
        TransactionId([5; 12]),
        &[Attribute::RequestedTransport(17)],
        true,
    );
    for i in 0..20_000 {
        let mut pkt = if i % 2 == 0 {
            let len = (next() % 200) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            let mut v = valid.clone();
            let at = (next() as usize) % v.len();
            v[at] ^= (next() as u8) | 1;
            v.truncate(((next() as usize) % (v.len() + 1)).max(at));
            v
        };
        if i % 3 == 0 && !pkt.is_empty() {
            pkt[0] = 0x40 | (pkt[0] & 0x0f);
        }
        let _ = h.s.handle_client_packet(h.now, h.ft, &pkt);
        let mut buf = vec![0u8; PEER_DATA_HEADROOM + pkt.len() + PEER_DATA_TAILROOM];
        buf[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + pkt.len()].copy_from_slice(&pkt);
        let _ = h.s.handle_peer_data(
            h.now,
            addr("192.0.2.10:50000"),
            public_peer(),
            &mut buf,
            pkt.len(),
        );
        while h.s.poll_output().is_some() {}
    }
    assert!(h.s.stats().malformed > 1000);
    assert_eq!(h.s.allocation_count(), 1);
    // A too-small buffer is refused, not a panic.
    let mut small = [0u8; 10];
    assert!(h
        .s
        .handle_peer_data(
            h.now,
            addr("192.0.2.10:50000"),
            public_peer(),
            &mut small,
            8
        )
        .is_none());
}

#[test]
fn poll_timeout_tracks_the_earliest_deadline() {
    let mut h = H::new();
    h.allocate();
    let t = h.s.poll_timeout().unwrap();
    assert!(t <= h.now + Duration::from_secs(600));
    // Run the timer loop to the allocation's expiry, bounded.
    for _ in 0..200 {
        let Some(t) = h.s.poll_timeout() else { break };
        if h.s.allocation_count() == 0 {
            break;
        }
        h.now = t.max(h.now);
        h.s.handle_timeout(h.now);
    }
    assert_eq!(h.s.allocation_count(), 0);
}

#[test]
fn expired_rest_credential_keeps_its_allocation_alive() {
    let mut h = H::new();
    h.user = rest_username(UNIX0 + 60, Some("call"));
    h.password = rest_password(b"rest-secret", &h.user);
    h.allocate();
    h.advance(Duration::from_secs(300));
    h.login();
    // Past the expiry: the allocation made in time can still be refreshed
    // and used...
    h.expect_ok(Method::REFRESH, &[]);
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(public_peer())],
    );
    // ... but no new allocation is made with it.
    h.ft = ft("203.0.113.5:40001", Transport::Udp);
    h.login();
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 401);
}

#[test]
fn reconfigure_rotates_the_rest_secret_live() {
    let mut h = H::with(config());
    h.user = rest_username(UNIX0 + 1000, Some("before"));
    h.password = rest_password(b"old-secret", &h.user);
    h.allocate();
    assert_eq!(h.s.allocation_count(), 1);

    let mut c = config();
    c.credentials =
        Credentials::new(REALM, [("alice", "alice-pw")], [b"new-secret".to_vec()]).unwrap();
    c.limits.allocations_per_user = 3;
    assert!(h.s.reconfigure(c).is_empty());
    assert_eq!(h.s.config().limits.allocations_per_user, 3);
    // The live allocation is still there; its next Refresh is judged with
    // the new credentials, which no longer accept the rotated-out secret.
    assert_eq!(h.s.allocation_count(), 1);
    h.expect_code(Method::REFRESH, &[], 401);

    // A new session signed with the new secret gets in; one signed with
    // the old secret does not.
    h.ft = ft("203.0.113.9:4000", Transport::Udp);
    h.nonce.clear();
    h.user = rest_username(UNIX0 + 1000, Some("after"));
    h.password = rest_password(b"new-secret", &h.user);
    h.allocate();
    h.ft = ft("203.0.113.9:4001", Transport::Udp);
    h.nonce.clear();
    h.user = rest_username(UNIX0 + 1000, Some("late"));
    h.password = rest_password(b"old-secret", &h.user);
    h.login();
    h.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 401);
    assert_eq!(h.s.allocation_count(), 2);

    // What cannot change live is named, and kept.
    let mut c = config();
    c.ports = 40000..=40999;
    c.tcp_relay = false;
    assert_eq!(h.s.reconfigure(c), ["ports", "tcp_relay"]);
    assert_eq!(h.s.config().ports, 50000..=50999);
}

fn bandwidth_config(per_allocation: u64, total: u64) -> ServerConfig {
    let mut c = config();
    c.limits.bytes_per_sec_per_allocation = per_allocation;
    c.limits.bytes_per_sec_total = total;
    c
}

/// Gives `h`'s allocation a permission for `peer` and returns its relayed address.
fn allocate_for(h: &mut H, peer: SocketAddr) -> SocketAddr {
    let relay = h.allocate()[0];
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer)],
    );
    relay
}

/// Offers one `len`-byte packet each way every `every` on each
/// (client, relay) flow for `dur` of simulated time; returns the payload
/// bytes that passed: [to peer, to client].
fn offer_both_ways(
    h: &mut H,
    flows: &[(FiveTuple, SocketAddr)],
    peer: SocketAddr,
    len: usize,
    every: Duration,
    dur: Duration,
) -> [u64; 2] {
    let payload = vec![0x5a; len];
    let pkt = send_indication(peer, &payload);
    let mut passed = [0u64; 2];
    let steps = (dur.as_nanos() / every.as_nanos()) as usize;
    for _ in 0..steps {
        for &(ft, relay) in flows {
            if h.s.handle_client_packet(h.now, ft, &pkt).is_some() {
                passed[0] += len as u64;
            }
            h.ft = ft;
            if h.peer_data(relay, peer, &payload).is_some() {
                passed[1] += len as u64;
            }
        }
        h.now += every;
    }
    passed
}

#[test]
fn bandwidth_per_allocation_holds_both_ways_and_reloads() {
    // 20 kB/s per allocation; 1200-byte packets every 5 ms (240 kB/s).
    let mut h = H::with(bandwidth_config(20_000, 0));
    let peer = public_peer();
    let relay = allocate_for(&mut h, peer);
    let flows = [(h.ft, relay)];
    let five_ms = Duration::from_millis(5);
    let passed = offer_both_ways(&mut h, &flows, peer, 1200, five_ms, Duration::from_secs(10));
    for p in passed {
        // At most 10 s of rate, the 100 ms burst and one packet of debt.
        assert!(p <= 200_000 + 2_000 + 1_200, "{passed:?}");
        assert!(p >= 190_000, "{passed:?}: the cap is too strict");
    }
    let st = h.s.stats();
    let offered = 2000 * 1200;
    for (dir, p) in passed.iter().enumerate() {
        assert_eq!(st.bandwidth_dropped_bytes[dir], offered - p);
        assert_eq!(st.bandwidth_dropped_packets[dir], [(offered - p) / 1200, 0]);
    }
    assert_eq!(st.bytes_to_peer, passed[0]);
    assert_eq!(st.bytes_to_client, passed[1]);

    // Reloaded without a limit: the same allocation loses nothing more.
    assert!(h.s.reconfigure(bandwidth_config(0, 0)).is_empty());
    let before = h.s.stats().bandwidth_dropped_bytes;
    let passed = offer_both_ways(&mut h, &flows, peer, 1200, five_ms, Duration::from_secs(1));
    assert_eq!(passed, [240_000, 240_000]);
    assert_eq!(h.s.stats().bandwidth_dropped_bytes, before);

    // And reloaded with a limit again, it applies at once.
    assert!(h.s.reconfigure(bandwidth_config(10_000, 0)).is_empty());
    let passed = offer_both_ways(&mut h, &flows, peer, 1200, five_ms, Duration::from_secs(5));
    assert!(
        passed.iter().all(|&p| p <= 50_000 + 1_000 + 1_200),
        "{passed:?}"
    );
}

#[test]
fn bandwidth_under_the_cap_loses_nothing() {
    let mut h = H::with(bandwidth_config(20_000, 40_000));
    let peer = public_peer();
    let relay = allocate_for(&mut h, peer);
    let flows = [(h.ft, relay)];
    // 1200 bytes every 100 ms: 12 kB/s each way.
    let every = Duration::from_millis(100);
    let passed = offer_both_ways(&mut h, &flows, peer, 1200, every, Duration::from_secs(30));
    assert_eq!(passed, [360_000, 360_000]);
    assert_eq!(h.s.stats().bandwidth_dropped_bytes, [0, 0]);
}

#[test]
fn bandwidth_total_is_shared_by_allocations() {
    // No per-allocation limit, 20 kB/s in total, two allocations.
    let mut h = H::with(bandwidth_config(0, 20_000));
    let peer = public_peer();
    let a = (h.ft, allocate_for(&mut h, peer));
    h.ft = ft("203.0.113.6:40000", Transport::Udp);
    h.nonce.clear();
    let b = (h.ft, allocate_for(&mut h, peer));
    let five_ms = Duration::from_millis(5);
    let passed = offer_both_ways(
        &mut h,
        &[a, b],
        peer,
        1200,
        five_ms,
        Duration::from_secs(10),
    );
    for p in passed {
        assert!(p <= 200_000 + 2_000 + 1_200, "{passed:?}");
        assert!(p >= 190_000, "{passed:?}");
    }
    let st = h.s.stats();
    for (dir, p) in passed.iter().enumerate() {
        let dropped = (2 * 2000 * 1200 - p) / 1200;
        assert_eq!(st.bandwidth_dropped_packets[dir], [0, dropped]);
    }
}

#[test]
fn bandwidth_paces_rfc6062_streams() {
    let mut h = H::with(bandwidth_config(20_000, 0));
    h.ft = ft("203.0.113.5:40000", Transport::Tcp);
    let r = h.allocate_with(&[Attribute::RequestedTransport(6)]);
    let relay = relayed(&Message::parse(&r).unwrap())[0];
    let peer = public_peer();
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer)],
    );
    let id = h.s.peer_connection_incoming(h.now, relay, peer).unwrap();
    // A driver moving as much as it is allowed, 4 KB reads at most, for
    // 10 s of simulated time, both ways: 20 kB/s each way.
    let end = h.now + Duration::from_secs(10);
    let mut moved = [0u64; 2];
    let mut waits = 0;
    for _ in 0..100_000 {
        if h.now >= end {
            break;
        }
        let mut next = end;
        for (dir, to_peer) in [(0, true), (1, false)] {
            match h.s.stream_allowance(h.now, id, to_peer) {
                Ok(n) => {
                    let n = n.min(4096);
                    h.s.stream_moved(h.now, id, to_peer, n);
                    moved[dir] += n as u64;
                    next = h.now;
                }
                Err(w) => {
                    waits += 1;
                    next = next.min(h.now + w);
                }
            }
        }
        h.now = next.max(h.now + Duration::from_micros(1));
    }
    for m in moved {
        assert!((198_000..=202_000 + 1_200).contains(&m), "{moved:?}");
    }
    // It waited for chunks, not bytes: about one wake-up per 1200 bytes.
    assert!(waits < 2 * 400, "{waits} waits");
    assert_eq!(h.s.stats().bytes_to_peer, moved[0]);
    assert_eq!(h.s.stats().bandwidth_dropped_bytes, [0, 0]);
    // Without limits (reloaded), a stream is never held back.
    h.s.reconfigure(bandwidth_config(0, 0));
    assert_eq!(h.s.stream_allowance(h.now, id, true), Ok(usize::MAX));
    // An unknown connection is not held back either.
    h.s.reconfigure(bandwidth_config(20_000, 0));
    assert_eq!(h.s.stream_allowance(h.now, id ^ 1, true), Ok(usize::MAX));
}

#[test]
fn random_lifecycles_keep_the_tables_consistent() {
    // Allocations made, deleted, disconnected, expired and refused by the
    // quotas in a seeded random order: after every step the allocation
    // table, the quota shares and the gauges agree.
    use rand::{Rng, SeedableRng};
    let mut c = config();
    c.limits.allocations_per_ip = 3;
    c.limits.allocations_total = 6;
    let mut h = H::with(c);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let host = rng.gen_range(1..4u8);
        let port = rng.gen_range(1000..1006u16);
        let transport = if rng.gen_bool(0.5) {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        h.ft = ft(&format!("203.0.113.{host}:{port}"), transport);
        match rng.gen_range(0..4) {
            0 | 1 if !h.s.has_allocation(&h.ft) => {
                h.nonce.clear();
                let r = h.allocate_with(&[Attribute::RequestedTransport(17)]);
                let m = Message::parse(&r).unwrap();
                assert!(m.class() == Class::Success || code(&m) == Some(486));
            }
            2 if h.s.has_allocation(&h.ft) => {
                h.nonce.clear();
                h.login();
                h.expect_ok(Method::REFRESH, &[Attribute::Lifetime(0)]);
            }
            3 => {
                h.s.client_disconnected(h.now, h.ft);
                h.outputs();
            }
            _ => h.advance(Duration::from_secs(rng.gen_range(1..400))),
        }
        h.s.check_invariants();
    }
    assert!(h.s.stats().quota_refused > 0, "the quotas were reached");
    assert!(h.s.stats().allocations_created.iter().sum::<u64>() > 10);
    h.advance(MAX_LIFETIME * 2);
    h.s.check_invariants();
    assert_eq!(h.s.allocation_count(), 0);
}

#[test]
fn servers_sharing_a_quota_book_hold_the_total_together() {
    // Two servers (as two shards would be) with one book: the total quota
    // of 2 holds for both together, and a share freed on one serves the other.
    let mut c = config();
    c.limits.allocations_total = 2;
    let book = QuotaBook::new(c.ports.clone());
    let mut a = H::with(c.clone());
    a.s = Server::with_quota_book(c.clone(), a.now, UNIX0, book.clone());
    let mut b = H::with(c.clone());
    b.s = Server::with_quota_book(c, b.now, UNIX0, book.clone());
    b.ft = ft("203.0.113.6:1", Transport::Udp);
    a.allocate();
    b.allocate();
    assert_eq!(book.total(), 2);
    let first = a.ft;
    a.ft = ft("203.0.113.7:1", Transport::Udp);
    a.login();
    a.expect_code(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], 486);
    b.expect_ok(Method::REFRESH, &[Attribute::Lifetime(0)]);
    assert_eq!(book.total(), 1);
    a.allocate();
    assert_eq!(book.total(), 2);
    a.s.check_invariants();
    b.s.check_invariants();
    assert!(a.s.has_allocation(&first));
}

fn alternate(transport: Transport, s: &str) -> Alternate {
    Alternate {
        transport,
        addr: addr(s),
    }
}

#[test]
fn draining_sends_new_allocations_to_the_alternate_and_keeps_live_ones() {
    let mut c = config();
    c.redirect = Redirect::new(vec![alternate(Transport::Udp, "192.0.2.77:3478")], 0);
    let drain = c.redirect.clone();
    let mut h = H::with(c);
    h.allocate();
    drain.set_draining(true);

    // A new client: 401 first (300 needs an authenticated request), then 300.
    h.ft = ft("203.0.113.6:40000", Transport::Udp);
    h.nonce.clear();
    let r = h.allocate_with(&[Attribute::RequestedTransport(17)]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(300));
    assert!(matches!(
        m.get(attr::ALTERNATE_SERVER),
        Some(Ok(Attribute::AlternateServer(a))) if a == addr("192.0.2.77:3478")
    ));
    m.verify_integrity(&h.key())
        .expect("300 is protected with MESSAGE-INTEGRITY (RFC 8489 §14.8)");
    assert_eq!(h.s.stats().redirected, 1);
    assert_eq!(h.s.allocation_count(), 1);

    // The live allocation keeps working.
    h.ft = ft("203.0.113.5:40000", Transport::Udp);
    h.login();
    h.expect_ok(Method::REFRESH, &[]);
    h.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(public_peer())],
    );

    // Without an alternate for TCP, a draining relay refuses with 508.
    h.ft = ft("203.0.113.6:40001", Transport::Tcp);
    h.nonce.clear();
    let r = h.allocate_with(&[Attribute::RequestedTransport(17)]);
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(508));

    // Resumed: allocations are admitted again.
    drain.set_draining(false);
    h.ft = ft("203.0.113.6:40000", Transport::Udp);
    h.nonce.clear();
    h.allocate();
    assert_eq!(h.s.allocation_count(), 2);
}

#[test]
fn unauthenticated_allocate_is_challenged_not_redirected() {
    let mut c = config();
    c.redirect = Redirect::new(vec![alternate(Transport::Udp, "192.0.2.77:3478")], 0);
    c.redirect.set_draining(true);
    let mut h = H::with(c);
    let r = h.request(Method::ALLOCATE, &[Attribute::RequestedTransport(17)]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(401));
    assert!(m.get(attr::ALTERNATE_SERVER).is_none());
    assert_eq!(h.s.stats().redirected, 0);
}

#[test]
fn load_threshold_redirects_beyond_it() {
    let mut c = config();
    c.redirect = Redirect::new(vec![alternate(Transport::Udp, "192.0.2.77:3478")], 2);
    let mut h = H::with(c);
    h.allocate();
    h.ft = ft("203.0.113.6:40000", Transport::Udp);
    h.nonce.clear();
    h.allocate();
    h.ft = ft("203.0.113.7:40000", Transport::Udp);
    h.nonce.clear();
    let r = h.allocate_with(&[Attribute::RequestedTransport(17)]);
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(300));
    assert_eq!(h.s.allocation_count(), 2);
}

/// Two servers as shards 0 and 1 of one relay (one quota book), clients
/// `alice` on the first and `bob` on the second.
fn two_shards(c: ServerConfig) -> (H, H) {
    let book = QuotaBook::new(c.ports.clone());
    let mut a = H::with(c.clone());
    a.s = Server::with_quota_book(c.clone(), a.now, UNIX0, book.clone());
    a.s.set_shard(ShardId::new(0, 2));
    let mut b = H::with(c.clone());
    b.s = Server::with_quota_book(c, b.now, UNIX0, book);
    b.s.set_shard(ShardId::new(1, 2));
    b.ft = ft("203.0.113.9:40000", Transport::Udp);
    b.user = "bob".into();
    b.password = "bob-pw".into();
    (a, b)
}

#[test]
fn shards_take_ports_from_their_slice_and_reach_each_other_through_the_network() {
    let mut c = config();
    c.relay.ipv4 = Some("127.0.0.1".parse().unwrap());
    let (mut a, mut b) = two_shards(c);
    let ra = a.allocate()[0];
    let rb = b.allocate()[0];
    assert!((50000..=50499).contains(&ra.port()), "{ra}");
    assert!((50500..=50999).contains(&rb.port()), "{rb}");
    // A relayed address of the other shard is a valid peer (not a live
    // allocation here: the other shard judges each packet).
    a.expect_ok(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(rb)]);
    b.expect_ok(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(ra)]);
    let pkt = send_indication(rb, b"hi");
    let s = a.s.handle_client_packet(a.now, a.ft, &pkt).unwrap();
    assert_eq!((s.relay, s.peer, s.to), (ra, rb, Destination::Network));
    // What arrives on B's relay socket from A's.
    let data = b.peer_data(rb, ra, b"hi").expect("delivered");
    let m = Message::parse(&data).unwrap();
    assert!(
        matches!(m.get(attr::XOR_PEER_ADDRESS), Some(Ok(Attribute::XorPeerAddress(p))) if p == ra)
    );
    // Ports of its own slice that no allocation holds stay refused, so do
    // ports outside the relay range (negative controls).
    for stray in [
        SocketAddr::new(ra.ip(), if ra.port() == 50000 { 50001 } else { 50000 }),
        SocketAddr::new(ra.ip(), 3478),
    ] {
        assert_ne!(stray, ra);
        let before = a.s.stats().peer_refused;
        let pkt = send_indication(stray, b"x");
        let r = a.s.handle_client_packet(a.now, a.ft, &pkt);
        assert!(r.is_none(), "{stray}");
        assert_eq!(a.s.stats().peer_refused, before + 1);
    }
    a.expect_code(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(SocketAddr::new(ra.ip(), 3478)),
        ],
        403,
    );
    a.s.check_invariants();
    b.s.check_invariants();
}

#[test]
fn shards_behind_nat_send_to_local_addresses_and_show_advertised_ones() {
    let mut c = config();
    c.relay.ipv4 = Some("10.0.0.5".parse().unwrap());
    c.relay.external_ipv4 = Some("198.51.100.5".parse().unwrap());
    let (mut a, mut b) = two_shards(c);
    let ra = a.allocate()[0];
    let rb = b.allocate()[0];
    assert_eq!(ra.ip(), "198.51.100.5".parse::<IpAddr>().unwrap());
    a.expect_ok(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(rb)]);
    b.expect_ok(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(ra)]);
    let local = |x: SocketAddr| SocketAddr::new("10.0.0.5".parse().unwrap(), x.port());
    let pkt = send_indication(rb, b"hi");
    let s = a.s.handle_client_packet(a.now, a.ft, &pkt).unwrap();
    assert_eq!((s.relay, s.peer), (local(ra), local(rb)));
    let data = b.peer_data(local(rb), local(ra), b"hi").expect("delivered");
    let m = Message::parse(&data).unwrap();
    assert!(
        matches!(m.get(attr::XOR_PEER_ADDRESS), Some(Ok(Attribute::XorPeerAddress(p))) if p == ra)
    );
}

#[test]
fn connection_ids_and_reservation_tokens_name_their_shard() {
    let (a, mut b) = two_shards(config());
    for _ in 0..50 {
        let t = b.s.new_reservation_token();
        assert_eq!(ShardId::of_id(2, u64::from_be_bytes(t)), 1);
        let id = b.s.new_connection_id();
        assert_eq!(id % 2, 1);
    }
    // A ConnectionBind for shard 1's connection, seen by shard 0 and 1.
    let bind = a.build(
        Method::CONNECTION_BIND,
        TransactionId([7; 12]),
        &[Attribute::ConnectionId(12345)],
        false,
    );
    assert_eq!(a.s.connection_bind_shard(&bind), Some(1));
    assert_eq!(b.s.connection_bind_shard(&bind), None);
    let other = a.build(
        Method::CONNECTION_BIND,
        TransactionId([7; 12]),
        &[Attribute::ConnectionId(12344)],
        false,
    );
    assert_eq!(a.s.connection_bind_shard(&other), None);
    assert_eq!(
        a.s.connection_bind_shard(&send_indication(public_peer(), b"x")),
        None
    );
    assert_eq!(a.s.connection_bind_shard(&bind[..10]), None);
}

#[test]
fn a_reservation_token_is_redeemed_on_another_shard_and_its_port_returns() {
    let mut c = config();
    c.relay.ipv4 = Some("127.0.0.1".parse().unwrap());
    let (mut a, mut b) = two_shards(c);
    let r = a.allocate_with(&[Attribute::RequestedTransport(17), Attribute::EvenPort(true)]);
    let m = Message::parse(&r).unwrap();
    let ra = relayed(&m)[0];
    let Some(Ok(Attribute::ReservationToken(token))) = m.get(attr::RESERVATION_TOKEN) else {
        panic!("no token");
    };
    assert_eq!(a.s.admission.ports_in_use(), 2);
    // The client's RTCP flow hashed to the other shard: it gets port + 1.
    let r = b.allocate_with(&[
        Attribute::RequestedTransport(17),
        Attribute::ReservationToken(token),
    ]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success, "{:?}", code(&m));
    let rb = relayed(&m)[0];
    assert_eq!(rb.port(), ra.port() + 1);
    // Shard A sees a port of its own slice held by B: through the network.
    a.expect_ok(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(rb)]);
    let pkt = send_indication(rb, b"rtcp");
    let s = a.s.handle_client_packet(a.now, a.ft, &pkt).unwrap();
    assert_eq!((s.peer, s.to), (rb, Destination::Network));
    // Once B's allocation ends the port is free again, for A too: A no
    // longer sends there.
    b.expect_ok(Method::REFRESH, &[Attribute::Lifetime(0)]);
    assert_eq!(a.s.admission.ports_in_use(), 1);
    assert!(a.s.handle_client_packet(a.now, a.ft, &pkt).is_none());
    // The token was used: 508 on either shard.
    a.ft = ft("203.0.113.5:40009", Transport::Udp);
    a.login();
    a.expect_code(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        508,
    );
    a.s.check_invariants();
    b.s.check_invariants();
}

#[test]
fn an_unredeemed_reservation_expires_on_its_shard_for_all() {
    let (mut a, mut b) = two_shards(config());
    let r = a.allocate_with(&[Attribute::RequestedTransport(17), Attribute::EvenPort(true)]);
    let m = Message::parse(&r).unwrap();
    let Some(Ok(Attribute::ReservationToken(token))) = m.get(attr::RESERVATION_TOKEN) else {
        panic!("no token");
    };
    a.advance(RESERVATION_LIFETIME + Duration::from_secs(1));
    assert_eq!(a.s.admission.ports_in_use(), 1, "the reserved port is back");
    b.advance(RESERVATION_LIFETIME + Duration::from_secs(1));
    b.login();
    b.expect_code(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        508,
    );
}

/// Every allocation's channels and permissions survive 30 simulated
/// minutes on its shard while the client refreshes them as browsers do
/// (allocation and channel bindings every 4 minutes; a ChannelBind also
/// refreshes the permission), to a peer on the other shard and to a
/// public peer, data flowing each minute; then, refreshes stopped, the
/// permissions expire (the control).
#[test]
fn channels_and_permissions_survive_30_minutes_on_their_shards() {
    let mut c = config();
    c.relay.ipv4 = Some("127.0.0.1".parse().unwrap());
    let (mut a, mut b) = two_shards(c);
    let ra = a.allocate()[0];
    let rb = b.allocate()[0];
    let peer = public_peer();
    let bind = |n: u16, p: SocketAddr| [Attribute::ChannelNumber(n), Attribute::XorPeerAddress(p)];
    let refresh = |h: &mut H, binds: &[(u16, SocketAddr)]| {
        h.login();
        h.expect_ok(Method::REFRESH, &[]);
        for &(n, p) in binds {
            h.expect_ok(Method::CHANNEL_BIND, &bind(n, p));
        }
    };
    let (binds_a, binds_b) = ([(0x4000, rb), (0x4001, peer)], [(0x4000, ra)]);
    refresh(&mut a, &binds_a);
    refresh(&mut b, &binds_b);
    let flows = |a: &mut H, b: &mut H| -> bool {
        // A → B over A's channel, through the network to B's relay socket.
        let cd = channel_data(0x4000, b"ab");
        let Some(s) = a.s.handle_client_packet(a.now, a.ft, &cd) else {
            return false;
        };
        if (s.peer, s.to) != (rb, Destination::Network) {
            return false;
        }
        let to_b = b.peer_data(rb, ra, b"ab");
        let to_a = a.peer_data(ra, rb, b"ba");
        let from_peer = a.peer_data(ra, peer, b"pp");
        to_b.is_some_and(|d| d[..2] == [0x40, 0x00])
            && to_a.is_some_and(|d| d[..2] == [0x40, 0x00])
            && from_peer.is_some_and(|d| d[..2] == [0x40, 0x01])
    };
    for minute in 1..=30 {
        a.advance(Duration::from_secs(60));
        b.advance(Duration::from_secs(60));
        if minute % 4 == 0 {
            refresh(&mut a, &binds_a);
            refresh(&mut b, &binds_b);
        }
        assert!(flows(&mut a, &mut b), "minute {minute}");
        a.s.check_invariants();
        b.s.check_invariants();
    }
    assert_eq!((a.s.allocation_count(), b.s.allocation_count()), (1, 1));
    // No more refreshes: after 6 minutes the permissions are gone.
    a.advance(Duration::from_secs(360));
    b.advance(Duration::from_secs(360));
    assert!(
        !flows(&mut a, &mut b),
        "expired permissions still pass data"
    );
}

// RFC 8016 mobility.

fn ticket_of(m: &Message<'_>) -> Option<Vec<u8>> {
    match m.get(attr::MOBILITY_TICKET) {
        Some(Ok(Attribute::MobilityTicket(t))) => Some(t.to_vec()),
        _ => None,
    }
}

/// Allocates with an empty MOBILITY-TICKET; the ticket and relayed address.
fn allocate_mobile(h: &mut H) -> (Vec<u8>, SocketAddr) {
    let r = h.allocate_with(&[
        Attribute::RequestedTransport(17),
        Attribute::MobilityTicket(&[]),
    ]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success, "{:?}", code(&m));
    let t = ticket_of(&m).expect("a ticket in the Allocate answer");
    assert_eq!(t.len(), mobility::TICKET_LEN);
    (t, relayed(&m)[0])
}

/// A signed Refresh carrying `ticket`, and its transaction id.
fn ticket_refresh(h: &mut H, ticket: &[u8]) -> (Vec<u8>, TransactionId) {
    let txid = h.txid();
    let req = h.build(
        Method::REFRESH,
        txid,
        &[Attribute::MobilityTicket(ticket)],
        true,
    );
    (req, txid)
}

/// Moves `h` to `to` and sends Refresh with `ticket` there (after a fresh
/// nonce: nonces are bound to the client IP); the answer.
fn refresh_from(h: &mut H, to: FiveTuple, ticket: &[u8]) -> Vec<u8> {
    h.ft = to;
    h.login();
    h.request(Method::REFRESH, &[Attribute::MobilityTicket(ticket)])
}

#[test]
fn a_ticket_moves_the_allocation_with_its_permissions_and_channels() {
    let mut h = H::new();
    let old = h.ft;
    let (t1, relay) = allocate_mobile(&mut h);
    let peer = public_peer();
    h.expect_ok(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4001),
            Attribute::XorPeerAddress(peer),
        ],
    );
    // Each Refresh answer carries a new ticket; both keep working.
    let r = h.request(Method::REFRESH, &[Attribute::MobilityTicket(&[])]);
    let t2 = ticket_of(&Message::parse(&r).unwrap()).expect("a ticket in Refresh");
    assert_ne!(t1, t2);
    // Moves to another address and to a stream: same relayed address.
    let new = ft("198.51.100.7:5555", Transport::Tcp);
    let r = refresh_from(&mut h, new, &t2);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success, "{:?}", code(&m));
    m.verify_integrity(&h.key()).unwrap();
    assert_eq!(lifetime(&m), Some(600));
    let t3 = ticket_of(&m).expect("a ticket after the move");
    assert!(h.s.has_allocation(&new) && !h.s.has_allocation(&old));
    assert!(h.outputs().is_empty());
    assert_eq!(h.s.stats().mobility_moves, 1);
    assert_eq!(h.s.stats().allocations_current, [0, 1, 0]);
    // The channel relays both ways on the new flow, the old flow is dead.
    let up = channel_data(0x4001, b"up");
    let s = h.s.handle_client_packet(h.now, new, &up);
    assert_eq!(s.map(|s| (s.relay, s.peer)), Some((relay, peer)));
    assert!(h
        .s
        .handle_client_packet(h.now, old, &channel_data(0x4001, b"x"))
        .is_none());
    let down = h.peer_data(relay, peer, b"down").unwrap();
    assert_eq!(ChannelData::parse(&down).unwrap().data, b"down");
    // The old flow closing ends nothing now.
    h.s.client_disconnected(h.now, old);
    assert!(h.s.has_allocation(&new));
    // The new one (a stream) closing leaves a minute to move again.
    h.s.client_disconnected(h.now, new);
    assert!(h.s.has_allocation(&new));
    h.advance(Duration::from_secs(30));
    assert!(h.s.has_allocation(&new));
    // And it moves again, with the latest ticket.
    let r = refresh_from(&mut h, ft("198.51.100.8:6000", Transport::Udp), &t3);
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    assert_eq!(h.s.stats().mobility_moves, 2);
    h.s.check_invariants();
}

#[test]
fn a_mobile_allocation_outlives_its_stream_by_the_grace_only() {
    let mut h = H::new();
    h.ft = ft("203.0.113.5:40000", Transport::Tcp);
    allocate_mobile(&mut h);
    h.s.client_disconnected(h.now, h.ft);
    h.advance(mobility::DISCONNECT_GRACE - Duration::from_secs(1));
    assert_eq!(h.s.allocation_count(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.s.allocation_count(), 0, "ended after the grace");
    // Without mobility a closed stream ends it at once.
    h.ft = ft("203.0.113.5:40001", Transport::Tcp);
    h.login();
    h.allocate();
    h.s.client_disconnected(h.now, h.ft);
    assert_eq!(h.s.allocation_count(), 0);
    h.s.check_invariants();
}

#[test]
fn moves_emit_an_allocation_moved_output() {
    let mut h = H::new();
    let old = h.ft;
    let (t, _) = allocate_mobile(&mut h);
    let new = ft("198.51.100.7:5555", Transport::Udp);
    h.ft = new;
    h.login();
    let (req, _) = ticket_refresh(&mut h, &t);
    h.feed(&req);
    let outs = h.outputs();
    assert!(
        outs.contains(&Output::AllocationMoved { from: old, to: new }),
        "{outs:?}"
    );
}

#[test]
fn refused_tickets_get_the_rfc_8016_codes_and_are_counted() {
    let mut h = H::new();
    let (t, _) = allocate_mobile(&mut h);
    let elsewhere = ft("198.51.100.7:5555", Transport::Udp);
    // Not ours, or altered: 437.
    let r = refresh_from(&mut h, elsewhere, &[7; 61]);
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(437));
    let mut bad = t.clone();
    bad[20] ^= 1;
    h.expect_code(Method::REFRESH, &[Attribute::MobilityTicket(&bad)], 437);
    // Another user's credentials: 441.
    h.user = "bob".into();
    h.password = "bob-pw".into();
    h.expect_code(Method::REFRESH, &[Attribute::MobilityTicket(&t)], 441);
    // No ticket from a flow without allocation: 437 as ever (not counted).
    h.expect_code(Method::REFRESH, &[], 437);
    assert_eq!(h.s.stats().mobility_refused, 3);
    assert_eq!(h.s.stats().mobility_moves, 0);
    // The owner deletes it: its tickets name nothing any more.
    h.ft = ft("203.0.113.5:40000", Transport::Udp);
    h.user = "alice".into();
    h.password = "alice-pw".into();
    h.login();
    h.expect_ok(Method::REFRESH, &[Attribute::Lifetime(0)]);
    let r = refresh_from(&mut h, elsewhere, &t);
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(437));
    // A non-empty ticket in an Allocate is malformed.
    h.ft = ft("203.0.113.5:40001", Transport::Udp);
    h.login();
    h.expect_code(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::MobilityTicket(&t),
        ],
        400,
    );
    h.s.check_invariants();
}

#[test]
fn mobility_off_is_405_and_no_ticket_without_asking() {
    let mut h = H::new();
    h.allocate();
    let r = h.request(Method::REFRESH, &[]);
    assert_eq!(ticket_of(&Message::parse(&r).unwrap()), None);
    let (t, _) = {
        let mut m = H::new();
        m.s = Server::new(h.s.config().clone(), h.now, UNIX0);
        allocate_mobile(&mut m)
    };
    let mut c = config();
    c.mobility = false;
    let mut off = H::with(c);
    off.login();
    off.expect_code(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::MobilityTicket(&[]),
        ],
        405,
    );
    off.expect_code(Method::REFRESH, &[Attribute::MobilityTicket(&t)], 405);
    assert_eq!(off.s.stats().mobility_refused, 2);
    // RFC 6062 allocations get no ticket: they do not move.
    let mut tcp = H::new();
    tcp.ft = ft("203.0.113.5:40000", Transport::Tcp);
    let r = tcp.allocate_with(&[
        Attribute::RequestedTransport(6),
        Attribute::MobilityTicket(&[]),
    ]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(ticket_of(&m), None);
}

#[test]
fn a_ticket_of_another_shard_moves_the_allocation_between_servers() {
    let mut c = config();
    c.relay.ipv4 = Some("127.0.0.1".parse().unwrap());
    let (mut a, mut b) = two_shards(c);
    // alice allocates on shard 0, then shows up on a flow of shard 1.
    let (t, relay) = allocate_mobile(&mut a);
    let peer = public_peer();
    a.expect_ok(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer)],
    );
    let new = ft("198.51.100.7:5555", Transport::Udp);
    b.ft = new;
    b.user = "alice".into();
    b.password = "alice-pw".into();
    b.now = a.now;
    b.login();
    let (req, txid) = ticket_refresh(&mut b, &t);
    assert_eq!(b.s.mobility_shard(&req), Some(0));
    assert_eq!(a.s.mobility_shard(&req), None, "the owner handles it");
    // Shard 0 checks it and lets it go; shard 1 takes it and answers.
    let moving = a.s.export_moving(a.now, new, &req).expect("exported");
    assert_eq!(moving.relay_addrs(), vec![relay]);
    assert_eq!(a.s.allocation_count(), 0);
    let id = b.s.import_moving(b.now, moving).expect("imported");
    let replies = b.replies();
    let r = Message::parse(&replies[0]).unwrap();
    assert_eq!((r.class(), r.transaction_id()), (Class::Success, txid));
    r.verify_integrity(&b.key()).unwrap();
    let t2 = ticket_of(&r).unwrap();
    // The new ticket names shard 1.
    let (again, _) = ticket_refresh(&mut b, &t2);
    assert_eq!(a.s.mobility_shard(&again), Some(1));
    assert_eq!(b.s.mobility_shard(&again), None);
    // Peer data on the relay socket (now the driver's on shard 1) reaches
    // the new flow; the permission came along.
    let mut buf = vec![0u8; PEER_DATA_HEADROOM + 2 + PEER_DATA_TAILROOM];
    let f =
        b.s.handle_allocation_data(b.now, id, peer, &mut buf, 2)
            .unwrap();
    assert_eq!(f.five_tuple, new);
    assert_eq!(b.s.stats().mobility_moves, 1);
    a.s.check_invariants();
    b.s.check_invariants();
    // A stale export (the old ticket again) is refused by shard 0.
    b.ft = ft("198.51.100.7:5556", Transport::Udp);
    let (req, _) = ticket_refresh(&mut b, &t);
    assert!(a.s.export_moving(a.now, b.ft, &req).is_none());
    assert_eq!(a.s.stats().mobility_refused, 1);
}

//! Client tests in simulated time against a scripted server.
//!
//! [`FakeServer`] reads the client's requests, checks them and answers with
//! responses built by `stun::MessageEncoder`; nothing sleeps, time is
//! `Instant` arithmetic.

mod auth;
mod data;
mod mobility;
mod robust;
mod tcp;
mod timing;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun::attr::{self, Attribute, ErrorCode};
use stun::nonce::SecurityFeatures;
use stun::{Class, Key, Message, MessageEncoder, MessageType, Method, PasswordAlgorithm};

use super::*;
use crate::Transport;

pub(super) const USER: &str = "alice";
pub(super) const PASS: &str = "secret";
pub(super) const REALM: &str = "example.org";

pub(super) fn server_addr() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}
pub(super) fn relayed_addr() -> SocketAddr {
    "203.0.113.5:50000".parse().unwrap()
}
pub(super) fn mapped_addr() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}
pub(super) fn peer_addr() -> SocketAddr {
    "198.51.100.20:5000".parse().unwrap()
}

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(super) fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// How a scripted response is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mi {
    /// No MESSAGE-INTEGRITY.
    None,
    /// The right key, with the server's algorithm.
    Valid,
    /// A wrong key.
    Wrong,
}

/// A scripted TURN server for one client.
#[derive(Debug)]
pub(super) struct FakeServer {
    pub(super) realm: String,
    pub(super) nonce: String,
    /// Offer PASSWORD-ALGORITHMS (MD5, SHA-256) with the nonce cookie.
    pub(super) offer_sha256: bool,
}

impl FakeServer {
    pub(super) fn new() -> Self {
        FakeServer {
            realm: REALM.to_owned(),
            nonce: "nonce-1".to_owned(),
            offer_sha256: false,
        }
    }

    /// A server whose nonce cookie announces password algorithms and which
    /// offers MD5 and SHA-256.
    pub(super) fn with_sha256() -> Self {
        let cookie = SecurityFeatures {
            password_algorithms: true,
            username_anonymity: false,
        }
        .cookie();
        FakeServer {
            realm: REALM.to_owned(),
            nonce: format!("{cookie}abcdef"),
            offer_sha256: true,
        }
    }

    pub(super) fn algorithm(&self) -> PasswordAlgorithm {
        if self.offer_sha256 {
            PasswordAlgorithm::Sha256
        } else {
            PasswordAlgorithm::Md5
        }
    }

    pub(super) fn key(&self) -> Key {
        Key::long_term(self.algorithm(), USER, &self.realm, PASS).unwrap()
    }

    /// Takes the next transmit: it must go to the server and be a request
    /// of `method`.
    pub(super) fn expect_request(&self, client: &mut Client, method: Method) -> Vec<u8> {
        let t = client.poll_transmit().expect("a transmit");
        assert_eq!(t.destination, server_addr());
        let m = Message::parse(&t.payload).expect("a STUN message");
        assert_eq!(m.class(), Class::Request);
        assert_eq!(m.method(), method);
        m.verify_fingerprint().expect("FINGERPRINT");
        t.payload
    }

    /// Checks that a request carries this server's credentials and a valid
    /// MESSAGE-INTEGRITY (or MESSAGE-INTEGRITY-SHA256).
    pub(super) fn check_authenticated(&self, req: &[u8]) {
        let m = Message::parse(req).unwrap();
        assert!(matches!(
            m.get(attr::USERNAME),
            Some(Ok(Attribute::Username(USER)))
        ));
        assert!(matches!(m.get(attr::REALM), Some(Ok(Attribute::Realm(r))) if r == self.realm));
        assert!(matches!(m.get(attr::NONCE), Some(Ok(Attribute::Nonce(n))) if n == self.nonce));
        if self.offer_sha256 {
            assert!(!m.has_integrity());
            m.verify_integrity_sha256(&self.key()).expect("MI-SHA256");
        } else {
            assert!(!m.has_integrity_sha256());
            m.verify_integrity(&self.key()).expect("MI");
        }
    }

    /// A response to `req`.
    pub(super) fn respond(
        &self,
        req: &[u8],
        class: Class,
        attrs: &[Attribute<'_>],
        mi: Mi,
    ) -> Vec<u8> {
        let r = Message::parse(req).unwrap();
        let mut buf = vec![0u8; 2048];
        let typ = MessageType::new(r.method(), class);
        let mut enc = MessageEncoder::new(&mut buf, typ, r.transaction_id()).unwrap();
        for a in attrs {
            enc.push(a).unwrap();
        }
        let key = match mi {
            Mi::None => None,
            Mi::Valid => Some(self.key()),
            Mi::Wrong => Some(Key::long_term(self.algorithm(), USER, &self.realm, "bad").unwrap()),
        };
        if let Some(k) = key {
            if self.offer_sha256 {
                enc.message_integrity_sha256(&k).unwrap();
            } else {
                enc.message_integrity(&k).unwrap();
            }
        }
        enc.fingerprint().unwrap();
        let n = enc.finish();
        buf.truncate(n);
        buf
    }

    /// An authenticated success response.
    pub(super) fn success(&self, req: &[u8], attrs: &[Attribute<'_>]) -> Vec<u8> {
        self.respond(req, Class::Success, attrs, Mi::Valid)
    }

    /// An error response, authenticated or not.
    pub(super) fn error(&self, req: &[u8], code: u16, mi: Mi) -> Vec<u8> {
        let ec = Attribute::ErrorCode(ErrorCode {
            code,
            reason: attr::reason_phrase(code),
        });
        self.respond(req, Class::Error, &[ec], mi)
    }

    /// 401 with REALM, NONCE and, for a SHA-256 server, PASSWORD-ALGORITHMS.
    pub(super) fn challenge(&self, req: &[u8]) -> Vec<u8> {
        self.challenge_with(req, 401)
    }

    /// A 401 or 438 challenge carrying the current realm and nonce.
    pub(super) fn challenge_with(&self, req: &[u8], code: u16) -> Vec<u8> {
        let r = Message::parse(req).unwrap();
        let mut buf = vec![0u8; 1024];
        let typ = MessageType::new(r.method(), Class::Error);
        let mut enc = MessageEncoder::new(&mut buf, typ, r.transaction_id()).unwrap();
        enc.push(&Attribute::ErrorCode(ErrorCode {
            code,
            reason: attr::reason_phrase(code),
        }))
        .unwrap();
        enc.push(&Attribute::Realm(&self.realm)).unwrap();
        enc.push(&Attribute::Nonce(&self.nonce)).unwrap();
        if self.offer_sha256 {
            enc.push_password_algorithms(&[(0x0001, &[]), (0x0002, &[])])
                .unwrap();
        }
        enc.fingerprint().unwrap();
        let n = enc.finish();
        buf.truncate(n);
        buf
    }

    /// The Allocate success this server grants.
    pub(super) fn allocate_success(&self, req: &[u8], lifetime: u32) -> Vec<u8> {
        self.success(
            req,
            &[
                Attribute::XorRelayedAddress(relayed_addr()),
                Attribute::Lifetime(lifetime),
                Attribute::XorMappedAddress(mapped_addr()),
            ],
        )
    }
}

/// Feeds server bytes to the client as its transport requires.
pub(super) fn deliver(client: &mut Client, now: Instant, bytes: &[u8]) {
    if client.config().transport.is_stream() {
        client.handle_stream_bytes(now, bytes).unwrap();
    } else {
        client.handle_datagram(now, server_addr(), bytes);
    }
}

/// All queued events.
pub(super) fn events(client: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| client.poll_event()).collect()
}

/// A configuration for the test server.
pub(super) fn config(transport: Transport) -> ClientConfig {
    ClientConfig::new(server_addr(), transport, USER, PASS)
}

/// A client allocated through the 401 dance at `t0` with lifetime 600 s;
/// no events or transmits left.
pub(super) fn allocated(cfg: ClientConfig, srv: &FakeServer) -> (Client, Instant) {
    let t0 = Instant::now();
    let mut c = Client::new(cfg, t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    deliver(&mut c, t0, &srv.challenge(&req));
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    srv.check_authenticated(&req);
    deliver(&mut c, t0, &srv.allocate_success(&req, 600));
    assert_eq!(c.state(), ClientState::Allocated);
    assert!(matches!(events(&mut c)[..], [Event::Allocated { .. }]));
    assert!(c.poll_transmit().is_none());
    (c, t0)
}

/// Installs a permission for `peer`'s IP and confirms a channel to it.
pub(super) fn bind(c: &mut Client, srv: &FakeServer, now: Instant, peer: SocketAddr) -> u16 {
    let n = c.bind_channel(now, peer).unwrap();
    let req = srv.expect_request(c, Method::CHANNEL_BIND);
    deliver(c, now, &srv.success(&req, &[]));
    assert_eq!(c.channel(peer), Some(n));
    n
}

/// The attribute of type `t` of a message.
pub(super) fn get<'a>(m: &Message<'a>, t: u16) -> Attribute<'a> {
    m.get(t)
        .expect("attribute present")
        .expect("attribute valid")
}

//! Helpers shared by the test modules: the vector file, a tiny seeded RNG,
//! sample messages and a function that touches every API of a parsed message.

use std::net::SocketAddr;
use std::sync::OnceLock;

use stun::attr::{self, Attribute};
use stun::framing::{self, StreamDecoder};
use stun::{ChannelData, Class, Key, Message, MessageEncoder, MessageType, Method, TransactionId};

/// One block of `tests/data/stun-test-vectors.txt`.
#[derive(Debug, Clone)]
pub struct Vector {
    pub name: String,
    pub params: String,
    pub bytes: Vec<u8>,
}

const VECTOR_FILE: &str = include_str!("../data/stun-test-vectors.txt");

/// All vectors of the file, in file order.
pub fn vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    for block in VECTOR_FILE.split("\n\n") {
        let mut name = None;
        let mut params = String::new();
        let mut hex_text = None;
        for line in block.lines().filter(|l| !l.starts_with('#')) {
            if let Some(v) = line.strip_prefix("name: ") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("params: ") {
                params = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("hex: ") {
                hex_text = Some(v.trim().to_owned());
            }
        }
        if let (Some(name), Some(h)) = (name, hex_text) {
            let bytes = hex::decode(h).unwrap_or_else(|e| panic!("{name}: bad hex: {e}"));
            out.push(Vector {
                name,
                params,
                bytes,
            });
        }
    }
    out
}

/// The vector named `name`.
pub fn vector(name: &str) -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

/// Short-term password of RFC 5769 §2.1–2.3.
pub const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
/// Username of RFC 5769 §2.4 and RFC 8489 B.1 ("matrix" in katakana).
pub const LONG_TERM_USER: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// Raw (un-prepared) password of RFC 5769 §2.4 and RFC 8489 B.1.
pub const LONG_TERM_PASSWORD: &str = "The\u{00AD}M\u{00AA}tr\u{2168}";
/// Realm of RFC 5769 §2.4 and RFC 8489 B.1.
pub const REALM: &str = "example.org";

pub fn short_term_key() -> Key {
    Key::short_term(SHORT_TERM_PASSWORD).unwrap()
}

pub fn long_term_key() -> Key {
    Key::long_term(
        stun::PasswordAlgorithm::Md5,
        LONG_TERM_USER,
        REALM,
        LONG_TERM_PASSWORD,
    )
    .unwrap()
}

/// xorshift64*: deterministic, dependency-free randomness for bounded loops.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.next_u64() as u8;
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Key used by [`allocate_request`].
pub fn allocate_key() -> Key {
    Key::long_term(
        stun::PasswordAlgorithm::Md5,
        "alice",
        "example.org",
        "secret",
    )
    .unwrap()
}

/// An authenticated Allocate request: USERNAME, REALM, NONCE,
/// REQUESTED-TRANSPORT, LIFETIME, MESSAGE-INTEGRITY, FINGERPRINT.
pub fn allocate_request() -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let typ = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([0x5a; 12])).unwrap();
    e.push(&Attribute::Username("alice")).unwrap();
    e.push(&Attribute::Realm("example.org")).unwrap();
    e.push(&Attribute::Nonce(
        "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA",
    ))
    .unwrap();
    e.push(&Attribute::RequestedTransport(17)).unwrap();
    e.push(&Attribute::Lifetime(600)).unwrap();
    e.message_integrity(&allocate_key()).unwrap();
    e.fingerprint().unwrap();
    let n = e.finish();
    buf.truncate(n);
    buf
}

/// A message carrying one attribute of every type this crate knows (with a
/// valid value), then MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT, keyed with [`allocate_key`].
pub fn kitchen_sink() -> Vec<u8> {
    let v4: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:49152".parse().unwrap();
    let algs = [0, 1, 0, 0, 0, 2, 0, 0];
    let unknown = [0x00, 0x31, 0x7f, 0xff];
    let attrs = [
        Attribute::MappedAddress(v4),
        Attribute::XorMappedAddress(v6),
        Attribute::Username("alice"),
        Attribute::UserHash([7; 32]),
        Attribute::ErrorCode(stun::attr::ErrorCode {
            code: 438,
            reason: "Stale Nonce",
        }),
        Attribute::Realm("example.org"),
        Attribute::Nonce("nonce"),
        Attribute::PasswordAlgorithms(attr::PasswordAlgorithms::from_wire(&algs).unwrap()),
        Attribute::PasswordAlgorithm(attr::PasswordAlgorithmEntry {
            algorithm: 2,
            params: &[],
        }),
        Attribute::UnknownAttributes(attr::UnknownAttributes::from_wire(&unknown).unwrap()),
        Attribute::Software("onionrtc"),
        Attribute::AlternateServer(v6),
        Attribute::AlternateDomain("turn.example.org"),
        Attribute::ChannelNumber(0x4001),
        Attribute::Lifetime(600),
        Attribute::XorPeerAddress(v4),
        Attribute::Data(b"payload"),
        Attribute::XorRelayedAddress(v6),
        Attribute::RequestedAddressFamily(stun::AddressFamily::V6),
        Attribute::EvenPort(true),
        Attribute::RequestedTransport(6),
        Attribute::DontFragment,
        Attribute::ReservationToken([1, 2, 3, 4, 5, 6, 7, 8]),
        Attribute::AdditionalAddressFamily(stun::AddressFamily::V6),
        Attribute::AddressErrorCode(stun::attr::AddressErrorCode {
            family: stun::AddressFamily::V4,
            code: 440,
            reason: "Address Family not Supported",
        }),
        Attribute::Icmp(stun::attr::Icmp {
            icmp_type: 3,
            icmp_code: 4,
            error_data: 1400,
        }),
        Attribute::ConnectionId(0xdead_beef),
        Attribute::Priority(0x6e00_01ff),
        Attribute::UseCandidate,
        Attribute::IceControlled(1),
        Attribute::IceControlling(u64::MAX),
        Attribute::Unknown {
            typ: 0xC001,
            value: b"opaque",
        },
    ];
    let mut buf = vec![0u8; 2048];
    let typ = MessageType::new(Method::ALLOCATE, Class::Success);
    let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([0xa5; 12])).unwrap();
    for a in &attrs {
        e.push(a).unwrap();
    }
    let key = allocate_key();
    e.message_integrity(&key).unwrap();
    e.message_integrity_sha256(&key).unwrap();
    e.fingerprint().unwrap();
    let n = e.finish();
    buf.truncate(n);
    buf
}

/// Valid messages to mutate: the RFC vectors, the Allocate request and the
/// kitchen sink.
pub fn valid_messages() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> =
        vectors().into_iter().map(|v| (v.name, v.bytes)).collect();
    out.push(("allocate-request".into(), allocate_request()));
    out.push(("kitchen-sink".into(), kitchen_sink()));
    out
}

/// Valid ChannelData messages (padded and not).
pub fn valid_channel_data() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (len, pad) in [
        (0, false),
        (1, true),
        (5, false),
        (7, true),
        (16, true),
        (100, false),
    ] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut buf = vec![0u8; len + 8];
        let n = ChannelData::encode(0x4000 + len as u16, &data, &mut buf, pad).unwrap();
        buf.truncate(n);
        out.push(buf);
    }
    out
}

/// The keys of the sample messages, derived once.
pub fn keys() -> &'static [Key; 3] {
    static KEYS: OnceLock<[Key; 3]> = OnceLock::new();
    KEYS.get_or_init(|| [allocate_key(), short_term_key(), long_term_key()])
}

/// Touches every read-only API of the wire format on `buf`; must never panic.
/// Returns whether `Message::parse` accepted it.
pub fn exercise(buf: &[u8]) -> bool {
    let _ = stun::classify(buf);
    let _ = stun::is_stun(buf);
    let _ = framing::frame_len(buf);
    let _ = ChannelData::parse(buf);
    let parsed = match Message::parse(buf) {
        Ok(m) => {
            exercise_message(&m);
            true
        }
        Err(_) => false,
    };
    let mut d = StreamDecoder::new(2048);
    if d.push(buf).is_ok() {
        for _ in 0..buf.len() + 1 {
            match d.next_frame() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
    parsed
}

/// Decodes every attribute, looks up every known type and runs every check.
pub fn exercise_message(m: &Message<'_>) {
    let _ = (m.class(), m.method(), m.transaction_id(), m.method().name());
    // A decoded attribute re-encodes (its length is valid) and decodes to
    // the same value.
    for a in m.attributes().flatten() {
        let n = a.value_len().unwrap();
        let mut v = vec![0u8; n];
        a.encode_value(&m.transaction_id(), &mut v);
        let raw = attr::RawAttribute {
            typ: a.typ(),
            value: &v,
            offset: 20,
        };
        assert_eq!(Attribute::decode(raw, &m.transaction_id()).unwrap(), a);
    }
    for (t, _) in attr::KNOWN {
        let _ = m.get(t);
    }
    let mut out = [0u16; 8];
    let _ = m.unknown_required(attr::is_known, &mut out);
    // A check that passes implies the attribute it checked is well-formed.
    for key in keys() {
        if m.verify_integrity(key).is_ok() {
            let mi = m.get(attr::MESSAGE_INTEGRITY);
            assert!(matches!(mi, Some(Ok(Attribute::MessageIntegrity(_)))));
        }
        if m.verify_integrity_sha256(key).is_ok() {
            let mi = m.get(attr::MESSAGE_INTEGRITY_SHA256);
            assert!(matches!(mi, Some(Ok(Attribute::MessageIntegritySha256(_)))));
        }
    }
    if m.verify_fingerprint().is_ok() {
        let fp = m.get(attr::FINGERPRINT);
        assert!(matches!(fp, Some(Ok(Attribute::Fingerprint(_)))));
    }
}

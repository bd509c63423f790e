//! proptest round trips: parse(encode(x)) == x for every attribute variant,
//! authenticated messages, and ChannelData.

use std::net::{IpAddr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;
use stun::attr::{
    self, AddressErrorCode, Attribute, ErrorCode, Icmp, PasswordAlgorithmEntry, PasswordAlgorithms,
    RawAttribute, UnknownAttributes,
};
use stun::integrity::IntegrityError;
use stun::{
    AddressFamily, ChannelData, Class, Error, Key, Message, MessageEncoder, MessageType, Method,
    TransactionId,
};

/// An owned attribute value, from which a borrowed [`Attribute`] is made.
#[derive(Debug, Clone)]
pub(crate) enum Owned {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    Username(String),
    UserHash([u8; 32]),
    ErrorCode(u16, String),
    Realm(String),
    Nonce(String),
    /// Wire bytes of a valid entry list.
    PasswordAlgorithms(Vec<u8>),
    PasswordAlgorithm(u16, Vec<u8>),
    /// Wire bytes (even length).
    UnknownAttributes(Vec<u8>),
    Software(String),
    AlternateServer(SocketAddr),
    AlternateDomain(String),
    ChannelNumber(u16),
    Lifetime(u32),
    XorPeerAddress(SocketAddr),
    Data(Vec<u8>),
    XorRelayedAddress(SocketAddr),
    RequestedAddressFamily(AddressFamily),
    EvenPort(bool),
    RequestedTransport(u8),
    DontFragment,
    ReservationToken([u8; 8]),
    AdditionalAddressFamily(AddressFamily),
    AddressErrorCode(AddressFamily, u16, String),
    Icmp(Icmp),
    ConnectionId(u32),
    Priority(u32),
    UseCandidate,
    IceControlled(u64),
    IceControlling(u64),
    MobilityTicket(Vec<u8>),
    Unknown(u16, Vec<u8>),
    // Only as the tail of a message (they seal it).
    MessageIntegrity([u8; 20]),
    MessageIntegritySha256(Vec<u8>),
    Fingerprint(u32),
}

impl Owned {
    pub(crate) fn attr(&self) -> Attribute<'_> {
        match self {
            Owned::MappedAddress(a) => Attribute::MappedAddress(*a),
            Owned::XorMappedAddress(a) => Attribute::XorMappedAddress(*a),
            Owned::Username(s) => Attribute::Username(s),
            Owned::UserHash(h) => Attribute::UserHash(*h),
            Owned::ErrorCode(code, reason) => Attribute::ErrorCode(ErrorCode {
                code: *code,
                reason,
            }),
            Owned::Realm(s) => Attribute::Realm(s),
            Owned::Nonce(s) => Attribute::Nonce(s),
            Owned::PasswordAlgorithms(w) => {
                Attribute::PasswordAlgorithms(PasswordAlgorithms::from_wire(w).unwrap())
            }
            Owned::PasswordAlgorithm(algorithm, params) => {
                Attribute::PasswordAlgorithm(PasswordAlgorithmEntry {
                    algorithm: *algorithm,
                    params,
                })
            }
            Owned::UnknownAttributes(w) => {
                Attribute::UnknownAttributes(UnknownAttributes::from_wire(w).unwrap())
            }
            Owned::Software(s) => Attribute::Software(s),
            Owned::AlternateServer(a) => Attribute::AlternateServer(*a),
            Owned::AlternateDomain(s) => Attribute::AlternateDomain(s),
            Owned::ChannelNumber(n) => Attribute::ChannelNumber(*n),
            Owned::Lifetime(n) => Attribute::Lifetime(*n),
            Owned::XorPeerAddress(a) => Attribute::XorPeerAddress(*a),
            Owned::Data(d) => Attribute::Data(d),
            Owned::XorRelayedAddress(a) => Attribute::XorRelayedAddress(*a),
            Owned::RequestedAddressFamily(f) => Attribute::RequestedAddressFamily(*f),
            Owned::EvenPort(r) => Attribute::EvenPort(*r),
            Owned::RequestedTransport(p) => Attribute::RequestedTransport(*p),
            Owned::DontFragment => Attribute::DontFragment,
            Owned::ReservationToken(t) => Attribute::ReservationToken(*t),
            Owned::AdditionalAddressFamily(f) => Attribute::AdditionalAddressFamily(*f),
            Owned::AddressErrorCode(family, code, reason) => {
                Attribute::AddressErrorCode(AddressErrorCode {
                    family: *family,
                    code: *code,
                    reason,
                })
            }
            Owned::Icmp(i) => Attribute::Icmp(*i),
            Owned::ConnectionId(n) => Attribute::ConnectionId(*n),
            Owned::Priority(n) => Attribute::Priority(*n),
            Owned::UseCandidate => Attribute::UseCandidate,
            Owned::IceControlled(n) => Attribute::IceControlled(*n),
            Owned::IceControlling(n) => Attribute::IceControlling(*n),
            Owned::MobilityTicket(t) => Attribute::MobilityTicket(t),
            Owned::Unknown(typ, value) => Attribute::Unknown { typ: *typ, value },
            Owned::MessageIntegrity(h) => Attribute::MessageIntegrity(*h),
            Owned::MessageIntegritySha256(h) => Attribute::MessageIntegritySha256(h),
            Owned::Fingerprint(n) => Attribute::Fingerprint(*n),
        }
    }
}

/// UTF-8 text of at most `max` bytes: ASCII up to the limit, or any chars
/// cut at a char boundary.
fn text(max: usize) -> impl Strategy<Value = String> {
    let ascii = proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).unwrap();
    let unicode = vec(any::<char>(), 0..=max / 2).prop_map(move |cs| {
        let mut s = String::new();
        for c in cs {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        s
    });
    prop_oneof![ascii, unicode, Just("x".repeat(max))]
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
    ]
}

fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::V4), Just(AddressFamily::V6)]
}

fn error_code() -> impl Strategy<Value = u16> {
    300u16..=699
}

/// A valid PASSWORD-ALGORITHMS value: entries with their params padded.
fn password_algorithms_wire() -> impl Strategy<Value = Vec<u8>> {
    vec((any::<u16>(), vec(any::<u8>(), 0..12)), 0..5).prop_map(|entries| {
        let mut w = Vec::new();
        for (alg, params) in entries {
            w.extend_from_slice(&alg.to_be_bytes());
            w.extend_from_slice(&(params.len() as u16).to_be_bytes());
            w.extend_from_slice(&params);
            while w.len() % 4 != 0 {
                w.push(0);
            }
        }
        w
    })
}

/// Any attribute that may appear before MESSAGE-INTEGRITY, each variant
/// within the length limits of its RFC.
pub(crate) fn body_attr() -> impl Strategy<Value = Owned> {
    prop_oneof![
        socket_addr().prop_map(Owned::MappedAddress),
        socket_addr().prop_map(Owned::XorMappedAddress),
        text(attr::MAX_USERNAME).prop_map(Owned::Username),
        any::<[u8; 32]>().prop_map(Owned::UserHash),
        (error_code(), text(attr::MAX_TEXT)).prop_map(|(c, r)| Owned::ErrorCode(c, r)),
        text(attr::MAX_TEXT).prop_map(Owned::Realm),
        text(attr::MAX_TEXT).prop_map(Owned::Nonce),
        password_algorithms_wire().prop_map(Owned::PasswordAlgorithms),
        (any::<u16>(), vec(any::<u8>(), 0..40)).prop_map(|(a, p)| Owned::PasswordAlgorithm(a, p)),
        vec(any::<u16>(), 0..20).prop_map(|ts| {
            Owned::UnknownAttributes(ts.iter().flat_map(|t| t.to_be_bytes()).collect())
        }),
        text(attr::MAX_TEXT).prop_map(Owned::Software),
        socket_addr().prop_map(Owned::AlternateServer),
        text(attr::MAX_DOMAIN).prop_map(Owned::AlternateDomain),
        any::<u16>().prop_map(Owned::ChannelNumber),
        any::<u32>().prop_map(Owned::Lifetime),
        socket_addr().prop_map(Owned::XorPeerAddress),
        vec(any::<u8>(), 0..1500).prop_map(Owned::Data),
        socket_addr().prop_map(Owned::XorRelayedAddress),
        family().prop_map(Owned::RequestedAddressFamily),
        any::<bool>().prop_map(Owned::EvenPort),
        any::<u8>().prop_map(Owned::RequestedTransport),
        Just(Owned::DontFragment),
        any::<[u8; 8]>().prop_map(Owned::ReservationToken),
        family().prop_map(Owned::AdditionalAddressFamily),
        (family(), error_code(), text(attr::MAX_TEXT))
            .prop_map(|(f, c, r)| Owned::AddressErrorCode(f, c, r)),
        (0u8..0x80, 0u16..0x200, any::<u32>()).prop_map(|(t, c, d)| Owned::Icmp(Icmp {
            icmp_type: t,
            icmp_code: c,
            error_data: d,
        })),
        any::<u32>().prop_map(Owned::ConnectionId),
        any::<u32>().prop_map(Owned::Priority),
        Just(Owned::UseCandidate),
        any::<u64>().prop_map(Owned::IceControlled),
        any::<u64>().prop_map(Owned::IceControlling),
        vec(any::<u8>(), 0..96).prop_map(Owned::MobilityTicket),
        (
            any::<u16>().prop_filter("unknown type", |t| !attr::is_known(*t)),
            vec(any::<u8>(), 0..64)
        )
            .prop_map(|(t, v)| Owned::Unknown(t, v)),
    ]
}

/// The sealing tail: MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT with arbitrary values, each optional, in RFC order.
fn tail() -> impl Strategy<Value = Vec<Owned>> {
    (
        proptest::option::of(any::<[u8; 20]>().prop_map(Owned::MessageIntegrity)),
        proptest::option::of(
            (4usize..=8)
                .prop_flat_map(|w| vec(any::<u8>(), w * 4))
                .prop_map(Owned::MessageIntegritySha256),
        ),
        proptest::option::of(any::<u32>().prop_map(Owned::Fingerprint)),
    )
        .prop_map(|(a, b, c)| [a, b, c].into_iter().flatten().collect())
}

pub(crate) fn message_type() -> impl Strategy<Value = MessageType> {
    let class = prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error),
    ];
    (0u16..=0xFFF, class).prop_map(|(m, c)| MessageType::new(Method::new(m).unwrap(), c))
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        vec(any::<u8>(), 0..=64).prop_map(|b| Key::from_bytes(&b).unwrap()),
        ("[a-z]{1,16}", "[a-z.]{1,16}", "[ -~]{0,24}").prop_map(|(u, r, p)| {
            Key::long_term(stun::PasswordAlgorithm::Sha256, &u, &r, &p).unwrap()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every variant alone: value_len/encode_value then decode gives it back.
    #[test]
    fn single_attribute_round_trip(a in prop_oneof![body_attr(), tail().prop_filter_map("empty", |t| t.into_iter().next())], txid in any::<[u8; 12]>()) {
        let txid = TransactionId(txid);
        let a = a.attr();
        let n = a.value_len().unwrap();
        let mut v = vec![0u8; n];
        a.encode_value(&txid, &mut v);
        let raw = RawAttribute { typ: a.typ(), value: &v, offset: 20 };
        prop_assert_eq!(Attribute::decode(raw, &txid).unwrap(), a);
    }

    /// A random attribute list (and random sealing tail) survives
    /// encode → parse → decode, in order, with the same values.
    #[test]
    fn message_round_trip(
        typ in message_type(),
        txid in any::<[u8; 12]>(),
        body in vec(body_attr(), 0..10),
        tail in tail(),
        padding in prop_oneof![Just(0u8), Just(0x20), any::<u8>()],
    ) {
        let txid = TransactionId(txid);
        let all: Vec<Owned> = body.into_iter().chain(tail).collect();
        let mut buf = vec![0u8; 65_556];
        let mut e = MessageEncoder::new(&mut buf, typ, txid).unwrap();
        e.set_padding(padding);
        for a in &all {
            e.push(&a.attr()).unwrap();
        }
        let n = e.finish();
        prop_assert_eq!(n % 4, 0);
        let m = Message::parse(&buf[..n]).unwrap();
        prop_assert_eq!(m.message_type(), typ);
        prop_assert_eq!(m.transaction_id(), txid);
        let got: Vec<Attribute<'_>> = m.attributes().map(|a| a.unwrap()).collect();
        let want: Vec<Attribute<'_>> = all.iter().map(Owned::attr).collect();
        prop_assert_eq!(got, want);
        for a in &all {
            let a = a.attr();
            prop_assert!(m.get(a.typ()).is_some());
        }
    }

    /// Real MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
    /// round-trip and verify; another key does not.
    #[test]
    fn authenticated_round_trip(
        typ in message_type(),
        txid in any::<[u8; 12]>(),
        body in vec(body_attr(), 0..6),
        key in key(),
        other in key(),
        (mi, mi256, fp) in any::<(bool, bool, bool)>(),
    ) {
        let txid = TransactionId(txid);
        let mut buf = vec![0u8; 65_556];
        let mut e = MessageEncoder::new(&mut buf, typ, txid).unwrap();
        for a in &body {
            e.push(&a.attr()).unwrap();
        }
        if mi {
            e.message_integrity(&key).unwrap();
        }
        if mi256 {
            e.message_integrity_sha256(&key).unwrap();
        }
        if fp {
            e.fingerprint().unwrap();
        }
        let n = e.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        let got: Vec<Attribute<'_>> = m.attributes().map(|a| a.unwrap()).collect();
        let want: Vec<Attribute<'_>> = body.iter().map(Owned::attr).collect();
        prop_assert_eq!(&got[..want.len()], &want[..]);
        prop_assert_eq!(got.len() - want.len(), usize::from(mi) + usize::from(mi256) + usize::from(fp));

        let missing = Err(IntegrityError::Missing);
        prop_assert_eq!(m.verify_integrity(&key), if mi { Ok(()) } else { missing });
        prop_assert_eq!(m.verify_integrity_sha256(&key), if mi256 { Ok(()) } else { missing });
        prop_assert_eq!(m.verify_fingerprint(), if fp { Ok(()) } else { missing });
        if other != key {
            if mi {
                prop_assert_eq!(m.verify_integrity(&other), Err(IntegrityError::Mismatch));
            }
            if mi256 {
                prop_assert_eq!(m.verify_integrity_sha256(&other), Err(IntegrityError::Mismatch));
            }
        }
    }

    /// Whatever a known type's value bytes, a successful decode re-encodes
    /// to bytes that decode to the same value.
    #[test]
    fn decode_encode_decode_is_stable(
        i in 0..attr::KNOWN.len(),
        value in prop_oneof![vec(any::<u8>(), 0..48), vec(any::<u8>(), 0..900)],
        txid in any::<[u8; 12]>(),
    ) {
        let txid = TransactionId(txid);
        let typ = attr::KNOWN[i].0;
        let raw = RawAttribute { typ, value: &value, offset: 20 };
        if let Ok(a) = Attribute::decode(raw, &txid) {
            let n = a.value_len().unwrap();
            let mut v = vec![0u8; n];
            a.encode_value(&txid, &mut v);
            let raw2 = RawAttribute { typ, value: &v, offset: 20 };
            prop_assert_eq!(Attribute::decode(raw2, &txid).unwrap(), a);
        }
    }

    /// ChannelData encode/parse, padded (streams) and unpadded (datagrams).
    #[test]
    fn channel_data_round_trip(
        number in stun::channel::MIN_CHANNEL..=stun::channel::MAX_CHANNEL_RFC5766,
        data in prop_oneof![vec(any::<u8>(), 0..64), vec(any::<u8>(), 0..4000)],
        pad in any::<bool>(),
    ) {
        let mut out = vec![0u8; data.len() + 8];
        let n = ChannelData::encode(number, &data, &mut out, pad).unwrap();
        prop_assert_eq!(n, ChannelData::encoded_len(data.len(), pad));
        if pad {
            prop_assert_eq!(n % 4, 0);
        } else {
            prop_assert_eq!(n, data.len() + 4);
        }
        let c = ChannelData::parse(&out[..n]).unwrap();
        prop_assert_eq!(c.number, number);
        prop_assert_eq!(c.data, &data[..]);
        prop_assert_eq!(stun::classify(&out[..n]), stun::PacketKind::ChannelData);
        // A buffer one byte short of what it needs is refused.
        prop_assert_eq!(
            ChannelData::encode(number, &data, &mut out[..n - 1], pad),
            Err(Error::BufferTooSmall)
        );
    }
}

#[test]
fn push_password_algorithms_matches_wire_form() {
    let params: &[u8] = &[9, 9, 9];
    let mut buf = [0u8; 128];
    let typ = MessageType::new(Method::ALLOCATE, Class::Error);
    let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([1; 12])).unwrap();
    e.push_password_algorithms(&[(1, &[]), (2, &[]), (0x77, params)])
        .unwrap();
    e.push_unknown_attributes(&[0x0031, 0x0032, 0x0033])
        .unwrap();
    let n = e.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    let Some(Ok(Attribute::PasswordAlgorithms(p))) = m.get(attr::PASSWORD_ALGORITHMS) else {
        panic!("no PASSWORD-ALGORITHMS");
    };
    let entries: Vec<(u16, &[u8])> = p.iter().map(|e| (e.algorithm, e.params)).collect();
    assert_eq!(entries, vec![(1, &[][..]), (2, &[][..]), (0x77, params)]);
    let Some(Ok(Attribute::UnknownAttributes(u))) = m.get(attr::UNKNOWN_ATTRIBUTES) else {
        panic!("no UNKNOWN-ATTRIBUTES");
    };
    assert_eq!(u.iter().collect::<Vec<_>>(), vec![0x0031, 0x0032, 0x0033]);
}

#[test]
fn limits_are_enforced_on_encode() {
    let long = "x".repeat(attr::MAX_USERNAME + 1);
    let text = "x".repeat(attr::MAX_TEXT + 1);
    let domain = "x".repeat(attr::MAX_DOMAIN + 1);
    let too_long = [
        Attribute::Username(&long),
        Attribute::Realm(&text),
        Attribute::Nonce(&text),
        Attribute::Software(&text),
        Attribute::AlternateDomain(&domain),
        Attribute::ErrorCode(ErrorCode {
            code: 700,
            reason: "",
        }),
        Attribute::ErrorCode(ErrorCode {
            code: 299,
            reason: "",
        }),
        Attribute::MessageIntegritySha256(&[0; 12]),
        Attribute::MessageIntegritySha256(&[0; 36]),
        Attribute::MessageIntegritySha256(&[0; 18]),
    ];
    for a in too_long {
        assert_eq!(a.value_len(), Err(Error::ValueTooLong), "{a:?}");
    }
    let big = vec![0u8; 65_532];
    assert_eq!(Attribute::Data(&big).value_len(), Err(Error::ValueTooLong));
}

#[test]
fn encoder_refuses_message_over_64k() {
    let chunk = vec![0u8; 40_000];
    let mut buf = vec![0u8; 100_000];
    let typ = MessageType::new(Method::SEND, Class::Indication);
    let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([0; 12])).unwrap();
    e.push(&Attribute::Data(&chunk)).unwrap();
    assert_eq!(e.push(&Attribute::Data(&chunk)), Err(Error::ValueTooLong));
    assert_eq!(e.len(), 20 + 4 + 40_000);
}

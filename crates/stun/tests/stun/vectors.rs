//! RFC 5769 §2.1–2.4 and RFC 8489 Appendix B.1: decode, verify, re-encode
//! byte for byte, and tamper.

use stun::attr::{self, Attribute};
use stun::integrity::{userhash, IntegrityError};
use stun::nonce::SecurityFeatures;
use stun::{Class, Key, Message, MessageEncoder, MessageType, Method, PasswordAlgorithm};

use crate::util::{self, LONG_TERM_PASSWORD, LONG_TERM_USER, REALM, SHORT_TERM_PASSWORD};

/// What a vector must decode to.
struct Expect {
    name: &'static str,
    class: Class,
    txid: [u8; 12],
    /// Attributes before the integrity/fingerprint attributes, in order.
    body: Vec<Attribute<'static>>,
    key: Key,
    mi: bool,
    mi256: bool,
    fp: bool,
    /// Padding byte the vector uses.
    padding: u8,
    /// Substrings the vector file's `params` line must contain, so that the
    /// values checked here are the ones the file documents.
    params_mention: &'static [&'static str],
}

const TXID_5769: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];
const TXID_LONG_TERM: [u8; 12] = [
    0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
];

fn expectations() -> Vec<Expect> {
    vec![
        Expect {
            name: "rfc5769-2.1-request",
            class: Class::Request,
            txid: TXID_5769,
            body: vec![
                Attribute::Software("STUN test client"),
                Attribute::Priority(0x6e00_01ff),
                Attribute::IceControlled(0x932f_f9b1_5126_3b36),
                Attribute::Username("evtj:h6vY"),
            ],
            key: util::short_term_key(),
            mi: true,
            mi256: false,
            fp: true,
            padding: 0x20,
            params_mention: &[
                "software=\"STUN test client\"",
                "username=\"evtj:h6vY\"",
                "password=\"VOkJxbRl1RmTxUk/WvJxBt\"",
                "PRIORITY 0x6e0001ff",
                "tie-breaker 0x932ff9b151263b36",
            ],
        },
        Expect {
            name: "rfc5769-2.2-ipv4-response",
            class: Class::Success,
            txid: TXID_5769,
            body: vec![
                Attribute::Software("test vector"),
                Attribute::XorMappedAddress("192.0.2.1:32853".parse().unwrap()),
            ],
            key: util::short_term_key(),
            mi: true,
            mi256: false,
            fp: true,
            padding: 0x20,
            params_mention: &[
                "software=\"test vector\"",
                "password=\"VOkJxbRl1RmTxUk/WvJxBt\"",
                "XOR-MAPPED-ADDRESS 192.0.2.1:32853",
            ],
        },
        Expect {
            name: "rfc5769-2.3-ipv6-response",
            class: Class::Success,
            txid: TXID_5769,
            body: vec![
                Attribute::Software("test vector"),
                Attribute::XorMappedAddress(
                    "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                        .parse()
                        .unwrap(),
                ),
            ],
            key: util::short_term_key(),
            mi: true,
            mi256: false,
            fp: true,
            padding: 0x20,
            params_mention: &[
                "software=\"test vector\"",
                "password=\"VOkJxbRl1RmTxUk/WvJxBt\"",
                "XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853",
            ],
        },
        Expect {
            name: "rfc5769-2.4-request-long-term",
            class: Class::Request,
            txid: TXID_LONG_TERM,
            body: vec![
                Attribute::Username(LONG_TERM_USER),
                Attribute::Nonce("f//499k954d6OL34oL9FSTvy64sA"),
                Attribute::Realm(REALM),
            ],
            key: util::long_term_key(),
            mi: true,
            mi256: false,
            fp: false,
            padding: 0,
            params_mention: &[
                r#"username="\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9""#,
                r#"password "The\u00ADM\u00AAtr\u2168""#,
                "nonce=\"f//499k954d6OL34oL9FSTvy64sA\"",
                "realm=\"example.org\"",
            ],
        },
        Expect {
            name: "rfc8489-b.1-request-long-term-sha256",
            class: Class::Request,
            txid: TXID_LONG_TERM,
            body: vec![
                Attribute::UserHash(userhash(LONG_TERM_USER, REALM)),
                Attribute::Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
                Attribute::Realm(REALM),
            ],
            // The file documents that B.1 carries no PASSWORD-ALGORITHM, so
            // the key is the MD5 long-term key.
            key: util::long_term_key(),
            mi: false,
            mi256: true,
            fp: false,
            padding: 0,
            params_mention: &[
                "nonce=\"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA\"",
                "key is MD5(username \":\" realm \":\" password)",
            ],
        },
    ]
}

#[test]
fn file_holds_exactly_the_expected_vectors() {
    let names: Vec<String> = util::vectors().into_iter().map(|v| v.name).collect();
    let want: Vec<&str> = expectations().iter().map(|e| e.name).collect();
    assert_eq!(names, want);
}

#[test]
fn vectors_decode_to_documented_values() {
    for e in expectations() {
        let v = util::vector(e.name);
        for s in e.params_mention {
            assert!(
                v.params.contains(s),
                "{}: params do not mention {s}",
                e.name
            );
        }
        let m = Message::parse(&v.bytes).unwrap_or_else(|err| panic!("{}: {err}", e.name));
        assert_eq!(m.class(), e.class, "{}", e.name);
        assert_eq!(m.method(), Method::BINDING, "{}", e.name);
        assert_eq!(m.message_type(), MessageType::new(Method::BINDING, e.class));
        assert_eq!(m.transaction_id().0, e.txid, "{}", e.name);
        assert_eq!(m.as_bytes(), &v.bytes[..]);

        let decoded: Vec<Attribute<'_>> = m.attributes().map(|a| a.unwrap()).collect();
        let (body, auth) = decoded.split_at(e.body.len());
        assert_eq!(body, &e.body[..], "{}", e.name);
        let auth_types: Vec<u16> = auth.iter().map(|a| a.typ()).collect();
        let mut want_types = Vec::new();
        if e.mi {
            want_types.push(attr::MESSAGE_INTEGRITY);
        }
        if e.mi256 {
            want_types.push(attr::MESSAGE_INTEGRITY_SHA256);
        }
        if e.fp {
            want_types.push(attr::FINGERPRINT);
        }
        assert_eq!(auth_types, want_types, "{}", e.name);
        for a in &e.body {
            assert_eq!(m.get(a.typ()), Some(Ok(*a)), "{}", e.name);
        }
        let mut unknown = [0u16; 4];
        assert_eq!(m.unknown_required(attr::is_known, &mut unknown), 0);

        assert_eq!(m.has_integrity(), e.mi, "{}", e.name);
        assert_eq!(m.has_integrity_sha256(), e.mi256, "{}", e.name);
        assert_eq!(m.has_fingerprint(), e.fp, "{}", e.name);
        let missing = Err(IntegrityError::Missing);
        let mi = m.verify_integrity(&e.key);
        assert_eq!(mi, if e.mi { Ok(()) } else { missing }, "{} MI", e.name);
        let mi256 = m.verify_integrity_sha256(&e.key);
        assert_eq!(
            mi256,
            if e.mi256 { Ok(()) } else { missing },
            "{} MI-SHA256",
            e.name
        );
        let fp = m.verify_fingerprint();
        assert_eq!(
            fp,
            if e.fp { Ok(()) } else { missing },
            "{} FINGERPRINT",
            e.name
        );

        let wrong = Key::short_term("not the password").unwrap();
        if e.mi {
            assert_eq!(m.verify_integrity(&wrong), Err(IntegrityError::Mismatch));
        }
        if e.mi256 {
            assert_eq!(
                m.verify_integrity_sha256(&wrong),
                Err(IntegrityError::Mismatch)
            );
        }
    }
}

#[test]
fn vectors_re_encode_byte_for_byte() {
    for e in expectations() {
        let v = util::vector(e.name);
        let mut buf = vec![0u8; 256];
        let typ = MessageType::new(Method::BINDING, e.class);
        let mut enc = MessageEncoder::new(&mut buf, typ, stun::TransactionId(e.txid)).unwrap();
        enc.set_padding(e.padding);
        for a in &e.body {
            enc.push(a).unwrap();
        }
        if e.mi {
            enc.message_integrity(&e.key).unwrap();
        }
        if e.mi256 {
            enc.message_integrity_sha256(&e.key).unwrap();
        }
        if e.fp {
            enc.fingerprint().unwrap();
        }
        let n = enc.finish();
        assert_eq!(hex::encode(&buf[..n]), hex::encode(&v.bytes), "{}", e.name);
    }
}

#[test]
fn saslprep_is_what_makes_the_long_term_key() {
    // RFC 5769 §2.4: the raw password prepares to "TheMatrIX".
    let raw = util::long_term_key();
    let prepared = Key::long_term(PasswordAlgorithm::Md5, LONG_TERM_USER, REALM, "TheMatrIX");
    assert_eq!(raw, prepared.unwrap());
    // Without SASLprep the key would differ and the vector would not verify.
    let v = util::vector("rfc5769-2.4-request-long-term");
    let m = Message::parse(&v.bytes).unwrap();
    let wrong = Key::long_term(PasswordAlgorithm::Md5, LONG_TERM_USER, REALM, "TheMatrix").unwrap();
    assert_eq!(m.verify_integrity(&wrong), Err(IntegrityError::Mismatch));
    assert_eq!(m.verify_integrity(&raw), Ok(()));
}

#[test]
fn short_term_key_is_the_password() {
    assert_eq!(
        util::short_term_key().as_bytes(),
        SHORT_TERM_PASSWORD.as_bytes()
    );
}

#[test]
fn b1_userhash_and_nonce_cookie() {
    let v = util::vector("rfc8489-b.1-request-long-term-sha256");
    let m = Message::parse(&v.bytes).unwrap();
    let Some(Ok(Attribute::UserHash(h))) = m.get(attr::USERHASH) else {
        panic!("no USERHASH");
    };
    assert_eq!(h, userhash(LONG_TERM_USER, REALM));
    assert_eq!(
        hex::encode(h),
        "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704"
    );
    let Some(Ok(Attribute::Nonce(n))) = m.get(attr::NONCE) else {
        panic!("no NONCE");
    };
    assert!(SecurityFeatures::from_nonce(n).is_some());
    // The SHA-256 long-term key does not verify B.1 (it is keyed with MD5).
    let sha = Key::long_term(
        PasswordAlgorithm::Sha256,
        LONG_TERM_USER,
        REALM,
        LONG_TERM_PASSWORD,
    );
    assert_eq!(
        m.verify_integrity_sha256(&sha.unwrap()),
        Err(IntegrityError::Mismatch)
    );
}

/// Whether `buf` fails to parse or fails one of the checks the original
/// vector passes.
fn detected(buf: &[u8], e: &Expect) -> bool {
    let Ok(m) = Message::parse(buf) else {
        return true;
    };
    (e.mi && m.verify_integrity(&e.key).is_err())
        || (e.mi256 && m.verify_integrity_sha256(&e.key).is_err())
        || (e.fp && m.verify_fingerprint().is_err())
}

#[test]
fn tampering_with_any_byte_is_detected() {
    for e in expectations() {
        let v = util::vector(e.name);
        assert!(!detected(&v.bytes, &e), "{}: original fails", e.name);
        for i in 0..v.bytes.len() {
            for mask in [0x01u8, 0x20, 0x80, 0xFF] {
                let mut t = v.bytes.clone();
                t[i] ^= mask;
                // Padding bytes are covered by MI and FINGERPRINT but are not
                // part of any value: a change is detected all the same.
                assert!(
                    detected(&t, &e),
                    "{}: byte {i} ^ {mask:#04x} undetected",
                    e.name
                );
            }
        }
    }
}

#[test]
fn tampered_fingerprint_and_integrity_values_mismatch() {
    for e in expectations() {
        let v = util::vector(e.name);
        let m = Message::parse(&v.bytes).unwrap();
        for (t, check) in [
            (attr::MESSAGE_INTEGRITY, 0),
            (attr::MESSAGE_INTEGRITY_SHA256, 1),
            (attr::FINGERPRINT, 2),
        ] {
            let Some(raw) = m.get_raw(t) else { continue };
            let mut b = v.bytes.clone();
            b[raw.offset + 4] ^= 1;
            let m2 = Message::parse(&b).unwrap();
            let r = match check {
                0 => m2.verify_integrity(&e.key),
                1 => m2.verify_integrity_sha256(&e.key),
                _ => m2.verify_fingerprint(),
            };
            assert_eq!(
                r,
                Err(IntegrityError::Mismatch),
                "{} {}",
                e.name,
                attr::name(t)
            );
        }
    }
}

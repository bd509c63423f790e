//! Malformed input: truncated, mutated, oversized, zero-length and random
//! bytes thrown at every parser. Nothing may panic, and invalid input must
//! be refused. All loops are bounded.

use stun::attr::{self, Attribute, RawAttribute};
use stun::framing::{frame_len, StreamDecoder};
use stun::integrity::IntegrityError;
use stun::{ChannelData, Error, Message, TransactionId, HEADER_LEN, MAGIC_COOKIE};

use crate::util::{self, exercise, Rng};

/// Invariants of anything `Message::parse` accepts.
fn check_accepted(buf: &[u8]) {
    if Message::parse(buf).is_ok() {
        assert!(buf.len() >= HEADER_LEN);
        assert_eq!(buf[0] & 0xC0, 0);
        assert_eq!(buf[4..8], MAGIC_COOKIE.to_be_bytes());
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        assert_eq!(len % 4, 0);
        assert_eq!(buf.len(), HEADER_LEN + len);
    }
}

fn header(len: u16) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    b[1] = 0x01;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    b[8..20].copy_from_slice(&[0x11; 12]);
    b
}

/// A message of one attribute with the given type, length field and value
/// bytes (padded to four).
fn one_attr(typ: u16, len_field: u16, value: &[u8]) -> Vec<u8> {
    let padded = (value.len() + 3) & !3;
    let mut b = header((4 + padded) as u16);
    b.extend_from_slice(&typ.to_be_bytes());
    b.extend_from_slice(&len_field.to_be_bytes());
    b.extend_from_slice(value);
    b.resize(HEADER_LEN + 4 + padded, 0);
    b
}

#[test]
fn truncated_prefixes_are_refused() {
    for (name, msg) in util::valid_messages() {
        assert!(exercise(&msg), "{name}: valid message refused");
        for n in 0..msg.len() {
            let p = &msg[..n];
            assert!(
                Message::parse(p).is_err(),
                "{name}: prefix of {n} bytes accepted"
            );
            exercise(p);
        }
        // Trailing bytes are refused too.
        let mut longer = msg.clone();
        for extra in 1..=8 {
            longer.push(0);
            assert!(
                Message::parse(&longer).is_err(),
                "{name}: +{extra} bytes accepted"
            );
        }
    }
}

#[test]
fn every_single_byte_mutation_is_handled() {
    for (name, msg) in util::valid_messages() {
        let small = msg.len() <= 200;
        for i in 0..msg.len() {
            let values: Vec<u8> = if small {
                (0..=255).collect()
            } else {
                let o = msg[i];
                vec![
                    0x00,
                    0xFF,
                    o ^ 0x01,
                    o ^ 0x02,
                    o ^ 0x04,
                    o ^ 0x10,
                    o ^ 0x40,
                    o ^ 0x80,
                ]
            };
            for v in values {
                let mut m = msg.clone();
                m[i] = v;
                exercise(&m);
                check_accepted(&m);
            }
        }
        let _ = name;
    }
}

#[test]
fn random_garbage() {
    let mut rng = Rng::new(0x5EED_0001);
    for _ in 0..20_000 {
        let n = rng.below(200);
        let b = rng.bytes(n);
        exercise(&b);
        check_accepted(&b);
    }
}

#[test]
fn random_bodies_behind_a_valid_header() {
    let mut rng = Rng::new(0x5EED_0002);
    for _ in 0..20_000 {
        let n = rng.below(60) * 4;
        let mut b = header(n as u16);
        b[0] = (rng.next_u64() as u8) & 0x3F;
        b.extend(rng.bytes(n));
        exercise(&b);
        check_accepted(&b);
    }
}

/// Well-formed attribute headers of known types with random short values:
/// reaches every value decoder.
#[test]
fn random_values_of_known_attributes() {
    let mut rng = Rng::new(0x5EED_0003);
    for _ in 0..20_000 {
        let mut body = Vec::new();
        for _ in 0..rng.below(6) {
            let typ = attr::KNOWN[rng.below(attr::KNOWN.len())].0;
            let len = match rng.below(4) {
                0 => rng.below(4),
                1 => [4, 8, 20, 32][rng.below(4)],
                _ => rng.below(40),
            };
            body.extend_from_slice(&typ.to_be_bytes());
            body.extend_from_slice(&(len as u16).to_be_bytes());
            body.extend(rng.bytes((len + 3) & !3));
        }
        let mut b = header(body.len() as u16);
        b.extend(body);
        let ok = exercise(&b);
        // The only framing error possible here is an attribute after FINGERPRINT.
        assert!(
            ok || Message::parse(&b).err() == Some(Error::AttributeAfterFingerprint),
            "well-formed framing refused: {}",
            hex::encode(&b)
        );
    }
}

#[test]
fn giant_length_fields() {
    // Header announcing 0xFFFC bytes, none present.
    assert_eq!(
        Message::parse(&header(0xFFFC)).err(),
        Some(Error::LengthMismatch)
    );
    // Largest length field, unaligned.
    assert_eq!(
        Message::parse(&header(0xFFFF)).err(),
        Some(Error::UnalignedLength)
    );
    // Attribute announcing 0xFFFF bytes in an 8-byte body.
    let b = one_attr(attr::DATA, 0xFFFF, &[1, 2, 3, 4]);
    assert_eq!(
        Message::parse(&b).err(),
        Some(Error::AttributeTruncated(attr::DATA))
    );
    // Attribute overflowing the message by 1..=4 bytes (after padding).
    for over in 1..=4u16 {
        let b = one_attr(attr::SOFTWARE, 8 + over, &[b'a'; 8]);
        assert_eq!(
            Message::parse(&b).err(),
            Some(Error::AttributeTruncated(attr::SOFTWARE)),
            "over by {over}"
        );
    }
    // A trailing partial attribute header.
    let mut b = header(4);
    b.extend_from_slice(&[0x80, 0x22, 0x00]);
    assert!(Message::parse(&b).is_err());
    // ChannelData announcing more than it carries.
    assert_eq!(
        ChannelData::parse(&[0x40, 0, 0xFF, 0xFF, 1]),
        Err(Error::TooShort)
    );
    // A stream frame announcing 64 KiB is refused on its header.
    let mut d = StreamDecoder::new(1500);
    d.push(&header(0xFFFC)).unwrap();
    assert!(matches!(d.next_frame(), Err(Error::FrameTooLarge(_))));
}

#[test]
fn attribute_after_fingerprint_is_refused() {
    let msg = util::allocate_request();
    let mut b = msg.clone();
    b.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = (b.len() - HEADER_LEN) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        Message::parse(&b).err(),
        Some(Error::AttributeAfterFingerprint)
    );
    // A second FINGERPRINT too.
    let mut b = msg.clone();
    b.extend_from_slice(&msg[msg.len() - 8..]);
    let len = (b.len() - HEADER_LEN) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        Message::parse(&b).err(),
        Some(Error::AttributeAfterFingerprint)
    );
}

#[test]
fn zero_length_everything() {
    let txid = TransactionId([0; 12]);
    // Empty input.
    assert_eq!(Message::parse(&[]).err(), Some(Error::TooShort));
    assert_eq!(ChannelData::parse(&[]), Err(Error::TooShort));
    assert_eq!(frame_len(&[]), Ok(None));
    let mut d = StreamDecoder::new(0);
    d.push(&[]).unwrap();
    assert_eq!(d.next_frame(), Ok(None));
    assert!(!stun::is_stun(&[]));
    assert_eq!(stun::classify(&[]), stun::PacketKind::Other);
    // An empty message and an empty ChannelData are valid.
    let empty = header(0);
    let m = Message::parse(&empty).unwrap();
    assert_eq!(m.attributes().count(), 0);
    assert_eq!(
        m.verify_integrity(&util::allocate_key()),
        Err(IntegrityError::Missing)
    );
    assert_eq!(
        m.verify_integrity_sha256(&util::allocate_key()),
        Err(IntegrityError::Missing)
    );
    assert_eq!(m.verify_fingerprint(), Err(IntegrityError::Missing));
    assert_eq!(ChannelData::parse(&[0x40, 0, 0, 0]).unwrap().data, b"");
    // Every known type with a zero-length value: parses, decodes to a value
    // only where the RFC allows an empty one, and is never verified.
    let empty_ok = [
        attr::USERNAME,
        attr::REALM,
        attr::NONCE,
        attr::SOFTWARE,
        attr::ALTERNATE_DOMAIN,
        attr::DATA,
        attr::DONT_FRAGMENT,
        attr::USE_CANDIDATE,
        attr::PASSWORD_ALGORITHMS,
        attr::UNKNOWN_ATTRIBUTES,
        // RFC 8016: an empty MOBILITY-TICKET asks for one.
        attr::MOBILITY_TICKET,
    ];
    for (typ, name) in attr::KNOWN {
        let b = one_attr(typ, 0, &[]);
        let m = Message::parse(&b).unwrap();
        let decoded = m.get(typ).unwrap();
        assert_eq!(
            decoded.is_ok(),
            empty_ok.contains(&typ),
            "{name}: {decoded:?}"
        );
        let raw = RawAttribute {
            typ,
            value: &[],
            offset: HEADER_LEN,
        };
        assert_eq!(
            Attribute::decode(raw, &txid).is_ok(),
            empty_ok.contains(&typ)
        );
        for key in util::keys() {
            assert!(m.verify_integrity(key).is_err(), "{name}");
            assert!(m.verify_integrity_sha256(key).is_err(), "{name}");
        }
        assert!(m.verify_fingerprint().is_err(), "{name}");
    }
}

#[test]
fn channel_data_malformed() {
    for msg in util::valid_channel_data() {
        let data_len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
        assert!(ChannelData::parse(&msg).is_ok());
        for n in 0..msg.len() {
            let r = ChannelData::parse(&msg[..n]);
            // Only the padding may be cut.
            assert_eq!(
                r.is_ok(),
                n >= 4 + data_len,
                "prefix {n} of {}",
                hex::encode(&msg)
            );
            exercise(&msg[..n]);
        }
        for i in 0..msg.len() {
            for v in 0..=255u8 {
                let mut m = msg.clone();
                m[i] = v;
                if let Ok(c) = ChannelData::parse(&m) {
                    assert!(stun::channel::is_rfc5766_channel(c.number));
                    assert!(m.len() - 4 - c.data.len() <= 3);
                }
                exercise(&m);
            }
        }
        let mut long = msg.clone();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(ChannelData::parse(&long), Err(Error::LengthMismatch));
    }
    // RFC 5766 channel numbers (0x4000–0x7FFF) are accepted, nothing else.
    for n in [0x0000u16, 0x0001, 0x3FFF, 0x8000, 0xBFFF, 0xC000, 0xFFFF] {
        let b = [(n >> 8) as u8, n as u8, 0, 0];
        assert_eq!(
            ChannelData::parse(&b),
            Err(Error::NotChannelData),
            "{n:#06x}"
        );
    }
    for n in [0x4000u16, 0x4FFF, 0x5000, 0x7FFF] {
        let b = [(n >> 8) as u8, n as u8, 0, 0];
        assert_eq!(ChannelData::parse(&b).map(|c| c.number), Ok(n), "{n:#06x}");
    }
}

#[test]
fn framing_of_garbage_and_prefixes() {
    let mut rng = Rng::new(0x5EED_0004);
    for (_, msg) in util::valid_messages() {
        for n in 0..msg.len() {
            let r = frame_len(&msg[..n]);
            if n < 4 {
                assert_eq!(r, Ok(None));
            } else {
                assert_eq!(r, Ok(Some((stun::FrameKind::Stun, msg.len()))));
            }
            let mut d = StreamDecoder::new(4096);
            d.push(&msg[..n]).unwrap();
            assert_eq!(d.next_frame(), Ok(None));
        }
    }
    for _ in 0..5_000 {
        let n = rng.below(3000);
        let stream = rng.bytes(n);
        let mut d = StreamDecoder::new(1 + rng.below(3000));
        let mut at = 0;
        'feed: while at < stream.len() {
            let chunk = 1 + rng.below(300);
            let end = (at + chunk).min(stream.len());
            if d.push(&stream[at..end]).is_err() {
                break;
            }
            at = end;
            // At most one frame per 4 bytes can come out.
            for _ in 0..=stream.len() / 4 {
                match d.next_frame() {
                    Ok(Some((_, f))) => assert!(f.len() >= 4),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}

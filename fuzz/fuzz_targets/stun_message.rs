//! `Message::parse`, every attribute decoded, MESSAGE-INTEGRITY(-SHA256) and
//! FINGERPRINT verified with a fixed key, then the decoded attributes
//! re-encoded and parsed again: they must come back equal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stun::attr::{self, Attribute};
use stun::{Key, Message, MessageEncoder};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(data) else {
        return;
    };
    let attrs: Vec<Attribute<'_>> = m.attributes().filter_map(Result::ok).collect();
    for (t, _) in attr::KNOWN {
        let _ = m.get(t);
    }
    let mut unknown = [0u16; 16];
    let _ = m.unknown_required(attr::is_known, &mut unknown);

    let key = Key::from_bytes(b"onionrtc-fuzz-key").unwrap();
    if m.verify_integrity(&key).is_ok() {
        assert!(matches!(
            m.get(attr::MESSAGE_INTEGRITY),
            Some(Ok(Attribute::MessageIntegrity(_)))
        ));
    }
    let _ = m.verify_integrity_sha256(&key);
    if m.verify_fingerprint().is_ok() {
        assert!(matches!(
            m.get(attr::FINGERPRINT),
            Some(Ok(Attribute::Fingerprint(_)))
        ));
    }

    // Re-encode what decoded. Values keep their length and padding never
    // grows, so the original size is enough.
    let mut buf = vec![0u8; data.len()];
    let mut e = MessageEncoder::new(&mut buf, m.message_type(), m.transaction_id()).unwrap();
    for a in &attrs {
        e.push(a).unwrap();
    }
    let n = e.finish();
    let m2 = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m2.message_type(), m.message_type());
    assert_eq!(m2.transaction_id(), m.transaction_id());
    let again: Vec<Attribute<'_>> = m2.attributes().map(Result::unwrap).collect();
    assert_eq!(again, attrs);
});

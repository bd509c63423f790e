//! `/.well-known/onionrtc.json` as the connector reads it from a site:
//! any bytes parse to a document or an error, never a panic; a document's
//! relay choices and onion site are computed without one, and every TURN
//! URL string parses or not without one.

#![no_main]

use connector::wellknown::{Document, TurnUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = Document::parse(data) {
        assert!(doc.pins.len() <= connector::wellknown::MAX_ENTRIES);
        let _ = doc.relay(true);
        let _ = doc.relay(false);
        let _ = doc.onion_web();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TurnUrl::parse(text);
    }
});

//! The plain-RTP media bridge's reading of a phone's SDP and of datagrams
//! (`signal::sip_media`) on arbitrary bytes: never a panic; what it writes
//! for the other phone names only the bridge's address (after the
//! sanitizer, as the server does), and the datagram check never accepts
//! more than the bridge forwards.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use signal::sanitize::Sanitizer;
use signal::sip_media::{declared_address, is_plain_rtp, point_at, rtp_like, MAX_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    if let Some(&first) = data.first() {
        if rtp_like(data) {
            assert!(data.len() >= 8 && data.len() <= MAX_DATAGRAM && first >> 6 == 2);
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_plain_rtp(text);
    let _ = declared_address(text);
    let Ok(clean) = Sanitizer::new(&[]).sdp(text) else {
        return;
    };
    let bridge: IpAddr = [198, 51, 100, 1].into();
    let out = point_at(&clean.sdp, bridge, 30_000);
    for line in out.lines() {
        if let Some(c) = line.strip_prefix("c=") {
            assert_eq!(c, "IN IP4 198.51.100.1", "{out}");
        }
    }
    // Nothing the phone wrote as an address survives but the bridge's.
    if let Some(addr) = declared_address(text) {
        if addr.ip() != bridge && !addr.ip().is_unspecified() {
            assert!(!out.contains(&format!("c=IN IP4 {}", addr.ip())), "{out}");
        }
    }
});

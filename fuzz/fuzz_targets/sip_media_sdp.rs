//! The plain-RTP media bridge's reading of a phone's SDP and of datagrams
//! (`signal::sip_media`), and the browser ↔ phone gateway's (its RTP
//! payload parser, `signal::sip_gateway`; the codec list and restriction
//! of `media::sdp`) on arbitrary bytes: never a panic; what the bridge
//! writes for the other phone names only the bridge's address (after the
//! sanitizer, as the server does), the datagram check never accepts more
//! than the bridge forwards, a payload lies inside its datagram, and a
//! restricted offer lists only what was kept.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use signal::sanitize::Sanitizer;
use signal::sip_gateway::rtp_payload;
use signal::sip_media::{declared_address, is_plain_rtp, point_at, rtp_like, MAX_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    if let Some(&first) = data.first() {
        if rtp_like(data) {
            assert!(data.len() >= 8 && data.len() <= MAX_DATAGRAM && first >> 6 == 2);
        }
    }
    if let Some((pt, _, payload)) = rtp_payload(data) {
        assert!(pt < 128 && payload.len() + 12 <= data.len());
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_plain_rtp(text);
    let _ = declared_address(text);
    let codecs = media::sdp::audio_codecs(text);
    if let Some(&(keep, _)) = codecs.first() {
        let restricted = media::sdp::restrict_audio(text, &[keep]);
        for (pt, _) in media::sdp::audio_codecs(&restricted) {
            assert_eq!(pt, keep, "{restricted}");
        }
    }
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

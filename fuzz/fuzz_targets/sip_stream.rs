//! SIP over TCP and UDP as `serve` reads it: a byte stream framed by
//! `signal::sip_net::next_frame` (CRLF keep-alives, Content-Length, the
//! size limit) into a B2BUA core whose connection is a UDP flow, and every
//! message it sends routed by `udp_destination`: never a panic, never a
//! frame longer than the input or the limit, never an address but the
//! flow's IP.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use signal::sip_net::{next_frame, udp_destination, Frame};
use sip::{Accounts, Algorithm, Config, Core, SdpFilter};

struct One;

impl Accounts for One {
    fn ha1(&self, user: &str, alg: Algorithm) -> Option<String> {
        Some(sip::digest::ha1(alg, user, "fuzz.test", "pw"))
    }
}

impl SdpFilter for One {
    fn filter(&self, sdp: &str) -> Option<String> {
        Some(sdp.to_string())
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let flow = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 5062);
    let mut core = Core::new(Config::new("fuzz.test"), now);
    core.connected_at(1, flow, "UDP", false, "198.51.100.1:5060");
    let mut outs = Vec::new();
    let mut rest = data;
    // Each step consumes at least one byte or stops.
    while !rest.is_empty() {
        match next_frame(rest) {
            Frame::Incomplete => break,
            Frame::Ping(k) | Frame::Skip(k) => {
                assert!(k > 0 && k <= rest.len());
                rest = &rest[k..];
            }
            Frame::Message(k) => {
                assert!(k > 0 && k <= rest.len() && k <= sip::MAX_MESSAGE_BYTES);
                outs.extend(core.receive(1, &rest[..k], now, &One, &One));
                rest = &rest[k..];
            }
            Frame::TooLarge(h) => {
                assert!(h <= rest.len());
                outs.extend(core.refused_too_large_head(1, &rest[..h]));
                break;
            }
            Frame::Broken(h) => {
                if let Some(h) = h {
                    assert!(h <= rest.len());
                    outs.extend(core.receive(1, &rest[..h], now, &One, &One));
                }
                break;
            }
        }
    }
    // The whole input as one datagram too.
    outs.extend(core.receive(1, data, now, &One, &One));
    outs.extend(core.tick(now));
    for o in &outs {
        assert_eq!(udp_destination(&o.data, flow).ip(), flow.ip());
    }
    let _ = udp_destination(data, flow);
});

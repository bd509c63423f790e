//! The connector's framing checks on arbitrary bytes: a browser datagram
//! turned into a stream frame, a relay frame inspected on its way to the
//! browser, and the answer to a redirect — never a panic, and a redirect
//! answer is a STUN message that carries no alternate server.

#![no_main]

use connector::frame;
use libfuzzer_sys::fuzz_target;
use stun::FrameKind;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = frame::datagram_to_stream(data, &mut out);
    let _ = frame::is_allocate_request(data);
    let _ = frame::is_binding_request(data);
    for kind in [FrameKind::Stun, FrameKind::ChannelData] {
        let _ = frame::inspect_from_relay(kind, data);
        let _ = frame::stream_to_datagram(kind, data);
    }
    if let Some(reply) = frame::redirect_refusal(data) {
        let msg = stun::Message::parse(&reply).expect("the refusal parses");
        assert!(msg
            .every_raw_attribute()
            .all(|a| a.typ != stun::attr::ALTERNATE_SERVER));
    }
});

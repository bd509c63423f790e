//! One SIP message from the network, parsed and re-serialized as the
//! server does, then fed to a B2BUA core: never a panic, whatever the bytes.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sip::{Accounts, Algorithm, Config, Core, Message, SdpFilter};

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
    if let Ok(m) = Message::parse(data) {
        let again = Message::parse(&m.to_bytes());
        assert!(again.is_ok(), "a serialized message must parse again");
    }
    let _ = sip::digest::Credentials::parse(&String::from_utf8_lossy(data));
    let now = Instant::now();
    let mut core = Core::new(Config::new("fuzz.test"), now);
    core.connected(1, IpAddr::V4(Ipv4Addr::LOCALHOST), "WSS", true);
    let _ = core.receive(1, data, now, &One, &One);
    let _ = core.tick(now);
});

//! The signaling server's SDP and candidate sanitizer on arbitrary text:
//! never a panic; what it forwards sanitizes to itself (idempotent), and
//! every candidate it forwards is a relay candidate inside the relay
//! networks with `raddr 0.0.0.0 rport 0`.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use signal::sanitize::Sanitizer;
use turn::policy::Cidr;

fn relays() -> Vec<Cidr> {
    ["203.0.113.0/24", "2001:db8::/32"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}

fn check_candidate(relays: &[Cidr], fields: &str) {
    let t: Vec<&str> = fields.split(' ').collect();
    assert!(t.len() >= 12, "{fields}");
    let ip: IpAddr = t[4]
        .parse()
        .expect("a forwarded candidate has an IP address");
    assert!(relays.iter().any(|c| c.contains(ip)), "{fields}");
    assert_eq!(
        &t[6..12],
        ["typ", "relay", "raddr", "0.0.0.0", "rport", "0"]
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let relays = relays();
    let s = Sanitizer::new(&relays);
    if mode % 2 == 0 {
        let Ok(once) = s.sdp(&text) else {
            return;
        };
        let twice = s.sdp(&once.sdp).expect("sanitized SDP is accepted again");
        assert_eq!(once.sdp, twice.sdp);
        for line in once.sdp.lines() {
            if let Some(fields) = line.strip_prefix("a=candidate:") {
                check_candidate(&relays, fields);
            }
        }
    } else if let Ok(c) = s.candidate(&text) {
        if let Some(fields) = c
            .strip_prefix("a=")
            .unwrap_or(&c)
            .strip_prefix("candidate:")
        {
            check_candidate(&relays, fields);
        }
        assert_eq!(s.candidate(&c).as_deref(), Ok(c.as_str()));
    }
});

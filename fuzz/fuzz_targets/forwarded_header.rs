//! The client address behind a trusted reverse proxy, from arbitrary
//! `X-Forwarded-For` values: never a panic, and never a trusted proxy's
//! address unless it is the peer itself (the header could not be read) or
//! the header named trusted proxies only (then the left-most is the client).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use signal::ForwardRule;

fuzz_target!(|data: &[u8]| {
    let trusted = ["127.0.0.0/8", "10.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let Ok(rule) = ForwardRule::new(trusted, "x-forwarded-for") else {
        return;
    };
    let mut headers = HeaderMap::new();
    for part in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append("x-forwarded-for", v);
        }
    }
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let got = rule.resolve(peer, &headers);
    let only_proxies = || {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .all(|t| address(t.trim()).is_some_and(|ip| rule.is_trusted(ip)))
    };
    assert!(
        got.ip == peer || !rule.is_trusted(got.ip) || only_proxies(),
        "{got:?}"
    );
});

/// One entry as proxies write it: `ip`, `[v6]`, `ip:port`, `[v6]:port`.
fn address(t: &str) -> Option<IpAddr> {
    t.parse::<IpAddr>()
        .ok()
        .or_else(|| t.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            t.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
}

//! Upstreams through a SOCKS5 proxy: `microsocks`, and a recording server
//! that shows per-flow credentials and remote name resolution.

use std::net::UdpSocket;
use std::time::Duration;

use connector::{RelayTrust, Via};

use crate::support::*;

#[test]
fn uclient_via_microsocks() {
    if !require_coturn() {
        return;
    }
    let Some(bin) = ensure_tool("microsocks", &["microsocks"]) else {
        return;
    };
    let relay = TestRelay::start();
    let (_peer, pport) = start_peer();
    let (_socks, socks_port) = start_microsocks(&bin);
    let rt = runtime();
    let mut c = tls_config(&relay);
    c.via = Via::parse(&format!("socks5://127.0.0.1:{socks_port}")).unwrap();
    let h = start(&rt, c);
    let port = h.turn_addr().port();
    assert_clean(
        uclient(port, pport, &["-c", "-n", "100", "-l", "120", "-z", "5"]),
        100,
    );
    assert_clean(
        uclient(
            port,
            pport,
            &["-c", "-m", "10", "-n", "20", "-l", "120", "-z", "5"],
        ),
        200,
    );
    let [udp, tcp, tls] = allocations(&relay);
    assert_eq!((udp, tcp), (0, 0));
    assert!(tls >= 11, "the allocations came through microsocks: {tls}");
    assert_eq!(h.stats().upstream_failures, 0);
    stop(&rt, h);
}

#[test]
fn fresh_credentials_per_flow_and_remote_dns() {
    let relay = TestRelay::start();
    let rt = runtime();
    let (socks, seen) = rt.block_on(recording_socks());
    // By name: the proxy must get "localhost", never a local lookup.
    let mut c = config(
        connector::Endpoint::parse_relay(&format!("tls://localhost:{}", relay.tls_port)).unwrap(),
    );
    c.relay_trust = RelayTrust::CaFile(relay.cert.clone());
    c.via = Via::parse(&format!("socks5://{socks}")).unwrap();
    // One upstream per flow: no race (racing is tested in measure.rs).
    c.circuits.race = Some(1);
    let h = start(&rt, c);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(probe(&a, h.turn_addr(), Duration::from_secs(10)));
    assert!(probe(&b, h.turn_addr(), Duration::from_secs(10)));
    assert!(probe(&a, h.turn_addr(), Duration::from_secs(10)));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one upstream per flow: {seen:?}");
    for r in &seen {
        assert!(r.domain, "{r:?}");
        assert_eq!(r.target, format!("localhost:{}", relay.tls_port));
        assert_eq!(r.username.len(), 32);
        assert_ne!(r.username, r.password);
    }
    assert_ne!(seen[0].username, seen[1].username, "one identity per flow");
    assert_eq!(h.stats().flows_current, 2);
    stop(&rt, h);
}

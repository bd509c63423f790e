//! The relay's certificate: an SPKI pin that matches works; a wrong pin,
//! or a certificate no root vouches for, fails the dial with a clear error
//! and nothing reaches the relay.

use std::net::UdpSocket;
use std::time::Duration;

use connector::RelayTrust;

use crate::support::*;

#[test]
fn matching_pin_works() {
    let relay = TestRelay::start();
    let rt = runtime();
    let mut c = config(relay.tls_endpoint());
    c.relay_trust = RelayTrust::parse_spki(&relay.spki()).unwrap();
    let h = start(&rt, c);
    rt.block_on(h.probe_relay()).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(probe(&sock, h.turn_addr(), Duration::from_secs(10)));
    stop(&rt, h);
}

#[test]
fn wrong_pin_refused() {
    let relay = TestRelay::start();
    let rt = runtime();
    let mut c = config(relay.tls_endpoint());
    c.relay_trust = RelayTrust::SpkiSha256([7; 32]);
    let h = start(&rt, c);
    let err = rt.block_on(h.probe_relay()).unwrap_err();
    assert!(err.is_certificate(), "{err}");
    let text = err.to_string();
    assert!(text.contains("--relay-spki"), "{text}");
    assert!(text.contains(&relay.spki()), "names the key it saw: {text}");
    // A client gets nothing, and the relay sees no TURN message.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(!probe(&sock, h.turn_addr(), Duration::from_secs(2)));
    let s = h.stats();
    assert!(s.upstream_failures >= 2, "{s:?}");
    assert_eq!(s.payload_down, 0, "{s:?}");
    assert_eq!(allocations(&relay), [0, 0, 0]);
    stop(&rt, h);
}

#[test]
fn self_signed_refused_without_ca() {
    let relay = TestRelay::start();
    let rt = runtime();
    // Mozilla's roots do not vouch for a self-signed certificate.
    let h = start(&rt, config(relay.tls_endpoint()));
    let err = rt.block_on(h.probe_relay()).unwrap_err();
    assert!(err.is_certificate(), "{err}");
    stop(&rt, h);
    // Another CA's certificate does not vouch for it either.
    let dir = tempfile::tempdir().unwrap();
    let (other, _) = write_cert(dir.path(), "other");
    let mut c = config(relay.tls_endpoint());
    c.relay_trust = RelayTrust::CaFile(other);
    let h = start(&rt, c);
    let err = rt.block_on(h.probe_relay()).unwrap_err();
    assert!(err.is_certificate(), "{err}");
    stop(&rt, h);
}

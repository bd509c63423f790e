//! Flow lifecycle: idle flows close; a stalled upstream is found dead and
//! dialled again; a closed upstream is dialled again on the next datagram
//! (at once after an authenticated allocation); garbage is dropped without
//! harming the flow. The relay is reached
//! through a proxy the test can stall or cut.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::support::*;

const ANSWER: Duration = Duration::from_secs(5);

#[test]
fn idle_flow_closes() {
    let relay = TestRelay::start();
    let rt = runtime();
    let mut c = config(relay.tcp_endpoint());
    c.limits.idle_timeout = Duration::from_millis(800);
    let h = start(&rt, c);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(probe(&sock, h.turn_addr(), ANSWER));
    assert_eq!(h.stats().flows_current, 1);
    // Traffic keeps it open.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        assert!(probe(&sock, h.turn_addr(), ANSWER));
    }
    assert_eq!(h.stats().flows_total, 1);
    // Silence closes it.
    assert!(eventually(Duration::from_secs(5), || h
        .stats()
        .flows_current
        == 0));
    let s = h.stats();
    assert_eq!(s.idle_closed, 1, "{s:?}");
    // The relay's connection went with it.
    assert!(eventually(Duration::from_secs(5), || {
        relay.handle().metrics().totals().1.connections_current[0] == 0
    }));
    // The same client is a new flow.
    assert!(probe(&sock, h.turn_addr(), ANSWER));
    assert_eq!(h.stats().flows_total, 2);
    stop(&rt, h);
}

#[test]
fn stalled_upstream_redialled() {
    let relay = TestRelay::start();
    let rt = runtime();
    let proxy = rt.block_on(CutProxy::start(SocketAddr::from((
        [127, 0, 0, 1],
        relay.port,
    ))));
    let mut c = config(connector::Endpoint::parse_relay(&format!("tcp://{}", proxy.addr)).unwrap());
    c.limits.dead_timeout = Duration::from_millis(700);
    let h = start(&rt, c);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(probe(&sock, h.turn_addr(), ANSWER));
    assert_eq!(proxy.connections(), 1);
    // The path goes silent without closing (a stalled circuit).
    proxy.stall();
    assert!(!probe(&sock, h.turn_addr(), Duration::from_millis(300)));
    assert!(eventually(Duration::from_secs(5), || h.stats().redials == 1));
    let s = h.stats();
    assert_eq!(s.dead_upstreams, 1, "{s:?}");
    assert_eq!(s.flows_current, 1, "{s:?}");
    assert!(eventually(Duration::from_secs(5), || proxy.connections() == 2));
    // The new upstream answers.
    assert!(probe(&sock, h.turn_addr(), ANSWER));
    let s = h.stats();
    assert_eq!(
        (s.redials, s.dead_upstreams, s.flows_total),
        (1, 1, 1),
        "{s:?}"
    );
    stop(&rt, h);
}

#[test]
fn closed_upstream_redialled_on_next_datagram() {
    let relay = TestRelay::start();
    let rt = runtime();
    let proxy = rt.block_on(CutProxy::start(SocketAddr::from((
        [127, 0, 0, 1],
        relay.port,
    ))));
    let c = config(connector::Endpoint::parse_relay(&format!("tcp://{}", proxy.addr)).unwrap());
    let h = start(&rt, c);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // An authenticated allocation: the first re-dial after it is not held
    // back.
    assert!(allocate(&sock, h.turn_addr(), ANSWER));
    // The flow learns it from the relay's answer, just after the client.
    assert!(eventually(Duration::from_secs(2), || h
        .stats()
        .flows_pending
        == 0));
    proxy.cut();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.stats().redials, 0, "no datagram yet, no dial");
    // The datagram that finds the stream closed is carried by the new one.
    assert!(probe(&sock, h.turn_addr(), ANSWER));
    let s = h.stats();
    assert_eq!((s.redials, s.flows_current), (1, 1), "{s:?}");
    assert_eq!(proxy.connections(), 2);
    stop(&rt, h);
}

#[test]
fn garbage_dropped_flow_survives() {
    let relay = TestRelay::start();
    let rt = runtime();
    let h = start(&rt, config(relay.tcp_endpoint()));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Garbage first, or a STUN Binding: no flow, no dial, no answer.
    sock.send_to(b"GET / HTTP/1.1\r\n\r\n", h.turn_addr())
        .unwrap();
    assert!(!binding_answered(
        &sock,
        h.turn_addr(),
        Duration::from_millis(300)
    ));
    assert_eq!(h.stats().flows_total, 0);
    assert_eq!(h.stats().not_allocate, 1);
    assert!(probe(&sock, h.turn_addr(), ANSWER));
    // Garbage inside the flow: dropped, the stream stays in sync.
    for bad in [
        &[0x80u8, 0, 0, 0][..],
        &[0, 1, 0, 3, 0, 0, 0],
        &[0x40, 0, 0, 9, 1],
    ] {
        sock.send_to(bad, h.turn_addr()).unwrap();
    }
    assert!(probe(&sock, h.turn_addr(), ANSWER));
    let s = h.stats();
    assert_eq!((s.flows_total, s.redials), (1, 0), "{s:?}");
    assert_eq!(s.dropped, 4, "{s:?}");
    stop(&rt, h);
}

#[test]
fn flow_limit() {
    let relay = TestRelay::start();
    let rt = runtime();
    let mut c = config(relay.tcp_endpoint());
    c.limits.max_flows = 2;
    let h = start(&rt, c);
    let socks: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    assert!(probe(&socks[0], h.turn_addr(), ANSWER));
    assert!(probe(&socks[1], h.turn_addr(), ANSWER));
    assert!(!probe(&socks[2], h.turn_addr(), Duration::from_millis(500)));
    assert_eq!(h.stats().flows_current, 2);
    stop(&rt, h);
}

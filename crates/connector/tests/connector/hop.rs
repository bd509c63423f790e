//! Circuit racing and hopping: a flow's first Allocate raced on several
//! upstreams (the first answer kept, the others closed), a stalled
//! upstream reported once on `/connector/events` (same origin only), its
//! figures on `/connector/flows`, spares dialled for the restart's flows.
//! The relay is our own, reached through a proxy the test can stall.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::support::*;

const ANSWER: Duration = Duration::from_secs(5);

/// A GET to the connector's web listener; the status and what arrived
/// (headers and body) within `wait`, or until `until` appears in it.
fn get(web: SocketAddr, path: &str, extra: &str, until: &str, wait: Duration) -> (u16, String) {
    let mut s = TcpStream::connect(web).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {web}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !until.is_empty() && String::from_utf8_lossy(&got).contains(until) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A connector to `relay` through a fresh stall-able proxy, with the web
/// listener on (its site is never reached by these tests) and `race`.
fn hop_connector(
    rt: &tokio::runtime::Runtime,
    relay: &TestRelay,
    race: usize,
) -> (CutProxy, connector::Handle) {
    let proxy = rt.block_on(CutProxy::start(SocketAddr::from((
        [127, 0, 0, 1],
        relay.port,
    ))));
    let mut c = config(connector::Endpoint::parse_relay(&format!("tcp://{}", proxy.addr)).unwrap());
    c.web = Some(connector::Endpoint::parse_web("http://127.0.0.1:9").unwrap());
    c.circuits.race = Some(race);
    c.circuits.stall = Duration::from_millis(400);
    (proxy, start(rt, c))
}

#[test]
fn race_keeps_the_first_answer() {
    let relay = TestRelay::start();
    let rt = runtime();
    let (proxy, h) = hop_connector(&rt, &relay, 3);
    assert_eq!(h.race(), 3);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The 401 came on the winner; the authenticated Allocate (with the
    // winner's nonce) succeeds on it.
    assert!(allocate(&sock, h.turn_addr(), ANSWER));
    let s = h.stats();
    assert_eq!((s.races, s.race_losers), (1, 2), "{s:?}");
    assert_eq!(proxy.connections(), 3);
    // The losers are closed: the relay keeps one connection.
    assert!(eventually(Duration::from_secs(5), || {
        relay.handle().metrics().totals().1.connections_current[0] == 1
    }));
    assert_eq!(allocations(&relay).iter().sum::<u64>(), 1);
    let flows = h.flows();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(
        (f.raced, f.transport, f.allocated),
        (3, "udp", true),
        "{f:?}"
    );
    assert!(f.setup_ms.is_some_and(|ms| ms > 0.0), "{f:?}");
    // The race's answer and the authenticated Allocate: two RTT samples.
    assert!(f.rtt_samples >= 2, "{f:?}");
    // The JSON of the web listener says the same.
    let web = h.web_addr().unwrap();
    let (status, text) = get(web, "/connector/flows", "", "", Duration::from_secs(2));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"raced\":3"), "{text}");
    stop(&rt, h);
}

#[test]
fn no_race_is_one_upstream() {
    let relay = TestRelay::start();
    let rt = runtime();
    let (proxy, h) = hop_connector(&rt, &relay, 1);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(allocate(&sock, h.turn_addr(), ANSWER));
    let s = h.stats();
    assert_eq!((s.races, s.race_losers), (0, 0), "{s:?}");
    assert_eq!(proxy.connections(), 1);
    assert_eq!(h.flows()[0].raced, 1);
    stop(&rt, h);
}

#[test]
fn stall_is_told_to_the_page_once() {
    let relay = TestRelay::start();
    let rt = runtime();
    let (proxy, h) = hop_connector(&rt, &relay, 2);
    let web = h.web_addr().unwrap();
    // Another site's page may not listen (nor read the figures).
    for extra in [
        "Origin: http://evil.example\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
    ] {
        for path in ["/connector/events", "/connector/flows"] {
            let (status, text) = get(web, path, extra, "", Duration::from_secs(2));
            assert_eq!(status, 403, "{path} {extra}: {text}");
        }
    }
    // The page listens (same origin).
    let events = std::thread::spawn(move || {
        get(
            web,
            "/connector/events",
            &format!("Origin: http://{web}\r\nSec-Fetch-Site: same-origin\r\n"),
            "event: degraded",
            Duration::from_secs(20),
        )
    });
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(allocate(&sock, h.turn_addr(), ANSWER));
    // A quiet flow is not stalled.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(h.stats().flows_degraded, 0);
    // The circuit goes silent; the client keeps sending.
    proxy.stall();
    let connections = proxy.connections();
    assert!(!probe(&sock, h.turn_addr(), Duration::from_millis(300)));
    assert!(eventually(Duration::from_secs(5), || h
        .stats()
        .flows_degraded
        == 1));
    let (status, text) = events.join().unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(
        text.contains("event: degraded\ndata: {\"flow\":1,\"reason\":\"stall\"}"),
        "{text}"
    );
    let f = &h.flows()[0];
    assert_eq!((f.degraded, f.stalls), (Some("stall"), 1), "{f:?}");
    // Spares are dialled for the ICE restart's flows (as many as the race
    // width), and a new flow starts on them.
    assert!(eventually(Duration::from_secs(5), || h
        .stats()
        .spares_built
        == 2));
    assert_eq!(proxy.connections(), connections + 2);
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(allocate(&other, h.turn_addr(), ANSWER));
    let s = h.stats();
    assert_eq!(s.spares_used, 2, "{s:?}");
    // Reported once, however long it stays stalled.
    for _ in 0..3 {
        let _ = probe(&sock, h.turn_addr(), Duration::from_millis(200));
    }
    assert_eq!(h.stats().flows_degraded, 1);
    stop(&rt, h);
}

#[test]
fn lost_upstream_under_an_allocation_is_told() {
    let relay = TestRelay::start();
    let rt = runtime();
    let (proxy, h) = hop_connector(&rt, &relay, 1);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Before an allocation, a closed upstream is not the page's business.
    assert!(probe(&sock, h.turn_addr(), ANSWER));
    proxy.cut();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.stats().flows_degraded, 0);
    // Under one (the relay bound it to the stream), it is: once.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(allocate(&other, h.turn_addr(), ANSWER));
    proxy.cut();
    assert!(eventually(Duration::from_secs(5), || h
        .stats()
        .flows_degraded
        == 1));
    let degraded: Vec<_> = h.flows().into_iter().filter_map(|f| f.degraded).collect();
    assert_eq!(degraded, ["closed"]);
    // No race, no spares.
    assert_eq!(h.stats().spares_built, 0);
    stop(&rt, h);
}

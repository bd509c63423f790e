//! What a web page can do to the connector. Any page, from any origin and
//! without a permission prompt, can make the browser's ICE agent send STUN
//! and TURN to `127.0.0.1:3479`; and a hostile relay (or a Tor exit on a
//! tcp:// upstream) can answer whatever it likes. Here: a STUN Binding
//! opens nothing and gets no answer (UDP and TCP); flows that are not
//! authenticated have their own cap and close after `auth_timeout`, while
//! the user's authenticated flow keeps working; a relay that accepts and
//! closes gets a handful of re-dials, not one per datagram; a redirect
//! never reaches the client (it gets the connector's 300 without an
//! alternate); slow web
//! clients are cut by the header timeout. The browser side is in
//! `chromium.rs`.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use stun::{attr, Class, Message, Method};

use crate::support::*;

const ANSWER: Duration = Duration::from_secs(5);

#[test]
fn binding_opens_nothing() {
    let relay = TestRelay::start();
    let rt = runtime();
    let h = start(&rt, config(relay.tcp_endpoint()));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        assert!(!binding_answered(
            &sock,
            h.turn_addr(),
            Duration::from_millis(300)
        ));
    }
    // Over TCP: the connection is closed, unanswered.
    let mut tcp = TcpStream::connect(h.turn_addr()).unwrap();
    tcp.set_read_timeout(Some(ANSWER)).unwrap();
    tcp.write_all(&stun_request(Method::BINDING).0).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(tcp.read(&mut buf), Ok(0) | Err(_)));
    let s = h.stats();
    assert_eq!((s.not_allocate, s.flows_total), (4, 1), "{s:?}");
    assert_eq!(s.bytes_up, 0, "nothing dialled: {s:?}");
    assert_eq!(
        relay.handle().metrics().totals().1.connections_current[0],
        0
    );
    // Negative control: an Allocate is carried (the relay answers 401).
    assert!(probe(&sock, h.turn_addr(), ANSWER));
    // A Binding inside that flow is not (the relay would answer it).
    assert!(!binding_answered(
        &sock,
        h.turn_addr(),
        Duration::from_millis(300)
    ));
    assert_eq!(h.stats().not_allocate, 5);
    let mut tcp = TcpStream::connect(h.turn_addr()).unwrap();
    tcp.set_read_timeout(Some(ANSWER)).unwrap();
    tcp.write_all(&stun_request(Method::ALLOCATE).0).unwrap();
    let n = tcp.read(&mut buf).unwrap();
    assert!(n >= 20, "an answer over TCP");
    stop(&rt, h);
}

#[test]
fn unauthenticated_flows_are_capped_and_closed() {
    let relay = TestRelay::start();
    let rt = runtime();
    let mut c = config(relay.tcp_endpoint());
    c.limits.max_pending_flows = 4;
    c.limits.auth_timeout = Duration::from_secs(3);
    let h = start(&rt, c);
    // The user's flow: authenticated, so it holds no pending place.
    let user = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(allocate(&user, h.turn_addr(), ANSWER));
    assert!(eventually(Duration::from_secs(2), || h
        .stats()
        .flows_pending
        == 0));
    // A page's flood: Allocates without (or with wrong) credentials.
    let page: Vec<UdpSocket> = (0..10)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for s in &page {
        s.send_to(&stun_request(Method::ALLOCATE).0, h.turn_addr())
            .unwrap();
    }
    let answered_page = page
        .iter()
        .filter(|s| recv_stun(s, Duration::from_millis(200)).is_some())
        .count();
    let s = h.stats();
    assert_eq!(answered_page, 4, "{s:?}");
    assert_eq!((s.flows_pending, s.pending_refused), (4, 6), "{s:?}");
    // The user's flow still works meanwhile.
    assert!(probe(&user, h.turn_addr(), ANSWER));
    // The page's flows close after auth_timeout; the user's stays.
    assert!(eventually(Duration::from_secs(5), || h
        .stats()
        .unauthenticated_closed
        == 4));
    let s = h.stats();
    assert_eq!((s.flows_pending, s.flows_current), (0, 1), "{s:?}");
    assert!(eventually(Duration::from_secs(5), || {
        relay.handle().metrics().totals().1.connections_current[0] == 1
    }));
    assert!(probe(&user, h.turn_addr(), ANSWER));
    // A new user flow gets a place again.
    let user2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(allocate(&user2, h.turn_addr(), ANSWER));
    stop(&rt, h);
}

#[test]
fn accept_and_close_relay_gets_few_redials() {
    let rt = runtime();
    let fake = rt.block_on(FakeRelay::start(FakeMode::Close));
    let h = start(&rt, config(fake.endpoint()));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A client retransmitting every 10 ms for 5 s (500 datagrams).
    let began = Instant::now();
    let mut sent = 0;
    while began.elapsed() < Duration::from_secs(5) && sent < 600 {
        sock.send_to(&stun_request(Method::ALLOCATE).0, h.turn_addr())
            .unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = h.stats();
    eprintln!(
        "accept-and-close relay: {sent} datagrams in {:?} -> {} connections, {} re-dials, \
         {} held back",
        began.elapsed(),
        fake.accepted(),
        s.redials,
        s.redials_suppressed
    );
    // 0.5 + 1 + 2 s of back-off fit in 5 s: 3 re-dials, 4 with timing slack.
    assert!(s.redials <= 5, "{s:?}");
    assert!(fake.accepted() <= 6, "{} connections", fake.accepted());
    assert!(s.redials >= 2, "it does re-dial: {s:?}");
    assert!(s.redials_suppressed > 300, "{s:?}");
    stop(&rt, h);
}

/// The answer to an Allocate through a connector whose relay redirects.
fn assert_refused_redirect(reply: &[u8]) {
    let m = Message::parse(reply).unwrap();
    assert_eq!((m.method(), m.class()), (Method::ALLOCATE, Class::Error));
    assert!(matches!(
        m.get(attr::ERROR_CODE),
        Some(Ok(attr::Attribute::ErrorCode(attr::ErrorCode {
            code: 300,
            ..
        })))
    ));
    assert!(m
        .every_raw_attribute()
        .all(|a| a.typ != attr::ALTERNATE_SERVER && a.typ != attr::ALTERNATE_DOMAIN));
}

#[test]
fn redirects_never_reach_the_client() {
    let rt = runtime();
    let alternate = "192.0.2.99:3478".parse().unwrap();
    let fake = rt.block_on(FakeRelay::start(FakeMode::Redirect(alternate)));
    let h = start(&rt, config(fake.endpoint()));
    // UDP.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (req, id) = stun_request(Method::ALLOCATE);
    sock.send_to(&req, h.turn_addr()).unwrap();
    let reply = recv_stun(&sock, ANSWER).expect("an answer");
    assert_eq!(Message::parse(&reply).unwrap().transaction_id(), id);
    assert_refused_redirect(&reply);
    // TCP.
    let mut tcp = TcpStream::connect(h.turn_addr()).unwrap();
    tcp.set_read_timeout(Some(ANSWER)).unwrap();
    tcp.write_all(&stun_request(Method::ALLOCATE).0).unwrap();
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while got.len() < 20 || got.len() < 20 + usize::from(u16::from_be_bytes([got[2], got[3]])) {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "closed before an answer");
        got.extend_from_slice(&buf[..n]);
    }
    assert_refused_redirect(&got);
    assert_eq!(h.stats().redirects_blocked, 2);
    // Negative control: straight to the fake relay, the redirect is there.
    let mut direct = TcpStream::connect(fake.addr).unwrap();
    direct.set_read_timeout(Some(ANSWER)).unwrap();
    direct.write_all(&stun_request(Method::ALLOCATE).0).unwrap();
    let n = direct.read(&mut buf).unwrap();
    let m = Message::parse(&buf[..n]).unwrap();
    assert!(matches!(
        m.get(attr::ALTERNATE_SERVER),
        Some(Ok(attr::Attribute::AlternateServer(a))) if a == alternate
    ));
    stop(&rt, h);
}

#[test]
fn slow_web_clients_are_cut() {
    let rt = runtime();
    let mut c = config(connector::Endpoint::parse_relay("tcp://127.0.0.1:9").unwrap());
    c.web = Some(connector::Endpoint::parse_web("http://127.0.0.1:9").unwrap());
    c.limits.max_web_connections = 3;
    c.limits.web_header_timeout = Duration::from_millis(800);
    let h = start(&rt, c);
    let web = h.web_addr().unwrap();
    // Three slow clients take every slot: one byte, then nothing.
    let mut slow: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(web).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A fourth is refused (closed at once).
    let mut fourth = TcpStream::connect(web).unwrap();
    fourth.set_read_timeout(Some(ANSWER)).unwrap();
    let _ = fourth.write_all(b"GET /connector.json HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 512];
    assert!(matches!(fourth.read(&mut buf), Ok(0) | Err(_)));
    assert!(eventually(Duration::from_secs(2), || h.stats().web_refused >= 1));
    // The header timeout closes the slow ones and frees their slots.
    for s in &mut slow {
        s.set_read_timeout(Some(ANSWER)).unwrap();
        let began = Instant::now();
        let _ = s.read(&mut buf);
        assert!(began.elapsed() < Duration::from_secs(4));
    }
    assert!(eventually(Duration::from_secs(2), || h
        .stats()
        .web_header_timeouts
        == 3));
    let mut ok = TcpStream::connect(web).unwrap();
    ok.set_read_timeout(Some(ANSWER)).unwrap();
    write!(
        ok,
        "GET /connector.json HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = ok.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    stop(&rt, h);
}

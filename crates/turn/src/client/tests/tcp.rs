//! RFC 6062: Connect, ConnectionAttempt and ConnectionBind.

use super::*;

fn tcp_config() -> ClientConfig {
    let mut cfg = config(Transport::Tcp);
    cfg.requested_transport = RequestedTransport::Tcp;
    cfg
}

#[test]
fn tcp_allocation_asks_for_protocol_6() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(tcp_config(), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    let m = Message::parse(&req).unwrap();
    assert_eq!(
        get(&m, attr::REQUESTED_TRANSPORT),
        Attribute::RequestedTransport(6)
    );
}

#[test]
fn connect_success_and_failure() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(tcp_config(), &srv);
    let peer = peer_addr();
    assert_eq!(c.send_to(t0, peer, b"x"), Err(ClientError::WrongTransport));
    assert_eq!(c.bind_channel(t0, peer), Err(ClientError::WrongTransport));

    c.connect(t0, peer).unwrap();
    let req = srv.expect_request(&mut c, Method::CONNECT);
    srv.check_authenticated(&req);
    let m = Message::parse(&req).unwrap();
    assert_eq!(
        get(&m, attr::XOR_PEER_ADDRESS),
        Attribute::XorPeerAddress(peer)
    );
    deliver(
        &mut c,
        t0,
        &srv.success(&req, &[Attribute::ConnectionId(0xDEAD_BEEF)]),
    );
    assert_eq!(
        events(&mut c),
        [Event::ConnectionCreated {
            peer,
            connection_id: 0xDEAD_BEEF
        }]
    );

    c.connect(t0, peer).unwrap();
    let req = srv.expect_request(&mut c, Method::CONNECT);
    deliver(&mut c, t0, &srv.error(&req, 447, Mi::Valid));
    assert_eq!(events(&mut c), [Event::ConnectFailed { peer, code: 447 }]);
}

#[test]
fn connect_needs_a_tcp_allocation() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Tcp), &srv);
    assert_eq!(c.connect(t0, peer_addr()), Err(ClientError::WrongTransport));
}

#[test]
fn connection_attempt_indication() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(tcp_config(), &srv);
    let mut buf = vec![0u8; 128];
    let typ = MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication);
    let mut enc = MessageEncoder::new(&mut buf, typ, stun::TransactionId([1; 12])).unwrap();
    enc.push(&Attribute::XorPeerAddress(peer_addr())).unwrap();
    enc.push(&Attribute::ConnectionId(42)).unwrap();
    let n = enc.finish();
    deliver(&mut c, t0, &buf[..n]);
    assert_eq!(
        events(&mut c),
        [Event::ConnectionAttempt {
            peer: peer_addr(),
            connection_id: 42
        }]
    );
}

#[test]
fn connection_bind_request_and_response() {
    let srv = FakeServer::new();
    let (mut c, _t0) = allocated(tcp_config(), &srv);
    let req = c.connection_bind_request(42).unwrap();
    let m = Message::parse(&req).unwrap();
    assert_eq!(
        m.message_type(),
        MessageType::new(Method::CONNECTION_BIND, Class::Request)
    );
    assert_eq!(get(&m, attr::CONNECTION_ID), Attribute::ConnectionId(42));
    m.verify_fingerprint().unwrap();
    srv.check_authenticated(&req);

    // Forged or unauthenticated answers are refused.
    let forged = srv.respond(&req, Class::Success, &[], Mi::Wrong);
    assert_eq!(
        c.parse_connection_bind_response(&forged),
        Err(ClientError::NotAuthentic)
    );
    let mut other = srv.success(&req, &[]);
    other[8] ^= 1;
    assert!(c.parse_connection_bind_response(&other).is_err());
    assert!(matches!(
        c.parse_connection_bind_response(&[1, 2, 3]),
        Err(ClientError::Malformed(_))
    ));
    assert_eq!(
        c.parse_connection_bind_response(&srv.success(&req, &[])),
        Ok(())
    );
    // A response is used once.
    assert_eq!(
        c.parse_connection_bind_response(&srv.success(&req, &[])),
        Err(ClientError::NotAuthentic)
    );
}

#[test]
fn connection_bind_stale_nonce_updates_the_nonce() {
    let mut srv = FakeServer::new();
    let (mut c, _t0) = allocated(tcp_config(), &srv);
    let req = c.connection_bind_request(7).unwrap();
    srv.nonce = "newer".into();
    assert_eq!(
        c.parse_connection_bind_response(&srv.challenge_with(&req, 438)),
        Err(ClientError::ConnectionBindFailed(438))
    );
    let req = c.connection_bind_request(7).unwrap();
    srv.check_authenticated(&req);
    assert_eq!(
        c.parse_connection_bind_response(&srv.error(&req, 446, Mi::Valid)),
        Err(ClientError::ConnectionBindFailed(446))
    );
}

#[test]
fn connection_bind_needs_an_allocation() {
    let t0 = Instant::now();
    let mut c = Client::new(tcp_config(), t0);
    assert_eq!(c.connection_bind_request(1), Err(ClientError::NotAllocated));
}

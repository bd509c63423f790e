//! Long-term credentials, nonces, integrity checks and failure codes.

use super::*;

#[test]
fn challenge_then_authenticated_allocate() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut cfg = config(Transport::Udp);
    cfg.software = Some("onionrtc-test".into());
    let mut c = Client::new(cfg, t0);
    c.allocate(t0).unwrap();
    assert_eq!(c.state(), ClientState::Allocating);

    let first = srv.expect_request(&mut c, Method::ALLOCATE);
    let m = Message::parse(&first).unwrap();
    assert!(m.get(attr::USERNAME).is_none() && !m.has_integrity());
    assert_eq!(
        get(&m, attr::REQUESTED_TRANSPORT),
        Attribute::RequestedTransport(17)
    );
    assert_eq!(get(&m, attr::LIFETIME), Attribute::Lifetime(600));
    assert_eq!(
        get(&m, attr::SOFTWARE),
        Attribute::Software("onionrtc-test")
    );
    deliver(&mut c, t0, &srv.challenge(&first));

    let second = srv.expect_request(&mut c, Method::ALLOCATE);
    srv.check_authenticated(&second);
    let m2 = Message::parse(&second).unwrap();
    assert_ne!(m.transaction_id(), m2.transaction_id());
    assert!(m2.get(attr::PASSWORD_ALGORITHMS).is_none());
    assert!(m2.get(attr::PASSWORD_ALGORITHM).is_none());
    deliver(&mut c, t0, &srv.allocate_success(&second, 600));

    assert_eq!(
        events(&mut c),
        [Event::Allocated {
            relayed: vec![relayed_addr()],
            mapped: Some(mapped_addr()),
            lifetime: secs(600),
        }]
    );
    assert_eq!(c.relayed_addresses(), [relayed_addr()]);
    assert_eq!(c.mapped_address(), Some(mapped_addr()));
    assert_eq!(c.lifetime(), Some(secs(600)));
    assert_eq!(c.outstanding_transactions(), 0);
}

#[test]
fn success_with_bad_integrity_is_ignored() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    deliver(&mut c, t0, &srv.challenge(&req));
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    let good = srv.allocate_success(&req, 600);
    for mi in [Mi::Wrong, Mi::None] {
        let attrs = [
            Attribute::XorRelayedAddress(relayed_addr()),
            Attribute::Lifetime(600),
        ];
        deliver(&mut c, t0, &srv.respond(&req, Class::Success, &attrs, mi));
        assert!(events(&mut c).is_empty());
        assert_eq!(c.state(), ClientState::Allocating);
    }
    // A tampered byte breaks the integrity too.
    let mut tampered = good.clone();
    tampered[stun::HEADER_LEN + 7] ^= 1;
    deliver(&mut c, t0, &tampered);
    assert_eq!(c.state(), ClientState::Allocating);
    deliver(&mut c, t0, &good);
    assert_eq!(c.state(), ClientState::Allocated);
}

#[test]
fn stale_nonce_is_retried_once_with_the_new_nonce() {
    let mut srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    c.create_permission(t0, peer_addr().ip()).unwrap();
    let req = srv.expect_request(&mut c, Method::CREATE_PERMISSION);
    srv.check_authenticated(&req);

    srv.nonce = "nonce-2".into();
    deliver(&mut c, t0, &srv.challenge_with(&req, 438));
    let retry = srv.expect_request(&mut c, Method::CREATE_PERMISSION);
    srv.check_authenticated(&retry);
    let (a, b) = (
        Message::parse(&req).unwrap(),
        Message::parse(&retry).unwrap(),
    );
    assert_ne!(a.transaction_id(), b.transaction_id());
    assert!(events(&mut c).is_empty());

    // A second 438 for the same request is a failure.
    srv.nonce = "nonce-3".into();
    deliver(&mut c, t0, &srv.challenge_with(&retry, 438));
    assert!(c.poll_transmit().is_none());
    assert_eq!(
        events(&mut c),
        [Event::PermissionFailed {
            peer: peer_addr().ip(),
            code: 438
        }]
    );
    // Later requests use the newest nonce.
    c.create_permission(t0, peer_addr().ip()).unwrap();
    let req = srv.expect_request(&mut c, Method::CREATE_PERMISSION);
    srv.check_authenticated(&req);
}

#[test]
fn stale_nonce_on_allocate_and_new_realm() {
    let mut srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    deliver(&mut c, t0, &srv.challenge(&req));
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    srv.nonce = "fresh".into();
    srv.realm = "other.example".into();
    deliver(&mut c, t0, &srv.challenge_with(&req, 438));
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    srv.check_authenticated(&req);
    deliver(&mut c, t0, &srv.allocate_success(&req, 600));
    assert_eq!(c.state(), ClientState::Allocated);
}

#[test]
fn repeated_401_gives_up() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    // Unauthenticated → 401 → credentials → 401 → one more → 401 → failure.
    for _ in 0..3 {
        let req = srv.expect_request(&mut c, Method::ALLOCATE);
        deliver(&mut c, t0, &srv.challenge(&req));
    }
    assert!(c.poll_transmit().is_none());
    assert_eq!(c.state(), ClientState::Failed);
    assert!(matches!(
        events(&mut c)[..],
        [Event::AllocationFailed { code: 401, .. }]
    ));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn challenge_without_nonce_fails() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    deliver(&mut c, t0, &srv.error(&req, 401, Mi::None));
    assert_eq!(c.state(), ClientState::Failed);
    assert!(matches!(
        &events(&mut c)[..],
        [Event::AllocationFailed { code: 401, reason }] if reason.contains("NONCE")
    ));
}

#[test]
fn sha256_when_the_server_offers_it() {
    let srv = FakeServer::with_sha256();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    let challenge = srv.challenge(&req);
    deliver(&mut c, t0, &challenge);
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    srv.check_authenticated(&req);
    let m = Message::parse(&req).unwrap();
    // PASSWORD-ALGORITHMS echoed byte for byte, SHA-256 chosen.
    let offered = Message::parse(&challenge)
        .unwrap()
        .get_raw(attr::PASSWORD_ALGORITHMS)
        .unwrap();
    assert_eq!(
        m.get_raw(attr::PASSWORD_ALGORITHMS).unwrap().value,
        offered.value
    );
    match get(&m, attr::PASSWORD_ALGORITHM) {
        Attribute::PasswordAlgorithm(e) => assert_eq!(e.algorithm, 0x0002),
        other => panic!("{other:?}"),
    }
    assert!(m.has_integrity_sha256() && !m.has_integrity());
    deliver(&mut c, t0, &srv.allocate_success(&req, 600));
    assert_eq!(c.state(), ClientState::Allocated);
    assert!(matches!(events(&mut c)[..], [Event::Allocated { .. }]));

    // Later requests keep SHA-256; responses are verified with that key.
    c.create_permission(t0, peer_addr().ip()).unwrap();
    let req = srv.expect_request(&mut c, Method::CREATE_PERMISSION);
    srv.check_authenticated(&req);
    deliver(&mut c, t0, &srv.success(&req, &[]));
    assert_eq!(events(&mut c), [Event::PermissionCreated(peer_addr().ip())]);
}

#[test]
fn password_algorithms_without_cookie_means_md5() {
    let mut srv = FakeServer::with_sha256();
    srv.nonce = "no-cookie-here".into();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    deliver(&mut c, t0, &srv.challenge(&req));
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    let m = Message::parse(&req).unwrap();
    assert!(m.get(attr::PASSWORD_ALGORITHMS).is_none());
    assert!(m.get(attr::PASSWORD_ALGORITHM).is_none());
    let md5 = Key::long_term(PasswordAlgorithm::Md5, USER, REALM, PASS).unwrap();
    m.verify_integrity(&md5).unwrap();
}

#[test]
fn allocation_errors_are_reported() {
    for code in [437u16, 300, 486, 508] {
        let srv = FakeServer::new();
        let t0 = Instant::now();
        let mut c = Client::new(config(Transport::Udp), t0);
        c.allocate(t0).unwrap();
        let req = srv.expect_request(&mut c, Method::ALLOCATE);
        deliver(&mut c, t0, &srv.challenge(&req));
        let req = srv.expect_request(&mut c, Method::ALLOCATE);
        // Unauthenticated, it is dropped; authenticated, it counts.
        deliver(&mut c, t0, &srv.error(&req, code, Mi::None));
        assert_eq!(c.state(), ClientState::Allocating, "{code}");
        deliver(&mut c, t0, &srv.error(&req, code, Mi::Valid));
        assert_eq!(c.state(), ClientState::Failed);
        assert_eq!(
            events(&mut c),
            [Event::AllocationFailed {
                code,
                reason: attr::reason_phrase(code).to_owned()
            }]
        );
        // A new attempt starts authenticated.
        c.allocate(t0).unwrap();
        srv.check_authenticated(&srv.expect_request(&mut c, Method::ALLOCATE));
    }
}

#[test]
fn error_to_an_unauthenticated_request_is_accepted() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    deliver(&mut c, t0, &srv.error(&req, 400, Mi::None));
    assert!(matches!(
        events(&mut c)[..],
        [Event::AllocationFailed { code: 400, .. }]
    ));
}

#[test]
fn unknown_or_mismatched_responses_are_ignored() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    // Another transaction ID.
    let mut other = req.clone();
    other[8..20].copy_from_slice(&[0xAB; 12]);
    deliver(&mut c, t0, &srv.challenge(&other));
    // Another method with the right ID.
    let mut refresh = vec![0u8; 64];
    let typ = MessageType::new(Method::REFRESH, Class::Request);
    let txid = Message::parse(&req).unwrap().transaction_id();
    let n = MessageEncoder::new(&mut refresh, typ, txid)
        .unwrap()
        .finish();
    deliver(&mut c, t0, &srv.challenge(&refresh[..n]));
    // The right response from another address.
    c.handle_datagram(t0, peer_addr(), &srv.challenge(&req));
    assert!(c.poll_transmit().is_none());
    assert!(events(&mut c).is_empty());
    assert_eq!(c.state(), ClientState::Allocating);
}

#[test]
fn authenticated_errors_need_integrity() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    let peer = peer_addr();
    c.bind_channel(t0, peer).unwrap();
    let req = srv.expect_request(&mut c, Method::CHANNEL_BIND);
    deliver(&mut c, t0, &srv.error(&req, 403, Mi::None));
    deliver(&mut c, t0, &srv.error(&req, 403, Mi::Wrong));
    assert!(events(&mut c).is_empty());
    deliver(&mut c, t0, &srv.error(&req, 403, Mi::Valid));
    assert_eq!(
        events(&mut c),
        [Event::ChannelBindFailed { peer, code: 403 }]
    );
    assert_eq!(c.channel(peer), None);
}

#[test]
fn bad_fingerprint_is_dropped() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    let mut resp = srv.challenge(&req);
    let last = resp.len() - 1;
    resp[last] ^= 0xFF;
    deliver(&mut c, t0, &resp);
    assert!(c.poll_transmit().is_none());
}

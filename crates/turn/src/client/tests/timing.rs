//! Retransmissions, timeouts, refreshes and expiry in simulated time.

use super::*;

/// Runs timers until `until`, returning the offsets from `t0` at which the
/// client transmitted.
fn transmits_until(c: &mut Client, t0: Instant, until: Instant) -> Vec<Duration> {
    let mut at = Vec::new();
    while let Some(t) = c.poll_timeout().filter(|t| *t <= until) {
        c.handle_timeout(t);
        while c.poll_transmit().is_some() {
            at.push(t - t0);
        }
    }
    at
}

#[test]
fn udp_retransmission_schedule_and_timeout() {
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let first = c.poll_transmit().unwrap().payload;
    assert_eq!(c.poll_timeout(), Some(t0 + ms(500)));
    // Nothing happens just before a deadline.
    c.handle_timeout(t0 + ms(499));
    assert!(c.poll_transmit().is_none());

    let mut sent = Vec::new();
    while let Some(t) = c.poll_timeout() {
        c.handle_timeout(t);
        while let Some(tx) = c.poll_transmit() {
            assert_eq!(tx.payload, first, "a retransmission is the same request");
            sent.push((t - t0).as_millis());
        }
        if !events(&mut c).is_empty() {
            assert_eq!(t - t0, ms(39_500));
            assert_eq!(c.state(), ClientState::Failed);
            break;
        }
    }
    assert_eq!(sent, [500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn timeout_event_names_the_method() {
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    c.handle_timeout(t0 + secs(40));
    assert_eq!(
        events(&mut c),
        [Event::TransactionTimedOut {
            method: Method::ALLOCATE,
            peer: None
        }]
    );
}

#[test]
fn late_driver_does_not_drift() {
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    c.poll_transmit();
    // Woken late at 2 s: the 0.5 s and 1.5 s retransmissions go out now…
    c.handle_timeout(t0 + secs(2));
    assert_eq!(std::iter::from_fn(|| c.poll_transmit()).count(), 2);
    // …and the next one stays at 3.5 s.
    assert_eq!(c.poll_timeout(), Some(t0 + ms(3500)));
}

#[test]
fn no_retransmission_over_streams() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let t0 = Instant::now();
        let mut c = Client::new(config(transport), t0);
        c.allocate(t0).unwrap();
        assert!(c.poll_transmit().is_some());
        assert_eq!(c.poll_timeout(), Some(t0 + ms(39_500)));
        assert!(transmits_until(&mut c, t0, t0 + secs(60)).is_empty());
        assert!(matches!(
            events(&mut c)[..],
            [Event::TransactionTimedOut {
                method: Method::ALLOCATE,
                ..
            }]
        ));
    }
}

#[test]
fn allocation_refresh_at_80_percent() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    assert_eq!(c.poll_timeout(), Some(t0 + secs(480)));
    c.handle_timeout(t0 + secs(479));
    assert!(c.poll_transmit().is_none());
    let t1 = t0 + secs(480);
    c.handle_timeout(t1);
    let req = srv.expect_request(&mut c, Method::REFRESH);
    srv.check_authenticated(&req);
    let m = Message::parse(&req).unwrap();
    assert_eq!(get(&m, attr::LIFETIME), Attribute::Lifetime(600));

    // The server grants less this time: 200 s → next refresh 140 s later.
    deliver(&mut c, t1, &srv.success(&req, &[Attribute::Lifetime(200)]));
    assert_eq!(
        events(&mut c),
        [Event::Refreshed {
            lifetime: secs(200)
        }]
    );
    assert_eq!(c.lifetime(), Some(secs(200)));
    assert_eq!(c.poll_timeout(), Some(t1 + secs(140)));
}

#[test]
fn failed_refresh_leads_to_expiry() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    c.handle_timeout(t0 + secs(480));
    let req = srv.expect_request(&mut c, Method::REFRESH);
    deliver(&mut c, t0 + secs(480), &srv.error(&req, 508, Mi::Valid));
    assert_eq!(events(&mut c), [Event::RefreshFailed { code: 508 }]);
    assert_eq!(c.state(), ClientState::Allocated);
    assert_eq!(c.poll_timeout(), Some(t0 + secs(600)));
    c.handle_timeout(t0 + secs(600));
    assert_eq!(events(&mut c), [Event::AllocationExpired]);
    assert_eq!(c.state(), ClientState::Expired);
    assert_eq!(
        c.send_to(t0, peer_addr(), b"x"),
        Err(ClientError::NotAllocated)
    );
}

#[test]
fn refresh_437_means_the_allocation_is_gone() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    c.handle_timeout(t0 + secs(480));
    let req = srv.expect_request(&mut c, Method::REFRESH);
    deliver(&mut c, t0 + secs(480), &srv.error(&req, 437, Mi::Valid));
    assert_eq!(events(&mut c), [Event::RefreshFailed { code: 437 }]);
    assert_eq!(c.state(), ClientState::Failed);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn permissions_refresh_every_4_minutes_and_channels_every_9() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    let other: SocketAddr = "198.51.100.99:7000".parse().unwrap();
    c.create_permission(t0, other.ip()).unwrap();
    let req = srv.expect_request(&mut c, Method::CREATE_PERMISSION);
    deliver(&mut c, t0, &srv.success(&req, &[]));
    let n = bind(&mut c, &srv, t0, peer_addr());
    events(&mut c);

    // Answer every request until 20 minutes, recording (time, method, peer).
    let mut seen = Vec::new();
    let end = t0 + secs(1200);
    while let Some(t) = c.poll_timeout().filter(|t| *t <= end) {
        c.handle_timeout(t);
        while let Some(tx) = c.poll_transmit() {
            let m = Message::parse(&tx.payload).unwrap();
            let peer = match m.get(attr::XOR_PEER_ADDRESS) {
                Some(Ok(Attribute::XorPeerAddress(p))) => Some(p),
                _ => None,
            };
            if m.method() == Method::CHANNEL_BIND {
                assert_eq!(get(&m, attr::CHANNEL_NUMBER), Attribute::ChannelNumber(n));
            }
            seen.push(((t - t0).as_secs(), m.method(), peer));
            let lifetime = [Attribute::Lifetime(600)];
            let attrs: &[Attribute<'_>] = if m.method() == Method::REFRESH {
                &lifetime
            } else {
                &[]
            };
            deliver(&mut c, t, &srv.success(&tx.payload, attrs));
        }
    }
    let perm = |ip: SocketAddr| Some(SocketAddr::new(ip.ip(), 0));
    let mut want = vec![
        (240, Method::CREATE_PERMISSION, perm(other)),
        (240, Method::CREATE_PERMISSION, perm(peer_addr())),
        (480, Method::CREATE_PERMISSION, perm(other)),
        (480, Method::CREATE_PERMISSION, perm(peer_addr())),
        (480, Method::REFRESH, None),
        (540, Method::CHANNEL_BIND, Some(peer_addr())),
        (720, Method::CREATE_PERMISSION, perm(other)),
        // The channel refresh at 540 s refreshed the permission too.
        (780, Method::CREATE_PERMISSION, perm(peer_addr())),
        (960, Method::CREATE_PERMISSION, perm(other)),
        (960, Method::REFRESH, None),
        (1020, Method::CREATE_PERMISSION, perm(peer_addr())),
        (1080, Method::CHANNEL_BIND, Some(peer_addr())),
        (1200, Method::CREATE_PERMISSION, perm(other)),
    ];
    seen.sort_by_key(|(t, m, p)| (*t, m.value(), *p));
    want.sort_by_key(|(t, m, p)| (*t, m.value(), *p));
    assert_eq!(seen, want);
    // Refreshes do not repeat the creation events.
    assert!(events(&mut c)
        .iter()
        .all(|e| matches!(e, Event::Refreshed { .. })));
}

#[test]
fn forgotten_permissions_and_channels_are_not_refreshed() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    c.create_permission(t0, peer_addr().ip()).unwrap();
    let req = srv.expect_request(&mut c, Method::CREATE_PERMISSION);
    deliver(&mut c, t0, &srv.success(&req, &[]));
    let other: SocketAddr = "198.51.100.99:7000".parse().unwrap();
    bind(&mut c, &srv, t0, other);
    c.forget_permission(peer_addr().ip());
    c.forget_permission(other.ip());
    c.forget_channel(t0, other);
    assert_eq!(c.channel(other), None);
    // Only the allocation refresh remains.
    assert_eq!(c.poll_timeout(), Some(t0 + secs(480)));
}

#[test]
fn permission_timeout_forgets_it() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Tcp), &srv);
    c.create_permission(t0, peer_addr().ip()).unwrap();
    srv.expect_request(&mut c, Method::CREATE_PERMISSION);
    c.handle_timeout(t0 + ms(39_500));
    assert_eq!(
        events(&mut c),
        [Event::TransactionTimedOut {
            method: Method::CREATE_PERMISSION,
            peer: Some(SocketAddr::new(peer_addr().ip(), 0)),
        }]
    );
    assert!(!c.has_permission(peer_addr().ip()));
    // It can be asked for again.
    c.create_permission(t0, peer_addr().ip()).unwrap();
    srv.expect_request(&mut c, Method::CREATE_PERMISSION);
}

#[test]
fn deallocate_sends_lifetime_zero() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    bind(&mut c, &srv, t0, peer_addr());
    events(&mut c);
    c.deallocate(t0 + secs(10)).unwrap();
    assert_eq!(c.state(), ClientState::Deallocating);
    let req = srv.expect_request(&mut c, Method::REFRESH);
    srv.check_authenticated(&req);
    let m = Message::parse(&req).unwrap();
    assert_eq!(get(&m, attr::LIFETIME), Attribute::Lifetime(0));
    // Only the request's own retransmission timer is left.
    assert_eq!(c.poll_timeout(), Some(t0 + secs(10) + ms(500)));
    assert_eq!(
        c.send_to(t0, peer_addr(), b"x"),
        Err(ClientError::NotAllocated)
    );
    deliver(
        &mut c,
        t0 + secs(10),
        &srv.success(&req, &[Attribute::Lifetime(0)]),
    );
    assert_eq!(events(&mut c), [Event::Deallocated]);
    assert_eq!(c.state(), ClientState::Deallocated);
    assert_eq!(c.poll_timeout(), None);
    assert!(c.relayed_addresses().is_empty());
    // A new allocation may follow.
    c.allocate(t0 + secs(11)).unwrap();
    srv.check_authenticated(&srv.expect_request(&mut c, Method::ALLOCATE));
}

#[test]
fn deallocate_438_is_retried_and_437_counts_as_done() {
    let mut srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    c.deallocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::REFRESH);
    srv.nonce = "later".into();
    deliver(&mut c, t0, &srv.challenge_with(&req, 438));
    let req = srv.expect_request(&mut c, Method::REFRESH);
    srv.check_authenticated(&req);
    deliver(&mut c, t0, &srv.error(&req, 437, Mi::Valid));
    assert_eq!(events(&mut c), [Event::Deallocated]);
    assert_eq!(c.state(), ClientState::Deallocated);
}

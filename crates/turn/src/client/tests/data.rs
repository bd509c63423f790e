//! Permissions, channels, sending and receiving data.

use super::*;

/// A Data indication from the server.
fn data_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 128 + data.len()];
    let typ = MessageType::new(Method::DATA, Class::Indication);
    let mut enc = MessageEncoder::new(&mut buf, typ, stun::TransactionId([5; 12])).unwrap();
    enc.push(&Attribute::XorPeerAddress(peer)).unwrap();
    enc.push(&Attribute::Data(data)).unwrap();
    let n = enc.finish();
    buf.truncate(n);
    buf
}

fn channel_data(number: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 8 + data.len()];
    let n = ChannelData::encode(number, data, &mut buf, pad).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn create_permission() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    let ip = peer_addr().ip();
    c.create_permission(t0, ip).unwrap();
    // Asking again while it is pending sends nothing more.
    c.create_permission(t0, ip).unwrap();
    let req = srv.expect_request(&mut c, Method::CREATE_PERMISSION);
    assert!(c.poll_transmit().is_none());
    srv.check_authenticated(&req);
    let m = Message::parse(&req).unwrap();
    assert_eq!(
        get(&m, attr::XOR_PEER_ADDRESS),
        Attribute::XorPeerAddress(SocketAddr::new(ip, 0))
    );
    assert!(!c.has_permission(ip));
    deliver(&mut c, t0, &srv.success(&req, &[]));
    assert!(c.has_permission(ip));
    assert_eq!(events(&mut c), [Event::PermissionCreated(ip)]);
}

#[test]
fn send_indication_until_the_channel_is_confirmed_then_channel_data() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let srv = FakeServer::new();
        let (mut c, t0) = allocated(config(transport), &srv);
        let peer = peer_addr();
        let n = c.bind_channel(t0, peer).unwrap();
        assert_eq!(n, 0x4000);
        assert_eq!(
            c.bind_channel(t0, peer).unwrap(),
            n,
            "same peer, same channel"
        );
        let req = srv.expect_request(&mut c, Method::CHANNEL_BIND);
        srv.check_authenticated(&req);
        let m = Message::parse(&req).unwrap();
        assert_eq!(
            get(&m, attr::CHANNEL_NUMBER),
            Attribute::ChannelNumber(0x4000)
        );
        assert_eq!(
            get(&m, attr::XOR_PEER_ADDRESS),
            Attribute::XorPeerAddress(peer)
        );

        // Not confirmed yet: a Send indication.
        c.send_to(t0, peer, b"hello").unwrap();
        let t = c.poll_transmit().unwrap();
        assert_eq!(t.destination, server_addr());
        let s = Message::parse(&t.payload).unwrap();
        assert_eq!(
            s.message_type(),
            MessageType::new(Method::SEND, Class::Indication)
        );
        assert_eq!(
            get(&s, attr::XOR_PEER_ADDRESS),
            Attribute::XorPeerAddress(peer)
        );
        assert_eq!(get(&s, attr::DATA), Attribute::Data(b"hello"));
        assert!(s.get(attr::DONT_FRAGMENT).is_none());

        deliver(&mut c, t0, &srv.success(&req, &[]));
        assert_eq!(events(&mut c), [Event::ChannelBound { peer, channel: n }]);
        assert!(
            c.has_permission(peer.ip()),
            "ChannelBind installs the permission"
        );

        c.send_to(t0, peer, b"hello").unwrap();
        let t = c.poll_transmit().unwrap();
        let padded = transport.is_stream();
        let want = channel_data(n, b"hello", padded);
        assert_eq!(t.payload, want);
        assert_eq!(t.payload.len(), if padded { 12 } else { 9 });
    }
}

#[test]
fn encode_send_writes_into_the_callers_buffer() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    let peer = peer_addr();
    let mut buf = [0u8; 1500];
    let n = c.encode_send(peer, b"abc", &mut buf).unwrap();
    assert_eq!(n, c.encoded_send_len(peer, 3));
    assert!(Message::parse(&buf[..n]).is_ok());
    assert_eq!(c.encode_send(peer, b"abc", &mut buf[..20]), None);

    let ch = bind(&mut c, &srv, t0, peer);
    let n = c.encode_send(peer, b"abc", &mut buf).unwrap();
    assert_eq!(&buf[..n], channel_data(ch, b"abc", false));
    assert_eq!(n, c.encoded_send_len(peer, 3));
    c.send_to(t0, peer, b"abc").unwrap();
    assert_eq!(c.poll_transmit().unwrap().payload, &buf[..n]);
    // Too large for ChannelData.
    let big = vec![0u8; 70_000];
    assert_eq!(c.send_to(t0, peer, &big), Err(ClientError::PayloadTooLarge));
}

#[test]
fn send_needs_an_allocation() {
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    assert_eq!(
        c.send_to(t0, peer_addr(), b"x"),
        Err(ClientError::NotAllocated)
    );
    assert_eq!(
        c.bind_channel(t0, peer_addr()),
        Err(ClientError::NotAllocated)
    );
    assert_eq!(
        c.create_permission(t0, peer_addr().ip()),
        Err(ClientError::NotAllocated)
    );
    assert_eq!(c.encode_send(peer_addr(), b"x", &mut [0u8; 100]), None);
    assert_eq!(c.deallocate(t0), Err(ClientError::NotAllocated));
    c.allocate(t0).unwrap();
    assert_eq!(c.allocate(t0), Err(ClientError::AlreadyAllocated));
}

#[test]
fn incoming_channel_data_and_data_indications() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let srv = FakeServer::new();
        let (mut c, t0) = allocated(config(transport), &srv);
        let peer = peer_addr();
        let other: SocketAddr = "[2001:db8::7]:9000".parse().unwrap();
        let n = bind(&mut c, &srv, t0, peer);
        events(&mut c);
        deliver(
            &mut c,
            t0,
            &channel_data(n, b"via channel", transport.is_stream()),
        );
        deliver(&mut c, t0, &data_indication(other, b"via indication"));
        // An unbound channel is ignored.
        deliver(
            &mut c,
            t0,
            &channel_data(0x4FFF, b"nobody", transport.is_stream()),
        );
        assert_eq!(
            events(&mut c),
            [
                Event::Data {
                    peer,
                    data: b"via channel".to_vec()
                },
                Event::Data {
                    peer: other,
                    data: b"via indication".to_vec()
                },
            ]
        );
    }
}

/// A TCP client with a confirmed channel to `peer_addr()` and a pending
/// CreatePermission, plus a stream holding the permission's response, a
/// padded ChannelData and a Data indication back to back.
fn stream_fixture(srv: &FakeServer) -> (Client, Instant, Vec<u8>) {
    let (mut c, t0) = allocated(config(Transport::Tcp), srv);
    let n = bind(&mut c, srv, t0, peer_addr());
    c.create_permission(t0, "198.51.100.30".parse().unwrap())
        .unwrap();
    let perm_req = srv.expect_request(&mut c, Method::CREATE_PERMISSION);
    events(&mut c);
    let mut stream = srv.success(&perm_req, &[]);
    stream.extend(channel_data(n, b"odd", true));
    stream.extend(data_indication(peer_addr(), b"hi"));
    (c, t0, stream)
}

#[test]
fn stream_bytes_split_at_every_position() {
    let srv = FakeServer::new();
    let peer = peer_addr();
    let want = vec![
        Event::PermissionCreated("198.51.100.30".parse().unwrap()),
        Event::Data {
            peer,
            data: b"odd".to_vec(),
        },
        Event::Data {
            peer,
            data: b"hi".to_vec(),
        },
    ];
    let len = stream_fixture(&srv).2.len();
    for split in 0..=len {
        for split2 in [split, (split + 7).min(len)] {
            let (mut c, t0, stream) = stream_fixture(&srv);
            let (a, rest) = stream.split_at(split);
            let (b, d) = rest.split_at(split2 - split);
            for part in [a, b, d] {
                c.handle_stream_bytes(t0, part).unwrap();
            }
            assert_eq!(events(&mut c), want, "split at {split}/{split2}");
        }
    }
    // Byte by byte too.
    let (mut c, t0, stream) = stream_fixture(&srv);
    for b in &stream {
        c.handle_stream_bytes(t0, std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(events(&mut c), want);
}

#[test]
fn dual_stack_allocation() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut cfg = config(Transport::Udp);
    cfg.additional_ipv6 = true;
    cfg.address_family = Some(stun::AddressFamily::V6);
    let mut c = Client::new(cfg, t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    let m = Message::parse(&req).unwrap();
    assert_eq!(
        get(&m, attr::ADDITIONAL_ADDRESS_FAMILY),
        Attribute::AdditionalAddressFamily(stun::AddressFamily::V6)
    );
    assert!(m.get(attr::REQUESTED_ADDRESS_FAMILY).is_none());
    deliver(&mut c, t0, &srv.challenge(&req));
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    let v6: SocketAddr = "[2001:db8::5]:50001".parse().unwrap();
    let resp = srv.success(
        &req,
        &[
            Attribute::XorRelayedAddress(relayed_addr()),
            Attribute::XorRelayedAddress(v6),
            Attribute::Lifetime(600),
        ],
    );
    deliver(&mut c, t0, &resp);
    assert_eq!(
        events(&mut c),
        [Event::Allocated {
            relayed: vec![relayed_addr(), v6],
            mapped: None,
            lifetime: secs(600)
        }]
    );
}

#[test]
fn requested_address_family() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut cfg = config(Transport::Udp);
    cfg.address_family = Some(stun::AddressFamily::V6);
    let mut c = Client::new(cfg, t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    let m = Message::parse(&req).unwrap();
    assert_eq!(
        get(&m, attr::REQUESTED_ADDRESS_FAMILY),
        Attribute::RequestedAddressFamily(stun::AddressFamily::V6)
    );
}

#[test]
fn allocate_success_without_relayed_address_fails() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    deliver(&mut c, t0, &srv.challenge(&req));
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    deliver(&mut c, t0, &srv.success(&req, &[Attribute::Lifetime(600)]));
    assert!(matches!(
        events(&mut c)[..],
        [Event::AllocationFailed {
            code: LOCAL_FAILURE,
            ..
        }]
    ));
}

//! Garbage input and bounds.

use proptest::prelude::*;

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn garbage_datagrams_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8)) {
        let srv = FakeServer::new();
        let (mut c, t0) = allocated(config(Transport::Udp), &srv);
        c.bind_channel(t0, peer_addr()).unwrap();
        for chunk in &chunks {
            c.handle_datagram(t0, server_addr(), chunk);
        }
        c.handle_timeout(t0 + secs(1));
        while c.poll_event().is_some() {}
        while c.poll_transmit().is_some() {}
    }

    #[test]
    fn garbage_stream_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let srv = FakeServer::new();
        let (mut c, t0) = allocated(config(Transport::Tcp), &srv);
        for chunk in &chunks {
            let _ = c.handle_stream_bytes(t0, chunk);
        }
        while c.poll_event().is_some() {}
    }

    #[test]
    fn mutated_responses_never_panic(pos in 0usize..200, byte in any::<u8>(), truncate in 0usize..200) {
        let srv = FakeServer::with_sha256();
        let t0 = Instant::now();
        let mut c = Client::new(config(Transport::Udp), t0);
        c.allocate(t0).unwrap();
        let req = srv.expect_request(&mut c, Method::ALLOCATE);
        let mut resp = srv.challenge(&req);
        let p = pos % resp.len();
        resp[p] = byte;
        resp.truncate(resp.len().min(truncate.max(1)));
        c.handle_datagram(t0, server_addr(), &resp);
        let mut resp = srv.allocate_success(&req, 600);
        let p = pos % resp.len();
        resp[p] ^= byte;
        c.handle_datagram(t0, server_addr(), &resp);
        while c.poll_event().is_some() {}
    }
}

#[test]
fn stream_framing_errors_are_sticky() {
    let t0 = Instant::now();
    let mut c = Client::new(config(Transport::Tcp), t0);
    assert!(matches!(
        c.handle_stream_bytes(t0, b"\xC0\x00\x00\x00"),
        Err(ClientError::Framing(_))
    ));
    assert!(matches!(
        c.handle_stream_bytes(t0, &[]),
        Err(ClientError::Framing(_))
    ));
    // The largest frames the 16-bit length fields allow fit under 65 KiB.
    let mut c = Client::new(config(Transport::Tcp), t0);
    assert!(c.handle_stream_bytes(t0, &[0x40, 0x00, 0xFF, 0xFF]).is_ok());
    let mut c = Client::new(config(Transport::Tcp), t0);
    let mut hdr = vec![0x00, 0x01, 0xFF, 0xFC];
    hdr.extend_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
    assert!(c.handle_stream_bytes(t0, &hdr).is_ok());
}

#[test]
fn large_stream_reads_are_framed() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Tcp), &srv);
    let n = bind(&mut c, &srv, t0, peer_addr());
    events(&mut c);
    // Five 60 000-byte ChannelData messages in one 300 kB read.
    let mut stream = Vec::new();
    let mut buf = vec![0u8; 60_004];
    for i in 0..5u8 {
        let len = ChannelData::encode(n, &[i; 60_000], &mut buf, true).unwrap();
        stream.extend_from_slice(&buf[..len]);
    }
    c.handle_stream_bytes(t0, &stream).unwrap();
    let evs = events(&mut c);
    assert_eq!(evs.len(), 5);
    for (i, e) in evs.iter().enumerate() {
        assert!(
            matches!(e, Event::Data { data, .. } if data.len() == 60_000 && data[0] == i as u8)
        );
    }
}

#[test]
fn data_events_are_bounded() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    let n = bind(&mut c, &srv, t0, peer_addr());
    events(&mut c);
    let mut buf = [0u8; 16];
    for i in 0..(MAX_DATA_EVENTS as u32 + 5) {
        let len = ChannelData::encode(n, &i.to_be_bytes(), &mut buf, false).unwrap();
        c.handle_datagram(t0, server_addr(), &buf[..len]);
    }
    assert_eq!(c.dropped_events(), 5);
    let evs = events(&mut c);
    assert_eq!(evs.len(), MAX_DATA_EVENTS);
    // The oldest were dropped.
    assert_eq!(
        evs[0],
        Event::Data {
            peer: peer_addr(),
            data: 5u32.to_be_bytes().to_vec()
        }
    );
}

#[test]
fn transactions_are_bounded() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    for i in 0..MAX_TRANSACTIONS {
        let ip = std::net::Ipv4Addr::from(0x0A00_0000 + i as u32);
        c.create_permission(t0, ip.into()).unwrap();
    }
    assert_eq!(c.outstanding_transactions(), MAX_TRANSACTIONS);
    assert_eq!(
        c.create_permission(t0, "10.200.0.1".parse().unwrap()),
        Err(ClientError::TooManyTransactions)
    );
    assert_eq!(
        c.bind_channel(t0, peer_addr()),
        Err(ClientError::TooManyTransactions)
    );
    // The failed calls left nothing behind.
    assert!(!c.permissions.contains_key(&"10.200.0.1".parse().unwrap()));
    assert_eq!(c.channels.len(), 0);
    // A refresh that finds the table full waits a second.
    c.handle_timeout(t0 + secs(480));
    assert!(c.poll_timeout().is_some());
}

#[test]
fn channel_numbers_are_bounded() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    for i in 0..MAX_CHANNELS {
        let peer = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1000));
        let n = c.bind_channel(t0, peer).unwrap();
        assert_eq!(usize::from(n), 0x4000 + i);
        let req = srv.expect_request(&mut c, Method::CHANNEL_BIND);
        deliver(&mut c, t0, &srv.success(&req, &[]));
    }
    assert_eq!(
        c.bind_channel(t0, "10.9.9.9:1".parse().unwrap()),
        Err(ClientError::ChannelsExhausted)
    );
}

#[test]
fn transmit_queue_is_bounded() {
    let srv = FakeServer::new();
    let (mut c, t0) = allocated(config(Transport::Udp), &srv);
    for _ in 0..MAX_QUEUED_TRANSMITS {
        c.send_to(t0, peer_addr(), b"x").unwrap();
    }
    assert_eq!(
        c.send_to(t0, peer_addr(), b"x"),
        Err(ClientError::QueueFull)
    );
}

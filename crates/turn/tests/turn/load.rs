//! Loss and volume: retransmissions carry the control plane through 10 %
//! loss, and 10,000 packets each way cross a channel without one missing.

use std::time::Duration;

use turn::client::Event;
use turn::Transport;

use crate::net::{peer, Net};

#[test]
fn ten_percent_loss_control_plane_completes() {
    let mut lost = 0;
    for seed in 1..=20 {
        let mut net = Net::new();
        net.seed(seed);
        net.loss = 0.10;
        let c = net.add_client(Transport::Udp, "alice", "alice-pw");
        let p = peer(1, 7000);
        net.allocate(c).unwrap();

        // Every transaction gets an answer (no TransactionTimedOut). The
        // permission's outcome itself is not checked here: see
        // `udp::create_permission_from_client`.
        let now = net.now;
        net.client(c).create_permission(now, p.ip()).unwrap();
        let e = net.wait_event(c, Duration::from_secs(60), |e| {
            matches!(
                e,
                Event::PermissionCreated(_)
                    | Event::PermissionFailed { .. }
                    | Event::TransactionTimedOut { .. }
            )
        });
        assert!(
            matches!(
                e,
                Some(Event::PermissionCreated(_) | Event::PermissionFailed { .. })
            ),
            "seed {seed}: {e:?}"
        );
        net.bind(c, p).unwrap();
        let timeouts: Vec<_> = net
            .failures(c)
            .into_iter()
            .filter(|e| matches!(e, Event::TransactionTimedOut { .. }))
            .collect();
        assert!(timeouts.is_empty(), "seed {seed}: {timeouts:?}");
        assert!(net.elapsed() < Duration::from_secs(120), "seed {seed}");
        assert_eq!(net.server.allocation_count(), 1);
        lost += net.wire.lost;
    }
    assert!(lost >= 10, "only {lost} datagrams lost over 20 runs");
}

#[test]
fn loss_is_real() {
    // The loss model drops about the asked share of datagrams, and the
    // retransmissions above were needed.
    let mut net = Net::new();
    net.loss = 0.10;
    let c = net.add_client(Transport::Udp, "alice", "alice-pw");
    let p = peer(1, 7000);
    let relay = net.allocate(c).unwrap()[0];
    net.bind(c, p).unwrap();
    let lost0 = net.wire.lost;
    for i in 0..2000u32 {
        net.send(c, p, &i.to_be_bytes());
        net.peer_send(p, relay, &i.to_be_bytes());
    }
    net.run(Duration::from_secs(1));
    let lost = net.wire.lost - lost0;
    let arrived = net.inbox(p).len() as u64 + net.data_from(c, p).len() as u64;
    assert_eq!(lost + arrived, 4000);
    assert!((300..=500).contains(&lost), "lost {lost} of 4000");
}

#[test]
fn ten_thousand_packets_each_way() {
    const N: usize = 10_000;
    let mut net = Net::new();
    let c = net.add_client(Transport::Udp, "alice", "alice-pw");
    let p = peer(4, 6000);
    let relay = net.allocate(c).unwrap()[0];
    net.bind(c, p).unwrap();

    let payload = |tag: u8, i: usize| {
        let mut v = vec![tag; 100];
        v[..4].copy_from_slice(&(i as u32).to_be_bytes());
        v
    };
    for batch in 0..N / 500 {
        for i in batch * 500..(batch + 1) * 500 {
            net.send(c, p, &payload(b'u', i));
            net.peer_send(p, relay, &payload(b'd', i));
        }
        net.run(Duration::from_millis(50));
    }
    net.run(Duration::from_secs(1));

    let up: Vec<Vec<u8>> = net.inbox(p).iter().map(|(_, d)| d.clone()).collect();
    let down = net.data_from(c, p);
    assert_eq!(up.len(), N);
    assert_eq!(down.len(), N);
    assert!(up.iter().enumerate().all(|(i, d)| *d == payload(b'u', i)));
    assert!(down.iter().enumerate().all(|(i, d)| *d == payload(b'd', i)));

    let s = net.server.stats();
    assert_eq!(s.packets_to_peer, N as u64);
    assert_eq!(s.packets_to_client, N as u64);
    assert_eq!(s.bytes_to_peer, 100 * N as u64);
    assert_eq!(s.bytes_to_client, 100 * N as u64);
    assert_eq!(
        (s.dropped_no_permission, s.dropped_no_channel, s.malformed),
        (0, 0, 0)
    );
    assert_eq!(net.wire.channel_data_up, N as u64);
    assert_eq!(net.wire.channel_data_down, N as u64);
    assert_eq!(net.client(c).dropped_events(), 0);
}

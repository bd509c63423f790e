//! The peer policy end to end: a client cannot use the relay to reach
//! loopback, private networks or the relay itself, and nothing is delivered
//! to or from such peers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use turn::Transport;

use crate::net::{sa, Net, RELAY_IP};

#[test]
fn forbidden_peers_are_refused_and_nothing_is_delivered() {
    let mut net = Net::new();
    let c = net.add_client(Transport::Udp, "alice", "alice-pw");
    let relay = net.allocate(c).unwrap()[0];

    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let private: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(net.permit(c, loopback), Err(403));
    assert_eq!(net.permit(c, private), Err(403));
    assert!(!net.client(c).has_permission(loopback));

    // A channel carries a real port, so the refusal below can only come
    // from the address class.
    let refused = net.server.stats().peer_refused;
    let forbidden: Vec<SocketAddr> = vec![
        sa("127.0.0.1:9"),
        sa("10.0.0.1:9"),
        sa("192.168.1.1:9"),
        sa("169.254.169.254:80"),
        sa("100.64.0.1:9"),
        // The relay itself, on a port that is no allocation.
        SocketAddr::new(RELAY_IP, if relay.port() == 50000 { 50001 } else { 50000 }),
    ];
    for p in &forbidden {
        assert_eq!(net.bind(c, *p), Err(403), "{p}");
    }
    assert_eq!(
        net.server.stats().peer_refused,
        refused + forbidden.len() as u64
    );

    // Data to them (Send indications, since no channel exists) is dropped,
    // each packet counted once.
    let before = {
        let s = net.server.stats();
        s.dropped_no_permission + s.peer_refused
    };
    for p in &forbidden {
        net.send(c, *p, b"let me in");
    }
    net.run(Duration::from_secs(1));
    assert!(net.peer_inbox.is_empty());
    let s = net.server.stats();
    assert_eq!(s.packets_to_peer, 0);
    let after = s.dropped_no_permission + s.peer_refused;
    assert_eq!(after - before, forbidden.len() as u64);

    // And what such hosts send to the relayed address never reaches the client.
    for p in &forbidden[..5] {
        net.peer_send(*p, relay, b"hello from inside");
    }
    net.run(Duration::from_secs(1));
    assert_eq!(net.server.stats().packets_to_client, 0);
    assert!(net
        .node(c)
        .events
        .iter()
        .all(|e| !matches!(e, turn::client::Event::Data { .. })));
}

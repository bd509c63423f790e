//! RFC 6062 (TURN-TCP): a TCP allocation over a TCP control connection,
//! Connect and ConnectionBind on a second connection, and incoming peer
//! connections. The Net plays the peer side of the TCP connections.

use std::time::Duration;

use turn::client::{Event, RequestedTransport};
use turn::server::{EndReason, Output, RelayProtocol};
use turn::Transport;

use crate::net::{peer, Net};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A node with a TCP allocation over `transport`; returns it and the relay.
fn tcp_allocation(net: &mut Net, transport: Transport) -> (usize, std::net::SocketAddr) {
    let mut cfg = net.client_config(transport, "alice", "alice-pw");
    cfg.requested_transport = RequestedTransport::Tcp;
    let c = net.add(cfg);
    let relayed = net.allocate(c).unwrap();
    assert!(net.log.iter().any(|o| matches!(
        o,
        Output::BindRelay {
            protocol: RelayProtocol::Tcp,
            ..
        }
    )));
    (c, relayed[0])
}

/// Binds connection `id` on a new data connection; returns its flow.
fn connection_bind(net: &mut Net, c: usize, id: u32) -> turn::FiveTuple {
    let data = net.open_data_connection(c);
    let req = net.client(c).connection_bind_request(id).unwrap();
    net.data_write(data, req);
    net.run(secs(1));
    let resp = net.data_rx[&data].clone();
    assert!(!resp.is_empty(), "no ConnectionBind response");
    net.client(c).parse_connection_bind_response(&resp).unwrap();
    assert!(net.log.contains(&Output::BindConnection {
        connection_id: id,
        data
    }));
    assert_eq!(net.bound_connection(data), Some(id));
    data
}

#[test]
fn connect_and_connection_bind() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let mut net = Net::new();
        let (c, relay) = tcp_allocation(&mut net, transport);

        // Connect: the server asks the driver to connect; one RTT later the
        // Net reports success and the client learns the connection id.
        let p = peer(9, 80);
        let now = net.now;
        net.client(c).connect(now, p).unwrap();
        let e = net.wait_event(c, secs(5), |e| {
            matches!(
                e,
                Event::ConnectionCreated { .. } | Event::ConnectFailed { .. }
            )
        });
        let Some(Event::ConnectionCreated {
            peer: got,
            connection_id: id,
        }) = e
        else {
            panic!("{transport}: {e:?}");
        };
        assert_eq!(got, p);
        assert!(net.log.contains(&Output::ConnectPeer {
            connection_id: id,
            relay,
            peer: p
        }));

        // ConnectionBind on a second connection; then raw bytes flow.
        let data = connection_bind(&mut net, c, id);
        net.data_write(data, b"GET / HTTP/1.1\r\n\r\n".to_vec());
        net.run(secs(1));
        assert_eq!(net.peer_conn_rx[&id], b"GET / HTTP/1.1\r\n\r\n");

        // A peer that cannot be reached: 447.
        let dead = peer(9, 81);
        net.unreachable.insert(dead);
        let now = net.now;
        net.client(c).connect(now, dead).unwrap();
        let e = net.wait_event(c, secs(5), |e| matches!(e, Event::ConnectFailed { .. }));
        assert_eq!(
            e,
            Some(Event::ConnectFailed {
                peer: dead,
                code: 447
            })
        );

        // Closing the control connection ends the allocation and the peer
        // connection.
        net.close_client(c);
        assert!(net.log.iter().any(|o| matches!(
            o,
            Output::AllocationEnded {
                reason: EndReason::Disconnected,
                ..
            }
        )));
        assert!(net
            .log
            .contains(&Output::ClosePeerConnection { connection_id: id }));
        assert_eq!(net.server.allocation_count(), 0);
    }
}

#[test]
fn incoming_peer_connection() {
    let mut net = Net::new();
    let (c, relay) = tcp_allocation(&mut net, Transport::Tcp);

    // Connect installs the permission for the peer's IP.
    let p = peer(9, 80);
    let now = net.now;
    net.client(c).connect(now, p).unwrap();
    net.wait_event(c, secs(5), |e| matches!(e, Event::ConnectionCreated { .. }))
        .unwrap();

    // Another port of that peer connects to the relayed address.
    let incoming = peer(9, 55_555);
    let now = net.now;
    let id = net
        .server
        .peer_connection_incoming(now, relay, incoming)
        .unwrap();
    net.drain_server();
    let e = net.wait_event(c, secs(5), |e| matches!(e, Event::ConnectionAttempt { .. }));
    assert_eq!(
        e,
        Some(Event::ConnectionAttempt {
            peer: incoming,
            connection_id: id
        })
    );
    connection_bind(&mut net, c, id);

    // No permission for this IP: refused.
    let now = net.now;
    let stranger = peer(10, 1234);
    assert_eq!(
        net.server.peer_connection_incoming(now, relay, stranger),
        None
    );

    // An attempt the client never binds is closed after 30 s.
    let now = net.now;
    let late = net
        .server
        .peer_connection_incoming(now, relay, peer(9, 55_556))
        .unwrap();
    net.drain_server();
    net.run(secs(29));
    assert!(!net.log.contains(&Output::ClosePeerConnection {
        connection_id: late
    }));
    net.run(secs(2));
    assert!(net.log.contains(&Output::ClosePeerConnection {
        connection_id: late
    }));
    assert!(!net
        .log
        .contains(&Output::ClosePeerConnection { connection_id: id }));
}

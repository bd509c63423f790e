//! TCP and TLS client transports: the same scenario as over UDP gives the
//! same results. The Net cuts every write at random points, so both the
//! server's driver and the client reassemble frames; ChannelData on a
//! stream must be padded to four bytes.

use std::time::Duration;

use turn::client::Event;
use turn::server::Stats;
use turn::Transport;

use crate::net::{peer, Net, Wire};

/// What a run of the scenario shows, independent of the transport.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    relayed: usize,
    channel: u16,
    at_peer: Vec<Vec<u8>>,
    at_client: Vec<Vec<u8>>,
    wire: Wire,
    packets: (u64, u64),
    bytes: (u64, u64),
    challenges: u64,
}

/// Payload `i`: odd lengths so that ChannelData needs padding on streams.
fn payload(tag: u8, i: usize) -> Vec<u8> {
    vec![tag; 1 + (i * 7) % 13]
}

fn scenario(transport: Transport, seed: u64) -> Outcome {
    let mut net = Net::new();
    net.seed(seed);
    let c = net.add_client(transport, "alice", "alice-pw");
    let p = peer(7, 4000);
    let relayed = net.allocate(c).unwrap();
    let relay = relayed[0];

    // One Send indication before the channel is confirmed, then ChannelData.
    let now = net.now;
    net.client(c).bind_channel(now, p).unwrap();
    net.send(c, p, &payload(b's', 0));
    let bound = net.wait_event(c, Duration::from_secs(5), |e| {
        matches!(e, Event::ChannelBound { .. })
    });
    let Some(Event::ChannelBound { channel, .. }) = bound else {
        panic!("no channel over {transport}: {:?}", net.failures(c));
    };
    for i in 1..40 {
        net.send(c, p, &payload(b'u', i));
        net.peer_send(p, relay, &payload(b'd', i));
        if i % 8 == 0 {
            net.run(Duration::from_millis(100));
        }
    }
    // A second port of the peer: Data indications (padded DATA attribute).
    let p2 = peer(7, 4001);
    net.peer_send(p2, relay, &payload(b'x', 3));
    net.run(Duration::from_secs(1));
    assert!(net.failures(c).is_empty(), "{:?}", net.failures(c));

    let s: Stats = net.server.stats().clone();
    let mut at_client = net.data_from(c, p);
    at_client.extend(net.data_from(c, p2));
    Outcome {
        relayed: relayed.len(),
        channel,
        at_peer: net.inbox(p).iter().map(|(_, d)| d.clone()).collect(),
        at_client,
        wire: net.wire.clone(),
        packets: (s.packets_to_peer, s.packets_to_client),
        bytes: (s.bytes_to_peer, s.bytes_to_client),
        challenges: s.challenges,
    }
}

#[test]
fn tcp_and_tls_match_udp() {
    let udp = scenario(Transport::Udp, 1);
    assert_eq!(udp.at_peer.len(), 40);
    assert_eq!(udp.at_client.len(), 40);
    assert_eq!(udp.wire.send_indications, 1);
    assert_eq!(udp.wire.channel_data_up, 39);
    assert_eq!(udp.wire.channel_data_down, 39);
    assert_eq!(udp.wire.data_indications, 1);
    for transport in [Transport::Tcp, Transport::Tls] {
        for seed in 1..=4 {
            let got = scenario(transport, seed);
            assert_eq!(got, udp, "{transport}, split seed {seed}");
        }
    }
}

#[test]
fn stream_channel_data_is_padded() {
    // `scenario` counts unpadded ChannelData frames in `wire`, and compares
    // equal to UDP only if there were none; check it explicitly too.
    let tcp = scenario(Transport::Tcp, 9);
    assert_eq!(tcp.wire.unpadded_stream_channel_data, 0);
    assert!(tcp.at_peer.iter().any(|d| d.len() % 4 != 0));
}

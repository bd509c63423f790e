//! RFC 8016 mobility with real sockets: our client moves its allocation
//! from flow to flow (UDP and TCP, so across both shards of the relay) and
//! the data keeps flowing through the same relayed address; and the same
//! client against coturn's `turnserver --mobility` (their tickets, their
//! checks: proves our encoding against theirs).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::process::wait_for_tcp;
use testkit::Proc;
use turn::client::{ClientConfig, Event};
use turn::Transport;

use crate::auth::{metric_now, Driver};
use crate::support::*;

/// A mobile client of the test user on `server`, allocated, with a channel
/// to `peer`: its relayed address.
fn mobile_client(server: SocketAddr, peer: SocketAddr) -> (Driver, SocketAddr) {
    let mut config = ClientConfig::new(server, Transport::Udp, USER, PASSWORD);
    config.mobility = true;
    let mut d = Driver::new(config, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let relayed = d.allocate().expect("Allocate with MOBILITY-TICKET")[0];
    assert!(d.client.mobility_ticket().is_some(), "no ticket");
    d.client.bind_channel(Instant::now(), peer).unwrap();
    let bound = d.wait_event(Duration::from_secs(10), |e| {
        matches!(
            e,
            Event::ChannelBound { .. } | Event::ChannelBindFailed { .. }
        )
    });
    assert!(
        matches!(bound, Some(Event::ChannelBound { .. })),
        "{bound:?}"
    );
    (d, relayed)
}

/// Sends `tag` to the echoing peer and waits for it to come back (the peer
/// echoes to the relayed address, the relay to the client's current flow).
fn echo(d: &mut Driver, peer: SocketAddr, tag: &[u8]) -> bool {
    for _ in 0..5 {
        d.client.send_to(Instant::now(), peer, tag).unwrap();
        let got = d.wait_event(
            Duration::from_secs(2),
            |e| matches!(e, Event::Data { data, .. } if data == tag),
        );
        if got.is_some() {
            return true;
        }
    }
    false
}

/// Moves to a new flow of `transport`; how long until the relay confirmed.
fn hop(d: &mut Driver, transport: Transport) -> Duration {
    let t0 = Instant::now();
    d.move_to(transport);
    let ev = d.wait_event(Duration::from_secs(10), |e| {
        matches!(e, Event::Moved { .. } | Event::MoveFailed { .. })
    });
    assert!(
        matches!(ev, Some(Event::Moved { .. })),
        "{transport:?}: {ev:?}"
    );
    t0.elapsed()
}

/// 16 moves between fresh UDP sockets and TCP connections on a relay of two
/// shards: each new flow lands on either shard (the kernel hashes), so some
/// moves cross shards (UDP: the allocation and its relay socket move;
/// streams: the connection is handed over), and all of them must keep the
/// relayed address and the channel. The chance that none crosses is 2^-16.
#[test]
fn our_client_moves_across_flows_transports_and_shards() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|c| c.max_connections_per_ip = 1000);
    let server = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let (_peer_proc, pport) = start_peer();
    let peer = SocketAddr::from(([127, 0, 0, 1], pport));
    let (mut d, relayed) = mobile_client(server, peer);
    assert!(echo(&mut d, peer, b"before"));
    let plan = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Udp,
        Transport::Udp,
    ];
    let mut worst = Duration::ZERO;
    for i in 0..16 {
        let t = plan[i % plan.len()];
        worst = worst.max(hop(&mut d, t));
        assert_eq!(d.client.relayed_addresses(), &[relayed]);
        let tag = format!("after move {i}");
        assert!(
            echo(&mut d, peer, tag.as_bytes()),
            "no data after move {i} ({t:?})"
        );
    }
    eprintln!("16 moves, slowest confirmed in {worst:?}");
    // Metrics are published every 250 ms.
    let moves = crate::auth::wait_metric(&relay, "onionrtc_mobility_moves_total", |n| n == 16);
    let crossed = metric_now(&relay, "onionrtc_mobility_shard_moves_total")
        + metric_now(&relay, "onionrtc_connection_handovers_total");
    assert_eq!(moves, 16);
    assert!(crossed > 0, "no move crossed shards");
    assert_eq!(metric_now(&relay, "onionrtc_mobility_refused_total"), 0);
    let live = metric_now(&relay, "onionrtc_allocations_current{transport=\"udp\"}")
        + metric_now(&relay, "onionrtc_allocations_current{transport=\"tcp\"}");
    assert_eq!(live, 1, "one allocation, moved: none left behind");
}

/// Negative control: with `mobility = false` the same client's Allocate is
/// refused 405 (Mobility Forbidden) and counted.
#[test]
fn mobility_off_refuses_the_ticket_request() {
    let relay = TestRelay::start(|c| c.mobility = false);
    let server = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let mut config = ClientConfig::new(server, Transport::Udp, USER, PASSWORD);
    config.mobility = true;
    let mut d = Driver::new(config, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = d.allocate();
    assert!(matches!(&r, Err((405, _))), "{r:?}");
    crate::auth::wait_metric(&relay, "onionrtc_mobility_refused_total", |n| n == 1);
    assert_eq!(metric_now(&relay, "onionrtc_mobility_refused_total"), 1);
}

/// Our client against coturn's `turnserver --mobility` (started and killed
/// by PID): its tickets come back to it and it moves our allocation.
#[test]
fn our_client_moves_on_coturn_with_mobility() {
    if !require_coturn() || !testkit::require_tool("turnserver", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let mut cmd = Command::new("turnserver");
    cmd.args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
        .arg(format!("--listening-port={port}"))
        .args(["--min-port=42000", "--max-port=42999", "--lt-cred-mech"])
        .arg(format!("--realm={REALM}"))
        .arg(format!("--user={USER}:{PASSWORD}"))
        .args([
            "--allow-loopback-peers",
            "--mobility",
            "--no-tls",
            "--no-dtls",
        ])
        .args([
            "--no-cli",
            "--no-rfc5780",
            "--simple-log",
            "--no-stdout-log",
        ])
        .arg(format!("--userdb={}", d.join("turndb").display()))
        .arg(format!("--pidfile={}", d.join("turnserver.pid").display()))
        .arg(format!("--log-file={}", d.join("turnserver.log").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut coturn = Proc::spawn(&mut cmd).unwrap();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_for_tcp(&mut coturn, server, Duration::from_secs(20)),
        "turnserver did not start"
    );
    let (_peer_proc, pport) = start_peer();
    let peer = SocketAddr::from(([127, 0, 0, 1], pport));
    let (mut c, relayed) = mobile_client(server, peer);
    assert!(echo(&mut c, peer, b"before"));
    for i in 0..3 {
        hop(&mut c, Transport::Udp);
        assert_eq!(c.client.relayed_addresses(), &[relayed]);
        let tag = format!("after move {i}");
        assert!(echo(&mut c, peer, tag.as_bytes()), "no data after move {i}");
    }
}

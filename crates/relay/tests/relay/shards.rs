//! A relay of two shards (every `TestRelay` has two; the interop tests run
//! through them): quotas exact with clients spread over both shards and
//! racing, and RFC 6062 data connections that land on the other shard than
//! their peer connection's, handed over.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use relay::config::Secret;
use stun::StreamDecoder;
use turn::client::{ClientConfig, Event, RequestedTransport};
use turn::Transport;

use crate::auth::{metric_now, Driver};
use crate::support::*;

/// The relay ports 40000..=59999 split in two: shard 0 below 50000.
fn shard_of(relayed: SocketAddr) -> usize {
    usize::from(relayed.port() >= 50000)
}

/// `n` clients of `user` from `ip`, allocating all at once (each on its
/// own thread and UDP flow, so the kernel spreads them over the shards):
/// the relayed addresses of those that got one, the refusal codes, and the
/// clients (keep them: their allocations stay while they live).
fn race(
    relay: &TestRelay,
    n: usize,
    user: &str,
    ip: [u8; 4],
) -> (Vec<SocketAddr>, Vec<u16>, Vec<Driver>) {
    let server = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let start = start.clone();
            let user = user.to_string();
            std::thread::spawn(move || {
                let config = ClientConfig::new(server, Transport::Udp, &user, "pw");
                let mut d = Driver::new(config, IpAddr::from(ip));
                start.wait();
                // Keep the client (and its allocation) until all are done.
                (d.allocate(), d)
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    let mut clients = Vec::new();
    for t in threads {
        let (r, d) = t.join().unwrap();
        match r {
            Ok(relayed) => ok.push(relayed[0]),
            Err((code, _)) => refused.push(code),
        }
        clients.push(d);
    }
    (ok, refused, clients)
}

#[test]
fn quotas_are_exact_with_clients_racing_on_both_shards() {
    let relay = TestRelay::start(|c| {
        c.users = ["alice", "bob", "carol"]
            .iter()
            .map(|u| (u.to_string(), Secret::new("pw")))
            .collect();
        c.max_allocations_per_static_user = 16;
        c.max_allocations_per_ip = 24;
        c.max_allocations_total = 30;
    });
    // Per user: 16 of 40.
    let (ok, refused, _alice) = race(&relay, 40, "alice", [127, 0, 0, 1]);
    assert_eq!(ok.len(), 16, "per-user quota; refused {refused:?}");
    assert!(refused.iter().all(|&c| c == 486), "{refused:?}");
    let mut per_shard = [0; 2];
    for r in &ok {
        per_shard[shard_of(*r)] += 1;
    }
    assert!(
        per_shard[0] > 0 && per_shard[1] > 0,
        "the allocations of one quota are spread over both shards: {per_shard:?}"
    );
    // Per IP: 24 from 127.0.0.1, 16 of them alice's.
    let (ok, _, _bob) = race(&relay, 40, "bob", [127, 0, 0, 1]);
    assert_eq!(ok.len(), 8, "per-IP quota");
    // In total: 30, 24 of them taken.
    let (ok, _, _carol) = race(&relay, 40, "carol", [127, 0, 0, 2]);
    assert_eq!(ok.len(), 6, "total quota");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        metric_now(&relay, "onionrtc_quota_refused_total"),
        3 * 40 - 30
    );
    assert_eq!(
        metric_now(&relay, "onionrtc_allocations_current{transport=\"udp\"}"),
        30
    );
    assert_eq!(metric_now(&relay, "onionrtc_relay_shards"), 2);
}

/// Reads one STUN frame from `s` within 5 s.
fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut dec = StreamDecoder::new(4096);
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some((_, f)) = dec.next_frame().unwrap() {
            return f.to_vec();
        }
        let n = s.read(&mut buf).expect("response to ConnectionBind");
        assert!(n > 0, "the relay closed the data connection");
        dec.push(&buf[..n]).unwrap();
    }
    panic!("no frame within 5 s");
}

/// RFC 6062 through two shards: 16 Connects on one control connection
/// (so all peer connections live on its shard), each bound on a fresh data
/// connection, which the kernel puts on either shard. Every bind must
/// succeed and pipe both ways, and some must have been handed over (else
/// the test proves nothing: the chance that none of 16 lands on the other
/// shard is 2^-16).
#[test]
fn connection_binds_on_the_other_shard_are_handed_over() {
    let relay = TestRelay::start(|_| {});
    let server = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let mut config = ClientConfig::new(server, Transport::Tcp, USER, PASSWORD);
    config.requested_transport = RequestedTransport::Tcp;
    let mut c = Driver::new(config, IpAddr::from([127, 0, 0, 1]));
    c.allocate().unwrap();
    let mut owners = [0; 2];
    for i in 0..16u8 {
        let peer = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        c.client.connect(Instant::now(), peer_addr).unwrap();
        let ev = c.wait_event(Duration::from_secs(10), |e| {
            matches!(
                e,
                Event::ConnectionCreated { .. } | Event::ConnectFailed { .. }
            )
        });
        let Some(Event::ConnectionCreated { connection_id, .. }) = ev else {
            panic!("Connect {i}: {ev:?}");
        };
        owners[(connection_id % 2) as usize] += 1;
        let (mut at_peer, _) = peer.accept().unwrap();
        let mut data = TcpStream::connect(server).unwrap();
        let bind = c.client.connection_bind_request(connection_id).unwrap();
        data.write_all(&bind).unwrap();
        let resp = read_frame(&mut data);
        c.client
            .parse_connection_bind_response(&resp)
            .unwrap_or_else(|e| panic!("ConnectionBind {i}: {e:?}"));
        data.write_all(&[i; 100]).unwrap();
        let mut got = [0u8; 100];
        at_peer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        at_peer.read_exact(&mut got).unwrap();
        assert_eq!(got, [i; 100]);
        at_peer.write_all(b"back").unwrap();
        data.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut back = [0u8; 4];
        data.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"back");
    }
    assert_eq!(
        owners.iter().filter(|&&n| n > 0).count(),
        1,
        "one shard holds the allocation"
    );
    std::thread::sleep(Duration::from_millis(600));
    let handed = metric_now(&relay, "onionrtc_connection_handovers_total");
    assert!((1..=16).contains(&handed), "{handed} handovers");
    eprintln!("{handed} of 16 data connections handed over");
}

//! The TURN server's hot paths with 10,000 live allocations.
//!
//! Setup drives 10,000 real [`Client`]s (REST credentials, one client IP
//! each) through an in-memory loop against one [`Server`]: each allocates,
//! then binds a channel to its own peer (the binding installs the peer's
//! permission too). The clients are then dropped; the server keeps the
//! allocations. The process's VmRSS before and after is printed to stderr.
//!
//! Benchmarks, each cycling over all 10,000 allocations:
//! - `client_channel_data/{120,1200}`: `handle_client_packet` with a
//!   ChannelData message (client → peer);
//! - `peer_data/{120,1200}`: `handle_peer_data` (peer → client, framed as
//!   ChannelData in the headroom);
//! - `allocate_delete`: an authenticated Allocate (REST credentials, valid
//!   nonce) through `relay_bound` to the success response, then a Refresh
//!   with LIFETIME 0 that deletes it again, so the table stays at 10,000.
//!   Both requests were captured from a real client and are replayed (the
//!   nonce stays valid: the benchmark's clock does not move). One iteration
//!   is one allocation created and deleted.
//!
//! Run: `cargo bench -p turn --bench server -- --warm-up-time 1 --measurement-time 3`.

// Benchmark code: a failed unwrap is a broken setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stun::{ChannelData, Class, Message, Method};
use turn::auth::{rest_password, rest_username, Credentials};
use turn::client::{Client, ClientConfig, ClientState, Event};
use turn::server::{
    Output, RelayAddresses, Server, ServerConfig, PEER_DATA_HEADROOM, PEER_DATA_TAILROOM,
};
use turn::{FiveTuple, Transport};

const ALLOCATIONS: usize = 10_000;
const UNIX0: u64 = 1_800_000_000;
const SECRET: &[u8] = b"bench-secret";

/// One live allocation of the setup.
struct Live {
    ft: FiveTuple,
    relay: SocketAddr,
    peer: SocketAddr,
    channel: u16,
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 3478)
}

fn client_addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
    SocketAddr::new(IpAddr::V4(ip), 40000)
}

fn peer_addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(93, 184, (i >> 8) as u8, i as u8);
    SocketAddr::new(IpAddr::V4(ip), 9000)
}

fn config() -> ServerConfig {
    let users: [(&str, &str); 0] = [];
    let creds = Credentials::new("bench.realm", users, [SECRET]).unwrap();
    let relay = RelayAddresses {
        ipv4: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
        ..Default::default()
    };
    let mut c = ServerConfig::new(creds, relay);
    c.limits.allocations_total = 2 * ALLOCATIONS as u32;
    c
}

fn rest_client(i: usize, now: Instant) -> Client {
    let user = rest_username(UNIX0 + 86_400, Some(&format!("bench{i}")));
    let pass = rest_password(SECRET, &user);
    Client::new(
        ClientConfig::new(server_addr(), Transport::Udp, user, pass),
        now,
    )
}

/// Moves bytes between one client and the server until neither has
/// anything to say; returns the client requests sent, in order.
fn exchange(server: &mut Server, client: &mut Client, ft: FiveTuple, now: Instant) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for _ in 0..16 {
        let mut quiet = true;
        while let Some(t) = client.poll_transmit() {
            quiet = false;
            assert!(server.handle_client_packet(now, ft, &t.payload).is_none());
            sent.push(t.payload);
        }
        while let Some(o) = server.poll_output() {
            quiet = false;
            match o {
                Output::Transmit { payload, .. } => {
                    client.handle_datagram(now, ft.server, &payload)
                }
                Output::BindRelay { token, .. } => {
                    server.relay_bound(now, token, Ok(()));
                }
                _ => {}
            }
        }
        if quiet {
            return sent;
        }
    }
    panic!("client and server did not settle");
}

fn expect_event(client: &mut Client, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    while let Some(e) = client.poll_event() {
        if pred(&e) {
            return e;
        }
    }
    panic!("no {what} event");
}

/// The server with 10,000 allocations, each with a channel to its peer.
fn setup(now: Instant) -> (Server, Vec<Live>) {
    let mut server = Server::new(config(), now, UNIX0);
    let mut live = Vec::with_capacity(ALLOCATIONS);
    for i in 0..ALLOCATIONS {
        let ft = FiveTuple {
            client: client_addr(i),
            server: server_addr(),
            transport: Transport::Udp,
        };
        let mut client = rest_client(i, now);
        client.allocate(now).unwrap();
        exchange(&mut server, &mut client, ft, now);
        let relay = match expect_event(&mut client, "Allocated", |e| {
            matches!(e, Event::Allocated { .. })
        }) {
            Event::Allocated { relayed, .. } => relayed[0],
            _ => unreachable!(),
        };
        let peer = peer_addr(i);
        let channel = client.bind_channel(now, peer).unwrap();
        exchange(&mut server, &mut client, ft, now);
        expect_event(&mut client, "ChannelBound", |e| {
            matches!(e, Event::ChannelBound { .. })
        });
        live.push(Live {
            ft,
            relay,
            peer,
            channel,
        });
    }
    assert_eq!(server.allocation_count(), ALLOCATIONS);
    (server, live)
}

/// An authenticated Allocate and a Refresh LIFETIME=0 from a real client,
/// captured after they worked once.
fn capture_allocate_delete(server: &mut Server, now: Instant) -> (FiveTuple, Vec<u8>, Vec<u8>) {
    let ft = FiveTuple {
        client: client_addr(ALLOCATIONS + 1),
        server: server_addr(),
        transport: Transport::Udp,
    };
    let mut client = rest_client(ALLOCATIONS + 1, now);
    client.allocate(now).unwrap();
    let sent = exchange(server, &mut client, ft, now);
    assert_eq!(client.state(), ClientState::Allocated);
    // The first Allocate had no credentials (401); the second is the one.
    let allocate = sent.last().unwrap().clone();
    client.deallocate(now).unwrap();
    let sent = exchange(server, &mut client, ft, now);
    assert_eq!(client.state(), ClientState::Deallocated);
    (ft, allocate, sent.last().unwrap().clone())
}

/// One allocation created and deleted; returns whether the Allocate
/// succeeded.
fn allocate_delete(
    server: &mut Server,
    ft: FiveTuple,
    alloc: &[u8],
    del: &[u8],
    now: Instant,
) -> bool {
    let mut ok = false;
    server.handle_client_packet(now, ft, alloc);
    while let Some(o) = server.poll_output() {
        match o {
            Output::BindRelay { token, .. } => {
                server.relay_bound(now, token, Ok(()));
            }
            Output::Transmit { payload, .. } => {
                ok |= Message::parse(&payload)
                    .is_ok_and(|m| m.method() == Method::ALLOCATE && m.class() == Class::Success);
            }
            _ => {}
        }
    }
    server.handle_client_packet(now, ft, del);
    while server.poll_output().is_some() {}
    ok
}

fn vm_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench_server(c: &mut Criterion) {
    let start = Instant::now();
    let rss_before = vm_rss_kb();
    let t = Instant::now();
    let (mut server, live) = setup(start);
    let setup_time = t.elapsed();
    let rss_after = vm_rss_kb();
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        eprintln!(
            "turn server bench: {ALLOCATIONS} allocations (+1 channel each) set up in \
             {setup_time:.2?}; VmRSS {b} kB before, {a} kB after (~{} bytes per allocation)",
            (a.saturating_sub(b)) * 1024 / ALLOCATIONS as u64
        );
    }
    // The clock the benchmarks pass: a second later, nothing expired.
    let now = start + Duration::from_secs(1);
    let n = live.len();

    let mut group = c.benchmark_group("server_10k");
    group.throughput(Throughput::Elements(1));
    for size in [120usize, 1200] {
        let payload = vec![0xa5u8; size];
        let packets: Vec<(FiveTuple, Vec<u8>)> = live
            .iter()
            .map(|l| {
                let mut buf = vec![0u8; size + 8];
                let len = ChannelData::encode(l.channel, &payload, &mut buf, false).unwrap();
                buf.truncate(len);
                (l.ft, buf)
            })
            .collect();
        assert!(packets
            .iter()
            .all(|(ft, p)| server.handle_client_packet(now, *ft, p).is_some()));
        group.bench_function(format!("client_channel_data/{size}"), |b| {
            let mut i = 0;
            b.iter(|| {
                let (ft, p) = &packets[i];
                i = if i + 1 == n { 0 } else { i + 1 };
                black_box(
                    server
                        .handle_client_packet(now, *ft, p)
                        .map(|s| s.data.len()),
                )
            });
        });

        let mut buf = vec![0u8; PEER_DATA_HEADROOM + size + PEER_DATA_TAILROOM];
        buf[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + size].copy_from_slice(&payload);
        assert!(live.iter().all(|l| server
            .handle_peer_data(now, l.relay, l.peer, &mut buf, size)
            .is_some_and(|f| f.end - f.start == size + 4)));
        group.bench_function(format!("peer_data/{size}"), |b| {
            let mut i = 0;
            b.iter(|| {
                let l = &live[i];
                i = if i + 1 == n { 0 } else { i + 1 };
                black_box(server.handle_peer_data(now, l.relay, l.peer, &mut buf, size))
            });
        });
    }

    let (ft, alloc, del) = capture_allocate_delete(&mut server, now);
    assert!(allocate_delete(&mut server, ft, &alloc, &del, now));
    assert_eq!(server.allocation_count(), ALLOCATIONS);
    group.bench_function("allocate_delete", |b| {
        b.iter(|| black_box(allocate_delete(&mut server, ft, &alloc, &del, now)));
    });
    group.finish();
    assert_eq!(server.allocation_count(), ALLOCATIONS);
}

criterion_group!(benches, bench_server);
criterion_main!(benches);

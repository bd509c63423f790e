//! Driver tests: the real shard on loopback sockets, turned by hand with a
//! `now` the test chooses (so timeouts need no sleeping), with the sans-IO
//! TURN client of the `turn` crate as the client.

use std::net::{IpAddr, UdpSocket as StdUdp};
use std::sync::mpsc;

use turn::auth::Credentials;
use turn::client::{Client, ClientConfig, Event};
use turn::policy::PeerPolicy;
use turn::server::{RelayAddresses, ServerConfig};

use super::*;

/// Loop turns any one wait may take (each waits up to 100 ms for readiness).
const MAX_TURNS: usize = 100;

fn driver_config() -> DriverConfig {
    DriverConfig {
        log_client_addresses: false,
        tls: None,
        max_connections: 16,
        max_connections_per_ip: 2,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_frame: 4096,
        busy_poll: Duration::ZERO,
    }
}

struct T {
    shard: Shard,
    bufs: Bufs,
    events: Events,
    udp: SocketAddr,
    tcp: SocketAddr,
    _reloads: mpsc::Sender<Reload>,
}

fn start(cfg: DriverConfig) -> T {
    let creds = Credentials::new("driver.test", [("u", "p")], [b"secret".as_slice()]).unwrap();
    let relay = RelayAddresses {
        ipv4: Some(IpAddr::from([127, 0, 0, 1])),
        ..Default::default()
    };
    let mut sc = ServerConfig::new(creds, relay);
    sc.policy = PeerPolicy::default().dangerous_allow_loopback_peers(true);
    let server = Server::new(sc, Instant::now(), unix_now());
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let udp = sockets::udp(lo, false).unwrap();
    let tcp = sockets::tcp_listener(lo, false).unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let listeners = Listeners {
        udp: vec![udp],
        tcp: vec![tcp],
        tls: Vec::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (l, tx) = links(1, &Metrics::new(1), &stop).unwrap().remove(0);
    let shard = Shard::new(0, server, cfg, listeners, l).unwrap();
    T {
        shard,
        bufs: Bufs::new(),
        events: Events::with_capacity(64),
        udp: udp_addr,
        tcp: tcp_addr,
        _reloads: tx,
    }
}

impl T {
    /// One turn of the event loop at `now` (what `run` does, minus the clock).
    fn turn(&mut self, now: Instant) {
        let wait = Some(Duration::from_millis(100));
        if self.shard.again.is_empty() {
            self.shard.poll.poll(&mut self.events, wait).unwrap();
        }
        for ev in self.events.iter() {
            self.shard.ready(ev, now, &mut self.bufs);
        }
        for t in std::mem::take(&mut self.shard.again) {
            self.shard.dispatch(t, true, false, now, &mut self.bufs);
        }
        self.shard.flush_batches();
    }

    /// Entries of the slab that are client streams.
    fn streams(&self) -> usize {
        (self.shard.slab.iter())
            .filter(|(_, e)| matches!(e, Entry::Client(_)))
            .count()
    }

    /// The allocation ids kept with the UDP relay sockets.
    fn relay_ids(&self) -> Vec<Option<AllocId>> {
        (self.shard.slab.iter())
            .filter_map(|(_, e)| match e {
                Entry::RelayUdp { alloc, .. } => Some(*alloc),
                _ => None,
            })
            .collect()
    }
}

/// A TURN client on its own loopback UDP socket.
struct C {
    client: Client,
    sock: StdUdp,
    events: Vec<Event>,
}

impl C {
    fn new(server: SocketAddr) -> Self {
        let sock = StdUdp::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let cfg = ClientConfig::new(server, Transport::Udp, "u", "p");
        C {
            client: Client::new(cfg, Instant::now()),
            sock,
            events: Vec::new(),
        }
    }

    /// Sends what the client queued and reads what arrived.
    fn exchange(&mut self, now: Instant) {
        while let Some(t) = self.client.poll_transmit() {
            self.sock.send_to(&t.payload, t.destination).unwrap();
        }
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            self.client.handle_datagram(now, from, &buf[..n]);
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
    }
}

/// Turns the loop and exchanges the clients' datagrams until `done`.
fn until(t: &mut T, cs: &mut [&mut C], mut done: impl FnMut(&mut [&mut C]) -> bool) {
    for _ in 0..MAX_TURNS {
        let now = Instant::now();
        for c in cs.iter_mut() {
            c.exchange(now);
        }
        if done(cs) {
            return;
        }
        t.turn(now);
    }
    panic!("not done within {MAX_TURNS} turns");
}

fn relayed(c: &C) -> Option<SocketAddr> {
    c.events.iter().find_map(|e| match e {
        Event::Allocated { relayed, .. } => relayed.first().copied(),
        _ => None,
    })
}

fn data(c: &C) -> Vec<(SocketAddr, Vec<u8>)> {
    (c.events.iter())
        .filter_map(|e| match e {
            Event::Data { peer, data } => Some((*peer, data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn relay_sockets_carry_their_allocation_and_data_between_allocations_stays_inside() {
    let mut t = start(driver_config());
    let (mut a, mut b) = (C::new(t.udp), C::new(t.udp));
    a.client.allocate(Instant::now()).unwrap();
    b.client.allocate(Instant::now()).unwrap();
    until(&mut t, &mut [&mut a, &mut b], |cs| {
        cs.iter().all(|c| relayed(c).is_some())
    });
    let (ra, rb) = (relayed(&a).unwrap(), relayed(&b).unwrap());
    // Each relay socket knows its allocation (two distinct live ids).
    let ids = t.relay_ids();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(Option::is_some) && ids[0] != ids[1]);
    assert_eq!(t.shard.stats.relay_sockets, 2);

    // A and B reach each other's relayed addresses: routed inside the relay.
    let now = Instant::now();
    a.client.create_permission(now, rb.ip()).unwrap();
    b.client.create_permission(now, ra.ip()).unwrap();
    until(&mut t, &mut [&mut a, &mut b], |cs| {
        cs.iter()
            .all(|c| c.client.has_permission(IpAddr::from([127, 0, 0, 1])))
    });
    // Take B's relay socket out of the loop: data that went through the
    // kernel would wait there, so what reaches B came inside the relay.
    let tb = t.shard.relay_by_local[&rb];
    if let Some(Entry::RelayUdp { sock, .. }) = t.shard.slab.get_mut(tb.0) {
        t.shard.poll.registry().deregister(sock).unwrap();
    }
    a.client.send_to(Instant::now(), rb, b"inside").unwrap();
    until(&mut t, &mut [&mut a, &mut b], |cs| !data(cs[1]).is_empty());
    assert_eq!(data(&b), vec![(ra, b"inside".to_vec())]);

    // A plain peer's datagram reaches A through A's relay socket.
    let peer = StdUdp::bind("127.0.0.1:0").unwrap();
    peer.send_to(b"from peer", ra).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    until(&mut t, &mut [&mut a], |cs| {
        data(cs[0]).iter().any(|(p, _)| *p == peer_addr)
    });
    let stats = t.shard.server.stats().clone();
    assert_eq!((stats.packets_to_peer, stats.packets_to_client), (1, 2));

    // Deleting A's allocation closes its relay socket; B's keeps its id.
    a.client.deallocate(Instant::now()).unwrap();
    for _ in 0..MAX_TURNS {
        if t.relay_ids().len() == 1 {
            break;
        }
        a.exchange(Instant::now());
        t.turn(Instant::now());
    }
    assert_eq!(t.relay_ids().len(), 1);
    assert_eq!(t.shard.stats.relay_sockets, 1);
    assert!(!t.shard.relay_by_local.contains_key(&ra));
    assert!(t.relay_ids()[0].is_some());
}

/// Connects to the TCP listener and turns the loop until the shard
/// accepted (or refused) the connection.
fn connect(t: &mut T) -> std::net::TcpStream {
    let before = t.streams() as u64 + t.shard.stats.connections_refused;
    let s = std::net::TcpStream::connect(t.tcp).unwrap();
    for _ in 0..MAX_TURNS {
        if t.streams() as u64 + t.shard.stats.connections_refused > before {
            break;
        }
        t.turn(Instant::now());
    }
    s
}

#[test]
fn silent_streams_close_at_the_handshake_timeout_in_driver_time() {
    let mut t = start(driver_config());
    let _s = connect(&mut t);
    assert_eq!(t.streams(), 1);
    let opened = Instant::now();
    // Control: just before the timeout the stream stays.
    t.shard
        .housekeeping(opened + Duration::from_secs(9), &mut t.bufs);
    assert_eq!(t.streams(), 1);
    assert_eq!(t.shard.stats.connections_timed_out, 0);
    t.shard
        .housekeeping(opened + Duration::from_secs(11), &mut t.bufs);
    assert_eq!(t.streams(), 0);
    assert_eq!(t.shard.stats.connections_timed_out, 1);
    assert_eq!(t.shard.conns.current(), (0, 0), "the counts went back");
}

#[test]
fn per_ip_connection_limit_refuses_the_third_and_frees_on_close() {
    let mut t = start(driver_config());
    let s1 = connect(&mut t);
    let _s2 = connect(&mut t);
    let _s3 = connect(&mut t);
    assert_eq!(t.streams(), 2);
    assert_eq!(t.shard.stats.connections_refused, 1);
    drop(s1);
    for _ in 0..MAX_TURNS {
        if t.streams() == 1 {
            break;
        }
        t.turn(Instant::now());
    }
    assert_eq!(t.streams(), 1);
    let _s4 = connect(&mut t);
    assert_eq!(t.streams(), 2, "a closed stream frees its per-IP slot");
    assert_eq!(t.shard.stats.connections_refused, 1);
}

#[test]
fn busy_poll_keeps_the_loop_awake_only_inside_its_window() {
    let mut cfg = driver_config();
    cfg.busy_poll = Duration::from_micros(50);
    let t = start(cfg);
    let now = Instant::now();
    let tick = now + TICK;
    // Inside the window after a busy turn: poll without blocking.
    let spin = Some(now + Duration::from_micros(50));
    assert_eq!(t.shard.wait_time(now, tick, spin), Duration::ZERO);
    // Control: the window has passed (or there was none): block until the
    // next tick, as without busy polling.
    let later = now + Duration::from_micros(60);
    assert_eq!(t.shard.wait_time(later, tick, spin), tick - later);
    assert_eq!(t.shard.wait_time(now, tick, None), TICK);
}

//! An in-memory network in simulated time: one [`Server`], several
//! [`Client`]s, plain peer endpoints, and the driver that moves bytes
//! between them.
//!
//! Nothing here opens a socket or sleeps. Time is `start + offset`; it only
//! moves when a test calls [`Net::run`] or [`Net::run_until`], which jump from
//! one due event (a hop arriving, a server or client timer) to the next.
//! Every loop is bounded by [`MAX_STEPS`].
//!
//! - Every hop takes [`Net::latency`] (one way). Client↔server datagrams are
//!   dropped with probability [`Net::loss`], drawn from a seeded RNG.
//! - Stream transports (TCP, TLS) carry bytes: each write is cut at random
//!   points into segments delivered in order; the driver side of the server
//!   reassembles frames with [`StreamDecoder`], the client does it itself.
//! - The driver answers `BindRelay` with `relay_bound(Ok)`, relays
//!   `PeerSend` to a plain peer or — when the server routes it to another
//!   allocation (`Destination::Allocation`) — through
//!   `handle_allocation_data`, and
//!   simulates RFC 6062 peer connections (`ConnectPeer` → one RTT later
//!   `peer_connect_result`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stun::{PacketKind, StreamDecoder};
use turn::auth::Credentials;
use turn::client::{Client, ClientConfig, Event};
use turn::server::{
    ClientForward, Destination, Output, RelayAddresses, Server, ServerConfig, PEER_DATA_HEADROOM,
    PEER_DATA_TAILROOM,
};
use turn::{FiveTuple, Transport};

/// Upper bound on event-loop iterations of one `run` call.
pub const MAX_STEPS: usize = 2_000_000;
/// Wall clock (Unix seconds) at the start of every simulation.
pub const UNIX0: u64 = 1_800_000_000;
/// The server's realm.
pub const REALM: &str = "onion.test";
/// The shared secret of REST credentials.
pub const REST_SECRET: &[u8] = b"rest-secret";
/// The IPv4 address relay sockets bind (and advertise).
pub const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

/// Parses a socket address literal.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A public peer address (the default peer policy refuses documentation
/// ranges, so peers live in 93.184.216.0/24).
pub fn peer(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(93, 184, 216, n)), port)
}

/// Static users `alice`/`alice-pw` and `bob`/`bob-pw`, the REST secret,
/// relay on [`RELAY_IP`] ports 50000–59999.
pub fn server_config() -> ServerConfig {
    let creds = Credentials::new(
        REALM,
        [("alice", "alice-pw"), ("bob", "bob-pw")],
        [REST_SECRET],
    )
    .unwrap();
    let relay = RelayAddresses {
        ipv4: Some(RELAY_IP),
        ..Default::default()
    };
    let mut c = ServerConfig::new(creds, relay);
    c.ports = 50000..=59999;
    c.software = Some("onionrtc-test".into());
    c
}

/// One simulated client host with its TURN client.
#[derive(Debug)]
pub struct Node {
    /// The client state machine.
    pub client: Client,
    /// Its flow to the server.
    pub ft: FiveTuple,
    /// Events polled from the client, oldest first.
    pub events: Vec<Event>,
}

/// What the Net counted on the wire.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wire {
    /// Client→server datagrams or writes dropped by the loss model.
    pub lost: u64,
    /// ChannelData sent by clients.
    pub channel_data_up: u64,
    /// Send indications sent by clients.
    pub send_indications: u64,
    /// ChannelData framed by the server for clients.
    pub channel_data_down: u64,
    /// Data indications framed by the server for clients.
    pub data_indications: u64,
    /// Packets that went from one allocation to another inside the relay.
    pub internal: u64,
    /// ChannelData frames (either way) on a stream whose length was not a
    /// multiple of four.
    pub unpadded_stream_channel_data: u64,
}

#[derive(Debug)]
enum Hop {
    /// Bytes from a client flow (a datagram or a stream segment).
    ToServer { ft: FiveTuple, bytes: Vec<u8> },
    /// Bytes from the server to the client flow `ft`.
    ToClient { ft: FiveTuple, bytes: Vec<u8> },
    /// A datagram from the relay socket `relay` to a plain peer.
    ToPeer {
        relay: SocketAddr,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A datagram from `peer` to the relay socket `relay`.
    ToRelay {
        relay: SocketAddr,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
    /// The simulated TCP connect to an RFC 6062 peer finished.
    PeerConnected { id: u32, ok: bool },
}

/// The simulated network; see the module documentation.
#[derive(Debug)]
pub struct Net {
    start: Instant,
    /// Simulated now.
    pub now: Instant,
    /// The server under test.
    pub server: Server,
    /// Where UDP and TCP clients reach the server.
    pub server_addr: SocketAddr,
    /// Where TLS clients reach the server.
    pub server_tls_addr: SocketAddr,
    nodes: Vec<Option<Node>>,
    by_ft: HashMap<FiveTuple, usize>,
    /// One-way latency of every hop.
    pub latency: Duration,
    /// Probability of dropping a client↔server datagram.
    pub loss: f64,
    rng: StdRng,
    queue: BTreeMap<(Instant, u64), Hop>,
    seq: u64,
    /// Last arrival per stream, so segments never overtake each other.
    stream_tail: HashMap<(FiveTuple, bool), Instant>,
    decoders: HashMap<FiveTuple, StreamDecoder>,
    /// Datagrams received by plain peers: peer → (relay it came from, bytes).
    pub peer_inbox: HashMap<SocketAddr, Vec<(SocketAddr, Vec<u8>)>>,
    /// Relay sockets currently bound.
    pub bound_relays: HashSet<SocketAddr>,
    /// Every non-Transmit output of the server, in order.
    pub log: Vec<Output>,
    /// RFC 6062 peers whose TCP connect fails.
    pub unreachable: HashSet<SocketAddr>,
    /// RFC 6062 data connections (not control connections) and the bytes
    /// the server wrote to them.
    pub data_rx: HashMap<FiveTuple, Vec<u8>>,
    /// Data connections bound to a peer connection (raw bytes from then on).
    raw: HashMap<FiveTuple, u32>,
    /// Raw bytes that reached each RFC 6062 peer connection.
    pub peer_conn_rx: HashMap<u32, Vec<u8>>,
    next_port: u16,
    /// Wire counters.
    pub wire: Wire,
}

impl Net {
    /// A network around a server built from [`server_config`].
    pub fn new() -> Self {
        Self::with_config(server_config())
    }

    /// A network around a server built from `config`; RNG seed 1.
    pub fn with_config(config: ServerConfig) -> Self {
        let start = Instant::now();
        Net {
            start,
            now: start,
            server: Server::new(config, start, UNIX0),
            server_addr: sa("192.0.2.1:3478"),
            server_tls_addr: sa("192.0.2.1:5349"),
            nodes: Vec::new(),
            by_ft: HashMap::new(),
            latency: Duration::from_millis(20),
            loss: 0.0,
            rng: StdRng::seed_from_u64(1),
            queue: BTreeMap::new(),
            seq: 0,
            stream_tail: HashMap::new(),
            decoders: HashMap::new(),
            peer_inbox: HashMap::new(),
            bound_relays: HashSet::new(),
            log: Vec::new(),
            unreachable: HashSet::new(),
            data_rx: HashMap::new(),
            raw: HashMap::new(),
            peer_conn_rx: HashMap::new(),
            next_port: 40000,
            wire: Wire::default(),
        }
    }

    /// Reseeds the loss and stream-split RNG.
    pub fn seed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A client configuration aimed at this server.
    pub fn client_config(&self, transport: Transport, user: &str, pass: &str) -> ClientConfig {
        let server = match transport {
            Transport::Tls => self.server_tls_addr,
            _ => self.server_addr,
        };
        ClientConfig::new(server, transport, user, pass)
    }

    /// Adds a client host with its own IP address; returns its index.
    pub fn add(&mut self, config: ClientConfig) -> usize {
        let i = self.nodes.len();
        let ip = Ipv4Addr::new(198, 51, (i / 250) as u8, (i % 250 + 1) as u8);
        let ft = FiveTuple {
            client: SocketAddr::new(IpAddr::V4(ip), self.fresh_port()),
            server: config.server,
            transport: config.transport,
        };
        let client = Client::new(config, self.now);
        self.by_ft.insert(ft, i);
        self.nodes.push(Some(Node {
            client,
            ft,
            events: Vec::new(),
        }));
        i
    }

    /// Adds a client for `user` over `transport`.
    pub fn add_client(&mut self, transport: Transport, user: &str, pass: &str) -> usize {
        let c = self.client_config(transport, user, pass);
        self.add(c)
    }

    fn fresh_port(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    /// The node `i` (panics if it was dropped).
    pub fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("node was dropped")
    }

    /// The client of node `i`.
    pub fn client(&mut self, i: usize) -> &mut Client {
        &mut self.node(i).client
    }

    /// Forgets node `i` silently, as a UDP client that goes away does.
    pub fn drop_client(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            self.by_ft.remove(&n.ft);
        }
    }

    /// Closes node `i`'s stream connection: the server is told.
    pub fn close_client(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            self.by_ft.remove(&n.ft);
            self.server.client_disconnected(self.now, n.ft);
            self.drain_server();
        }
    }

    /// Runs the network for `d` of simulated time.
    pub fn run(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.step_until(deadline, |_| false);
    }

    /// Runs until `stop` holds (checked after every event) or `max` of
    /// simulated time passed; returns whether `stop` held.
    pub fn run_until(&mut self, max: Duration, stop: impl FnMut(&Net) -> bool) -> bool {
        let deadline = self.now + max;
        self.step_until(deadline, stop)
    }

    /// Runs until node `i` reports a new event (one not reported before
    /// this call) matching `pred`, at most `max`; returns it.
    pub fn wait_event(
        &mut self,
        i: usize,
        max: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let from = self.nodes[i].as_ref().map_or(0, |n| n.events.len());
        self.wait_event_from(i, from, max, pred)
    }

    /// Like [`Net::wait_event`], for events from index `from` on.
    fn wait_event_from(
        &mut self,
        i: usize,
        from: usize,
        max: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let find = |net: &Net| {
            net.nodes[i]
                .as_ref()
                .and_then(|n| n.events.get(from..)?.iter().find(|e| pred(e)).cloned())
        };
        self.run_until(max, |net| find(net).is_some());
        find(self)
    }

    fn event_count(&self, i: usize) -> usize {
        self.nodes[i].as_ref().map_or(0, |n| n.events.len())
    }

    fn step_until(&mut self, deadline: Instant, mut stop: impl FnMut(&Net) -> bool) -> bool {
        self.pump();
        if stop(self) {
            return true;
        }
        for _ in 0..MAX_STEPS {
            let Some(next) = self.next_due().filter(|t| *t <= deadline) else {
                self.now = self.now.max(deadline);
                return false;
            };
            self.now = self.now.max(next);
            self.step();
            if stop(self) {
                return true;
            }
        }
        panic!("the simulation did not settle within {MAX_STEPS} steps");
    }

    fn next_due(&self) -> Option<Instant> {
        let hop = self.queue.keys().next().map(|(t, _)| *t);
        let clients = self
            .nodes
            .iter()
            .flatten()
            .filter_map(|n| n.client.poll_timeout());
        hop.into_iter()
            .chain(self.server.poll_timeout())
            .chain(clients)
            .min()
    }

    /// Delivers what is due now, fires due timers, and collects output.
    fn step(&mut self) {
        let now = self.now;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let hop = entry.remove();
            self.deliver(hop);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
            self.drain_server();
        }
        for n in self.nodes.iter_mut().flatten() {
            if n.client.poll_timeout().is_some_and(|t| t <= now) {
                n.client.handle_timeout(now);
            }
        }
        self.pump();
    }

    fn schedule(&mut self, at: Instant, hop: Hop) {
        self.seq += 1;
        self.queue.insert((at, self.seq), hop);
    }

    /// Schedules stream bytes cut at up to three random points, in order.
    fn schedule_stream(&mut self, ft: FiveTuple, up: bool, bytes: Vec<u8>) {
        let tail = self.stream_tail.entry((ft, up)).or_insert(self.now);
        let at = (self.now + self.latency).max(*tail);
        *tail = at;
        let mut cuts: Vec<usize> = (0..3)
            .map(|_| self.rng.gen_range(0..=bytes.len()))
            .collect();
        cuts.sort_unstable();
        let mut from = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            if c > from {
                let seg = bytes[from..c].to_vec();
                let hop = if up {
                    Hop::ToServer { ft, bytes: seg }
                } else {
                    Hop::ToClient { ft, bytes: seg }
                };
                self.schedule(at, hop);
                from = c;
            }
        }
    }

    fn lose(&mut self) -> bool {
        self.loss > 0.0 && self.rng.gen_bool(self.loss)
    }

    /// Moves client transmits onto the wire and client events into nodes.
    fn pump(&mut self) {
        let mut out = Vec::new();
        for n in self.nodes.iter_mut().flatten() {
            while let Some(t) = n.client.poll_transmit() {
                assert_eq!(t.destination, n.ft.server, "transmit not to the server");
                out.push((n.ft, t.payload));
            }
            while let Some(e) = n.client.poll_event() {
                n.events.push(e);
            }
        }
        for (ft, bytes) in out {
            self.send_up(ft, bytes);
        }
    }

    /// Sends one client write (a whole message) towards the server.
    fn send_up(&mut self, ft: FiveTuple, bytes: Vec<u8>) {
        match stun::classify(&bytes) {
            PacketKind::ChannelData => {
                self.wire.channel_data_up += 1;
                if ft.transport.is_stream() && !bytes.len().is_multiple_of(4) {
                    self.wire.unpadded_stream_channel_data += 1;
                }
            }
            PacketKind::Stun if bytes.get(..2) == Some(&[0x00, 0x16]) => {
                self.wire.send_indications += 1;
            }
            _ => {}
        }
        if ft.transport.is_stream() {
            self.schedule_stream(ft, true, bytes);
        } else if self.lose() {
            self.wire.lost += 1;
        } else {
            self.schedule(self.now + self.latency, Hop::ToServer { ft, bytes });
        }
    }

    /// Sends server bytes towards the client flow `ft`.
    fn send_down(&mut self, ft: FiveTuple, bytes: Vec<u8>) {
        if ft.transport.is_stream() {
            self.schedule_stream(ft, false, bytes);
        } else if self.lose() {
            self.wire.lost += 1;
        } else {
            self.schedule(self.now + self.latency, Hop::ToClient { ft, bytes });
        }
    }

    fn deliver(&mut self, hop: Hop) {
        match hop {
            Hop::ToServer { ft, bytes } => self.server_receive(ft, &bytes),
            Hop::ToClient { ft, bytes } => {
                if let Some(i) = self.by_ft.get(&ft).copied() {
                    let now = self.now;
                    let from = ft.server;
                    let n = self.node(i);
                    if ft.transport.is_stream() {
                        n.client
                            .handle_stream_bytes(now, &bytes)
                            .expect("server stream framing");
                    } else {
                        n.client.handle_datagram(now, from, &bytes);
                    }
                } else if let Some(rx) = self.data_rx.get_mut(&ft) {
                    rx.extend_from_slice(&bytes);
                }
            }
            Hop::ToPeer { relay, peer, bytes } => {
                self.peer_inbox
                    .entry(peer)
                    .or_default()
                    .push((relay, bytes));
            }
            Hop::ToRelay { relay, peer, bytes } => self.relay_receive(relay, peer, &bytes),
            Hop::PeerConnected { id, ok } => {
                self.server.peer_connect_result(self.now, id, ok);
                self.drain_server();
            }
        }
    }

    /// The driver's client side: frames stream bytes, feeds the server.
    fn server_receive(&mut self, ft: FiveTuple, bytes: &[u8]) {
        if !ft.transport.is_stream() {
            self.client_packet(ft, bytes);
            return;
        }
        if let Some(id) = self.raw.get(&ft) {
            self.peer_conn_rx
                .entry(*id)
                .or_default()
                .extend_from_slice(bytes);
            return;
        }
        let d = self
            .decoders
            .entry(ft)
            .or_insert_with(|| StreamDecoder::new(65 * 1024));
        d.push(bytes).expect("client stream too far ahead");
        loop {
            let Some(d) = self.decoders.get_mut(&ft) else {
                return;
            };
            let frame = match d.next_frame().expect("client stream framing") {
                Some((_, f)) => f.to_vec(),
                None => return,
            };
            self.client_packet(ft, &frame);
            if let Some(id) = self.raw.get(&ft).copied() {
                // ConnectionBind succeeded: what follows is raw peer data.
                if let Some(mut d) = self.decoders.remove(&ft) {
                    let rest = d.take_pending();
                    self.peer_conn_rx.entry(id).or_default().extend(rest);
                }
                return;
            }
        }
    }

    fn client_packet(&mut self, ft: FiveTuple, bytes: &[u8]) {
        if ft.transport.is_stream() && stun::classify(bytes) == PacketKind::ChannelData {
            // The frame includes its padding.
            if !bytes.len().is_multiple_of(4) {
                self.wire.unpadded_stream_channel_data += 1;
            }
        }
        let send = self
            .server
            .handle_client_packet(self.now, ft, bytes)
            .map(|s| (s.relay, s.peer, s.data.to_vec(), s.to));
        if let Some((relay, peer, data, to)) = send {
            if let Destination::Allocation { id, from } = to {
                self.wire.internal += 1;
                let now = self.now;
                self.frame_down(&data, |server, buf, len| {
                    server.handle_allocation_data(now, id, from, buf, len)
                });
            } else {
                self.schedule(
                    self.now + self.latency,
                    Hop::ToPeer {
                        relay,
                        peer,
                        bytes: data,
                    },
                );
            }
        }
        self.drain_server();
    }

    /// The driver's relay-socket side: a datagram from `peer` on `relay`.
    fn relay_receive(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let now = self.now;
        self.frame_down(data, |server, buf, len| {
            server.handle_peer_data(now, relay, peer, buf, len)
        });
    }

    /// Frames `data` for a client with `handle` (one of the server's
    /// peer-data entry points) and sends it down.
    fn frame_down(
        &mut self,
        data: &[u8],
        handle: impl FnOnce(&mut Server, &mut [u8], usize) -> Option<ClientForward>,
    ) {
        let len = data.len();
        let mut buf = vec![0u8; PEER_DATA_HEADROOM + len + PEER_DATA_TAILROOM];
        buf[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + len].copy_from_slice(data);
        let fwd = handle(&mut self.server, &mut buf, len);
        if let Some(f) = fwd {
            let framed = buf[f.start..f.end].to_vec();
            match stun::classify(&framed) {
                PacketKind::ChannelData => {
                    self.wire.channel_data_down += 1;
                    if f.five_tuple.transport.is_stream() && !framed.len().is_multiple_of(4) {
                        self.wire.unpadded_stream_channel_data += 1;
                    }
                }
                _ => self.wire.data_indications += 1,
            }
            self.send_down(f.five_tuple, framed);
        }
    }

    /// Handles every queued server output the way a real driver would.
    pub fn drain_server(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Transmit {
                    five_tuple,
                    payload,
                } => self.send_down(five_tuple, payload),
                Output::BindRelay {
                    token, ref addrs, ..
                } => {
                    self.bound_relays.extend(addrs.iter().copied());
                    self.log.push(out);
                    self.server.relay_bound(self.now, token, Ok(()));
                }
                Output::ReleaseRelay { addr, .. } => {
                    self.bound_relays.remove(&addr);
                    self.log.push(out);
                }
                Output::ConnectPeer {
                    connection_id,
                    peer,
                    ..
                } => {
                    let ok = !self.unreachable.contains(&peer);
                    let at = self.now + 2 * self.latency;
                    self.schedule(
                        at,
                        Hop::PeerConnected {
                            id: connection_id,
                            ok,
                        },
                    );
                    self.log.push(out);
                }
                Output::BindConnection {
                    connection_id,
                    data,
                } => {
                    self.raw.insert(data, connection_id);
                    self.log.push(out);
                }
                other => self.log.push(other),
            }
        }
    }

    // ---- what tests do ---------------------------------------------------

    /// Asks node `i` to allocate and runs until it reports the outcome:
    /// the relayed addresses, or the AllocationFailed code.
    pub fn allocate(&mut self, i: usize) -> Result<Vec<SocketAddr>, u16> {
        let (now, from) = (self.now, self.event_count(i));
        self.client(i).allocate(now).unwrap();
        let e = self.wait_event_from(i, from, Duration::from_secs(60), |e| {
            matches!(e, Event::Allocated { .. } | Event::AllocationFailed { .. })
        });
        match e {
            Some(Event::Allocated { relayed, .. }) => Ok(relayed),
            Some(Event::AllocationFailed { code, .. }) => Err(code),
            other => panic!("no allocation outcome: {other:?}"),
        }
    }

    /// Node `i` sends `data` to `peer` through the relay.
    pub fn send(&mut self, i: usize, peer: SocketAddr, data: &[u8]) {
        let now = self.now;
        self.client(i).send_to(now, peer, data).unwrap();
        self.pump();
    }

    /// A plain peer sends a datagram to the relayed address `relay`.
    pub fn peer_send(&mut self, from: SocketAddr, relay: SocketAddr, data: &[u8]) {
        let hop = Hop::ToRelay {
            relay,
            peer: from,
            bytes: data.to_vec(),
        };
        self.schedule(self.now + self.latency, hop);
    }

    /// What `peer` received so far.
    pub fn inbox(&self, peer: SocketAddr) -> &[(SocketAddr, Vec<u8>)] {
        self.peer_inbox.get(&peer).map_or(&[], Vec::as_slice)
    }

    /// The Data events of node `i` (payloads from `peer`), in order.
    pub fn data_from(&self, i: usize, peer: SocketAddr) -> Vec<Vec<u8>> {
        self.nodes[i]
            .as_ref()
            .map(|n| {
                n.events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Data { peer: p, data } if *p == peer => Some(data.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// RFC 6062: opens a new data connection from node `i`'s host to the
    /// server (same IP, new port, same transport).
    pub fn open_data_connection(&mut self, i: usize) -> FiveTuple {
        let port = self.fresh_port();
        let base = self.node(i).ft;
        let ft = FiveTuple {
            client: SocketAddr::new(base.client.ip(), port),
            ..base
        };
        self.data_rx.insert(ft, Vec::new());
        ft
    }

    /// RFC 6062: writes `bytes` on the data connection `ft`.
    pub fn data_write(&mut self, ft: FiveTuple, bytes: Vec<u8>) {
        self.schedule_stream(ft, true, bytes);
    }

    /// Whether the data connection `ft` was bound to a peer connection.
    pub fn bound_connection(&self, ft: FiveTuple) -> Option<u32> {
        self.raw.get(&ft).copied()
    }
}

impl Net {
    /// Node `i` binds a channel to `peer` and runs until the outcome: the
    /// channel number, or the ChannelBindFailed code.
    pub fn bind(&mut self, i: usize, peer: SocketAddr) -> Result<u16, u16> {
        let (now, from) = (self.now, self.event_count(i));
        self.client(i).bind_channel(now, peer).unwrap();
        let e = self.wait_event_from(i, from, Duration::from_secs(60), |e| match e {
            Event::ChannelBound { peer: p, .. } | Event::ChannelBindFailed { peer: p, .. } => {
                *p == peer
            }
            _ => false,
        });
        match e {
            Some(Event::ChannelBound { channel, .. }) => Ok(channel),
            Some(Event::ChannelBindFailed { code, .. }) => Err(code),
            other => panic!("no ChannelBind outcome: {other:?}"),
        }
    }

    /// Node `i` asks for a permission for `ip` and runs until the outcome
    /// (`Err` with the PermissionFailed code).
    pub fn permit(&mut self, i: usize, ip: IpAddr) -> Result<(), u16> {
        let (now, from) = (self.now, self.event_count(i));
        self.client(i).create_permission(now, ip).unwrap();
        let e = self.wait_event_from(i, from, Duration::from_secs(60), |e| match e {
            Event::PermissionCreated(p) | Event::PermissionFailed { peer: p, .. } => *p == ip,
            _ => false,
        });
        match e {
            Some(Event::PermissionCreated(_)) => Ok(()),
            Some(Event::PermissionFailed { code, .. }) => Err(code),
            other => panic!("no CreatePermission outcome: {other:?}"),
        }
    }

    /// Events of node `i` that report a failure of any kind.
    pub fn failures(&self, i: usize) -> Vec<Event> {
        self.nodes[i]
            .as_ref()
            .map(|n| {
                n.events
                    .iter()
                    .filter(|e| {
                        matches!(
                            e,
                            Event::AllocationFailed { .. }
                                | Event::PermissionFailed { .. }
                                | Event::ChannelBindFailed { .. }
                                | Event::RefreshFailed { .. }
                                | Event::AllocationExpired
                                | Event::ConnectFailed { .. }
                                | Event::TransactionTimedOut { .. }
                        )
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

//! One event loop: a `turn::server::Server` and the sockets it drives.
//!
//! Everything runs on one thread with `mio`: no locks and no task or channel
//! hop per packet. Client datagrams are handed to the server borrowed from
//! the receive buffer; peer datagrams are read into a buffer with headroom so
//! the server can frame them in place.

use std::collections::hash_map::Entry as MapEntry;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::event::Event;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use rustc_hash::FxHashMap;
use slab::Slab;
use turn::server::{
    AllocId, Destination, Output, PeerSend, RelayProtocol, Server, PEER_DATA_HEADROOM,
    PEER_DATA_TAILROOM,
};
use turn::{FiveTuple, Transport};

use crate::batch::{RecvBatch, SendBatch, BATCH};
use crate::conn::{ClientConn, Mode, PeerConn, PeerState, ReadOutcome, OUT_LIMIT};
use crate::logfmt::ClientAddr;
use crate::metrics::{DriverStats, Metrics};
use crate::sockets;

/// Datagrams read per readiness event before other sockets get a turn.
const UDP_BUDGET: usize = 256;
/// Stream bytes read per readiness event.
const STREAM_BUDGET: usize = 256 * 1024;
/// Queued stream bytes that trigger an immediate write.
const STREAM_FLUSH: usize = 16 * 1024;
/// Connections accepted per readiness event.
const ACCEPT_BUDGET: usize = 64;
/// Largest datagram.
const MAX_DATAGRAM: usize = 65_535;
/// Housekeeping and metrics interval.
const TICK: Duration = Duration::from_millis(250);
/// How long an RFC 6062 outgoing connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the event loop needs beyond the sans-IO server's configuration.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Mask client addresses in logs unless true.
    pub log_client_addresses: bool,
    /// TLS configuration for `tls://` listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TCP/TLS client connections in total.
    pub max_connections: usize,
    /// TCP/TLS client connections per client IP.
    pub max_connections_per_ip: usize,
    /// Close a stream that has not delivered a whole frame by then.
    pub handshake_timeout: Duration,
    /// Close a stream without allocation that has been silent this long.
    pub idle_timeout: Duration,
    /// Largest frame accepted on streams.
    pub max_frame: usize,
}

/// A new configuration for a running shard (hot reload), applied at the
/// next turn of its event loop (within [`TICK`]).
#[derive(Debug)]
pub struct Reload {
    /// The sans-IO server's new configuration (see
    /// [`Server::reconfigure`] for what changes live).
    pub server: turn::server::ServerConfig,
    /// The driver's new limits, log setting and TLS configuration (new TLS
    /// handshakes use it; established connections keep theirs).
    pub driver: DriverConfig,
    /// Answered with the names of the settings kept for lack of a restart.
    pub done: std::sync::mpsc::Sender<Vec<&'static str>>,
}

/// Listeners of one shard, already bound.
#[derive(Debug, Default)]
pub struct Listeners {
    /// UDP sockets.
    pub udp: Vec<UdpSocket>,
    /// TCP listeners.
    pub tcp: Vec<TcpListener>,
    /// TLS listeners.
    pub tls: Vec<TcpListener>,
}

enum Entry {
    Udp {
        sock: UdpSocket,
        local: SocketAddr,
        out: Box<SendBatch>,
    },
    Listener {
        l: TcpListener,
        local: SocketAddr,
        tls: bool,
    },
    RelayUdp {
        sock: UdpSocket,
        local: SocketAddr,
        /// The allocation it serves (set once the server made it).
        alloc: Option<AllocId>,
    },
    RelayTcp {
        l: TcpListener,
        local: SocketAddr,
    },
    Client(Box<ClientConn>),
    Peer(Box<PeerConn>),
}

struct Bufs {
    rx_v4: RecvBatch,
    rx_v6: RecvBatch,
    peer: Vec<u8>,
    frame: Vec<u8>,
    scratch: Vec<u8>,
}

impl Bufs {
    fn new() -> Self {
        Bufs {
            // One batch per address family: the kernel writes the sender's
            // address length into reused headers.
            rx_v4: RecvBatch::new(PEER_DATA_HEADROOM, PEER_DATA_TAILROOM),
            rx_v6: RecvBatch::new(PEER_DATA_HEADROOM, PEER_DATA_TAILROOM),
            peer: vec![0; PEER_DATA_HEADROOM + MAX_DATAGRAM + PEER_DATA_TAILROOM],
            frame: vec![0; 65_600],
            scratch: vec![0; 64 * 1024],
        }
    }

    fn rx(&mut self, local: &SocketAddr) -> &mut RecvBatch {
        if local.is_ipv4() {
            &mut self.rx_v4
        } else {
            &mut self.rx_v6
        }
    }
}

/// One event loop.
pub struct Shard {
    index: usize,
    poll: Poll,
    slab: Slab<Entry>,
    server: Server,
    cfg: DriverConfig,
    udp_by_local: FxHashMap<SocketAddr, Token>,
    relay_by_local: FxHashMap<SocketAddr, Token>,
    clients: FxHashMap<FiveTuple, Token>,
    conns_per_ip: FxHashMap<IpAddr, usize>,
    peers: FxHashMap<u32, Token>,
    again: Vec<Token>,
    /// RFC 6062 pipe ends paused by a bandwidth limit, and when to read
    /// them again (at most one entry per token).
    throttled: Vec<(Instant, Token)>,
    /// Listener sockets with datagrams queued in their send batch.
    dirty: Vec<Token>,
    /// Client streams with frames queued since the last flush.
    dirty_streams: Vec<Token>,
    stats: DriverStats,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    reloads: std::sync::mpsc::Receiver<Reload>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shard {
    /// A shard serving `listeners` with `server`.
    pub fn new(
        index: usize,
        server: Server,
        cfg: DriverConfig,
        listeners: Listeners,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
        reloads: std::sync::mpsc::Receiver<Reload>,
    ) -> io::Result<Self> {
        let mut s = Shard {
            index,
            poll: Poll::new()?,
            slab: Slab::new(),
            server,
            cfg,
            udp_by_local: FxHashMap::default(),
            relay_by_local: FxHashMap::default(),
            clients: FxHashMap::default(),
            conns_per_ip: FxHashMap::default(),
            peers: FxHashMap::default(),
            again: Vec::new(),
            throttled: Vec::new(),
            dirty: Vec::new(),
            dirty_streams: Vec::new(),
            stats: DriverStats::default(),
            metrics,
            stop,
            reloads,
        };
        for mut sock in listeners.udp {
            let local = sock.local_addr()?;
            let t = Token(s.slab.vacant_key());
            s.poll
                .registry()
                .register(&mut sock, t, Interest::READABLE)?;
            s.slab.insert(Entry::Udp {
                sock,
                local,
                out: Box::default(),
            });
            s.udp_by_local.insert(local, t);
        }
        for (list, tls) in [(listeners.tcp, false), (listeners.tls, true)] {
            for mut l in list {
                let local = l.local_addr()?;
                let t = Token(s.slab.vacant_key());
                s.poll.registry().register(&mut l, t, Interest::READABLE)?;
                s.slab.insert(Entry::Listener { l, local, tls });
            }
        }
        Ok(s)
    }

    /// Applies a [`Reload`]: the server's configuration and the driver's.
    fn reload(&mut self, r: Reload) {
        let mut kept = self.server.reconfigure(r.server);
        if r.driver.tls.is_some() != self.cfg.tls.is_some() {
            kept.push("tls");
        }
        let tls = r.driver.tls.or_else(|| self.cfg.tls.clone());
        self.cfg = DriverConfig { tls, ..r.driver };
        let _ = r.done.send(kept);
    }

    /// Runs until the stop flag is set.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut bufs = Bufs::new();
        let mut next_tick = Instant::now();
        let mut last_unix = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let timeout = if self.again.is_empty() {
                let mut t = next_tick;
                if let Some(d) = self.server.poll_timeout() {
                    t = t.min(d);
                }
                if let Some(d) = self.throttled.iter().map(|(d, _)| *d).min() {
                    t = t.min(d);
                }
                t.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.throttled.retain(|&(due, t)| {
                if due <= now {
                    self.again.push(t);
                }
                due > now
            });
            for ev in events.iter() {
                self.ready(ev, now, &mut bufs);
            }
            for t in std::mem::take(&mut self.again) {
                self.dispatch(t, true, false, now, &mut bufs);
            }
            self.flush_batches();
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
                self.drain(now, &mut bufs);
            }
            self.flush_batches();
            if now >= next_tick {
                while let Ok(r) = self.reloads.try_recv() {
                    self.reload(r);
                }
                if now.duration_since(last_unix) > Duration::from_secs(60) {
                    self.server.set_unix_time(now, unix_now());
                    last_unix = now;
                }
                self.housekeeping(now, &mut bufs);
                next_tick = now + TICK;
            }
        }
        self.publish();
        Ok(())
    }

    /// Sends what the listener sockets and client streams have queued.
    fn flush_batches(&mut self) {
        for t in std::mem::take(&mut self.dirty) {
            if let Some(Entry::Udp { sock, out, .. }) = self.slab.get_mut(t.0) {
                self.stats.send_errors += out.flush(sock.as_raw_fd()) as u64;
            }
        }
        for t in std::mem::take(&mut self.dirty_streams) {
            if let Some(Entry::Client(c)) = self.slab.get_mut(t.0) {
                c.dirty = false;
                if c.flush().is_err() {
                    self.again.push(t);
                }
            }
        }
    }

    fn publish(&mut self) {
        self.stats.connections_current = [0, 0];
        for (_, e) in self.slab.iter() {
            if let Entry::Client(c) = e {
                let i = if c.ft.transport == Transport::Tls {
                    1
                } else {
                    0
                };
                self.stats.connections_current[i] += 1;
            }
        }
        self.metrics
            .update(self.index, self.server.stats(), &self.stats);
    }

    fn ready(&mut self, ev: &Event, now: Instant, bufs: &mut Bufs) {
        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
        let writable = ev.is_writable() || ev.is_write_closed();
        self.dispatch(ev.token(), readable, writable, now, bufs);
    }

    fn dispatch(
        &mut self,
        t: Token,
        readable: bool,
        writable: bool,
        now: Instant,
        bufs: &mut Bufs,
    ) {
        match self.slab.get(t.0) {
            Some(Entry::Udp { .. }) if readable => self.udp_ready(t, now, bufs),
            Some(Entry::Listener { .. }) if readable => self.accept(t, now),
            Some(Entry::RelayUdp { .. }) if readable => self.relay_ready(t, now, bufs),
            Some(Entry::RelayTcp { .. }) if readable => self.accept_peer(t, now),
            Some(Entry::Client(_)) => self.client_ready(t, readable, writable, now, bufs),
            Some(Entry::Peer(_)) => self.peer_ready(t, readable, writable, now, bufs),
            _ => {}
        }
    }

    // ---- UDP clients -------------------------------------------------------

    fn udp_ready(&mut self, t: Token, now: Instant, bufs: &mut Bufs) {
        for _ in 0..UDP_BUDGET / BATCH {
            let Some(Entry::Udp { sock, local, .. }) = self.slab.get(t.0) else {
                return;
            };
            let local = *local;
            let fd = sock.as_raw_fd();
            let n = match bufs.rx(&local).recv(fd) {
                Ok(n) => n,
                Err(_) => return,
            };
            for i in 0..n {
                let Bufs {
                    rx_v4, rx_v6, peer, ..
                } = &mut *bufs;
                let rx = if local.is_ipv4() { rx_v4 } else { rx_v6 };
                let Some((from, slot, len)) = rx.get(i) else {
                    self.stats.oversize_datagrams += 1;
                    continue;
                };
                let ft = FiveTuple {
                    client: from,
                    server: local,
                    transport: Transport::Udp,
                };
                let data = &slot[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + len];
                if let Some(send) = self.server.handle_client_packet(now, ft, data) {
                    self.send_to_peer(now, send, peer);
                }
                self.drain(now, bufs);
            }
            if !bufs.rx(&local).full() {
                return;
            }
        }
        self.again.push(t);
    }

    /// Relays client data to a peer, or straight to another allocation of
    /// this relay without a socket round trip, as the server says.
    fn send_to_peer(&mut self, now: Instant, send: PeerSend<'_>, pbuf: &mut [u8]) {
        if let Destination::Allocation { id, from } = send.to {
            let len = send.data.len();
            pbuf[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + len].copy_from_slice(send.data);
            if let Some(f) = self.server.handle_allocation_data(now, id, from, pbuf, len) {
                self.send_client(&f.five_tuple, &pbuf[f.start..f.end]);
            }
            return;
        }
        let Some(t) = self.relay_by_local.get(&send.relay) else {
            return;
        };
        if let Some(Entry::RelayUdp { sock, .. }) = self.slab.get(t.0) {
            if sock.send_to(send.data, send.peer).is_err() {
                self.stats.send_errors += 1;
            }
        }
    }

    /// Sends a whole message or frame to a client flow.
    fn send_client(&mut self, ft: &FiveTuple, bytes: &[u8]) {
        match ft.transport {
            Transport::Udp => {
                let Some(t) = self.udp_by_local.get(&ft.server).copied() else {
                    return;
                };
                if let Some(Entry::Udp { sock, out, .. }) = self.slab.get_mut(t.0) {
                    if out.is_empty() {
                        self.dirty.push(t);
                    }
                    if out.is_full() {
                        self.stats.send_errors += out.flush(sock.as_raw_fd()) as u64;
                    }
                    if !out.push(ft.client, bytes) && sock.send_to(bytes, ft.client).is_err() {
                        self.stats.send_errors += 1;
                    }
                }
            }
            Transport::Tcp | Transport::Tls => {
                let Some(t) = self.clients.get(ft).copied() else {
                    return;
                };
                // Frames are coalesced and written once per event-loop turn
                // (fewer system calls and TLS records), or at once when much
                // is queued.
                let dead = match self.slab.get_mut(t.0) {
                    Some(Entry::Client(c)) => {
                        if !c.queue(bytes) {
                            self.stats.stream_drops += 1;
                        }
                        if c.queued() >= STREAM_FLUSH {
                            c.flush().is_err()
                        } else {
                            if !c.dirty {
                                c.dirty = true;
                                self.dirty_streams.push(t);
                            }
                            false
                        }
                    }
                    _ => false,
                };
                if dead {
                    self.again.push(t);
                }
            }
        }
    }

    // ---- relay sockets ----------------------------------------------------

    fn relay_ready(&mut self, t: Token, now: Instant, bufs: &mut Bufs) {
        for _ in 0..UDP_BUDGET / BATCH {
            let Some(Entry::RelayUdp { sock, local, alloc }) = self.slab.get(t.0) else {
                return;
            };
            let (local, alloc) = (*local, *alloc);
            let fd = sock.as_raw_fd();
            let rx = bufs.rx(&local);
            let n = match rx.recv(fd) {
                Ok(n) => n,
                Err(_) => return,
            };
            for i in 0..n {
                let Some((from, slot, len)) = rx.get(i) else {
                    self.stats.oversize_datagrams += 1;
                    continue;
                };
                let f = match alloc {
                    Some(id) => self.server.handle_allocation_data(now, id, from, slot, len),
                    None => self.server.handle_peer_data(now, local, from, slot, len),
                };
                if let Some(f) = f {
                    self.send_client(&f.five_tuple, &slot[f.start..f.end]);
                }
            }
            if !rx.full() {
                return;
            }
        }
        self.again.push(t);
    }

    // ---- TCP/TLS clients --------------------------------------------------

    fn accept(&mut self, t: Token, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Entry::Listener { l, local, tls }) = self.slab.get(t.0) else {
                return;
            };
            let (local, tls) = (*local, *tls);
            let (mut stream, from) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            };
            let per_ip = self.conns_per_ip.get(&from.ip()).copied().unwrap_or(0);
            if self.clients.len() >= self.cfg.max_connections
                || per_ip >= self.cfg.max_connections_per_ip
            {
                self.stats.connections_refused += 1;
                continue;
            }
            let tls_conn = if tls {
                let Some(cfg) = self.cfg.tls.clone() else {
                    continue;
                };
                match rustls::ServerConnection::new(cfg) {
                    Ok(c) => Some(c),
                    Err(_) => continue,
                }
            } else {
                None
            };
            let _ = stream.set_nodelay(true);
            let ft = FiveTuple {
                client: from,
                server: local,
                transport: if tls { Transport::Tls } else { Transport::Tcp },
            };
            let key = self.slab.vacant_key();
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            let conn = ClientConn::new(stream, tls_conn, ft, self.cfg.max_frame, now);
            self.slab.insert(Entry::Client(Box::new(conn)));
            self.clients.insert(ft, Token(key));
            *self.conns_per_ip.entry(from.ip()).or_insert(0) += 1;
        }
        self.again.push(t);
    }

    fn client_ready(
        &mut self,
        t: Token,
        readable: bool,
        writable: bool,
        now: Instant,
        bufs: &mut Bufs,
    ) {
        if writable {
            let res = match self.slab.get_mut(t.0) {
                Some(Entry::Client(c)) => c.flush().map(|()| c.queued() < OUT_LIMIT / 2),
                _ => return,
            };
            match res {
                Err(_) => return self.close_client(t, now, bufs),
                // A raw pipe may have paused reading from its peer.
                Ok(true) => {
                    if let Some(Entry::Client(c)) = self.slab.get(t.0) {
                        if let Mode::Raw { peer } = c.mode {
                            self.again.push(peer);
                        }
                    }
                }
                Ok(false) => {}
            }
        }
        if !readable {
            return;
        }
        let mode = match self.slab.get(t.0) {
            Some(Entry::Client(c)) => c.mode,
            _ => return,
        };
        let budget = match mode {
            Mode::Frames => STREAM_BUDGET,
            Mode::Raw { peer } => match self.slab.get(peer.0) {
                Some(Entry::Peer(p)) => {
                    let room = OUT_LIMIT.saturating_sub(p.queued());
                    match self.server.stream_allowance(now, p.id, true) {
                        Ok(n) => room.min(n),
                        Err(wait) => return self.throttle(t, now + wait),
                    }
                }
                _ => 0,
            },
        };
        if budget == 0 {
            return;
        }
        let outcome = match self.slab.get_mut(t.0) {
            Some(Entry::Client(c)) => c.read(&mut bufs.scratch, budget, now),
            _ => return,
        };
        match mode {
            Mode::Frames => {
                if !self.client_frames(t, now, bufs) {
                    return self.close_client(t, now, bufs);
                }
            }
            Mode::Raw { peer } => self.pipe_client_to_peer(t, peer, now, bufs),
        }
        match outcome {
            ReadOutcome::Drained => {}
            ReadOutcome::More => self.again.push(t),
            ReadOutcome::Closed => self.close_client(t, now, bufs),
        }
    }

    /// Hands every complete frame to the server; false if the stream is bad.
    fn client_frames(&mut self, t: Token, now: Instant, bufs: &mut Bufs) -> bool {
        loop {
            let (ft, len) = match self.slab.get_mut(t.0) {
                Some(Entry::Client(c)) if c.mode == Mode::Frames => match c.decoder.next_frame() {
                    Ok(Some((_kind, f))) => {
                        let len = f.len();
                        bufs.frame[..len].copy_from_slice(f);
                        c.got_frame = true;
                        (c.ft, len)
                    }
                    Ok(None) => return true,
                    Err(_) => return false,
                },
                _ => return true,
            };
            let Bufs { frame, peer, .. } = bufs;
            if let Some(send) = self.server.handle_client_packet(now, ft, &frame[..len]) {
                self.send_to_peer(now, send, peer);
            }
            self.drain(now, bufs);
        }
    }

    fn pipe_client_to_peer(&mut self, t: Token, peer: Token, now: Instant, bufs: &mut Bufs) {
        let data = match self.slab.get_mut(t.0) {
            Some(Entry::Client(c)) => std::mem::take(&mut c.raw_in),
            _ => return,
        };
        if data.is_empty() {
            return;
        }
        let dead = match self.slab.get_mut(peer.0) {
            Some(Entry::Peer(p)) => {
                p.queue(&data);
                self.server.stream_moved(now, p.id, true, data.len());
                p.flush().is_err()
            }
            _ => true,
        };
        if dead {
            self.close_peer(peer, now, bufs);
        }
    }

    fn close_client(&mut self, t: Token, now: Instant, bufs: &mut Bufs) {
        let Some(Entry::Client(mut c)) = self.slab.try_remove(t.0) else {
            return;
        };
        let _ = c.flush();
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.clients.remove(&c.ft);
        if let MapEntry::Occupied(mut e) = self.conns_per_ip.entry(c.ft.client.ip()) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        if let Mode::Raw { peer } = c.mode {
            self.close_peer(peer, now, bufs);
        }
        self.server.client_disconnected(now, c.ft);
        self.drain(now, bufs);
    }

    // ---- RFC 6062 peers ---------------------------------------------------

    fn accept_peer(&mut self, t: Token, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Entry::RelayTcp { l, local }) = self.slab.get(t.0) else {
                return;
            };
            let local = *local;
            let (mut stream, from) = match l.accept() {
                Ok(x) => x,
                Err(_) => return,
            };
            let Some(id) = self.server.peer_connection_incoming(now, local, from) else {
                continue;
            };
            let key = self.slab.vacant_key();
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.server.peer_connection_closed(now, id);
                continue;
            }
            self.slab.insert(Entry::Peer(Box::new(PeerConn::new(
                stream,
                id,
                PeerState::Waiting,
            ))));
            self.peers.insert(id, Token(key));
        }
        self.again.push(t);
    }

    fn peer_ready(
        &mut self,
        t: Token,
        readable: bool,
        writable: bool,
        now: Instant,
        bufs: &mut Bufs,
    ) {
        let (id, state) = match self.slab.get(t.0) {
            Some(Entry::Peer(p)) => (p.id, p.state),
            _ => return,
        };
        if let PeerState::Connecting { .. } = state {
            if !writable && !readable {
                return;
            }
            let ok = match self.slab.get_mut(t.0) {
                Some(Entry::Peer(p)) => {
                    matches!(p.stream.take_error(), Ok(None)) && p.stream.peer_addr().is_ok()
                }
                _ => false,
            };
            if ok {
                if let Some(Entry::Peer(p)) = self.slab.get_mut(t.0) {
                    p.state = PeerState::Waiting;
                }
                self.server.peer_connect_result(now, id, true);
                self.drain(now, bufs);
            } else {
                self.server.peer_connect_result(now, id, false);
                self.remove_peer(t);
                self.drain(now, bufs);
            }
            return;
        }
        let PeerState::Bound { client } = state else {
            // Not bound yet: leave the peer's bytes in the kernel.
            return;
        };
        if writable {
            let res = match self.slab.get_mut(t.0) {
                Some(Entry::Peer(p)) => p.flush().map(|()| p.queued() < OUT_LIMIT / 2),
                _ => return,
            };
            match res {
                Err(_) => return self.close_peer(t, now, bufs),
                Ok(true) => self.again.push(client),
                Ok(false) => {}
            }
        }
        if !readable {
            return;
        }
        let room = match self.slab.get(client.0) {
            Some(Entry::Client(c)) => OUT_LIMIT.saturating_sub(c.queued()),
            _ => return self.close_peer(t, now, bufs),
        };
        let room = match self.server.stream_allowance(now, id, false) {
            Ok(n) => room.min(n),
            Err(wait) => return self.throttle(t, now + wait),
        };
        if room == 0 {
            return;
        }
        let mut data = Vec::new();
        let outcome = match self.slab.get_mut(t.0) {
            Some(Entry::Peer(p)) => p.read(&mut bufs.scratch, &mut data, room),
            _ => return,
        };
        self.server.stream_moved(now, id, false, data.len());
        let dead = match self.slab.get_mut(client.0) {
            Some(Entry::Client(c)) => {
                c.queue(&data);
                c.flush().is_err()
            }
            _ => true,
        };
        if dead {
            return self.close_client(client, now, bufs);
        }
        match outcome {
            ReadOutcome::Drained => {}
            ReadOutcome::More => self.again.push(t),
            ReadOutcome::Closed => self.close_peer(t, now, bufs),
        }
    }

    /// Pauses reading `t` (an RFC 6062 pipe end over a bandwidth limit)
    /// until `due`; its bytes wait in the kernel, so TCP pushes back.
    fn throttle(&mut self, t: Token, due: Instant) {
        match self.throttled.iter_mut().find(|(_, x)| *x == t) {
            Some(entry) => entry.0 = entry.0.min(due),
            None => self.throttled.push((due, t)),
        }
    }

    fn remove_peer(&mut self, t: Token) -> Option<Box<PeerConn>> {
        let Some(Entry::Peer(mut p)) = self.slab.try_remove(t.0) else {
            return None;
        };
        let _ = self.poll.registry().deregister(&mut p.stream);
        self.peers.remove(&p.id);
        Some(p)
    }

    /// Closes a peer connection and, if bound, its client data connection.
    fn close_peer(&mut self, t: Token, now: Instant, bufs: &mut Bufs) {
        let Some(mut p) = self.remove_peer(t) else {
            return;
        };
        let _ = p.flush();
        self.server.peer_connection_closed(now, p.id);
        if let PeerState::Bound { client } = p.state {
            self.close_client(client, now, bufs);
        }
    }

    // ---- server outputs ---------------------------------------------------

    fn drain(&mut self, now: Instant, bufs: &mut Bufs) {
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::Transmit {
                    five_tuple,
                    payload,
                } => self.send_client(&five_tuple, &payload),
                Output::BindRelay {
                    token,
                    protocol,
                    addrs,
                } => {
                    let r = self.bind_relay(protocol, &addrs);
                    if let Some(id) = self.server.relay_bound(now, token, r) {
                        self.relay_sockets_serve(&addrs, id);
                    }
                }
                Output::ReleaseRelay { addr, .. } => {
                    if let Some(t) = self.relay_by_local.remove(&addr) {
                        self.remove_relay_socket(t);
                    }
                }
                Output::AllocationCreated {
                    five_tuple,
                    relayed,
                    protocol,
                    lifetime,
                } => {
                    let relayed: Vec<String> = relayed.iter().map(|a| a.to_string()).collect();
                    tracing::info!(
                        "allocation created client={} transport={} relayed={} peer_transport={} lifetime={}s",
                        ClientAddr::new(five_tuple.client, self.cfg.log_client_addresses),
                        five_tuple.transport,
                        relayed.join(","),
                        protocol.as_str(),
                        lifetime.as_secs(),
                    );
                }
                Output::AllocationEnded { five_tuple, reason } => {
                    tracing::info!(
                        "allocation ended client={} transport={} reason={}",
                        ClientAddr::new(five_tuple.client, self.cfg.log_client_addresses),
                        five_tuple.transport,
                        reason.as_str(),
                    );
                }
                Output::ConnectPeer {
                    connection_id,
                    relay,
                    peer,
                } => self.connect_peer(connection_id, relay, peer, now),
                Output::BindConnection {
                    connection_id,
                    data,
                } => self.bind_connection(connection_id, data),
                Output::ClosePeerConnection { connection_id } => {
                    if let Some(t) = self.peers.get(&connection_id).copied() {
                        if let Some(p) = self.remove_peer(t) {
                            if let PeerState::Bound { client } = p.state {
                                self.close_client(client, now, bufs);
                            }
                        }
                    }
                }
            }
        }
    }

    fn bind_relay(
        &mut self,
        protocol: RelayProtocol,
        addrs: &[SocketAddr],
    ) -> Result<(), SocketAddr> {
        let mut done: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            let key = self.slab.vacant_key();
            let entry = match protocol {
                RelayProtocol::Udp => sockets::udp(*a, false).and_then(|mut sock| {
                    self.poll
                        .registry()
                        .register(&mut sock, Token(key), Interest::READABLE)?;
                    Ok(Entry::RelayUdp {
                        sock,
                        local: *a,
                        alloc: None,
                    })
                }),
                RelayProtocol::Tcp => sockets::tcp_listener(*a, true).and_then(|mut l| {
                    self.poll
                        .registry()
                        .register(&mut l, Token(key), Interest::READABLE)?;
                    Ok(Entry::RelayTcp { l, local: *a })
                }),
            };
            match entry {
                Ok(e) => {
                    self.slab.insert(e);
                    self.relay_by_local.insert(*a, Token(key));
                    self.stats.relay_sockets += 1;
                    done.push(*a);
                }
                Err(err) => {
                    tracing::warn!("cannot bind relay socket {a}: {err}");
                    for d in done {
                        if let Some(t) = self.relay_by_local.remove(&d) {
                            self.remove_relay_socket(t);
                        }
                    }
                    return Err(*a);
                }
            }
        }
        Ok(())
    }

    /// Keeps the allocation's id with its relay sockets: peer data then
    /// reaches it without a lookup by address.
    fn relay_sockets_serve(&mut self, addrs: &[SocketAddr], id: AllocId) {
        for a in addrs {
            let Some(t) = self.relay_by_local.get(a) else {
                continue;
            };
            if let Some(Entry::RelayUdp { alloc, .. }) = self.slab.get_mut(t.0) {
                *alloc = Some(id);
            }
        }
    }

    fn remove_relay_socket(&mut self, t: Token) {
        if !matches!(
            self.slab.get(t.0),
            Some(Entry::RelayUdp { .. } | Entry::RelayTcp { .. })
        ) {
            return;
        }
        match self.slab.try_remove(t.0) {
            Some(Entry::RelayUdp { mut sock, .. }) => {
                let _ = self.poll.registry().deregister(&mut sock);
            }
            Some(Entry::RelayTcp { mut l, .. }) => {
                let _ = self.poll.registry().deregister(&mut l);
            }
            _ => {}
        }
        self.stats.relay_sockets = self.stats.relay_sockets.saturating_sub(1);
    }

    fn connect_peer(&mut self, id: u32, relay: SocketAddr, peer: SocketAddr, now: Instant) {
        let key = self.slab.vacant_key();
        let stream = sockets::tcp_connect(relay, peer).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match stream {
            Ok(s) => {
                let state = PeerState::Connecting {
                    deadline: now + CONNECT_TIMEOUT,
                };
                self.slab
                    .insert(Entry::Peer(Box::new(PeerConn::new(s, id, state))));
                self.peers.insert(id, Token(key));
            }
            Err(_) => self.server.peer_connect_result(now, id, false),
        }
    }

    fn bind_connection(&mut self, id: u32, data: FiveTuple) {
        let (Some(pt), Some(ct)) = (
            self.peers.get(&id).copied(),
            self.clients.get(&data).copied(),
        ) else {
            return;
        };
        let rest = match self.slab.get_mut(ct.0) {
            Some(Entry::Client(c)) => {
                c.mode = Mode::Raw { peer: pt };
                c.decoder.take_pending()
            }
            _ => return,
        };
        if let Some(Entry::Peer(p)) = self.slab.get_mut(pt.0) {
            p.state = PeerState::Bound { client: ct };
            p.queue(&rest);
            let _ = p.flush();
        }
        // Whatever the peer sent while waiting is in the kernel: read it now.
        self.again.push(pt);
    }

    // ---- housekeeping -----------------------------------------------------

    fn housekeeping(&mut self, now: Instant, bufs: &mut Bufs) {
        let mut close = Vec::new();
        let mut failed_connects = Vec::new();
        for (k, e) in self.slab.iter() {
            match e {
                Entry::Client(c) => {
                    let handshake =
                        !c.got_frame && now.duration_since(c.opened) > self.cfg.handshake_timeout;
                    let idle = c.mode == Mode::Frames
                        && !self.server.has_allocation(&c.ft)
                        && now.duration_since(c.last_activity) > self.cfg.idle_timeout;
                    if handshake || idle {
                        close.push(Token(k));
                    }
                }
                Entry::Peer(p) => {
                    if let PeerState::Connecting { deadline } = p.state {
                        if now >= deadline {
                            failed_connects.push((Token(k), p.id));
                        }
                    }
                }
                _ => {}
            }
        }
        for t in close {
            self.stats.connections_timed_out += 1;
            self.close_client(t, now, bufs);
        }
        for (t, id) in failed_connects {
            self.remove_peer(t);
            self.server.peer_connect_result(now, id, false);
        }
        self.drain(now, bufs);
        self.publish();
    }
}

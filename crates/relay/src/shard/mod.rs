//! One event loop: a `turn::server::Server` and the sockets it drives.
//!
//! Everything runs on one thread with `mio`: no locks and no task or channel
//! hop per packet. Client datagrams are handed to the server borrowed from
//! the receive buffer; peer datagrams are read into a buffer with headroom so
//! the server can frame them in place.
//!
//! By concern: [`udp`] (client datagrams, relay sockets, client data to
//! peers or another allocation), [`stream`] (TCP/TLS clients), [`pipe`]
//! (RFC 6062 peer connections and raw pipes), [`output`] (the server's
//! outputs and the per-turn send queues), [`housekeeping`] (timeouts,
//! metrics). This file: the shard's state, the slab of sockets and the loop.

mod housekeeping;
mod links;
mod output;
mod pipe;
mod stream;
#[cfg(test)]
mod tests;
mod udp;

pub use links::{links, ConnCounts, Links};

use std::io;
use std::net::SocketAddr;
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
    /// After a turn that had work, poll without sleeping this long before
    /// blocking in `epoll_wait` (`[relay] busy_poll_us`; zero: never spin).
    pub busy_poll: Duration,
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
    /// Client connections of all shards, by IP and in total.
    conns: Arc<ConnCounts>,
    /// Every shard's mailbox (RFC 6062 data connections handed over).
    mailboxes: Arc<[links::Mailbox]>,
    inbox: std::sync::mpsc::Receiver<links::Letter>,
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
    /// Shard `index` serving `listeners` with `server` (see [`links`]).
    pub fn new(
        index: usize,
        server: Server,
        cfg: DriverConfig,
        listeners: Listeners,
        links: Links,
    ) -> io::Result<Self> {
        let Links {
            poll,
            mailboxes,
            inbox,
            conns,
            metrics,
            stop,
            reloads,
        } = links;
        let mut s = Shard {
            index,
            poll,
            slab: Slab::new(),
            server,
            cfg,
            udp_by_local: FxHashMap::default(),
            relay_by_local: FxHashMap::default(),
            clients: FxHashMap::default(),
            conns,
            mailboxes,
            inbox,
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
        // Busy polling: after a turn with events, poll without sleeping
        // until then (a packet arriving meanwhile needs no wake-up).
        let mut spin_until: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let timeout = self.wait_time(now, next_tick, spin_until);
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
            if !events.is_empty() && !self.cfg.busy_poll.is_zero() {
                spin_until = Some(Instant::now() + self.cfg.busy_poll);
            }
        }
        self.publish();
        Ok(())
    }

    /// How long the next `epoll_wait` may block: not at all while work is
    /// pending or the busy-poll window of the last busy turn is open, else
    /// until the next tick, server timer or throttled stream.
    fn wait_time(&self, now: Instant, next_tick: Instant, spin_until: Option<Instant>) -> Duration {
        if !self.again.is_empty() || spin_until.is_some_and(|d| now < d) {
            return Duration::ZERO;
        }
        let mut t = next_tick;
        if let Some(d) = self.server.poll_timeout() {
            t = t.min(d);
        }
        if let Some(d) = self.throttled.iter().map(|(d, _)| *d).min() {
            t = t.min(d);
        }
        t.saturating_duration_since(now)
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
        if t == links::WAKER {
            return self.take_handoffs(now, bufs);
        }
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
}

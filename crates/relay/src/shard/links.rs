//! What the shards of one relay share, and how they talk: the client
//! connection counts (exact under concurrency), the metrics, the stop flag,
//! and one mailbox per shard for RFC 6062 data connections handed over.
//!
//! A ConnectionBind names its peer connection by CONNECTION-ID, and the id
//! names the shard that holds the peer connection. The kernel spreads TCP
//! connections over the shards' listeners by address hash, so the client's
//! data connection often lands on another shard: that shard hands the
//! whole connection (socket, TLS state, buffered bytes) and the
//! ConnectionBind frame to the owner through its mailbox and wakes it; the
//! owner answers the bind and pipes from then on. Only the control plane
//! crosses shards; no packet does.
//!
//! RFC 8016 mobility: a Refresh whose MOBILITY-TICKET names another
//! shard's allocation arrived here. On a stream, the connection is handed
//! to the owner like a ConnectionBind. A UDP flow cannot be handed over
//! (the kernel picks its shard by address hash), so the allocation comes
//! here instead: this shard asks the owner ([`Letter::Fetch`]), the owner
//! checks the Refresh and sends the allocation with its relay sockets
//! ([`Letter::Arrival`]), and this shard answers the Refresh.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use mio::{Poll, Waker};
use rustc_hash::FxHashMap;

use super::*;

/// The token of a shard's mailbox waker (slab keys never reach it).
pub(super) const WAKER: Token = Token(usize::MAX);

/// TCP/TLS client connections open, in total and per client IP, over all
/// shards: check-and-take under one lock (only accept and close take it).
#[derive(Debug, Default)]
pub struct ConnCounts {
    inner: Mutex<(usize, FxHashMap<IpAddr, usize>)>,
}

impl ConnCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, FxHashMap<IpAddr, usize>)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, or refuses (false) and counts
    /// nothing when a limit is reached.
    pub fn open(&self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> bool {
        let mut g = self.lock();
        let per_ip = g.1.get(&ip).copied().unwrap_or(0);
        if g.0 >= max_total || per_ip >= max_per_ip {
            return false;
        }
        g.0 += 1;
        *g.1.entry(ip).or_insert(0) += 1;
        true
    }

    /// A connection from `ip` counted by [`ConnCounts::open`] closed.
    pub fn close(&self, ip: IpAddr) {
        let mut g = self.lock();
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.1.remove(&ip);
            }
        }
    }

    /// Connections counted now (total, distinct IPs).
    #[cfg(test)]
    pub fn current(&self) -> (usize, usize) {
        let g = self.lock();
        (g.0, g.1.len())
    }
}

/// A client data connection moved to the shard that owns its ConnectionBind.
pub struct Handoff {
    conn: Box<ClientConn>,
    /// The ConnectionBind frame, not yet handed to any server.
    frame: Vec<u8>,
}

/// What shards send each other.
pub enum Letter {
    /// A client stream and the frame that names the receiving shard.
    Stream(Handoff),
    /// RFC 8016: shard `to` received `frame`, a Refresh from the UDP flow
    /// `ft` with a ticket naming the receiving shard's allocation.
    Fetch {
        /// The new client flow.
        ft: FiveTuple,
        /// The Refresh.
        frame: Vec<u8>,
        /// The shard that holds the flow.
        to: u32,
    },
    /// RFC 8016: an allocation moving to the receiving shard, with its
    /// relay sockets.
    Arrival {
        /// The allocation.
        moving: Box<turn::server::MovingAllocation>,
        /// Its relay sockets, deregistered from the sender's poll.
        sockets: Vec<(SocketAddr, UdpSocket)>,
    },
}

/// Where to hand a shard connections.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: Sender<Letter>,
    waker: Arc<Waker>,
}

/// Everything a shard shares with the others (see the module docs).
pub struct Links {
    /// The shard's own poll (its waker is in its mailbox).
    pub poll: Poll,
    /// Every shard's mailbox, by shard index.
    pub mailboxes: Arc<[Mailbox]>,
    /// This shard's mailbox.
    pub inbox: Receiver<Letter>,
    /// Connection counts of all shards.
    pub conns: Arc<ConnCounts>,
    /// Metrics of all shards.
    pub metrics: Arc<Metrics>,
    /// Set to stop every shard.
    pub stop: Arc<AtomicBool>,
    /// New configurations (hot reload).
    pub reloads: Receiver<Reload>,
}

/// The links of `n` shards sharing `metrics` and `stop`, and where to send
/// each one its reloads.
pub fn links(
    n: usize,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> io::Result<Vec<(Links, Sender<Reload>)>> {
    let conns = Arc::new(ConnCounts::default());
    let mut parts = Vec::with_capacity(n);
    let mut boxes = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, inbox) = mpsc::channel();
        boxes.push(Mailbox { tx, waker });
        parts.push((poll, inbox));
    }
    let mailboxes: Arc<[Mailbox]> = boxes.into();
    Ok(parts
        .into_iter()
        .map(|(poll, inbox)| {
            let (reload_tx, reloads) = mpsc::channel();
            let l = Links {
                poll,
                mailboxes: mailboxes.clone(),
                inbox,
                conns: conns.clone(),
                metrics: metrics.clone(),
                stop: stop.clone(),
                reloads,
            };
            (l, reload_tx)
        })
        .collect())
}

impl Shard {
    /// Moves client stream `t` and its ConnectionBind `frame` to shard
    /// `owner` (the connection stays counted: the counts are shared).
    pub(super) fn hand_over(&mut self, t: Token, owner: u32, frame: &[u8]) {
        let Some(Entry::Client(mut conn)) = self.slab.try_remove(t.0) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.clients.remove(&conn.ft);
        self.dirty_streams.retain(|&d| d != t);
        let ip = conn.ft.client.ip();
        let sent = self.mailboxes.get(owner as usize).is_some_and(|m| {
            let h = Handoff {
                conn,
                frame: frame.to_vec(),
            };
            m.tx.send(Letter::Stream(h)).is_ok() && m.waker.wake().is_ok()
        });
        if sent {
            self.stats.handovers += 1;
            tracing::debug!(
                "shard {}: ConnectionBind or mobility Refresh for shard {owner}, connection handed over",
                self.index
            );
        } else {
            // The owner is gone (shutting down): the connection closes.
            self.conns.close(ip);
        }
    }

    fn post(&self, to: u32, letter: Letter) -> bool {
        self.mailboxes
            .get(to as usize)
            .is_some_and(|m| m.tx.send(letter).is_ok() && m.waker.wake().is_ok())
    }

    /// RFC 8016: a Refresh from the UDP flow `ft` moves an allocation of
    /// shard `owner` here: ask for it.
    pub(super) fn fetch_allocation(&mut self, owner: u32, ft: FiveTuple, frame: &[u8]) {
        let letter = Letter::Fetch {
            ft,
            frame: frame.to_vec(),
            to: self.index as u32,
        };
        if !self.post(owner, letter) {
            self.stats.mobility_lost += 1;
        }
    }

    /// RFC 8016: shard `to` asks for an allocation: the server checks the
    /// Refresh (and answers it if refused); the allocation and its relay
    /// sockets leave.
    fn send_allocation(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        frame: &[u8],
        to: u32,
        bufs: &mut Bufs,
    ) {
        let Some(moving) = self.server.export_moving(now, ft, frame) else {
            self.drain(now, bufs);
            return;
        };
        let mut sockets = Vec::new();
        for a in moving.relay_addrs() {
            let Some(t) = self.relay_by_local.remove(&a) else {
                continue;
            };
            if let Some(Entry::RelayUdp { mut sock, .. }) = self.slab.try_remove(t.0) {
                let _ = self.poll.registry().deregister(&mut sock);
                self.stats.relay_sockets = self.stats.relay_sockets.saturating_sub(1);
                sockets.push((a, sock));
            }
        }
        let moving = Box::new(moving);
        if !self.post(to, Letter::Arrival { moving, sockets }) {
            // The other shard is gone (shutting down): the allocation and
            // its sockets end here.
            self.stats.mobility_lost += 1;
        }
        self.drain(now, bufs);
    }

    /// RFC 8016: an allocation arrived from another shard.
    fn receive_allocation(
        &mut self,
        now: Instant,
        moving: turn::server::MovingAllocation,
        sockets: Vec<(SocketAddr, UdpSocket)>,
        bufs: &mut Bufs,
    ) {
        let Some(id) = self.server.import_moving(now, moving) else {
            // Refused (the flow made an allocation meanwhile): the sockets close.
            self.drain(now, bufs);
            return;
        };
        self.stats.mobility_arrivals += 1;
        for (local, mut sock) in sockets {
            let key = self.slab.vacant_key();
            if (self.poll.registry())
                .register(&mut sock, Token(key), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            self.slab.insert(Entry::RelayUdp {
                sock,
                local,
                alloc: Some(id),
            });
            self.relay_by_local.insert(local, Token(key));
            self.stats.relay_sockets += 1;
        }
        self.drain(now, bufs);
    }

    /// Takes what other shards sent: connections handed over (each one's
    /// ConnectionBind or Refresh is answered here, then it is served like
    /// any other) and moving allocations.
    pub(super) fn take_handoffs(&mut self, now: Instant, bufs: &mut Bufs) {
        while let Ok(letter) = self.inbox.try_recv() {
            let (mut conn, frame) = match letter {
                Letter::Stream(Handoff { conn, frame }) => (conn, frame),
                Letter::Fetch { ft, frame, to } => {
                    self.send_allocation(now, ft, &frame, to, bufs);
                    continue;
                }
                Letter::Arrival { moving, sockets } => {
                    self.receive_allocation(now, *moving, sockets, bufs);
                    continue;
                }
            };
            let ft = conn.ft;
            let key = self.slab.vacant_key();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if (self.poll.registry())
                .register(&mut conn.stream, Token(key), interest)
                .is_err()
            {
                self.conns.close(ft.client.ip());
                continue;
            }
            self.slab.insert(Entry::Client(conn));
            self.clients.insert(ft, Token(key));
            let Bufs { peer, .. } = bufs;
            if let Some(send) = self.server.handle_client_packet(now, ft, &frame) {
                self.send_to_peer(now, send, peer);
            }
            self.drain(now, bufs);
            // Frames that came behind it, then whatever the socket holds.
            if !self.client_frames(Token(key), now, bufs) {
                self.close_client(Token(key), now, bufs);
                continue;
            }
            self.again.push(Token(key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_counts_are_exact_across_threads() {
        let c = Arc::new(ConnCounts::default());
        let ip = IpAddr::from([203, 0, 113, 1]);
        let taken: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..100).filter(|_| c.open(ip, 1000, 150)).count()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 150, "per IP");
        assert!(c.open(IpAddr::from([203, 0, 113, 2]), 152, 150));
        assert!(!c.open(IpAddr::from([203, 0, 113, 3]), 151, 150), "total");
        for _ in 0..150 {
            c.close(ip);
        }
        assert_eq!(c.current(), (1, 1));
    }
}

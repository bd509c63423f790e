//! The sans-IO TURN server (RFC 8656, RFC 6062).
//!
//! # Run loop
//! ```text
//! loop {
//!     // a datagram or stream frame from a client:
//!     if let Some(send) = server.handle_client_packet(now, five_tuple, bytes) {
//!         match send.to {
//!             Destination::Network => relay_socket(send.relay).send_to(send.data, send.peer),
//!             // another allocation of this server: no kernel round trip
//!             Destination::Allocation { id, from } => { copy send.data behind headroom;
//!                 server.handle_allocation_data(now, id, from, &mut buf, len) ... }
//!         }
//!     }
//!     // a datagram from a peer on the relay socket of allocation `id`
//!     // (the id relay_bound returned), read into buf[PEER_DATA_HEADROOM..]:
//!     if let Some(fwd) = server.handle_allocation_data(now, id, peer, &mut buf, len) {
//!         client(fwd.five_tuple).send(&buf[fwd.start..fwd.end]);
//!     }
//!     while let Some(out) = server.poll_output() { /* transmit, bind/release sockets, log */ }
//!     sleep_until(server.poll_timeout()); server.handle_timeout(now);
//! }
//! ```
//!
//! # What owns what
//! - `AllocationTable` (`table.rs`): the live allocations (slab, [`AllocId`] =
//!   slot + generation), the 5-tuple and relayed-address indexes and the
//!   live-allocation gauges; only its `insert`/`remove` touch them.
//! - `Admission` (`admission.rs`): the quota shares (per user, per client IP,
//!   total; taken at Allocate, held while pending and while alive), counted
//!   in a [`QuotaBook`] that servers of several shards may share
//!   ([`Server::with_quota_book`]), and this server's relay port pools.
//! - The server: pending allocations (waiting for sockets), reservations,
//!   RFC 6062 peer connections (each naming its allocation by id), timers
//!   (allocations by id), nonces, the rate limiter, counters.
//! - [`Refusal`]: every error response's code, reason phrase and counter.
//!
//! The data plane (ChannelData, Send and Data indications) is answered
//! synchronously without allocating: the payload is borrowed from the input,
//! and the framing towards the client is written into headroom the driver
//! leaves before the peer data. Bandwidth limits ([`Limits`]'
//! `bytes_per_sec_*`) are byte-rate buckets per allocation and in total,
//! checked there in both directions (see [`crate::bandwidth`]); data over a
//! limit is dropped and counted in [`Stats`]. Everything else goes through the output queue.

mod admission;
mod allocation;
mod config;
pub mod mobility;
mod ports;
mod redirect;
mod refusal;
mod reply;
mod request;
mod sharding;
mod stats;
mod table;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use stun::{attr, ChannelData, Class, Message, Method, TransactionId};

pub use admission::QuotaBook;
pub use allocation::{RelayProtocol, Relayed};
pub use config::{
    Limits, RelayAddresses, ServerConfig, CHANNEL_COOLDOWN, CHANNEL_LIFETIME,
    CONNECTION_BIND_TIMEOUT, DEFAULT_LIFETIME, MAX_LIFETIME, PERMISSION_LIFETIME,
    RESERVATION_LIFETIME,
};
pub use mobility::MovingAllocation;
pub use redirect::{Alternate, Redirect};
pub use refusal::Refusal;
pub use sharding::ShardId;
pub use stats::{AuthFailure, Stats};
pub use table::AllocId;

use crate::bandwidth::{self, ByteBucket};
use crate::nonce::NonceGenerator;
use crate::policy::PeerPolicy;
use crate::ratelimit::RateLimiter;
use crate::FiveTuple;
use admission::Admission;
use table::AllocationTable;

/// Bytes the driver must leave free before peer data given to
/// [`Server::handle_peer_data`], so that a Data indication header fits.
pub const PEER_DATA_HEADROOM: usize = 48;
/// Bytes the driver must leave free after peer data (stream padding).
pub const PEER_DATA_TAILROOM: usize = 4;
/// Index of the client → peer direction in byte-rate buckets and counters.
const TO_PEER: usize = 0;
/// Index of the peer → client direction.
const TO_CLIENT: usize = 1;
/// How often expired permissions and channels are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Data a client sent that the driver must relay to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSend<'a> {
    /// The allocation's relay socket (its local address).
    pub relay: SocketAddr,
    /// The peer.
    pub peer: SocketAddr,
    /// The payload, borrowed from the client's packet.
    pub data: &'a [u8],
    /// Where the data goes.
    pub to: Destination,
}

/// Where client data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Out of the relay socket `relay` to `peer`.
    Network,
    /// The peer is a relayed address of another allocation of this server:
    /// hand the data straight to it with [`Server::handle_allocation_data`]
    /// (`id`, and `from` as the peer: the sender's relayed address), without
    /// a round trip through the kernel.
    Allocation {
        /// The receiving allocation.
        id: AllocId,
        /// The sending allocation's relayed address, the source the
        /// receiver sees.
        from: SocketAddr,
    },
}

/// Peer data framed for a client: send `buf[start..end]` on `five_tuple`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientForward {
    /// The client flow.
    pub five_tuple: FiveTuple,
    /// Start of the framed bytes in the driver's buffer.
    pub start: usize,
    /// End of the framed bytes.
    pub end: usize,
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its lifetime ran out.
    Expired,
    /// The client deleted it (Refresh with LIFETIME 0).
    Deleted,
    /// The client's TCP/TLS connection closed.
    Disconnected,
}

impl EndReason {
    /// Log label.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Deleted => "deleted",
            EndReason::Disconnected => "disconnected",
        }
    }
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `payload` to the client on `five_tuple`.
    Transmit {
        /// The client flow.
        five_tuple: FiveTuple,
        /// A whole STUN message (framing on streams is the message itself).
        payload: Vec<u8>,
    },
    /// Bind relay sockets on exactly these addresses (UDP sockets, or TCP
    /// listeners for RFC 6062), then call [`Server::relay_bound`] with `token`.
    BindRelay {
        /// Identifies the pending allocation.
        token: u64,
        /// UDP or TCP.
        protocol: RelayProtocol,
        /// Local addresses to bind.
        addrs: Vec<SocketAddr>,
    },
    /// Close the relay socket bound on `addr`.
    ReleaseRelay {
        /// The local address.
        addr: SocketAddr,
        /// UDP or TCP.
        protocol: RelayProtocol,
    },
    /// An allocation was created (for logs and metrics).
    AllocationCreated {
        /// The client flow.
        five_tuple: FiveTuple,
        /// Advertised relayed addresses.
        relayed: Vec<SocketAddr>,
        /// UDP or TCP relaying.
        protocol: RelayProtocol,
        /// Granted lifetime.
        lifetime: Duration,
    },
    /// An allocation ended (for logs and metrics).
    AllocationEnded {
        /// The client flow.
        five_tuple: FiveTuple,
        /// Why.
        reason: EndReason,
    },
    /// RFC 8016: an allocation moved to a new client flow (for logs and
    /// metrics); data for it goes to `to` from now on.
    AllocationMoved {
        /// The flow it left.
        from: FiveTuple,
        /// The flow it serves now.
        to: FiveTuple,
    },
    /// RFC 6062: open a TCP connection from `relay` to `peer`, then call
    /// [`Server::peer_connect_result`].
    ConnectPeer {
        /// Connection id.
        connection_id: u32,
        /// Local relay address to connect from.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
    },
    /// RFC 6062: the client data connection `data` is now bound to the peer
    /// connection; from here on move raw bytes between them.
    BindConnection {
        /// Connection id.
        connection_id: u32,
        /// The client data connection.
        data: FiveTuple,
    },
    /// RFC 6062: close the peer connection (and its client data connection, if bound).
    ClosePeerConnection {
        /// Connection id.
        connection_id: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Allocation(AllocId),
    Reservation([u8; 8]),
    Connection(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Connect sent to the driver; answer the client's request on success.
    Connecting { txid: TransactionId },
    /// Waiting for the client's ConnectionBind until the deadline.
    AwaitingBind { deadline: Instant },
    /// Bound to a client data connection.
    Bound { data: FiveTuple },
}

#[derive(Debug)]
struct PeerConnection {
    allocation: AllocId,
    peer: SocketAddr,
    state: ConnState,
    seal: reply::Seal,
}

#[derive(Debug)]
struct PendingAllocation {
    request: request::AllocateRequest,
    addrs: Vec<(SocketAddr, SocketAddr)>,
    attempts: u8,
}

/// The sans-IO TURN server. See the module documentation for the run loop.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    policy: PeerPolicy,
    nonces: NonceGenerator,
    limiter: RateLimiter,
    allocations: AllocationTable,
    admission: Admission,
    /// Every IP of the relay (local and advertised): only data to these
    /// may go to another allocation of this server.
    relay_ips: Box<[std::net::IpAddr]>,
    pending: FxHashMap<u64, PendingAllocation>,
    pending_by_tuple: FxHashMap<FiveTuple, u64>,
    next_token: u64,
    connections: FxHashMap<u32, PeerConnection>,
    data_connections: FxHashMap<FiveTuple, u32>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    next_sweep: Instant,
    outputs: VecDeque<Output>,
    rng: StdRng,
    unix_base: (Instant, u64),
    stats: Stats,
    /// The total byte-rate buckets: [to peer, to client].
    bandwidth_total: [ByteBucket; 2],
    /// Which shard this server is ([`Server::set_shard`]).
    shard: ShardId,
    /// RFC 8016 ticket keys (from the nonce and token secret).
    tickets: mobility::TicketKeys,
}

impl Server {
    /// A server; `unix_now` is the wall clock (seconds since 1970) at `now`,
    /// used for REST credential expiry.
    pub fn new(config: ServerConfig, now: Instant, unix_now: u64) -> Self {
        let book = QuotaBook::new(config.ports.clone());
        Self::with_quota_book(config, now, unix_now, book)
    }

    /// A server whose allocation quotas (per user, per client IP, total)
    /// are counted in `book`, shared with the other servers given the same
    /// book (one per shard): the limits then hold for all of them together.
    pub fn with_quota_book(
        config: ServerConfig,
        now: Instant,
        unix_now: u64,
        book: std::sync::Arc<QuotaBook>,
    ) -> Self {
        let policy = config.policy.clone().relay_addresses(config.relay.all());
        let nonces = NonceGenerator::new(config.secret, config.nonce_lifetime, now)
            .with_unix_epoch(unix_now.saturating_mul(1000));
        let l = &config.limits;
        let limiter = RateLimiter::new(
            l.unauthenticated_rate,
            l.unauthenticated_burst,
            l.rate_limiter_sources,
        );
        Server {
            admission: Admission::new(book, config.ports.clone()),
            relay_ips: config.relay.all().into(),
            policy,
            nonces,
            limiter,
            allocations: AllocationTable::default(),
            pending: FxHashMap::default(),
            pending_by_tuple: FxHashMap::default(),
            next_token: 1,
            connections: FxHashMap::default(),
            data_connections: FxHashMap::default(),
            timers: BinaryHeap::new(),
            next_sweep: now + SWEEP_INTERVAL,
            outputs: VecDeque::new(),
            rng: StdRng::from_entropy(),
            unix_base: (now, unix_now),
            stats: Stats::default(),
            bandwidth_total: Default::default(),
            shard: ShardId::ONE,
            tickets: mobility::TicketKeys::new(&config.secret),
            config,
        }
    }

    /// Makes this server shard `shard` of a relay whose shards share one
    /// [`QuotaBook`] (see [`sharding`](ShardId)): it takes relay ports from its
    /// slice of the configured range only, stamps its RFC 6062 connection
    /// ids and reservation tokens with its index, and lets clients reach
    /// relayed addresses of the other shards (through the network). Call it
    /// before the first request.
    pub fn set_shard(&mut self, shard: ShardId) {
        self.shard = shard;
        self.admission.set_ports(shard.ports(&self.config.ports));
    }

    /// Which shard this server is.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// If `peer` is a relayed address another shard may hold (a relay IP
    /// and a relay port some shard holds: callers have found no live
    /// allocation of their own there), where to send to reach it: the local
    /// relay IP for an advertised (external) one. A port is mostly its
    /// slice's shard's, but a RESERVATION-TOKEN may be redeemed on any.
    fn other_shard_peer(&self, peer: &SocketAddr, protocol: RelayProtocol) -> Option<SocketAddr> {
        if self.shard.count < 2 || !self.config.ports.contains(&peer.port()) {
            return None;
        }
        let r = &self.config.relay;
        let ip = peer.ip();
        let local = if Some(ip) == r.ipv4 || Some(ip) == r.ipv6 {
            ip
        } else if Some(ip) == r.external_ipv4 {
            r.ipv4?
        } else if Some(ip) == r.external_ipv6 {
            r.ipv6?
        } else {
            return None;
        };
        let local = SocketAddr::new(local, peer.port());
        let tcp = protocol == RelayProtocol::Tcp;
        self.admission.port_in_use(&local, tcp).then_some(local)
    }

    /// Data that came through the network from another shard's relay
    /// socket carries its local address: the client knows it by the
    /// advertised one (only differs behind NAT with `external_ip`).
    fn as_advertised(&self, peer: SocketAddr) -> SocketAddr {
        let r = &self.config.relay;
        if self.shard.count < 2 || (r.external_ipv4.is_none() && r.external_ipv6.is_none()) {
            return peer;
        }
        let ip = peer.ip();
        let ext = if Some(ip) == r.ipv4 {
            r.external_ipv4
        } else if Some(ip) == r.ipv6 {
            r.external_ipv6
        } else {
            None
        };
        match ext {
            Some(e) if self.config.ports.contains(&peer.port()) => SocketAddr::new(e, peer.port()),
            _ => peer,
        }
    }

    /// If `packet` is a ConnectionBind request (RFC 6062) whose
    /// CONNECTION-ID another shard issued, that shard's index: the driver
    /// hands the data connection over to it. Cheap for anything else (two
    /// bytes compared).
    pub fn connection_bind_shard(&self, packet: &[u8]) -> Option<u32> {
        if self.shard.count < 2 || packet.len() < stun::HEADER_LEN || packet[..2] != [0x00, 0x0B] {
            return None;
        }
        let msg = Message::parse(packet).ok()?;
        if msg.class() != Class::Request || msg.method() != Method::CONNECTION_BIND {
            return None;
        }
        let Some(Ok(attr::Attribute::ConnectionId(id))) = msg.get(attr::CONNECTION_ID) else {
            return None;
        };
        let owner = ShardId::of_id(self.shard.count, u64::from(id));
        (owner != self.shard.index).then_some(owner)
    }

    /// Applies a new configuration to a running server (hot reload) and
    /// returns the names of the settings that cannot change while it runs
    /// and were kept: `relay` (the relay addresses), `ports`, `tcp_relay`,
    /// `nonce_lifetime` (when they differ). The nonce secret is always kept,
    /// so nonces and reservation tokens handed out stay valid.
    ///
    /// Live allocations keep working: they were admitted under the old
    /// quotas and keep their permissions and channels; their next Refresh is
    /// authenticated with the new credentials (a rotated-out REST secret
    /// stops refreshing the allocations it signed, as it should). New
    /// bandwidth limits apply at once to every allocation (the byte-rate
    /// buckets keep their fill). A changed unauthenticated rate resets the
    /// rate limiter.
    pub fn reconfigure(&mut self, new: ServerConfig) -> Vec<&'static str> {
        let mut kept = Vec::new();
        let old = &self.config;
        if new.relay != old.relay {
            kept.push("relay");
        }
        if new.ports != old.ports {
            kept.push("ports");
        }
        if new.tcp_relay != old.tcp_relay {
            kept.push("tcp_relay");
        }
        if new.nonce_lifetime != old.nonce_lifetime {
            kept.push("nonce_lifetime");
        }
        let (l, o) = (&new.limits, &old.limits);
        if (
            l.unauthenticated_rate,
            l.unauthenticated_burst,
            l.rate_limiter_sources,
        ) != (
            o.unauthenticated_rate,
            o.unauthenticated_burst,
            o.rate_limiter_sources,
        ) {
            self.limiter = RateLimiter::new(
                l.unauthenticated_rate,
                l.unauthenticated_burst,
                l.rate_limiter_sources,
            );
        }
        let c = &mut self.config;
        self.policy = new.policy.clone().relay_addresses(c.relay.all());
        c.credentials = new.credentials;
        c.policy = new.policy;
        c.default_lifetime = new.default_lifetime;
        c.max_lifetime = new.max_lifetime;
        c.software = new.software;
        c.offer_sha256 = new.offer_sha256;
        c.mobility = new.mobility;
        c.limits = new.limits;
        let mut redirect = new.redirect;
        redirect.keep_state_of(&c.redirect);
        c.redirect = redirect;
        kept
    }

    /// Checks the invariants between the tables (tests): the allocation
    /// table's own, quota shares = live + pending allocations, the gauges
    /// in [`Stats`], and that every peer connection's allocation lives and
    /// lists it.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.allocations.check();
        assert_eq!(
            self.admission.admitted() as usize,
            self.allocations.len() + self.pending.len()
        );
        assert_eq!(self.pending.len(), self.pending_by_tuple.len());
        assert_eq!(self.stats.allocations_current, self.allocations.current());
        for (id, c) in &self.connections {
            let a = self.allocations.by_id(c.allocation);
            assert!(a.is_some_and(|a| a.connections.contains(id)));
        }
    }

    /// Re-anchors the wall clock (call now and then to follow clock changes).
    pub fn set_unix_time(&mut self, now: Instant, unix_now: u64) {
        self.unix_base = (now, unix_now);
    }

    fn unix_now(&self, now: Instant) -> u64 {
        let (base, unix) = self.unix_base;
        unix + now.saturating_duration_since(base).as_secs()
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live allocations.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Whether the client flow has a live allocation.
    pub fn has_allocation(&self, five_tuple: &FiveTuple) -> bool {
        self.allocations.contains(five_tuple)
    }

    /// Whether `addr` is a relayed address of a live allocation relaying
    /// `protocol`: UDP and TCP (RFC 6062) allocations never reach each other.
    pub(crate) fn is_live_relay(&self, addr: &SocketAddr, protocol: RelayProtocol) -> bool {
        self.allocations
            .by_relay(addr)
            .is_some_and(|id| self.relays_with(id, protocol))
    }

    pub(crate) fn relays_with(&self, id: AllocId, protocol: RelayProtocol) -> bool {
        self.allocations
            .by_id(id)
            .is_some_and(|a| a.protocol == protocol)
    }

    /// Whether `addr` (local or advertised) is a relayed address of a live allocation.
    pub fn is_relay_address(&self, addr: &SocketAddr) -> bool {
        self.allocations.by_relay(addr).is_some()
    }

    /// Next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Server::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.timers.peek().map(|Reverse((t, _))| *t);
        Some(t.map_or(self.next_sweep, |t| t.min(self.next_sweep)))
    }

    /// Expires allocations, reservations and unbound peer connections whose
    /// time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::Allocation(id) => {
                    if self.allocations.by_id(id).is_some_and(|a| a.expires <= now) {
                        self.remove_allocation(id, EndReason::Expired);
                    }
                }
                Timer::Reservation(token) => self.admission.expire_reservation(&token, now),
                Timer::Connection(id) => {
                    let expired = self.connections.get(&id).is_some_and(|c| {
                        matches!(c.state, ConnState::AwaitingBind { deadline } if deadline <= now)
                    });
                    if expired {
                        self.close_connection(id);
                    }
                }
            }
        }
        if now >= self.next_sweep {
            for a in self.allocations.values_mut() {
                a.sweep(now);
            }
            self.next_sweep = now + SWEEP_INTERVAL;
        }
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    /// A packet from a client flow: a datagram, or one frame of a stream.
    ///
    /// Returns data to relay to a peer (ChannelData or Send indication);
    /// STUN requests are answered through [`Server::poll_output`].
    pub fn handle_client_packet<'a>(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        packet: &'a [u8],
    ) -> Option<PeerSend<'a>> {
        match packet.first().map(|b| b >> 6) {
            Some(0b01) => self.client_channel_data(now, five_tuple, packet),
            Some(0b00) => {
                let Ok(msg) = Message::parse(packet) else {
                    self.stats.malformed += 1;
                    return None;
                };
                if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
                    self.stats.malformed += 1;
                    return None;
                }
                match (msg.class(), msg.method()) {
                    (Class::Indication, Method::SEND) => self.client_send(now, five_tuple, &msg),
                    (Class::Request, _) => {
                        self.handle_request(now, five_tuple, &msg);
                        None
                    }
                    // Binding indications are keepalives; responses and other
                    // indications from clients are dropped.
                    _ => None,
                }
            }
            _ => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    fn client_channel_data<'a>(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        packet: &'a [u8],
    ) -> Option<PeerSend<'a>> {
        let Ok(cd) = ChannelData::parse(packet) else {
            self.stats.malformed += 1;
            return None;
        };
        let id = self.allocations.id_of(&ft);
        let Some(alloc) = id
            .and_then(|id| self.allocations.by_id(id))
            .filter(|a| now < a.expires)
        else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let Some(ch) = alloc.channels.get(&cd.number).filter(|c| c.live(now)) else {
            self.stats.dropped_no_channel += 1;
            return None;
        };
        let peer = ch.peer;
        self.relay_to_peer(now, id?, peer, cd.data)
    }

    fn client_send<'a>(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'a>,
    ) -> Option<PeerSend<'a>> {
        let peer = match msg.get(attr::XOR_PEER_ADDRESS) {
            Some(Ok(attr::Attribute::XorPeerAddress(p))) => p,
            _ => {
                self.stats.malformed += 1;
                return None;
            }
        };
        let data = match msg.get(attr::DATA) {
            Some(Ok(attr::Attribute::Data(d))) => d,
            _ => {
                self.stats.malformed += 1;
                return None;
            }
        };
        let id = self.allocations.id_of(&ft);
        let live = id.and_then(|id| self.allocations.by_id(id));
        if live.is_none_or(|a| now >= a.expires) {
            self.stats.dropped_no_allocation += 1;
            return None;
        }
        self.relay_to_peer(now, id?, peer, data)
    }

    /// Common checks for client → peer data: UDP allocation, family,
    /// permission, and for the relay's own IPs a live allocation (then the
    /// data goes to that allocation directly). The allocation is found by
    /// its id: no hash lookup beyond the permission's (and, for the relay's
    /// own IPs only, the relayed-address index).
    fn relay_to_peer<'a>(
        &mut self,
        now: Instant,
        id: AllocId,
        peer: SocketAddr,
        data: &'a [u8],
    ) -> Option<PeerSend<'a>> {
        let alloc = self.allocations.by_id(id)?;
        if alloc.protocol != RelayProtocol::Udp {
            self.stats.malformed += 1;
            return None;
        }
        let Some(relayed) = alloc.relayed_for(&peer) else {
            self.stats.peer_refused += 1;
            return None;
        };
        let (relay, from) = (relayed.local, relayed.advertised);
        let Some(perm) = alloc.permission(&peer.ip(), now) else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        let own = perm.own;
        let local = if self.relay_ips.contains(&peer.ip()) {
            (self.allocations.by_relay(&peer)).filter(|&d| self.relays_with(d, RelayProtocol::Udp))
        } else {
            None
        };
        // A relayed address of another shard: through the network.
        let mut peer = peer;
        if own && local.is_none() {
            match self.other_shard_peer(&peer, RelayProtocol::Udp) {
                Some(p) => peer = p,
                None => {
                    self.stats.peer_refused += 1;
                    return None;
                }
            }
        }
        let l = &self.config.limits;
        let (one, all) = (l.bytes_per_sec_per_allocation, l.bytes_per_sec_total);
        if one != 0 || all != 0 {
            let alloc = self.allocations.by_id_mut(id)?;
            let total = &mut self.bandwidth_total[TO_PEER];
            let b = &mut alloc.bandwidth[TO_PEER];
            if let Err(e) = bandwidth::admit_both(now, b, one, total, all, data.len()) {
                self.stats.bandwidth_dropped(TO_PEER, e, data.len());
                return None;
            }
        }
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += data.len() as u64;
        let to = match local {
            Some(id) => Destination::Allocation { id, from },
            None => Destination::Network,
        };
        Some(PeerSend {
            relay,
            peer,
            data,
            to,
        })
    }

    /// A datagram from `peer` arrived on the relay socket bound at `relay`.
    ///
    /// The driver reads it into `buf[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + len]`
    /// and leaves [`PEER_DATA_TAILROOM`] bytes after it; on success the server
    /// has written ChannelData or Data indication framing around it, and the
    /// driver sends `buf[start..end]` to the client.
    ///
    /// A driver that keeps each relay socket's [`AllocId`] (from
    /// [`Server::relay_bound`]) calls [`Server::handle_allocation_data`]
    /// instead and saves the lookup by address.
    pub fn handle_peer_data(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<ClientForward> {
        let Some(id) = self.allocations.by_relay(&relay) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        self.handle_allocation_data(now, id, peer, buf, len)
    }

    /// A datagram from `peer` for the allocation `id`: from its relay
    /// socket, or from another allocation ([`Destination::Allocation`]).
    /// Framed in place like [`Server::handle_peer_data`].
    pub fn handle_allocation_data(
        &mut self,
        now: Instant,
        id: AllocId,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<ClientForward> {
        const H: usize = PEER_DATA_HEADROOM;
        if buf.len() < H + len + PEER_DATA_TAILROOM || len > usize::from(u16::MAX) - 64 {
            self.stats.malformed += 1;
            return None;
        }
        let peer = self.as_advertised(peer);
        let Some(alloc) = self
            .allocations
            .by_id_mut(id)
            .filter(|a| now < a.expires && a.protocol == RelayProtocol::Udp)
        else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        if alloc.permission(&peer.ip(), now).is_none() {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        let ft = alloc.five_tuple;
        let stream = ft.transport.is_stream();
        let channel = alloc
            .peer_channels
            .get(&peer)
            .filter(|n| {
                alloc
                    .channels
                    .get(n)
                    .is_some_and(|c| c.live(now) && c.peer == peer)
            })
            .copied();
        let l = &self.config.limits;
        let (one, all) = (l.bytes_per_sec_per_allocation, l.bytes_per_sec_total);
        if one != 0 || all != 0 {
            let total = &mut self.bandwidth_total[TO_CLIENT];
            let b = &mut alloc.bandwidth[TO_CLIENT];
            if let Err(e) = bandwidth::admit_both(now, b, one, total, all, len) {
                self.stats.bandwidth_dropped(TO_CLIENT, e, len);
                return None;
            }
        }
        self.stats.packets_to_client += 1;
        self.stats.bytes_to_client += len as u64;
        let (start, end) = match channel {
            Some(number) => {
                let start = H - 4;
                // Cannot fail: the header slot is in bounds and len fits in u16.
                stun::channel::write_header(number, len as u16, &mut buf[start..]).ok()?;
                let mut end = H + len;
                if stream {
                    let padded = (end - start + 3) & !3;
                    buf[end..start + padded].fill(0);
                    end = start + padded;
                }
                (start, end)
            }
            None => {
                let txid = TransactionId(self.rng.gen());
                let alen = stun::addr::encoded_len(&peer);
                let start = H - 4 - (4 + alen) - stun::HEADER_LEN;
                let padded = (len + 3) & !3;
                let body = (4 + alen) + 4 + padded;
                let hdr = &mut buf[start..H];
                let typ = stun::MessageType::new(Method::DATA, Class::Indication).to_u16();
                hdr[0..2].copy_from_slice(&typ.to_be_bytes());
                hdr[2..4].copy_from_slice(&(body as u16).to_be_bytes());
                hdr[4..8].copy_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
                hdr[8..20].copy_from_slice(&txid.0);
                hdr[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
                hdr[22..24].copy_from_slice(&(alen as u16).to_be_bytes());
                stun::addr::encode(&peer, Some(&txid), &mut hdr[24..24 + alen]);
                hdr[24 + alen..26 + alen].copy_from_slice(&attr::DATA.to_be_bytes());
                hdr[26 + alen..28 + alen].copy_from_slice(&(len as u16).to_be_bytes());
                buf[H + len..H + padded].fill(0);
                (start, H + padded)
            }
        };
        Some(ClientForward {
            five_tuple: ft,
            start,
            end,
        })
    }

    /// The driver bound (or failed to bind) the relay sockets of a pending
    /// allocation announced by [`Output::BindRelay`]. On success, the new
    /// allocation's id: keep it with its relay sockets and hand it to
    /// [`Server::handle_allocation_data`].
    pub fn relay_bound(
        &mut self,
        now: Instant,
        token: u64,
        result: Result<(), SocketAddr>,
    ) -> Option<AllocId> {
        let mut pending = self.pending.remove(&token)?;
        self.pending_by_tuple.remove(&pending.request.five_tuple);
        match result {
            Ok(()) => Some(self.finish_allocation(now, pending)),
            Err(_failed) => {
                for (local, _) in std::mem::take(&mut pending.addrs) {
                    self.release_port(local);
                }
                pending.attempts += 1;
                if pending.attempts >= 3 || pending.request.reservation.is_some() {
                    self.refuse_allocation(pending.request, Refusal::Capacity);
                } else {
                    self.start_bind(now, pending);
                }
                None
            }
        }
    }

    /// RFC 6062: the result of an [`Output::ConnectPeer`].
    pub fn peer_connect_result(&mut self, now: Instant, connection_id: u32, ok: bool) {
        let Some(conn) = self.connections.get_mut(&connection_id) else {
            return;
        };
        let ConnState::Connecting { txid } = conn.state else {
            return;
        };
        let Some(ft) = self
            .allocations
            .by_id(conn.allocation)
            .map(|a| a.five_tuple)
        else {
            return;
        };
        let seal = conn.seal.clone();
        if ok {
            let deadline = now + CONNECTION_BIND_TIMEOUT;
            conn.state = ConnState::AwaitingBind { deadline };
            self.schedule(deadline, Timer::Connection(connection_id));
            let r = reply::Reply::success(Method::CONNECT, txid)
                .with(attr::Attribute::ConnectionId(connection_id));
            self.send_reply(&ft, &r, &seal);
        } else {
            self.forget_connection(connection_id);
            self.refuse(&ft, Method::CONNECT, txid, Refusal::ConnectionFailed, &seal);
        }
    }

    /// RFC 6062: a peer connected to the TCP relay listener at `relay`.
    /// Returns the connection id to keep it under, or `None` to refuse
    /// (close it): no allocation, or no permission for the peer.
    pub fn peer_connection_incoming(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
    ) -> Option<u32> {
        let peer = self.as_advertised(peer);
        let aid = self.allocations.by_relay(&relay)?;
        let alloc = self.allocations.by_id(aid)?;
        let ft = alloc.five_tuple;
        if alloc.protocol != RelayProtocol::Tcp || alloc.permission(&peer.ip(), now).is_none() {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        if alloc.connections.len() >= self.config.limits.connections_per_allocation as usize {
            self.stats.capacity_refused += 1;
            return None;
        }
        let id = self.new_connection_id();
        let deadline = now + CONNECTION_BIND_TIMEOUT;
        self.connections.insert(
            id,
            PeerConnection {
                allocation: aid,
                peer,
                state: ConnState::AwaitingBind { deadline },
                seal: reply::Seal::none(false),
            },
        );
        if let Some(a) = self.allocations.by_id_mut(aid) {
            a.connections.push(id);
        }
        self.schedule(deadline, Timer::Connection(id));
        let txid = TransactionId(self.rng.gen());
        let mut r = reply::Reply::success(Method::CONNECTION_ATTEMPT, txid)
            .with(attr::Attribute::XorPeerAddress(peer))
            .with(attr::Attribute::ConnectionId(id));
        r.class = Class::Indication;
        self.send_reply(&ft, &r, &reply::Seal::none(false));
        Some(id)
    }

    /// RFC 6062: how many bytes of connection `connection_id` the driver
    /// may move now towards the peer (`to_peer`) or the client under the
    /// bandwidth limits (`usize::MAX` without limits or for an unknown
    /// connection), or how long it must wait: streams are paced, not
    /// dropped. Report what was moved with [`Server::stream_moved`].
    pub fn stream_allowance(
        &mut self,
        now: Instant,
        connection_id: u32,
        to_peer: bool,
    ) -> Result<usize, Duration> {
        let l = &self.config.limits;
        let (one, all) = (l.bytes_per_sec_per_allocation, l.bytes_per_sec_total);
        if one == 0 && all == 0 {
            return Ok(usize::MAX);
        }
        let dir = if to_peer { TO_PEER } else { TO_CLIENT };
        let Some(alloc) = (self.connections.get(&connection_id))
            .and_then(|c| self.allocations.by_id_mut(c.allocation))
        else {
            return Ok(usize::MAX);
        };
        let a = alloc.bandwidth[dir].available(now, one);
        let b = self.bandwidth_total[dir].available(now, all);
        match (a, b) {
            (Ok(x), Ok(y)) => Ok(usize::try_from(x.min(y)).unwrap_or(usize::MAX)),
            (Err(x), Err(y)) => Err(x.max(y)),
            (Err(w), _) | (_, Err(w)) => Err(w),
        }
    }

    /// RFC 6062: `len` bytes of connection `connection_id` were moved
    /// (see [`Server::stream_allowance`]); they count in the relayed bytes.
    pub fn stream_moved(&mut self, now: Instant, connection_id: u32, to_peer: bool, len: usize) {
        let dir = if to_peer { TO_PEER } else { TO_CLIENT };
        match dir {
            TO_PEER => self.stats.bytes_to_peer += len as u64,
            _ => self.stats.bytes_to_client += len as u64,
        }
        let l = &self.config.limits;
        let (one, all) = (l.bytes_per_sec_per_allocation, l.bytes_per_sec_total);
        if (one == 0 && all == 0) || len == 0 {
            return;
        }
        if let Some(alloc) = (self.connections.get(&connection_id))
            .and_then(|c| self.allocations.by_id_mut(c.allocation))
        {
            alloc.bandwidth[dir].consume(now, one, len);
            self.bandwidth_total[dir].consume(now, all, len);
        }
    }

    /// RFC 6062: the peer side of a connection closed (or failed).
    pub fn peer_connection_closed(&mut self, _now: Instant, connection_id: u32) {
        self.forget_connection(connection_id);
    }

    /// A client's TCP/TLS connection closed: its allocation (if it was a
    /// control connection) or its peer connection (if a data connection)
    /// ends; an allocation with mobility (RFC 8016) stays for
    /// [`mobility::DISCONNECT_GRACE`] at most, for its client to move it.
    pub fn client_disconnected(&mut self, now: Instant, five_tuple: FiveTuple) {
        if let Some(id) = self.data_connections.remove(&five_tuple) {
            self.close_connection(id);
        }
        if let Some(token) = self.pending_by_tuple.remove(&five_tuple) {
            if let Some(p) = self.pending.remove(&token) {
                for (local, _) in p.addrs {
                    self.release_port(local);
                }
                self.quota_release(&p.request.username, &p.request.five_tuple);
            }
        }
        if let Some(id) = self.allocations.id_of(&five_tuple) {
            // RFC 8016: a mobile allocation waits a while for its client
            // to come back on another flow (a Tor circuit that died).
            let grace = now + mobility::DISCONNECT_GRACE;
            match self.allocations.by_id_mut(id) {
                Some(a) if a.mobility.is_some() => {
                    if a.expires > grace {
                        a.expires = grace;
                        self.schedule(grace, Timer::Allocation(id));
                    }
                }
                _ => self.remove_allocation(id, EndReason::Disconnected),
            }
        }
    }

    /// A fresh connection id naming this shard.
    fn new_connection_id(&mut self) -> u32 {
        loop {
            let r: u32 = self.rng.gen();
            let Some(id) = (self.shard.stamp(u64::from(r))).and_then(|i| u32::try_from(i).ok())
            else {
                continue;
            };
            if id != 0 && !self.connections.contains_key(&id) {
                return id;
            }
        }
    }

    /// A fresh reservation token naming this shard.
    pub(crate) fn new_reservation_token(&mut self) -> [u8; 8] {
        loop {
            let r: u64 = self.rng.gen();
            if let Some(t) = self.shard.stamp(r) {
                return t.to_be_bytes();
            }
        }
    }

    /// Removes a connection from the tables and tells the driver to close it.
    fn close_connection(&mut self, id: u32) {
        if self.forget_connection(id) {
            self.outputs
                .push_back(Output::ClosePeerConnection { connection_id: id });
        }
    }

    fn forget_connection(&mut self, id: u32) -> bool {
        let Some(c) = self.connections.remove(&id) else {
            return false;
        };
        if let ConnState::Bound { data } = c.state {
            self.data_connections.remove(&data);
        }
        if let Some(a) = self.allocations.by_id_mut(c.allocation) {
            a.connections.retain(|x| *x != id);
        }
        true
    }

    fn release_port(&mut self, addr: SocketAddr) {
        self.admission.release_port(addr);
    }

    fn remove_allocation(&mut self, id: AllocId, reason: EndReason) {
        let Some(a) = self.allocations.remove(id) else {
            return;
        };
        let ft = a.five_tuple;
        for r in a.relayed.iter().flatten() {
            self.release_port(r.local);
            self.outputs.push_back(Output::ReleaseRelay {
                addr: r.local,
                protocol: a.protocol,
            });
        }
        for id in a.connections.clone() {
            self.close_connection(id);
        }
        self.quota_release(&a.username, &ft);
        self.stats.allocations_current = self.allocations.current();
        self.outputs.push_back(Output::AllocationEnded {
            five_tuple: ft,
            reason,
        });
    }

    fn send_reply(&mut self, ft: &FiveTuple, r: &reply::Reply<'_>, seal: &reply::Seal) {
        if let Some(payload) = r.encode(self.config.software.as_deref(), seal) {
            self.outputs.push_back(Output::Transmit {
                five_tuple: *ft,
                payload,
            });
        }
    }

    /// Answers `method` with the error response of `why`, counted in [`Stats`].
    fn refuse(
        &mut self,
        ft: &FiveTuple,
        method: Method,
        txid: TransactionId,
        why: Refusal,
        seal: &reply::Seal,
    ) {
        why.count(&mut self.stats);
        let r = reply::Reply::refusal(method, txid, why);
        self.send_reply(ft, &r, seal);
    }
}

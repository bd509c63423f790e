//! A sans-IO TURN client (RFC 8656, and the client side of RFC 6062).
//!
//! The client owns no socket and reads no clock. The driver (our connector,
//! the call-quality lab, a test) runs this loop:
//!
//! ```no_run
//! # use std::time::Instant;
//! # use turn::client::{Client, ClientConfig};
//! # fn recv() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # let server = "192.0.2.1:3478".parse().unwrap();
//! let config = ClientConfig::new(server, turn::Transport::Udp, "alice", "secret");
//! let mut client = Client::new(config, Instant::now());
//! client.allocate(Instant::now()).unwrap();
//! loop {
//!     while let Some(t) = client.poll_transmit() {
//!         send(t.destination, &t.payload);
//!     }
//!     while let Some(event) = client.poll_event() {
//!         // Allocated, Data, ChannelBound, …
//!     }
//!     // Wait for a datagram or until `client.poll_timeout()`, then:
//!     let now = Instant::now();
//!     if let Some((from, bytes)) = recv() {
//!         client.handle_datagram(now, from, &bytes);
//!     }
//!     client.handle_timeout(now);
//! }
//! ```
//!
//! Over TCP or TLS the driver feeds whatever the stream returns to
//! [`Client::handle_stream_bytes`] and writes transmits to the stream; the
//! client frames, and pads ChannelData to four bytes.
//!
//! ## Design decisions
//! - Long-term credentials as RFC 8489 §9.2: the first Allocate carries none;
//!   the 401 gives REALM, NONCE and maybe PASSWORD-ALGORITHMS (SHA-256 is
//!   preferred when the nonce cookie announces the feature). 438 Stale Nonce
//!   on any request is retried once with the new nonce; a 401 to a request
//!   that carried credentials is retried once, then reported.
//! - Responses are matched by transaction ID and, when the request carried
//!   credentials, must carry a MESSAGE-INTEGRITY(-SHA256) that verifies with
//!   the key the request was signed with; only 401 and 438 are accepted
//!   unauthenticated. Anything else is dropped as if never received.
//! - Timers live in one ordered table (quinn's `TimerTable`): retransmissions
//!   (RFC 8489 §6.2.1), allocation refresh at 80 % of the lifetime (or 60 s
//!   before expiry, if earlier), permission refresh every 4 min, channel
//!   refresh every 9 min, allocation expiry.
//! - Every table is bounded: 1000 transactions, 4096 channels, 8192
//!   permissions, 4096 queued transmits, 10 000 Data events (the oldest is
//!   dropped and counted). No input bytes can make the client panic.

mod config;
mod credentials;
mod event;
mod queue;
mod requests;
mod response;
mod tables;
mod tcp;
mod timer;
mod transaction;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use stun::{ChannelData, FrameKind, Message, PacketKind, StreamDecoder, TransactionId};

pub use config::{ClientConfig, RequestedTransport, DEFAULT_LIFETIME};
pub use event::{ClientError, ClientState, Event, Transmit, LOCAL_FAILURE};
pub use queue::{MAX_CONTROL_EVENTS, MAX_DATA_EVENTS};
pub use tables::{MAX_CHANNELS, MAX_PERMISSIONS};
pub use transaction::{MAX_TRANSACTIONS, RC, RELIABLE_TIMEOUT, RM, RTO};

use credentials::Credentials;
use queue::EventQueue;
use tables::{Channels, Permissions};
use timer::{TimerKey, Timers};
use transaction::{RequestKind, Retries, Step, Transaction};

/// Largest stream frame accepted (65 KiB): a STUN message is at most
/// 20 + 65 532 bytes and a padded ChannelData 65 540.
pub const MAX_STREAM_FRAME: usize = 65 * 1024;
/// Transmits queued at most; [`Client::send_to`] fails beyond.
pub const MAX_QUEUED_TRANSMITS: usize = 4096;
/// A permission lasts 300 s on the server; it is refreshed after this.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// A channel binding lasts 600 s on the server; it is refreshed after this.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// Delay before retrying a refresh that found the transaction table full.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// A TURN client for one allocation on one server.
///
/// See the [module documentation](self) for the driving loop.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    state: ClientState,
    creds: Option<Credentials>,
    transactions: FxHashMap<TransactionId, Transaction>,
    timers: Timers,
    relayed: Vec<SocketAddr>,
    mapped: Option<SocketAddr>,
    lifetime: Option<Duration>,
    permissions: Permissions,
    channels: Channels,
    transmits: VecDeque<Transmit>,
    events: EventQueue,
    /// `None` only while frames are being handled.
    decoder: Option<StreamDecoder>,
    stream_error: Option<stun::Error>,
    /// Recent ConnectionBind requests: transaction ID and signing key.
    connection_binds: VecDeque<(TransactionId, Option<stun::Key>)>,
    /// RFC 8016: the latest MOBILITY-TICKET the server gave.
    ticket: Option<Vec<u8>>,
}

impl Client {
    /// A client that has sent nothing yet; call [`Client::allocate`].
    pub fn new(config: ClientConfig, _now: Instant) -> Self {
        Client {
            config,
            state: ClientState::Idle,
            creds: None,
            transactions: FxHashMap::default(),
            timers: Timers::default(),
            relayed: Vec::new(),
            mapped: None,
            lifetime: None,
            permissions: Permissions::default(),
            channels: Channels::default(),
            transmits: VecDeque::new(),
            events: EventQueue::default(),
            decoder: Some(StreamDecoder::new(MAX_STREAM_FRAME)),
            stream_error: None,
            connection_binds: VecDeque::new(),
            ticket: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Where the allocation stands.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The relayed transport addresses (empty until allocated).
    pub fn relayed_addresses(&self) -> &[SocketAddr] {
        &self.relayed
    }

    /// The server-reflexive address the server reported.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// RFC 8016: the latest MOBILITY-TICKET (opaque), if the server gave one.
    pub fn mobility_ticket(&self) -> Option<&[u8]> {
        self.ticket.as_deref()
    }

    /// The lifetime last granted by the server.
    pub fn lifetime(&self) -> Option<Duration> {
        self.lifetime
    }

    /// The channel number bound to `peer`, once the server confirmed it.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        self.channels.confirmed(peer)
    }

    /// Whether the server confirmed a permission for `peer`.
    pub fn has_permission(&self, peer: IpAddr) -> bool {
        self.permissions.get(&peer).is_some_and(|p| p.installed)
    }

    /// Requests waiting for a response.
    pub fn outstanding_transactions(&self) -> usize {
        self.transactions.len()
    }

    /// Events dropped because the driver did not poll them in time.
    pub fn dropped_events(&self) -> u64 {
        self.events.dropped()
    }

    /// The next bytes to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// When [`Client::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs every timer due at `now`: retransmissions and timeouts,
    /// refreshes, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.timers.pop_due(now) {
            match key {
                TimerKey::Transaction(id) => self.on_transaction_timer(now, id),
                TimerKey::Refresh => self.refresh_allocation(now),
                TimerKey::Expiry => self.expire(),
                TimerKey::Permission(ip) => self.refresh_permission(now, ip),
                TimerKey::Channel(n) => self.refresh_channel(now, n),
            }
        }
    }

    /// Handles a UDP datagram. Datagrams not from the server, and bytes that
    /// are neither STUN nor ChannelData, are ignored.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if from != self.config.server {
            return;
        }
        match stun::classify(bytes) {
            PacketKind::Stun => {
                if let Ok(msg) = Message::parse(bytes) {
                    self.on_stun(now, &msg);
                }
            }
            PacketKind::ChannelData => self.on_channel_data(bytes),
            PacketKind::Other => {}
        }
    }

    /// Handles bytes read from the TCP or TLS connection to the server.
    ///
    /// # Errors
    /// [`ClientError::Framing`] when the stream carries something that is not
    /// STUN or ChannelData, or a frame above [`MAX_STREAM_FRAME`]; the stream
    /// cannot be resynchronised, so every later call fails too and the
    /// driver should close the connection.
    pub fn handle_stream_bytes(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ClientError> {
        if let Some(e) = self.stream_error {
            return Err(ClientError::Framing(e));
        }
        let mut decoder = self
            .decoder
            .take()
            .unwrap_or_else(|| StreamDecoder::new(MAX_STREAM_FRAME));
        let result = self.drain_frames(now, &mut decoder, bytes);
        self.decoder = Some(decoder);
        result.map_err(|e| {
            self.stream_error = Some(e);
            ClientError::Framing(e)
        })
    }

    fn drain_frames(
        &mut self,
        now: Instant,
        decoder: &mut StreamDecoder,
        bytes: &[u8],
    ) -> stun::Result<()> {
        // Pushing at most one frame's worth at a time keeps the decoder under
        // its buffer limit whatever the size of the driver's reads.
        for chunk in bytes.chunks(MAX_STREAM_FRAME) {
            decoder.push(chunk)?;
            while let Some((kind, frame)) = decoder.next_frame()? {
                match kind {
                    FrameKind::Stun => {
                        if let Ok(msg) = Message::parse(frame) {
                            self.on_stun(now, &msg);
                        }
                    }
                    FrameKind::ChannelData => self.on_channel_data(frame),
                }
            }
        }
        Ok(())
    }

    fn on_channel_data(&mut self, bytes: &[u8]) {
        let Ok(cd) = ChannelData::parse(bytes) else {
            return;
        };
        if let Some(ch) = self.channels.get(cd.number) {
            self.events.push(Event::Data {
                peer: ch.peer,
                data: cd.data.to_vec(),
            });
        }
    }

    fn queue_transmit(&mut self, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            destination: self.config.server,
            payload,
        });
    }

    fn fresh_transaction_id(&self) -> TransactionId {
        loop {
            let id = TransactionId(rand::random());
            if !self.transactions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Encodes and sends a request, registers its transaction and records
    /// it as the pending request of its permission or channel.
    fn send_request(
        &mut self,
        now: Instant,
        kind: RequestKind,
        retries: Retries,
    ) -> Result<TransactionId, ClientError> {
        if self.transactions.len() >= MAX_TRANSACTIONS {
            return Err(ClientError::TooManyTransactions);
        }
        let id = self.fresh_transaction_id();
        let payload = self.encode_request(kind, id).map_err(ClientError::Encode)?;
        let key = self.creds.as_ref().map(|c| c.key.clone());
        let reliable = self.config.transport.is_stream();
        let tx = Transaction::new(kind, payload.clone(), now, reliable, key, retries);
        self.timers.set(TimerKey::Transaction(id), tx.next_at());
        self.transactions.insert(id, tx);
        self.queue_transmit(payload);
        match kind {
            RequestKind::CreatePermission { peer } => {
                if let Some(p) = self.permissions.get_mut(&peer) {
                    p.pending = Some(id);
                }
            }
            RequestKind::ChannelBind { channel, .. } => {
                if let Some(c) = self.channels.get_mut(channel) {
                    c.pending = Some(id);
                }
            }
            _ => {}
        }
        Ok(id)
    }

    fn on_transaction_timer(&mut self, now: Instant, id: TransactionId) {
        let Some(tx) = self.transactions.get_mut(&id) else {
            return;
        };
        match tx.on_timer() {
            Step::Retransmit(next) => {
                let payload = tx.payload.clone();
                self.timers.set(TimerKey::Transaction(id), next);
                // A full queue means the driver is not polling; the next
                // retransmission will try again.
                if self.transmits.len() < MAX_QUEUED_TRANSMITS {
                    self.queue_transmit(payload);
                }
            }
            Step::TimedOut => {
                if let Some(tx) = self.transactions.remove(&id) {
                    self.on_timeout(now, id, tx.kind);
                }
            }
        }
    }

    /// Forgets the allocation and everything that hangs off it.
    fn teardown(&mut self) {
        self.transactions.clear();
        self.timers = Timers::default();
        self.permissions.clear();
        self.channels.clear();
        self.relayed.clear();
        self.lifetime = None;
        self.connection_binds.clear();
        self.ticket = None;
    }

    fn expire(&mut self) {
        if matches!(
            self.state,
            ClientState::Allocated | ClientState::Deallocating
        ) {
            self.state = ClientState::Expired;
            self.teardown();
            self.events.push(Event::AllocationExpired);
        }
    }
}

//! What the client reports to its driver: transmits, events, states and errors.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use stun::Method;

/// Bytes the driver must send to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send: always the configured server address.
    pub destination: SocketAddr,
    /// The datagram, or the bytes to write to the stream.
    pub payload: Vec<u8>,
}

/// Something that happened, reported by [`Client::poll_event`](super::Client::poll_event).
///
/// An error `code` is the STUN error code of the server's response, or
/// [`LOCAL_FAILURE`] when the client gave up on its own (a mandatory
/// attribute missing from a success response, credentials that cannot be
/// used, an unsupported password algorithm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The allocation exists.
    Allocated {
        /// Relayed transport addresses (two for a dual-stack allocation).
        relayed: Vec<SocketAddr>,
        /// The client's server-reflexive address (XOR-MAPPED-ADDRESS).
        mapped: Option<SocketAddr>,
        /// Lifetime granted by the server.
        lifetime: Duration,
    },
    /// Allocate failed (error response or local failure).
    AllocationFailed {
        /// Error code.
        code: u16,
        /// Reason phrase from the server, or the client's explanation.
        reason: String,
    },
    /// A permission for this peer IP was installed (reported once, not on refresh).
    PermissionCreated(IpAddr),
    /// CreatePermission (or its refresh) failed; the permission is forgotten.
    PermissionFailed {
        /// The peer IP.
        peer: IpAddr,
        /// Error code.
        code: u16,
    },
    /// A channel was bound (reported once, not on refresh).
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// ChannelBind (or its refresh) failed; the channel is forgotten.
    ChannelBindFailed {
        /// The peer.
        peer: SocketAddr,
        /// Error code.
        code: u16,
    },
    /// Application data from a peer (Data indication or ChannelData).
    Data {
        /// The peer that sent it.
        peer: SocketAddr,
        /// The payload.
        data: Vec<u8>,
    },
    /// The allocation was refreshed.
    Refreshed {
        /// Lifetime granted by the server.
        lifetime: Duration,
    },
    /// A Refresh failed; the allocation lives until its current expiry
    /// (437 means it is already gone and the client moves to
    /// [`ClientState::Failed`]).
    RefreshFailed {
        /// Error code.
        code: u16,
    },
    /// RFC 8016: the allocation now serves the 5-tuple given to
    /// [`Client::move_to`](super::Client::move_to): relayed addresses,
    /// permissions and channels kept.
    Moved {
        /// Lifetime granted by the server.
        lifetime: Duration,
    },
    /// RFC 8016: the move was refused (405 mobility off, 437 unknown
    /// ticket, 441 another user) or got no answer ([`LOCAL_FAILURE`]);
    /// the allocation stays where it was, the client keeps the new
    /// transport: move again (or back) with [`Client::move_to`](super::Client::move_to).
    MoveFailed {
        /// Error code.
        code: u16,
    },
    /// The allocation was deleted by [`Client::deallocate`](super::Client::deallocate).
    Deallocated,
    /// The allocation reached its expiry without a successful refresh.
    AllocationExpired,
    /// RFC 6062: the server connected to the peer; bind a new data
    /// connection with [`Client::connection_bind_request`](super::Client::connection_bind_request).
    ConnectionCreated {
        /// The peer.
        peer: SocketAddr,
        /// CONNECTION-ID.
        connection_id: u32,
    },
    /// RFC 6062: a peer connected to the relayed address; bind a data
    /// connection within 30 s to accept it.
    ConnectionAttempt {
        /// The peer.
        peer: SocketAddr,
        /// CONNECTION-ID.
        connection_id: u32,
    },
    /// RFC 6062: Connect failed.
    ConnectFailed {
        /// The peer.
        peer: SocketAddr,
        /// Error code.
        code: u16,
    },
    /// A request got no answer (Rc transmissions over UDP, 39.5 s over a stream).
    TransactionTimedOut {
        /// The request's method.
        method: Method,
        /// The peer the request was about, if any (port 0 for CreatePermission).
        peer: Option<SocketAddr>,
    },
}

/// The error code reported when the client, not the server, gave up.
pub const LOCAL_FAILURE: u16 = 0;

/// Where the allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// Nothing sent yet.
    Idle,
    /// Allocate in flight.
    Allocating,
    /// The allocation exists.
    Allocated,
    /// Refresh with LIFETIME 0 in flight.
    Deallocating,
    /// The allocation was deleted.
    Deallocated,
    /// The allocation expired without a successful refresh.
    Expired,
    /// Allocate failed, timed out, or the server no longer knows the allocation.
    Failed,
}

/// Errors returned by [`Client`](super::Client) methods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The call needs an allocation and there is none.
    #[error("no allocation")]
    NotAllocated,
    /// `allocate` was called while an allocation exists or is in progress.
    #[error("allocation already exists or is in progress")]
    AlreadyAllocated,
    /// The operation does not exist for this transport (e.g. channels on a
    /// TCP allocation, Connect on a UDP allocation).
    #[error("operation not supported by the requested transport")]
    WrongTransport,
    /// 1000 transactions are already outstanding.
    #[error("too many outstanding transactions")]
    TooManyTransactions,
    /// All 4096 channel numbers are in use.
    #[error("no free channel number")]
    ChannelsExhausted,
    /// The permission table is full.
    #[error("too many permissions")]
    TooManyPermissions,
    /// The transmit queue is full: poll transmits before sending more.
    #[error("transmit queue full")]
    QueueFull,
    /// The payload does not fit a ChannelData message or Send indication.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A request could not be encoded (e.g. USERNAME above 513 bytes).
    #[error("cannot encode request: {0}")]
    Encode(stun::Error),
    /// The stream carries bytes that are not STUN or ChannelData, or a frame
    /// above 65 KiB. The connection is unusable: close it.
    #[error("stream framing error: {0}")]
    Framing(stun::Error),
    /// [`Client::move_to`](super::Client::move_to) without a
    /// MOBILITY-TICKET: mobility was not asked for, or the server gave none.
    #[error("no mobility ticket")]
    NoTicket,
    /// A ConnectionBind response could not be parsed.
    #[error("malformed response: {0}")]
    Malformed(stun::Error),
    /// A ConnectionBind response does not answer one of our requests, or
    /// its MESSAGE-INTEGRITY does not verify.
    #[error("response is not authentic")]
    NotAuthentic,
    /// ConnectionBind was refused with this error code. After 438 the
    /// client took the new nonce: build a new request and retry.
    #[error("ConnectionBind failed with {0}")]
    ConnectionBindFailed(u16),
}

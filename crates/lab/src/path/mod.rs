//! Paths: how an agent's packets reach the other agent.
//!
//! A [`PathOpener`] (one per plan path) opens a [`Leg`] for one side of a
//! call: `direct` binds a UDP socket (peer to peer, the baseline);
//! `turn-udp`, `turn-tcp` and `turn-tls` allocate on the relay through
//! [`turn::client::Client`]; `turn-socks` and `turn-tor` are TURN over UDP
//! to an `onionrtc connect` (started by the lab, [`crate::launch`], or
//! running), which carries it over TCP/TLS through a SOCKS proxy or Tor.
//! The call runner only sees the trait:
//!
//! 1. `open` both legs (allocation), read each leg's [`Leg::address`];
//! 2. [`Leg::connect_peer`] each to the other's address (channel binding);
//! 3. move each leg to its agent's thread: [`Leg::send`], [`Leg::recv`],
//!    [`Leg::housekeeping`] (refreshes), then [`Leg::close`].
//!
//! A new path kind is a new opener; nothing else changes. (Browser calls
//! are not legs: [`crate::browser`] drives two pages instead.)

mod direct;
mod turn_leg;
pub mod wire;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use direct::DirectOpener;
pub use turn_leg::{TurnCredentials, TurnOpener};

/// Why a leg failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The TURN server refused or the client gave up.
    #[error("TURN: {0}")]
    Turn(String),
    /// The deadline passed.
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

impl PathError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> PathError {
        move |source| PathError::Io { what, source }
    }
}

/// One side's connection for one call.
pub trait Leg: Send + std::fmt::Debug {
    /// Where the peer sends to (relayed address, or the UDP socket for `direct`).
    fn address(&self) -> SocketAddr;

    /// Makes `peer` reachable (permission and channel), waiting until
    /// `deadline`.
    fn connect_peer(&mut self, peer: SocketAddr, deadline: Instant) -> Result<(), PathError>;

    /// Sends one packet to the peer.
    fn send(&mut self, now: Instant, data: &[u8]) -> Result<(), PathError>;

    /// Waits up to `timeout` for packets from the peer and appends them to
    /// `out` (several may come at once from a stream).
    fn recv(&mut self, timeout: Duration, out: &mut Vec<Vec<u8>>) -> Result<(), PathError>;

    /// Runs timers (allocation, permission and channel refreshes) due at `now`.
    fn housekeeping(&mut self, now: Instant) -> Result<(), PathError>;

    /// Releases the allocation, best effort, waiting at most until `deadline`.
    fn close(&mut self, deadline: Instant);
}

/// Where and how a TURN path allocates, for an endpoint with its own TURN
/// client (the webrtc agent, [`crate::webrtc`]): the same relay, transport,
/// credentials and TLS roots a [`Leg`] of the path would use.
#[derive(Debug, Clone)]
pub struct TurnTarget {
    /// The TURN server (or the connector's UDP port for `turn-socks`/`turn-tor`).
    pub server: SocketAddr,
    /// The transport to it.
    pub transport: turn::Transport,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// TLS settings for `turn-tls`.
    pub tls: Option<wire::TlsSettings>,
}

/// Opens legs of one path kind.
pub trait PathOpener: Send + Sync + std::fmt::Debug {
    /// The path's kind name (`direct`, `turn-udp`, …).
    fn kind(&self) -> &'static str;

    /// The relay this path allocates on, if it is a TURN path.
    fn turn_target(&self) -> Option<TurnTarget> {
        None
    }

    /// Opens a leg (allocates), waiting until `deadline`.
    fn open(&self, deadline: Instant) -> Result<Box<dyn Leg>, PathError>;
}

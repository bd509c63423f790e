//! OnionRTC's SIP side (issue 14): a bounded SIP message parser of our own
//! ([`message`], fuzzed in `fuzz/`), digest authentication ([`digest`],
//! RFC 8760 MD5 and SHA-256 with stateless expiring nonces and replay
//! protection), failed-authentication limits ([`auth`]), the registrar's
//! bindings ([`registrar`]) and a sans-IO registrar + B2BUA ([`core`]):
//! events in (connection opened/closed, bytes received, timer ticks),
//! messages out (bytes for a connection). Transports live elsewhere
//! (`signal`'s `/sip` WebSocket; UDP/TCP later).
//!
//! Privacy by construction: every call leg is a dialog of our own, so no
//! Via, Contact, Record-Route, Call-ID or tag of one party reaches the
//! other, and every SDP body goes through the caller-supplied filter (the
//! `/ws` sanitizer). The core never logs.
//!
//! Why our own parser rather than `rsipstack`: that crate is a whole stack
//! (its own transports, tokio tasks and transaction layer), which does not
//! fit a sans-IO core behind our listener, limits and metrics; a ~400-line
//! parser with explicit bounds is small enough to fuzz and review.

#![forbid(unsafe_code)]

pub mod auth;
pub mod core;
pub mod digest;
pub mod header;
pub mod message;
pub mod registrar;

/// A transport connection (or UDP flow), numbered by the transport.
pub type ConnId = u64;

pub use crate::core::{Accounts, CallSdp, Config, Core, Counters, Out, SdpFilter};
pub use digest::Algorithm;
pub use message::{Message, ParseError, MAX_MESSAGE_BYTES};

//! # turn — the TURN protocol as sans-IO state machines
//!
//! [`server::Server`] and [`client::Client`] implement TURN (RFC 8656) and
//! TURN-TCP (RFC 6062) without sockets or clocks: they take `now` and bytes,
//! and queue what the driver must send, open or close. The `relay` crate
//! drives the server with real sockets; the connector and the lab drive the
//! client.
//!
//! ## Design decisions
//! - Time is an argument (`now: Instant`), so lifetimes, permission and
//!   channel expiry and nonce staleness are tested in simulated time.
//! - Nonces are stateless (HMAC of a timestamp), so they need no table and
//!   survive restarts of nothing.
//! - Every table has a bound; every refusal has a counter.

pub mod auth;
pub mod bandwidth;
pub mod client;
pub mod nonce;
pub mod policy;
pub mod ratelimit;
pub mod server;
mod types;

pub use types::{FiveTuple, Transport};

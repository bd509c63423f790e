//! Integration tests of the `turn` crate, linked as one binary: the real
//! [`turn::server::Server`] and [`turn::client::Client`] talking over the
//! in-memory network of [`net`], in simulated time (no socket, no sleep).
//!
//! - `net`: the simulated network and the server driver.
//! - `udp`: allocation, channel, Send/Data indications, refreshes over 30
//!   minutes, expiry of an abandoned allocation, re-allocation.
//! - `internal`: two clients talking through their relayed addresses.
//! - `stream`: TCP and TLS give the same results as UDP; padding.
//! - `auth`: stale nonces, REST credentials, per-user quota.
//! - `policy`: forbidden peers refused end to end.
//! - `tcp_relay`: RFC 6062 Connect, ConnectionBind, ConnectionAttempt.
//! - `load`: 10 % loss on the control plane; 10,000 packets each way.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod internal;
mod load;
mod net;
mod policy;
mod stream;
mod tcp_relay;
mod udp;

//! Integration tests of the call-quality lab, one binary: calibration
//! first (simulated time, then real time on loopback), plan validation,
//! store resume, `lab run` end to end, browser mode (Chromium on `onionrtc
//! serve`), `turn-socks` through microsocks and `turn-tor` through a
//! private Tor network in a network namespace.
//!
//! Servers bind only loopback (the lab's in-process relay, direct UDP
//! sockets, serve, connectors, microsocks); children are stopped by PID;
//! every loop is bounded; the suite takes about 30–40 s (tests run in
//! parallel; the Tor network's bootstrap is the longest part).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod calibration;
mod e2e;
mod outcomes;
mod plan;
mod resume;
mod socks;
mod store;
mod support;
mod tor;
#[cfg(feature = "webrtc")]
mod webrtc;

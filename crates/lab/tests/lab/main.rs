//! Integration tests of the call-quality lab, one binary: calibration
//! first (simulated time, then real time on loopback), plan validation,
//! store resume, and `lab run` end to end.
//!
//! Servers bind only loopback (the lab's in-process relay, direct UDP
//! sockets); every loop is bounded; the suite takes about 10 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod calibration;
mod e2e;
mod outcomes;
mod plan;
mod resume;
mod support;

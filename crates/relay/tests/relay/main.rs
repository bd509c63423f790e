//! Integration tests of the running relay: interop with coturn's client
//! tools, bad input, authentication, and the peer policy in a network
//! namespace. One test binary, so it links once.
//!
//! Servers bind only loopback; every child process is killed by PID when its
//! test ends; every loop is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod badinput;
mod browser;
mod interop;
mod mobility;
mod policy;
mod shards;
mod support;

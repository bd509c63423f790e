//! Integration tests of the connector: one binary, one module per topic.
//! TURN clients are coturn's `turnutils_uclient` and our `turn::client`;
//! the relay is our own, in process, on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chromium;
mod exposure;
mod flows;
mod hop;
mod measure;
mod pinning;
mod socks;
mod support;
mod tor_launch;
mod tor_testnet;
mod torrc;
mod uclient;
mod web;

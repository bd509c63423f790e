//! Integration tests of the signaling server: a real server on 127.0.0.1:0
//! with a temporary data directory, WebSocket clients, raw HTTP requests.
//! One test binary, so it links once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod api;
mod at_rest;
mod mesh;
mod rooms;
mod stats;
mod support;

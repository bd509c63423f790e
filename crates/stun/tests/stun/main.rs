//! Integration tests of the `stun` crate, linked as one binary.
//!
//! - `vectors`: RFC 5769 §2.1–2.4 and RFC 8489 B.1, decoded, verified and
//!   re-encoded byte for byte, plus tamper checks.
//! - `roundtrip`: proptest round trips of every attribute, of authenticated
//!   messages and of ChannelData.
//! - `stream`: the stream framer against random splits of random frame
//!   sequences.
//! - `malformed`: truncated, mutated, oversized and garbage input: never a
//!   panic, and an error where the input is invalid.

// Helpers and proptest bodies outside `#[test]` fns unwrap too: a panic in a
// test is a failure, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod malformed;
mod roundtrip;
mod stream;
mod util;
mod vectors;

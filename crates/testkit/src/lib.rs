//! # testkit — support code for OnionRTC's integration tests
//!
//! Shared by the crates' `tests/` binaries (as a dev-dependency only):
//! processes that are always stopped by PID, bounded waits, free loopback
//! ports, and drivers for real peers we did not write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod chromium;
pub mod coturn;
pub mod netns;
pub mod nginx;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod topology;
pub mod tor;

pub use process::{free_port, require_tool, run_bounded, start_microsocks, wait_until, Proc};

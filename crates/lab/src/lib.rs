//! # lab — the OnionRTC call-quality lab
//!
//! Runs calls over chosen paths (direct, TURN over UDP/TCP/TLS, and the
//! connector's SOCKS/Tor paths), measures them, stores them and reports.
//! Calls are synthetic (the lab's agents) or browser calls (two headless
//! Chromium pages on `onionrtc serve`).
//!
//! ```text
//! plan.toml ─► Plan ─► Runner ─┬─► Environment (relay; launch::LaunchedConnector per socks/tor path)
//!                              ├─► realtime::run_call (synthetic; retried on setup failure)
//!                              │     ├─ Leg ×2 (path::{direct, TURN via turn::client})
//!                              │     ├─ Agent ×2 (sans-IO media: pacing, echo, stats)
//!                              │     └─ ImpairStage ×2 (seeded egress impairment)
//!                              ├─► webrtc::run_call (webrtc, feature `webrtc`: 2 media endpoints,
//!                              │     Opus + jitter buffer, ImpairStage in the TURN path)
//!                              ├─► browser::run_call (browser; BrowserEnv = serve + Chromium)
//!                              │     └─ 2 pages: connected → window.onionrtc.stats each second
//!                              ├─► Store::record_call (one transaction per call)
//!                              └─► report::write (report.html, summary.json, calls.csv)
//! ```
//!
//! The run loop of one agent thread (see [`realtime`]):
//! `leg.housekeeping(now)` → `agent.poll_transmit(now)` → `stage.push` →
//! `stage.poll(now)` → `leg.send` → `leg.recv(until the next deadline)` →
//! `agent.handle_packet(now, bytes)`.
//!
//! ## Design decisions
//! - **Sans-IO agents and impairment, one clock argument.** [`agent::Agent`]
//!   and [`impair::ImpairStage`] take `now` in nanoseconds and never read a
//!   clock, so [`sim`] drives them in simulated time (the calibration
//!   tests are exact) and [`realtime`] drives the same code on sockets.
//! - **Both agents share one clock** ([`realtime::LabClock`]): one-way delay
//!   is measured, not estimated from RTT/2.
//! - **Impairment is the lab's own**, seeded and on each agent's egress, so
//!   calibration needs no root; `tc netem` is not used (this machine's
//!   kernel has no `sch_netem`, and plans asking for it are refused).
//! - **Paths are a trait** ([`path::PathOpener`], [`path::Leg`]): the
//!   connector's `turn-socks`/`turn-tor` are TURN over UDP to a connector
//!   — one the lab starts ([`launch`]: `onionrtc connect --via
//!   socks5://…`, through microsocks or a Tor SocksPort) or a running one.
//! - **Store behind a trait** ([`store::Store`]) with SQLite today; each
//!   call is committed when it ends, so an interrupted run loses nothing
//!   finished and `--resume` continues it.
//! - **Browser mode reads the pages, not the wire** ([`browser`]): RTT,
//!   jitter and loss come from `getStats()`; one-way delay is estimated
//!   (RTT/2 + jitter buffer + 20 ms) and marked so in the store and the
//!   report. The CDP client is the `cdp` crate, shared with the tests
//!   (testkit re-exports it), so test-support code stays out of the
//!   `onionrtc` binary.
//! - **Children are stopped by PID** ([`child::Child`]): serve, connectors,
//!   microsocks and Chromium get SIGTERM (Chromium SIGKILL) when their
//!   owner drops, and run under `setpriv --pdeathsig KILL` so they die with
//!   the lab.

pub mod agent;
pub mod browser;
pub mod call;
pub mod child;
pub mod cli;
pub mod emodel;
pub mod env;
pub mod impair;
pub mod launch;
pub mod metrics;
pub mod path;
pub mod plan;
pub mod realtime;
pub mod report;
pub mod runner;
pub mod sim;
pub mod store;
#[cfg(feature = "webrtc")]
pub mod webrtc;

pub use cli::{execute, Failure, LabCommand};

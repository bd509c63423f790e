//! # bench — OnionRTC's relay against coturn, side by side
//!
//! `onionrtc bench relay` starts Debian's coturn (`turnserver`) and our
//! relay (`onionrtc relay`) one after the other on loopback with equivalent
//! settings, drives both with the same load and prints, per server, the
//! messages relayed and lost, the server's CPU-seconds (user + system from
//! `/proc/PID/stat`), messages per CPU-second, peak RSS and latency, then the
//! ratio ours/coturn and PASS/FAIL against the targets. docs/performance.md
//! gives the method and the exact settings.
//!
//! The run loop of one scenario ([`orchestrate`]):
//!
//! ```text
//! start server (fresh process) ─▶ wait until it answers a Binding request
//!   ─▶ read /proc/PID/stat ─▶ run the load generator (a child process)
//!   ─▶ read /proc/PID/stat and VmHWM ─▶ kill the server by PID ─▶ row
//! ```
//!
//! Two load generators drive the servers: coturn's `turnutils_uclient` with
//! `turnutils_peer` as the external peer, and our own ([`loadgen`], the
//! hidden `onionrtc bench loadgen` subcommand), which owns its peer sockets
//! and timestamps every packet so the round trip is measured in
//! microseconds.
//!
//! `onionrtc bench echo` ([`echo`]) measures how many echo-test sessions
//! (`/api/echo`) one core of `serve` holds, with real WebRTC clients (our
//! media endpoint) against serve's relay and echo.
//!
//! ## Design decisions
//! - The load generator is a separate process from the orchestrator and from
//!   the servers, so `/proc/PID/stat` of a server counts only that server.
//! - Every server is started fresh for each scenario: VmHWM is then that
//!   scenario's peak, and a server that died affects one row only.
//! - Messages relayed = messages sent + messages received by the clients
//!   (each crosses the relay once), as for `turnutils_uclient`; our
//!   generator also counts what reached the peer.
//! - Targets are printed as PASS/FAIL and never asserted: timings are read,
//!   not tested. The exit status only says whether every scenario produced
//!   a result.
//! - Every child is killed by PID when its guard drops, also on SIGINT and
//!   SIGTERM.

pub mod echo;
pub mod loadgen;
pub mod orchestrate;

mod limits;
pub mod procfs;
pub mod sip;

pub use limits::raise_fd_limit;

//! `onionrtc bench loadgen`: the load generator, a process of its own.
//!
//! It sets up N TURN allocations with [`turn::client::Client`] (each with a
//! permission and a channel to one of its own echo peers), then sends probes
//! at a fixed rate paced by a deadline schedule: probe k leaves at
//! `start + k / pps`, from session `k mod N`. Each probe carries its
//! sequence number and send time; the echo peer stamps its arrival and
//! sends it back to the relayed address; the client reads it from the relay
//! and records the round trip. The result is one JSON object on stdout.
//!
//! Modes:
//! - `--mode relay`: client → relay → peer → relay → client.
//! - `--mode direct`: client → peer → client, the same generator without a
//!   relay: its round trip is what `relay` minus `direct` leaves to the relay.
//! - `--mode c2c`: pairs of allocations; even sessions send to their
//!   partner's relayed address, odd ones echo (two relay traversals each way).
//! - `--hold`: N allocations with a permission and a channel each, kept
//!   alive until stdin closes or a signal; a JSON line at each milestone
//!   (with `--step`, waits for a line on stdin before going on).
//! - `--measure alloc-rate`: as many allocations as fast as possible with
//!   REST credentials for `--duration` seconds, each deleted once made so
//!   quotas never bind; reports allocations per second.

mod allocrate;
mod engine;
mod hold;
mod link;
mod pacer;
mod peer;
pub mod probe;
mod setup;
pub mod stats;
pub mod tls;
mod traffic;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use turn::client::ClientConfig;

pub use link::LinkKind;
pub use stats::Percentiles;

/// How the generator's clients reach their peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Through a TURN allocation each.
    Relay,
    /// Straight to the peer sockets (the baseline).
    Direct,
    /// Client to client: pairs of allocations through the relay.
    C2c,
}

/// Something to measure other than traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Measure {
    /// Allocations per second with REST credentials.
    AllocRate,
}

/// A server address with its transport: `udp://IP:PORT`, `tcp://…`, `tls://…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerUrl {
    /// Transport between the clients and the server.
    pub kind: LinkKind,
    /// The server's address.
    pub addr: SocketAddr,
}

impl FromStr for ServerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!("{s:?}: expected udp://IP:PORT, tcp://IP:PORT or tls://IP:PORT")
        })?;
        let kind = match scheme {
            "udp" => LinkKind::Udp,
            "tcp" => LinkKind::Tcp,
            "tls" => LinkKind::Tls,
            other => return Err(format!("{s:?}: unknown transport {other:?}")),
        };
        let addr = rest
            .parse()
            .map_err(|_| format!("{s:?}: {rest:?} is not IP:PORT"))?;
        Ok(ServerUrl { kind, addr })
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.kind.name(), self.addr)
    }
}

/// Flags of `onionrtc bench loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// How clients reach their peers.
    #[arg(long, value_enum, default_value = "relay")]
    pub mode: Mode,
    /// The TURN server: udp://IP:PORT, tcp://IP:PORT or tls://IP:PORT
    /// (TLS accepts any certificate). Not needed with --mode direct.
    #[arg(long, value_name = "URL")]
    pub server: Option<ServerUrl>,
    /// Long-term credential user name.
    #[arg(long, default_value = "bench")]
    pub user: String,
    /// Long-term credential password.
    #[arg(long, default_value = "benchpw")]
    pub password: String,
    /// TURN REST shared secret: each client gets a fresh time-limited
    /// username `EXPIRY:benchN` and its HMAC password instead of --user.
    #[arg(long, value_name = "SECRET")]
    pub rest_secret: Option<String>,
    /// Measure something other than traffic.
    #[arg(long, value_enum)]
    pub measure: Option<Measure>,
    /// Allocations (sessions); with --measure alloc-rate, how many are in
    /// flight at once.
    #[arg(long, default_value_t = 100)]
    pub allocations: u32,
    /// Probes per second in total, spread over the allocations.
    #[arg(long, default_value_t = 5000)]
    pub pps: u32,
    /// Payload bytes per probe (at least 32).
    #[arg(long, default_value_t = 120)]
    pub size: u32,
    /// Seconds of traffic (or of allocating, with --measure alloc-rate).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Echo peer sockets of our own on 127.0.0.1 (default: one per
    /// allocation, at most 16).
    #[arg(long)]
    pub peers: Option<u32>,
    /// An external echo peer (e.g. turnutils_peer) instead of our own.
    #[arg(long, value_name = "IP:PORT")]
    pub peer: Option<SocketAddr>,
    /// Hold allocations (memory measurement) instead of sending traffic.
    #[arg(long)]
    pub hold: bool,
    /// With --hold: print a JSON line when this many allocations exist.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub milestones: Vec<u32>,
    /// With --hold: at each milestone, wait for a line on stdin.
    #[arg(long)]
    pub step: bool,
    /// Never sleep while sending: poll the sockets in a loop (keeps one CPU
    /// busy) so that no wake-up latency of ours is in the round trip.
    #[arg(long)]
    pub busy_poll: bool,
    /// Setups in flight at once.
    #[arg(long, default_value_t = 256)]
    pub window: u32,
    /// Seconds allowed for setting up the allocations.
    #[arg(long, default_value_t = 30.0)]
    pub setup_timeout: f64,
}

/// Why the load generator could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// The flags do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// A socket or the event loop failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LoadgenError {
    let what = what.into();
    move |source| LoadgenError::Io { what, source }
}

/// The result, printed as one JSON line on stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadgenReport {
    /// relay, direct, c2c, hold or alloc-rate.
    pub mode: String,
    /// udp, tcp or tls.
    pub transport: String,
    /// The server URL, if any.
    pub server: Option<String>,
    /// Allocations asked for.
    pub allocations: u32,
    /// Allocations set up (with permission and channel).
    pub ready: u32,
    /// Allocations that failed.
    pub failed: u32,
    /// Seconds the setup took.
    pub setup_s: f64,
    /// Probes per second asked for.
    pub pps_target: u32,
    /// Payload bytes per probe.
    pub size: u32,
    /// Seconds of traffic (or of allocating).
    pub duration_s: f64,
    /// Probes sent.
    pub sent: u64,
    /// Distinct probes that came back.
    pub received: u64,
    /// Probes sent that never came back.
    pub lost: u64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Sends the local socket refused (not counted as sent).
    pub send_dropped: u64,
    /// Datagrams our echo peers received.
    pub peer_received: u64,
    /// Probes echoed by client-to-client responders.
    pub echoed: u64,
    /// Probes sent per second, as achieved.
    pub achieved_pps: f64,
    /// Round trip in microseconds.
    pub rtt_us: Option<Percentiles>,
    /// Sender to echo peer, one way.
    pub to_peer_us: Option<Percentiles>,
    /// Echo peer back to the sender, one way.
    pub from_peer_us: Option<Percentiles>,
    /// Allocations made (alloc-rate).
    pub allocations_made: u64,
    /// Allocations per second (alloc-rate).
    pub alloc_per_s: Option<f64>,
    /// CPU-seconds the generator itself used.
    pub cpu_s: f64,
    /// Distinct failure reasons with their counts.
    pub errors: BTreeMap<String, u64>,
    /// Stopped early by a signal.
    pub interrupted: bool,
}

/// A progress line of `--hold`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// `milestone` or `holding`.
    pub event: String,
    /// Allocations set up.
    pub allocations: u32,
    /// Allocations that failed.
    pub failed: u32,
    /// Seconds since the start.
    pub elapsed_s: f64,
}

impl LoadgenArgs {
    /// The configuration of client `n`: static or fresh REST credentials.
    pub(crate) fn client_config(&self, server: ServerUrl, n: u64) -> ClientConfig {
        let (user, password) = match &self.rest_secret {
            Some(secret) => {
                let expiry = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    + 3600;
                let user = turn::auth::rest_username(expiry, Some(&format!("bench{n}")));
                let password = turn::auth::rest_password(secret.as_bytes(), &user);
                (user, password)
            }
            None => (self.user.clone(), self.password.clone()),
        };
        ClientConfig::new(server.addr, server.kind.transport(), user, password)
    }

    fn server(&self) -> Result<ServerUrl, LoadgenError> {
        self.server
            .ok_or_else(|| LoadgenError::Usage("--server is required".into()))
    }

    fn check(&self) -> Result<(), LoadgenError> {
        if self.allocations == 0 {
            return Err(LoadgenError::Usage(
                "--allocations must be at least 1".into(),
            ));
        }
        if (self.size as usize) < probe::PROBE_LEN || self.size > 60_000 {
            return Err(LoadgenError::Usage(format!(
                "--size must be {} to 60000 bytes",
                probe::PROBE_LEN
            )));
        }
        if !(self.duration > 0.0 && self.duration < 86_400.0) {
            return Err(LoadgenError::Usage("--duration must be positive".into()));
        }
        if self.mode == Mode::Direct && self.server.is_some_and(|s| s.kind != LinkKind::Udp) {
            return Err(LoadgenError::Usage("--mode direct is UDP only".into()));
        }
        Ok(())
    }
}

/// Runs what `args` ask for until done or until `stop` is set.
pub fn run(args: &LoadgenArgs, stop: &AtomicBool) -> Result<LoadgenReport, LoadgenError> {
    args.check()?;
    crate::raise_fd_limit();
    let mut report = if args.measure == Some(Measure::AllocRate) {
        allocrate::run(args, args.server()?, stop)?
    } else if args.hold {
        hold::run(args, args.server()?, stop)?
    } else {
        let server = match args.mode {
            Mode::Direct => None,
            _ => Some(args.server()?),
        };
        traffic::run(args, server, stop)?
    };
    report.cpu_s = crate::procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    report.interrupted = stop.load(Ordering::Relaxed);
    Ok(report)
}

/// `onionrtc bench loadgen`: runs until done, SIGINT or SIGTERM, and prints
/// the report as one JSON line on stdout.
pub fn main(args: &LoadgenArgs) -> Result<(), LoadgenError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(io_err("signal handler"))?;
    }
    let report = run(args, &stop)?;
    print_json_line(&report).map_err(io_err("stdout"))
}

/// Prints `value` as one JSON line on stdout and flushes.
pub(crate) fn print_json_line<T: Serialize>(value: &T) -> io::Result<()> {
    let line = serde_json::to_string(value).map_err(io::Error::other)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Counts a failure reason (at most 20 distinct ones are kept).
pub(crate) fn count_error(errors: &mut BTreeMap<String, u64>, reason: String) {
    if errors.len() < 20 || errors.contains_key(&reason) {
        *errors.entry(reason).or_insert(0) += 1;
    }
}

/// Seconds as a `Duration` (the flags are checked to be in range).
pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
}

/// The time a probe plan of `k` probes at `pps` takes from its start.
pub(crate) fn offset(k: u64, pps: u32) -> Duration {
    let ns = u128::from(k) * 1_000_000_000 / u128::from(pps.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let u: ServerUrl = "tls://127.0.0.1:5349".parse().unwrap();
        assert_eq!(u.kind, LinkKind::Tls);
        assert_eq!(u.to_string(), "tls://127.0.0.1:5349");
        assert!("127.0.0.1:3478".parse::<ServerUrl>().is_err());
        assert!("sctp://127.0.0.1:1".parse::<ServerUrl>().is_err());
        assert!("udp://localhost:1".parse::<ServerUrl>().is_err());
    }

    #[test]
    fn schedule_offsets() {
        assert_eq!(offset(0, 20_000), Duration::ZERO);
        assert_eq!(offset(1, 20_000), Duration::from_micros(50));
        assert_eq!(offset(20_000, 20_000), Duration::from_secs(1));
    }
}

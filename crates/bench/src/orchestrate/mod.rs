//! `onionrtc bench relay`: coturn and our relay side by side.
//!
//! Scenarios, each run against coturn then ours, every server started fresh:
//! - `uclient`: `turnutils_uclient` over UDP, TCP and TLS at 120 and 1200
//!   bytes, `turnutils_peer` as the external peer;
//! - `loadgen`: our generator at fixed rates (5 000 and 20 000 packets/s)
//!   at 120 and 1200 bytes, plus the same load without relay (`direct`) for
//!   the latency the relay adds;
//! - `memory`: 1k/5k/10k allocations, each with a permission and a channel,
//!   and the server's RSS at each step;
//! - `alloc-rate`: allocations per second with REST credentials;
//! - `c2c`: client to client through our relay (two allocations talking),
//!   reported separately;
//! - `scaling`: each server with 1 and 2 relay threads, the offered UDP
//!   rate stepped up on one fresh server until the loss reaches 0.1 %: the
//!   highest rate held.
//!
//! `--quick` runs a few-seconds version of each (the CI smoke test).

pub(crate) mod children;
mod report;
mod scenarios;
mod servers;
mod summary;
mod uclient;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use report::{Added, Document, Machine, Row, Target};

use children::tool_exists;
use uclient::UclientPeer;

/// Flags of `onionrtc bench relay`.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// A smoke version of every scenario (about a minute): small loads,
    /// short runs, 120-byte uclient rows only. Its figures are indicative.
    #[arg(long)]
    pub quick: bool,
    /// Run only the scenarios matching these tags (comma-separated; within
    /// a group any tag matches, across groups all must): kinds uclient,
    /// loadgen, memory, alloc-rate, c2c, scaling; transports udp, tcp, tls; servers
    /// coturn, onionrtc.
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    pub only: Vec<String>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Our load generator polls its sockets without sleeping while it sends
    /// (one CPU kept busy), so its own wake-ups are not in the round trip.
    /// For investigating latency: it takes a CPU from the servers.
    #[arg(long)]
    pub busy_poll: bool,
    /// Our relay's `busy_poll_us`: after a busy loop turn each shard polls
    /// this many microseconds without sleeping before it blocks (0: off,
    /// the default). Costs CPU; compare the rows with and without.
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub relay_busy_poll_us: u32,
    /// Keep configurations and logs in DIR (default: a temporary directory,
    /// removed at the end).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
}

/// Why a scenario, or the run, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// A program is not installed.
    #[error("{0} is not installed (Debian: apt-get install coturn)")]
    MissingTool(String),
    /// A server exited during its scenario.
    #[error("{server} exited ({status}); its log ends with:\n{log}")]
    ServerDied {
        /// Which.
        server: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// Something did not finish in time.
    #[error("{0}")]
    Timeout(String),
    /// The load generator failed.
    #[error("load generator failed ({status}): {stderr}")]
    Loadgen {
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A tag of --only is unknown.
    #[error("unknown --only tag {0:?} (kinds: uclient, loadgen, memory, alloc-rate, c2c, scaling; transports: udp, tcp, tls; servers: coturn, onionrtc)")]
    UnknownTag(String),
    /// SIGINT or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every scenario produced a result (targets may still FAIL).
    Complete,
    /// Some scenario produced no result.
    Incomplete,
    /// Stopped by a signal.
    Interrupted,
}

impl Outcome {
    /// 0, 1 or 130.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Complete => 0,
            Outcome::Incomplete => 1,
            Outcome::Interrupted => 130,
        }
    }
}

/// Which scenarios run.
#[derive(Debug, Default, Clone)]
struct Filter {
    kinds: BTreeSet<String>,
    transports: BTreeSet<String>,
    servers: BTreeSet<String>,
}

const KINDS: [&str; 6] = [
    "uclient",
    "loadgen",
    "memory",
    "alloc-rate",
    "c2c",
    "scaling",
];
const TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];
const SERVERS: [&str; 2] = ["coturn", "onionrtc"];

impl Filter {
    fn parse(tags: &[String]) -> Result<Filter, BenchError> {
        let mut f = Filter::default();
        for t in tags.iter().map(|t| t.trim().to_ascii_lowercase()) {
            let t = match t.as_str() {
                "ours" => "onionrtc".to_owned(),
                "alloc" | "allocrate" | "alloc_rate" => "alloc-rate".to_owned(),
                _ => t,
            };
            if KINDS.contains(&t.as_str()) {
                f.kinds.insert(t);
            } else if TRANSPORTS.contains(&t.as_str()) {
                f.transports.insert(t);
            } else if SERVERS.contains(&t.as_str()) {
                f.servers.insert(t);
            } else if !t.is_empty() {
                return Err(BenchError::UnknownTag(t));
            }
        }
        Ok(f)
    }

    fn allows(&self, kind: &str, transport: &str) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(kind))
            && (self.transports.is_empty() || self.transports.contains(transport))
    }

    fn allows_server(&self, server: &str) -> bool {
        self.servers.is_empty() || self.servers.contains(server)
    }
}

/// Shared state of a run.
#[derive(Debug)]
pub(crate) struct Ctx {
    exe: PathBuf,
    work: PathBuf,
    quick: bool,
    busy_poll: bool,
    relay_busy_poll_us: u32,
    stop: Arc<AtomicBool>,
    serial: u32,
    doc: Document,
    filter: Filter,
    have_coturn: bool,
    have_uclient: bool,
    peer: Option<UclientPeer>,
}

impl Ctx {
    fn interrupted(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// `onionrtc bench relay`: runs every scenario, prints the tables and the
/// summary, writes `--json`. `exe` is the `onionrtc` binary (for `relay`
/// and `bench loadgen`).
pub fn main(args: &RelayArgs, exe: &Path) -> Result<Outcome, BenchError> {
    let filter = Filter::parse(&args.only)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| BenchError::io("cannot install a signal handler", e))?;
    }
    let fd_limit = crate::raise_fd_limit();
    let temp;
    let work = match &args.workdir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| BenchError::io(format!("cannot create {}", dir.display()), e))?;
            std::fs::canonicalize(dir)
                .map_err(|e| BenchError::io(format!("cannot resolve {}", dir.display()), e))?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("onionrtc-bench-")
                .tempdir()
                .map_err(|e| BenchError::io("cannot create a temporary directory", e))?;
            temp.path().to_path_buf()
        }
    };
    write_certificate(&work)?;

    let coturn_version = coturn_version();
    let mut ctx = Ctx {
        exe: exe.to_path_buf(),
        work,
        quick: args.quick,
        busy_poll: args.busy_poll,
        relay_busy_poll_us: args.relay_busy_poll_us,
        stop,
        serial: 0,
        doc: Document {
            version: 1,
            quick: args.quick,
            busy_poll: args.busy_poll,
            machine: Machine::probe(coturn_version.clone(), fd_limit),
            ..Document::default()
        },
        filter,
        have_coturn: coturn_version.is_some(),
        have_uclient: tool_exists("turnutils_uclient", &[])
            && tool_exists("turnutils_peer", &["-h"]),
        peer: None,
    };
    let started = Instant::now();
    scenarios::print_header(&ctx);
    if !ctx.have_coturn {
        ctx.doc
            .skipped
            .push("coturn rows: turnserver is not installed (apt-get install coturn)".into());
    }
    if !ctx.have_uclient {
        ctx.doc.skipped.push(
            "uclient scenarios: turnutils_uclient/turnutils_peer are not installed (apt-get install coturn)"
                .into(),
        );
    }
    let result = scenarios::run_all(&mut ctx);
    ctx.peer = None;
    ctx.doc.elapsed_s = started.elapsed().as_secs_f64();
    ctx.doc.interrupted = ctx.interrupted() || matches!(result, Err(BenchError::Interrupted));
    ctx.doc.targets = summary::targets(&ctx.doc);
    summary::print(&ctx.doc);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&ctx.doc).map_err(io::Error::other);
        text.and_then(|t| std::fs::write(path, t))
            .map_err(|e| BenchError::io(format!("cannot write {}", path.display()), e))?;
        println!("JSON written to {}", path.display());
    }
    if args.workdir.is_some() {
        println!("Configurations and logs kept in {}", ctx.work.display());
    }
    match result {
        Err(BenchError::Interrupted) => return Ok(Outcome::Interrupted),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    if ctx.doc.interrupted {
        Ok(Outcome::Interrupted)
    } else if ctx.doc.rows.iter().any(|r| !r.ok) {
        Ok(Outcome::Incomplete)
    } else {
        Ok(Outcome::Complete)
    }
}

/// `turnserver --version`, if coturn is installed.
fn coturn_version() -> Option<String> {
    let out = std::process::Command::new("turnserver")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Some(if text.is_empty() {
        "unknown".into()
    } else {
        text
    })
}

/// A self-signed certificate for 127.0.0.1, shared by both servers.
fn write_certificate(work: &Path) -> Result<(), BenchError> {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| BenchError::io("cannot make a certificate", io::Error::other(e)))?;
    let write = |name: &str, body: String| {
        let path = work.join(name);
        std::fs::write(&path, body)
            .map_err(|e| BenchError::io(format!("cannot write {}", path.display()), e))
    };
    write("cert.pem", ck.cert.pem())?;
    write("key.pem", ck.signing_key.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_groups() {
        let f = Filter::parse(&["udp".into(), "loadgen".into(), "ours".into()]).unwrap();
        assert!(f.allows("loadgen", "udp"));
        assert!(!f.allows("loadgen", "tcp"));
        assert!(!f.allows("uclient", "udp"));
        assert!(f.allows_server("onionrtc") && !f.allows_server("coturn"));
        let all = Filter::parse(&[]).unwrap();
        assert!(all.allows("memory", "udp") && all.allows_server("coturn"));
        assert!(Filter::parse(&["sctp".into()]).is_err());
    }
}

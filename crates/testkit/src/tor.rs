//! A private Tor network for tests: C tor from Debian, three directory
//! authorities that are also relays and exits, and one client, all on
//! 127.0.0.1, bootstrapped in 10–20 s. It never contacts the public Tor
//! network: every node knows only our own `DirAuthority` lines and runs with
//! `TestingTorNetwork 1`. The facts it follows are measured in
//! `/work/shared/TOR-TESTNET.md`.
//!
//! # Use
//! ```no_run
//! #[test]
//! fn through_tor() {
//!     let Some(_pass) = testkit::tor::run_isolated_group("tor::through_tor") else {
//!         return; // ran (and passed) in the group's namespace, or skipped
//!     };
//!     let tor = testkit::tor::shared().unwrap();
//!     let socks = tor.socks_addr(); // 127.0.0.1:PORT, IsolateSOCKSAuth
//!     let circuits = tor.control().unwrap().circuit_status().unwrap();
//!     # let _ = (socks, circuits);
//! }
//! ```
//!
//! # Safety: only inside a namespace the test made
//! The exits must run `ExitPolicy accept *:*` (with a 127/8-only policy the
//! client never picks an exit), so the network may only run where nothing
//! but loopback and the test's own namespaces is reachable.
//! [`TorNetwork::start`] panics unless
//! [`topology::assert_isolated`](crate::topology::assert_isolated) holds.
//!
//! # One network per test binary
//! Bootstrapping costs 10–20 s, so the tests of one module share a network:
//! [`run_isolated_group`] runs *all* tests of the caller's module (e.g.
//! `tor::*`) in **one** child process inside **one** fresh network
//! namespace (`unshare --net`), one after the other, and [`shared`] starts
//! the network there on first use. Each test in the parent process then
//! reports its own result from the child. Running one test of the group
//! (`cargo test tor::x`) still runs the whole group once.
//!
//! # Cleanup
//! Nodes run in the foreground under a parent-death signal
//! ([`spawn_tied`]): they are killed by PID
//! when their [`TorNetwork`] drops, and by the kernel when the test binary
//! exits (the shared network is never dropped) or dies. The group runner
//! also kills any node left in its pidfile, then deletes the directory.
//!
//! # Design decisions
//! - `RunAsDaemon 0` instead of TOR-TESTNET.md's `RunAsDaemon 1`: a daemon
//!   forks away from the parent-death signal; the `PidFile` is still
//!   written.
//! - `ConfluxEnabled 0` on the client by default ([`TorOptions::conflux`]):
//!   plain circuits, one per isolated SOCKS identity, so checks on
//!   `circuit-status` are simple.
//! - Keys are generated per network (3–5 s on two cores, in parallel).
//! - Delayed ACKs are turned off on loopback
//!   ([`TorOptions::loopback_quickack`]): with several circuits sharing a
//!   connection, tor's Nagle-delayed writes otherwise wait for Linux's 40 ms
//!   delayed ACK, and round trips through the network jump from ~1 ms to
//!   ~21 ms (median), hiding what the code under test adds.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::process::{free_port, run_bounded, wait_until, Proc};
use crate::topology::{assert_isolated, loopback_quickack, spawn_tied, tied_command};

/// Number of authorities (each also a relay and an exit) by default.
pub const AUTHORITIES: usize = 3;
/// Number of authorities [`TorOptions::onion`] asks for: onion-service
/// circuits have four distinct relays (the client's introduction circuit
/// and the service's rendezvous circuit end at a relay the other side
/// chose), which three relays cannot give.
pub const ONION_AUTHORITIES: usize = 5;
/// Where the exits bind when the test uses a [`Topology`](crate::topology::Topology):
/// its default extra address on the server link.
pub const TOPOLOGY_EXIT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 9);
/// Environment variable naming the group a re-executed test binary runs.
pub const GROUP_ENV: &str = "ONIONRTC_TOR_GROUP";
/// Environment variable naming the group's directory (pass markers, the
/// shared network's files).
pub const GROUP_DIR_ENV: &str = "ONIONRTC_TOR_GROUP_DIR";
/// How long [`run_isolated_group`] lets the whole group run.
pub const GROUP_LIMIT: Duration = Duration::from_secs(420);

/// Why the network could not be started or queried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorError {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// A helper program failed (tor-gencert, tor --list-fingerprint).
    #[error("{program} failed: {detail}")]
    Tool {
        /// The program.
        program: &'static str,
        /// Its status and output.
        detail: String,
    },
    /// The network was not ready in time.
    #[error("{0}")]
    Timeout(String),
    /// The control port answered with an error or something unexpected.
    #[error("control port: {0}")]
    Control(String),
    /// The shared network failed to start (once, for the whole process).
    #[error("the shared tor network failed to start: {0}")]
    Shared(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TorError {
    let what = what.into();
    move |source| TorError::Io { what, source }
}

/// Options of [`TorNetwork::start`].
#[derive(Debug, Clone)]
pub struct TorOptions {
    /// `OutboundBindAddressExit` of the exits (default 127.0.0.1). Tor
    /// ignores it for loopback destinations; set [`TOPOLOGY_EXIT_ADDR`] to
    /// tell Tor traffic apart at a server in a topology's server namespace.
    pub exit_bind: Ipv4Addr,
    /// Leave conflux (tor's default) on at the client; `false` (default)
    /// sets `ConfluxEnabled 0` for plain circuits.
    pub conflux: bool,
    /// Turn off delayed ACKs on loopback in this namespace before starting
    /// (default `true`): see
    /// [`topology::loopback_quickack`](crate::topology::loopback_quickack)
    /// for the 20–60 ms it otherwise adds with concurrent circuits.
    pub loopback_quickack: bool,
    /// Time for one attempt (authorities' consensus plus the client's
    /// bootstrap); one retry follows a failed attempt. Default 45 s.
    pub attempt_limit: Duration,
    /// How many authorities (each also a relay, exit, guard and HSDir) the
    /// network has: [`AUTHORITIES`] by default, [`ONION_AUTHORITIES`] for
    /// onion services ([`TorOptions::onion`]).
    pub authorities: usize,
    /// The authorities' `V3AuthVotingInterval` in seconds (default 10).
    pub voting_interval: u32,
    /// The authorities' `ConsensusParams` line, if any.
    pub consensus_params: Option<String>,
}

impl TorOptions {
    /// The options of a network that carries onion services reachable by
    /// C tor *and* arti: the defaults of [`shared`] with
    /// [`ONION_AUTHORITIES`] relays, a 15 s voting interval and the
    /// consensus parameter `hsdir_interval=6`.
    ///
    /// Why: with `TestingTorNetwork`, C tor's onion-service time period is
    /// one shared-random run (24 voting intervals) and ignores the
    /// consensus; arti (0.47) takes the period from the consensus parameter
    /// `hsdir_interval` (minutes, at least 5, default 1440) and its offset
    /// from the voting interval (12 of them, as C tor). With 10 s
    /// intervals C tor's period is 4 min, which arti cannot be given, so
    /// arti computes other blinded keys and HSDirs and never finds the
    /// descriptor. 15 s intervals make C tor's period 6 min, and
    /// `hsdir_interval=6` (arti's spelling; C tor reads `hsdir-interval`,
    /// and not in a test network) makes arti's the same.
    pub fn onion() -> TorOptions {
        TorOptions {
            exit_bind: TOPOLOGY_EXIT_ADDR,
            authorities: ONION_AUTHORITIES,
            voting_interval: 15,
            consensus_params: Some("hsdir_interval=6".into()),
            // Five relays' keys and first consensus on a loaded 2-core
            // machine took more than 45 s once in three runs.
            attempt_limit: Duration::from_secs(75),
            ..TorOptions::default()
        }
    }

    /// The onion-service time period of a network with these options:
    /// one shared-random run, 24 voting intervals (C tor with
    /// `TestingTorNetwork`).
    pub fn onion_time_period(&self) -> Duration {
        Duration::from_secs(24 * u64::from(self.voting_interval))
    }

    /// How far `now` is into the current onion-service time period (periods
    /// start 12 voting intervals after multiples of their length since the
    /// Unix epoch).
    ///
    /// Why tests need it: within a minute or so of a period boundary, arti
    /// and C tor disagreed on the private network about which descriptor to
    /// fetch (measured: a run across a boundary failed to reach the
    /// service for 40 s; ten runs elsewhere in the period did not), so
    /// tests that need an onion service to stay reachable start early in a
    /// period.
    pub fn time_in_onion_period(&self, now: std::time::SystemTime) -> Duration {
        let len = self.onion_time_period().as_secs().max(1);
        let offset = 12 * u64::from(self.voting_interval);
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Duration::from_secs((secs + len - offset % len) % len)
    }
}

impl Default for TorOptions {
    fn default() -> Self {
        TorOptions {
            exit_bind: Ipv4Addr::LOCALHOST,
            conflux: false,
            loopback_quickack: true,
            attempt_limit: Duration::from_secs(45),
            authorities: AUTHORITIES,
            voting_interval: 10,
            consensus_params: None,
        }
    }
}

/// One tor process.
#[derive(Debug)]
struct Node {
    name: String,
    dir: PathBuf,
    proc: Option<Proc>,
    control_port: u16,
}

impl Node {
    fn notice_log(&self) -> String {
        fs::read_to_string(self.dir.join("notice.log")).unwrap_or_default()
    }
}

/// A running private Tor network. Dropping it kills every node by PID.
#[derive(Debug)]
pub struct TorNetwork {
    dir: PathBuf,
    authorities: Vec<Node>,
    client: Node,
    socks_port: u16,
    dir_ports: Vec<u16>,
    dir_lines: String,
    /// Per authority: relay fingerprint, v3 identity, ORPort, DirPort.
    ids: Vec<(String, String, u16, u16)>,
    empty: PathBuf,
    bootstrap: Duration,
}

impl TorNetwork {
    /// Starts a network in `dir` (created if missing; one subdirectory per
    /// attempt and node): keys, authorities, a consensus with three routers
    /// flagged Running Exit Guard, then the client until `Bootstrapped
    /// 100%`. Retries once on failure.
    ///
    /// Panics unless this process runs in an isolated test namespace.
    pub fn start(dir: &Path, options: &TorOptions) -> Result<TorNetwork, TorError> {
        assert_isolated();
        if options.loopback_quickack {
            loopback_quickack(None).map_err(io_err("loopback quickack routes"))?;
        }
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io_err(format!("canonicalize {}", dir.display())))?;
        let started = Instant::now();
        let mut last = None;
        for attempt in 1..=2 {
            let adir = dir.join(format!("attempt{attempt}"));
            match Self::attempt(&adir, options, started) {
                Ok(net) => return Ok(net),
                Err(e) => {
                    eprintln!("tor testnet attempt {attempt} failed: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| TorError::Timeout("no attempt".into())))
    }

    fn attempt(dir: &Path, options: &TorOptions, started: Instant) -> Result<TorNetwork, TorError> {
        let deadline = Instant::now() + options.attempt_limit;
        let n = options.authorities.max(1);
        let auth: Vec<AuthorityPlan> = (0..n)
            .map(|i| AuthorityPlan::new(dir, i))
            .collect::<Result<_, _>>()?;
        // Keys and fingerprints, in parallel (RSA key generation dominates).
        let keys: Vec<Result<(String, String), TorError>> = std::thread::scope(|s| {
            let handles: Vec<_> = auth.iter().map(|a| s.spawn(|| a.make_keys())).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(TorError::Timeout("key thread panicked".into())))
                })
                .collect()
        });
        let mut dir_lines = String::new();
        let mut ids = Vec::new();
        for (a, k) in auth.iter().zip(keys) {
            let (fp, v3) = k?;
            ids.push((fp.clone(), v3.clone(), a.or_port, a.dir_port));
            dir_lines.push_str(&format!(
                "DirAuthority {} orport={} no-v2 v3ident={v3} 127.0.0.1:{} {fp}\n",
                a.name, a.or_port, a.dir_port
            ));
        }
        let empty = dir.join("empty");
        fs::write(&empty, "").map_err(io_err("write empty file"))?;
        let mut authorities = Vec::new();
        for a in &auth {
            let torrc = common_torrc(&a.dir, a.control_port, &empty, &dir_lines)
                + &authority_torrc(a, options);
            authorities.push(start_node(&a.name, &a.dir, &torrc, a.control_port, &empty)?);
        }
        let dir_ports: Vec<u16> = auth.iter().map(|a| a.dir_port).collect();
        let mut net = TorNetwork {
            dir: dir.to_owned(),
            authorities,
            client: Node {
                name: "client".into(),
                dir: dir.join("client"),
                proc: None,
                control_port: 0,
            },
            socks_port: 0,
            dir_ports,
            dir_lines: dir_lines.clone(),
            ids,
            empty: empty.clone(),
            bootstrap: Duration::ZERO,
        };
        // A consensus listing every authority as a usable exit.
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = wait_until(left, Duration::from_millis(250), || {
            net.dir_ports
                .iter()
                .any(|&p| usable_exits(&fetch_consensus(p)) >= n)
                .then_some(())
        });
        if ready.is_none() {
            return Err(TorError::Timeout(format!(
                "no consensus with {n} Running Exit Guard routers within {:?}; a0's log:\n{}",
                options.attempt_limit,
                tail(&net.authorities[0].notice_log(), 30)
            )));
        }
        // Only now the client (started earlier it waits for its next fetch).
        let cdir = dir.join("client");
        fs::create_dir_all(&cdir).map_err(io_err("create client dir"))?;
        let control_port = free_port();
        let socks_port = free_port();
        let mut torrc = common_torrc(&cdir, control_port, &empty, &dir_lines);
        torrc.push_str(&format!(
            "Nickname client\nSocksPort 127.0.0.1:{socks_port} IsolateSOCKSAuth\n"
        ));
        if !options.conflux {
            torrc.push_str("ConfluxEnabled 0\n");
        }
        net.client = start_node("client", &cdir, &torrc, control_port, &empty)?;
        net.socks_port = socks_port;
        let left = deadline.saturating_duration_since(Instant::now());
        let booted = wait_until(left, Duration::from_millis(100), || {
            net.client
                .notice_log()
                .contains("Bootstrapped 100%")
                .then_some(())
        });
        if booted.is_none() {
            return Err(TorError::Timeout(format!(
                "the client did not bootstrap within {:?}; its log:\n{}",
                options.attempt_limit,
                tail(&net.client.notice_log(), 30)
            )));
        }
        let phase = net.control()?.getinfo("status/bootstrap-phase")?;
        if !phase.contains("PROGRESS=100") {
            return Err(TorError::Control(format!("bootstrap phase: {phase}")));
        }
        net.bootstrap = started.elapsed();
        eprintln!(
            "tor testnet up in {:.1} s: socks 127.0.0.1:{socks_port}, control 127.0.0.1:{control_port}, exits bind {}",
            net.bootstrap.as_secs_f64(),
            options.exit_bind
        );
        Ok(net)
    }

    /// The client's SOCKS5 address (`IsolateSOCKSAuth`: different
    /// username/password pairs get different circuits).
    pub fn socks_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.socks_port))
    }

    /// The client's control port address.
    pub fn control_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client.control_port))
    }

    /// A new authenticated connection to the client's control port.
    pub fn control(&self) -> Result<TorControl, TorError> {
        TorControl::connect(
            self.control_addr(),
            &self.client.dir.join("control_auth_cookie"),
        )
    }

    /// torrc lines that make another tor client (e.g. one a program under
    /// test launches) use this network instead of the public one: the
    /// `DirAuthority` lines, `TestingTorNetwork 1` and the client settings
    /// of TOR-TESTNET.md. Add a `SocksPort` and `DataDirectory` of its own.
    pub fn client_torrc_lines(&self) -> Vec<String> {
        let e = self.empty.display();
        let mut lines: Vec<String> = [
            "TestingTorNetwork 1",
            "PathsNeededToBuildCircuits 0.67",
            "ClientUseIPv6 0",
            "Schedulers Vanilla",
            "SafeLogging 0",
        ]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
        lines.push(format!("GeoIPFile {e}"));
        lines.push(format!("GeoIPv6File {e}"));
        lines.extend(self.dir_lines.lines().map(str::to_owned));
        lines
    }

    /// An arti configuration (TOML) that makes an arti client use this
    /// network: its authorities, the authorities as fallback caches (RSA and
    /// Ed25519 identities, ORPorts), and the settings a network of three
    /// relays on one address needs — no subnet families (arti otherwise
    /// refuses two relays of one /16 in a circuit) and targets on local
    /// addresses allowed.
    pub fn arti_config(&self) -> Result<String, TorError> {
        let mut v3 = Vec::new();
        let mut dirs = Vec::new();
        let mut fallbacks = Vec::new();
        for (node, (fp, v3ident, or_port, dir_port)) in self.authorities.iter().zip(&self.ids) {
            let ed = ed25519_identity(&node.dir)?;
            v3.push(format!("\"{v3ident}\""));
            dirs.push(format!("[\"127.0.0.1:{dir_port}\"]"));
            fallbacks.push(format!(
                "{{ rsa_identity = \"{fp}\", ed_identity = \"{ed}\", orports = [\"127.0.0.1:{or_port}\"] }}"
            ));
        }
        let dirs = dirs.join(", ");
        Ok(format!(
            "[tor_network]\n\
             fallback_caches = [{}]\n\
             [tor_network.authorities]\n\
             v3idents = [{}]\n\
             uploads = [{dirs}]\n\
             downloads = [{dirs}]\n\
             votes = [{dirs}]\n\
             [path_rules]\n\
             ipv4_subnet_family_prefix = 33\n\
             ipv6_subnet_family_prefix = 129\n\
             [address_filter]\n\
             allow_local_addrs = true\n",
            fallbacks.join(", "),
            v3.join(", ")
        ))
    }

    /// How long [`TorNetwork::start`] took, key generation included.
    pub fn bootstrap_time(&self) -> Duration {
        self.bootstrap
    }

    /// The directory holding this attempt's nodes (logs in
    /// `<node>/notice.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of every node's notice log, for failure
    /// messages.
    pub fn logs(&self, lines: usize) -> String {
        self.authorities
            .iter()
            .chain(std::iter::once(&self.client))
            .map(|n| format!("--- {} ---\n{}", n.name, tail(&n.notice_log(), lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TorNetwork {
    fn drop(&mut self) {
        // Proc's drop kills by PID (the PID in each node's pidfile).
        self.client.proc.take();
        for a in &mut self.authorities {
            a.proc.take();
        }
    }
}

/// The network shared by the tests of this process, started on first use
/// with exits bound to [`TOPOLOGY_EXIT_ADDR`] (so a server in a
/// [`Topology`](crate::topology::Topology) sees Tor traffic from there). The
/// guard serializes its users, so circuit checks see only their own
/// traffic. Inside [`run_isolated_group`] it lives in the group's directory;
/// otherwise in a temporary directory left behind at exit.
///
/// Panics unless this process runs in an isolated test namespace.
pub fn shared() -> Result<MutexGuard<'static, TorNetwork>, TorError> {
    shared_with(TorOptions {
        exit_bind: TOPOLOGY_EXIT_ADDR,
        ..TorOptions::default()
    })
}

/// [`shared`] with other options (e.g. [`TorOptions::onion`]). The first
/// call of [`shared`] or `shared_with` in a process starts the network;
/// later calls get that network whatever options they pass, so a group of
/// tests (one process) must agree on them.
pub fn shared_with(options: TorOptions) -> Result<MutexGuard<'static, TorNetwork>, TorError> {
    static SHARED: OnceLock<Result<Mutex<TorNetwork>, String>> = OnceLock::new();
    let net = SHARED.get_or_init(|| {
        let dir = match std::env::var_os(GROUP_DIR_ENV) {
            Some(d) => PathBuf::from(d).join("tor"),
            None => match tempfile::Builder::new().prefix("onionrtc-tor-").tempdir() {
                Ok(t) => t.keep(),
                Err(e) => return Err(format!("temporary directory: {e}")),
            },
        };
        TorNetwork::start(&dir, &options)
            .map(Mutex::new)
            .map_err(|e| e.to_string())
    });
    match net {
        Ok(m) => Ok(m.lock().unwrap_or_else(|e| e.into_inner())),
        Err(e) => Err(TorError::Shared(e.clone())),
    }
}

/// A circuit from `GETINFO circuit-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuit {
    /// Circuit ID.
    pub id: String,
    /// `LAUNCHED`, `BUILT`, `EXTENDED`, `FAILED`, `CLOSED`, …
    pub status: String,
    /// Relays as `$FINGERPRINT~nickname`.
    pub path: Vec<String>,
    /// `PURPOSE=` (e.g. `GENERAL`, `CONFLUX_LINKED`).
    pub purpose: Option<String>,
    /// `SOCKS_USERNAME=` of an isolated circuit.
    pub socks_username: Option<String>,
}

/// A stream from `GETINFO stream-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Stream ID.
    pub id: String,
    /// `SUCCEEDED`, `NEW`, `SENTCONNECT`, …
    pub status: String,
    /// The circuit carrying it (`0` when not attached).
    pub circuit: String,
    /// `HOST:PORT`.
    pub target: String,
}

/// A minimal client of tor's control protocol (cookie authentication,
/// `GETINFO`).
pub struct TorControl {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl fmt::Debug for TorControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TorControl").finish_non_exhaustive()
    }
}

impl TorControl {
    /// Connects and authenticates with the cookie file.
    pub fn connect(addr: SocketAddr, cookie: &Path) -> Result<TorControl, TorError> {
        let cookie = fs::read(cookie).map_err(io_err(format!("read {}", cookie.display())))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(io_err(format!("connect to control port {addr}")))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io_err("set timeout"))?;
        let writer = stream.try_clone().map_err(io_err("clone control socket"))?;
        let mut c = TorControl {
            reader: BufReader::new(stream),
            writer,
        };
        let hex: String = cookie.iter().map(|b| format!("{b:02X}")).collect();
        c.command(&format!("AUTHENTICATE {hex}"))?;
        Ok(c)
    }

    /// Sends one command and returns its reply lines (without status codes;
    /// multi-line data blocks included), or an error for a non-250 reply.
    pub fn command(&mut self, line: &str) -> Result<Vec<String>, TorError> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(io_err("write to control port"))?;
        let mut out = Vec::new();
        loop {
            let l = self.read_line()?;
            if l.len() < 4 {
                return Err(TorError::Control(format!("short reply line {l:?}")));
            }
            let (code, sep, rest) = (&l[..3], &l[3..4], &l[4..]);
            if code != "250" {
                return Err(TorError::Control(format!("{line:?} → {l}")));
            }
            match sep {
                " " => {
                    out.push(rest.to_owned());
                    return Ok(out);
                }
                "-" => out.push(rest.to_owned()),
                "+" => {
                    out.push(rest.to_owned());
                    loop {
                        let d = self.read_line()?;
                        if d == "." {
                            break;
                        }
                        out.push(d.strip_prefix('.').map_or(d.clone(), str::to_owned));
                    }
                }
                _ => return Err(TorError::Control(format!("bad reply line {l:?}"))),
            }
        }
    }

    /// `GETINFO key`: the value (several lines joined by `\n`).
    pub fn getinfo(&mut self, key: &str) -> Result<String, TorError> {
        let lines = self.command(&format!("GETINFO {key}"))?;
        let mut value = Vec::new();
        let mut inside = false;
        for l in lines {
            if let Some(v) = l.strip_prefix(&format!("{key}=")) {
                inside = true;
                if !v.is_empty() {
                    value.push(v.to_owned());
                }
            } else if l == "OK" {
                inside = false;
            } else if inside {
                value.push(l);
            }
        }
        Ok(value.join("\n"))
    }

    /// `GETINFO circuit-status`.
    pub fn circuit_status(&mut self) -> Result<Vec<Circuit>, TorError> {
        let text = self.getinfo("circuit-status")?;
        Ok(text.lines().filter_map(parse_circuit).collect())
    }

    /// `GETINFO stream-status`.
    pub fn stream_status(&mut self) -> Result<Vec<Stream>, TorError> {
        let text = self.getinfo("stream-status")?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                Some(Stream {
                    id: f.next()?.to_owned(),
                    status: f.next()?.to_owned(),
                    circuit: f.next()?.to_owned(),
                    target: f.next()?.to_owned(),
                })
            })
            .collect())
    }

    fn read_line(&mut self) -> Result<String, TorError> {
        let mut l = String::new();
        let n = self
            .reader
            .read_line(&mut l)
            .map_err(io_err("read from control port"))?;
        if n == 0 {
            return Err(TorError::Control("connection closed".into()));
        }
        Ok(l.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn parse_circuit(line: &str) -> Option<Circuit> {
    let mut f = line.split(' ');
    let id = f.next()?.to_owned();
    let status = f.next()?.to_owned();
    let mut c = Circuit {
        id,
        status,
        path: Vec::new(),
        purpose: None,
        socks_username: None,
    };
    for (i, field) in f.enumerate() {
        if let Some((k, v)) = field.split_once('=') {
            let v = v.trim_matches('"').to_owned();
            match k {
                "PURPOSE" => c.purpose = Some(v),
                "SOCKS_USERNAME" => c.socks_username = Some(v),
                _ => {}
            }
        } else if i == 0 {
            c.path = field.split(',').map(str::to_owned).collect();
        }
    }
    Some(c)
}

/// An authority before it starts: ports, directory.
struct AuthorityPlan {
    name: String,
    dir: PathBuf,
    or_port: u16,
    dir_port: u16,
    control_port: u16,
}

impl AuthorityPlan {
    fn new(base: &Path, i: usize) -> Result<Self, TorError> {
        let name = format!("a{i}");
        let dir = base.join(&name);
        fs::create_dir_all(dir.join("keys"))
            .map_err(io_err(format!("create {}", dir.display())))?;
        Ok(AuthorityPlan {
            name,
            dir,
            or_port: free_port(),
            dir_port: free_port(),
            control_port: free_port(),
        })
    }

    /// `tor-gencert`, then the relay fingerprint (without the real torrc,
    /// which refuses to start without `DirAuthority` lines). Returns (relay
    /// fingerprint, v3 identity).
    fn make_keys(&self) -> Result<(String, String), TorError> {
        let keys = self.dir.join("keys");
        let mut gencert = Command::new("sh");
        gencert
            .args([
                "-c",
                r#"echo "" | exec tor-gencert --create-identity-key --passphrase-fd 0 -m 12 -a "$0" -i "$1" -s "$2" -c "$3""#,
            ])
            .arg(format!("127.0.0.1:{}", self.dir_port))
            .arg(keys.join("authority_identity_key"))
            .arg(keys.join("authority_signing_key"))
            .arg(keys.join("authority_certificate"));
        let out = run_bounded(&mut gencert, Duration::from_secs(60));
        if !out.status.success() {
            return Err(TorError::Tool {
                program: "tor-gencert",
                detail: format!("{out:?}"),
            });
        }
        let mut list = Command::new("tor");
        list.args([
            "--ignore-missing-torrc",
            "-f",
            "/nonexistent",
            "--orport",
            "1",
        ])
        .arg("--datadirectory")
        .arg(&self.dir)
        .arg("--list-fingerprint");
        let out = run_bounded(&mut list, Duration::from_secs(30));
        let text = String::from_utf8_lossy(&out.stdout);
        let fp: String = text
            .lines()
            .last()
            .and_then(|l| l.split_once(' '))
            .map(|(_, fp)| fp.chars().filter(|c| !c.is_whitespace()).collect())
            .unwrap_or_default();
        if !out.status.success() || fp.len() != 40 {
            return Err(TorError::Tool {
                program: "tor --list-fingerprint",
                detail: format!("{out:?}"),
            });
        }
        let cert = fs::read_to_string(keys.join("authority_certificate"))
            .map_err(io_err("read authority_certificate"))?;
        let v3 = cert
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint "))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| TorError::Tool {
                program: "tor-gencert",
                detail: "no fingerprint line in authority_certificate".into(),
            })?;
        Ok((fp, v3))
    }
}

/// A relay's Ed25519 identity (unpadded base64, as arti's configuration
/// takes it) from `keys/ed25519_master_id_public_key`: a 32-byte header,
/// then the key.
fn ed25519_identity(node_dir: &Path) -> Result<String, TorError> {
    use base64::Engine as _;
    let path = node_dir.join("keys").join("ed25519_master_id_public_key");
    let bytes = fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
    match bytes.get(32..64) {
        Some(key) if bytes.len() == 64 => {
            Ok(base64::engine::general_purpose::STANDARD_NO_PAD.encode(key))
        }
        _ => Err(TorError::Tool {
            program: "tor",
            detail: format!("{} is not a 64-byte key file", path.display()),
        }),
    }
}

/// The lines every node has (TOR-TESTNET.md, "Every node").
fn common_torrc(dir: &Path, control_port: u16, empty: &Path, dir_lines: &str) -> String {
    let d = dir.display();
    let e = empty.display();
    format!(
        "TestingTorNetwork 1\n\
         AssumeReachable 1\n\
         PathsNeededToBuildCircuits 0.67\n\
         TestingDirAuthVoteExit *\n\
         TestingDirAuthVoteGuard *\n\
         TestingDirAuthVoteHSDir *\n\
         TestingMinExitFlagThreshold 0\n\
         V3AuthNIntervalsValid 2\n\
         RunAsDaemon 0\n\
         ShutdownWaitLength 0\n\
         SafeLogging 0\n\
         ClientUseIPv6 0\n\
         GeoIPFile {e}\n\
         GeoIPv6File {e}\n\
         Schedulers Vanilla\n\
         DataDirectory {d}\n\
         PidFile {d}/pid\n\
         Log notice file {d}/notice.log\n\
         ControlPort 127.0.0.1:{control_port}\n\
         CookieAuthentication 1\n\
         {dir_lines}"
    )
}

/// The lines of an authority/relay/exit (TOR-TESTNET.md).
fn authority_torrc(a: &AuthorityPlan, options: &TorOptions) -> String {
    let exit_bind = options.exit_bind;
    let params = options
        .consensus_params
        .as_ref()
        .map(|p| format!("ConsensusParams {p}\n"))
        .unwrap_or_default();
    params
        + &format!(
            "Nickname {n}\n\
         Address 127.0.0.1\n\
         ORPort 127.0.0.1:{or}\n\
         DirPort 127.0.0.1:{dir}\n\
         SocksPort 0\n\
         ContactInfo {n}@test.invalid\n\
         AuthoritativeDirectory 1\n\
         V3AuthoritativeDirectory 1\n\
         TestingV3AuthInitialVotingInterval 5\n\
         TestingV3AuthInitialVoteDelay 2\n\
         TestingV3AuthInitialDistDelay 2\n\
         V3AuthVotingInterval {vi}\n\
         V3AuthVoteDelay 2\n\
         V3AuthDistDelay 2\n\
         ExitRelay 1\n\
         OutboundBindAddressExit {exit_bind}\n\
         ExitPolicyRejectPrivate 0\n\
         ExitPolicyRejectLocalInterfaces 0\n\
         ExitPolicy accept 127.0.0.0/8:*\n\
         ExitPolicy accept *:*\n\
         ExitPolicy reject *:*\n",
            n = a.name,
            or = a.or_port,
            dir = a.dir_port,
            vi = options.voting_interval,
        )
}

fn start_node(
    name: &str,
    dir: &Path,
    torrc: &str,
    control_port: u16,
    empty: &Path,
) -> Result<Node, TorError> {
    let torrc_path = dir.join("torrc");
    fs::write(&torrc_path, torrc).map_err(io_err(format!("write {}", torrc_path.display())))?;
    let log = fs::File::create(dir.join("stdout.log")).map_err(io_err("create stdout.log"))?;
    let log2 = log.try_clone().map_err(io_err("clone stdout.log"))?;
    let mut cmd = tied_command("tor");
    cmd.arg("--defaults-torrc")
        .arg(empty)
        .arg("-f")
        .arg(&torrc_path)
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    let proc = spawn_tied(cmd).map_err(io_err("start tor"))?;
    Ok(Node {
        name: name.to_owned(),
        dir: dir.to_owned(),
        proc: Some(proc),
        control_port,
    })
}

/// The current consensus from a directory port, or "" (bounded: 2 s).
fn fetch_consensus(dir_port: u16) -> String {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, dir_port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = "GET /tor/status-vote/current/consensus HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut body = Vec::new();
    let _ = s.take(16 << 20).read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body).into_owned();
    if text.starts_with("HTTP/1.0 200") {
        text
    } else {
        String::new()
    }
}

/// Routers of a consensus flagged Running, Exit and Guard.
fn usable_exits(consensus: &str) -> usize {
    let mut n = 0;
    let mut in_router = false;
    for l in consensus.lines() {
        if l.starts_with("r ") {
            in_router = true;
        } else if in_router && l.starts_with("s ") {
            let flags: Vec<&str> = l.split(' ').collect();
            if ["Running", "Exit", "Guard"]
                .iter()
                .all(|f| flags.contains(f))
            {
                n += 1;
            }
            in_router = false;
        }
    }
    n
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Opens a TCP connection to `target` through the SOCKS5 proxy `proxy`
/// (RFC 1928), with username/password authentication (RFC 1929) when `auth`
/// is given — with tor's `IsolateSOCKSAuth`, each distinct pair gets its own
/// circuit. `limit` bounds each step.
pub fn socks5_connect(
    proxy: SocketAddr,
    target: SocketAddr,
    auth: Option<(&str, &str)>,
    limit: Duration,
) -> io::Result<TcpStream> {
    socks5_connect_to(proxy, Socks5Target::Addr(target), auth, limit)
}

/// [`socks5_connect`] to a host name the proxy resolves (e.g. a `.onion`).
pub fn socks5_connect_host(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    auth: Option<(&str, &str)>,
    limit: Duration,
) -> io::Result<TcpStream> {
    socks5_connect_to(proxy, Socks5Target::Host(host, port), auth, limit)
}

enum Socks5Target<'a> {
    Addr(SocketAddr),
    Host(&'a str, u16),
}

fn socks5_connect_to(
    proxy: SocketAddr,
    target: Socks5Target<'_>,
    auth: Option<(&str, &str)>,
    limit: Duration,
) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&proxy, limit)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    let method = if auth.is_some() { 2 } else { 0 };
    s.write_all(&[5, 1, method])?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply)?;
    if reply != [5, method] {
        return Err(io::Error::other(format!(
            "SOCKS5 method refused: {reply:?}"
        )));
    }
    if let Some((user, pass)) = auth {
        let (u, p) = (user.as_bytes(), pass.as_bytes());
        let (Ok(ul), Ok(pl)) = (u8::try_from(u.len()), u8::try_from(p.len())) else {
            return Err(io::Error::other("SOCKS5 username or password too long"));
        };
        let mut msg = vec![1, ul];
        msg.extend_from_slice(u);
        msg.push(pl);
        msg.extend_from_slice(p);
        s.write_all(&msg)?;
        s.read_exact(&mut reply)?;
        if reply[1] != 0 {
            return Err(io::Error::other("SOCKS5 authentication failed"));
        }
    }
    let mut req = vec![5, 1, 0];
    let (shown, port) = match target {
        Socks5Target::Addr(SocketAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
            (a.to_string(), a.port())
        }
        Socks5Target::Addr(SocketAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
            (a.to_string(), a.port())
        }
        Socks5Target::Host(host, port) => {
            let Ok(len) = u8::try_from(host.len()) else {
                return Err(io::Error::other("SOCKS5 host name too long"));
            };
            req.push(3);
            req.push(len);
            req.extend_from_slice(host.as_bytes());
            (format!("{host}:{port}"), port)
        }
    };
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[1] != 0 {
        return Err(io::Error::other(format!(
            "SOCKS5 connect to {shown} failed: reply {}",
            head[1]
        )));
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n)?;
            usize::from(n[0]) + 2
        }
        t => {
            return Err(io::Error::other(format!(
                "SOCKS5 reply with address type {t}"
            )))
        }
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip)?;
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)?;
    Ok(s)
}

/// A test's pass marker in its group: written on drop unless the test is
/// panicking.
#[derive(Debug)]
pub struct GroupPass {
    marker: PathBuf,
}

impl Drop for GroupPass {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::write(&self.marker, "passed\n");
        }
    }
}

/// Runs `test` (its path in this test binary, e.g. `tor::via_socks`)
/// together with every other test of its module in **one** fresh network
/// namespace, so they can share one Tor network ([`shared`]). "Its module"
/// means the tests directly in it (`tor::x`, not `tor::sub::y`).
///
/// - **Outside** (the normal test run): the first test of the group to get
///   here starts this binary again under `unshare --net` with every test of
///   the module as an exact filter, `--test-threads 1`, and waits for it
///   (at most [`GROUP_LIMIT`]); the others wait for that run. Each test then
///   passes if the child reported it passed, and panics (with the child's
///   output) otherwise. Returns `None`. Tests are skipped (outside CI) or
///   fail (in CI) when `tor` or network namespaces are unavailable.
/// - **Inside** the child: checks the namespace and returns `Some` marker;
///   the caller runs its body holding it, and the marker records the pass
///   when dropped without a panic.
pub fn run_isolated_group(test: &str) -> Option<GroupPass> {
    let (module, _) = test
        .rsplit_once("::")
        .unwrap_or_else(|| panic!("{test:?} is not a test path inside a module"));
    if let Ok(group) = std::env::var(GROUP_ENV) {
        assert_eq!(group, module, "{test} runs inside group {group:?}");
        assert_isolated();
        let dir = std::env::var_os(GROUP_DIR_ENV).expect("group directory");
        return Some(GroupPass {
            marker: PathBuf::from(dir).join(format!("{test}.passed")),
        });
    }
    if !crate::require_tool("tor", &["--version"])
        || !crate::require_tool("tor-gencert", &["--help"])
    {
        return None;
    }
    if let Err(why) = crate::netns::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "network namespaces are required in CI: {why}"
        );
        eprintln!("skipping {test}: no network namespace ({why})");
        return None;
    }
    static RUNS: Mutex<Option<HashMap<String, GroupRun>>> = Mutex::new(None);
    let mut runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let run = runs
        .get_or_insert_with(HashMap::new)
        .entry(module.to_owned())
        .or_insert_with(|| GroupRun::run(module));
    assert!(
        run.passed.contains(test),
        "{test} did not pass in its group's namespace ({}); the group's output:\n{}",
        run.status,
        run.output
    );
    None
}

/// The result of one group run: the tests that passed, the child's output.
#[derive(Debug)]
struct GroupRun {
    passed: HashSet<String>,
    status: String,
    output: String,
}

impl GroupRun {
    fn run(module: &str) -> GroupRun {
        let exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
        let list = run_bounded(
            Command::new(&exe).args(["--list", "--format", "terse"]),
            Duration::from_secs(30),
        );
        let prefix = format!("{module}::");
        let tests: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .filter(|t| t.strip_prefix(&prefix).is_some_and(|n| !n.contains("::")))
            .map(str::to_owned)
            .collect();
        assert!(!tests.is_empty(), "no tests under {prefix} in {list:?}");
        let dir = tempfile::Builder::new()
            .prefix("onionrtc-tor-group-")
            .tempdir()
            .expect("group directory");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--",
            "sh",
            "-c",
            r#"ip link set lo up && exec "$0" "$@""#,
        ])
        .arg(&exe)
        .args(&tests)
        .args([
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(GROUP_ENV, module)
        .env(GROUP_DIR_ENV, dir.path());
        eprintln!("running {tests:?} in one new network namespace");
        let started = Instant::now();
        let out = run_bounded(&mut cmd, GROUP_LIMIT);
        kill_leftover_nodes(&dir.path().join("tor"));
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "---- group {module} in its network namespace: {} in {:.1} s ----\n{output}---- end of group {module} ----",
            out.status,
            started.elapsed().as_secs_f64()
        );
        let passed = tests
            .into_iter()
            .filter(|t| dir.path().join(format!("{t}.passed")).exists())
            .collect();
        GroupRun {
            passed,
            status: out.status.to_string(),
            output,
        }
    }
}

/// Kills (by PID, from their pidfiles) tor nodes that outlived the group's
/// child — normally none, since their parent-death signal killed them.
fn kill_leftover_nodes(tor_dir: &Path) {
    let Ok(attempts) = fs::read_dir(tor_dir) else {
        return;
    };
    for node in attempts
        .flatten()
        .filter_map(|a| fs::read_dir(a.path()).ok())
        .flatten()
        .flatten()
    {
        let Ok(pid) = fs::read_to_string(node.path().join("pid")) else {
            continue;
        };
        let pid = pid.trim();
        let torrc = node.path().join("torrc");
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains(&*torrc.to_string_lossy()) {
            eprintln!("killing leftover tor node {pid}");
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onion_periods() {
        let o = TorOptions::onion();
        assert_eq!(o.onion_time_period(), Duration::from_secs(360));
        let at = |s: u64| o.time_in_onion_period(std::time::UNIX_EPOCH + Duration::from_secs(s));
        // Periods start at 180 s (12 × 15 s) past multiples of 360 s.
        assert_eq!(at(180), Duration::ZERO);
        assert_eq!(at(179), Duration::from_secs(359));
        assert_eq!(at(360 * 1000 + 200), Duration::from_secs(20));
    }

    #[test]
    fn circuit_lines() {
        let c = parse_circuit(
            "7 BUILT $AA~a0,$BB~a1,$CC~a2 BUILD_FLAGS=NEED_CAPACITY PURPOSE=GENERAL \
             SOCKS_USERNAME=\"u1\" SOCKS_PASSWORD=\"p\" TIME_CREATED=2025-01-01T00:00:00.0",
        )
        .unwrap();
        assert_eq!(c.id, "7");
        assert_eq!(c.status, "BUILT");
        assert_eq!(c.path, ["$AA~a0", "$BB~a1", "$CC~a2"]);
        assert_eq!(c.purpose.as_deref(), Some("GENERAL"));
        assert_eq!(c.socks_username.as_deref(), Some("u1"));
        let launched =
            parse_circuit("8 LAUNCHED BUILD_FLAGS=NEED_CAPACITY PURPOSE=GENERAL").unwrap();
        assert!(launched.path.is_empty());
        assert_eq!(launched.purpose.as_deref(), Some("GENERAL"));
        assert!(parse_circuit("9").is_none());
    }

    #[test]
    fn consensus_exits() {
        let doc = "network-status-version 3\n\
                   r a0 x y 2025-01-01 00:00:00 127.0.0.1 5000 5001\n\
                   s Authority Exit Fast Guard HSDir Running Stable V2Dir Valid\n\
                   r a1 x y 2025-01-01 00:00:00 127.0.0.1 5002 5003\n\
                   s Authority Fast Running Valid\n\
                   r a2 x y 2025-01-01 00:00:00 127.0.0.1 5004 5005\n\
                   s Exit Guard Running\n";
        assert_eq!(usable_exits(doc), 2);
        assert_eq!(usable_exits(""), 0);
    }
}

//! # relay — the running OnionRTC TURN/STUN server
//!
//! A thin driver around [`turn::server::Server`]: it owns the sockets
//! (UDP, TCP and TLS listeners; relay sockets; RFC 6062 peer connections),
//! the timers and the metrics, and leaves every protocol decision to the
//! sans-IO server.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let config = relay::config::RelayConfig::defaults().with_auth_secret("s3cret");
//! let handle = relay::start(&config)?; // binds, then serves on its own thread
//! println!("TURN on {:?}", handle.udp_addrs());
//! handle.shutdown()?;
//! # Ok(()) }
//! ```
//!
//! ## Design decisions
//! - One event loop per shard on `mio`, owning one `Server`: no locks, no
//!   task or channel hop per packet, zero heap allocation per relayed
//!   datagram (client data is borrowed from the receive buffer; peer data is
//!   read behind headroom and framed in place).
//! - `threads` shards, one thread each ([`start`] spawns them with
//!   `spawn_shard`). Every shard has its own client sockets on every listen
//!   address (`SO_REUSEPORT`: the kernel keeps each UDP flow and each
//!   accepted connection on one shard) and picks relay ports from its own
//!   slice of the range. Shared, off the data plane: the quota book (quota
//!   shares, the atomic relay-port pool, RESERVATION-TOKENs), the
//!   connection counts, the metrics. A peer that is an allocation of
//!   another shard is reached through the kernel; an RFC 6062 data
//!   connection accepted by the wrong shard is handed to the shard owning
//!   its CONNECTION-ID (`shard/links.rs`).
//! - Relay sockets are opened when the server asks (`Output::BindRelay`) and
//!   closed when it says so; the driver never decides protocol matters.
//! - A data plane of handles: each relay socket keeps the `AllocId` the
//!   server returned for it, so peer data goes to its allocation without a
//!   lookup by address; client data comes back with its destination (the
//!   network, or another allocation of this relay, delivered in process).
//! - Every connection has limits: total and per-IP connection counts, a
//!   handshake timeout for streams that never complete a frame, an idle
//!   timeout for streams without allocation, bounded output buffers.

mod batch;
pub mod config;
mod conn;
pub mod control;
pub mod coturn;
pub mod logfmt;
pub mod metrics;
mod shard;
mod sockets;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::config::{ListenProto, RelayConfig};
use crate::metrics::{Metrics, MetricsServer};
use crate::shard::{DriverConfig, Listeners, Reload, Shard};
use turn::server::ShardId;

/// A running relay. Dropping it does not stop it; call [`RelayHandle::shutdown`].
#[derive(Debug)]
pub struct RelayHandle {
    udp: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    metrics: Arc<Metrics>,
    metrics_server: Option<MetricsServer>,
    reloads: Vec<std::sync::mpsc::Sender<Reload>>,
    /// The configuration running now (what a reload is compared with).
    running: std::sync::Mutex<RelayConfig>,
    /// The shards' redirect settings: one drain switch for all.
    redirect: turn::server::Redirect,
}

/// How long [`RelayHandle::reload`] waits for a shard to apply it.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

impl RelayHandle {
    /// Bound UDP listener addresses.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// Bound TCP listener addresses.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// Bound TLS listener addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls
    }

    /// The metrics of all shards.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The Prometheus endpoint's bound address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// The flag that stops the relay when set (e.g. by a signal handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Starts draining (`true`): every new allocation is sent to an
    /// alternate relay (300 ALTERNATE-SERVER) or, with none for its
    /// transport, refused with 508; live allocations keep working until they
    /// end. `false` resumes.
    pub fn set_draining(&self, on: bool) {
        self.redirect.set_draining(on);
    }

    /// Whether the relay is draining.
    pub fn is_draining(&self) -> bool {
        self.redirect.is_draining()
    }

    /// The state in a few `key: value` lines (the control socket's `status`).
    pub fn status(&self) -> String {
        let (s, d) = self.metrics.totals();
        let allocations: u64 = s.allocations_current.iter().sum();
        let running = match self.running.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let alternates: Vec<String> = running
            .alternate_servers
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "draining: {}\nallocations: {allocations}\nconnections: {}\nshards: {}\n\
             alternate_servers: {}\nredirected: {}\n",
            if self.is_draining() { "yes" } else { "no" },
            d.connections_current.iter().sum::<u64>(),
            self.threads.len(),
            if alternates.is_empty() {
                "none".to_owned()
            } else {
                alternates.join(", ")
            },
            s.redirected,
        )
    }

    /// Whether every shard is still running.
    pub fn is_running(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }

    /// Applies a new configuration to the running relay without dropping
    /// anything (hot reload): credentials (static users, REST secrets),
    /// quotas, bandwidth limits (at once, for live allocations too), the
    /// peer policy, connection limits and timeouts, the TLS
    /// certificate and key (for new handshakes), `software` and
    /// `log_client_addresses`. Live allocations keep working.
    ///
    /// The new configuration is validated and built in full first (TLS
    /// files read, credentials checked): on any error nothing changes and
    /// the error says why. Settings that only a restart can change
    /// (listeners, relay addresses and ports, `metrics`, `threads`,
    /// `tcp_relay`) keep their running values; their names are returned.
    pub fn reload(&self, config: &RelayConfig) -> anyhow::Result<Vec<&'static str>> {
        config.validate()?;
        let server = config.to_server_config()?;
        let driver = driver_config(config)?;
        let mut running = match self.running.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut kept: Vec<&'static str> = Vec::new();
        let changed = |a: bool, name: &'static str, kept: &mut Vec<&'static str>| {
            if a {
                kept.push(name);
            }
        };
        changed(config.listen != running.listen, "listen", &mut kept);
        changed(config.metrics != running.metrics, "metrics", &mut kept);
        changed(config.threads != running.threads, "threads", &mut kept);
        changed(
            config.control_socket != running.control_socket,
            "control_socket",
            &mut kept,
        );
        let n = self.reloads.len() as u32;
        for (i, tx) in self.reloads.iter().enumerate() {
            let (done, applied) = std::sync::mpsc::channel();
            let reload = Reload {
                server: shard_server_config(&server, ShardId::new(i as u32, n)),
                driver: driver.clone(),
                done,
            };
            tx.send(reload)
                .map_err(|_| anyhow::anyhow!("the relay is not running"))?;
            let names = applied
                .recv_timeout(RELOAD_TIMEOUT)
                .map_err(|_| anyhow::anyhow!("the relay did not apply the new configuration"))?;
            for name in names {
                kept.push(match name {
                    "relay" => "relay_ip/relay_ip6/external_ip/external_ip6",
                    "ports" => "relay_ports",
                    other => other,
                });
            }
        }
        kept.sort_unstable();
        kept.dedup();
        // What runs now: the new values, except what was kept.
        let mut now = config.clone();
        now.listen = running.listen.clone();
        now.metrics = running.metrics;
        now.threads = running.threads;
        now.relay_ip = running.relay_ip;
        now.relay_ip6 = running.relay_ip6;
        now.external_ip = running.external_ip;
        now.external_ip6 = running.external_ip6;
        now.relay_ports = running.relay_ports.clone();
        now.tcp_relay = running.tcp_relay;
        now.control_socket = running.control_socket.clone();
        *running = now;
        Ok(kept)
    }

    /// Stops the shards and waits for them.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(anyhow::Error::new(e).context("relay shard failed")),
                Err(_) => result = Err(anyhow::anyhow!("relay shard panicked")),
            }
        }
        drop(self.metrics_server.take());
        result
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Validates `config`, binds every listener and starts serving: one shard
/// (event loop, thread, `turn::server::Server`) per `threads`.
pub fn start(config: &RelayConfig) -> anyhow::Result<RelayHandle> {
    config.validate()?;
    // Every allocation holds a socket and every TCP/TLS client a connection:
    // raise the soft open-file limit to the hard one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open-file limit {n}"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let server_config = config.to_server_config()?;
    let redirect = server_config.redirect.clone();
    let n = shard_count(config.threads, &server_config.ports);
    let driver = driver_config(config)?;
    let (listeners, udp, tcp, tls) = bind_listeners(config, n)?;
    let metrics = Metrics::new(n);
    let metrics_server = match config.metrics {
        Some(a) => Some(
            MetricsServer::start(a, metrics.clone())
                .with_context(|| format!("cannot serve metrics on {a}"))?,
        ),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let book = turn::server::QuotaBook::new(server_config.ports.clone());
    let links = shard::links(n, &metrics, &stop)?;
    let mut threads = Vec::with_capacity(n);
    let mut reloads = Vec::with_capacity(n);
    for (i, (l, (links, reload))) in listeners.into_iter().zip(links).enumerate() {
        let shard = ShardId::new(i as u32, n as u32);
        let server = shard_server_config(&server_config, shard);
        match spawn_shard(shard, server, driver.clone(), l, links, book.clone()) {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
        reloads.push(reload);
    }
    tracing::debug!("{n} relay shards");
    Ok(RelayHandle {
        udp,
        tcp,
        tls,
        stop,
        threads,
        metrics,
        metrics_server,
        reloads,
        running: std::sync::Mutex::new(config.clone()),
        redirect,
    })
}

/// `threads` shards, but never more than relay ports (each shard takes
/// ports from its own slice of the range).
fn shard_count(threads: usize, ports: &std::ops::RangeInclusive<u16>) -> usize {
    let available = ports.clone().count().max(1);
    if threads > available {
        tracing::warn!(
            "threads = {threads} but relay_ports holds {available} ports: running {available} shards"
        );
    }
    threads.clamp(1, available)
}

/// One shard on its own thread: its `Server` (quotas counted in the shared
/// `book`, ports from its slice) and event loop. The shard is built on
/// that thread (its batch buffers are not `Send`); construction errors come
/// back before this returns.
fn spawn_shard(
    shard: ShardId,
    server_config: turn::server::ServerConfig,
    driver: DriverConfig,
    listeners: Listeners,
    links: shard::Links,
    book: Arc<turn::server::QuotaBook>,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("relay-{}", shard.index))
        .spawn(move || {
            let mut server = turn::server::Server::with_quota_book(
                server_config,
                Instant::now(),
                unix_now(),
                book,
            );
            server.set_shard(shard);
            match Shard::new(shard.index as usize, server, driver, listeners, links) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s.run()
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    Err(e)
                }
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => anyhow::bail!("relay shard {} failed to start: {e}", shard.index),
        Err(_) => anyhow::bail!("relay shard {} failed to start", shard.index),
    }
}

/// The sans-IO server's configuration for one shard: the total bandwidth
/// cap (`bps_capacity`) is split evenly, each shard enforcing its part.
fn shard_server_config(
    c: &turn::server::ServerConfig,
    shard: ShardId,
) -> turn::server::ServerConfig {
    let mut c = c.clone();
    let total = &mut c.limits.bytes_per_sec_total;
    *total = total.div_ceil(u64::from(shard.count));
    c
}

/// Binds every listen address once per shard (with `SO_REUSEPORT` when
/// there are several); port 0 takes a free port for the first shard and
/// the same one for the others. Returns each shard's listeners and the
/// bound addresses.
#[allow(clippy::type_complexity)]
fn bind_listeners(
    config: &RelayConfig,
    n: usize,
) -> anyhow::Result<(
    Vec<Listeners>,
    Vec<SocketAddr>,
    Vec<SocketAddr>,
    Vec<SocketAddr>,
)> {
    let mut shards: Vec<Listeners> = (0..n).map(|_| Listeners::default()).collect();
    let (mut udp, mut tcp, mut tls) = (Vec::new(), Vec::new(), Vec::new());
    let reuse = n > 1;
    for l in &config.listen {
        let what = || format!("cannot listen on {l}");
        let mut addr = l.addr;
        for (i, shard) in shards.iter_mut().enumerate() {
            let bound = match l.proto {
                ListenProto::Udp => {
                    let s = sockets::udp_listener(addr, reuse).with_context(what)?;
                    let a = s.local_addr()?;
                    shard.udp.push(s);
                    a
                }
                ListenProto::Tcp | ListenProto::Tls => {
                    let s = sockets::tcp_listener(addr, reuse).with_context(what)?;
                    let a = s.local_addr()?;
                    if l.proto == ListenProto::Tls {
                        shard.tls.push(s);
                    } else {
                        shard.tcp.push(s);
                    }
                    a
                }
            };
            if i == 0 {
                addr = bound;
                match l.proto {
                    ListenProto::Udp => udp.push(bound),
                    ListenProto::Tcp => tcp.push(bound),
                    ListenProto::Tls => tls.push(bound),
                }
            }
        }
    }
    Ok((shards, udp, tcp, tls))
}

/// The event loop's settings from `config` (reads the TLS files).
fn driver_config(config: &RelayConfig) -> anyhow::Result<DriverConfig> {
    Ok(DriverConfig {
        log_client_addresses: config.log_client_addresses,
        tls: config.tls_server_config()?,
        max_connections: config.max_connections as usize,
        max_connections_per_ip: config.max_connections_per_ip as usize,
        handshake_timeout: config.handshake_timeout,
        idle_timeout: config.idle_timeout,
        max_frame: config.max_frame,
        busy_poll: Duration::from_micros(u64::from(config.busy_poll_us)),
    })
}

/// Reloads `handle` with what `load` returns and logs the outcome in one
/// line: what a SIGHUP does in `onionrtc relay` and `onionrtc serve`.
pub fn reload_logged(handle: &RelayHandle, load: impl FnOnce() -> anyhow::Result<RelayConfig>) {
    let result = load().and_then(|c| handle.reload(&c));
    match result {
        Ok(kept) if kept.is_empty() => tracing::info!("configuration reloaded"),
        Ok(kept) => tracing::warn!(
            "configuration reloaded; these settings need a restart and keep their running values: {}",
            kept.join(", ")
        ),
        Err(e) => tracing::error!(
            "configuration reload refused, the running configuration stays: {e:#}"
        ),
    }
}

/// Sets the log filter (`tracing` `EnvFilter` syntax); what the control
/// socket's `log-level` calls.
pub type SetLogLevel = Box<dyn Fn(&str) -> anyhow::Result<()> + Send>;

/// Answers one control-socket request for the relay behind `handle`.
pub fn control(
    handle: &RelayHandle,
    request: control::Request,
    reload: impl FnOnce() -> anyhow::Result<RelayConfig>,
    set_log_level: Option<&SetLogLevel>,
) -> Result<String, String> {
    use control::Request;
    match request {
        Request::Status => Ok(handle.status()),
        Request::Drain(on) => {
            handle.set_draining(on);
            if on {
                tracing::warn!(
                    "draining: new allocations go to the alternate servers (or are refused with 508); live ones stay"
                );
            } else {
                tracing::info!("resumed: new allocations are accepted again");
            }
            Ok(handle.status())
        }
        Request::Reload => {
            tracing::info!("control socket: reloading the configuration");
            let kept = load_and_reload(handle, reload).map_err(|e| format!("{e:#}"))?;
            Ok(match kept.is_empty() {
                true => "reloaded\n".to_owned(),
                false => format!(
                    "reloaded; these settings need a restart and keep their running values: {}\n",
                    kept.join(", ")
                ),
            })
        }
        Request::LogLevel(filter) => {
            let Some(set) = set_log_level else {
                return Err("this process cannot change its log level".into());
            };
            set(&filter).map_err(|e| format!("{e:#}"))?;
            tracing::info!("log level set to {filter}");
            Ok(format!("log level: {filter}\n"))
        }
    }
}

fn load_and_reload(
    handle: &RelayHandle,
    load: impl FnOnce() -> anyhow::Result<RelayConfig>,
) -> anyhow::Result<Vec<&'static str>> {
    let result = load().and_then(|c| handle.reload(&c));
    if let Err(e) = &result {
        tracing::error!("configuration reload refused, the running configuration stays: {e:#}");
    }
    result
}

/// Runs the relay until SIGINT or SIGTERM; on SIGHUP, reloads the
/// configuration `reload` returns (see [`RelayHandle::reload`]). With
/// `control_socket` set, answers `onionrtc ctl` there (see [`control`]);
/// `set_log_level` serves its `log-level` command.
pub fn run(
    config: RelayConfig,
    reload: impl Fn() -> anyhow::Result<RelayConfig>,
    set_log_level: Option<SetLogLevel>,
) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM during start-up must stop us cleanly,
    // and a SIGHUP (`systemctl reload`) must never kill the relay.
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
    let handle = start(&config)?;
    for a in handle.udp_addrs() {
        tracing::info!("listening on udp://{a}");
    }
    for a in handle.tcp_addrs() {
        tracing::info!("listening on tcp://{a}");
    }
    for a in handle.tls_addrs() {
        tracing::info!("listening on tls://{a}");
    }
    if let Some(a) = handle.metrics_addr() {
        tracing::info!("metrics on http://{a}/metrics");
    }
    if config.dangerous_allow_loopback_peers {
        tracing::warn!("dangerous_allow_loopback_peers is on: clients may relay to loopback addresses of this machine (tests only)");
    }
    let (control_tx, control_rx) = std::sync::mpsc::channel();
    let control_socket = match &config.control_socket {
        Some(path) => {
            let c = control::ControlSocket::start(path, move |p| control_tx.send(p).is_ok())?;
            tracing::info!("control socket on {}", path.display());
            Some(c)
        }
        None => None,
    };
    while !stop.load(Ordering::Relaxed) && handle.is_running() {
        if hup.swap(false, Ordering::Relaxed) {
            tracing::info!("SIGHUP: reloading the configuration");
            reload_logged(&handle, &reload);
        }
        match control_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(p) => {
                let answer = control(&handle, p.request, &reload, set_log_level.as_ref());
                let _ = p.reply.send(answer);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // No control socket: wait as before.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100))
            }
        }
    }
    tracing::info!("shutting down");
    drop(control_socket);
    handle.shutdown()
}

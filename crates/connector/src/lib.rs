//! The OnionRTC connector: an unmodified browser reaches the relay and the
//! signaling site through Tor, or through a network that only lets TCP
//! 443 out.
//!
//! ```text
//! (onionrtc connect URL: open_route(via) → wellknown::fetch(site) through
//!  it → relay, pins, onion addresses into the config →
//!  Connector::start_with_route(config, route))
//! Connector::start(config)
//!   ├─ tor (--via tor): embedded arti (crate `arti`): bootstrap in the
//!   │     data dir, progress logged; or with a tor binary: write torrc,
//!   │     launch, wait for "Bootstrapped 100%"
//!   ├─ UDP 127.0.0.1:3479 ─ dispatcher ─ one flow task per client 5-tuple
//!   │     (opened only by a TURN Allocate; at most max_pending_flows
//!   │     without an accepted Allocate, closed after auth_timeout)
//!   │     datagram → check/frame (pad ChannelData) → upstream stream
//!   │     upstream stream → frames → datagram (strip padding) → client
//!   │     (redirects answered with a bare 300, never passed on)
//!   ├─ TCP 127.0.0.1:3479 ─ one task per client connection (first frame an
//!   │     Allocate): bytes up unchanged, frames down checked as for UDP
//!   └─ web 127.0.0.1:8081 (--web) ─ hyper: /connector.json here, the rest
//!         (HTTP and WebSocket) to the site with Host/Origin rewritten
//! every upstream stream: TCP direct | SOCKS5 (remote DNS, fresh
//!   credentials per flow = one Tor circuit each) | embedded Tor stream
//!   (own isolation group per flow = one circuit each) → TLS (roots, CA
//!   file or SPKI pin) for tls:// and https://
//! Handle::shutdown: stop accepting, end flows, kill tor by PID
//! ```
//!
//! ## Design decisions
//! - **TURN is carried, not spoken.** Messages pass unmodified (only the
//!   stream framing changes), so long-term and REST credentials and
//!   MESSAGE-INTEGRITY work end to end; the connector never sees a
//!   password and never logs a username. It reads the STUN class, method
//!   and transaction ID (to find unanswered requests, to open upstreams
//!   only for an Allocate and to see the relay accept one), and in the
//!   relay's messages whether any attribute is a redirect.
//! - **Web pages are not trusted.** Any page can make the browser send
//!   STUN/TURN to the loopback port: a Binding gets no answer and opens
//!   nothing; flows without an accepted Allocate have their own cap and a
//!   deadline; a TURN redirect (300, ALTERNATE-SERVER, ALTERNATE-DOMAIN) is
//!   never forwarded, since the browser would follow it around Tor — the
//!   connector answers a 300 naming no alternate itself (following it
//!   through its own route
//!   would send the call to a server nobody configured).
//! - **One upstream stream per client flow.** The relay sees one TCP/TLS
//!   client per allocation, exactly as if the browser spoke TURN over TLS
//!   itself; through Tor each flow has its own circuit. At the flow's
//!   start `--race K` upstreams (K circuits) carry the client's first,
//!   unauthenticated Allocate and the first to answer is kept, the others
//!   closed (race.rs): the 401's nonce the client uses is the winner's.
//! - **Circuits are measured, not trusted.** Each flow times its TURN
//!   transactions and watches for stalls (health.rs); a degraded flow is
//!   announced once on `/connector/events`, spares are dialled, and the
//!   page restarts ICE onto new flows (docs/connector.md "Circuit racing
//!   and hopping").
//! - **Bad datagrams are dropped, not written.** One malformed frame would
//!   desynchronise the stream for everything after it.
//! - **Dead upstreams are found from the client's own traffic.** A STUN
//!   request unanswered for `dead_timeout` on an open stream (a stalled
//!   circuit) closes the stream and dials again; a closed stream is
//!   re-dialled on the next datagram, after a back-off (0.5 s doubling to
//!   30 s) unless the relay had accepted an Allocate on the closed one,
//!   so a relay that accepts and closes costs a few dials, not one per
//!   datagram (through Tor, each a new circuit). The relay binds allocations to the
//!   stream, so the client's next request gets 437 and WebRTC recovers
//!   with an ICE restart; without the re-dial it would wait forever.
//! - **Every table and wait is bounded**: flows, per-flow queues, pending
//!   requests, web connections, dial/handshake/response timeouts, tor's
//!   bootstrap; idle flows close.
//! - **Loopback only.** Listeners refuse non-loopback addresses, and the
//!   web proxy answers only requests whose `Host` is a loopback name with
//!   its port (no DNS rebinding).

#![forbid(unsafe_code)]

pub mod config;
pub mod dial;
mod flow;
pub mod frame;
pub mod headers;
pub mod health;
mod race;
pub mod stats;
mod tcp;
pub mod tls;
pub mod tor;
mod udp;
mod web;
pub mod wellknown;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

pub use config::{Circuits, ConfigError, ConnectorConfig, Endpoint, Limits, RelayTrust, Via};
pub use dial::DialError;
pub use health::FlowReport;
pub use stats::{Stats, StatsSnapshot};
pub use tor::{TorNodes, TorOptions};

pub use crate::dial::Route;
use crate::dial::{BoxIo, Dialer};

/// The route `via` names. For `tor`, Tor is bootstrapped first: embedded
/// (arti, with the `arti` feature and no tor binary named), the route
/// carries the client; launched, the route is its SOCKS port: keep the
/// returned [`tor::TorProcess`] for as long as the route is used (dropping
/// it kills tor). Shared by the connector and `onionrtc call --via tor`.
///
/// # Errors
/// When tor cannot be started or does not bootstrap.
pub async fn open_route(via: &Via) -> Result<(Route, Option<tor::TorProcess>), tor::TorError> {
    Ok(match via {
        Via::Direct => (Route::Direct, None),
        Via::Socks5 { host, port } => (
            Route::Socks5(
                Endpoint {
                    tls: false,
                    host: host.clone(),
                    port: *port,
                }
                .authority(),
            ),
            None,
        ),
        #[cfg(feature = "arti")]
        Via::Tor(options) if options.embedded() => {
            options.check()?;
            (Route::Tor(tor::bootstrap_embedded(options).await?), None)
        }
        Via::Tor(options) => {
            options.check()?;
            let t = tor::TorProcess::launch(options).await?;
            (Route::Socks5(t.socks_addr().to_string()), Some(t))
        }
    })
}

/// Why the connector could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A TLS configuration could not be built (e.g. the CA file).
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    /// A listener could not be bound.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// `TURN (UDP)`, `TURN (TCP)` or `web`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// tor could not be started.
    #[error(transparent)]
    Tor(#[from] tor::TorError),
}

/// A shutdown signal every task watches.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Returns once shutdown has begun (or the sender is gone).
    pub(crate) async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// What TURN flows share: the relay, how to reach it, counters, limits.
#[derive(Debug)]
pub(crate) struct Turn {
    pub(crate) relay: Endpoint,
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) dialer: Dialer,
    pub(crate) stats: Arc<Stats>,
    pub(crate) limits: Limits,
    /// Places for flows without an authenticated allocation.
    pub(crate) pending: Arc<Semaphore>,
    /// Racing, spares and health thresholds.
    pub(crate) circuits: Circuits,
    /// Upstreams raced at a flow's start (1: none).
    pub(crate) race: usize,
    /// Spare upstreams.
    pub(crate) spares: race::Spares,
    /// Open flows' figures and the degradation events.
    pub(crate) registry: Arc<health::Registry>,
}

/// A flow's place among those without an authenticated allocation yet
/// (counted in `flows_pending`); dropped once the relay accepted an
/// Allocate, or with the flow.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<Stats>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.stats
            .flows_pending
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Turn {
    /// A pending place, or `None` (counted as refused) when all are taken.
    pub(crate) fn pending_slot(&self) -> Option<PendingSlot> {
        match Arc::clone(&self.pending).try_acquire_owned() {
            Ok(permit) => {
                Stats::inc(&self.stats.flows_pending);
                Some(PendingSlot {
                    _permit: permit,
                    stats: Arc::clone(&self.stats),
                })
            }
            Err(_) => {
                Stats::inc(&self.stats.pending_refused);
                None
            }
        }
    }

    /// A flow's health thresholds.
    pub(crate) fn thresholds(&self) -> health::Thresholds {
        health::Thresholds {
            stall: self.circuits.stall,
            rtt_factor: self.circuits.rtt_factor,
            rtt_margin: self.circuits.rtt_margin,
        }
    }

    /// Reports a flow's circuit degraded (once per flow): counted, an
    /// event for the page, and spares dialled for the ICE restart's flows.
    pub(crate) fn degraded(
        self: &Arc<Self>,
        entry: &health::FlowEntry,
        why: health::Degrade,
        health: &health::Health,
    ) {
        Stats::inc(&self.stats.flows_degraded);
        entry.degraded(why, health);
        self.prebuild();
    }

    /// A new upstream stream to the relay.
    pub(crate) async fn dial(&self) -> Result<BoxIo, DialError> {
        self.dialer
            .dial(
                &self.relay,
                self.tls.as_ref(),
                Some(Arc::clone(&self.stats)),
            )
            .await
    }
}

/// The connector.
#[derive(Debug)]
pub struct Connector;

impl Connector {
    /// Validates `config`, binds the listeners, launches tor if asked and
    /// starts serving. Must run inside a tokio runtime (with time and IO).
    pub async fn start(config: ConnectorConfig) -> Result<Handle, StartError> {
        Self::start_inner(config, None).await
    }

    /// As [`Connector::start`], along a route already opened with
    /// [`open_route`] for `config.via` (e.g. after fetching the site's
    /// document through it); `tor` is the launched tor to keep, if any.
    pub async fn start_with_route(
        config: ConnectorConfig,
        route: Route,
        tor: Option<tor::TorProcess>,
    ) -> Result<Handle, StartError> {
        Self::start_inner(config, Some((route, tor))).await
    }

    async fn start_inner(
        config: ConnectorConfig,
        opened: Option<(Route, Option<tor::TorProcess>)>,
    ) -> Result<Handle, StartError> {
        config.validate()?;
        let relay_tls = if config.relay.tls {
            Some(tls::relay_config(&config.relay_trust)?)
        } else {
            None
        };
        let web_tls = match &config.web {
            Some(w) if w.tls => Some(match &config.web_ca {
                Some(ca) => tls::site_config(Some(ca))?,
                None => tls::web_config(&config.relay_trust)?,
            }),
            _ => None,
        };
        let (udp, tcp) = bind_turn(config.listen).await?;
        let turn_addr = udp.local_addr().map_err(|source| StartError::Bind {
            what: "TURN (UDP)",
            addr: config.listen,
            source,
        })?;
        let web_listener = match &config.web {
            Some(_) => Some(
                TcpListener::bind(config.web_listen)
                    .await
                    .map_err(|source| StartError::Bind {
                        what: "web",
                        addr: config.web_listen,
                        source,
                    })?,
            ),
            None => None,
        };
        let web_addr = match &web_listener {
            Some(l) => Some(l.local_addr().map_err(|source| StartError::Bind {
                what: "web",
                addr: config.web_listen,
                source,
            })?),
            None => None,
        };
        let (route, tor) = match opened {
            Some(o) => o,
            None => open_route(&config.via).await?,
        };
        let dialer = Dialer::new(route, config.limits.dial_timeout);
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = watch::channel(false);
        let shutdown = Shutdown(stop_rx);
        let turn = Arc::new(Turn {
            relay: config.relay.clone(),
            tls: relay_tls,
            dialer: dialer.clone(),
            stats: Arc::clone(&stats),
            limits: config.limits.clone(),
            pending: Arc::new(Semaphore::new(
                config.limits.max_pending_flows.min(config.limits.max_flows),
            )),
            circuits: config.circuits.clone(),
            race: config.circuits.race_for(&config.via),
            spares: race::Spares::default(),
            registry: Arc::new(health::Registry::default()),
        });
        let mut tasks = vec![
            tokio::spawn(udp::serve(
                Arc::new(udp),
                Arc::clone(&turn),
                shutdown.clone(),
            )),
            tokio::spawn(tcp::serve(tcp, Arc::clone(&turn), shutdown.clone())),
        ];
        if let (Some(listener), Some(site), Some(addr)) = (web_listener, &config.web, web_addr) {
            let web = Arc::new(web::Web {
                site: site.clone(),
                tls: web_tls,
                dialer,
                connector_json: web::connector_json(turn_addr, config.via.mode(), &site.origin()),
                registry: Arc::clone(&turn.registry),
                port: addr.port(),
                stats: Arc::clone(&stats),
                max_connections: config.limits.max_web_connections,
                header_timeout: config.limits.web_header_timeout,
            });
            tasks.push(tokio::spawn(web::serve(listener, web, shutdown.clone())));
        }
        tracing::info!(
            "connector: TURN on {turn_addr} (UDP and TCP) -> {} via {}",
            config.relay,
            config.via
        );
        Ok(Handle {
            turn_addr,
            web_addr,
            stats,
            stop,
            tasks,
            tor,
            turn,
        })
    }
}

/// Binds UDP and TCP on the same address; with port 0, on the same free
/// port (a few tries).
async fn bind_turn(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let bind_err = |what, source| StartError::Bind { what, addr, source };
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_err("TURN (UDP)", e))?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| bind_err("TURN (TCP)", e))?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_err("TURN (UDP)", e))?;
        let bound = udp.local_addr().map_err(|e| bind_err("TURN (UDP)", e))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(bind_err(
        "TURN (TCP)",
        last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")),
    ))
}

/// A running connector.
#[derive(Debug)]
pub struct Handle {
    turn_addr: SocketAddr,
    web_addr: Option<SocketAddr>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    tor: Option<tor::TorProcess>,
    turn: Arc<Turn>,
}

/// How long shutdown waits for flows to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

impl Handle {
    /// The TURN listeners' address (UDP and TCP).
    pub fn turn_addr(&self) -> SocketAddr {
        self.turn_addr
    }

    /// The web proxy's address, when there is one.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Every open TURN flow's figures (setup time, RTT, stalls).
    pub fn flows(&self) -> Vec<FlowReport> {
        self.turn.registry.reports()
    }

    /// Upstreams raced per flow.
    pub fn race(&self) -> usize {
        self.turn.race
    }

    /// The SOCKS port of the tor the connector launched.
    pub fn tor_socks_addr(&self) -> Option<SocketAddr> {
        self.tor.as_ref().map(|t| t.socks_addr())
    }

    /// The PID of the tor the connector launched.
    pub fn tor_pid(&self) -> Option<u32> {
        self.tor.as_ref().and_then(|t| t.pid())
    }

    /// Opens one upstream stream to the relay (TCP, SOCKS, TLS and its
    /// certificate check) and closes it: a start-up check with a clear
    /// error. Counted as a dial failure when it fails.
    pub async fn probe_relay(&self) -> Result<(), DialError> {
        match self.turn.dial().await {
            Ok(_) => Ok(()),
            Err(e) => {
                Stats::inc(&self.stats.upstream_failures);
                Err(e)
            }
        }
    }

    /// Stops accepting, ends every flow and tunnel (waiting up to 3 s) and
    /// kills tor by PID.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(SHUTDOWN_WAIT, task).await;
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while self.stats.snapshot().flows_current > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(tor) = self.tor {
            tor.stop().await;
        }
    }
}

//! The OnionRTC signaling server: rooms of up to 8 (a full mesh), the WebSocket protocol of
//! `docs/signaling.md`, the SDP/candidate sanitizer, TURN REST credentials,
//! the statistics store, the embedded web app and the operator API.
//!
//! ```text
//! serve(config, listener, shutdown)
//!   ├─ SignalState::new: open data_dir/signal.sqlite or database_url (migrate, writer thread), retention sweep
//!   ├─ maintenance task: retention sweep hourly, join-limiter pruning every minute
//!   ├─ rooms in process, or with redis_url in Redis shared by several nodes ([`cluster`]:
//!   │  Lua scripts for join/leave/sweep, one pub/sub channel per node, TTL refresh every 2 s)
//!   └─ listener: accept under limits (total below the fd limit, per address),
//!      hyper HTTP/1.1 with header and idle timeouts → router(state)
//!        every handler: ClientAddr (the TCP peer, or a trusted proxy's forwarded client)
//!        /ws ─ origin check ─ per-client cap ─ one task per connection (rooms, sanitizer, limits, stats → store)
//!        /sip ─ origin check ─ subprotocol sip ─ per-client cap ─ sip::Core (registrar, B2BUA, sanitizer) ([`sip_ws`])
//!          [sip] listen: UDP/TCP for phones into the same core ([`sip_net`]); [sip] media_ports: their
//!          plain RTP through per-call UDP bridges with latching ([`sip_media`])
//!        /api/sip/turn ─ SIP account (HTTP Basic) ─ TURN credentials
//!        /healthz /api/whoami, else the web app's files
//!        operator (token, site Host): /api/calls[/{id}] /metrics (bearer), /calls[/{id}] /calls/find (bearer or session)
//! shutdown: stop accepting, close every WebSocket (1001), drain HTTP, wait ≤ 3 s, flush the store (≤ 1 s)
//! ```
//!
//! Design decisions:
//! - The sanitizer ([`sanitize`]) is pure and runs on everything forwarded;
//!   there is no way for a client to switch it off.
//! - Nothing a WebSocket task does waits on another connection or on disk:
//!   forwarding is `try_send` into the other member's bounded queue (a full
//!   queue closes that member), samples go to the store's bounded queue
//!   (a full queue drops and counts).
//! - Every table is bounded: rooms (`max_rooms`), connections
//!   (`max_connections`), per-address join buckets, queues; every wait has a
//!   timeout (join, sends, shutdown).
//! - No client address is logged or stored; `/api/whoami` only echoes the
//!   requester's own.
//! - Operator views are granted by token, never by address ([`operator`]);
//!   the client address comes from one place ([`client_addr`]).

#![forbid(unsafe_code)]

pub mod client_addr;
pub mod cluster;
pub mod config;
pub mod echo;
mod html;
mod http;
pub mod listener;
pub mod onion;
mod operator;
pub mod protocol;
mod ratelimit;
mod rooms;
pub mod sanitize;
pub mod sip_gateway;
pub mod sip_media;
pub mod sip_net;
pub mod sip_ws;
pub mod state;
pub mod stats;
pub mod store;
pub mod users;
pub mod ws;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;

pub use client_addr::{Cidr, ClientAddr, ForwardRule};
pub use config::{MetricsRenderer, RelayChoice, SignalConfig, WebAssets, WellKnownRenderer};
pub use html::{escape as escape_html, format_utc};
pub use protocol::ErrorCode;
pub use rooms::MAX_ROOM_SIZE;
pub use state::SignalState;

/// How often the retention sweep runs after the one at startup.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How long shutdown waits for web connections to close.
pub(crate) const DRAIN: Duration = Duration::from_secs(3);
/// How long shutdown waits for queued samples to be written.
const FLUSH: Duration = Duration::from_secs(1);

/// The HTTP routes. Handlers need `ConnectInfo<SocketAddr>` in the request
/// extensions (the client address); [`serve_state`] sets it.
pub fn router(state: SignalState) -> Router {
    Router::new()
        .route("/ws", get(ws::handler))
        .route("/sip", get(sip_ws::handler))
        .route("/api/sip/turn", get(sip_ws::turn))
        .route("/healthz", get(http::healthz))
        .route("/api/whoami", get(http::whoami))
        .route("/api/calls", get(http::calls))
        .route("/api/calls/{id}", get(http::call))
        .route("/calls", get(http::calls_page).post(http::login))
        .route("/calls/find", post(http::calls_find))
        .route("/calls/{id}", get(http::call_page))
        .route("/metrics", get(http::metrics))
        .route("/api/echo", get(echo::get).post(echo::post))
        .route("/.well-known/onionrtc.json", get(http::well_known))
        .fallback(get(http::assets))
        .with_state(state)
}

/// Opens the store and serves until `shutdown` completes. See
/// [`serve_state`].
pub async fn serve(
    config: SignalConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = tokio::task::spawn_blocking(move || SignalState::new(config)).await??;
    serve_state(state, listener, shutdown).await
}

/// Serves an existing state until `shutdown` completes: runs the retention
/// sweep at once and then hourly, accepts connections, and on shutdown
/// closes every WebSocket, waits up to 3 s for them and up to 1 s for the
/// store to write what is queued (4 s in all at most).
pub async fn serve_state(
    state: SignalState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    sweep(&state).await;
    if let rooms::RoomBackend::Redis(cluster) = &state.inner.rooms {
        cluster.start(state.inner.shutdown.subscribe());
        // Connections wait in the listen backlog meanwhile (at most 5 s).
        cluster.ready(Duration::from_secs(5)).await;
    }
    let maintenance = tokio::spawn(maintenance(state.clone()));
    let app = router(state.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let acceptor = tokio::spawn(crate::listener::accept_loop(
        state.clone(),
        listener,
        app,
        stopped,
    ));
    shutdown.await;
    stop.send_replace(true);
    state.close_all();
    // The accept loop returns at once and drops the listener.
    if acceptor.await.is_err() {
        tracing::warn!("signal: the accept loop panicked");
    }
    maintenance.abort();
    let deadline = Instant::now() + DRAIN;
    while (state.connections() > 0 || state.inner.web.open() > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if state.inner.web.open() > 0 {
        tracing::warn!("signal: web connections still open after {DRAIN:?}; not waiting");
    }
    let flusher = state.clone();
    let _ = tokio::task::spawn_blocking(move || flusher.store().flush(FLUSH)).await;
    Ok(())
}

/// Deletes statistics older than `stats_retention_days` now.
pub async fn sweep(state: &SignalState) {
    let s = state.clone();
    let days = state.config().stats_retention_days;
    match tokio::task::spawn_blocking(move || s.store().sweep(days, state::now_ms())).await {
        Ok(Ok(n)) if n > 0 => tracing::info!(rows = n, days, "stats retention sweep"),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "stats retention sweep failed"),
        Err(e) => tracing::warn!(error = %e, "stats retention sweep panicked"),
    }
}

async fn maintenance(state: SignalState) {
    let start = tokio::time::Instant::now();
    let mut sweeps = tokio::time::interval_at(start + SWEEP_EVERY, SWEEP_EVERY);
    let mut prunes =
        tokio::time::interval_at(start + ratelimit::PRUNE_EVERY, ratelimit::PRUNE_EVERY);
    let mut sip_ticks = tokio::time::interval(sip_ws::TICK_EVERY);
    sip_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sweeps.tick() => sweep(&state).await,
            _ = prunes.tick() => state.inner.joins.prune(Instant::now()),
            _ = sip_ticks.tick(), if state.inner.sip.is_some() => {
                if let Some(sip) = &state.inner.sip {
                    sip.tick();
                }
            }
        }
    }
}

//! The web listener: accepts TCP connections under limits that keep the
//! process (and the relay in it) alive, and serves HTTP/1.1 (with upgrades
//! for `/ws`) on each.
//!
//! ```text
//! accept ─▶ total slot (semaphore, below the fd limit)   else drop, refused{reason="total"}
//!        ─▶ per-address slot (untrusted TCP peers)       else drop, refused{reason="per_address"}
//!        ─▶ WebIo (idle timeout) ─▶ hyper http1 (header_read_timeout) ─▶ router
//!                                   └─ /ws upgrade: the WebIo (and its slots) go with the socket
//! accept error (EMFILE…) ─▶ counted, 50 ms pause
//! ```
//!
//! Design decisions:
//! - The slots live in the connection's IO object, so an upgraded
//!   WebSocket keeps its slots until its socket is closed.
//! - Trusted proxies are exempt from the per-address TCP cap (every client
//!   behind them shares their address); their clients' WebSockets are
//!   capped per client address in `/ws` (see [`PerAddr`]).
//! - The total cap is sized once at startup from the open-file limit
//!   (after the relay raised it): half of it minus [`FD_RESERVE`] (the
//!   store, the runtime, logs). The relay's sockets take the other half, so
//!   a flood of web connections cannot make the relay's `accept` or
//!   Allocate fail for want of descriptors.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::ratelimit::bucket_key;
use crate::state::SignalState;

/// Descriptors kept back from the web side's half of the open-file limit
/// (the store, the runtime, logs, the listener itself).
pub const FD_RESERVE: usize = 64;
/// The smallest total cap, whatever the limit.
const MIN_TOTAL: usize = 16;
/// Pause after a failed `accept` (e.g. EMFILE), so that it does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// The total web-connection cap for the open-file limit `nofile`, and a
/// configured value (0: automatic).
pub fn total_cap(nofile: u64, configured: usize) -> usize {
    let half = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
    let auto = half.saturating_sub(FD_RESERVE).max(MIN_TOTAL);
    if configured == 0 {
        auto
    } else {
        configured.min(auto)
    }
}

/// The soft open-file limit of this process (1024 if it cannot be read).
pub fn nofile_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Counts per address (IPv6: per /64), each at most `max`.
#[derive(Debug)]
pub(crate) struct PerAddr {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection of an address; released on drop.
#[derive(Debug)]
pub(crate) struct AddrSlot {
    table: Arc<PerAddr>,
    key: IpAddr,
}

impl PerAddr {
    pub(crate) fn new(max: usize) -> Arc<PerAddr> {
        Arc::new(PerAddr {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `ip`, or `None` when it has `max` already.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddrSlot> {
        let key = bucket_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddrSlot {
            table: Arc::clone(self),
            key,
        })
    }

    /// Addresses with at least one connection.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The listener's limits and counters (in [`SignalState`]).
#[derive(Debug)]
pub(crate) struct WebLimits {
    /// Total slots.
    pub(crate) total: Arc<Semaphore>,
    pub(crate) max_total: usize,
    /// TCP connections per untrusted peer address.
    pub(crate) tcp: Arc<PerAddr>,
    /// WebSockets per client address.
    pub(crate) ws: Arc<PerAddr>,
    pub(crate) refused_total: AtomicU64,
    pub(crate) refused_per_address: AtomicU64,
    pub(crate) refused_ws_per_address: AtomicU64,
    pub(crate) refused_ws_total: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
}

impl WebLimits {
    pub(crate) fn new(max_total: usize, per_address: usize) -> WebLimits {
        WebLimits {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            tcp: PerAddr::new(per_address),
            ws: PerAddr::new(per_address),
            refused_total: AtomicU64::new(0),
            refused_per_address: AtomicU64::new(0),
            refused_ws_per_address: AtomicU64::new(0),
            refused_ws_total: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
        }
    }

    /// Open web connections (HTTP and upgraded).
    pub(crate) fn open(&self) -> usize {
        self.max_total
            .saturating_sub(self.total.available_permits())
    }
}

/// A connection's socket with its slots and an idle timeout: a read that
/// has seen nothing read or written for `idle` fails with `TimedOut`.
struct WebIo {
    io: TcpStream,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    state: SignalState,
    _total: OwnedSemaphorePermit,
    _addr: Option<AddrSlot>,
}

impl WebIo {
    fn touch(&mut self) {
        self.last = Instant::now();
    }
}

impl AsyncRead for WebIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => loop {
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = self.last + self.idle;
                if Instant::now() >= due {
                    self.state
                        .inner
                        .web
                        .idle_closed
                        .fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle connection",
                    )));
                }
                // Activity since the timer was set: wait for the rest.
                self.timer.as_mut().reset(due);
            },
        }
    }
}

impl AsyncWrite for WebIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

use std::future::Future as _;

/// Accepts until `stop` is set, each connection on its own task; returns
/// when `stop` is set (connections drain in their tasks: they get a
/// graceful shutdown, then [`crate::DRAIN`]).
pub(crate) async fn accept_loop(
    state: SignalState,
    listener: TcpListener,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let limits = &state.inner.web;
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = crate::ws::stopped(&mut stop) => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    limits.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("web: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(total) = Arc::clone(&limits.total).try_acquire_owned() else {
            limits.refused_total.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let ip = peer.ip().to_canonical();
        let addr = if state.config().forward.is_trusted(ip) {
            None
        } else {
            match limits.tcp.acquire(ip) {
                Some(slot) => Some(slot),
                None => {
                    limits.refused_per_address.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let idle = state.config().idle_timeout;
        let io = WebIo {
            io: tcp,
            idle,
            last: Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle)),
            state: state.clone(),
            _total: total,
            _addr: addr,
        };
        tokio::spawn(connection(
            io,
            SocketAddr::new(ip, peer.port()),
            app.clone(),
            state.config().header_timeout,
            stop.clone(),
        ));
    }
}

async fn connection(
    io: WebIo,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move {
            let resp = tower_service::Service::call(&mut app, req).await;
            Ok::<_, Infallible>(resp.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let served = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        () = crate::ws::stopped(&mut stop) => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(crate::DRAIN, served.as_mut()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_cap_leaves_half_to_the_relay() {
        assert_eq!(total_cap(1024, 0), 512 - FD_RESERVE);
        assert_eq!(total_cap(1_048_576, 0), 524_288 - FD_RESERVE);
        assert_eq!(total_cap(1_048_576, 1000), 1000);
        assert_eq!(total_cap(1024, 100_000), 512 - FD_RESERVE);
        assert_eq!(total_cap(64, 0), MIN_TOTAL);
    }

    #[test]
    fn per_address_slots() {
        let t = PerAddr::new(2);
        let a: IpAddr = IpAddr::from([192, 0, 2, 1]);
        let s1 = t.acquire(a);
        let s2 = t.acquire(a);
        assert!(s1.is_some() && s2.is_some());
        assert!(t.acquire(a).is_none());
        assert!(t.acquire(IpAddr::from([192, 0, 2, 2])).is_some());
        drop(s1);
        let s3 = t.acquire(a);
        assert!(s3.is_some());
        // IPv6 counts per /64.
        let v6a: IpAddr = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
        let v6b: IpAddr = IpAddr::from([0x2001, 0xdb8, 0, 0, 9, 9, 9, 9]);
        let k = (t.acquire(v6a), t.acquire(v6b));
        assert!(k.0.is_some() && k.1.is_some());
        assert!(t.acquire(v6a).is_none());
        drop((s2, s3, k));
        assert_eq!(t.addresses(), 0);
    }
}

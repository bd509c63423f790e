//! The TCP TURN listener (`turn:…?transport=tcp`): each client connection
//! gets one upstream stream, and bytes are copied both ways unchanged (both
//! sides already carry framed STUN and ChannelData).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, Instant};

use crate::stats::Stats;
use crate::{Shutdown, Turn};

/// Accepts connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, turn: Arc<Turn>, mut shutdown: Shutdown) {
    loop {
        let conn = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            r = listener.accept() => match r {
                Ok((conn, _)) => conn,
                Err(e) => {
                    tracing::debug!("tcp: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let stats = &turn.stats;
        if stats.flows_current.load(Ordering::Relaxed) >= turn.limits.max_flows as u64 {
            Stats::inc(&stats.dropped);
            continue;
        }
        stats.flow_opened();
        let (turn, stop) = (Arc::clone(&turn), shutdown.clone());
        tokio::spawn(async move {
            connection(&turn, conn, stop).await;
            turn.stats.flow_closed();
        });
    }
}

async fn connection(turn: &Turn, conn: TcpStream, mut shutdown: Shutdown) {
    let _ = conn.set_nodelay(true);
    let dialled = tokio::select! {
        biased;
        () = shutdown.wait() => return,
        r = turn.dial() => r,
    };
    let mut upstream = match dialled {
        Ok(s) => s,
        Err(e) => {
            Stats::inc(&turn.stats.upstream_failures);
            tracing::warn!("tcp: upstream dial failed: {e}");
            return;
        }
    };
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Activity {
        inner: conn,
        start,
        last: Arc::clone(&last),
        stats: Arc::clone(&turn.stats),
    };
    tokio::select! {
        biased;
        () = shutdown.wait() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        () = idle(start, &last, turn.limits.idle_timeout) => {
            Stats::inc(&turn.stats.idle_closed);
        }
    }
}

/// Returns once nothing came from the client for `limit`.
async fn idle(start: Instant, last: &AtomicU64, limit: Duration) {
    loop {
        let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = seen + limit;
        if Instant::now() >= deadline {
            return;
        }
        sleep_until(deadline).await;
    }
}

/// The client's side: counts TURN bytes and notes when the client last
/// sent something.
struct Activity {
    inner: TcpStream,
    start: Instant,
    last: Arc<AtomicU64>,
    stats: Arc<Stats>,
}

impl AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            Stats::add(&self.stats.payload_up, n as u64);
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            Stats::add(&self.stats.payload_down, *n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

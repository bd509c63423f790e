//! The TCP TURN listener (`turn:…?transport=tcp`): each client connection
//! whose first frame is a TURN Allocate request gets one upstream stream.
//! Client bytes go up unchanged (both sides carry framed STUN and
//! ChannelData); the relay's frames are read one by one on the way down, to
//! see the Allocate success that ends the pending state and to refuse
//! redirects. RFC 6062 data connections (which start with ConnectionBind
//! and then carry raw bytes) are not carried: browsers do not use them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use stun::StreamDecoder;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf, ReadHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, Instant};

use crate::dial::BoxIo;
use crate::frame::{self, FromRelay, MAX_STREAM_FRAME};
use crate::health::{Degrade, FlowEntry, Health};
use crate::race;
use crate::stats::Stats;
use crate::{PendingSlot, Shutdown, Turn};

/// Bytes read from the upstream at once.
const READ_BUF: usize = 16 * 1024;

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

/// How a TCP flow ended, when it matters to the counters.
enum End {
    Other,
    /// The upstream closed after the relay accepted an Allocate.
    Lost,
    Idle,
    Unauthenticated,
}

async fn connection(turn: &Arc<Turn>, conn: TcpStream, mut shutdown: Shutdown) {
    let _ = conn.set_nodelay(true);
    let stats = &turn.stats;
    let limits = &turn.limits;
    let (mut client_rd, mut client_wr) = conn.into_split();
    // The first frame must be a TURN Allocate request: nothing is dialled
    // for a STUN Binding or a silent client.
    let mut decoder = StreamDecoder::new(MAX_STREAM_FRAME);
    let first = tokio::select! {
        biased;
        () = shutdown.wait() => return,
        r = tokio::time::timeout(limits.auth_timeout, first_frame(&mut client_rd, &mut decoder)) => r,
    };
    let (first, rest) = match first {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            Stats::inc(&stats.not_allocate);
            return;
        }
        Err(_) => {
            Stats::inc(&stats.unauthenticated_closed);
            return;
        }
    };
    Stats::add(&stats.payload_up, (first.len() + rest.len()) as u64);
    let Some(slot) = turn.pending_slot() else {
        return;
    };
    let opened = Instant::now();
    let entry = turn.registry.open("tcp");
    let Some(id) = frame::request_id(&first) else {
        return;
    };
    // The first request races `turn.race` upstreams (race.rs).
    let raced = tokio::select! {
        biased;
        () = shutdown.wait() => return,
        r = race::race(turn, &first, id, turn.race) => r,
    };
    let raced = match raced {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("tcp: upstream failed: {e}");
            return;
        }
    };
    let mut health = Health::new(turn.thresholds());
    health.sample(raced.rtt);
    entry.update(|r| {
        r.setup_ms = Some(opened.elapsed().as_secs_f64() * 1000.0);
        r.raced = raced.raced;
        r.spares_used = raced.spares;
        health.report(r);
    });
    let start = Instant::now();
    let auth_at = start + limits.auth_timeout;
    let (mut up_rd, mut up_wr) = tokio::io::split(raced.stream);
    if up_wr.write_all(&rest).await.is_err() {
        return;
    }
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Activity {
        inner: client_rd,
        start,
        last: Arc::clone(&last),
        stats: Arc::clone(stats),
    };
    let end = tokio::select! {
        biased;
        () = shutdown.wait() => End::Other,
        _ = tokio::io::copy(&mut client, &mut up_wr) => End::Other,
        e = to_client(&mut up_rd, raced.prefix, &mut client_wr, stats, slot, auth_at, &entry) => e,
        () = idle(start, &last, limits.idle_timeout) => End::Idle,
    };
    match end {
        End::Idle => Stats::inc(&stats.idle_closed),
        End::Unauthenticated => Stats::inc(&stats.unauthenticated_closed),
        End::Other => {}
        End::Lost => {
            // The relay's end went under an allocation: over TCP the
            // browser's TURN client sees its connection close too (below),
            // and the page hears of it.
            if health.mark(Degrade::Closed) {
                turn.degraded(&entry, Degrade::Closed, &health);
            }
        }
    }
}

/// Reads the client's first frame. `Some` (the frame, and whatever came
/// after it) when it is an Allocate request; `None` when it is not, the
/// client closed, or the bytes are not TURN framing.
async fn first_frame(
    rd: &mut OwnedReadHalf,
    decoder: &mut StreamDecoder,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some((_, frame)) = decoder.next_frame().ok()? {
            if !frame::is_allocate_request(frame) {
                return None;
            }
            let bytes = frame.to_vec();
            return Some((bytes, decoder.take_pending()));
        }
        let n = rd.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        decoder.push(&buf[..n]).ok()?;
    }
}

/// Copies frames from the relay to the client, refusing redirects (the
/// client gets the connector's bare 300 instead) and frames that do not parse.
/// Holds the pending place until the relay accepts an Allocate; without
/// that by `auth_at`, ends the flow.
async fn to_client(
    rd: &mut ReadHalf<BoxIo>,
    prefix: Vec<u8>,
    wr: &mut OwnedWriteHalf,
    stats: &Stats,
    slot: PendingSlot,
    auth_at: Instant,
    entry: &FlowEntry,
) -> End {
    let mut slot = Some(slot);
    let mut decoder = StreamDecoder::new(MAX_STREAM_FRAME);
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Vec::with_capacity(READ_BUF);
    let closed = |slot: &Option<PendingSlot>| {
        if slot.is_none() {
            End::Lost
        } else {
            End::Other
        }
    };
    // The bytes the race read first.
    if decoder.push(&prefix).is_err() {
        return End::Other;
    }
    let mut pushed = true;
    loop {
        if !pushed {
            let n = tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return closed(&slot),
                    Ok(n) => n,
                },
                () = sleep_until(auth_at), if slot.is_some() => return End::Unauthenticated,
            };
            if decoder.push(&buf[..n]).is_err() {
                return End::Other;
            }
        }
        pushed = false;
        out.clear();
        loop {
            let (kind, frame) = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("tcp: upstream sent a bad frame ({e}); closing it");
                    return End::Other;
                }
            };
            match frame::inspect_from_relay(kind, frame) {
                FromRelay::Pass { allocated, .. } => {
                    if allocated {
                        slot = None;
                        entry.update(|r| r.allocated = true);
                    }
                    out.extend_from_slice(frame);
                }
                FromRelay::Redirect { .. } => {
                    Stats::inc(&stats.redirects_blocked);
                    tracing::warn!(
                        "tcp: the relay answered with a redirect (TURN 300 / ALTERNATE-SERVER); \
                         not passed on, the client gets an error instead"
                    );
                    if let Some(r) = frame::redirect_refusal(frame) {
                        out.extend_from_slice(&r);
                    }
                }
                FromRelay::Malformed => Stats::inc(&stats.relay_malformed),
            }
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                return End::Other;
            }
            Stats::add(&stats.payload_down, out.len() as u64);
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
    inner: OwnedReadHalf,
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

//! One UDP client flow (5-tuple): its upstream stream, dialled on the first
//! datagram and again when it closes or goes dead.
//!
//! ```text
//! wait for a datagram ── dial ──ok──▶ connected: datagrams → frames → stream
//!      ▲                   │                      stream → frames → datagrams (reader task)
//!      │                   └─fail: back off, dropping datagrams
//!      ├── upstream closed ◀──────────┤
//!      │   dead (request unanswered) ─┴─▶ dial at once
//!      └── idle (no datagram for idle_timeout) or shutdown: the flow ends
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stun::{StreamDecoder, TransactionId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::dial::BoxIo;
use crate::frame::{self, Datagram, MAX_STREAM_FRAME};
use crate::stats::Stats;
use crate::{Shutdown, Turn};

/// First back-off after a failed dial; doubled per failure.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Requests tracked for dead-upstream detection, per flow.
const MAX_PENDING: usize = 32;
/// Datagrams written to the stream in one batch, at most.
const BATCH: usize = 64;
/// Answers (transaction IDs) queued from the reader to the writer.
const ANSWER_QUEUE: usize = 64;
/// Bytes read from the upstream at once.
const READ_BUF: usize = 16 * 1024;

/// How a connected period ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The client was silent for the idle timeout.
    Idle,
    /// The connector is stopping.
    Shutdown,
    /// The upstream closed or failed; dial again on the next datagram.
    Closed,
    /// A request went unanswered; dial again at once.
    Dead,
}

/// Runs the flow of `client` until it is idle or the connector stops.
/// `rx` holds the client's datagrams (the first one already).
pub(crate) async fn run(
    turn: Arc<Turn>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut shutdown: Shutdown,
) {
    let stats = Arc::clone(&turn.stats);
    let idle = turn.limits.idle_timeout;
    let mut idle_at = Instant::now() + idle;
    let mut dialled_before = false;
    let mut backoff = BACKOFF_MIN;
    let mut dial_now = true;
    let mut logged_failure = false;
    // The datagram that made a re-dial happen; sent first once connected.
    let mut held: Option<Vec<u8>> = None;
    loop {
        if !dial_now {
            // Wait for a datagram before dialling again.
            held = tokio::select! {
                biased;
                () = shutdown.wait() => None,
                () = sleep_until(idle_at) => {
                    Stats::inc(&stats.idle_closed);
                    None
                }
                d = rx.recv() => d,
            };
            if held.is_none() {
                break;
            }
            idle_at = Instant::now() + idle;
        }
        dial_now = false;
        let dialled = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            r = turn.dial() => r,
        };
        let stream = match dialled {
            Ok(s) => s,
            Err(e) => {
                Stats::inc(&stats.upstream_failures);
                if held.take().is_some() {
                    Stats::inc(&stats.dropped);
                }
                if logged_failure {
                    tracing::debug!("flow: upstream dial failed: {e}");
                } else {
                    tracing::warn!("flow: upstream dial failed: {e}");
                    logged_failure = true;
                }
                // Back off, dropping what the client sends meanwhile.
                let until = Instant::now() + backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                if !drop_until(&mut rx, until, &mut idle_at, idle, &stats, &mut shutdown).await {
                    break;
                }
                if Instant::now() >= idle_at {
                    Stats::inc(&stats.idle_closed);
                    break;
                }
                continue;
            }
        };
        if dialled_before {
            Stats::inc(&stats.redials);
        }
        dialled_before = true;
        backoff = BACKOFF_MIN;
        logged_failure = false;
        let first = held.take();
        let outcome = connected(
            &turn,
            &socket,
            client,
            stream,
            first,
            &mut rx,
            &mut idle_at,
            &mut shutdown,
        )
        .await;
        match outcome {
            Outcome::Idle => {
                Stats::inc(&stats.idle_closed);
                break;
            }
            Outcome::Shutdown => break,
            Outcome::Closed => tracing::debug!("flow: upstream closed"),
            Outcome::Dead => {
                Stats::inc(&stats.dead_upstreams);
                tracing::info!(
                    "flow: a request went unanswered for {:?}; dialling the relay again",
                    turn.limits.dead_timeout
                );
                dial_now = true;
            }
        }
    }
}

/// Drops datagrams until `until`. False on shutdown or a closed queue.
async fn drop_until(
    rx: &mut mpsc::Receiver<Vec<u8>>,
    until: Instant,
    idle_at: &mut Instant,
    idle: Duration,
    stats: &Stats,
    shutdown: &mut Shutdown,
) -> bool {
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => return false,
            () = sleep_until(until) => return true,
            d = rx.recv() => match d {
                Some(_) => {
                    Stats::inc(&stats.dropped);
                    *idle_at = Instant::now() + idle;
                }
                None => return false,
            },
        }
    }
}

/// Moves datagrams and frames until the upstream closes or goes dead, the
/// client goes idle, or the connector stops.
#[allow(clippy::too_many_arguments)]
async fn connected(
    turn: &Turn,
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    stream: BoxIo,
    first: Option<Vec<u8>>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    idle_at: &mut Instant,
    shutdown: &mut Shutdown,
) -> Outcome {
    let stats = &turn.stats;
    let limits = &turn.limits;
    let (rd, mut wr) = tokio::io::split(stream);
    let (answers_tx, mut answers) = mpsc::channel::<TransactionId>(ANSWER_QUEUE);
    let mut reader = tokio::spawn(read_upstream(
        rd,
        Arc::clone(socket),
        client,
        Arc::clone(stats),
        answers_tx,
    ));
    let mut pending: VecDeque<(TransactionId, Instant)> = VecDeque::new();
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut first = first;
    let outcome = loop {
        let dead_at = pending.front().map(|(_, t)| *t + limits.dead_timeout);
        tokio::select! {
            biased;
            () = shutdown.wait() => break Outcome::Shutdown,
            _ = &mut reader => break Outcome::Closed,
            Some(id) = answers.recv() => pending.retain(|(p, _)| *p != id),
            d = next(&mut first, rx) => {
                let Some(d) = d else { break Outcome::Shutdown };
                let now = Instant::now();
                *idle_at = now + limits.idle_timeout;
                out.clear();
                add(&d, &mut out, &mut pending, stats, now);
                for _ in 1..BATCH {
                    match rx.try_recv() {
                        Ok(d) => add(&d, &mut out, &mut pending, stats, now),
                        Err(_) => break,
                    }
                }
                if out.is_empty() {
                    continue;
                }
                let write = async {
                    wr.write_all(&out).await?;
                    wr.flush().await
                };
                match tokio::time::timeout(limits.dead_timeout, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break Outcome::Closed,
                    Err(_) => break Outcome::Dead,
                }
            }
            () = sleep_until(dead_at.unwrap_or(*idle_at)), if dead_at.is_some() => {
                break Outcome::Dead
            }
            () = sleep_until(*idle_at) => break Outcome::Idle,
        }
    };
    reader.abort();
    outcome
}

/// The held datagram, else the next queued one.
async fn next(first: &mut Option<Vec<u8>>, rx: &mut mpsc::Receiver<Vec<u8>>) -> Option<Vec<u8>> {
    match first.take() {
        Some(d) => Some(d),
        None => rx.recv().await,
    }
}

/// Frames one client datagram into `out`, noting requests.
fn add(
    d: &[u8],
    out: &mut Vec<u8>,
    pending: &mut VecDeque<(TransactionId, Instant)>,
    stats: &Stats,
    now: Instant,
) {
    match frame::datagram_to_stream(d, out) {
        Ok(kind) => {
            Stats::add(&stats.payload_up, d.len() as u64);
            if let Datagram::Request(id) = kind {
                // A UDP client retransmits with the same ID: keep the first time.
                if pending.len() < MAX_PENDING && !pending.iter().any(|(p, _)| *p == id) {
                    pending.push_back((id, now));
                }
            }
        }
        Err(_) => Stats::inc(&stats.dropped),
    }
}

/// Reads frames from the upstream and sends them to the client as
/// datagrams until the stream ends, fails or carries something that is
/// not a frame.
async fn read_upstream(
    mut rd: ReadHalf<BoxIo>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    stats: Arc<Stats>,
    answers: mpsc::Sender<TransactionId>,
) {
    let mut decoder = StreamDecoder::new(MAX_STREAM_FRAME);
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if decoder.push(&buf[..n]).is_err() {
            return;
        }
        // Bounded: each frame consumes pushed bytes.
        loop {
            let (kind, frame) = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("flow: upstream sent a bad frame ({e}); closing it");
                    return;
                }
            };
            let (dgram, answer) = frame::stream_to_datagram(kind, frame);
            if let Some(id) = answer {
                let _ = answers.try_send(id);
            }
            match socket.send_to(dgram, client).await {
                Ok(_) => Stats::add(&stats.payload_down, dgram.len() as u64),
                Err(_) => Stats::inc(&stats.dropped),
            }
        }
    }
}

//! Racing upstreams at a flow's start, and spare upstreams.
//!
//! ```text
//! client's first Allocate ─┬─▶ upstream 1 (a spare, or dialled: its own circuit) ─▶ answer at t1
//!                          ├─▶ upstream 2 ─▶ answer at t2   ← the first answer wins; the
//!                          └─▶ upstream k ─▶ …                others are closed at once
//! ```
//!
//! The race sends the **client's own** first request (the unauthenticated
//! Allocate every browser starts with) on each of `k` upstreams. The relay
//! answers each with a 401 and a nonce of its own; only the winner's answer
//! reaches the client, whose authenticated Allocate (with that nonce) then
//! goes on the winner, which the flow keeps. The losers carried one
//! unauthenticated request each and allocated nothing. A STUN Binding made
//! by the connector would measure the circuit as well, but would be one
//! more request of the connector's own on every circuit, visible at the
//! relay; the client's request costs nothing extra.
//!
//! Spare upstreams are dialled when a flow reports its circuit degraded
//! (the page is about to restart ICE, whose new flows then start on
//! circuits already built), at most `spares` at once, each kept for
//! [`SPARE_TTL`] (the relay closes a connection that sends nothing for its
//! handshake timeout, 10 s by default).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stun::{StreamDecoder, TransactionId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::dial::{BoxIo, DialError};
use crate::frame::{self, MAX_STREAM_FRAME};
use crate::stats::Stats;
use crate::Turn;

/// How long a spare upstream is kept unused.
pub const SPARE_TTL: Duration = Duration::from_secs(6);
/// Bytes read at once while waiting for the first answer.
const READ_BUF: usize = 4096;
/// Bytes read from one upstream before its answer, at most.
const MAX_PREFIX: usize = 64 * 1024;

/// The winner of a race.
pub(crate) struct Raced {
    /// The upstream the flow keeps; the first request went up on it.
    pub(crate) stream: BoxIo,
    /// Everything read from it so far (the answer, maybe more): the flow
    /// handles these bytes before reading more.
    pub(crate) prefix: Vec<u8>,
    /// From the start of the race to the answer on the winner.
    pub(crate) setup: Duration,
    /// From writing the request to its answer on the winner.
    pub(crate) rtt: Duration,
    /// Upstreams raced.
    pub(crate) raced: usize,
    /// How many of them were spares.
    pub(crate) spares: usize,
}

impl std::fmt::Debug for Raced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raced")
            .field("setup", &self.setup)
            .field("rtt", &self.rtt)
            .field("raced", &self.raced)
            .finish_non_exhaustive()
    }
}

/// Why a race was lost by every upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RaceError {
    /// No upstream could be opened (the last dial error).
    #[error(transparent)]
    Dial(#[from] DialError),
    /// Upstreams opened but none answered (closed, timed out, garbage).
    #[error("no upstream answered the first request: {0}")]
    NoAnswer(&'static str),
}

/// Spare upstreams, dialled ahead of time.
#[derive(Default)]
pub(crate) struct Spares {
    ready: Mutex<Vec<(BoxIo, Instant)>>,
    building: AtomicUsize,
}

impl std::fmt::Debug for Spares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spares")
            .field("building", &self.building.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(BoxIo, Instant)>> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Up to `n` spares younger than [`SPARE_TTL`]; older ones are closed.
    fn take(&self, n: usize, stats: &Stats) -> Vec<BoxIo> {
        let mut ready = self.lock();
        let before = ready.len();
        ready.retain(|(_, at)| at.elapsed() < SPARE_TTL);
        Stats::add(&stats.spares_expired, (before - ready.len()) as u64);
        let take = n.min(ready.len());
        ready.drain(..take).map(|(s, _)| s).collect()
    }

    /// Spares ready now (young enough).
    pub(crate) fn ready(&self) -> usize {
        self.lock()
            .iter()
            .filter(|(_, at)| at.elapsed() < SPARE_TTL)
            .count()
    }
}

impl Turn {
    /// Dials spares until `circuits.spares` (at most the race width: one
    /// new flow's race) are ready or being dialled; none without racing
    /// (one path: nothing to choose from).
    pub(crate) fn prebuild(self: &Arc<Self>) {
        let cap = if self.race > 1 {
            self.circuits.spares.min(self.race)
        } else {
            0
        };
        let have = self.spares.ready() + self.spares.building.load(Ordering::Relaxed);
        for _ in have..cap {
            self.spares.building.fetch_add(1, Ordering::Relaxed);
            let turn = Arc::clone(self);
            tokio::spawn(async move {
                let r = turn.dial().await;
                turn.spares.building.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(s) => {
                        Stats::inc(&turn.stats.spares_built);
                        let mut ready = turn.spares.lock();
                        if ready.len() < cap {
                            ready.push((s, Instant::now()));
                        }
                    }
                    Err(e) => {
                        Stats::inc(&turn.stats.upstream_failures);
                        tracing::debug!("spare upstream: dial failed: {e}");
                    }
                }
            });
        }
    }
}

/// Races `k` upstreams (spares first) with `first`, the client's first
/// request (stream framing) whose transaction is `id`; the first to answer
/// wins. Bounded by the dial timeout plus the dead timeout.
pub(crate) async fn race(
    turn: &Arc<Turn>,
    first: &[u8],
    id: TransactionId,
    k: usize,
) -> Result<Raced, RaceError> {
    let k = k.max(1);
    let start = Instant::now();
    let spares = turn.spares.take(k, &turn.stats);
    let n_spares = spares.len();
    Stats::add(&turn.stats.spares_used, n_spares as u64);
    if k > 1 {
        Stats::inc(&turn.stats.races);
    }
    let first: Arc<[u8]> = Arc::from(first);
    let mut set = JoinSet::new();
    let mut spares = spares.into_iter();
    for _ in 0..k {
        let spare = spares.next();
        let (turn, first) = (Arc::clone(turn), Arc::clone(&first));
        set.spawn(async move {
            let stream = match spare {
                Some(s) => s,
                None => turn.dial().await.map_err(RaceError::Dial)?,
            };
            ask(stream, &first, id).await
        });
    }
    let limit = turn.limits.dial_timeout + turn.limits.dead_timeout;
    let mut last: Option<RaceError> = None;
    let deadline = start + limit;
    loop {
        let joined = tokio::time::timeout_at(deadline, set.join_next()).await;
        match joined {
            Err(_) => {
                last = Some(RaceError::NoAnswer("timed out"));
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(Ok((stream, prefix, rtt))))) => {
                // Dropping the set aborts the others: their upstreams close.
                set.abort_all();
                if k > 1 {
                    Stats::add(&turn.stats.race_losers, (k - 1) as u64);
                }
                return Ok(Raced {
                    stream,
                    prefix,
                    setup: start.elapsed(),
                    rtt,
                    raced: k,
                    spares: n_spares,
                });
            }
            Ok(Some(Ok(Err(e)))) => {
                if matches!(e, RaceError::Dial(_)) {
                    Stats::inc(&turn.stats.upstream_failures);
                }
                last = Some(e);
            }
            Ok(Some(Err(_))) => last = Some(RaceError::NoAnswer("task failed")),
        }
    }
    Err(last.unwrap_or(RaceError::NoAnswer("nothing raced")))
}

/// Sends `first` up `stream` and reads until the answer to `id` (kept with
/// whatever came before it).
async fn ask(
    mut stream: BoxIo,
    first: &[u8],
    id: TransactionId,
) -> Result<(BoxIo, Vec<u8>, Duration), RaceError> {
    let sent = Instant::now();
    stream
        .write_all(first)
        .await
        .map_err(|_| RaceError::NoAnswer("write failed"))?;
    stream
        .flush()
        .await
        .map_err(|_| RaceError::NoAnswer("write failed"))?;
    let mut decoder = StreamDecoder::new(MAX_STREAM_FRAME);
    let mut prefix = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return Err(RaceError::NoAnswer("the upstream closed")),
            Err(_) => return Err(RaceError::NoAnswer("read failed")),
            Ok(n) => n,
        };
        if prefix.len() + n > MAX_PREFIX {
            return Err(RaceError::NoAnswer("too much before the answer"));
        }
        prefix.extend_from_slice(&buf[..n]);
        decoder
            .push(&buf[..n])
            .map_err(|_| RaceError::NoAnswer("not TURN framing"))?;
        // Bounded: each frame consumes pushed bytes.
        loop {
            match decoder.next_frame() {
                Ok(Some((kind, f))) => {
                    if frame::stream_to_datagram(kind, f).1 == Some(id) {
                        return Ok((stream, prefix, sent.elapsed()));
                    }
                }
                Ok(None) => break,
                Err(_) => return Err(RaceError::NoAnswer("not TURN framing")),
            }
        }
    }
}

//! One UDP client flow (5-tuple): its upstream stream, dialled for the
//! client's first Allocate and again when it closes or goes dead.
//!
//! ```text
//! Allocate ── dial ──ok──▶ connected: datagrams → frames → stream
//!      ▲        │                     stream → frames → datagrams (reader task:
//!      │        │                       redirects answered with a bare 300, never passed on)
//!      │        └─fail: back off (0.5 s doubling to 30 s), dropping datagrams
//!      ├── upstream closed: back off unless the relay accepted an Allocate,
//!      │   then dial on the next datagram
//!      ├── dead (request unanswered): dial when the back-off ends
//!      ├── no Allocate success within auth_timeout of the connect: the flow ends
//!      └── idle (no datagram for idle_timeout) or shutdown: the flow ends
//! ```
//!
//! Until the relay accepts an Allocate the flow holds a pending place
//! ([`PendingSlot`]); a re-dial takes one again. The first dial is a race
//! (race.rs) with the client's first Allocate; while connected the flow
//! measures its circuit ([`Health`]) and reports it degraded once (stall,
//! RTT, or the upstream lost under an allocation), after which 5 s of
//! client silence end it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stun::{StreamDecoder, TransactionId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::dial::BoxIo;
use crate::frame::{self, Datagram, FromRelay, MAX_STREAM_FRAME};
use crate::health::{Degrade, FlowEntry, Health};
use crate::race::{self, Raced};
use crate::stats::Stats;
use crate::{PendingSlot, Shutdown, Turn};

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
    /// No authenticated allocation within `auth_timeout` of the connect.
    Unauthenticated,
}

/// What the upstream reader tells the flow.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// A response (or the connector's own answer) to this request.
    Answer(TransactionId),
    /// The relay accepted an Allocate: the flow is authenticated.
    Allocated,
}

/// The next back-off after an unsuccessful dial or connection.
fn next_backoff(b: Duration) -> Duration {
    if b.is_zero() {
        BACKOFF_MIN
    } else {
        (b * 2).min(BACKOFF_MAX)
    }
}

/// Runs the flow of `client` until it is idle, unauthenticated for too
/// long, or the connector stops. `rx` holds the client's datagrams (the
/// first one, an Allocate request, already); `slot` is its pending place.
pub(crate) async fn run(
    turn: Arc<Turn>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    slot: PendingSlot,
    mut shutdown: Shutdown,
) {
    let stats = Arc::clone(&turn.stats);
    let opened = Instant::now();
    let entry = turn.registry.open("udp");
    let mut health = Health::new(turn.thresholds());
    let idle = turn.limits.idle_timeout;
    let mut idle_at = Instant::now() + idle;
    let mut slot = Some(slot);
    let mut dialled_before = false;
    // Back-off between dials: grows on every failed dial and on every
    // connection that closed without an authenticated allocation, even
    // when the dial itself succeeded (a relay that accepts and closes).
    let mut backoff = Duration::ZERO;
    let mut not_before = Instant::now();
    let mut dial_now = true;
    let mut logged_failure = false;
    // The datagram that made a re-dial happen; sent first once connected.
    let mut held: Option<Vec<u8>> = None;
    loop {
        // Not before the back-off ends: datagrams meanwhile are dropped.
        if !hold_off(
            &mut rx,
            not_before,
            &mut idle_at,
            idle,
            &stats,
            &mut shutdown,
        )
        .await
        {
            break;
        }
        if !dial_now {
            // Wait for a datagram before dialling again (a dead upstream is
            // dialled again at once).
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
        if Instant::now() >= idle_at {
            Stats::inc(&stats.idle_closed);
            break;
        }
        dial_now = false;
        if slot.is_none() {
            // A re-dial: unauthenticated again until the relay accepts an
            // Allocate on the new stream.
            match turn.pending_slot() {
                Some(s) => slot = Some(s),
                None => break,
            }
        }
        // The flow's first upstream is raced with the client's first
        // request (race.rs); a re-dial is one plain dial.
        let first_request = if dialled_before {
            None
        } else {
            held.take().or_else(|| rx.try_recv().ok())
        };
        let dialled = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            r = start_upstream(&turn, first_request, &mut held) => r,
        };
        let (stream, prefix) = match dialled {
            Ok(Started::Plain(s)) => (s, Vec::new()),
            Ok(Started::Raced(r)) => {
                health.sample(r.rtt);
                let setup = opened.elapsed();
                entry.update(|rep| {
                    rep.setup_ms = Some(setup.as_secs_f64() * 1000.0);
                    rep.raced = r.raced;
                    rep.spares_used = r.spares;
                    health.report(rep);
                });
                (r.stream, r.prefix)
            }
            Err((e, opened)) => {
                if held.take().is_some() {
                    Stats::inc(&stats.dropped);
                }
                // Upstreams opened and closed without an answer (a relay
                // that accepts and closes): later dials are re-dials.
                dialled_before |= opened;
                if logged_failure {
                    tracing::debug!("flow: upstream failed: {e}");
                } else {
                    tracing::warn!("flow: upstream failed: {e}");
                    logged_failure = true;
                }
                backoff = next_backoff(backoff);
                not_before = Instant::now() + backoff;
                continue;
            }
        };
        if dialled_before {
            Stats::inc(&stats.redials);
        }
        dialled_before = true;
        logged_failure = false;
        let first = held.take();
        let (outcome, allocated) = connected(
            &turn,
            &socket,
            client,
            Upstream { stream, prefix },
            first,
            &mut rx,
            &mut slot,
            &mut idle_at,
            &mut shutdown,
            (&entry, &mut health),
        )
        .await;
        backoff = if allocated {
            Duration::ZERO
        } else {
            next_backoff(backoff)
        };
        not_before = Instant::now() + backoff;
        if allocated
            && matches!(outcome, Outcome::Closed | Outcome::Dead)
            && health.mark(Degrade::Closed)
        {
            // The relay bound the allocation to that upstream: it is gone,
            // and the page must restart ICE to get a new one.
            turn.degraded(&entry, Degrade::Closed, &health);
        }
        match outcome {
            Outcome::Idle => {
                Stats::inc(&stats.idle_closed);
                break;
            }
            Outcome::Shutdown => break,
            Outcome::Unauthenticated => {
                Stats::inc(&stats.unauthenticated_closed);
                break;
            }
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

/// A new upstream: raced or plain.
enum Started {
    Plain(BoxIo),
    Raced(Raced),
}

/// Opens the flow's upstream. With the client's `first` request (the
/// flow's first dial), races `turn.race` upstreams with it; a first
/// datagram that is not a request is put back in `held` and one upstream
/// is dialled. The error says whether an upstream was opened.
async fn start_upstream(
    turn: &Arc<Turn>,
    first: Option<Vec<u8>>,
    held: &mut Option<Vec<u8>>,
) -> Result<Started, (String, bool)> {
    if let Some(d) = first {
        let mut framed = Vec::with_capacity(d.len() + 4);
        if let Ok(Datagram::Request(id)) = frame::datagram_to_stream(&d, &mut framed) {
            Stats::add(&turn.stats.payload_up, d.len() as u64);
            return race::race(turn, &framed, id, turn.race)
                .await
                .map(Started::Raced)
                .map_err(|e| {
                    let opened = matches!(e, race::RaceError::NoAnswer(_));
                    (e.to_string(), opened)
                });
        }
        *held = Some(d);
    }
    match turn.dial().await {
        Ok(s) => Ok(Started::Plain(s)),
        Err(e) => {
            Stats::inc(&turn.stats.upstream_failures);
            Err((e.to_string(), false))
        }
    }
}

/// An upstream and the bytes already read from it.
struct Upstream {
    stream: BoxIo,
    prefix: Vec<u8>,
}

/// Drops the client's datagrams until `until` (counted as held-back
/// re-dials). False on shutdown, a closed queue or idleness.
async fn hold_off(
    rx: &mut mpsc::Receiver<Vec<u8>>,
    until: Instant,
    idle_at: &mut Instant,
    idle: Duration,
    stats: &Stats,
    shutdown: &mut Shutdown,
) -> bool {
    while Instant::now() < until {
        tokio::select! {
            biased;
            () = shutdown.wait() => return false,
            () = sleep_until(*idle_at) => {
                Stats::inc(&stats.idle_closed);
                return false;
            }
            () = sleep_until(until) => return true,
            d = rx.recv() => match d {
                Some(_) => {
                    Stats::inc(&stats.redials_suppressed);
                    *idle_at = Instant::now() + idle;
                }
                None => return false,
            },
        }
    }
    true
}

/// Moves datagrams and frames until the upstream closes or goes dead, the
/// client goes idle, or the connector stops; measures the circuit and
/// reports it degraded (once per flow).
#[allow(clippy::too_many_arguments)]
async fn connected(
    turn: &Arc<Turn>,
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    upstream: Upstream,
    first: Option<Vec<u8>>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    slot: &mut Option<PendingSlot>,
    idle_at: &mut Instant,
    shutdown: &mut Shutdown,
    (entry, health): (&FlowEntry, &mut Health),
) -> (Outcome, bool) {
    let stats = &turn.stats;
    let limits = &turn.limits;
    let auth_at = Instant::now() + limits.auth_timeout;
    let mut allocated = false;
    let (rd, mut wr) = tokio::io::split(upstream.stream);
    let (answers_tx, mut answers) = mpsc::channel::<Event>(ANSWER_QUEUE);
    // When the relay last sent something: µs after `epoch`, 0 = never.
    let epoch = Instant::now();
    let last_down = Arc::new(AtomicU64::new(0));
    let mut reader = tokio::spawn(read_upstream(
        rd,
        upstream.prefix,
        Arc::clone(socket),
        client,
        Arc::clone(stats),
        answers_tx,
        (epoch, Arc::clone(&last_down)),
    ));
    let seen_down = |h: &mut Health| {
        let us = last_down.load(Ordering::Relaxed);
        if us > 0 {
            h.down(epoch + Duration::from_micros(us));
        }
    };
    let idle_for = |h: &Health| {
        if h.degraded().is_some() {
            turn.circuits.degraded_idle
        } else {
            limits.idle_timeout
        }
    };
    let mut pending: VecDeque<(TransactionId, Instant)> = VecDeque::new();
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut first = first;
    let outcome = loop {
        let dead_at = pending.front().map(|(_, t)| *t + limits.dead_timeout);
        let stall_at = if allocated {
            health.stall_deadline()
        } else {
            None
        };
        tokio::select! {
            biased;
            () = shutdown.wait() => break Outcome::Shutdown,
            _ = &mut reader => break Outcome::Closed,
            Some(event) = answers.recv() => match event {
                Event::Answer(id) => {
                    pending.retain(|(p, _)| *p != id);
                    if health.answer(id, Instant::now()).is_some() {
                        entry.update(|r| health.report(r));
                        if allocated {
                            seen_down(health);
                            if let Some(why) = health.poll(Instant::now()) {
                                turn.degraded(entry, why, health);
                            }
                        }
                    }
                }
                Event::Allocated => {
                    allocated = true;
                    *slot = None;
                    entry.update(|r| r.allocated = true);
                }
            },
            d = next(&mut first, rx) => {
                let Some(d) = d else { break Outcome::Shutdown };
                let now = Instant::now();
                *idle_at = now + idle_for(health);
                out.clear();
                add(&d, &mut out, &mut pending, health, stats, now);
                for _ in 1..BATCH {
                    match rx.try_recv() {
                        Ok(d) => add(&d, &mut out, &mut pending, health, stats, now),
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
            () = sleep_until(stall_at.unwrap_or(*idle_at)), if stall_at.is_some() => {
                seen_down(health);
                if let Some(why) = health.poll(Instant::now()) {
                    turn.degraded(entry, why, health);
                    // From now on the browser's silence ends the flow sooner.
                    *idle_at = (*idle_at).min(Instant::now() + idle_for(health));
                }
            }
            () = sleep_until(*idle_at) => break Outcome::Idle,
            () = sleep_until(auth_at), if slot.is_some() => break Outcome::Unauthenticated,
        }
    };
    reader.abort();
    (outcome, allocated)
}

/// The held datagram, else the next queued one.
async fn next(first: &mut Option<Vec<u8>>, rx: &mut mpsc::Receiver<Vec<u8>>) -> Option<Vec<u8>> {
    match first.take() {
        Some(d) => Some(d),
        None => rx.recv().await,
    }
}

/// Frames one client datagram into `out`, noting requests (for the dead
/// upstream check and the RTT) and bytes up (for stalls).
fn add(
    d: &[u8],
    out: &mut Vec<u8>,
    pending: &mut VecDeque<(TransactionId, Instant)>,
    health: &mut Health,
    stats: &Stats,
    now: Instant,
) {
    // Browsers' TURN clients never send a Binding to the TURN server (ICE
    // checks travel inside Send/ChannelData); a page's `stun:` entry that
    // shares the socket with its `turn:` one would.
    if frame::is_binding_request(d) {
        Stats::inc(&stats.not_allocate);
        return;
    }
    match frame::datagram_to_stream(d, out) {
        Ok(kind) => {
            Stats::add(&stats.payload_up, d.len() as u64);
            health.up(now);
            if let Datagram::Request(id) = kind {
                health.request(id, now);
                // A UDP client retransmits with the same ID: keep the first time.
                if pending.len() < MAX_PENDING && !pending.iter().any(|(p, _)| *p == id) {
                    pending.push_back((id, now));
                }
            }
        }
        Err(_) => Stats::inc(&stats.dropped),
    }
}

/// Reads frames from the upstream (after the bytes of `prefix`, already
/// read) and sends them to the client as datagrams until the stream ends,
/// fails or carries something that is not a frame; notes when bytes came.
async fn read_upstream(
    mut rd: ReadHalf<BoxIo>,
    prefix: Vec<u8>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    stats: Arc<Stats>,
    answers: mpsc::Sender<Event>,
    (epoch, last_down): (Instant, Arc<AtomicU64>),
) {
    let mut decoder = StreamDecoder::new(MAX_STREAM_FRAME);
    let mut buf = vec![0u8; READ_BUF];
    let mut prefix = Some(prefix);
    loop {
        let n = match prefix.take() {
            Some(p) if !p.is_empty() => {
                if decoder.push(&p).is_err() {
                    return;
                }
                p.len()
            }
            _ => {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if decoder.push(&buf[..n]).is_err() {
                    return;
                }
                n
            }
        };
        if n > 0 {
            let us = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            last_down.store(us.max(1), Ordering::Relaxed);
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
            let refusal;
            let dgram = match frame::inspect_from_relay(kind, frame) {
                FromRelay::Pass { answer, allocated } => {
                    if allocated {
                        // Must arrive: it frees the pending place.
                        let _ = answers.send(Event::Allocated).await;
                    }
                    if let Some(id) = answer {
                        let _ = answers.try_send(Event::Answer(id));
                    }
                    frame::stream_to_datagram(kind, frame).0
                }
                FromRelay::Redirect { answer } => {
                    Stats::inc(&stats.redirects_blocked);
                    tracing::warn!(
                        "flow: the relay answered with a redirect (TURN 300 / ALTERNATE-SERVER); \
                         not passed on, the client gets an error instead"
                    );
                    if let Some(id) = answer {
                        let _ = answers.try_send(Event::Answer(id));
                    }
                    refusal = frame::redirect_refusal(frame);
                    match &refusal {
                        Some(r) => r.as_slice(),
                        None => continue,
                    }
                }
                FromRelay::Malformed => {
                    Stats::inc(&stats.relay_malformed);
                    continue;
                }
            };
            match socket.send_to(dgram, client).await {
                Ok(_) => Stats::add(&stats.payload_down, dgram.len() as u64),
                Err(_) => Stats::inc(&stats.dropped),
            }
        }
    }
}

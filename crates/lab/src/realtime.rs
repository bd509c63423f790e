//! Calls in real time: two agents on their own threads, each sending
//! through its egress [`ImpairStage`] and its [`Leg`], both stamping
//! packets with one shared [`LabClock`] so one-way delay is exact.
//!
//! ## One attempt
//! 1. Open both legs (allocations) and connect each to the other's address
//!    (channel bindings), within the setup timeout.
//! 2. Start both agents 5 ms later on their threads. Each loop: run the
//!    leg's timers, move due packets agent → stage → leg, wait for packets
//!    until the next deadline (at most 20 ms), hand them to the agent.
//! 3. Media runs for the profile's duration, then the loops drain packets
//!    in flight and stop; each leg is closed.
//!
//! A side that has no media from its peer by the setup deadline fails the
//! attempt (retried up to the plan's `setup_retries`); a transport error,
//! a lost allocation or media stalled for `stall_timeout_s` fails the call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::agent::{Agent, MediaProfile};
use crate::call::{CallReport, Outcome, RatingInputs};
use crate::impair::{ImpairStage, Impairment};
use crate::path::{Leg, PathOpener};
use crate::plan::CallTiming;

/// Longest wait in an agent loop, so stop flags are seen.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// Loop rounds at most per agent and call (a bound far above what the
/// time limit allows: one round waits at least 50 µs).
const MAX_ROUNDS: u64 = 1 << 34;
/// How long closing a leg may take.
const CLOSE_WAIT: Duration = Duration::from_millis(100);

/// Nanoseconds since one epoch, shared by both agents of a call.
#[derive(Debug, Clone, Copy)]
pub struct LabClock {
    epoch: Instant,
}

impl Default for LabClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LabClock {
    /// A clock starting now.
    pub fn new() -> Self {
        LabClock {
            epoch: Instant::now(),
        }
    }

    /// `t` on this clock, ns.
    pub fn at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Now, ns.
    pub fn now_ns(&self) -> u64 {
        self.at(Instant::now())
    }
}

/// One call to make.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// Media.
    pub profile: MediaProfile,
    /// Impairment of each direction (each with its own seed).
    pub impairment: Impairment,
    /// Seed of the caller's egress stage; the callee's is derived.
    pub seed: u64,
    /// Timeouts and drain.
    pub timing: CallTiming,
    /// E-model inputs.
    pub rating: RatingInputs,
    /// Setup retries (0–4).
    pub setup_retries: u32,
}

impl CallSpec {
    /// Drain after the media: the plan's drain plus twice the worst
    /// impairment delay and the rate limiter's queue.
    pub(crate) fn drain_ns(&self) -> u64 {
        let i = &self.impairment;
        let queue = if i.rate_kbps.is_some() {
            i.queue_ms.unwrap_or(200.0)
        } else {
            0.0
        };
        let ms = self.timing.drain_ms + 2.0 * (i.delay_ms + i.jitter_ms) + queue;
        (ms * 1e6) as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Call,
}

#[derive(Debug)]
struct LoopEnd {
    agent: Agent,
    error: Option<(Phase, String)>,
}

struct LoopParams<'a> {
    clock: LabClock,
    setup_deadline_ns: u64,
    stop_at_ns: u64,
    stall_ns: u64,
    stop: &'a AtomicBool,
}

fn agent_loop(
    mut leg: Box<dyn Leg>,
    mut agent: Agent,
    mut stage: ImpairStage<Vec<u8>>,
    p: &LoopParams<'_>,
) -> LoopEnd {
    let mut inbox: Vec<Vec<u8>> = Vec::new();
    let mut error = None;
    let media_end = agent.end_ns();
    for _ in 0..MAX_ROUNDS {
        if p.stop.load(Ordering::Relaxed) {
            break;
        }
        let now_i = Instant::now();
        let now = p.clock.at(now_i);
        if now >= p.stop_at_ns {
            break;
        }
        if let Err(e) = leg.housekeeping(now_i) {
            error = Some((Phase::Call, e.to_string()));
            break;
        }
        while let Some(pkt) = agent.poll_transmit(now) {
            stage.push(now, pkt.len(), pkt);
        }
        let mut send_error = None;
        while let Some(pkt) = stage.poll(now) {
            if let Err(e) = leg.send(now_i, &pkt) {
                send_error = Some(e.to_string());
                break;
            }
        }
        if let Some(e) = send_error {
            error = Some((Phase::Call, e));
            break;
        }
        match agent.rx.last_arrival_ns {
            None if now > p.setup_deadline_ns => {
                error = Some((
                    Phase::Setup,
                    "no media from the peer within the setup timeout".to_owned(),
                ));
                break;
            }
            Some(last) if now < media_end && now.saturating_sub(last) > p.stall_ns => {
                error = Some((
                    Phase::Call,
                    format!(
                        "media stalled: nothing from the peer for {:.1} s",
                        (now - last) as f64 / 1e9
                    ),
                ));
                break;
            }
            _ => {}
        }
        let next = [
            agent.poll_timeout(),
            stage.next_deadline(),
            Some(p.stop_at_ns),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(p.stop_at_ns);
        let wait = Duration::from_nanos(next.saturating_sub(now)).min(MAX_WAIT);
        if let Err(e) = leg.recv(wait, &mut inbox) {
            error = Some((Phase::Call, e.to_string()));
            break;
        }
        if !inbox.is_empty() {
            let t = p.clock.now_ns();
            for pkt in inbox.drain(..) {
                let _ = agent.handle_packet(t, &pkt);
            }
        }
    }
    if error.is_some() {
        p.stop.store(true, Ordering::Relaxed);
    }
    leg.close(Instant::now() + CLOSE_WAIT);
    LoopEnd { agent, error }
}

/// Makes one attempt; `Err` is a setup failure (to retry).
fn attempt(
    caller: &dyn PathOpener,
    callee: &dyn PathOpener,
    spec: &CallSpec,
    clock: LabClock,
) -> Result<CallReport, String> {
    let t0 = Instant::now();
    let setup_deadline = t0 + Duration::from_secs_f64(spec.timing.setup_timeout_s);
    let mut a = caller
        .open(setup_deadline)
        .map_err(|e| format!("caller ({}): {e}", caller.kind()))?;
    let mut b = match callee.open(setup_deadline) {
        Ok(b) => b,
        Err(e) => {
            a.close(Instant::now() + CLOSE_WAIT);
            return Err(format!("callee ({}): {e}", callee.kind()));
        }
    };
    let (addr_a, addr_b) = (a.address(), b.address());
    let connected = a
        .connect_peer(addr_b, setup_deadline)
        .map_err(|e| format!("caller ({}): {e}", caller.kind()))
        .and_then(|()| {
            b.connect_peer(addr_a, setup_deadline)
                .map_err(|e| format!("callee ({}): {e}", callee.kind()))
        });
    if let Err(e) = connected {
        let close_by = Instant::now() + CLOSE_WAIT;
        a.close(close_by);
        b.close(close_by);
        return Err(e);
    }
    let media_start = clock.now_ns() + 5_000_000;
    let stop = AtomicBool::new(false);
    let params = LoopParams {
        clock,
        setup_deadline_ns: clock.at(setup_deadline),
        stop_at_ns: media_start + spec.profile.duration_ns + spec.drain_ns(),
        stall_ns: (spec.timing.stall_timeout_s * 1e9) as u64,
        stop: &stop,
    };
    let agent_a = Agent::new(spec.profile.clone(), media_start);
    let agent_b = Agent::new(spec.profile.clone(), media_start);
    let stage_a = ImpairStage::new(spec.impairment, spec.seed);
    let stage_b = ImpairStage::new(spec.impairment, spec.seed ^ 0x5eed_0000_b00c_0001);
    let (end_a, end_b) = std::thread::scope(|s| {
        let ha = s.spawn(|| agent_loop(a, agent_a, stage_a, &params));
        let hb = s.spawn(|| agent_loop(b, agent_b, stage_b, &params));
        (ha.join(), hb.join())
    });
    let (end_a, end_b) = match (end_a, end_b) {
        (Ok(x), Ok(y)) => (x, y),
        _ => return Err("an agent thread panicked".into()),
    };
    let errors: Vec<&(Phase, String)> =
        [&end_a.error, &end_b.error].into_iter().flatten().collect();
    if let Some((_, e)) = errors.iter().find(|(ph, _)| *ph == Phase::Setup) {
        return Err(e.clone());
    }
    let t0_ns = clock.at(t0);
    let setup_ms = match (
        end_a.agent.rx.first_arrival_ns,
        end_b.agent.rx.first_arrival_ns,
    ) {
        (Some(x), Some(y)) => Some(x.max(y).saturating_sub(t0_ns) as f64 / 1e6),
        _ => None,
    };
    let (outcome, failure) = match errors.first() {
        Some((_, e)) => (Outcome::FailedDuringCall, Some(e.clone())),
        None => (Outcome::Success, None),
    };
    Ok(CallReport::from_agents(
        &end_a.agent,
        &end_b.agent,
        &spec.rating,
        outcome,
        failure,
        setup_ms,
    ))
}

/// Runs a call, retrying a failed setup up to `spec.setup_retries` times.
pub fn run_call(
    caller: &dyn PathOpener,
    callee: &dyn PathOpener,
    spec: &CallSpec,
    clock: LabClock,
) -> CallReport {
    with_retries(spec, |s| attempt(caller, callee, s, clock))
}

/// Runs `attempt` until it sets a call up, at most 1 + `spec.setup_retries`
/// times, each attempt with its own seed.
pub(crate) fn with_retries(
    spec: &CallSpec,
    mut attempt: impl FnMut(&CallSpec) -> Result<CallReport, String>,
) -> CallReport {
    let attempts = 1 + spec.setup_retries.min(crate::plan::MAX_SETUP_RETRIES);
    let mut last = String::new();
    for n in 1..=attempts {
        let mut s = spec.clone();
        s.seed = spec
            .seed
            .wrapping_add(u64::from(n - 1).wrapping_mul(0x9e37_79b9));
        match attempt(&s) {
            Ok(mut report) => {
                report.attempts = n;
                return report;
            }
            Err(e) => last = e,
        }
    }
    CallReport::failed_setup(attempts, last, spec.profile.duration_ns as f64 / 1e6)
}

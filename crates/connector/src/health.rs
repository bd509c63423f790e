//! Circuit health: what each TURN flow measures about its upstream stream
//! (through Tor, its circuit), and where the figures go.
//!
//! ```text
//! client request up ──▶ Health::request(id)      relay's answer ──▶ Health::answer(id) → RTT
//! client bytes up   ──▶ Health::up()             relay's bytes  ──▶ Health::down()
//! Health::poll(now): Stall (bytes up, nothing down for `stall`) or Rtt (smoothed RTT over
//!   max(factor × the flow's first RTTs, + margin)) → once per flow → Registry::degraded
//!   → the event stream of the web proxy (`/connector/events`) → the page restarts ICE
//! ```
//!
//! The [`Registry`] holds one [`FlowReport`] per open flow (an opaque
//! number, never the client's port) for `/connector/flows` and
//! [`crate::Handle::flows`], and broadcasts degradations as server-sent
//! events. Nothing here names an address.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use stun::TransactionId;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Requests tracked for RTT per flow (a UDP client retransmits with the
/// same ID; only the first send counts).
const MAX_REQUESTS: usize = 32;
/// RTT samples that make a flow's baseline (the smallest of them).
const BASE_SAMPLES: u32 = 3;
/// Events queued per event-stream subscriber before it lags (a lagging
/// subscriber skips the oldest).
const EVENT_QUEUE: usize = 64;
/// Flows reported at once, at most (flows are capped by `max_flows`
/// already; this bounds one JSON answer).
const MAX_REPORTED: usize = 1000;

/// Why a flow's circuit counts as degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degrade {
    /// The client sent and nothing came back for the stall time.
    Stall,
    /// The smoothed RTT of its TURN transactions grew past the threshold.
    Rtt,
    /// The upstream closed or failed under an authenticated allocation
    /// (the relay bound the allocation to it: it is gone).
    Closed,
}

impl Degrade {
    /// `stall`, `rtt` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Degrade::Stall => "stall",
            Degrade::Rtt => "rtt",
            Degrade::Closed => "closed",
        }
    }
}

/// The thresholds of [`Health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Bytes up and none down for this long: a stall.
    pub stall: Duration,
    /// Degraded when the smoothed RTT exceeds this many times the baseline…
    pub rtt_factor: u32,
    /// …and the baseline plus this margin.
    pub rtt_margin: Duration,
}

/// One flow's measurements (pure: the caller passes the time).
#[derive(Debug)]
pub struct Health {
    t: Thresholds,
    requests: VecDeque<(TransactionId, Instant)>,
    base: Option<Duration>,
    base_samples: u32,
    srtt: Option<Duration>,
    last: Option<Duration>,
    samples: u64,
    /// The first bytes up since the last bytes down.
    up_waiting: Option<Instant>,
    stalls: u64,
    degraded: Option<Degrade>,
}

impl Health {
    /// A flow with no samples yet.
    pub fn new(t: Thresholds) -> Health {
        Health {
            t,
            requests: VecDeque::new(),
            base: None,
            base_samples: 0,
            srtt: None,
            last: None,
            samples: 0,
            up_waiting: None,
            stalls: 0,
            degraded: None,
        }
    }

    /// The client sent request `id` up at `now` (a retransmission keeps
    /// the first time).
    pub fn request(&mut self, id: TransactionId, now: Instant) {
        if self.requests.iter().any(|(r, _)| *r == id) {
            return;
        }
        if self.requests.len() == MAX_REQUESTS {
            self.requests.pop_front();
        }
        self.requests.push_back((id, now));
    }

    /// The relay answered `id` at `now`: the RTT, when the request was
    /// tracked.
    pub fn answer(&mut self, id: TransactionId, now: Instant) -> Option<Duration> {
        let i = self.requests.iter().position(|(r, _)| *r == id)?;
        let (_, sent) = self.requests.remove(i)?;
        let rtt = now.saturating_duration_since(sent);
        self.sample(rtt);
        Some(rtt)
    }

    /// One RTT sample (also a race's winning time).
    pub fn sample(&mut self, rtt: Duration) {
        self.samples += 1;
        self.last = Some(rtt);
        if self.base_samples < BASE_SAMPLES {
            self.base_samples += 1;
            self.base = Some(self.base.map_or(rtt, |b| b.min(rtt)));
        }
        // RFC 6298's smoothing (alpha 1/8).
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
    }

    /// The client sent bytes at `now`.
    pub fn up(&mut self, now: Instant) {
        if self.up_waiting.is_none() {
            self.up_waiting = Some(now);
        }
    }

    /// Bytes came from the relay at `at`.
    pub fn down(&mut self, at: Instant) {
        if self.up_waiting.is_some_and(|u| at >= u) {
            self.up_waiting = None;
        }
    }

    /// When a stall would be due, while none has been reported.
    pub fn stall_deadline(&self) -> Option<Instant> {
        if self.degraded.is_some() {
            return None;
        }
        self.up_waiting.map(|u| u + self.t.stall)
    }

    /// The RTT above which the flow counts as degraded, once it has a
    /// baseline.
    pub fn rtt_threshold(&self) -> Option<Duration> {
        let b = self.base?;
        (self.base_samples >= BASE_SAMPLES)
            .then(|| (b * self.t.rtt_factor).max(b + self.t.rtt_margin))
    }

    /// A degradation found now, reported once per flow.
    pub fn poll(&mut self, now: Instant) -> Option<Degrade> {
        if self.degraded.is_some() {
            return None;
        }
        let found = if self
            .up_waiting
            .is_some_and(|u| now.saturating_duration_since(u) >= self.t.stall)
        {
            self.stalls += 1;
            Some(Degrade::Stall)
        } else if let (Some(s), Some(limit)) = (self.srtt, self.rtt_threshold()) {
            (s > limit).then_some(Degrade::Rtt)
        } else {
            None
        };
        self.degraded = found;
        found
    }

    /// Marks the flow degraded for `why` (e.g. its upstream closed), once.
    pub fn mark(&mut self, why: Degrade) -> bool {
        if self.degraded.is_some() {
            return false;
        }
        self.degraded = Some(why);
        true
    }

    /// Whether a degradation was reported.
    pub fn degraded(&self) -> Option<Degrade> {
        self.degraded
    }

    /// The figures as reported.
    pub fn report(&self, r: &mut FlowReport) {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        r.rtt_ms = ms(self.last);
        r.srtt_ms = ms(self.srtt);
        r.base_rtt_ms = ms(self.base);
        r.rtt_samples = self.samples;
        r.stalls = self.stalls;
        r.degraded = self.degraded.map(Degrade::as_str);
    }
}

/// What `/connector/flows` and [`crate::Handle::flows`] say about one flow.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct FlowReport {
    /// An opaque number, counting from 1 (never the client's port).
    pub id: u64,
    /// `udp` or `tcp` (the client's side).
    pub transport: &'static str,
    /// Seconds since the flow opened.
    pub age_s: f64,
    /// Upstreams raced when the flow started (1: no race).
    pub raced: usize,
    /// How many of them were spares (dialled ahead of time).
    pub spares_used: usize,
    /// From the client's first Allocate to the relay's answer on the
    /// winning upstream (dial, circuit, TLS, first round trip), ms.
    pub setup_ms: Option<f64>,
    /// The last RTT of a TURN transaction (request up, answer down), ms.
    pub rtt_ms: Option<f64>,
    /// The smoothed RTT, ms.
    pub srtt_ms: Option<f64>,
    /// The smallest of the first RTTs (the baseline), ms.
    pub base_rtt_ms: Option<f64>,
    /// RTT samples.
    pub rtt_samples: u64,
    /// Stalls seen.
    pub stalls: u64,
    /// `stall`, `rtt` or `closed` once the flow was reported degraded.
    pub degraded: Option<&'static str>,
    /// Whether the relay accepted an Allocate on the current upstream.
    pub allocated: bool,
}

impl FlowReport {
    fn json(&self, now_age: f64) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "transport": self.transport,
            "ageS": now_age,
            "raced": self.raced,
            "sparesUsed": self.spares_used,
            "setupMs": self.setup_ms,
            "rttMs": self.rtt_ms,
            "srttMs": self.srtt_ms,
            "baseRttMs": self.base_rtt_ms,
            "rttSamples": self.rtt_samples,
            "stalls": self.stalls,
            "degraded": self.degraded,
            "allocated": self.allocated,
        })
    }
}

#[derive(Debug)]
struct Entry {
    opened: Instant,
    report: FlowReport,
}

/// The open flows' reports and the degradation events.
#[derive(Debug)]
pub(crate) struct Registry {
    flows: Mutex<BTreeMap<u64, Entry>>,
    next: Mutex<u64>,
    events: broadcast::Sender<Bytes>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            flows: Mutex::new(BTreeMap::new()),
            next: Mutex::new(0),
            events: broadcast::channel(EVENT_QUEUE).0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// Registers a flow; it is removed when the returned handle drops.
    pub(crate) fn open(self: &Arc<Self>, transport: &'static str) -> FlowEntry {
        let id = {
            let mut n = lock(&self.next);
            *n += 1;
            *n
        };
        lock(&self.flows).insert(
            id,
            Entry {
                opened: Instant::now(),
                report: FlowReport {
                    id,
                    transport,
                    raced: 1,
                    ..FlowReport::default()
                },
            },
        );
        FlowEntry {
            id,
            registry: Arc::clone(self),
        }
    }

    /// Every open flow's report.
    pub(crate) fn reports(&self) -> Vec<FlowReport> {
        lock(&self.flows)
            .values()
            .take(MAX_REPORTED)
            .map(|e| {
                let mut r = e.report.clone();
                r.age_s = e.opened.elapsed().as_secs_f64();
                r
            })
            .collect()
    }

    /// `/connector/flows`: `{"flows": [...]}`.
    pub(crate) fn json(&self) -> Bytes {
        let flows: Vec<serde_json::Value> = self
            .reports()
            .iter()
            .map(|r| r.json((r.age_s * 1000.0).round() / 1000.0))
            .collect();
        Bytes::from(serde_json::json!({ "flows": flows }).to_string())
    }

    /// A receiver of the server-sent events.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.events.subscribe()
    }
}

/// A flow's place in the [`Registry`]; removed on drop.
#[derive(Debug)]
pub(crate) struct FlowEntry {
    id: u64,
    registry: Arc<Registry>,
}

impl FlowEntry {
    /// Changes the flow's report.
    pub(crate) fn update(&self, f: impl FnOnce(&mut FlowReport)) {
        if let Some(e) = lock(&self.registry.flows).get_mut(&self.id) {
            f(&mut e.report);
        }
    }

    /// Reports the flow degraded: its report, a log line and one event
    /// (`event: degraded`, data `{"flow": N, "reason": "stall"}`).
    pub(crate) fn degraded(&self, why: Degrade, health: &Health) {
        self.update(|r| health.report(r));
        self.update(|r| r.degraded = Some(why.as_str()));
        tracing::info!(
            "flow {}: circuit degraded ({}); telling the page",
            self.id,
            why.as_str()
        );
        let data = serde_json::json!({"flow": self.id, "reason": why.as_str()});
        let event = format!("event: degraded\ndata: {data}\n\n");
        // No subscriber: nobody to tell.
        let _ = self.registry.events.send(Bytes::from(event));
    }
}

impl Drop for FlowEntry {
    fn drop(&mut self) {
        lock(&self.registry.flows).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            stall: Duration::from_secs(2),
            rtt_factor: 4,
            rtt_margin: Duration::from_millis(500),
        }
    }

    fn id(n: u8) -> TransactionId {
        TransactionId([n; 12])
    }

    #[test]
    fn rtt_by_transaction_id() {
        let mut h = Health::new(t());
        let t0 = Instant::now();
        h.request(id(1), t0);
        // A retransmission keeps the first time.
        h.request(id(1), t0 + Duration::from_millis(50));
        h.request(id(2), t0 + Duration::from_millis(10));
        assert_eq!(
            h.answer(id(2), t0 + Duration::from_millis(40)),
            Some(Duration::from_millis(30))
        );
        assert_eq!(
            h.answer(id(1), t0 + Duration::from_millis(100)),
            Some(Duration::from_millis(100))
        );
        // Unknown or answered twice: no sample.
        assert_eq!(h.answer(id(1), t0 + Duration::from_millis(200)), None);
        assert_eq!(h.answer(id(9), t0), None);
        let mut r = FlowReport::default();
        h.report(&mut r);
        assert_eq!(r.rtt_samples, 2);
        assert_eq!(r.base_rtt_ms, Some(30.0));
        assert_eq!(r.rtt_ms, Some(100.0));
    }

    #[test]
    fn request_table_is_bounded() {
        let mut h = Health::new(t());
        let t0 = Instant::now();
        for n in 0..=u8::try_from(MAX_REQUESTS).unwrap() {
            h.request(id(n), t0);
        }
        assert_eq!(h.requests.len(), MAX_REQUESTS);
        // The oldest went.
        assert_eq!(h.answer(id(0), t0), None);
        assert!(h.answer(id(1), t0).is_some());
    }

    #[test]
    fn stall_needs_bytes_up_and_none_down() {
        let mut h = Health::new(t());
        let t0 = Instant::now();
        // Silence both ways is not a stall.
        assert_eq!(h.poll(t0 + Duration::from_secs(10)), None);
        assert_eq!(h.stall_deadline(), None);
        h.up(t0);
        h.up(t0 + Duration::from_millis(500));
        assert_eq!(h.stall_deadline(), Some(t0 + Duration::from_secs(2)));
        // An answer in time clears it.
        h.down(t0 + Duration::from_millis(1900));
        assert_eq!(h.poll(t0 + Duration::from_millis(2100)), None);
        // Then up, and nothing down for 2 s.
        h.up(t0 + Duration::from_secs(3));
        // Bytes down from before the send do not count.
        h.down(t0 + Duration::from_millis(2999));
        assert_eq!(h.poll(t0 + Duration::from_millis(4999)), None);
        assert_eq!(h.poll(t0 + Duration::from_secs(5)), Some(Degrade::Stall));
        // Reported once.
        assert_eq!(h.poll(t0 + Duration::from_secs(9)), None);
        assert_eq!(h.stall_deadline(), None);
        assert_eq!(h.degraded(), Some(Degrade::Stall));
        assert!(!h.mark(Degrade::Closed));
    }

    #[test]
    fn rtt_relative_to_the_start() {
        let mut h = Health::new(t());
        let ms = Duration::from_millis;
        // Baseline: the smallest of the first three (100 ms); threshold
        // max(4 × 100, 100 + 500) = 600 ms.
        for r in [120, 100, 150] {
            h.sample(ms(r));
        }
        assert_eq!(h.rtt_threshold(), Some(ms(600)));
        let now = Instant::now();
        assert_eq!(h.poll(now), None);
        // A single slow answer moves the smoothed RTT only part of the way.
        h.sample(ms(1500));
        assert_eq!(h.poll(now), None);
        for _ in 0..6 {
            h.sample(ms(1500));
        }
        assert_eq!(h.poll(now), Some(Degrade::Rtt));
        // Later samples never move the baseline.
        let mut r = FlowReport::default();
        h.report(&mut r);
        assert_eq!(r.base_rtt_ms, Some(100.0));
        assert_eq!(r.degraded, Some("rtt"));
    }

    #[test]
    fn slow_from_the_start_is_not_degraded() {
        // A flow that was always slow has that as its baseline: only a
        // change counts.
        let mut h = Health::new(t());
        for _ in 0..20 {
            h.sample(Duration::from_millis(900));
        }
        assert_eq!(h.poll(Instant::now()), None);
    }

    #[test]
    fn registry_reports_and_events() {
        let reg = Arc::new(Registry::default());
        let mut rx = reg.subscribe();
        let a = reg.open("udp");
        let b = reg.open("tcp");
        a.update(|r| r.setup_ms = Some(12.5));
        let reports = reg.reports();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].id, 1);
        assert_eq!(reports[0].setup_ms, Some(12.5));
        assert_eq!(reports[1].transport, "tcp");
        let mut h = Health::new(t());
        assert!(h.mark(Degrade::Stall));
        a.degraded(Degrade::Stall, &h);
        let ev = rx.try_recv().unwrap();
        assert_eq!(
            &ev[..],
            b"event: degraded\ndata: {\"flow\":1,\"reason\":\"stall\"}\n\n"
        );
        let json: serde_json::Value = serde_json::from_slice(&reg.json()).unwrap();
        assert_eq!(json["flows"][0]["degraded"], "stall");
        assert_eq!(json["flows"][1]["degraded"], serde_json::Value::Null);
        drop(a);
        drop(b);
        assert!(reg.reports().is_empty());
    }
}

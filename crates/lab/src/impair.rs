//! A deterministic, seeded network impairment stage: loss (random or
//! Gilbert–Elliott bursts), a token-bucket rate limit with a bounded queue,
//! fixed delay and jitter.
//!
//! The stage is sans-IO and clock-free: [`ImpairStage::push`] takes the
//! time a packet enters, [`ImpairStage::poll`] hands back packets whose
//! delivery time has come, and [`ImpairStage::next_deadline`] says when to
//! poll next. The same code runs in simulated time (the calibration tests)
//! and in real time (the lab's call agents, on each agent's egress), so a
//! calibration needs neither root nor `tc netem`.
//!
//! ## Order of the effects, per packet
//! 1. **Loss**: random with probability `loss_pct`, or the Gilbert–Elliott
//!    two-state chain (good ↔ bad with probabilities `p` and `r` per
//!    packet, loss probability `loss_good` / `loss_bad` in each state).
//!    A lost packet uses no link capacity.
//! 2. **Rate limit**: a token bucket of `rate_kbps` and `burst_bytes`; a
//!    packet leaves when the bucket holds its size, in FIFO order. A packet
//!    that would wait longer than `queue_ms` is dropped (tail drop).
//! 3. **Delay and jitter**: `delay_ms` plus a uniform draw in
//!    [−`jitter_ms`, +`jitter_ms`] (never below zero in total).
//! 4. **Ordering**: by default the link is FIFO — a packet whose draw would
//!    make it overtake its predecessor is held until the predecessor is
//!    delivered, so jitter does not reorder (and the delay distribution is
//!    skewed up slightly). With `allow_reorder`, packets are delivered at
//!    their own times and jitter above the packet interval reorders them,
//!    as `tc netem` does.
//!
//! ## Determinism
//! Random draws come from [`Rng`] (xoshiro256** seeded through SplitMix64),
//! written here so the stream is part of this crate's contract: a seed
//! gives the same losses and delays on every machine and every version of
//! the dependencies. Draws per packet: one for loss (two for
//! Gilbert–Elliott: transition, then loss), one for jitter when
//! `jitter_ms > 0`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

/// Packets held by a stage at most; beyond, new packets are dropped and
/// counted as queue drops.
pub const MAX_HELD: usize = 100_000;

/// Gilbert–Elliott bursty loss: a good and a bad state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliott {
    /// Probability of moving from good to bad, per packet.
    pub p: f64,
    /// Probability of moving from bad to good, per packet.
    pub r: f64,
    /// Loss probability in the bad state (default 1).
    #[serde(default = "one")]
    pub loss_bad: f64,
    /// Loss probability in the good state (default 0).
    #[serde(default)]
    pub loss_good: f64,
}

fn one() -> f64 {
    1.0
}

impl GilbertElliott {
    /// The long-run loss rate in percent.
    pub fn mean_loss_pct(&self) -> f64 {
        if self.p + self.r <= 0.0 {
            return 100.0 * self.loss_good;
        }
        let pi_bad = self.p / (self.p + self.r);
        100.0 * (pi_bad * self.loss_bad + (1.0 - pi_bad) * self.loss_good)
    }
}

/// What the stage does to packets. All fields default to "no effect".
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impairment {
    /// Fixed one-way delay, ms.
    #[serde(default)]
    pub delay_ms: f64,
    /// Uniform jitter amplitude, ms: each packet's delay is
    /// `delay_ms ± jitter_ms`.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Let jitter reorder packets (default: FIFO, no reordering).
    #[serde(default)]
    pub allow_reorder: bool,
    /// Random loss, percent.
    #[serde(default)]
    pub loss_pct: f64,
    /// Bursty loss instead of random loss.
    #[serde(default)]
    pub gilbert_elliott: Option<GilbertElliott>,
    /// Rate limit, kbit/s (none by default).
    #[serde(default)]
    pub rate_kbps: Option<f64>,
    /// Token bucket depth, bytes (default: 10 ms at the rate, at least
    /// 1500 bytes).
    #[serde(default)]
    pub burst_bytes: Option<u64>,
    /// Longest wait in the rate limiter's queue before a packet is
    /// dropped, ms (default 200).
    #[serde(default)]
    pub queue_ms: Option<f64>,
}

/// Why an impairment is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} = {value}: {reason}")]
pub struct InvalidImpairment {
    /// The field.
    pub field: &'static str,
    /// Its value.
    pub value: f64,
    /// What is expected.
    pub reason: &'static str,
}

impl Impairment {
    /// No impairment.
    pub fn none() -> Self {
        Self::default()
    }

    /// Checks ranges: delays and jitter 0–60 000 ms, probabilities 0–1,
    /// loss 0–100 %, rate above 0.
    pub fn validate(&self) -> Result<(), InvalidImpairment> {
        let bad = |field, value, reason| {
            Err(InvalidImpairment {
                field,
                value,
                reason,
            })
        };
        let ms_ok = |v: f64| v.is_finite() && (0.0..=60_000.0).contains(&v);
        if !ms_ok(self.delay_ms) {
            return bad("delay_ms", self.delay_ms, "expected 0 to 60000");
        }
        if !ms_ok(self.jitter_ms) {
            return bad("jitter_ms", self.jitter_ms, "expected 0 to 60000");
        }
        if !(self.loss_pct.is_finite() && (0.0..=100.0).contains(&self.loss_pct)) {
            return bad("loss_pct", self.loss_pct, "expected 0 to 100");
        }
        if let Some(ge) = &self.gilbert_elliott {
            if self.loss_pct > 0.0 {
                return bad(
                    "loss_pct",
                    self.loss_pct,
                    "give either loss_pct or gilbert_elliott, not both",
                );
            }
            for (field, v) in [
                ("gilbert_elliott.p", ge.p),
                ("gilbert_elliott.r", ge.r),
                ("gilbert_elliott.loss_bad", ge.loss_bad),
                ("gilbert_elliott.loss_good", ge.loss_good),
            ] {
                if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                    return bad(field, v, "expected a probability, 0 to 1");
                }
            }
        }
        if let Some(rate) = self.rate_kbps {
            if !(rate.is_finite() && rate > 0.0 && rate <= 100_000_000.0) {
                return bad("rate_kbps", rate, "expected above 0 (kbit/s)");
            }
        }
        if let Some(q) = self.queue_ms {
            if !ms_ok(q) {
                return bad("queue_ms", q, "expected 0 to 60000");
            }
        }
        if let Some(b) = self.burst_bytes {
            if b == 0 {
                return bad("burst_bytes", 0.0, "expected at least 1");
            }
        }
        Ok(())
    }

    /// Whether the stage changes nothing.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// xoshiro256** seeded with SplitMix64: small, fast, and fixed here so a
/// seed means the same stream forever.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform draw in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Held for delivery at this time (ns).
    Queued(u64),
    /// Dropped by the loss model.
    Lost,
    /// Dropped by the rate limiter's queue (or the stage is full).
    QueueDrop,
}

/// Counters of a stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCounters {
    /// Packets pushed.
    pub pushed: u64,
    /// Dropped by the loss model.
    pub lost: u64,
    /// Dropped by the rate limiter's queue.
    pub queue_drops: u64,
    /// Delivered by `poll`.
    pub delivered: u64,
}

/// One direction of an impaired link, holding packets of type `T`.
#[derive(Debug)]
pub struct ImpairStage<T> {
    cfg: Impairment,
    rng: Rng,
    bad_state: bool,
    /// Token bucket: tokens (bytes) at `bucket_at`.
    tokens: f64,
    bucket_at: u64,
    /// When the rate limiter's FIFO is free again.
    link_free_at: u64,
    /// Latest delivery time handed out (FIFO mode).
    last_delivery: u64,
    order: u64,
    held: BinaryHeap<Reverse<(u64, u64)>>,
    items: std::collections::HashMap<u64, T>,
    counters: StageCounters,
}

const NS_PER_MS: f64 = 1e6;

impl<T> ImpairStage<T> {
    /// A stage applying `cfg` with random draws from `seed`.
    pub fn new(cfg: Impairment, seed: u64) -> Self {
        ImpairStage {
            cfg,
            rng: Rng::new(seed),
            bad_state: false,
            tokens: f64::INFINITY,
            bucket_at: 0,
            link_free_at: 0,
            last_delivery: 0,
            order: 0,
            held: BinaryHeap::new(),
            items: std::collections::HashMap::new(),
            counters: StageCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Impairment {
        &self.cfg
    }

    /// The counters so far.
    pub fn counters(&self) -> StageCounters {
        self.counters
    }

    /// Packets held for delivery.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn lose(&mut self) -> bool {
        match self.cfg.gilbert_elliott {
            Some(ge) => {
                let flip = self.rng.unit();
                if self.bad_state {
                    if flip < ge.r {
                        self.bad_state = false;
                    }
                } else if flip < ge.p {
                    self.bad_state = true;
                }
                let p = if self.bad_state {
                    ge.loss_bad
                } else {
                    ge.loss_good
                };
                self.rng.unit() < p
            }
            None if self.cfg.loss_pct > 0.0 => self.rng.unit() * 100.0 < self.cfg.loss_pct,
            None => false,
        }
    }

    fn burst_bytes(&self, rate_bps: f64) -> f64 {
        match self.cfg.burst_bytes {
            Some(b) => b as f64,
            None => (rate_bps / 8.0 * 0.010).max(1500.0),
        }
    }

    /// When a packet of `size` bytes entering at `now` leaves the rate
    /// limiter, or `None` if it would wait longer than the queue allows.
    fn shape(&mut self, now: u64, size: usize) -> Option<u64> {
        let Some(kbps) = self.cfg.rate_kbps else {
            return Some(now);
        };
        let rate_bytes_per_ns = kbps * 1000.0 / 8.0 / 1e9;
        let burst = self.burst_bytes(kbps * 1000.0);
        let size = (size as f64).min(burst);
        // Tokens at the moment the FIFO reaches this packet.
        let start = now.max(self.link_free_at);
        let tokens_then = if self.tokens.is_infinite() {
            burst
        } else {
            let elapsed = start.saturating_sub(self.bucket_at) as f64;
            (self.tokens + elapsed * rate_bytes_per_ns).min(burst)
        };
        let wait = if tokens_then >= size {
            0.0
        } else {
            (size - tokens_then) / rate_bytes_per_ns
        };
        // Whole nanoseconds; the epsilon keeps float noise from adding one.
        let depart = start + (wait - 1e-6).max(0.0).ceil() as u64;
        let max_wait = self.cfg.queue_ms.unwrap_or(200.0) * NS_PER_MS;
        if (depart - now) as f64 > max_wait {
            return None;
        }
        let tokens_at_depart = tokens_then + wait * rate_bytes_per_ns;
        self.tokens = (tokens_at_depart - size).max(0.0);
        self.bucket_at = depart;
        self.link_free_at = depart;
        Some(depart)
    }

    fn propagation_ns(&mut self) -> u64 {
        let mut ms = self.cfg.delay_ms;
        if self.cfg.jitter_ms > 0.0 {
            ms += (self.rng.unit() * 2.0 - 1.0) * self.cfg.jitter_ms;
        }
        (ms.max(0.0) * NS_PER_MS).round() as u64
    }

    /// Offers a packet of `size` bytes at `now` (ns).
    pub fn push(&mut self, now: u64, size: usize, item: T) -> Verdict {
        self.counters.pushed += 1;
        if self.lose() {
            self.counters.lost += 1;
            return Verdict::Lost;
        }
        if self.held.len() >= MAX_HELD {
            self.counters.queue_drops += 1;
            return Verdict::QueueDrop;
        }
        let Some(depart) = self.shape(now, size) else {
            self.counters.queue_drops += 1;
            return Verdict::QueueDrop;
        };
        let mut at = depart.saturating_add(self.propagation_ns());
        if !self.cfg.allow_reorder {
            at = at.max(self.last_delivery);
        }
        self.last_delivery = self.last_delivery.max(at);
        let key = self.order;
        self.order += 1;
        self.held.push(Reverse((at, key)));
        self.items.insert(key, item);
        Verdict::Queued(at)
    }

    /// The next packet due at `now`, in delivery order (ties in push order).
    pub fn poll(&mut self, now: u64) -> Option<T> {
        let Reverse((at, key)) = *self.held.peek()?;
        if at > now {
            return None;
        }
        self.held.pop();
        self.counters.delivered += 1;
        self.items.remove(&key)
    }

    /// When the next held packet is due.
    pub fn next_deadline(&self) -> Option<u64> {
        self.held.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_delay_is_exact() {
        let cfg = Impairment {
            delay_ms: 50.0,
            ..Impairment::none()
        };
        let mut s = ImpairStage::new(cfg, 1);
        assert_eq!(s.push(1_000, 100, 'a'), Verdict::Queued(50_001_000));
        assert_eq!(s.poll(50_000_999), None);
        assert_eq!(s.poll(50_001_000), Some('a'));
    }

    #[test]
    fn same_seed_same_losses() {
        let cfg = Impairment {
            loss_pct: 10.0,
            jitter_ms: 5.0,
            delay_ms: 10.0,
            ..Impairment::none()
        };
        let run = |seed| {
            let mut s = ImpairStage::new(cfg, seed);
            (0..1000u64)
                .map(|i| s.push(i * 20_000_000, 160, ()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn fifo_keeps_order_and_reorder_does_not() {
        let cfg = Impairment {
            delay_ms: 50.0,
            jitter_ms: 30.0,
            ..Impairment::none()
        };
        let mut fifo = ImpairStage::new(cfg, 3);
        let mut free = ImpairStage::new(
            Impairment {
                allow_reorder: true,
                ..cfg
            },
            3,
        );
        for i in 0..500u64 {
            fifo.push(i * 5_000_000, 100, i);
            free.push(i * 5_000_000, 100, i);
        }
        let drain = |s: &mut ImpairStage<u64>| {
            let mut out = Vec::new();
            while let Some(i) = s.poll(u64::MAX) {
                out.push(i);
            }
            out
        };
        let a = drain(&mut fifo);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        let b = drain(&mut free);
        assert_eq!(b.len(), 500);
        assert!(b.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn gilbert_elliott_mean_loss() {
        let ge = GilbertElliott {
            p: 0.02,
            r: 0.3,
            loss_bad: 1.0,
            loss_good: 0.0,
        };
        let cfg = Impairment {
            gilbert_elliott: Some(ge),
            ..Impairment::none()
        };
        let mut s = ImpairStage::new(cfg, 11);
        let n = 200_000u64;
        let lost = (0..n)
            .filter(|i| s.push(*i, 100, ()) == Verdict::Lost)
            .count();
        let pct = 100.0 * lost as f64 / n as f64;
        assert!((pct - ge.mean_loss_pct()).abs() < 0.5, "{pct}");
    }

    #[test]
    fn rate_limit_paces_and_drops() {
        // 80 kbit/s = 10 bytes/ms; 1000-byte packets leave 100 ms apart
        // once the 1500-byte bucket is spent; the queue holds 250 ms.
        let cfg = Impairment {
            rate_kbps: Some(80.0),
            burst_bytes: Some(1000),
            queue_ms: Some(250.0),
            ..Impairment::none()
        };
        let mut s = ImpairStage::new(cfg, 0);
        let v: Vec<Verdict> = (0..5).map(|_| s.push(0, 1000, ())).collect();
        assert_eq!(v[0], Verdict::Queued(0));
        assert_eq!(v[1], Verdict::Queued(100_000_000));
        assert_eq!(v[2], Verdict::Queued(200_000_000));
        assert_eq!(v[3], Verdict::QueueDrop);
        assert_eq!(s.counters().queue_drops, 2);
    }

    #[test]
    fn validation_names_the_field() {
        let e = Impairment {
            loss_pct: 120.0,
            ..Impairment::none()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "loss_pct");
    }
}

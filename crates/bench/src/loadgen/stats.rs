//! What the load generator counts: which sequence numbers came back, and
//! latency samples reduced to percentiles.

use serde::{Deserialize, Serialize};

/// Which of the sequence numbers sent so far came back, and how often.
#[derive(Debug, Default)]
pub struct SeqTracker {
    bits: Vec<u64>,
    received: u64,
    duplicates: u64,
    unexpected: u64,
}

impl SeqTracker {
    /// A tracker for sequence numbers below `capacity` (it grows if needed).
    pub fn with_capacity(capacity: u64) -> Self {
        let words = usize::try_from(capacity.div_ceil(64)).unwrap_or(0);
        SeqTracker {
            bits: vec![0; words],
            ..Self::default()
        }
    }

    /// Records `seq` as received, `sent` being the number sent so far.
    /// Returns true the first time `seq` is seen.
    pub fn receive(&mut self, seq: u64, sent: u64) -> bool {
        if seq >= sent {
            self.unexpected += 1;
            return false;
        }
        let Ok(word) = usize::try_from(seq / 64) else {
            self.unexpected += 1;
            return false;
        };
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let mask = 1u64 << (seq % 64);
        if self.bits[word] & mask != 0 {
            self.duplicates += 1;
            return false;
        }
        self.bits[word] |= mask;
        self.received += 1;
        true
    }

    /// Distinct sequence numbers received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Sequence numbers received more than once (each extra copy counts).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Probes whose sequence number was never sent (corrupt or foreign).
    pub fn unexpected(&self) -> u64 {
        self.unexpected
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Latency samples in nanoseconds (saturating at about 4.3 s).
#[derive(Debug, Default)]
pub struct Samples(Vec<u32>);

impl Samples {
    /// Room for `n` samples without reallocating.
    pub fn with_capacity(n: usize) -> Self {
        Samples(Vec::with_capacity(n))
    }

    /// Adds one sample.
    pub fn push(&mut self, ns: u64) {
        self.0.push(u32::try_from(ns).unwrap_or(u32::MAX));
    }

    /// Percentiles (nearest rank) in microseconds; `None` without samples.
    pub fn percentiles(&mut self) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let n = self.0.len();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of them at or below it.
            let rank = (q * n as f64).ceil() as usize;
            f64::from(self.0[rank.clamp(1, n) - 1]) / 1000.0
        };
        let sum: u64 = self.0.iter().map(|&v| u64::from(v)).sum();
        Some(Percentiles {
            count: n as u64,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: f64::from(self.0[n - 1]) / 1000.0,
            mean: sum as f64 / n as f64 / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_loss_duplicates_and_strays() {
        let mut t = SeqTracker::with_capacity(10);
        assert!(t.receive(0, 100));
        assert!(t.receive(99, 100));
        assert!(!t.receive(99, 100));
        assert!(!t.receive(100, 100));
        assert_eq!((t.received(), t.duplicates(), t.unexpected()), (2, 1, 1));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut s = Samples::default();
        assert_eq!(s.percentiles(), None);
        for v in 1..=1000u64 {
            s.push(v * 1000);
        }
        let p = s.percentiles().unwrap();
        assert_eq!((p.p50, p.p99, p.p999, p.max), (500.0, 990.0, 999.0, 1000.0));
        assert_eq!(p.count, 1000);
    }
}

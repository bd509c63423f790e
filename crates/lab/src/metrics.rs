//! Receiver-side statistics: RFC 3550 interarrival jitter, loss,
//! reordering, duplicates, one-way delay, per-second throughput, and the
//! percentile rule every figure of the lab uses.
//!
//! Times are nanoseconds on the lab clock, which both agents of a call
//! share, so `arrival − send` is the exact one-way delay.

/// Highest sequence number tracked (2^24 ≈ 16.7 M packets: more than a
/// 24-hour video call). Packets above are counted in
/// [`ReceiverStats::out_of_range`] and otherwise ignored.
pub const MAX_TRACKED_SEQ: u32 = 1 << 24;

/// One-way delay samples kept per direction; beyond, every other sample is
/// dropped (the kept ones stay spread over the call).
pub const MAX_DELAY_SAMPLES: usize = 1 << 20;

/// RFC 3550 §6.4.1 interarrival jitter, in the units of its inputs.
///
/// For consecutive packets i−1, i with send times S and arrival times R:
/// D = (R_i − R_{i−1}) − (S_i − S_{i−1}), J ← J + (|D| − J)/16. Packets are
/// taken in arrival order, as RFC 3550 does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Jitter {
    last_transit: Option<f64>,
    value: f64,
}

impl Jitter {
    /// A jitter estimator with J = 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one packet's send and arrival time.
    pub fn update(&mut self, send: f64, arrival: f64) {
        let transit = arrival - send;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            self.value += (d - self.value) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// The current estimate J.
    pub fn value(&self) -> f64 {
        self.value
    }
}

/// The `p`-th percentile (0–100) of `values` by linear interpolation
/// between closest ranks (the "type 7" rule of R and NumPy's default);
/// `None` for no values. NaNs are ignored.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(percentile_sorted(&v, p))
}

/// [`percentile`] of values already sorted ascending and free of NaN.
/// Returns NaN for an empty slice.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    sorted[lo] + (sorted[hi.min(n - 1)] - sorted[lo]) * frac
}

/// Median, i.e. `percentile(values, 50)`.
pub fn median(values: &[f64]) -> Option<f64> {
    percentile(values, 50.0)
}

/// Bytes and packets per whole second since a start time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerSecond {
    /// Bytes in second i.
    pub bytes: Vec<u64>,
    /// Packets in second i.
    pub packets: Vec<u64>,
}

/// Seconds tracked at most per call (one day).
pub const MAX_SECONDS: usize = 86_400;

impl PerSecond {
    /// Adds `bytes` at `t_ns` nanoseconds after the start (earlier times
    /// count in second 0; times past [`MAX_SECONDS`] are ignored).
    pub fn add(&mut self, t_ns: i128, bytes: usize) {
        let sec = (t_ns.max(0) / 1_000_000_000) as usize;
        if sec >= MAX_SECONDS {
            return;
        }
        if self.bytes.len() <= sec {
            self.bytes.resize(sec + 1, 0);
            self.packets.resize(sec + 1, 0);
        }
        self.bytes[sec] += bytes as u64;
        self.packets[sec] += 1;
    }

    /// Throughput per second in bit/s: 8·Δbytes/Δt with Δt = 1 s.
    pub fn bits_per_second(&self) -> Vec<f64> {
        self.bytes.iter().map(|b| 8.0 * *b as f64).collect()
    }
}

/// What one receiver saw of one direction's media.
#[derive(Debug, Clone, Default)]
pub struct ReceiverStats {
    seen: Vec<u64>,
    /// Distinct media packets received.
    pub unique: u64,
    /// Packets received again.
    pub duplicates: u64,
    /// Packets that arrived after a packet with a higher sequence number.
    pub reordered: u64,
    /// Packets with a sequence number above [`MAX_TRACKED_SEQ`].
    pub out_of_range: u64,
    /// Bytes of media received (payload of the media packets).
    pub bytes: u64,
    highest: Option<u32>,
    jitter: Jitter,
    /// One-way delay of each distinct packet, milliseconds.
    pub delays_ms: Vec<f64>,
    delay_stride: usize,
    delay_count: usize,
    /// Arrival time of the first media packet, ns.
    pub first_arrival_ns: Option<u64>,
    /// Arrival time of the last media packet, ns.
    pub last_arrival_ns: Option<u64>,
    /// Received bytes per second since the media start.
    pub per_second: PerSecond,
    /// RFC 3550 jitter at the end of each second (ms), same indices.
    pub jitter_per_second_ms: Vec<f64>,
    /// Loss indicator sequence helpers for BurstR: transitions counted when
    /// the call ends (see [`burst_ratio`]).
    media_start_ns: u64,
}

impl ReceiverStats {
    /// Statistics whose per-second buckets start at `media_start_ns`.
    pub fn new(media_start_ns: u64) -> Self {
        ReceiverStats {
            delay_stride: 1,
            media_start_ns,
            ..Self::default()
        }
    }

    /// Records a media packet (`len` bytes on the wire payload) sent at
    /// `send_ns` and received at `arrival_ns`.
    pub fn on_packet(&mut self, seq: u32, send_ns: u64, arrival_ns: u64, len: usize) {
        if seq >= MAX_TRACKED_SEQ {
            self.out_of_range += 1;
            return;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.unique += 1;
        self.bytes += len as u64;
        match self.highest {
            Some(h) if seq < h => self.reordered += 1,
            _ => self.highest = Some(seq),
        }
        self.jitter.update(send_ns as f64, arrival_ns as f64);
        self.delay_count += 1;
        if self.delay_count.is_multiple_of(self.delay_stride) {
            let d = (arrival_ns as f64 - send_ns as f64) / 1e6;
            self.delays_ms.push(d);
            if self.delays_ms.len() >= MAX_DELAY_SAMPLES {
                let kept: Vec<f64> = self.delays_ms.iter().copied().step_by(2).collect();
                self.delays_ms = kept;
                self.delay_stride *= 2;
            }
        }
        self.first_arrival_ns.get_or_insert(arrival_ns);
        self.last_arrival_ns = Some(arrival_ns);
        let t = i128::from(arrival_ns) - i128::from(self.media_start_ns);
        self.per_second.add(t, len);
        let sec = self.per_second.bytes.len();
        if self.jitter_per_second_ms.len() < sec {
            let last = self.jitter_per_second_ms.last().copied().unwrap_or(0.0);
            self.jitter_per_second_ms.resize(sec, last);
        }
        if let Some(j) = self.jitter_per_second_ms.last_mut() {
            *j = self.jitter.value() / 1e6;
        }
    }

    /// Whether packet `seq` was received.
    pub fn received(&self, seq: u32) -> bool {
        let word = (seq / 64) as usize;
        self.seen
            .get(word)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// RFC 3550 jitter now, milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter.value() / 1e6
    }

    /// Packets lost out of `sent` (the sender's count: both agents live in
    /// one process, so the lab knows it exactly).
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.unique)
    }

    /// Loss in percent of `sent`; 0 when nothing was sent.
    pub fn loss_pct(&self, sent: u64) -> f64 {
        if sent == 0 {
            0.0
        } else {
            100.0 * self.lost(sent) as f64 / sent as f64
        }
    }

    /// The ITU-T G.107 burst ratio of the loss pattern over sequence numbers
    /// `0..sent`; see [`burst_ratio`].
    pub fn burst_ratio(&self, sent: u32) -> f64 {
        burst_ratio((0..sent.min(MAX_TRACKED_SEQ)).map(|s| !self.received(s)))
    }
}

/// ITU-T G.107 BurstR from a loss indicator sequence (true = lost):
/// with p = P(lost | previous received) and q = P(received | previous lost)
/// of the two-state Markov model, BurstR = 1/(p + q). Random loss gives
/// about 1, bursty loss more. Returns 1 when there is no loss or too little
/// data to estimate, and never less than 1 (a loss pattern more spread than
/// random is treated as random, which is what G.107 assumes for BurstR < 1
/// in practice).
pub fn burst_ratio(lost: impl IntoIterator<Item = bool>) -> f64 {
    let (mut rr, mut rl, mut lr, mut ll) = (0u64, 0u64, 0u64, 0u64);
    let mut prev: Option<bool> = None;
    for l in lost {
        match (prev, l) {
            (Some(false), false) => rr += 1,
            (Some(false), true) => rl += 1,
            (Some(true), false) => lr += 1,
            (Some(true), true) => ll += 1,
            (None, _) => {}
        }
        prev = Some(l);
    }
    if rl == 0 || rr + rl == 0 || lr + ll == 0 {
        return 1.0;
    }
    let p = rl as f64 / (rr + rl) as f64;
    let q = lr as f64 / (lr + ll) as f64;
    if p + q <= 0.0 {
        return 1.0;
    }
    (1.0 / (p + q)).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert!((percentile(&v, 95.0).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
    }

    #[test]
    fn duplicates_and_reordering() {
        let mut r = ReceiverStats::new(0);
        for (seq, at) in [(0u32, 10u64), (2, 20), (1, 30), (2, 40), (3, 50)] {
            r.on_packet(seq, 0, at, 100);
        }
        assert_eq!(r.unique, 4);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.reordered, 1);
        assert_eq!(r.lost(5), 1);
        assert!((r.loss_pct(5) - 20.0).abs() < 1e-12);
        assert_eq!(r.bytes, 400);
        r.on_packet(MAX_TRACKED_SEQ, 0, 60, 100);
        assert_eq!(r.out_of_range, 1);
    }

    #[test]
    fn per_second_buckets() {
        let mut p = PerSecond::default();
        p.add(-5, 10);
        p.add(999_999_999, 10);
        p.add(1_000_000_000, 30);
        assert_eq!(p.bytes, vec![20, 30]);
        assert_eq!(p.bits_per_second(), vec![160.0, 240.0]);
    }

    #[test]
    fn burst_ratio_random_and_bursty() {
        assert_eq!(burst_ratio([false; 10]), 1.0);
        // One burst of 10 in 100: p = 1/89, q = 1/10 → BurstR ≈ 9.
        let seq = (0..100).map(|i| (40..50).contains(&i));
        let b = burst_ratio(seq);
        assert!((b - 1.0 / (1.0 / 89.0 + 0.1)).abs() < 1e-9, "{b}");
    }
}

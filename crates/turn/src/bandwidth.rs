//! Byte-rate token buckets for relayed data (coturn's `max-bps` per
//! allocation and `bps-capacity` in total).
//!
//! A [`ByteBucket`] holds at most [`BURST`] worth of its rate (100 ms) and
//! refills continuously. A packet passes while the bucket is not empty and
//! takes its whole length, so the bucket may go into debt by up to one
//! packet: a packet larger than the burst still passes when the bucket is
//! full, and over any interval `T` the bytes passed are at most
//! `rate × (T + 100 ms)` plus one packet. A dropped packet costs nothing.
//!
//! The rate is not stored in the bucket but passed to every call, so a
//! reloaded rate applies at once to every live bucket. Rate 0 means no
//! limit (callers skip the bucket). Arithmetic is integer: tokens are kept in
//! byte-nanoseconds per second (a byte is 10⁹ units), with no drift and no
//! allocation.

use std::time::{Duration, Instant};

/// How much of its rate a bucket holds when full.
pub const BURST: Duration = Duration::from_millis(100);
/// The largest accepted rate in bytes per second (100 Gbit/s): keeps the
/// fixed-point arithmetic inside `i64`.
pub const MAX_RATE: u64 = 12_500_000_000;
/// The least a paced stream moves at once (see [`ByteBucket::available`]).
pub const STREAM_CHUNK: u64 = 1200;
/// Units per byte.
const UNIT: i64 = 1_000_000_000;

/// One token bucket of bytes; see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteBucket {
    /// Tokens in units of 1/[`UNIT`] byte; negative is debt.
    units: i64,
    /// When `units` was last brought up to date (`None`: never used, full).
    last: Option<Instant>,
}

impl Default for ByteBucket {
    fn default() -> Self {
        Self::new()
    }
}

impl ByteBucket {
    /// A full bucket.
    pub const fn new() -> Self {
        ByteBucket {
            units: 0,
            last: None,
        }
    }

    fn capacity(rate: u64) -> i64 {
        // rate ≤ MAX_RATE: 1.25e10 × 1e8 ns = 1.25e18 < i64::MAX.
        let rate = rate.min(MAX_RATE) as i64;
        rate * BURST.as_nanos() as i64
    }

    /// Brings the tokens up to `now` at `rate` bytes per second; returns
    /// whether the bucket has tokens (may pass a packet).
    fn refill(&mut self, now: Instant, rate: u64) -> bool {
        let cap = Self::capacity(rate);
        self.units = match self.last {
            None => cap,
            Some(last) => {
                let ns = now.saturating_duration_since(last).as_nanos();
                let ns = i64::try_from(ns).unwrap_or(i64::MAX);
                let rate = rate.min(MAX_RATE) as i64;
                self.units.saturating_add(rate.saturating_mul(ns)).min(cap)
            }
        };
        self.last = Some(now);
        self.units > 0
    }

    fn take(&mut self, len: usize) {
        let cost = i64::try_from(len).unwrap_or(i64::MAX).saturating_mul(UNIT);
        self.units = self.units.saturating_sub(cost);
    }

    /// Whether a packet of `len` bytes may pass at `now` under `rate` bytes
    /// per second (0: no limit); if so, its bytes are taken.
    pub fn admit(&mut self, now: Instant, rate: u64, len: usize) -> bool {
        if rate == 0 {
            return true;
        }
        if !self.refill(now, rate) {
            return false;
        }
        self.take(len);
        true
    }
}

impl ByteBucket {
    /// For streams, which are paced rather than dropped: the bytes that may
    /// be moved now (at least 1; `u64::MAX` without limit), or how long to
    /// wait until some may. Moved bytes are then taken with
    /// [`consume`](Self::consume).
    pub fn available(&mut self, now: Instant, rate: u64) -> Result<u64, Duration> {
        if rate == 0 {
            return Ok(u64::MAX);
        }
        self.refill(now, rate);
        // Wait for a chunk (or the whole burst if smaller), not a byte: a
        // paced stream wakes up at most rate / STREAM_CHUNK times a second.
        let chunk = Self::capacity(rate).min(STREAM_CHUNK as i64 * UNIT);
        if self.units >= chunk {
            return Ok((self.units as u64) / UNIT as u64);
        }
        let rate = rate.min(MAX_RATE);
        let deficit = (chunk - self.units) as u64;
        Err(Duration::from_nanos(deficit / rate + 1))
    }

    /// Takes `len` bytes moved at `now` (streams; see [`available`](Self::available)).
    pub fn consume(&mut self, now: Instant, rate: u64, len: usize) {
        if rate != 0 {
            self.refill(now, rate);
            self.take(len);
        }
    }
}

/// Which limit dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The allocation's own rate.
    Allocation,
    /// The relay's total rate.
    Total,
}

/// Admits a packet of `len` bytes through two buckets at once: the
/// allocation's (`rate_one`) and the total (`rate_all`). Either both take
/// the bytes or neither does.
pub fn admit_both(
    now: Instant,
    one: &mut ByteBucket,
    rate_one: u64,
    all: &mut ByteBucket,
    rate_all: u64,
    len: usize,
) -> Result<(), Exceeded> {
    if rate_one != 0 && !one.refill(now, rate_one) {
        return Err(Exceeded::Allocation);
    }
    if rate_all != 0 && !all.refill(now, rate_all) {
        return Err(Exceeded::Total);
    }
    if rate_one != 0 {
        one.take(len);
    }
    if rate_all != 0 {
        all.take(len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers `len`-byte packets every `every` for `dur` of simulated time;
    /// returns the bytes passed.
    fn offer(rate: u64, len: usize, every: Duration, dur: Duration) -> u64 {
        let t0 = Instant::now();
        let mut b = ByteBucket::new();
        let mut passed = 0;
        let n = (dur.as_nanos() / every.as_nanos()) as u32;
        for i in 0..n {
            if b.admit(t0 + every * i, rate, len) {
                passed += len as u64;
            }
        }
        passed
    }

    #[test]
    fn above_the_cap_the_rate_is_held() {
        // 20 kB/s, 1200-byte packets every 5 ms (240 kB/s offered), 10 s.
        let passed = offer(
            20_000,
            1200,
            Duration::from_millis(5),
            Duration::from_secs(10),
        );
        let bound = 20_000 * 10 + 2_000 + 1200;
        assert!(passed <= bound, "{passed} > {bound}");
        assert!(
            passed >= 20_000 * 10 - 2400,
            "{passed}: the cap is too strict"
        );
    }

    #[test]
    fn under_the_cap_nothing_is_dropped() {
        // 1200 bytes every 100 ms = 12 kB/s under a 20 kB/s cap.
        let passed = offer(
            20_000,
            1200,
            Duration::from_millis(100),
            Duration::from_secs(30),
        );
        assert_eq!(passed, 1200 * 300);
    }

    #[test]
    fn zero_is_unlimited() {
        let passed = offer(0, 1200, Duration::from_micros(1), Duration::from_millis(10));
        assert_eq!(passed, 1200 * 10_000);
    }

    #[test]
    fn a_packet_larger_than_the_burst_passes_when_full() {
        let t0 = Instant::now();
        let mut b = ByteBucket::new();
        // 1000 B/s holds 100 bytes; a 1500-byte packet passes into debt.
        assert!(b.admit(t0, 1000, 1500));
        assert!(!b.admit(t0 + Duration::from_millis(100), 1000, 1));
        // 1.4 s of debt to repay, then it passes again.
        assert!(!b.admit(t0 + Duration::from_millis(1400), 1000, 1));
        assert!(b.admit(t0 + Duration::from_millis(1600), 1000, 1));
    }

    #[test]
    fn a_long_pause_fills_only_the_burst() {
        let t0 = Instant::now();
        let mut b = ByteBucket::new();
        assert!(b.admit(t0, 10_000, 1000)); // holds 1000: now empty
        let t1 = t0 + Duration::from_secs(3600);
        assert!(b.admit(t1, 10_000, 1000));
        assert!(!b.admit(t1, 10_000, 1));
    }

    #[test]
    fn both_buckets_or_neither() {
        let t0 = Instant::now();
        let (mut one, mut all) = (ByteBucket::new(), ByteBucket::new());
        // The total (1000 B/s, 100 bytes) runs out first.
        assert_eq!(
            admit_both(t0, &mut one, 10_000, &mut all, 1000, 500),
            Ok(())
        );
        assert_eq!(
            admit_both(t0, &mut one, 10_000, &mut all, 1000, 500),
            Err(Exceeded::Total)
        );
        // The allocation's bucket was not charged for the refused packet:
        // 1000 - 500 = 500 bytes left, so 500 more pass it alone.
        assert!(one.admit(t0, 10_000, 500));
        assert!(!one.admit(t0, 10_000, 1));
        assert_eq!(
            admit_both(t0, &mut one, 10_000, &mut all, 0, 1),
            Err(Exceeded::Allocation)
        );
    }

    #[test]
    fn streams_are_paced() {
        // 10 kB/s holds 1000 bytes: a stream moves them, then waits.
        let t0 = Instant::now();
        let mut b = ByteBucket::new();
        assert_eq!(b.available(t0, 0), Ok(u64::MAX));
        assert_eq!(b.available(t0, 10_000), Ok(1000));
        // 500 bytes of debt, and the next chunk is the whole 1000-byte
        // burst: 150 ms.
        b.consume(t0, 10_000, 1500);
        let wait = b.available(t0, 10_000).unwrap_err();
        assert_eq!(wait, Duration::from_millis(150) + Duration::from_nanos(1));
        assert_eq!(b.available(t0 + wait, 10_000), Ok(1000));
        // At 1 MB/s (100 kB burst) a stream waits for 1200 bytes.
        let mut fast = ByteBucket::new();
        fast.consume(t0, 1_000_000, 100_000);
        assert_eq!(
            fast.available(t0, 1_000_000),
            Err(Duration::from_micros(1200) + Duration::from_nanos(1))
        );
        // Paced for 10 s of simulated time, it moves 10 kB/s.
        let (mut t, mut moved) = (t0 + wait, 0u64);
        let end = t + Duration::from_secs(10);
        for _ in 0..100_000 {
            if t >= end {
                break;
            }
            match b.available(t, 10_000) {
                Ok(n) => {
                    let n = n.min(4096);
                    b.consume(t, 10_000, n as usize);
                    moved += n;
                }
                Err(w) => t += w,
            }
        }
        assert!((99_000..=101_200).contains(&moved), "{moved}");
    }

    #[test]
    fn the_highest_rate_does_not_overflow() {
        let t0 = Instant::now();
        let mut b = ByteBucket::new();
        for i in 0..1000u32 {
            b.admit(t0 + Duration::from_secs(u64::from(i)), u64::MAX, 65_535);
        }
        assert!(b.admit(t0 + Duration::from_secs(2000), MAX_RATE, usize::MAX));
    }
}

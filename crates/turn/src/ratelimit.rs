//! Token buckets per source for unauthenticated answers (Binding responses,
//! 401 challenges), so the relay cannot be used as a reflection amplifier.
//!
//! Each source has a bucket of `burst` tokens refilled at `rate_per_sec`; an
//! answer takes one token. IPv4 sources are keyed by address, IPv6 sources by
//! their /64 (a host rotating addresses inside its /64 shares one bucket);
//! IPv4-mapped IPv6 sources count as IPv4.
//!
//! The table holds at most `max_sources` buckets. When it is full, a new
//! source first triggers a sweep that drops every bucket that has refilled
//! completely (such a bucket says nothing a fresh one would not); if nothing
//! can be dropped the new source is refused, not added.
//!
//! ## Cost
//! A known source costs O(1). A sweep costs O(`max_sources`), and one runs
//! only when the table is full and either `max_sources / 8` new sources have
//! arrived (been added or refused) since the last sweep, or a full refill
//! period (`burst / rate_per_sec`) has passed since it. So a sweep is paid
//! for by at least `max_sources / 8` calls (amortized O(1) per call) or
//! happens at most once per refill period; a flood of new sources cannot
//! make every call scan the table.
//!
//! Tokens are counted in billionths (one per nanosecond at one token per
//! second), so refill is exact integer arithmetic with no drift.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

/// Fixed-point scale: units per token.
const UNIT: u64 = 1_000_000_000;

/// The key of a source: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(a) => Source::V4(u32::from(a)),
            IpAddr::V6(a) => Source::V6((u128::from(a) >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in units of 1/[`UNIT`], at most `burst * UNIT`.
    units: u64,
    /// When `units` was last brought up to date.
    last: Instant,
}

/// Per-source token buckets with a bounded table; see the
/// [module documentation](self).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate_per_sec: u32,
    burst: u32,
    max_sources: usize,
    buckets: FxHashMap<Source, Bucket>,
    dropped: u64,
    /// When the last sweep ran, if ever.
    last_sweep: Option<Instant>,
    /// New sources (added or refused) since the last sweep.
    arrivals_since_sweep: usize,
    /// Sweeps run so far.
    sweeps: u64,
}

impl RateLimiter {
    /// A limiter allowing `burst` answers at once and `rate_per_sec` a second
    /// after that, per source, tracking at most `max_sources` sources.
    ///
    /// `burst == 0` or `max_sources == 0` refuses everything; `rate_per_sec
    /// == 0` allows each source `burst` answers in total while it is tracked.
    pub fn new(rate_per_sec: u32, burst: u32, max_sources: usize) -> Self {
        RateLimiter {
            rate_per_sec,
            burst,
            max_sources,
            buckets: FxHashMap::default(),
            dropped: 0,
            last_sweep: None,
            arrivals_since_sweep: 0,
            sweeps: 0,
        }
    }

    /// Whether `ip` may get an answer at `now`; takes a token if so, counts a
    /// refusal if not. Time going backwards refills nothing.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let source = Source::of(ip);
        let (rate, cap) = (self.rate_per_sec, self.capacity());
        let allowed = match self.buckets.get_mut(&source) {
            Some(bucket) => {
                refill(bucket, now, rate, cap);
                take(bucket)
            }
            None => self.admit(source, now),
        };
        if !allowed {
            self.dropped += 1;
        }
        allowed
    }

    /// The number of refusals so far (empty buckets and full table).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The number of sources tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// A full bucket, in units.
    fn capacity(&self) -> u64 {
        u64::from(self.burst) * UNIT
    }

    /// Time for an empty bucket to refill; `None` if it never does.
    fn refill_period(&self) -> Option<Duration> {
        if self.rate_per_sec == 0 {
            return None;
        }
        let nanos = u128::from(self.burst) * u128::from(UNIT) / u128::from(self.rate_per_sec);
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    /// A source seen for the first time: add it with a full bucket minus the
    /// token it takes now, if there is room (after a sweep if one is due).
    fn admit(&mut self, source: Source, now: Instant) -> bool {
        if self.burst == 0 {
            return false;
        }
        self.arrivals_since_sweep = self.arrivals_since_sweep.saturating_add(1);
        if self.buckets.len() >= self.max_sources && self.sweep_due(now) {
            self.sweep(now);
        }
        if self.buckets.len() >= self.max_sources {
            return false;
        }
        let units = self.capacity() - UNIT;
        self.buckets.insert(source, Bucket { units, last: now });
        true
    }

    fn sweep_due(&self, now: Instant) -> bool {
        let Some(last) = self.last_sweep else {
            return true;
        };
        let by_arrivals = self.arrivals_since_sweep >= (self.max_sources / 8).max(1);
        let by_time = self
            .refill_period()
            .is_some_and(|p| now.saturating_duration_since(last) >= p);
        by_arrivals || by_time
    }

    /// Drops every bucket that is full at `now`.
    fn sweep(&mut self, now: Instant) {
        let (rate, cap) = (self.rate_per_sec, self.capacity());
        self.buckets.retain(|_, b| {
            refill(b, now, rate, cap);
            b.units < cap
        });
        self.last_sweep = Some(now);
        self.arrivals_since_sweep = 0;
        self.sweeps += 1;
    }
}

/// Brings `bucket` up to `now` at `rate` tokens a second, capped at `cap`.
fn refill(bucket: &mut Bucket, now: Instant, rate: u32, cap: u64) {
    let Some(elapsed) = now.checked_duration_since(bucket.last) else {
        return;
    };
    // One unit per nanosecond per token-per-second.
    let add = elapsed.as_nanos().saturating_mul(u128::from(rate));
    let units = u128::from(bucket.units)
        .saturating_add(add)
        .min(u128::from(cap));
    bucket.units = u64::try_from(units).unwrap_or(cap);
    bucket.last = now;
}

/// Takes one token if there is one.
fn take(bucket: &mut Bucket) -> bool {
    match bucket.units.checked_sub(UNIT) {
        Some(rest) => {
            bucket.units = rest;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_refill_at_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10, 5, 100);
        let a = ip("203.0.113.1");
        for i in 0..5 {
            assert!(rl.allow(a, t0), "burst #{i}");
        }
        assert!(!rl.allow(a, t0));
        assert_eq!(rl.dropped(), 1);
        // 10/s: one token per 100 ms.
        let ms = Duration::from_millis(1);
        assert!(!rl.allow(a, t0 + ms * 99));
        assert!(rl.allow(a, t0 + ms * 100));
        assert!(!rl.allow(a, t0 + ms * 100));
        // Partial refills accumulate exactly: 99 ms + 1 ms = one token.
        assert!(!rl.allow(a, t0 + ms * 199));
        assert!(rl.allow(a, t0 + ms * 200));
        // A long pause refills to `burst`, not beyond.
        let later = t0 + Duration::from_secs(3600);
        let granted = (0..20).filter(|_| rl.allow(a, later)).count();
        assert_eq!(granted, 5);
        assert_eq!(rl.dropped(), 4 + 15);
        // Time going backwards refills nothing and does not panic.
        assert!(!rl.allow(a, t0));
    }

    #[test]
    fn sustained_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(50, 1, 10);
        let a = ip("198.51.100.1");
        // One request per millisecond for 10 s: the burst, then one per 20 ms.
        let granted = (0..10_000)
            .filter(|i| rl.allow(a, t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(granted, 500);
        assert_eq!(rl.dropped(), 10_000 - 500);
    }

    #[test]
    fn sources_are_independent() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1, 2, 100);
        for s in [
            "192.0.2.1",
            "192.0.2.2",
            "2001:db8:0:1::1",
            "2001:db8:0:2::1",
        ] {
            assert!(rl.allow(ip(s), t0), "{s}");
            assert!(rl.allow(ip(s), t0), "{s}");
            assert!(!rl.allow(ip(s), t0), "{s}");
        }
        assert_eq!(rl.len(), 4);
        assert_eq!(rl.dropped(), 4);
    }

    #[test]
    fn ipv6_grouped_by_64_and_mapped_as_v4() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1, 3, 100);
        assert!(rl.allow(ip("2001:db8:1:2::1"), t0));
        assert!(rl.allow(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0));
        assert!(rl.allow(ip("2001:db8:1:2:dead:beef::7"), t0));
        assert!(!rl.allow(ip("2001:db8:1:2::99"), t0));
        assert!(rl.allow(ip("2001:db8:1:3::1"), t0));
        assert!(rl.allow(ip("192.0.2.9"), t0));
        assert!(rl.allow(ip("::ffff:192.0.2.9"), t0));
        assert!(rl.allow(ip("192.0.2.9"), t0));
        assert!(!rl.allow(ip("::ffff:192.0.2.9"), t0));
        assert_eq!(rl.len(), 3);
    }

    #[test]
    fn table_bound_under_flood() {
        let t0 = Instant::now();
        let max = 1_000;
        let mut rl = RateLimiter::new(1, 10, max);
        let mut granted = 0;
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            let src = if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
            } else {
                IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64))
            };
            if rl.allow(src, now) {
                granted += 1;
            }
            assert!(rl.len() <= max);
        }
        // All within 0.1 s: no bucket refills, so nothing can be evicted.
        assert_eq!(granted, max);
        assert_eq!(rl.dropped(), 100_000 - max as u64);
        // After a refill period (10 s) every bucket is full: a sweep runs
        // and evicts them all.
        let later = t0 + Duration::from_secs(20);
        assert!(rl.allow(ip("203.0.113.77"), later));
        assert_eq!(rl.len(), 1);
    }

    #[test]
    fn eviction_keeps_busy_sources() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1, 2, 2);
        let (busy, idle, new) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        assert!(rl.allow(busy, t0));
        assert!(rl.allow(busy, t0));
        assert!(rl.allow(idle, t0));
        // Table full, nothing refilled yet: refused and counted.
        assert!(!rl.allow(new, t0));
        assert_eq!(rl.dropped(), 1);
        // After 1 s the idle bucket is full, the busy one is not.
        let t1 = t0 + Duration::from_secs(1);
        assert!(rl.allow(new, t1));
        assert_eq!(rl.len(), 2);
        // The busy source kept its state: one token refilled, then empty.
        assert!(rl.allow(busy, t1));
        assert!(!rl.allow(busy, t1));
    }

    #[test]
    fn sweeps_are_amortized() {
        // With the table full of non-full buckets, a flood of new sources
        // sweeps once per max/8 arrivals, not once per arrival.
        let t0 = Instant::now();
        let max = 800;
        let mut rl = RateLimiter::new(1, 1000, max);
        for i in 0..max as u32 {
            assert!(rl.allow(IpAddr::V4(Ipv4Addr::from(i)), t0));
        }
        assert_eq!(rl.sweeps, 0);
        for i in 0..10_000u32 {
            assert!(!rl.allow(IpAddr::V4(Ipv4Addr::from(1_000_000 + i)), t0));
        }
        // The first full-table arrival sweeps, then one sweep per 100.
        assert_eq!(rl.sweeps, 1 + 9_999 / (max as u64 / 8));
        assert_eq!(rl.len(), max);
    }

    #[test]
    fn degenerate_settings() {
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let mut none = RateLimiter::new(10, 0, 10);
        assert!(!none.allow(a, t0));
        assert!(none.is_empty());
        let mut no_table = RateLimiter::new(10, 10, 0);
        assert!(!no_table.allow(a, t0));
        assert_eq!(no_table.dropped(), 1);
        let mut no_refill = RateLimiter::new(0, 2, 10);
        assert!(no_refill.allow(a, t0));
        assert!(no_refill.allow(a, t0));
        assert!(!no_refill.allow(a, t0 + Duration::from_secs(86_400)));
        let mut huge = RateLimiter::new(u32::MAX, u32::MAX, 10);
        assert!(huge.allow(a, t0));
        assert!(huge.allow(a, t0 + Duration::from_secs(1 << 40)));
    }
}

//! Token buckets: per connection (messages) and per client address (joins).
//! Time is an argument, so the tests run on simulated time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely (the client calmed down).
    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Most addresses tracked at once; beyond it, idle (full) buckets are
/// dropped, and if none is idle the join is refused (fail closed).
const MAX_TRACKED: usize = 100_000;

/// Joins per minute per client address. IPv6 addresses count per /64, the
/// smallest block a single client usually holds.
#[derive(Debug)]
pub(crate) struct JoinLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl JoinLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        JoinLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one join from `ip`; false if over the limit.
    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let key = bucket_key(ip);
        let rate = f64::from(self.per_minute) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| !b.is_full(now));
            if buckets.len() >= MAX_TRACKED {
                return false;
            }
        }
        buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(rate, self.per_minute, now))
            .take(now)
    }

    /// Drops the buckets of addresses that have been quiet for a minute.
    pub(crate) fn prune(&self, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|_, b| !b.is_full(now));
    }
}

pub(crate) fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// How often [`JoinLimiter::prune`] should run.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50.0, 100, t0);
        for _ in 0..100 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(20)));
        assert!(!b.take(t0 + Duration::from_millis(20)));
        assert!(!b.is_full(t0 + Duration::from_secs(1)));
        assert!(b.is_full(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn joins_per_ip_and_per_64() {
        let t0 = Instant::now();
        let l = JoinLimiter::new(20);
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..20 {
            assert!(l.allow(a, t0));
        }
        assert!(!l.allow(a, t0));
        assert!(l.allow(b, t0));
        assert!(l.allow(a, t0 + Duration::from_secs(3)));
        let v6a: IpAddr = "2001:db8::1".parse().unwrap_or(a);
        let v6b: IpAddr = "2001:db8::ffff:2".parse().unwrap_or(a);
        for _ in 0..20 {
            assert!(l.allow(v6a, t0));
        }
        assert!(!l.allow(v6b, t0));
        l.prune(t0 + Duration::from_secs(61));
        assert!(l.allow(v6b, t0 + Duration::from_secs(61)));
    }
}

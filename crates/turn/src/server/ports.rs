//! Relay port selection: a bitmap of ports in use per relay address family,
//! with even-port selection and reservations (RFC 8656 §7.2, §14.6).

use std::ops::RangeInclusive;

use rand::Rng;

/// Ports in use on one relay address.
#[derive(Debug, Clone)]
pub(crate) struct PortPool {
    range: RangeInclusive<u16>,
    used: Vec<u64>,
    in_use: usize,
}

impl PortPool {
    pub(crate) fn new(range: RangeInclusive<u16>) -> Self {
        PortPool {
            range,
            used: vec![0; 1024],
            in_use: 0,
        }
    }

    fn is_used(&self, p: u16) -> bool {
        self.used[usize::from(p >> 6)] & (1 << (p & 63)) != 0
    }

    /// Marks a port used; false if it already was.
    pub(crate) fn take(&mut self, p: u16) -> bool {
        if !self.range.contains(&p) || self.is_used(p) {
            return false;
        }
        self.used[usize::from(p >> 6)] |= 1 << (p & 63);
        self.in_use += 1;
        true
    }

    pub(crate) fn release(&mut self, p: u16) {
        if self.is_used(p) {
            self.used[usize::from(p >> 6)] &= !(1 << (p & 63));
            self.in_use -= 1;
        }
    }

    /// Picks and takes a free port: random first, then a scan from a random
    /// start. With `even`, an even port; with `pair`, also takes port + 1.
    pub(crate) fn pick(&mut self, rng: &mut impl Rng, even: bool, pair: bool) -> Option<u16> {
        let lo = u32::from(*self.range.start());
        let hi = u32::from(*self.range.end());
        if lo > hi {
            return None;
        }
        let n = hi - lo + 1;
        let ok = |s: &Self, p: u32| -> bool {
            let Ok(p16) = u16::try_from(p) else {
                return false;
            };
            if even && p16 % 2 != 0 {
                return false;
            }
            if s.is_used(p16) || !s.range.contains(&p16) {
                return false;
            }
            if pair {
                let Some(q) = p16.checked_add(1) else {
                    return false;
                };
                if s.is_used(q) || !s.range.contains(&q) {
                    return false;
                }
            }
            true
        };
        let mut found = None;
        for _ in 0..32 {
            let p = lo + rng.gen_range(0..n);
            if ok(self, p) {
                found = Some(p);
                break;
            }
        }
        if found.is_none() {
            let start = rng.gen_range(0..n);
            found = (0..n).map(|i| lo + (start + i) % n).find(|&p| ok(self, p));
        }
        let p = u16::try_from(found?).ok()?;
        self.take(p);
        if pair {
            self.take(p + 1);
        }
        Some(p)
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_within_range_until_exhausted() {
        let mut rng = rand::thread_rng();
        let mut pool = PortPool::new(50000..=50009);
        let mut got = Vec::new();
        while let Some(p) = pool.pick(&mut rng, false, false) {
            assert!((50000..=50009).contains(&p));
            got.push(p);
            assert!(got.len() <= 10);
        }
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 10);
        pool.release(50003);
        assert_eq!(pool.pick(&mut rng, false, false), Some(50003));
    }

    #[test]
    fn even_and_pairs() {
        let mut rng = rand::thread_rng();
        let mut pool = PortPool::new(50001..=50006);
        let p = pool.pick(&mut rng, true, true).unwrap();
        assert_eq!(p % 2, 0);
        assert_eq!(pool.in_use(), 2);
        let q = pool.pick(&mut rng, true, true).unwrap();
        assert_ne!(p, q);
        // 50006 even but 50007 outside the range: no third pair.
        assert_eq!(pool.pick(&mut rng, true, true), None);
        assert_eq!(pool.pick(&mut rng, true, false), Some(50006));
    }

    #[test]
    fn empty_range() {
        let mut rng = rand::thread_rng();
        #[allow(clippy::reversed_empty_ranges)]
        let mut pool = PortPool::new(10..=9);
        assert_eq!(pool.pick(&mut rng, false, false), None);
    }
}

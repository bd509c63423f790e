//! Relay port selection: a bitmap of ports in use per relay address family,
//! with even-port selection and reservations (RFC 8656 §7.2, §14.6).
//!
//! The bitmap is atomic, so the servers of several shards share one pool:
//! each picks from its own slice of the range (no two shards contend for a
//! port), and any of them may take or give back any port (a RESERVATION-TOKEN
//! redeemed on another shard; the data plane asks whether a relayed
//! address of another shard is in use with one atomic load).

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rand::Rng;

/// Ports in use on one relay address.
#[derive(Debug)]
pub(crate) struct PortPool {
    range: RangeInclusive<u16>,
    used: Box<[AtomicU64]>,
    /// Ports used by RFC 6062 (TCP) allocations: a relayed address of
    /// another shard is a valid peer for allocations of the same protocol only.
    tcp: Box<[AtomicU64]>,
    in_use: AtomicUsize,
}

impl PortPool {
    pub(crate) fn new(range: RangeInclusive<u16>) -> Self {
        PortPool {
            range,
            used: (0..1024).map(|_| AtomicU64::new(0)).collect(),
            tcp: (0..1024).map(|_| AtomicU64::new(0)).collect(),
            in_use: AtomicUsize::new(0),
        }
    }

    /// The bit of port `p`: (word, mask).
    fn bit(p: u16) -> (usize, u64) {
        (usize::from(p >> 6), 1 << (p & 63))
    }

    /// Whether port `p` is taken (by any server sharing this pool) by an
    /// allocation relaying TCP (`tcp`) or UDP.
    pub(crate) fn is_used_by(&self, p: u16, tcp: bool) -> bool {
        let (w, m) = Self::bit(p);
        self.used[w].load(Ordering::Acquire) & m != 0
            && (self.tcp[w].load(Ordering::Relaxed) & m != 0) == tcp
    }

    /// Marks taken port `p` as a TCP (RFC 6062) allocation's.
    pub(crate) fn mark_tcp(&self, p: u16) {
        let (w, m) = Self::bit(p);
        self.tcp[w].fetch_or(m, Ordering::Relaxed);
    }

    /// Marks a port used; false if it already was or is outside the range.
    pub(crate) fn take(&self, p: u16) -> bool {
        if !self.range.contains(&p) {
            return false;
        }
        let (w, m) = Self::bit(p);
        let was = self.used[w].fetch_or(m, Ordering::AcqRel);
        if was & m != 0 {
            return false;
        }
        self.in_use.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub(crate) fn release(&self, p: u16) {
        let (w, m) = Self::bit(p);
        self.tcp[w].fetch_and(!m, Ordering::Relaxed);
        if self.used[w].fetch_and(!m, Ordering::AcqRel) & m != 0 {
            self.in_use.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Picks and takes a free port of `slice` (within the pool's range):
    /// random first, then a scan from a random start. With `even`, an even
    /// port; with `pair`, also takes port + 1 (which may lie just past the
    /// slice).
    pub(crate) fn pick(
        &self,
        rng: &mut impl Rng,
        slice: &RangeInclusive<u16>,
        even: bool,
        pair: bool,
    ) -> Option<u16> {
        let lo = u32::from(*slice.start());
        let hi = u32::from(*slice.end());
        if lo > hi {
            return None;
        }
        let n = hi - lo + 1;
        let try_take = |p: u32| -> bool {
            let Ok(p16) = u16::try_from(p) else {
                return false;
            };
            if even && p16 % 2 != 0 {
                return false;
            }
            if !self.take(p16) {
                return false;
            }
            if pair {
                match p16.checked_add(1) {
                    Some(q) if self.take(q) => {}
                    _ => {
                        self.release(p16);
                        return false;
                    }
                }
            }
            true
        };
        for _ in 0..32 {
            let p = lo + rng.gen_range(0..n);
            if try_take(p) {
                return u16::try_from(p).ok();
            }
        }
        let start = rng.gen_range(0..n);
        (0..n)
            .map(|i| lo + (start + i) % n)
            .find(|&p| try_take(p))
            .and_then(|p| u16::try_from(p).ok())
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_within_range_until_exhausted() {
        let mut rng = rand::thread_rng();
        let r = 50000..=50009;
        let pool = PortPool::new(r.clone());
        let mut got = Vec::new();
        while let Some(p) = pool.pick(&mut rng, &r, false, false) {
            assert!(r.contains(&p));
            got.push(p);
            assert!(got.len() <= 10);
        }
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 10);
        pool.release(50003);
        assert_eq!(pool.pick(&mut rng, &r, false, false), Some(50003));
    }

    #[test]
    fn even_and_pairs() {
        let mut rng = rand::thread_rng();
        let r = 50001..=50006;
        let pool = PortPool::new(r.clone());
        let p = pool.pick(&mut rng, &r, true, true).unwrap();
        assert_eq!(p % 2, 0);
        assert_eq!(pool.in_use(), 2);
        let q = pool.pick(&mut rng, &r, true, true).unwrap();
        assert_ne!(p, q);
        // 50006 even but 50007 outside the range: no third pair, and the
        // failed attempt took nothing.
        assert_eq!(pool.pick(&mut rng, &r, true, true), None);
        assert_eq!(pool.in_use(), 4);
        assert_eq!(pool.pick(&mut rng, &r, true, false), Some(50006));
    }

    #[test]
    fn empty_range() {
        let mut rng = rand::thread_rng();
        #[allow(clippy::reversed_empty_ranges)]
        let r = 10..=9;
        let pool = PortPool::new(r.clone());
        assert_eq!(pool.pick(&mut rng, &r, false, false), None);
    }

    #[test]
    fn slices_of_one_pool_never_hand_out_a_port_twice() {
        let pool = PortPool::new(50000..=50399);
        let (a, b) = (50000..=50199, 50200..=50399);
        let got: Vec<u16> = std::thread::scope(|s| {
            let hs: Vec<_> = [a, b, 50000..=50399]
                .into_iter()
                .map(|slice| {
                    let pool = &pool;
                    s.spawn(move || {
                        let mut rng = rand::thread_rng();
                        std::iter::from_fn(|| pool.pick(&mut rng, &slice, false, false))
                            .take(400)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((got.len(), sorted.len()), (400, 400));
        assert_eq!(pool.in_use(), 400);
    }
}

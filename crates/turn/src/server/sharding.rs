//! Shards: several servers (one per event loop) serving one relay.
//!
//! Each shard gets a contiguous slice of the relay port range, so a
//! relayed address names its shard by its port, and no two shards ever
//! bind the same port. RFC 6062 CONNECTION-IDs and RESERVATION-TOKENs name
//! their shard too (`id % count == index`), so a driver can hand a
//! ConnectionBind that arrived on another shard's connection to the shard
//! holding the connection (see [`super::Server::connection_bind_shard`]).
//!
//! Data for a relayed address of another shard goes through the kernel (a
//! normal send to that address), data within a shard takes the in-process
//! shortcut ([`super::Destination::Allocation`]).

use std::ops::RangeInclusive;

/// Which shard of how many a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardId {
    /// This shard, `0..count`.
    pub index: u32,
    /// Shards of the relay (at least 1).
    pub count: u32,
}

impl Default for ShardId {
    fn default() -> Self {
        ShardId::ONE
    }
}

impl ShardId {
    /// The only shard of an unsharded relay.
    pub const ONE: ShardId = ShardId { index: 0, count: 1 };

    /// Shard `index` of `count` (`count` at least 1, `index` below it).
    pub fn new(index: u32, count: u32) -> Self {
        let count = count.max(1);
        ShardId {
            index: index.min(count - 1),
            count,
        }
    }

    /// This shard's contiguous slice of `ports` (empty when the range has
    /// fewer ports than there are shards).
    pub fn ports(&self, ports: &RangeInclusive<u16>) -> RangeInclusive<u16> {
        let (lo, hi) = (u32::from(*ports.start()), u32::from(*ports.end()));
        if lo > hi {
            return ports.clone();
        }
        let n = hi - lo + 1;
        let start = lo + n * self.index / self.count;
        let end = lo + n * (self.index + 1) / self.count;
        if end <= start {
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        // Both fit: start <= end - 1 <= hi.
        (start as u16)..=((end - 1) as u16)
    }

    /// The shard whose slice of `ports` holds `port`.
    pub fn of_port(count: u32, ports: &RangeInclusive<u16>, port: u16) -> Option<u32> {
        (0..count.max(1))
            .map(|i| ShardId::new(i, count))
            .find(|s| s.ports(ports).contains(&port))
            .map(|s| s.index)
    }

    /// The shard a connection id or reservation token names.
    pub fn of_id(count: u32, id: u64) -> u32 {
        (id % u64::from(count.max(1))) as u32
    }

    /// `r` changed as little as possible to name this shard (`None` when
    /// that would overflow: draw again).
    pub fn stamp(&self, r: u64) -> Option<u64> {
        let c = u64::from(self.count);
        (r - r % c).checked_add(u64::from(self.index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_contiguous_disjoint_and_cover_the_range() {
        for count in 1..=7u32 {
            let range = 49152..=65535u16;
            let mut next = *range.start();
            for i in 0..count {
                let s = ShardId::new(i, count).ports(&range);
                assert_eq!(*s.start(), next, "shard {i} of {count}");
                assert!(!s.is_empty());
                next = s.end().wrapping_add(1);
                for p in [*s.start(), *s.end()] {
                    assert_eq!(ShardId::of_port(count, &range, p), Some(i));
                }
            }
            assert_eq!(next, 0, "the last slice ends at 65535");
        }
        assert_eq!(ShardId::of_port(2, &(100..=199), 99), None);
    }

    #[test]
    fn small_ranges_leave_some_shards_without_ports() {
        let range = 50000..=50002u16;
        let sizes: Vec<usize> = (0..4)
            .map(|i| ShardId::new(i, 4).ports(&range).count())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 3);
        assert!(sizes.contains(&0));
    }

    #[test]
    fn stamped_ids_name_their_shard() {
        for count in [1u32, 2, 3, 16] {
            for index in 0..count {
                let s = ShardId::new(index, count);
                for r in [0u64, 1, 12345, u64::from(u32::MAX), u64::MAX - 20] {
                    if let Some(id) = s.stamp(r) {
                        assert_eq!(ShardId::of_id(count, id), index);
                    }
                }
            }
        }
        assert_eq!(ShardId::new(2, 3).stamp(u64::MAX), None);
    }
}

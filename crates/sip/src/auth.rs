//! Failed-authentication limits, per address and per account *and*
//! address: an attacker can exhaust its own address's budget, and lock an
//! account for its own address, never for anyone else's.
//!
//! IPv6 addresses count per /64 (one host usually has a whole /64).
//! Bounded: at most [`MAX_TRACKED`] entries per table; when full and
//! nothing can be pruned, new addresses are not tracked (failing open, so
//! filling the table cannot lock everyone out).

use std::collections::HashMap;
use std::net::IpAddr;

/// Entries per table at most.
pub const MAX_TRACKED: usize = 65_536;

/// A fixed-window counter.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    count: u32,
}

/// The failure tables. Time is seconds on the caller's clock.
#[derive(Debug)]
pub struct FailureLimits {
    per_address: HashMap<IpAddr, Window>,
    per_account: HashMap<(String, IpAddr), Window>,
    /// Failures per address per minute before it is refused.
    pub address_limit: u32,
    /// Failures per account and address per 15 minutes before that account
    /// is locked for that address.
    pub account_limit: u32,
}

const ADDRESS_WINDOW: u64 = 60;
const ACCOUNT_WINDOW: u64 = 900;

/// The key an address counts under.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

fn over<K: Eq + std::hash::Hash>(
    map: &HashMap<K, Window>,
    k: &K,
    now: u64,
    win: u64,
    limit: u32,
) -> bool {
    map.get(k)
        .is_some_and(|w| now < w.start.saturating_add(win) && w.count >= limit)
}

fn bump<K: Eq + std::hash::Hash>(map: &mut HashMap<K, Window>, k: K, now: u64, win: u64) {
    if !map.contains_key(&k) && map.len() >= MAX_TRACKED {
        map.retain(|_, w| now < w.start.saturating_add(win));
        if map.len() >= MAX_TRACKED {
            return;
        }
    }
    let w = map.entry(k).or_insert(Window {
        start: now,
        count: 0,
    });
    if now >= w.start.saturating_add(win) {
        *w = Window {
            start: now,
            count: 0,
        };
    }
    w.count = w.count.saturating_add(1);
}

impl FailureLimits {
    pub fn new(address_limit: u32, account_limit: u32) -> FailureLimits {
        FailureLimits {
            per_address: HashMap::new(),
            per_account: HashMap::new(),
            address_limit,
            account_limit,
        }
    }

    /// Whether `ip` has used up its failures.
    pub fn address_blocked(&self, ip: IpAddr, now: u64) -> bool {
        over(
            &self.per_address,
            &address_key(ip),
            now,
            ADDRESS_WINDOW,
            self.address_limit,
        )
    }

    /// Whether `user` is locked for `ip`.
    pub fn account_blocked(&self, user: &str, ip: IpAddr, now: u64) -> bool {
        over(
            &self.per_account,
            &(user.to_string(), address_key(ip)),
            now,
            ACCOUNT_WINDOW,
            self.account_limit,
        )
    }

    /// Counts one failure of `user` from `ip`.
    pub fn failed(&mut self, user: &str, ip: IpAddr, now: u64) {
        let key = address_key(ip);
        bump(&mut self.per_address, key, now, ADDRESS_WINDOW);
        bump(
            &mut self.per_account,
            (user.to_string(), key),
            now,
            ACCOUNT_WINDOW,
        );
    }

    /// Drops windows that ended.
    pub fn prune(&mut self, now: u64) {
        self.per_address
            .retain(|_, w| now < w.start.saturating_add(ADDRESS_WINDOW));
        self.per_account
            .retain(|_, w| now < w.start.saturating_add(ACCOUNT_WINDOW));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_is_per_address() {
        let mut f = FailureLimits::new(10, 3);
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let owner: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..3 {
            assert!(!f.account_blocked("alice", attacker, 100));
            f.failed("alice", attacker, 100);
        }
        assert!(f.account_blocked("alice", attacker, 100));
        assert!(!f.account_blocked("alice", owner, 100));
        assert!(!f.account_blocked("bob", attacker, 100));
        assert!(!f.account_blocked("alice", attacker, 100 + ACCOUNT_WINDOW));
        for i in 0..10 {
            f.failed(&format!("u{i}"), attacker, 100);
        }
        assert!(f.address_blocked(attacker, 101));
        assert!(!f.address_blocked(owner, 101));
        assert!(!f.address_blocked(attacker, 100 + ADDRESS_WINDOW));
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..10 {
            f.failed("x", a, 5);
        }
        assert!(f.address_blocked(b, 5));
        f.prune(100_000);
        assert!(f.per_address.is_empty() && f.per_account.is_empty());
    }
}

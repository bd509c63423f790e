//! Admission: the allocation quotas (per user, per client IP, in total) and
//! the relay port pools, behind one interface.
//!
//! An Allocate request takes its quota share with [`Admission::admit`] —
//! check and take in one step, so an implementation shared by several
//! servers (one per shard, with atomic counters) stays exact under
//! concurrency — and gives it back with [`Admission::release`] when it is
//! refused later or its allocation ends. Relay ports are taken and given
//! back the same way. The server holds nothing of this elsewhere: the
//! counts include allocations still waiting for their sockets.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use rand::Rng;
use rustc_hash::FxHashMap;

use super::ports::PortPool;
use super::Refusal;

/// The quotas one request is admitted under (0 for `per_user`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub per_user: u32,
    pub per_ip: u32,
    pub total: u32,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Admission {
    per_user: FxHashMap<Box<str>, u32>,
    per_ip: FxHashMap<IpAddr, u32>,
    total: u32,
    v4: PortPool,
    v6: PortPool,
}

impl Admission {
    /// Nothing admitted; relay ports from `ports` on each address family.
    pub fn new(ports: RangeInclusive<u16>) -> Self {
        Admission {
            per_user: FxHashMap::default(),
            per_ip: FxHashMap::default(),
            total: 0,
            v4: PortPool::new(ports.clone()),
            v6: PortPool::new(ports),
        }
    }

    /// Takes one share of `user`'s, `ip`'s and the total quota, or refuses
    /// (486) and takes nothing.
    pub fn admit(&mut self, user: &str, ip: IpAddr, q: Quota) -> Result<(), Refusal> {
        let users = self.per_user.get(user).copied().unwrap_or(0);
        let ips = self.per_ip.get(&ip).copied().unwrap_or(0);
        if (q.per_user != 0 && users >= q.per_user) || ips >= q.per_ip || self.total >= q.total {
            return Err(Refusal::Quota);
        }
        *self.per_user.entry(user.into()).or_insert(0) += 1;
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.total += 1;
        Ok(())
    }

    /// Gives back a share taken by [`Admission::admit`].
    pub fn release(&mut self, user: &str, ip: IpAddr) {
        if let Some(n) = self.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Shares admitted and not released.
    #[cfg(test)]
    pub fn admitted(&self) -> u32 {
        self.total
    }

    /// Picks and takes a relay port of one family (see [`PortPool::pick`]).
    pub fn pick_port(
        &mut self,
        rng: &mut impl Rng,
        v6: bool,
        even: bool,
        pair: bool,
    ) -> Option<u16> {
        let pool = if v6 { &mut self.v6 } else { &mut self.v4 };
        pool.pick(rng, even, pair)
    }

    /// Gives back the port of a relay address.
    pub fn release_port(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(_) => self.v4.release(addr.port()),
            SocketAddr::V6(_) => self.v6.release(addr.port()),
        }
    }

    #[cfg(test)]
    pub fn ports_in_use(&self) -> usize {
        self.v4.in_use() + self.v6.in_use()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quota = Quota {
        per_user: 2,
        per_ip: 3,
        total: 4,
    };

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, n])
    }

    #[test]
    fn each_quota_refuses_without_taking() {
        let mut a = Admission::new(50000..=50009);
        assert_eq!(a.admit("u", ip(1), Q), Ok(()));
        assert_eq!(a.admit("u", ip(2), Q), Ok(()));
        assert_eq!(a.admit("u", ip(3), Q), Err(Refusal::Quota), "per user");
        assert_eq!(a.admit("v", ip(1), Q), Ok(()));
        assert_eq!(a.admit("w", ip(1), Q), Ok(()));
        assert_eq!(
            a.admit("x", ip(1), Q),
            Err(Refusal::Quota),
            "per IP and total"
        );
        assert_eq!(a.admit("x", ip(9), Q), Err(Refusal::Quota), "total");
        assert_eq!(a.admitted(), 4);
        a.release("u", ip(2));
        assert_eq!(a.admit("x", ip(9), Q), Ok(()));
        let none = Quota { per_user: 0, ..Q };
        a.release("x", ip(9));
        a.release("w", ip(1));
        assert_eq!(a.admit("u", ip(5), none), Ok(()), "per_user 0 is no limit");
        assert_eq!(a.admitted(), 3);
    }

    #[test]
    fn released_shares_and_ports_return() {
        let mut a = Admission::new(50000..=50001);
        let mut rng = rand::thread_rng();
        for _ in 0..3 {
            assert_eq!(a.admit("u", ip(1), Q), Ok(()));
            a.release("u", ip(1));
        }
        assert_eq!(a.admitted(), 0);
        assert!(a.per_user.is_empty() && a.per_ip.is_empty());
        let p = a.pick_port(&mut rng, false, false, false).unwrap();
        let q = a.pick_port(&mut rng, false, false, false).unwrap();
        assert_eq!(a.pick_port(&mut rng, false, false, false), None);
        assert!(a.pick_port(&mut rng, true, false, false).is_some());
        a.release_port(SocketAddr::from(([10, 0, 0, 1], p)));
        a.release_port(SocketAddr::from(([10, 0, 0, 1], q)));
        assert_eq!(a.ports_in_use(), 1);
    }
}

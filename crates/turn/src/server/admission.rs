//! Admission: the allocation quotas (per user, per client IP, in total) and
//! the relay port pools, behind one interface.
//!
//! An Allocate request takes its quota share with [`Admission::admit`] —
//! check and take in one step — and gives it back with
//! [`Admission::release`] when it is refused later or its allocation ends.
//! The shares are counted in a [`QuotaBook`] that several servers (one per
//! shard) may share: check-and-take under its one lock keeps the limits
//! exact under concurrency, and only the control plane takes it. Relay
//! ports come from this server's own pools (shards get disjoint ranges).
//! The server holds nothing of this elsewhere: the counts include
//! allocations still waiting for their sockets.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// What the servers of one relay (one per shard) share: the quota shares
/// taken, by user, by client IP and in total (exact under concurrency:
/// check and take under one lock), the relay port pools (atomic bitmaps:
/// each shard picks from its own slice, any may give a port back) and the
/// RESERVATION-TOKENs (redeemable on any shard). Only Allocate and the end
/// of an allocation take the locks, never the data plane.
#[derive(Debug)]
pub struct QuotaBook {
    counts: Mutex<Counts>,
    v4: PortPool,
    v6: PortPool,
    reservations: Mutex<FxHashMap<[u8; 8], Reservation>>,
}

/// A relay port held for a RESERVATION-TOKEN (RFC 8656 §7.2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    pub addr: SocketAddr,
    pub expires: Instant,
}

#[derive(Debug, Default)]
struct Counts {
    per_user: FxHashMap<Box<str>, u32>,
    per_ip: FxHashMap<IpAddr, u32>,
    total: u32,
}

impl QuotaBook {
    /// An empty book for relay ports `ports`, to hand to
    /// [`super::Server::with_quota_book`] with a configuration of the same
    /// port range.
    pub fn new(ports: RangeInclusive<u16>) -> Arc<Self> {
        Arc::new(QuotaBook {
            counts: Mutex::default(),
            v4: PortPool::new(ports.clone()),
            v6: PortPool::new(ports),
            reservations: Mutex::default(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding them.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reservations(&self) -> std::sync::MutexGuard<'_, FxHashMap<[u8; 8], Reservation>> {
        self.reservations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shares taken and not given back, by every server of this book.
    pub fn total(&self) -> u32 {
        self.counts().total
    }

    fn pool(&self, v6: bool) -> &PortPool {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Admission {
    book: Arc<QuotaBook>,
    /// Shares this server holds (a part of the book's total).
    held: u32,
    /// The ports this server picks from (its shard's slice).
    slice: RangeInclusive<u16>,
}

impl Admission {
    /// Nothing admitted; quota shares and ports in `book`; relay ports
    /// picked from `slice`.
    pub fn new(book: Arc<QuotaBook>, slice: RangeInclusive<u16>) -> Self {
        Admission {
            book,
            held: 0,
            slice,
        }
    }

    /// Picks relay ports from `slice` from now on (a shard's part).
    pub fn set_ports(&mut self, slice: RangeInclusive<u16>) {
        self.slice = slice;
    }

    /// Takes one share of `user`'s, `ip`'s and the total quota, or refuses
    /// (486) and takes nothing.
    pub fn admit(&mut self, user: &str, ip: IpAddr, q: Quota) -> Result<(), Refusal> {
        let mut c = self.book.counts();
        let users = c.per_user.get(user).copied().unwrap_or(0);
        let ips = c.per_ip.get(&ip).copied().unwrap_or(0);
        if (q.per_user != 0 && users >= q.per_user) || ips >= q.per_ip || c.total >= q.total {
            return Err(Refusal::Quota);
        }
        *c.per_user.entry(user.into()).or_insert(0) += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        c.total += 1;
        self.held += 1;
        Ok(())
    }

    /// RFC 8016: `user`'s allocation moves from client IP `from` to `to`:
    /// its share of the per-IP quota follows it, or the move is refused
    /// (486) when `to` is at its quota.
    pub fn move_ip(&mut self, from: IpAddr, to: IpAddr, per_ip: u32) -> Result<(), Refusal> {
        if from == to {
            return Ok(());
        }
        let mut c = self.book.counts();
        if c.per_ip.get(&to).copied().unwrap_or(0) >= per_ip {
            return Err(Refusal::Quota);
        }
        *c.per_ip.entry(to).or_insert(0) += 1;
        if let Some(n) = c.per_ip.get_mut(&from) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&from);
            }
        }
        Ok(())
    }

    /// A share moves to another server of the book with its allocation
    /// (`out`) or arrives from one: the book's counts stay.
    pub fn hand_share(&mut self, out: bool) {
        if out {
            self.held = self.held.saturating_sub(1);
        } else {
            self.held += 1;
        }
    }

    /// Gives back a share taken by [`Admission::admit`].
    pub fn release(&mut self, user: &str, ip: IpAddr) {
        let mut c = self.book.counts();
        if let Some(n) = c.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_user.remove(user);
            }
        }
        if let Some(n) = c.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
        c.total = c.total.saturating_sub(1);
        self.held = self.held.saturating_sub(1);
    }

    /// Shares taken by every server of the book (allocations existing or
    /// waiting for their sockets).
    pub fn book_total(&self) -> u32 {
        self.book.total()
    }

    /// Shares this server admitted and did not release.
    #[cfg(test)]
    pub fn admitted(&self) -> u32 {
        self.held
    }

    /// Picks and takes a relay port of one family from this server's
    /// slice (see [`PortPool::pick`]).
    /// With `tcp`, the port is marked as an RFC 6062 allocation's.
    pub fn pick_port(
        &mut self,
        rng: &mut impl Rng,
        v6: bool,
        even: bool,
        pair: bool,
        tcp: bool,
    ) -> Option<u16> {
        let pool = self.book.pool(v6);
        let p = pool.pick(rng, &self.slice, even, pair)?;
        if tcp {
            pool.mark_tcp(p);
        }
        Some(p)
    }

    /// Gives back the port of a relay address (whichever server took it).
    pub fn release_port(&mut self, addr: SocketAddr) {
        self.book.pool(addr.is_ipv6()).release(addr.port());
    }

    /// Whether the port of relay address `addr` is taken by a server of
    /// this book for an allocation relaying TCP (`tcp`) or UDP (two atomic
    /// loads).
    pub fn port_in_use(&self, addr: &SocketAddr, tcp: bool) -> bool {
        self.book.pool(addr.is_ipv6()).is_used_by(addr.port(), tcp)
    }

    /// Holds `addr`'s port (already taken) for `token` until `expires`.
    pub fn reserve(&mut self, token: [u8; 8], addr: SocketAddr, expires: Instant) {
        self.book
            .reservations()
            .insert(token, Reservation { addr, expires });
    }

    /// Redeems `token` (on any server of the book): its port, if still
    /// reserved at `now`.
    pub fn redeem(&mut self, token: &[u8; 8], now: Instant) -> Option<SocketAddr> {
        let r = self.book.reservations().remove(token)?;
        if r.expires > now {
            Some(r.addr)
        } else {
            self.release_port(r.addr);
            None
        }
    }

    /// Ends `token`'s reservation if it expired by `now` and was not
    /// redeemed: its port goes back.
    pub fn expire_reservation(&mut self, token: &[u8; 8], now: Instant) {
        let mut rs = self.book.reservations();
        if rs.get(token).is_some_and(|r| r.expires <= now) {
            if let Some(r) = rs.remove(token) {
                drop(rs);
                self.release_port(r.addr);
            }
        }
    }

    #[cfg(test)]
    pub fn ports_in_use(&self) -> usize {
        self.book.v4.in_use() + self.book.v6.in_use()
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
        let mut a = Admission::new(QuotaBook::new(50000..=50009), 50000..=50009);
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
        let mut a = Admission::new(QuotaBook::new(50000..=50001), 50000..=50001);
        let mut rng = rand::thread_rng();
        for _ in 0..3 {
            assert_eq!(a.admit("u", ip(1), Q), Ok(()));
            a.release("u", ip(1));
        }
        assert_eq!(a.admitted(), 0);
        let c = a.book.counts();
        assert!(c.per_user.is_empty() && c.per_ip.is_empty());
        drop(c);
        let p = a.pick_port(&mut rng, false, false, false, false).unwrap();
        let q = a.pick_port(&mut rng, false, false, false, false).unwrap();
        assert_eq!(a.pick_port(&mut rng, false, false, false, false), None);
        assert!(a.pick_port(&mut rng, true, false, false, false).is_some());
        a.release_port(SocketAddr::from(([10, 0, 0, 1], p)));
        a.release_port(SocketAddr::from(([10, 0, 0, 1], q)));
        assert_eq!(a.ports_in_use(), 1);
    }

    #[test]
    fn admissions_sharing_a_book_share_the_quotas() {
        let book = QuotaBook::new(50000..=50009);
        let (mut a, mut b) = (
            Admission::new(book.clone(), 50000..=50009),
            Admission::new(book.clone(), 50000..=50009),
        );
        let q = Quota {
            per_user: 2,
            per_ip: 10,
            total: 3,
        };
        let ip = IpAddr::from([203, 0, 113, 1]);
        assert_eq!(a.admit("u", ip, q), Ok(()));
        assert_eq!(b.admit("u", ip, q), Ok(()));
        assert_eq!(
            b.admit("u", ip, q),
            Err(Refusal::Quota),
            "per user, across both"
        );
        assert_eq!(b.admit("v", ip, q), Ok(()));
        assert_eq!(
            a.admit("w", ip, q),
            Err(Refusal::Quota),
            "total, across both"
        );
        assert_eq!((a.admitted(), b.admitted(), book.total()), (1, 2, 3));
        a.release("u", ip);
        assert_eq!(a.admit("w", ip, q), Ok(()));
        assert_eq!(book.total(), 3);
    }
}

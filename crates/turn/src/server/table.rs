//! The allocation table: owns every live allocation and the indexes over
//! them, and keeps them consistent inside its own [`AllocationTable::insert`]
//! and [`AllocationTable::remove`] (nothing else mutates an index).
//!
//! - Allocations live in a slab; an [`AllocId`] (slot index + generation)
//!   names one for as long as it lives and never names a later occupant of
//!   the same slot, so drivers and timers may keep ids without dangling.
//! - `by_tuple`: the client 5-tuple → id (control-plane requests, client data).
//! - `by_relay`: every relayed address (local and advertised) → id (peer
//!   data, internal delivery, the policy's "live allocation" exception).
//! - Gauges: live allocations by client transport (udp, tcp, tls).

use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use super::allocation::Allocation;
use super::stats::Stats;
use crate::FiveTuple;

/// A live allocation's handle: small and `Copy`, valid until the allocation
/// ends (then lookups with it find nothing, even after the slot is reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId {
    index: u32,
    generation: u32,
}

impl AllocId {
    /// Slot index and generation (for tickets).
    pub(crate) fn parts(self) -> (u32, u32) {
        (self.index, self.generation)
    }

    /// The id of slot `index` at `generation` (from a ticket: it names
    /// nothing unless that slot holds that generation).
    pub(crate) fn from_parts(index: u32, generation: u32) -> Self {
        AllocId { index, generation }
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    entry: Option<Allocation>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct AllocationTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_tuple: FxHashMap<FiveTuple, AllocId>,
    by_relay: FxHashMap<SocketAddr, AllocId>,
    current: [u64; 3],
}

impl AllocationTable {
    /// Adds an allocation (its 5-tuple must be free) and indexes it.
    pub fn insert(&mut self, alloc: Allocation) -> AllocId {
        debug_assert!(!self.by_tuple.contains_key(&alloc.five_tuple));
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                // The table cannot outgrow u32: allocations are bounded by
                // `allocations_total` (a u32) and by relay ports.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = AllocId {
            index,
            generation: slot.generation,
        };
        self.by_tuple.insert(alloc.five_tuple, id);
        for r in alloc.relayed.iter().flatten() {
            self.by_relay.insert(r.local, id);
            self.by_relay.insert(r.advertised, id);
        }
        self.current[Stats::transport_index(alloc.five_tuple.transport)] += 1;
        slot.entry = Some(alloc);
        id
    }

    /// Removes an allocation and every index entry naming it.
    pub fn remove(&mut self, id: AllocId) -> Option<Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let alloc = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.by_tuple.remove(&alloc.five_tuple);
        for r in alloc.relayed.iter().flatten() {
            self.by_relay.remove(&r.local);
            self.by_relay.remove(&r.advertised);
        }
        let i = Stats::transport_index(alloc.five_tuple.transport);
        self.current[i] = self.current[i].saturating_sub(1);
        Some(alloc)
    }

    /// Moves the live allocation `id` to the client flow `to` (free: no
    /// allocation there): the 5-tuple index and the transport gauges follow.
    pub fn rekey(&mut self, id: AllocId, to: crate::FiveTuple) -> Option<crate::FiveTuple> {
        if self.by_tuple.contains_key(&to) {
            return None;
        }
        let alloc = self.by_id_mut(id)?;
        let from = std::mem::replace(&mut alloc.five_tuple, to);
        self.by_tuple.remove(&from);
        self.by_tuple.insert(to, id);
        let i = Stats::transport_index(from.transport);
        self.current[i] = self.current[i].saturating_sub(1);
        self.current[Stats::transport_index(to.transport)] += 1;
        Some(from)
    }

    /// The allocation `id` names, if it is still alive.
    pub fn by_id(&self, id: AllocId) -> Option<&Allocation> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.entry.as_ref())
            .flatten()
    }

    /// Mutable [`AllocationTable::by_id`].
    pub fn by_id_mut(&mut self, id: AllocId) -> Option<&mut Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.entry.as_mut())
            .flatten()
    }

    /// The id of the client flow's allocation.
    pub fn id_of(&self, ft: &FiveTuple) -> Option<AllocId> {
        self.by_tuple.get(ft).copied()
    }

    /// The client flow's allocation.
    pub fn get(&self, ft: &FiveTuple) -> Option<&Allocation> {
        self.by_id(self.id_of(ft)?)
    }

    /// Mutable [`AllocationTable::get`].
    pub fn get_mut(&mut self, ft: &FiveTuple) -> Option<&mut Allocation> {
        self.by_id_mut(self.id_of(ft)?)
    }

    /// Whether the client flow has an allocation.
    pub fn contains(&self, ft: &FiveTuple) -> bool {
        self.by_tuple.contains_key(ft)
    }

    /// The allocation one of whose relayed addresses (local or advertised)
    /// is `addr`.
    pub fn by_relay(&self, addr: &SocketAddr) -> Option<AllocId> {
        self.by_relay.get(addr).copied()
    }

    /// Every relayed address (local and advertised) with its allocation.
    pub fn relay_addresses(&self) -> impl Iterator<Item = (&SocketAddr, AllocId)> {
        self.by_relay.iter().map(|(a, id)| (a, *id))
    }

    /// Live allocations.
    pub fn len(&self) -> usize {
        self.by_tuple.len()
    }

    /// Live allocations by client transport (udp, tcp, tls).
    pub fn current(&self) -> [u64; 3] {
        self.current
    }

    /// Every live allocation.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Allocation> {
        self.slots.iter_mut().filter_map(|s| s.entry.as_mut())
    }

    /// Checks every invariant (tests).
    #[cfg(test)]
    pub fn check(&self) {
        let live: Vec<(AllocId, &Allocation)> = (self.slots.iter().enumerate())
            .filter_map(|(i, s)| {
                let id = AllocId {
                    index: i as u32,
                    generation: s.generation,
                };
                s.entry.as_ref().map(|a| (id, a))
            })
            .collect();
        assert_eq!(live.len(), self.by_tuple.len());
        assert_eq!(live.len() + self.free.len(), self.slots.len());
        let mut current = [0u64; 3];
        let mut relays = 0;
        for (id, a) in &live {
            assert_eq!(self.by_tuple.get(&a.five_tuple), Some(id));
            for r in a.relayed.iter().flatten() {
                assert_eq!(self.by_relay.get(&r.local), Some(id));
                assert_eq!(self.by_relay.get(&r.advertised), Some(id));
                relays += if r.local == r.advertised { 1 } else { 2 };
            }
            current[Stats::transport_index(a.five_tuple.transport)] += 1;
        }
        assert_eq!(relays, self.by_relay.len());
        assert_eq!(current, self.current);
        for i in &self.free {
            assert!(self.slots[*i as usize].entry.is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    use proptest::prelude::*;
    use stun::TransactionId;

    use super::*;
    use crate::server::allocation::{RelayProtocol, Relayed};
    use crate::Transport;

    fn alloc(client_port: u16, transport: Transport, relay_port: u16, nat: bool) -> Allocation {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), relay_port);
        let advertised = if nat {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), relay_port)
        } else {
            local
        };
        Allocation {
            five_tuple: FiveTuple {
                client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)), client_port),
                server: "192.0.2.1:3478".parse().unwrap(),
                transport,
            },
            username: "u".into(),
            protocol: RelayProtocol::Udp,
            relayed: [Some(Relayed { local, advertised }), None],
            expires: Instant::now(),
            allocate_txid: TransactionId([0; 12]),
            permissions: Default::default(),
            channels: Default::default(),
            peer_channels: Default::default(),
            connections: Vec::new(),
            bandwidth: Default::default(),
            mobility: None,
        }
    }

    #[test]
    fn stale_ids_find_nothing_after_reuse() {
        let mut t = AllocationTable::default();
        let a = t.insert(alloc(1, Transport::Udp, 50000, false));
        assert!(t.remove(a).is_some());
        let b = t.insert(alloc(2, Transport::Tcp, 50002, true));
        assert_ne!(a, b);
        assert!(t.by_id(a).is_none());
        assert!(t.remove(a).is_none(), "a stale id removes nothing");
        assert!(t.by_id(b).is_some());
        assert_eq!(t.current(), [0, 1, 0]);
        t.check();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { port: u16, transport: u8, nat: bool },
        Remove(usize),
        RemoveStale(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..64, 0u8..3, any::<bool>()).prop_map(|(port, transport, nat)| Op::Insert {
                port,
                transport,
                nat
            }),
            (0usize..64).prop_map(Op::Remove),
            (0usize..64).prop_map(Op::RemoveStale),
        ]
    }

    proptest! {
        /// Random insert/remove sequences (stale ids included) keep the
        /// indexes and gauges consistent with the allocations.
        #[test]
        fn indexes_and_gauges_follow_inserts_and_removes(ops in proptest::collection::vec(op(), 1..200)) {
            let mut t = AllocationTable::default();
            let mut live: Vec<AllocId> = Vec::new();
            let mut dead: Vec<AllocId> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert { port, transport: transport_n, nat } => {
                        let transport = [Transport::Udp, Transport::Tcp, Transport::Tls][transport_n as usize];
                        // A relay port per 5-tuple, as the port pool guarantees.
                        let relay_port = 50000 + port * 3 + u16::from(transport_n);
                        let a = alloc(port, transport, relay_port, nat);
                        if t.contains(&a.five_tuple) {
                            continue;
                        }
                        let ft = a.five_tuple;
                        let id = t.insert(a);
                        prop_assert_eq!(t.id_of(&ft), Some(id));
                        live.push(id);
                    }
                    Op::Remove(i) if !live.is_empty() => {
                        let id = live.swap_remove(i % live.len());
                        let a = t.remove(id);
                        prop_assert!(a.is_some());
                        let a = a.unwrap();
                        prop_assert!(!t.contains(&a.five_tuple));
                        for r in a.relayed.iter().flatten() {
                            prop_assert_eq!(t.by_relay(&r.local), None);
                        }
                        dead.push(id);
                    }
                    Op::RemoveStale(i) if !dead.is_empty() => {
                        let id = dead[i % dead.len()];
                        prop_assert!(t.remove(id).is_none());
                        prop_assert!(t.by_id(id).is_none());
                    }
                    _ => {}
                }
                t.check();
                prop_assert_eq!(t.len(), live.len());
                prop_assert_eq!(t.current().iter().sum::<u64>(), live.len() as u64);
            }
        }
    }
}

//! An allocation with its permissions and channel bindings (RFC 8656 §2.2, §9, §12).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rustc_hash::FxHashMap;
use stun::TransactionId;

use crate::bandwidth::ByteBucket;

use super::config::{CHANNEL_COOLDOWN, CHANNEL_LIFETIME, PERMISSION_LIFETIME};

/// The transport between the relay and peers (REQUESTED-TRANSPORT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayProtocol {
    /// UDP relaying (RFC 8656).
    Udp,
    /// TCP relaying (RFC 6062).
    Tcp,
}

impl RelayProtocol {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RelayProtocol::Udp => "udp",
            RelayProtocol::Tcp => "tcp",
        }
    }
}

/// One relayed transport address of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Relayed {
    /// Where the driver's relay socket is bound.
    pub local: SocketAddr,
    /// What XOR-RELAYED-ADDRESS advertises (differs behind NAT).
    pub advertised: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Permission {
    pub expires: Instant,
    /// The peer IP is one of the relay's own: each packet must target a
    /// live allocation, since the permission covers every port.
    pub own: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Channel {
    pub peer: SocketAddr,
    pub expires: Instant,
}

impl Channel {
    /// The binding no longer carries data once expired, but holds its number
    /// and peer for [`CHANNEL_COOLDOWN`] more.
    pub fn live(&self, now: Instant) -> bool {
        now < self.expires
    }

    fn gone(&self, now: Instant) -> bool {
        now >= self.expires + CHANNEL_COOLDOWN
    }
}

/// Why a ChannelBind cannot be honoured (both map to 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelConflict {
    NumberBoundToOtherPeer,
    PeerBoundToOtherNumber,
    TooMany,
}

#[derive(Debug)]
pub(crate) struct Allocation {
    /// The client flow that made it.
    pub five_tuple: crate::FiveTuple,
    pub username: Box<str>,
    pub protocol: RelayProtocol,
    pub relayed: [Option<Relayed>; 2],
    pub expires: Instant,
    pub allocate_txid: TransactionId,
    pub permissions: FxHashMap<IpAddr, Permission>,
    pub channels: FxHashMap<u16, Channel>,
    pub peer_channels: FxHashMap<SocketAddr, u16>,
    pub connections: Vec<u32>,
    /// Byte-rate buckets: [to peer, to client].
    pub bandwidth: [ByteBucket; 2],
    /// RFC 8016: the random serial its mobility tickets carry, when the
    /// client asked for mobility.
    pub mobility: Option<u64>,
}

impl Allocation {
    /// The relayed address serving peers of `peer`'s family.
    pub fn relayed_for(&self, peer: &SocketAddr) -> Option<&Relayed> {
        self.relayed
            .iter()
            .flatten()
            .find(|r| r.local.is_ipv4() == peer.is_ipv4())
    }

    pub fn has_family(&self, ip: &IpAddr) -> bool {
        self.relayed
            .iter()
            .flatten()
            .any(|r| r.local.is_ipv4() == ip.is_ipv4())
    }

    pub fn permission(&self, ip: &IpAddr, now: Instant) -> Option<&Permission> {
        self.permissions.get(ip).filter(|p| now < p.expires)
    }

    pub fn live_permissions(&self, now: Instant) -> usize {
        self.permissions
            .values()
            .filter(|p| now < p.expires)
            .count()
    }

    pub fn install_permission(&mut self, ip: IpAddr, own: bool, now: Instant) {
        self.permissions.insert(
            ip,
            Permission {
                expires: now + PERMISSION_LIFETIME,
                own,
            },
        );
    }

    pub fn check_channel(
        &self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
        max: usize,
    ) -> Result<(), ChannelConflict> {
        if let Some(c) = self.channels.get(&number).filter(|c| !c.gone(now)) {
            if c.peer != peer {
                return Err(ChannelConflict::NumberBoundToOtherPeer);
            }
            return Ok(());
        }
        if let Some(n) = self.peer_channels.get(&peer) {
            if *n != number && self.channels.get(n).is_some_and(|c| !c.gone(now)) {
                return Err(ChannelConflict::PeerBoundToOtherNumber);
            }
        }
        if self.channels.len() >= max && !self.channels.values().any(|c| c.gone(now)) {
            return Err(ChannelConflict::TooMany);
        }
        Ok(())
    }

    /// Binds or refreshes; `check_channel` must have passed.
    pub fn bind_channel(&mut self, number: u16, peer: SocketAddr, now: Instant) {
        if let Some(old) = self.peer_channels.insert(peer, number) {
            if old != number {
                self.channels.remove(&old);
            }
        }
        if let Some(c) = self.channels.insert(
            number,
            Channel {
                peer,
                expires: now + CHANNEL_LIFETIME,
            },
        ) {
            if c.peer != peer {
                self.peer_channels.remove(&c.peer);
            }
        }
    }

    /// Forgets expired permissions and channels past their cooldown.
    pub fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|_, p| now < p.expires);
        let gone: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| c.gone(now))
            .map(|(n, _)| *n)
            .collect();
        for n in gone {
            if let Some(c) = self.channels.remove(&n) {
                self.peer_channels.remove(&c.peer);
            }
        }
    }
}

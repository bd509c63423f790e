//! Permissions and channel bindings as the client knows them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use stun::channel::{MAX_CHANNEL, MIN_CHANNEL};
use stun::TransactionId;

use super::ClientError;

/// How many permissions the client tracks at most.
pub const MAX_PERMISSIONS: usize = 8192;
/// How many channels exist (0x4000..=0x4FFF).
pub const MAX_CHANNELS: usize = (MAX_CHANNEL - MIN_CHANNEL + 1) as usize;
/// How long a forgotten or failed channel number stays reserved for its peer:
/// the server may keep the binding 600 s and must not rebind it for 300 s
/// more (RFC 8656 §12).
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(900);

/// A permission for one peer IP.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Permission {
    /// Confirmed by a CreatePermission or ChannelBind success.
    pub(super) installed: bool,
    /// The CreatePermission in flight, if any.
    pub(super) pending: Option<TransactionId>,
}

/// A channel binding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Channel {
    pub(super) peer: SocketAddr,
    /// Confirmed by a ChannelBind success: ChannelData may be sent.
    pub(super) confirmed: bool,
    /// The ChannelBind in flight, if any.
    pub(super) pending: Option<TransactionId>,
}

/// Channels by number and by peer, with number allocation.
#[derive(Debug)]
pub(super) struct Channels {
    by_number: FxHashMap<u16, Channel>,
    by_peer: FxHashMap<SocketAddr, u16>,
    /// Numbers the server may still hold for a peer, until an instant.
    retired: FxHashMap<u16, (SocketAddr, Instant)>,
    next: u16,
}

impl Default for Channels {
    fn default() -> Self {
        Channels {
            by_number: FxHashMap::default(),
            by_peer: FxHashMap::default(),
            retired: FxHashMap::default(),
            next: MIN_CHANNEL,
        }
    }
}

impl Channels {
    /// The channel with this number.
    pub(super) fn get(&self, number: u16) -> Option<&Channel> {
        self.by_number.get(&number)
    }

    /// The channel with this number, mutably.
    pub(super) fn get_mut(&mut self, number: u16) -> Option<&mut Channel> {
        self.by_number.get_mut(&number)
    }

    /// The channel number bound (or being bound) to `peer`.
    pub(super) fn number_of(&self, peer: SocketAddr) -> Option<u16> {
        self.by_peer.get(&peer).copied()
    }

    /// The number of the confirmed channel to `peer`.
    pub(super) fn confirmed(&self, peer: SocketAddr) -> Option<u16> {
        let n = self.number_of(peer)?;
        self.get(n).filter(|c| c.confirmed).map(|_| n)
    }

    /// Adds an unconfirmed channel to `peer`: the number it held recently if
    /// it is still reserved for it, else the next free one from 0x4000 on
    /// (wrapping, skipping numbers reserved for other peers).
    pub(super) fn add(&mut self, peer: SocketAddr, now: Instant) -> Result<u16, ClientError> {
        let reused = self
            .retired
            .iter()
            .find(|(_, (p, _))| *p == peer)
            .map(|(n, _)| *n);
        let number = match reused {
            Some(n) => n,
            None => self.free_number(now)?,
        };
        self.retired.remove(&number);
        self.by_number.insert(
            number,
            Channel {
                peer,
                confirmed: false,
                pending: None,
            },
        );
        self.by_peer.insert(peer, number);
        Ok(number)
    }

    fn free_number(&mut self, now: Instant) -> Result<u16, ClientError> {
        for _ in 0..MAX_CHANNELS {
            let n = self.next;
            self.next = if n >= MAX_CHANNEL { MIN_CHANNEL } else { n + 1 };
            if self.by_number.contains_key(&n) {
                continue;
            }
            match self.retired.get(&n) {
                Some((_, until)) if *until > now => continue,
                Some(_) => {
                    self.retired.remove(&n);
                }
                None => {}
            }
            return Ok(n);
        }
        Err(ClientError::ChannelsExhausted)
    }

    /// Removes a channel; its number stays reserved for its peer for a while,
    /// since the server may still hold the binding.
    pub(super) fn remove(&mut self, number: u16, now: Instant) -> Option<Channel> {
        let ch = self.by_number.remove(&number)?;
        self.by_peer.remove(&ch.peer);
        self.retired
            .insert(number, (ch.peer, now + CHANNEL_QUARANTINE));
        Some(ch)
    }

    /// Forgets every channel and reservation (the allocation is gone).
    pub(super) fn clear(&mut self) {
        *self = Channels::default();
    }

    /// How many channels exist (bound or being bound).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_number.len()
    }
}

/// Permissions by peer IP.
pub(super) type Permissions = FxHashMap<IpAddr, Permission>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_allocate_wrap_and_exhaust() {
        let now = Instant::now();
        let mut c = Channels::default();
        let p = |i: usize| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000));
        for i in 0..MAX_CHANNELS {
            assert_eq!(c.add(p(i), now).unwrap(), MIN_CHANNEL + i as u16);
        }
        assert_eq!(c.add(p(5000), now), Err(ClientError::ChannelsExhausted));
        // A removed number stays reserved for its peer…
        c.remove(0x4001, now);
        assert_eq!(c.add(p(5000), now), Err(ClientError::ChannelsExhausted));
        assert_eq!(c.add(p(1), now).unwrap(), 0x4001);
        // …until the quarantine is over.
        c.remove(0x4001, now);
        let later = now + CHANNEL_QUARANTINE + Duration::from_secs(1);
        assert_eq!(c.add(p(5000), later).unwrap(), 0x4001);
        assert_eq!(c.len(), MAX_CHANNELS);
    }
}

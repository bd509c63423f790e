//! What the driver asks for, and the refreshes the client sends itself.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun::attr::Attribute;
use stun::{AddressFamily, ChannelData, Class, MessageEncoder, MessageType, Method};
use stun::{TransactionId, HEADER_LEN};

use super::credentials::encode_request;
use super::tables::{Permission, MAX_PERMISSIONS};
use super::transaction::{RequestKind, Retries};
use super::{Client, ClientError, ClientState, RequestedTransport, TimerKey};
use super::{BUSY_RETRY, MAX_QUEUED_TRANSMITS};

/// When to refresh an allocation granted `lifetime`: at 80 % of it or 60 s
/// before it ends, whichever is earlier, but not before half of it (so a
/// short lifetime does not cause a refresh storm) nor within a second.
pub(super) fn refresh_delay(lifetime: Duration) -> Duration {
    let early = (lifetime * 4 / 5).min(lifetime.saturating_sub(Duration::from_secs(60)));
    early.max(lifetime / 2).max(Duration::from_secs(1))
}

impl Client {
    /// Sends Allocate. Allowed before the first allocation and after one
    /// failed, expired or was deleted (credentials are kept, so the retry is
    /// authenticated at once).
    ///
    /// # Errors
    /// [`ClientError::AlreadyAllocated`] while an allocation exists or is in
    /// progress; [`ClientError::Encode`] if the username or SOFTWARE is too long.
    pub fn allocate(&mut self, now: Instant) -> Result<(), ClientError> {
        match self.state {
            ClientState::Idle
            | ClientState::Failed
            | ClientState::Deallocated
            | ClientState::Expired => {}
            _ => return Err(ClientError::AlreadyAllocated),
        }
        self.teardown();
        self.mapped = None;
        self.send_request(now, RequestKind::Allocate, Retries::default())?;
        self.state = ClientState::Allocating;
        Ok(())
    }

    /// Deletes the allocation: Refresh with LIFETIME 0. Refreshes stop at
    /// once; [`Event::Deallocated`](super::Event::Deallocated) follows the response.
    ///
    /// # Errors
    /// [`ClientError::NotAllocated`] without an allocation;
    /// [`ClientError::TooManyTransactions`] if the table is full.
    pub fn deallocate(&mut self, now: Instant) -> Result<(), ClientError> {
        self.require_allocated()?;
        self.send_request(
            now,
            RequestKind::Refresh { lifetime: 0 },
            Retries::default(),
        )?;
        self.timers.cancel_refreshes();
        self.state = ClientState::Deallocating;
        Ok(())
    }

    /// RFC 8016: moves the allocation to a new 5-tuple: from now on every
    /// transmit goes to `server` over `transport` (a new local socket,
    /// stream or Tor circuit the driver opened), starting with a Refresh
    /// that carries the latest MOBILITY-TICKET. The relayed addresses,
    /// permissions and channels stay; [`Event::Moved`](super::Event::Moved)
    /// or [`Event::MoveFailed`](super::Event::MoveFailed) follows.
    /// Requests in flight are resent on the new transport.
    ///
    /// # Errors
    /// [`ClientError::NotAllocated`]; [`ClientError::NoTicket`] without a
    /// ticket (set [`ClientConfig::mobility`](super::ClientConfig::mobility));
    /// [`ClientError::TooManyTransactions`].
    pub fn move_to(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: crate::Transport,
    ) -> Result<(), ClientError> {
        self.require_allocated()?;
        if self.ticket.is_none() {
            return Err(ClientError::NoTicket);
        }
        self.config.server = server;
        self.config.transport = transport;
        self.decoder = Some(stun::StreamDecoder::new(super::MAX_STREAM_FRAME));
        self.stream_error = None;
        // A move in flight is superseded; other requests go out again on
        // the new transport, now (the old one may be dead).
        let moves: Vec<TransactionId> = (self.transactions.iter())
            .filter(|(_, t)| matches!(t.kind, RequestKind::Move { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in moves {
            self.transactions.remove(&id);
            self.timers.cancel(TimerKey::Transaction(id));
        }
        let lifetime = self.config.lifetime_secs().max(1);
        self.send_request(now, RequestKind::Move { lifetime }, Retries::default())?;
        let resend: Vec<Vec<u8>> = (self.transactions.values())
            .filter(|t| !matches!(t.kind, RequestKind::Move { .. }))
            .map(|t| t.payload.clone())
            .collect();
        for p in resend {
            if self.transmits.len() < MAX_QUEUED_TRANSMITS {
                self.queue_transmit(p);
            }
        }
        Ok(())
    }

    /// Refreshes the allocation now: a request the relay answers at once,
    /// to probe whether the path to it still works (the answer, or its
    /// absence, is an [`Event::Refreshed`](super::Event::Refreshed) or a
    /// timeout like any refresh's).
    ///
    /// # Errors
    /// [`ClientError::NotAllocated`], [`ClientError::TooManyTransactions`].
    pub fn probe(&mut self, now: Instant) -> Result<(), ClientError> {
        self.require_allocated()?;
        let kind = RequestKind::Refresh {
            lifetime: self.config.lifetime_secs().max(1),
        };
        self.send_request(now, kind, Retries::default()).map(|_| ())
    }

    /// Installs a permission for `peer` (CreatePermission), refreshed every
    /// 4 minutes until [`Client::forget_permission`]. Does nothing if one
    /// exists or is being installed.
    ///
    /// # Errors
    /// [`ClientError::NotAllocated`], [`ClientError::TooManyPermissions`],
    /// [`ClientError::TooManyTransactions`].
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) -> Result<(), ClientError> {
        self.require_allocated()?;
        if self.permissions.contains_key(&peer) {
            return Ok(());
        }
        if self.permissions.len() >= MAX_PERMISSIONS {
            return Err(ClientError::TooManyPermissions);
        }
        self.permissions.insert(peer, Permission::default());
        let kind = RequestKind::CreatePermission { peer };
        if let Err(e) = self.send_request(now, kind, Retries::default()) {
            self.permissions.remove(&peer);
            return Err(e);
        }
        Ok(())
    }

    /// Stops refreshing the permission for `peer`; the server drops it
    /// within 300 s. Channels to that IP keep theirs alive while they last.
    pub fn forget_permission(&mut self, peer: IpAddr) {
        self.permissions.remove(&peer);
        self.timers.cancel(TimerKey::Permission(peer));
    }

    /// Binds a channel to `peer` and returns its number: the next free one
    /// from 0x4000, or the one already bound (or being bound) to `peer`.
    /// Binding installs the permission for the peer's IP too (RFC 8656 §12),
    /// which the client then refreshes every 4 minutes; the channel itself
    /// is refreshed every 9 minutes. Until the server confirms
    /// ([`Event::ChannelBound`](super::Event::ChannelBound)),
    /// [`Client::send_to`] uses Send indications.
    ///
    /// # Errors
    /// [`ClientError::NotAllocated`]; [`ClientError::WrongTransport`] on a
    /// TCP allocation; [`ClientError::ChannelsExhausted`],
    /// [`ClientError::TooManyPermissions`], [`ClientError::TooManyTransactions`].
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, ClientError> {
        self.require_allocated()?;
        self.require_udp_relay()?;
        if let Some(n) = self.channels.number_of(peer) {
            return Ok(n);
        }
        if !self.permissions.contains_key(&peer.ip()) && self.permissions.len() >= MAX_PERMISSIONS {
            return Err(ClientError::TooManyPermissions);
        }
        let channel = self.channels.add(peer, now)?;
        let kind = RequestKind::ChannelBind { peer, channel };
        if let Err(e) = self.send_request(now, kind, Retries::default()) {
            self.channels.remove(channel, now);
            return Err(e);
        }
        Ok(channel)
    }

    /// Stops refreshing the channel to `peer` and sends to it with Send
    /// indications from now on. The number stays reserved for this peer
    /// while the server may still hold the binding.
    pub fn forget_channel(&mut self, now: Instant, peer: SocketAddr) {
        if let Some(n) = self.channels.number_of(peer) {
            self.channels.remove(n, now);
            self.timers.cancel(TimerKey::Channel(n));
        }
    }

    /// Sends `data` to `peer` through the relay: ChannelData if a channel to
    /// the peer is confirmed (padded to four bytes on a stream transport),
    /// else a Send indication (XOR-PEER-ADDRESS and DATA). The server drops
    /// data for peers without a permission.
    ///
    /// # Errors
    /// [`ClientError::NotAllocated`]; [`ClientError::WrongTransport`] on a
    /// TCP allocation; [`ClientError::QueueFull`] when
    /// [`MAX_QUEUED_TRANSMITS`](super::MAX_QUEUED_TRANSMITS) transmits wait;
    /// [`ClientError::PayloadTooLarge`].
    pub fn send_to(
        &mut self,
        _now: Instant,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), ClientError> {
        self.require_allocated()?;
        self.require_udp_relay()?;
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            return Err(ClientError::QueueFull);
        }
        let mut buf = vec![0u8; self.encoded_send_len(peer, data.len())];
        let n = self
            .encode_send(peer, data, &mut buf)
            .ok_or(ClientError::PayloadTooLarge)?;
        buf.truncate(n);
        self.queue_transmit(buf);
        Ok(())
    }

    /// The bytes [`Client::encode_send`] needs for `data_len` bytes to `peer`.
    pub fn encoded_send_len(&self, peer: SocketAddr, data_len: usize) -> usize {
        if self.channels.confirmed(peer).is_some() {
            ChannelData::encoded_len(data_len, self.config.transport.is_stream())
        } else {
            let addr = if peer.is_ipv4() { 8 } else { 20 };
            HEADER_LEN + 4 + addr + 4 + ((data_len + 3) & !3)
        }
    }

    /// Writes what [`Client::send_to`] would queue into `out`, for load
    /// generators that own their buffers; the caller sends the returned
    /// number of bytes to the server. `None` without an allocation, on a TCP
    /// allocation, or when `out` is too small or `data` too large.
    pub fn encode_send(&self, peer: SocketAddr, data: &[u8], out: &mut [u8]) -> Option<usize> {
        if self.state != ClientState::Allocated
            || self.config.requested_transport != RequestedTransport::Udp
        {
            return None;
        }
        if let Some(n) = self.channels.confirmed(peer) {
            let pad = self.config.transport.is_stream();
            return ChannelData::encode(n, data, out, pad).ok();
        }
        let typ = MessageType::new(Method::SEND, Class::Indication);
        let mut enc = MessageEncoder::new(out, typ, TransactionId(rand::random())).ok()?;
        enc.push(&Attribute::XorPeerAddress(peer)).ok()?;
        enc.push(&Attribute::Data(data)).ok()?;
        Some(enc.finish())
    }

    pub(super) fn require_allocated(&self) -> Result<(), ClientError> {
        if self.state == ClientState::Allocated {
            Ok(())
        } else {
            Err(ClientError::NotAllocated)
        }
    }

    fn require_udp_relay(&self) -> Result<(), ClientError> {
        if self.config.requested_transport == RequestedTransport::Udp {
            Ok(())
        } else {
            Err(ClientError::WrongTransport)
        }
    }

    /// The request for `kind`, authenticated if credentials are known.
    pub(super) fn encode_request(
        &self,
        kind: RequestKind,
        id: TransactionId,
    ) -> stun::Result<Vec<u8>> {
        let mut attrs: Vec<Attribute<'_>> = Vec::with_capacity(4);
        match kind {
            RequestKind::Allocate => {
                let proto = self.config.requested_transport.protocol_number();
                attrs.push(Attribute::RequestedTransport(proto));
                attrs.push(Attribute::Lifetime(self.config.lifetime_secs()));
                if self.config.additional_ipv6 {
                    attrs.push(Attribute::AdditionalAddressFamily(AddressFamily::V6));
                } else if let Some(f) = self.config.address_family {
                    attrs.push(Attribute::RequestedAddressFamily(f));
                }
                if self.config.mobility {
                    attrs.push(Attribute::MobilityTicket(&[]));
                }
            }
            RequestKind::Refresh { lifetime } | RequestKind::Move { lifetime } => {
                attrs.push(Attribute::Lifetime(lifetime));
                // RFC 8016 §3.2: every Refresh of a mobile allocation
                // carries the ticket (on the old 5-tuple it only refreshes).
                if lifetime != 0 {
                    if let Some(t) = &self.ticket {
                        attrs.push(Attribute::MobilityTicket(t));
                    }
                }
            }
            RequestKind::CreatePermission { peer } => {
                attrs.push(Attribute::XorPeerAddress(SocketAddr::new(peer, 0)));
            }
            RequestKind::ChannelBind { peer, channel } => {
                attrs.push(Attribute::ChannelNumber(channel));
                attrs.push(Attribute::XorPeerAddress(peer));
            }
            RequestKind::Connect { peer } => attrs.push(Attribute::XorPeerAddress(peer)),
        }
        encode_request(
            kind.method(),
            id,
            &attrs,
            self.config.software.as_deref(),
            &self.config.username,
            self.creds.as_ref(),
        )
    }

    /// Arms the refresh and expiry timers of an allocation granted
    /// `lifetime` by a request first sent at `started`.
    pub(super) fn schedule_allocation(&mut self, started: Instant, lifetime: Duration) {
        self.lifetime = Some(lifetime);
        self.timers
            .set(TimerKey::Refresh, started + refresh_delay(lifetime));
        self.timers.set(TimerKey::Expiry, started + lifetime);
    }

    pub(super) fn refresh_allocation(&mut self, now: Instant) {
        if self.state != ClientState::Allocated {
            return;
        }
        let kind = RequestKind::Refresh {
            lifetime: self.config.lifetime_secs().max(1),
        };
        if self.send_request(now, kind, Retries::default()).is_err() {
            self.timers.set(TimerKey::Refresh, now + BUSY_RETRY);
        }
    }

    pub(super) fn refresh_permission(&mut self, now: Instant, peer: IpAddr) {
        let due = self
            .permissions
            .get(&peer)
            .is_some_and(|p| p.pending.is_none());
        if self.state != ClientState::Allocated || !due {
            return;
        }
        let kind = RequestKind::CreatePermission { peer };
        if self.send_request(now, kind, Retries::default()).is_err() {
            self.timers
                .set(TimerKey::Permission(peer), now + BUSY_RETRY);
        }
    }

    pub(super) fn refresh_channel(&mut self, now: Instant, channel: u16) {
        let Some(ch) = self.channels.get(channel).copied() else {
            return;
        };
        if self.state != ClientState::Allocated || ch.pending.is_some() || !ch.confirmed {
            return;
        }
        let kind = RequestKind::ChannelBind {
            peer: ch.peer,
            channel,
        };
        if self.send_request(now, kind, Retries::default()).is_err() {
            self.timers
                .set(TimerKey::Channel(channel), now + BUSY_RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_delay_rule() {
        let s = Duration::from_secs;
        assert_eq!(refresh_delay(s(600)), s(480));
        assert_eq!(refresh_delay(s(3600)), s(2880));
        assert_eq!(refresh_delay(s(200)), s(140));
        assert_eq!(refresh_delay(s(100)), s(50));
        assert_eq!(refresh_delay(s(0)), s(1));
    }
}

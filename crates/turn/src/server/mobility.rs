//! TURN mobility (RFC 8016): an allocation follows its client to a new
//! 5-tuple (another address, port, transport connection or Tor circuit).
//!
//! An Allocate with an empty MOBILITY-TICKET asks for mobility; the success
//! response carries a ticket, and so does every Refresh answer for that
//! allocation (a fresh one each time). A Refresh that carries the ticket
//! from a 5-tuple without allocation moves the allocation there, keeping
//! its relayed addresses, permissions and channels, once the request is
//! authenticated as usual and signed by the allocation's user (441
//! otherwise, 437 for a ticket that names no live allocation, 405 when
//! mobility is off).
//!
//! # Tickets
//! Opaque to clients, [`TICKET_LEN`] characters of unpadded base64url
//! (text, because some clients, coturn's uclient among them, keep tickets
//! as C strings) of 61 bytes: a version byte, a random 96-bit nonce, the
//! body encrypted with an HMAC-SHA256 keystream, and a 128-bit HMAC-SHA256
//! tag over all of it (encrypt-then-MAC). The keys are
//! derived from [`super::ServerConfig::secret`], the pool's nonce and token
//! secret, so every shard, every reload and every relay of a pool reads
//! them. The body names the shard holding the allocation, its slot and
//! generation (an [`AllocId`]), a random serial drawn per allocation (a
//! ticket outlives nothing: a restart or a reused slot breaks the match)
//! and a keyed tag of the username. It reveals nothing to the client or to
//! an observer; only the allocation's user can use it, since the Refresh
//! must be signed by them.

use std::net::SocketAddr;
use std::time::Instant;

use hmac::digest::KeyInit;
use hmac::Mac as _;
use rand::Rng;
use stun::attr::{self, Attribute};
use stun::{Class, Message, Method, TransactionId};

use super::allocation::Allocation;
use super::reply::Seal;
use super::request::{Authed, RefreshArgs};
use super::sharding::ShardId;
use super::table::AllocId;
use super::{Output, Refusal, Server, Timer};
use crate::FiveTuple;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long an allocation with mobility outlives the TCP or TLS connection
/// it served (at most: its lifetime may end sooner), so that its client can
/// move it to a new connection: a Tor circuit that breaks closes the
/// stream before the client knows.
pub const DISCONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Length of our tickets on the wire (base64url of [`RAW_LEN`] bytes).
pub const TICKET_LEN: usize = (RAW_LEN * 4).div_ceil(3);
/// Length of a ticket before encoding.
const RAW_LEN: usize = 1 + NONCE_LEN + BODY_LEN + TAG_LEN;
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const BODY_LEN: usize = 28;
const TAG_LEN: usize = 16;

/// What a ticket says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The shard holding the allocation.
    pub shard: u32,
    /// The allocation in that shard's table.
    pub id: AllocId,
    /// The allocation's random serial.
    pub serial: u64,
    /// Keyed tag of the username.
    pub user: [u8; 8],
}

/// The ticket keys (encryption, authentication, user tags).
#[derive(Clone)]
pub(crate) struct TicketKeys {
    enc: HmacSha256,
    mac: HmacSha256,
    user: HmacSha256,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKeys(..)")
    }
}

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; the fallback is unreachable.
    <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
}

fn derive(secret: &[u8; 32], label: &[u8]) -> HmacSha256 {
    let mut m = hmac(secret);
    m.update(b"onionrtc turn mobility ticket v1\0");
    m.update(label);
    hmac(&m.finalize().into_bytes())
}

impl TicketKeys {
    /// The keys derived from the server's nonce and token secret.
    pub fn new(secret: &[u8; 32]) -> Self {
        TicketKeys {
            enc: derive(secret, b"enc"),
            mac: derive(secret, b"mac"),
            user: derive(secret, b"user"),
        }
    }

    /// The keyed tag of a username.
    pub fn user_tag(&self, username: &str) -> [u8; 8] {
        let mut m = self.user.clone();
        m.update(username.as_bytes());
        let out = m.finalize().into_bytes();
        let mut t = [0u8; 8];
        t.copy_from_slice(&out[..8]);
        t
    }

    fn keystream(&self, nonce: &[u8]) -> [u8; 32] {
        let mut m = self.enc.clone();
        m.update(nonce);
        m.finalize().into_bytes().into()
    }

    fn tag(&self, sealed: &[u8]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(sealed);
        m.finalize().into_bytes().into()
    }

    /// Seals a ticket with a fresh nonce, as text.
    pub fn seal(&self, t: &Ticket, rng: &mut impl Rng) -> [u8; TICKET_LEN] {
        use base64::Engine as _;
        let raw = self.seal_raw(t, rng);
        let mut text = [0u8; TICKET_LEN];
        // Cannot fail: TICKET_LEN is the encoded length of RAW_LEN bytes.
        let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(raw, &mut text);
        text
    }

    fn seal_raw(&self, t: &Ticket, rng: &mut impl Rng) -> [u8; RAW_LEN] {
        let mut out = [0u8; RAW_LEN];
        out[0] = VERSION;
        rng.fill(&mut out[1..1 + NONCE_LEN]);
        let (index, generation) = t.id.parts();
        let mut body = [0u8; BODY_LEN];
        body[0..4].copy_from_slice(&t.shard.to_be_bytes());
        body[4..8].copy_from_slice(&index.to_be_bytes());
        body[8..12].copy_from_slice(&generation.to_be_bytes());
        body[12..20].copy_from_slice(&t.serial.to_be_bytes());
        body[20..28].copy_from_slice(&t.user);
        let ks = self.keystream(&out[1..1 + NONCE_LEN]);
        for (i, b) in body.iter().enumerate() {
            out[1 + NONCE_LEN + i] = b ^ ks[i];
        }
        let tag = self.tag(&out[..RAW_LEN - TAG_LEN]);
        out[RAW_LEN - TAG_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        out
    }

    /// Opens a ticket: `None` for anything we did not seal (another
    /// length or version, a forged or altered one), in constant time
    /// with respect to the tag.
    pub fn open(&self, text: &[u8]) -> Option<Ticket> {
        use base64::Engine as _;
        use subtle::ConstantTimeEq as _;
        if text.len() != TICKET_LEN {
            return None;
        }
        let mut raw = [0u8; RAW_LEN + 2];
        let n = (base64::engine::general_purpose::URL_SAFE_NO_PAD)
            .decode_slice(text, &mut raw)
            .ok()?;
        let bytes = &raw[..n];
        if n != RAW_LEN || bytes[0] != VERSION {
            return None;
        }
        let tag = self.tag(&bytes[..RAW_LEN - TAG_LEN]);
        if !bool::from(tag[..TAG_LEN].ct_eq(&bytes[RAW_LEN - TAG_LEN..])) {
            return None;
        }
        let ks = self.keystream(&bytes[1..1 + NONCE_LEN]);
        let mut body = [0u8; BODY_LEN];
        for (i, b) in body.iter_mut().enumerate() {
            *b = bytes[1 + NONCE_LEN + i] ^ ks[i];
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        let mut serial = [0u8; 8];
        serial.copy_from_slice(&body[12..20]);
        let mut user = [0u8; 8];
        user.copy_from_slice(&body[20..28]);
        Some(Ticket {
            shard: u32_at(0),
            id: AllocId::from_parts(u32_at(4), u32_at(8)),
            serial: u64::from_be_bytes(serial),
            user,
        })
    }
}

/// The shard a ticket names, if it is one of ours.
pub(crate) fn ticket_shard(keys: &TicketKeys, bytes: &[u8], shard: ShardId) -> Option<u32> {
    keys.open(bytes)
        .map(|t| t.shard)
        .filter(|s| *s < shard.count)
}

/// The non-empty MOBILITY-TICKET of a request (an empty one asks for a
/// ticket, it presents none).
pub(super) fn mobility_ticket<'a>(msg: &Message<'a>) -> Option<&'a [u8]> {
    match msg.get(attr::MOBILITY_TICKET) {
        Some(Ok(Attribute::MobilityTicket(t))) if !t.is_empty() => Some(t),
        _ => None,
    }
}

/// An allocation on its way from one shard's server to another's (see
/// [`Server::export_moving`]): its state, its relay ports (still held in
/// the shared [`super::QuotaBook`]) and the Refresh to answer once it
/// arrived.
#[derive(Debug)]
pub struct MovingAllocation {
    alloc: Allocation,
    from: FiveTuple,
    args: RefreshArgs,
    txid: TransactionId,
    seal: Seal,
}

impl MovingAllocation {
    /// The local addresses of its relay sockets: the driver moves those
    /// sockets along with it.
    pub fn relay_addrs(&self) -> Vec<SocketAddr> {
        self.alloc
            .relayed
            .iter()
            .flatten()
            .map(|r| r.local)
            .collect()
    }

    /// The client flow it moves to.
    pub fn five_tuple(&self) -> FiveTuple {
        self.alloc.five_tuple
    }
}

impl Server {
    /// A fresh ticket for the allocation `id`, if it has mobility.
    pub(super) fn ticket_for(&mut self, id: AllocId) -> Option<[u8; TICKET_LEN]> {
        let a = self.allocations.by_id(id)?;
        let t = Ticket {
            shard: self.shard.index,
            id,
            serial: a.mobility?,
            user: self.tickets.user_tag(&a.username),
        };
        Some(self.tickets.seal(&t, &mut self.rng))
    }

    /// If `packet` is a Refresh request whose MOBILITY-TICKET names an
    /// allocation of another shard, that shard's index: the driver moves
    /// the allocation here with [`Server::export_moving`] on that shard
    /// (UDP) or hands the client's connection over to it (streams). Cheap
    /// for anything else (two bytes compared).
    pub fn mobility_shard(&self, packet: &[u8]) -> Option<u32> {
        if self.shard.count < 2
            || !self.config.mobility
            || packet.len() < stun::HEADER_LEN
            || packet[..2] != [0x00, 0x04]
        {
            return None;
        }
        let msg = Message::parse(packet).ok()?;
        let owner = ticket_shard(&self.tickets, mobility_ticket(&msg)?, self.shard)?;
        (owner != self.shard.index).then_some(owner)
    }

    /// The allocation a Refresh with `ticket` on `ft` may move to `ft`,
    /// or why not.
    fn check_move(&self, ft: FiveTuple, ticket: &[u8], auth: &Authed) -> Result<AllocId, Refusal> {
        if !self.config.mobility {
            return Err(Refusal::MobilityForbidden);
        }
        let t = (self.tickets.open(ticket))
            .filter(|t| t.shard == self.shard.index)
            .ok_or(Refusal::AllocationMismatch)?;
        let a = (self.allocations.by_id(t.id))
            .filter(|a| a.mobility == Some(t.serial))
            .ok_or(Refusal::AllocationMismatch)?;
        if a.username != auth.username || self.tickets.user_tag(&auth.username) != t.user {
            return Err(Refusal::WrongCredentials);
        }
        if self.allocations.contains(&ft)
            || self.pending_by_tuple.contains_key(&ft)
            || self.data_connections.contains_key(&ft)
        {
            return Err(Refusal::AllocationMismatch);
        }
        Ok(t.id)
    }

    fn refuse_move(&mut self, ft: &FiveTuple, txid: TransactionId, why: Refusal, seal: &Seal) {
        self.stats.mobility_refused += 1;
        self.refuse(ft, Method::REFRESH, txid, why, seal);
    }

    /// Moves the allocation's per-IP quota share from its old client to
    /// `ft`'s, or refuses.
    fn move_quota(&mut self, id: AllocId, ft: &FiveTuple) -> Result<FiveTuple, Refusal> {
        let from = self
            .allocations
            .by_id(id)
            .map(|a| a.five_tuple)
            .ok_or(Refusal::AllocationMismatch)?;
        let per_ip = self.config.limits.allocations_per_ip;
        self.admission
            .move_ip(from.client.ip(), ft.client.ip(), per_ip)?;
        Ok(from)
    }

    /// RFC 8016 §3.3: a Refresh with a ticket from a 5-tuple without
    /// allocation, authenticated: the allocation moves here.
    pub(super) fn mobility_move(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        ticket: &[u8],
        auth: Authed,
        seal: Seal,
    ) {
        let txid = msg.transaction_id();
        let Ok(args) = RefreshArgs::of(msg) else {
            self.refuse(&ft, Method::REFRESH, txid, Refusal::BadRequest, &seal);
            return;
        };
        let id = match self.check_move(ft, ticket, &auth) {
            Ok(id) => id,
            Err(why) => return self.refuse_move(&ft, txid, why, &seal),
        };
        let from = match self.move_quota(id, &ft) {
            Ok(f) => f,
            Err(why) => return self.refuse_move(&ft, txid, why, &seal),
        };
        if self.allocations.rekey(id, ft).is_none() {
            return self.refuse_move(&ft, txid, Refusal::AllocationMismatch, &seal);
        }
        self.moved(from, ft);
        self.refresh_id(now, id, args, txid, &seal);
    }

    fn moved(&mut self, from: FiveTuple, to: FiveTuple) {
        self.stats.mobility_moves += 1;
        self.stats.allocations_current = self.allocations.current();
        self.outputs.push_back(Output::AllocationMoved { from, to });
    }

    /// On the shard a ticket names ([`Server::mobility_shard`] on the
    /// shard that received it): the Refresh `packet` from `ft` is checked
    /// like a local move (authentication, ticket, user, quota); if it
    /// passes, the allocation leaves this server and is returned, to be
    /// given to the receiving shard's [`Server::import_moving`] with its
    /// relay sockets. Otherwise the answer (challenge or error) is in
    /// [`Server::poll_output`] for `ft`, and `None` is returned.
    pub fn export_moving(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        packet: &[u8],
    ) -> Option<MovingAllocation> {
        let Ok(msg) = Message::parse(packet) else {
            self.stats.malformed += 1;
            return None;
        };
        if (msg.has_fingerprint() && msg.verify_fingerprint().is_err())
            || msg.class() != Class::Request
            || msg.method() != Method::REFRESH
        {
            self.stats.malformed += 1;
            return None;
        }
        let ticket = mobility_ticket(&msg)?;
        let auth = self.authenticate(now, ft, &msg)?;
        let txid = msg.transaction_id();
        let seal = Seal {
            key: Some(auth.key.clone()),
            sha256: auth.sha256,
            fingerprint: msg.has_fingerprint(),
        };
        let mut unknown = [0u16; 16];
        if msg.unknown_required(attr::is_known, &mut unknown) > 0 {
            self.refuse(
                &ft,
                Method::REFRESH,
                txid,
                Refusal::UnknownAttributes,
                &seal,
            );
            return None;
        }
        let Ok(args) = RefreshArgs::of(&msg) else {
            self.refuse(&ft, Method::REFRESH, txid, Refusal::BadRequest, &seal);
            return None;
        };
        let id = match self.check_move(ft, ticket, &auth) {
            Ok(id) => id,
            Err(why) => {
                self.refuse_move(&ft, txid, why, &seal);
                return None;
            }
        };
        let from = match self.move_quota(id, &ft) {
            Ok(f) => f,
            Err(why) => {
                self.refuse_move(&ft, txid, why, &seal);
                return None;
            }
        };
        let mut alloc = self.allocations.remove(id)?;
        self.admission.hand_share(true);
        self.stats.allocations_current = self.allocations.current();
        alloc.five_tuple = ft;
        Some(MovingAllocation {
            alloc,
            from,
            args,
            txid,
            seal,
        })
    }

    /// An allocation another shard exported for a client flow of this
    /// shard: it lives here from now on, and the Refresh that moved it is
    /// answered (with a ticket naming this shard). Its id, for the relay
    /// sockets the driver moved along.
    pub fn import_moving(&mut self, now: Instant, m: MovingAllocation) -> Option<AllocId> {
        let MovingAllocation {
            alloc,
            from,
            args,
            txid,
            seal,
        } = m;
        let ft = alloc.five_tuple;
        self.admission.hand_share(false);
        if self.allocations.contains(&ft) || self.pending_by_tuple.contains_key(&ft) {
            // The flow made an allocation meanwhile: this one ends (the
            // driver closes the relay sockets it carried).
            for r in alloc.relayed.iter().flatten() {
                self.release_port(r.local);
            }
            self.quota_release(&alloc.username, &ft);
            self.outputs.push_back(Output::AllocationEnded {
                five_tuple: from,
                reason: super::EndReason::Deleted,
            });
            self.refuse_move(&ft, txid, Refusal::AllocationMismatch, &seal);
            return None;
        }
        let expires = alloc.expires;
        let id = self.allocations.insert(alloc);
        self.schedule(expires, Timer::Allocation(id));
        self.moved(from, ft);
        self.refresh_id(now, id, args, txid, &seal);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ticket() -> Ticket {
        Ticket {
            shard: 1,
            id: AllocId::from_parts(7, 3),
            serial: 0x0123_4567_89ab_cdef,
            user: [9; 8],
        }
    }

    #[test]
    fn tickets_round_trip_and_differ_each_time() {
        let k = TicketKeys::new(&[5; 32]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let a = k.seal(&ticket(), &mut rng);
        let b = k.seal(&ticket(), &mut rng);
        assert_ne!(a, b, "a fresh nonce each time");
        assert_eq!(k.open(&a), Some(ticket()));
        assert_eq!(k.open(&b), Some(ticket()));
        // The body is not readable: the serial's bytes do not appear.
        assert!(a
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(c)));
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(a)
            .unwrap();
        let serial = ticket().serial.to_be_bytes();
        assert!(!raw.windows(8).any(|w| w == serial));
    }

    #[test]
    fn forged_altered_or_foreign_tickets_do_not_open() {
        let k = TicketKeys::new(&[5; 32]);
        let other = TicketKeys::new(&[6; 32]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let t = k.seal(&ticket(), &mut rng);
        assert_eq!(other.open(&t), None, "another pool's key");
        use base64::Engine as _;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let raw = e.decode(t).unwrap();
        for i in 0..raw.len() {
            let mut x = raw.clone();
            x[i] ^= 0x40;
            assert_eq!(k.open(e.encode(&x).as_bytes()), None, "byte {i} altered");
        }
        assert_eq!(k.open(&t[..TICKET_LEN - 1]), None);
        assert_eq!(k.open(&[]), None);
        assert_eq!(k.open(&[0; 300]), None);
        assert_eq!(k.open(&[1; TICKET_LEN]), None);
    }

    #[test]
    fn user_tags_are_keyed() {
        let k = TicketKeys::new(&[5; 32]);
        assert_eq!(k.user_tag("alice"), k.user_tag("alice"));
        assert_ne!(k.user_tag("alice"), k.user_tag("bob"));
        assert_ne!(
            k.user_tag("alice"),
            TicketKeys::new(&[6; 32]).user_tag("alice")
        );
    }
}

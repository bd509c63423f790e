//! Request handling: authentication and the methods of RFC 8656 and RFC 6062.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng as _;
use stun::attr::{self, Attribute};
use stun::nonce::SecurityFeatures;
use stun::{AddressFamily, Key, Message, Method, PasswordAlgorithm, TransactionId};

use super::admission::Quota;
use super::allocation::{Allocation, ChannelConflict, RelayProtocol, Relayed};
use super::redirect::Verdict;
use super::reply::{Reply, Seal, PASSWORD_ALGORITHMS_WIRE};
use super::table::AllocId;
use super::{
    AuthFailure, ConnState, Output, PeerConnection, PendingAllocation, Refusal, Server, Stats,
    Timer, RESERVATION_LIFETIME,
};
use crate::nonce::NonceCheck;
use crate::FiveTuple;

/// The result of authenticating a request.
pub(super) struct Authed {
    pub username: Box<str>,
    pub key: Key,
    pub sha256: bool,
}

/// An Allocate request that passed every check and waits for its sockets.
#[derive(Debug)]
pub(crate) struct AllocateRequest {
    pub five_tuple: FiveTuple,
    pub txid: TransactionId,
    pub username: Box<str>,
    pub seal: Seal,
    pub lifetime: Duration,
    pub protocol: RelayProtocol,
    pub v4: bool,
    pub v6: bool,
    pub v6_unavailable: bool,
    pub even: bool,
    pub reserve: bool,
    pub reservation: Option<SocketAddr>,
    /// RFC 8016: the client asked for a MOBILITY-TICKET.
    pub mobility: bool,
}

/// What a Refresh asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshArgs {
    pub lifetime: Option<u32>,
    pub family: Option<AddressFamily>,
}

impl RefreshArgs {
    /// Decoded from the request (`Err` for a malformed attribute).
    pub fn of(msg: &Message<'_>) -> Result<Self, ()> {
        let lifetime = opt(msg, attr::LIFETIME, |a| match a {
            Attribute::Lifetime(l) => Some(l),
            _ => None,
        })?;
        let family = opt(msg, attr::REQUESTED_ADDRESS_FAMILY, |a| match a {
            Attribute::RequestedAddressFamily(f) => Some(f),
            _ => None,
        })?;
        Ok(RefreshArgs { lifetime, family })
    }
}

/// Nonces are bound to the client's IP address, not its port: RFC 6062
/// data connections come from new ports and reuse the control connection's
/// nonce.
fn nonce_scope(ft: &FiveTuple) -> SocketAddr {
    SocketAddr::new(ft.client.ip(), 0)
}

/// What the request asked for, decoded (`Err(())` for a malformed attribute).
fn opt<'a, T>(
    msg: &Message<'a>,
    typ: u16,
    f: impl Fn(Attribute<'a>) -> Option<T>,
) -> Result<Option<T>, ()> {
    match msg.get(typ) {
        None => Ok(None),
        Some(Ok(a)) => f(a).map(Some).ok_or(()),
        Some(Err(_)) => Err(()),
    }
}

impl Server {
    pub(super) fn handle_request(&mut self, now: Instant, ft: FiveTuple, msg: &Message<'_>) {
        let method = msg.method();
        let txid = msg.transaction_id();
        let fp = msg.has_fingerprint();
        if method == Method::BINDING {
            self.binding(now, ft, msg);
            return;
        }
        let known = [
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
            Method::CONNECT,
            Method::CONNECTION_BIND,
        ];
        if !known.contains(&method) {
            if self.unauthenticated_allowed(now, &ft) {
                self.refuse(&ft, method, txid, Refusal::BadRequest, &Seal::none(fp));
            }
            return;
        }
        let Some(auth) = self.authenticate(now, ft, msg) else {
            return;
        };
        let seal = Seal {
            key: Some(auth.key.clone()),
            sha256: auth.sha256,
            fingerprint: fp,
        };
        let mut unknown = [0u16; 16];
        let n = msg.unknown_required(attr::is_known, &mut unknown);
        if n > 0 {
            Refusal::UnknownAttributes.count(&mut self.stats);
            let mut r = Reply::refusal(method, txid, Refusal::UnknownAttributes);
            r.unknown = &unknown[..n];
            self.send_reply(&ft, &r, &seal);
            return;
        }
        if method == Method::REFRESH && !self.allocations.contains(&ft) {
            if let Some(ticket) = super::mobility::mobility_ticket(msg) {
                self.mobility_move(now, ft, msg, ticket, auth, seal);
                return;
            }
        }
        if method != Method::ALLOCATE && method != Method::CONNECTION_BIND {
            match self.allocations.get(&ft) {
                None => {
                    self.refuse(&ft, method, txid, Refusal::AllocationMismatch, &seal);
                    return;
                }
                Some(a) if a.username != auth.username => {
                    self.refuse(&ft, method, txid, Refusal::WrongCredentials, &seal);
                    return;
                }
                Some(_) => {}
            }
        }
        match method {
            Method::ALLOCATE => self.allocate(now, ft, msg, auth, seal),
            Method::REFRESH => self.refresh(now, ft, msg, seal),
            Method::CREATE_PERMISSION => self.create_permission(now, ft, msg, seal),
            Method::CHANNEL_BIND => self.channel_bind(now, ft, msg, seal),
            Method::CONNECT => self.connect(now, ft, msg, seal),
            _ => self.connection_bind(now, ft, msg, auth, seal),
        }
    }

    /// Rate limit for unauthenticated answers: only UDP can be spoofed into
    /// a reflection attack, so streams are not limited (many callers may
    /// share one address, e.g. a Tor exit).
    fn unauthenticated_allowed(&mut self, now: Instant, ft: &FiveTuple) -> bool {
        if ft.transport.is_stream() || self.limiter.allow(ft.client.ip(), now) {
            true
        } else {
            self.stats.rate_limited += 1;
            false
        }
    }

    fn binding(&mut self, now: Instant, ft: FiveTuple, msg: &Message<'_>) {
        if !self.unauthenticated_allowed(now, &ft) {
            return;
        }
        let txid = msg.transaction_id();
        let seal = Seal::none(msg.has_fingerprint());
        let mut unknown = [0u16; 16];
        let n = msg.unknown_required(attr::is_known, &mut unknown);
        if n > 0 {
            Refusal::UnknownAttributes.count(&mut self.stats);
            let mut r = Reply::refusal(Method::BINDING, txid, Refusal::UnknownAttributes);
            r.unknown = &unknown[..n];
            self.send_reply(&ft, &r, &seal);
            return;
        }
        let r = Reply::success(Method::BINDING, txid).with(Attribute::XorMappedAddress(ft.client));
        self.send_reply(&ft, &r, &seal);
    }

    fn features(&self) -> SecurityFeatures {
        SecurityFeatures {
            password_algorithms: self.config.offer_sha256,
            username_anonymity: true,
        }
    }

    /// 401 (or 438) with REALM, a fresh NONCE and PASSWORD-ALGORITHMS.
    fn challenge(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>, code: u16) {
        if !self.unauthenticated_allowed(now, ft) {
            return;
        }
        let nonce = self.nonces.issue(now, nonce_scope(ft), self.features());
        let realm = self.config.credentials.realm().to_owned();
        let mut r = Reply::error(msg.method(), msg.transaction_id(), code)
            .with(Attribute::Realm(&realm))
            .with(Attribute::Nonce(&nonce));
        r.password_algorithms = self.config.offer_sha256;
        self.send_reply(ft, &r, &Seal::none(msg.has_fingerprint()));
    }

    fn auth_fail(&mut self, now: Instant, ft: &FiveTuple, msg: &Message<'_>, why: AuthFailure) {
        self.stats.auth_failure(why);
        match why {
            AuthFailure::StaleNonce => self.challenge(now, ft, msg, 438),
            AuthFailure::BadRequest => {
                if self.unauthenticated_allowed(now, ft) {
                    let seal = Seal::none(msg.has_fingerprint());
                    self.refuse(
                        ft,
                        msg.method(),
                        msg.transaction_id(),
                        Refusal::BadRequest,
                        &seal,
                    );
                }
            }
            _ => self.challenge(now, ft, msg, 401),
        }
    }

    /// Long-term credential check (RFC 8489 §9.2.4). Replies and returns
    /// `None` when the request does not pass.
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) -> Option<Authed> {
        if !msg.has_integrity() && !msg.has_integrity_sha256() {
            self.stats.challenges += 1;
            self.challenge(now, &ft, msg, 401);
            return None;
        }
        let realm = match msg.get(attr::REALM) {
            Some(Ok(Attribute::Realm(r))) => r,
            _ => {
                self.auth_fail(now, &ft, msg, AuthFailure::BadRequest);
                return None;
            }
        };
        let nonce = match msg.get(attr::NONCE) {
            Some(Ok(Attribute::Nonce(n))) => n,
            _ => {
                self.auth_fail(now, &ft, msg, AuthFailure::BadRequest);
                return None;
            }
        };
        let username: Box<str> = match (msg.get(attr::USERNAME), msg.get(attr::USERHASH)) {
            (Some(Ok(Attribute::Username(u))), _) => u.into(),
            (None, Some(Ok(Attribute::UserHash(h)))) => {
                match self.config.credentials.username_for_hash(&h) {
                    Some(u) => u.into(),
                    None => {
                        self.auth_fail(now, &ft, msg, AuthFailure::UnknownUser);
                        return None;
                    }
                }
            }
            _ => {
                self.auth_fail(now, &ft, msg, AuthFailure::BadRequest);
                return None;
            }
        };
        if self.nonces.check(nonce, now, nonce_scope(&ft)) != NonceCheck::Valid {
            self.auth_fail(now, &ft, msg, AuthFailure::StaleNonce);
            return None;
        }
        if realm != self.config.credentials.realm() {
            self.auth_fail(now, &ft, msg, AuthFailure::WrongRealm);
            return None;
        }
        let algorithm = match self.password_algorithm(msg, nonce) {
            Ok(a) => a,
            Err(()) => {
                self.auth_fail(now, &ft, msg, AuthFailure::BadRequest);
                return None;
            }
        };
        let unix = self.unix_now(now);
        // TURN REST credentials are checked for expiry when an allocation is
        // made; requests on that allocation by the same user (Refresh,
        // CreatePermission, ChannelBind, Connect) keep working after the
        // expiry, so calls outlive short-lived credentials.
        let owns_allocation = msg.method() != Method::ALLOCATE
            && self
                .allocations
                .get(&ft)
                .is_some_and(|a| a.username == username);
        let unix = match crate::auth::rest_expiry(&username) {
            Some(expiry) if owns_allocation => unix.min(expiry),
            _ => unix,
        };
        let keys = match self.config.credentials.keys(&username, algorithm, unix) {
            Ok(k) => k,
            Err(e) => {
                let why = match e {
                    crate::auth::AuthError::Expired => AuthFailure::Expired,
                    _ => AuthFailure::UnknownUser,
                };
                self.auth_fail(now, &ft, msg, why);
                return None;
            }
        };
        let sha256 = msg.has_integrity_sha256();
        let key = keys.into_iter().find(|k| {
            if sha256 {
                msg.verify_integrity_sha256(k).is_ok()
            } else {
                msg.verify_integrity(k).is_ok()
            }
        });
        match key {
            Some(key) => Some(Authed {
                username,
                key,
                sha256,
            }),
            None => {
                self.auth_fail(now, &ft, msg, AuthFailure::BadIntegrity);
                None
            }
        }
    }

    /// RFC 8489 §9.2.4: which password algorithm the request uses.
    fn password_algorithm(&self, msg: &Message<'_>, nonce: &str) -> Result<PasswordAlgorithm, ()> {
        let offered = SecurityFeatures::from_nonce(nonce).is_some_and(|f| f.password_algorithms)
            && self.config.offer_sha256;
        if !offered {
            return Ok(PasswordAlgorithm::Md5);
        }
        let list = msg.get(attr::PASSWORD_ALGORITHMS);
        let one = msg.get(attr::PASSWORD_ALGORITHM);
        match (list, one) {
            (None, None) => Ok(PasswordAlgorithm::Md5),
            (
                Some(Ok(Attribute::PasswordAlgorithms(l))),
                Some(Ok(Attribute::PasswordAlgorithm(a))),
            ) => {
                if l.as_bytes() != PASSWORD_ALGORITHMS_WIRE || !a.params.is_empty() {
                    return Err(());
                }
                PasswordAlgorithm::from_number(a.algorithm).ok_or(())
            }
            _ => Err(()),
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: Authed,
        seal: Seal,
    ) {
        let txid = msg.transaction_id();
        if let Some(a) = self.allocations.get(&ft) {
            if a.allocate_txid == txid && a.username == auth.username {
                // A retransmission: answer again.
                let remaining = a.expires.saturating_duration_since(now);
                let relayed: Vec<SocketAddr> =
                    a.relayed.iter().flatten().map(|r| r.advertised).collect();
                let mut r = Reply::success(Method::ALLOCATE, txid);
                for addr in &relayed {
                    r = r.with(Attribute::XorRelayedAddress(*addr));
                }
                let r = r
                    .with(Attribute::Lifetime(remaining.as_secs() as u32))
                    .with(Attribute::XorMappedAddress(ft.client));
                self.send_reply(&ft, &r, &seal);
            } else {
                self.refuse(
                    &ft,
                    Method::ALLOCATE,
                    txid,
                    Refusal::AllocationMismatch,
                    &seal,
                );
            }
            return;
        }
        if self.pending_by_tuple.contains_key(&ft) {
            return;
        }
        let existing = self.admission.book_total();
        match self
            .config
            .redirect
            .verdict(ft.transport, &ft.client, existing)
        {
            Verdict::Admit => {}
            Verdict::Alternate(addr) => {
                self.stats.redirected += 1;
                let r = Reply::error(Method::ALLOCATE, txid, 300)
                    .with(Attribute::AlternateServer(addr));
                self.send_reply(&ft, &r, &seal);
                return;
            }
            Verdict::Refuse => {
                self.refuse(&ft, Method::ALLOCATE, txid, Refusal::Capacity, &seal);
                return;
            }
        }
        match self.check_allocate(now, ft, msg, auth, seal.clone()) {
            Ok(req) => {
                let pending = PendingAllocation {
                    request: req,
                    addrs: Vec::new(),
                    attempts: 0,
                };
                self.start_bind(now, pending);
            }
            Err(why) => self.refuse(&ft, Method::ALLOCATE, txid, why, &seal),
        }
    }

    fn check_allocate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: Authed,
        seal: Seal,
    ) -> Result<AllocateRequest, Refusal> {
        let transport = opt(msg, attr::REQUESTED_TRANSPORT, |a| match a {
            Attribute::RequestedTransport(p) => Some(p),
            _ => None,
        })
        .map_err(|_| Refusal::BadRequest)?
        .ok_or(Refusal::BadRequest)?;
        let raf = opt(msg, attr::REQUESTED_ADDRESS_FAMILY, |a| match a {
            Attribute::RequestedAddressFamily(f) => Some(f),
            _ => None,
        })
        .map_err(|_| Refusal::BadRequest)?;
        let aaf = opt(msg, attr::ADDITIONAL_ADDRESS_FAMILY, |a| match a {
            Attribute::AdditionalAddressFamily(f) => Some(f),
            _ => None,
        })
        .map_err(|_| Refusal::BadRequest)?;
        let even = opt(msg, attr::EVEN_PORT, |a| match a {
            Attribute::EvenPort(r) => Some(r),
            _ => None,
        })
        .map_err(|_| Refusal::BadRequest)?;
        let token = opt(msg, attr::RESERVATION_TOKEN, |a| match a {
            Attribute::ReservationToken(t) => Some(t),
            _ => None,
        })
        .map_err(|_| Refusal::BadRequest)?;
        let lifetime = opt(msg, attr::LIFETIME, |a| match a {
            Attribute::Lifetime(l) => Some(l),
            _ => None,
        })
        .map_err(|_| Refusal::BadRequest)?;
        let dont_fragment = msg.get(attr::DONT_FRAGMENT).is_some();
        let mobility = match msg.get(attr::MOBILITY_TICKET) {
            None => false,
            Some(Ok(Attribute::MobilityTicket([]))) => true,
            Some(_) => return Err(Refusal::BadRequest),
        };
        if mobility && !self.config.mobility {
            self.stats.mobility_refused += 1;
            return Err(Refusal::MobilityForbidden);
        }

        let protocol = match transport {
            17 => RelayProtocol::Udp,
            6 if self.config.tcp_relay => {
                if !ft.transport.is_stream() || even.is_some() || token.is_some() || dont_fragment {
                    return Err(Refusal::BadRequest);
                }
                RelayProtocol::Tcp
            }
            _ => return Err(Refusal::UnsupportedTransport),
        };
        if raf.is_some() && aaf.is_some() {
            return Err(Refusal::BadRequest);
        }
        if token.is_some() && (even.is_some() || raf.is_some() || aaf.is_some()) {
            return Err(Refusal::BadRequest);
        }
        if aaf.is_some_and(|f| f != AddressFamily::V6) {
            return Err(Refusal::BadRequest);
        }
        let relay = &self.config.relay;
        let (mut v4, mut v6, mut v6_unavailable) = match (raf, aaf) {
            (_, Some(_)) => (true, true, false),
            (Some(AddressFamily::V6), None) => (false, true, false),
            _ => (true, false, false),
        };
        if v4 && relay.ipv4.is_none() || !v4 && v6 && relay.ipv6.is_none() {
            return Err(Refusal::AddressFamilyNotSupported);
        }
        if v4 && v6 && relay.ipv6.is_none() {
            v6 = false;
            v6_unavailable = true;
        }
        let reservation = match token {
            Some(t) => {
                // Any shard's token: the ports are shared.
                let addr = self.admission.redeem(&t, now).ok_or(Refusal::Capacity)?;
                v4 = addr.is_ipv4();
                v6 = !v4;
                Some(addr)
            }
            None => None,
        };
        let l = &self.config.limits;
        let quota = Quota {
            per_user: if self.config.credentials.is_static(&auth.username) {
                l.allocations_per_static_user
            } else {
                l.allocations_per_user
            },
            per_ip: l.allocations_per_ip,
            total: l.allocations_total,
        };
        if let Err(why) = self.admission.admit(&auth.username, ft.client.ip(), quota) {
            if let Some(addr) = reservation {
                self.release_port(addr);
            }
            return Err(why);
        }
        let cfg = &self.config;
        let lifetime = match lifetime {
            Some(s) => Duration::from_secs(u64::from(s))
                .min(cfg.max_lifetime)
                .max(cfg.default_lifetime),
            None => cfg.default_lifetime,
        };
        Ok(AllocateRequest {
            five_tuple: ft,
            txid: msg.transaction_id(),
            username: auth.username,
            seal,
            lifetime,
            protocol,
            v4,
            v6,
            v6_unavailable,
            even: even.is_some(),
            reserve: even == Some(true),
            reservation,
            // RFC 6062 allocations do not move: their peer connections
            // are bound to the control connection's streams.
            mobility: mobility && protocol == RelayProtocol::Udp,
        })
    }

    /// Refuses an admitted Allocate request: its quota share goes back.
    pub(super) fn refuse_allocation(&mut self, req: AllocateRequest, why: Refusal) {
        self.quota_release(&req.username, &req.five_tuple);
        self.refuse(&req.five_tuple, Method::ALLOCATE, req.txid, why, &req.seal);
    }

    pub(super) fn quota_release(&mut self, username: &str, ft: &FiveTuple) {
        self.admission.release(username, ft.client.ip());
    }

    /// Picks ports and asks the driver to bind them.
    pub(super) fn start_bind(&mut self, _now: Instant, mut pending: PendingAllocation) {
        let req = &pending.request;
        let relay = self.config.relay.clone();
        let tcp = req.protocol == RelayProtocol::Tcp;
        let mut addrs = Vec::new();
        let mut ok = true;
        if let Some(addr) = req.reservation {
            let adv_ip = if addr.is_ipv4() {
                relay.external_ipv4.unwrap_or(addr.ip())
            } else {
                relay.external_ipv6.unwrap_or(addr.ip())
            };
            addrs.push((addr, SocketAddr::new(adv_ip, addr.port())));
        } else {
            if req.v4 {
                match (
                    relay.ipv4,
                    self.admission
                        .pick_port(&mut self.rng, false, req.even, req.reserve, tcp),
                ) {
                    (Some(ip), Some(port)) => {
                        let adv = relay.external_ipv4.unwrap_or(ip);
                        addrs.push((SocketAddr::new(ip, port), SocketAddr::new(adv, port)));
                    }
                    _ => ok = false,
                }
            }
            if req.v6 && ok {
                let first = !req.v4;
                match (
                    relay.ipv6,
                    self.admission.pick_port(
                        &mut self.rng,
                        true,
                        first && req.even,
                        first && req.reserve,
                        tcp,
                    ),
                ) {
                    (Some(ip), Some(port)) => {
                        let adv = relay.external_ipv6.unwrap_or(ip);
                        addrs.push((SocketAddr::new(ip, port), SocketAddr::new(adv, port)));
                    }
                    _ => ok = false,
                }
            }
        }
        if !ok {
            for (local, _) in &addrs {
                self.release_port(*local);
            }
            if req.reserve {
                if let Some((local, _)) = addrs.first() {
                    self.release_port(SocketAddr::new(local.ip(), local.port() + 1));
                }
            }
            self.refuse_allocation(pending.request, Refusal::Capacity);
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        let protocol = req.protocol;
        let locals = addrs.iter().map(|(l, _)| *l).collect();
        pending.addrs = addrs;
        self.pending_by_tuple
            .insert(pending.request.five_tuple, token);
        self.pending.insert(token, pending);
        self.outputs.push_back(Output::BindRelay {
            token,
            protocol,
            addrs: locals,
        });
    }

    pub(super) fn finish_allocation(
        &mut self,
        now: Instant,
        pending: PendingAllocation,
    ) -> AllocId {
        let req = pending.request;
        let ft = req.five_tuple;
        let mut relayed = [None, None];
        for (i, (local, advertised)) in pending.addrs.iter().take(2).enumerate() {
            relayed[i] = Some(Relayed {
                local: *local,
                advertised: *advertised,
            });
        }
        let mut reserved_token = None;
        let mut reply = Reply::success(Method::ALLOCATE, req.txid);
        for (_, adv) in &pending.addrs {
            reply = reply.with(Attribute::XorRelayedAddress(*adv));
        }
        if req.reserve {
            if let Some((local, _)) = pending.addrs.first() {
                let token = self.new_reservation_token();
                let addr = SocketAddr::new(local.ip(), local.port() + 1);
                let expires = now + RESERVATION_LIFETIME;
                self.admission.reserve(token, addr, expires);
                self.schedule(expires, Timer::Reservation(token));
                reserved_token = Some(token);
            }
        }
        let reply = reply
            .with(Attribute::Lifetime(req.lifetime.as_secs() as u32))
            .with(Attribute::XorMappedAddress(ft.client));
        let reply = match &reserved_token {
            Some(t) => reply.with(Attribute::ReservationToken(*t)),
            None => reply,
        };
        let expires = now + req.lifetime;
        let serial = req.mobility.then(|| self.rng.gen::<u64>());
        let id = self.allocations.insert(Allocation {
            five_tuple: ft,
            username: req.username,
            protocol: req.protocol,
            relayed,
            expires,
            allocate_txid: req.txid,
            permissions: Default::default(),
            channels: Default::default(),
            peer_channels: Default::default(),
            connections: Vec::new(),
            bandwidth: Default::default(),
            mobility: serial,
        });
        let reply = if req.v6_unavailable {
            reply.with(Attribute::AddressErrorCode(attr::AddressErrorCode {
                family: AddressFamily::V6,
                code: 440,
                reason: attr::reason_phrase(440),
            }))
        } else {
            reply
        };
        let ticket = self.ticket_for(id);
        let reply = match &ticket {
            Some(t) => reply.with(Attribute::MobilityTicket(t)),
            None => reply,
        };
        self.send_reply(&ft, &reply, &req.seal);
        self.schedule(expires, Timer::Allocation(id));
        self.stats.allocations_created[Stats::transport_index(ft.transport)] += 1;
        self.stats.allocations_current = self.allocations.current();
        self.outputs.push_back(Output::AllocationCreated {
            five_tuple: ft,
            relayed: pending.addrs.iter().map(|(_, a)| *a).collect(),
            protocol: req.protocol,
            lifetime: req.lifetime,
        });
        id
    }

    fn refresh(&mut self, now: Instant, ft: FiveTuple, msg: &Message<'_>, seal: Seal) {
        let txid = msg.transaction_id();
        let Ok(args) = RefreshArgs::of(msg) else {
            self.refuse(&ft, Method::REFRESH, txid, Refusal::BadRequest, &seal);
            return;
        };
        let Some(id) = self.allocations.id_of(&ft) else {
            return;
        };
        self.refresh_id(now, id, args, txid, &seal);
    }

    /// Refresh of the allocation `id` (on its current 5-tuple), answered
    /// with a new MOBILITY-TICKET if it has mobility.
    pub(super) fn refresh_id(
        &mut self,
        now: Instant,
        id: AllocId,
        args: RefreshArgs,
        txid: TransactionId,
        seal: &Seal,
    ) {
        let Some(alloc) = self.allocations.by_id_mut(id) else {
            return;
        };
        let ft = alloc.five_tuple;
        if let Some(f) = args.family {
            let has = alloc
                .relayed
                .iter()
                .flatten()
                .any(|r| AddressFamily::of(&r.local.ip()) == f);
            if !has {
                self.refuse(
                    &ft,
                    Method::REFRESH,
                    txid,
                    Refusal::PeerFamilyMismatch,
                    seal,
                );
                return;
            }
        }
        if args.lifetime == Some(0) {
            let r = Reply::success(Method::REFRESH, txid).with(Attribute::Lifetime(0));
            self.send_reply(&ft, &r, seal);
            self.remove_allocation(id, super::EndReason::Deleted);
            return;
        }
        let granted = match args.lifetime {
            Some(s) => Duration::from_secs(u64::from(s)).min(self.config.max_lifetime),
            None => self.config.default_lifetime,
        };
        alloc.expires = now + granted;
        self.schedule(now + granted, Timer::Allocation(id));
        let ticket = self.ticket_for(id);
        let r = Reply::success(Method::REFRESH, txid)
            .with(Attribute::Lifetime(granted.as_secs() as u32));
        let r = match &ticket {
            Some(t) => r.with(Attribute::MobilityTicket(t)),
            None => r,
        };
        self.send_reply(&ft, &r, seal);
    }

    /// Whether a client may reach `peer`: `Ok(false)` by the policy,
    /// `Ok(true)` only because it is a live allocation of this relay
    /// (then each packet must be checked again), `Err` refused.
    fn peer_allowed(&self, peer: &SocketAddr, protocol: RelayProtocol) -> Result<bool, ()> {
        if self.policy.check(*peer).is_ok() {
            Ok(false)
        } else if self.is_live_relay(peer, protocol)
            || self.other_shard_peer(peer, protocol).is_some()
        {
            Ok(true)
        } else {
            Err(())
        }
    }

    /// [`Server::peer_allowed`] for CreatePermission, whose port is ignored
    /// (RFC 8656 §9.1): the policy judges the IP; one of the relay's own IPs
    /// is allowed when the address names a live allocation of the same
    /// relaying protocol exactly, or with port 0 when some such allocation
    /// uses that IP (each packet is then checked against live allocations).
    fn permission_allowed(&self, peer: &SocketAddr, protocol: RelayProtocol) -> Result<bool, ()> {
        if self.policy.check_ip(peer.ip()).is_ok() {
            Ok(false)
        } else if self.is_live_relay(peer, protocol)
            || self.other_shard_peer(peer, protocol).is_some()
            || (peer.port() == 0
                && self.shard.count > 1
                && self.config.relay.all().contains(&peer.ip()))
            || (peer.port() == 0
                && self
                    .allocations
                    .relay_addresses()
                    .any(|(a, id)| a.ip() == peer.ip() && self.relays_with(id, protocol)))
        {
            Ok(true)
        } else {
            Err(())
        }
    }

    fn peers<'a>(msg: &Message<'a>) -> Result<Vec<SocketAddr>, ()> {
        let mut out = Vec::new();
        for a in msg.attributes() {
            match a {
                Ok(Attribute::XorPeerAddress(p)) => out.push(p),
                Err(stun::Error::InvalidAttribute(attr::XOR_PEER_ADDRESS)) => return Err(()),
                _ => {}
            }
            if out.len() > 64 {
                return Err(());
            }
        }
        if out.is_empty() {
            Err(())
        } else {
            Ok(out)
        }
    }

    fn create_permission(&mut self, now: Instant, ft: FiveTuple, msg: &Message<'_>, seal: Seal) {
        let txid = msg.transaction_id();
        let Ok(peers) = Self::peers(msg) else {
            self.refuse(
                &ft,
                Method::CREATE_PERMISSION,
                txid,
                Refusal::BadRequest,
                &seal,
            );
            return;
        };
        let Some(protocol) = self.allocations.get(&ft).map(|a| a.protocol) else {
            return;
        };
        let mut own = Vec::with_capacity(peers.len());
        for p in &peers {
            if !self
                .allocations
                .get(&ft)
                .is_some_and(|a| a.has_family(&p.ip()))
            {
                self.refuse(
                    &ft,
                    Method::CREATE_PERMISSION,
                    txid,
                    Refusal::PeerFamilyMismatch,
                    &seal,
                );
                return;
            }
            match self.permission_allowed(p, protocol) {
                Ok(o) => own.push(o),
                Err(()) => {
                    self.refuse(
                        &ft,
                        Method::CREATE_PERMISSION,
                        txid,
                        Refusal::PeerForbidden,
                        &seal,
                    );
                    return;
                }
            }
        }
        let max = self.config.limits.permissions_per_allocation as usize;
        let Some(alloc) = self.allocations.get_mut(&ft) else {
            return;
        };
        let new = peers
            .iter()
            .filter(|p| alloc.permission(&p.ip(), now).is_none())
            .count();
        if alloc.live_permissions(now) + new > max {
            self.refuse(
                &ft,
                Method::CREATE_PERMISSION,
                txid,
                Refusal::Capacity,
                &seal,
            );
            return;
        }
        for (p, o) in peers.iter().zip(own) {
            alloc.install_permission(p.ip(), o, now);
        }
        let r = Reply::success(Method::CREATE_PERMISSION, txid);
        self.send_reply(&ft, &r, &seal);
    }

    fn channel_bind(&mut self, now: Instant, ft: FiveTuple, msg: &Message<'_>, seal: Seal) {
        let txid = msg.transaction_id();
        let number = match msg.get(attr::CHANNEL_NUMBER) {
            Some(Ok(Attribute::ChannelNumber(n))) if stun::channel::is_rfc5766_channel(n) => n,
            _ => {
                self.refuse(&ft, Method::CHANNEL_BIND, txid, Refusal::BadRequest, &seal);
                return;
            }
        };
        let peer = match msg.get(attr::XOR_PEER_ADDRESS) {
            Some(Ok(Attribute::XorPeerAddress(p))) => p,
            _ => {
                self.refuse(&ft, Method::CHANNEL_BIND, txid, Refusal::BadRequest, &seal);
                return;
            }
        };
        let Some(alloc) = self.allocations.get(&ft) else {
            return;
        };
        if alloc.protocol != RelayProtocol::Udp {
            self.refuse(&ft, Method::CHANNEL_BIND, txid, Refusal::BadRequest, &seal);
            return;
        }
        if !alloc.has_family(&peer.ip()) {
            self.refuse(
                &ft,
                Method::CHANNEL_BIND,
                txid,
                Refusal::PeerFamilyMismatch,
                &seal,
            );
            return;
        }
        let max = self.config.limits.channels_per_allocation as usize;
        let conflict = alloc.check_channel(number, peer, now, max);
        let own = match self.peer_allowed(&peer, RelayProtocol::Udp) {
            Ok(o) => o,
            Err(()) => {
                self.refuse(
                    &ft,
                    Method::CHANNEL_BIND,
                    txid,
                    Refusal::PeerForbidden,
                    &seal,
                );
                return;
            }
        };
        match conflict {
            Ok(()) => {}
            Err(ChannelConflict::TooMany) => {
                self.refuse(&ft, Method::CHANNEL_BIND, txid, Refusal::Capacity, &seal);
                return;
            }
            Err(_) => {
                self.refuse(&ft, Method::CHANNEL_BIND, txid, Refusal::BadRequest, &seal);
                return;
            }
        }
        let Some(alloc) = self.allocations.get_mut(&ft) else {
            return;
        };
        alloc.bind_channel(number, peer, now);
        alloc.install_permission(peer.ip(), own, now);
        let r = Reply::success(Method::CHANNEL_BIND, txid);
        self.send_reply(&ft, &r, &seal);
    }

    fn connect(&mut self, now: Instant, ft: FiveTuple, msg: &Message<'_>, seal: Seal) {
        let txid = msg.transaction_id();
        let peer = match msg.get(attr::XOR_PEER_ADDRESS) {
            Some(Ok(Attribute::XorPeerAddress(p))) => p,
            _ => {
                self.refuse(&ft, Method::CONNECT, txid, Refusal::BadRequest, &seal);
                return;
            }
        };
        let Some(aid) = self.allocations.id_of(&ft) else {
            return;
        };
        let Some(alloc) = self.allocations.by_id(aid) else {
            return;
        };
        if alloc.protocol != RelayProtocol::Tcp {
            self.refuse(&ft, Method::CONNECT, txid, Refusal::BadRequest, &seal);
            return;
        }
        let Some(relay) = alloc.relayed_for(&peer).map(|r| r.local) else {
            self.refuse(
                &ft,
                Method::CONNECT,
                txid,
                Refusal::PeerFamilyMismatch,
                &seal,
            );
            return;
        };
        let exists = alloc
            .connections
            .iter()
            .any(|id| self.connections.get(id).is_some_and(|c| c.peer == peer));
        let full =
            alloc.connections.len() >= self.config.limits.connections_per_allocation as usize;
        let own = match self.peer_allowed(&peer, RelayProtocol::Tcp) {
            Ok(o) => o,
            Err(()) => {
                self.refuse(&ft, Method::CONNECT, txid, Refusal::PeerForbidden, &seal);
                return;
            }
        };
        if exists {
            self.refuse(&ft, Method::CONNECT, txid, Refusal::ConnectionExists, &seal);
            return;
        }
        if full {
            self.refuse(&ft, Method::CONNECT, txid, Refusal::Capacity, &seal);
            return;
        }
        let id = self.new_connection_id();
        self.connections.insert(
            id,
            PeerConnection {
                allocation: aid,
                peer,
                state: ConnState::Connecting { txid },
                seal,
            },
        );
        if let Some(a) = self.allocations.by_id_mut(aid) {
            a.connections.push(id);
            a.install_permission(peer.ip(), own, now);
        }
        self.outputs.push_back(Output::ConnectPeer {
            connection_id: id,
            relay,
            peer,
        });
    }

    fn connection_bind(
        &mut self,
        _now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: Authed,
        seal: Seal,
    ) {
        let txid = msg.transaction_id();
        let id = match self.check_connection_bind(ft, msg, &auth) {
            Ok(id) => id,
            Err(why) => return self.refuse(&ft, Method::CONNECTION_BIND, txid, why, &seal),
        };
        if let Some(c) = self.connections.get_mut(&id) {
            c.state = ConnState::Bound { data: ft };
        }
        self.data_connections.insert(ft, id);
        let r = Reply::success(Method::CONNECTION_BIND, txid);
        self.send_reply(&ft, &r, &seal);
        self.outputs.push_back(Output::BindConnection {
            connection_id: id,
            data: ft,
        });
    }

    /// The connection a ConnectionBind on `ft` may bind: a fresh stream
    /// (no allocation, not bound yet) and a connection awaiting its bind
    /// whose allocation belongs to the same user.
    fn check_connection_bind(
        &self,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<u32, Refusal> {
        let id = match msg.get(attr::CONNECTION_ID) {
            Some(Ok(Attribute::ConnectionId(id))) => id,
            _ => return Err(Refusal::BadRequest),
        };
        if !ft.transport.is_stream()
            || self.allocations.contains(&ft)
            || self.data_connections.contains_key(&ft)
        {
            return Err(Refusal::BadRequest);
        }
        let conn = (self.connections.get(&id))
            .filter(|c| matches!(c.state, ConnState::AwaitingBind { .. }))
            .ok_or(Refusal::BadRequest)?;
        let owner = self.allocations.by_id(conn.allocation).map(|a| &a.username);
        if owner.map(|u| &**u) != Some(&*auth.username) {
            return Err(Refusal::WrongCredentials);
        }
        Ok(id)
    }
}

//! Responses and indications from the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun::attr::{self, Attribute};
use stun::{Class, Message, Method, TransactionId};

use super::credentials::{is_authentic, Credentials};
use super::tables::MAX_PERMISSIONS;
use super::transaction::{RequestKind, Retries, Transaction};
use super::{Client, ClientState, Event, TimerKey, LOCAL_FAILURE};
use super::{CHANNEL_REFRESH, PERMISSION_REFRESH};

impl Client {
    pub(super) fn on_stun(&mut self, now: Instant, msg: &Message<'_>) {
        match msg.class() {
            Class::Indication => self.on_indication(msg),
            Class::Success | Class::Error => self.on_response(now, msg),
            Class::Request => {}
        }
    }

    fn on_indication(&mut self, msg: &Message<'_>) {
        if !matches!(
            self.state,
            ClientState::Allocated | ClientState::Deallocating
        ) {
            return;
        }
        let Some(Ok(Attribute::XorPeerAddress(peer))) = msg.get(attr::XOR_PEER_ADDRESS) else {
            return;
        };
        match msg.method() {
            Method::DATA => {
                if let Some(Ok(Attribute::Data(data))) = msg.get(attr::DATA) {
                    self.events.push(Event::Data {
                        peer,
                        data: data.to_vec(),
                    });
                }
            }
            Method::CONNECTION_ATTEMPT => {
                if let Some(Ok(Attribute::ConnectionId(connection_id))) =
                    msg.get(attr::CONNECTION_ID)
                {
                    self.events.push(Event::ConnectionAttempt {
                        peer,
                        connection_id,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_response(&mut self, now: Instant, msg: &Message<'_>) {
        let id = msg.transaction_id();
        let Some(tx) = self.transactions.get(&id) else {
            return;
        };
        if tx.kind.method() != msg.method()
            || (msg.has_fingerprint() && msg.verify_fingerprint().is_err())
        {
            return;
        }
        let error = match msg.class() {
            Class::Error => match msg.get(attr::ERROR_CODE) {
                Some(Ok(Attribute::ErrorCode(e))) => Some(e),
                _ => return,
            },
            _ => None,
        };
        let challenge = error.is_some_and(|e| e.code == 401 || e.code == 438);
        if !challenge && !is_authentic(msg, tx.key.as_ref()) {
            return;
        }
        let Some(tx) = self.transactions.remove(&id) else {
            return;
        };
        self.timers.cancel(TimerKey::Transaction(id));
        match error {
            None => self.on_success(now, id, &tx, msg),
            Some(e) => self.on_error(now, id, &tx, e.code, e.reason, msg),
        }
    }

    fn on_error(
        &mut self,
        now: Instant,
        id: TransactionId,
        tx: &Transaction,
        code: u16,
        reason: &str,
        msg: &Message<'_>,
    ) {
        let challenge = code == 401 || code == 438;
        let mut why = None;
        if challenge {
            // Take the new realm and nonce even when giving up: the next
            // request should not meet the same 438.
            let (user, pass) = (&self.config.username, &self.config.password);
            match Credentials::from_challenge(msg, self.creds.as_ref(), user, pass) {
                Ok(c) => self.creds = Some(c),
                Err(e) => why = Some(e),
            }
        }
        let retries = match code {
            _ if why.is_some() => None,
            // A 401 to a request without credentials is the challenge; one
            // more is allowed after a request that carried them.
            401 if tx.key.is_none() => Some(tx.retries),
            401 if !tx.retries.unauthorized => Some(Retries {
                unauthorized: true,
                ..tx.retries
            }),
            438 if !tx.retries.stale_nonce => Some(Retries {
                stale_nonce: true,
                ..tx.retries
            }),
            _ => None,
        };
        let Some(retries) = retries else {
            return self.fail(now, id, tx.kind, code, why.unwrap_or(reason));
        };
        if let Err(e) = self.send_request(now, tx.kind, retries) {
            self.fail(now, id, tx.kind, LOCAL_FAILURE, &e.to_string());
        }
    }

    fn on_success(&mut self, now: Instant, id: TransactionId, tx: &Transaction, msg: &Message<'_>) {
        let lifetime = match msg.get(attr::LIFETIME) {
            Some(Ok(Attribute::Lifetime(s))) => Duration::from_secs(u64::from(s)),
            _ => self.config.lifetime,
        };
        if let Some(Ok(Attribute::MobilityTicket(t))) = msg.get(attr::MOBILITY_TICKET) {
            if !t.is_empty()
                && matches!(
                    tx.kind,
                    RequestKind::Allocate | RequestKind::Refresh { .. } | RequestKind::Move { .. }
                )
            {
                self.ticket = Some(t.to_vec());
            }
        }
        match tx.kind {
            RequestKind::Allocate => {
                let relayed: Vec<SocketAddr> = msg
                    .attributes()
                    .filter_map(|a| match a {
                        Ok(Attribute::XorRelayedAddress(r)) => Some(r),
                        _ => None,
                    })
                    .take(2)
                    .collect();
                if relayed.is_empty() {
                    let why = "success response without XOR-RELAYED-ADDRESS";
                    return self.fail(now, id, tx.kind, LOCAL_FAILURE, why);
                }
                let mapped = match msg.get(attr::XOR_MAPPED_ADDRESS) {
                    Some(Ok(Attribute::XorMappedAddress(m))) => Some(m),
                    _ => None,
                };
                self.state = ClientState::Allocated;
                self.relayed.clone_from(&relayed);
                self.mapped = mapped;
                self.schedule_allocation(tx.started, lifetime);
                self.events.push(Event::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
            }
            RequestKind::Refresh { lifetime: 0 } => {
                self.state = ClientState::Deallocated;
                self.teardown();
                self.events.push(Event::Deallocated);
            }
            RequestKind::Refresh { .. } => {
                if self.state == ClientState::Allocated {
                    self.schedule_allocation(tx.started, lifetime);
                    self.events.push(Event::Refreshed { lifetime });
                }
            }
            RequestKind::Move { .. } => {
                if self.state == ClientState::Allocated {
                    self.schedule_allocation(tx.started, lifetime);
                    self.events.push(Event::Moved { lifetime });
                }
            }
            RequestKind::CreatePermission { peer } => {
                let Some(p) = self
                    .permissions
                    .get_mut(&peer)
                    .filter(|p| p.pending == Some(id))
                else {
                    return;
                };
                p.pending = None;
                let first = !p.installed;
                p.installed = true;
                let at = tx.started + PERMISSION_REFRESH;
                self.timers.set(TimerKey::Permission(peer), at);
                if first {
                    self.events.push(Event::PermissionCreated(peer));
                }
            }
            RequestKind::ChannelBind { peer, channel } => {
                let Some(c) = self
                    .channels
                    .get_mut(channel)
                    .filter(|c| c.pending == Some(id))
                else {
                    return;
                };
                c.pending = None;
                let first = !c.confirmed;
                c.confirmed = true;
                self.timers
                    .set(TimerKey::Channel(channel), tx.started + CHANNEL_REFRESH);
                // The binding installed or refreshed the permission too.
                let ip = peer.ip();
                if self.permissions.len() < MAX_PERMISSIONS || self.permissions.contains_key(&ip) {
                    self.permissions.entry(ip).or_default().installed = true;
                    let at = tx.started + PERMISSION_REFRESH;
                    self.timers.set(TimerKey::Permission(ip), at);
                }
                if first {
                    self.events.push(Event::ChannelBound { peer, channel });
                }
            }
            RequestKind::Connect { peer } => match msg.get(attr::CONNECTION_ID) {
                Some(Ok(Attribute::ConnectionId(connection_id))) => {
                    self.events.push(Event::ConnectionCreated {
                        peer,
                        connection_id,
                    });
                }
                _ => self.events.push(Event::ConnectFailed {
                    peer,
                    code: LOCAL_FAILURE,
                }),
            },
        }
    }

    /// Reports a request that failed for good and forgets what it was for.
    fn fail(
        &mut self,
        now: Instant,
        id: TransactionId,
        kind: RequestKind,
        code: u16,
        reason: &str,
    ) {
        match kind {
            RequestKind::Allocate => {
                self.state = ClientState::Failed;
                self.teardown();
                self.events.push(Event::AllocationFailed {
                    code,
                    reason: reason.to_owned(),
                });
            }
            RequestKind::Refresh { lifetime: 0 } => {
                self.state = ClientState::Deallocated;
                self.teardown();
                // 437: the allocation is already gone, which is what we wanted.
                self.events.push(if code == 437 {
                    Event::Deallocated
                } else {
                    Event::RefreshFailed { code }
                });
            }
            RequestKind::Move { .. } => self.events.push(Event::MoveFailed { code }),
            RequestKind::Refresh { .. } => {
                if code == 437 && self.state == ClientState::Allocated {
                    self.state = ClientState::Failed;
                    self.teardown();
                }
                self.events.push(Event::RefreshFailed { code });
            }
            RequestKind::CreatePermission { peer } => {
                if self.drop_permission(id, peer) {
                    self.events.push(Event::PermissionFailed { peer, code });
                }
            }
            RequestKind::ChannelBind { peer, channel } => {
                if self.drop_channel(now, id, channel) {
                    self.events.push(Event::ChannelBindFailed { peer, code });
                }
            }
            RequestKind::Connect { peer } => self.events.push(Event::ConnectFailed { peer, code }),
        }
    }

    /// Reports a request that got no response, and forgets what it was for.
    pub(super) fn on_timeout(&mut self, now: Instant, id: TransactionId, kind: RequestKind) {
        self.events.push(Event::TransactionTimedOut {
            method: kind.method(),
            peer: kind.peer(),
        });
        match kind {
            RequestKind::Allocate => {
                self.state = ClientState::Failed;
                self.teardown();
            }
            RequestKind::Refresh { lifetime: 0 } => {
                self.state = ClientState::Deallocated;
                self.teardown();
            }
            // The allocation lives until its expiry timer.
            RequestKind::Refresh { .. } | RequestKind::Connect { .. } => {}
            RequestKind::Move { .. } => self.events.push(Event::MoveFailed {
                code: super::LOCAL_FAILURE,
            }),
            RequestKind::CreatePermission { peer } => {
                self.drop_permission(id, peer);
            }
            RequestKind::ChannelBind { channel, .. } => {
                self.drop_channel(now, id, channel);
            }
        }
    }

    /// Removes the permission if `id` is its pending request.
    fn drop_permission(&mut self, id: TransactionId, peer: std::net::IpAddr) -> bool {
        if self
            .permissions
            .get(&peer)
            .is_some_and(|p| p.pending == Some(id))
        {
            self.permissions.remove(&peer);
            self.timers.cancel(TimerKey::Permission(peer));
            true
        } else {
            false
        }
    }

    /// Removes the channel if `id` is its pending request.
    fn drop_channel(&mut self, now: Instant, id: TransactionId, channel: u16) -> bool {
        if self
            .channels
            .get(channel)
            .is_some_and(|c| c.pending == Some(id))
        {
            self.channels.remove(channel, now);
            self.timers.cancel(TimerKey::Channel(channel));
            true
        } else {
            false
        }
    }
}

//! Output queues: the server's outputs (replies, relay sockets to bind or
//! release, logs), datagrams batched per listener socket and frames
//! coalesced per client stream, flushed once per loop turn.

use super::*;

impl Shard {
    /// Sends what the listener sockets and client streams have queued.
    pub(super) fn flush_batches(&mut self) {
        for t in std::mem::take(&mut self.dirty) {
            if let Some(Entry::Udp { sock, out, .. }) = self.slab.get_mut(t.0) {
                self.stats.send_errors += out.flush(sock.as_raw_fd()) as u64;
            }
        }
        for t in std::mem::take(&mut self.dirty_streams) {
            if let Some(Entry::Client(c)) = self.slab.get_mut(t.0) {
                c.dirty = false;
                if c.flush().is_err() {
                    self.again.push(t);
                }
            }
        }
    }

    /// Sends a whole message or frame to a client flow.
    pub(super) fn send_client(&mut self, ft: &FiveTuple, bytes: &[u8]) {
        match ft.transport {
            Transport::Udp => {
                let Some(t) = self.udp_by_local.get(&ft.server).copied() else {
                    return;
                };
                if let Some(Entry::Udp { sock, out, .. }) = self.slab.get_mut(t.0) {
                    if out.is_empty() {
                        self.dirty.push(t);
                    }
                    if out.is_full() {
                        self.stats.send_errors += out.flush(sock.as_raw_fd()) as u64;
                    }
                    if !out.push(ft.client, bytes) && sock.send_to(bytes, ft.client).is_err() {
                        self.stats.send_errors += 1;
                    }
                }
            }
            Transport::Tcp | Transport::Tls => {
                let Some(t) = self.clients.get(ft).copied() else {
                    return;
                };
                // Frames are coalesced and written once per event-loop turn
                // (fewer system calls and TLS records), or at once when much
                // is queued.
                let dead = match self.slab.get_mut(t.0) {
                    Some(Entry::Client(c)) => {
                        if !c.queue(bytes) {
                            self.stats.stream_drops += 1;
                        }
                        if c.queued() >= STREAM_FLUSH {
                            c.flush().is_err()
                        } else {
                            if !c.dirty {
                                c.dirty = true;
                                self.dirty_streams.push(t);
                            }
                            false
                        }
                    }
                    _ => false,
                };
                if dead {
                    self.again.push(t);
                }
            }
        }
    }

    pub(super) fn drain(&mut self, now: Instant, bufs: &mut Bufs) {
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::Transmit {
                    five_tuple,
                    payload,
                } => self.send_client(&five_tuple, &payload),
                Output::BindRelay {
                    token,
                    protocol,
                    addrs,
                } => {
                    let r = self.bind_relay(protocol, &addrs);
                    if let Some(id) = self.server.relay_bound(now, token, r) {
                        self.relay_sockets_serve(&addrs, id);
                    }
                }
                Output::ReleaseRelay { addr, .. } => {
                    if let Some(t) = self.relay_by_local.remove(&addr) {
                        self.remove_relay_socket(t);
                    }
                }
                Output::AllocationCreated {
                    five_tuple,
                    relayed,
                    protocol,
                    lifetime,
                } => {
                    let relayed: Vec<String> = relayed.iter().map(|a| a.to_string()).collect();
                    tracing::info!(
                        "allocation created client={} transport={} relayed={} peer_transport={} lifetime={}s",
                        ClientAddr::new(five_tuple.client, self.cfg.log_client_addresses),
                        five_tuple.transport,
                        relayed.join(","),
                        protocol.as_str(),
                        lifetime.as_secs(),
                    );
                }
                Output::AllocationMoved { from, to } => {
                    tracing::info!(
                        "allocation moved client={} transport={} to client={} transport={}",
                        ClientAddr::new(from.client, self.cfg.log_client_addresses),
                        from.transport,
                        ClientAddr::new(to.client, self.cfg.log_client_addresses),
                        to.transport,
                    );
                }
                Output::AllocationEnded { five_tuple, reason } => {
                    tracing::info!(
                        "allocation ended client={} transport={} reason={}",
                        ClientAddr::new(five_tuple.client, self.cfg.log_client_addresses),
                        five_tuple.transport,
                        reason.as_str(),
                    );
                }
                Output::ConnectPeer {
                    connection_id,
                    relay,
                    peer,
                } => self.connect_peer(connection_id, relay, peer, now),
                Output::BindConnection {
                    connection_id,
                    data,
                } => self.bind_connection(connection_id, data),
                Output::ClosePeerConnection { connection_id } => {
                    if let Some(t) = self.peers.get(&connection_id).copied() {
                        if let Some(p) = self.remove_peer(t) {
                            if let PeerState::Bound { client } = p.state {
                                self.close_client(client, now, bufs);
                            }
                        }
                    }
                }
            }
        }
    }

    pub(super) fn bind_relay(
        &mut self,
        protocol: RelayProtocol,
        addrs: &[SocketAddr],
    ) -> Result<(), SocketAddr> {
        let mut done: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            let key = self.slab.vacant_key();
            let entry = match protocol {
                RelayProtocol::Udp => sockets::udp(*a, false).and_then(|mut sock| {
                    self.poll
                        .registry()
                        .register(&mut sock, Token(key), Interest::READABLE)?;
                    Ok(Entry::RelayUdp {
                        sock,
                        local: *a,
                        alloc: None,
                    })
                }),
                RelayProtocol::Tcp => sockets::tcp_listener(*a, true).and_then(|mut l| {
                    self.poll
                        .registry()
                        .register(&mut l, Token(key), Interest::READABLE)?;
                    Ok(Entry::RelayTcp { l, local: *a })
                }),
            };
            match entry {
                Ok(e) => {
                    self.slab.insert(e);
                    self.relay_by_local.insert(*a, Token(key));
                    self.stats.relay_sockets += 1;
                    done.push(*a);
                }
                Err(err) => {
                    tracing::warn!("cannot bind relay socket {a}: {err}");
                    for d in done {
                        if let Some(t) = self.relay_by_local.remove(&d) {
                            self.remove_relay_socket(t);
                        }
                    }
                    return Err(*a);
                }
            }
        }
        Ok(())
    }

    /// Keeps the allocation's id with its relay sockets: peer data then
    /// reaches it without a lookup by address.
    pub(super) fn relay_sockets_serve(&mut self, addrs: &[SocketAddr], id: AllocId) {
        for a in addrs {
            let Some(t) = self.relay_by_local.get(a) else {
                continue;
            };
            if let Some(Entry::RelayUdp { alloc, .. }) = self.slab.get_mut(t.0) {
                *alloc = Some(id);
            }
        }
    }

    pub(super) fn remove_relay_socket(&mut self, t: Token) {
        if !matches!(
            self.slab.get(t.0),
            Some(Entry::RelayUdp { .. } | Entry::RelayTcp { .. })
        ) {
            return;
        }
        match self.slab.try_remove(t.0) {
            Some(Entry::RelayUdp { mut sock, .. }) => {
                let _ = self.poll.registry().deregister(&mut sock);
            }
            Some(Entry::RelayTcp { mut l, .. }) => {
                let _ = self.poll.registry().deregister(&mut l);
            }
            _ => {}
        }
        self.stats.relay_sockets = self.stats.relay_sockets.saturating_sub(1);
    }
}

//! RFC 6062 pipes: peer connections (accepted on relay listeners or
//! connected on Connect), binding them to client data connections, and
//! moving raw bytes both ways under the bandwidth limits.

use super::*;

impl Shard {
    pub(super) fn pipe_client_to_peer(
        &mut self,
        t: Token,
        peer: Token,
        now: Instant,
        bufs: &mut Bufs,
    ) {
        let data = match self.slab.get_mut(t.0) {
            Some(Entry::Client(c)) => std::mem::take(&mut c.raw_in),
            _ => return,
        };
        if data.is_empty() {
            return;
        }
        let dead = match self.slab.get_mut(peer.0) {
            Some(Entry::Peer(p)) => {
                p.queue(&data);
                self.server.stream_moved(now, p.id, true, data.len());
                p.flush().is_err()
            }
            _ => true,
        };
        if dead {
            self.close_peer(peer, now, bufs);
        }
    }

    pub(super) fn accept_peer(&mut self, t: Token, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Entry::RelayTcp { l, local }) = self.slab.get(t.0) else {
                return;
            };
            let local = *local;
            let (mut stream, from) = match l.accept() {
                Ok(x) => x,
                Err(_) => return,
            };
            let Some(id) = self.server.peer_connection_incoming(now, local, from) else {
                continue;
            };
            let key = self.slab.vacant_key();
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.server.peer_connection_closed(now, id);
                continue;
            }
            self.slab.insert(Entry::Peer(Box::new(PeerConn::new(
                stream,
                id,
                PeerState::Waiting,
            ))));
            self.peers.insert(id, Token(key));
        }
        self.again.push(t);
    }

    pub(super) fn peer_ready(
        &mut self,
        t: Token,
        readable: bool,
        writable: bool,
        now: Instant,
        bufs: &mut Bufs,
    ) {
        let (id, state) = match self.slab.get(t.0) {
            Some(Entry::Peer(p)) => (p.id, p.state),
            _ => return,
        };
        if let PeerState::Connecting { .. } = state {
            if !writable && !readable {
                return;
            }
            let ok = match self.slab.get_mut(t.0) {
                Some(Entry::Peer(p)) => {
                    matches!(p.stream.take_error(), Ok(None)) && p.stream.peer_addr().is_ok()
                }
                _ => false,
            };
            if ok {
                if let Some(Entry::Peer(p)) = self.slab.get_mut(t.0) {
                    p.state = PeerState::Waiting;
                }
                self.server.peer_connect_result(now, id, true);
                self.drain(now, bufs);
            } else {
                self.server.peer_connect_result(now, id, false);
                self.remove_peer(t);
                self.drain(now, bufs);
            }
            return;
        }
        let PeerState::Bound { client } = state else {
            // Not bound yet: leave the peer's bytes in the kernel.
            return;
        };
        if writable {
            let res = match self.slab.get_mut(t.0) {
                Some(Entry::Peer(p)) => p.flush().map(|()| p.queued() < OUT_LIMIT / 2),
                _ => return,
            };
            match res {
                Err(_) => return self.close_peer(t, now, bufs),
                Ok(true) => self.again.push(client),
                Ok(false) => {}
            }
        }
        if !readable {
            return;
        }
        let room = match self.slab.get(client.0) {
            Some(Entry::Client(c)) => OUT_LIMIT.saturating_sub(c.queued()),
            _ => return self.close_peer(t, now, bufs),
        };
        let room = match self.server.stream_allowance(now, id, false) {
            Ok(n) => room.min(n),
            Err(wait) => return self.throttle(t, now + wait),
        };
        if room == 0 {
            return;
        }
        let mut data = Vec::new();
        let outcome = match self.slab.get_mut(t.0) {
            Some(Entry::Peer(p)) => p.read(&mut bufs.scratch, &mut data, room),
            _ => return,
        };
        self.server.stream_moved(now, id, false, data.len());
        let dead = match self.slab.get_mut(client.0) {
            Some(Entry::Client(c)) => {
                c.queue(&data);
                c.flush().is_err()
            }
            _ => true,
        };
        if dead {
            return self.close_client(client, now, bufs);
        }
        match outcome {
            ReadOutcome::Drained => {}
            ReadOutcome::More => self.again.push(t),
            ReadOutcome::Closed => self.close_peer(t, now, bufs),
        }
    }

    /// Pauses reading `t` (an RFC 6062 pipe end over a bandwidth limit)
    /// until `due`; its bytes wait in the kernel, so TCP pushes back.
    pub(super) fn throttle(&mut self, t: Token, due: Instant) {
        match self.throttled.iter_mut().find(|(_, x)| *x == t) {
            Some(entry) => entry.0 = entry.0.min(due),
            None => self.throttled.push((due, t)),
        }
    }

    pub(super) fn remove_peer(&mut self, t: Token) -> Option<Box<PeerConn>> {
        let Some(Entry::Peer(mut p)) = self.slab.try_remove(t.0) else {
            return None;
        };
        let _ = self.poll.registry().deregister(&mut p.stream);
        self.peers.remove(&p.id);
        Some(p)
    }

    /// Closes a peer connection and, if bound, its client data connection.
    pub(super) fn close_peer(&mut self, t: Token, now: Instant, bufs: &mut Bufs) {
        let Some(mut p) = self.remove_peer(t) else {
            return;
        };
        let _ = p.flush();
        self.server.peer_connection_closed(now, p.id);
        if let PeerState::Bound { client } = p.state {
            self.close_client(client, now, bufs);
        }
    }

    pub(super) fn connect_peer(
        &mut self,
        id: u32,
        relay: SocketAddr,
        peer: SocketAddr,
        now: Instant,
    ) {
        let key = self.slab.vacant_key();
        let stream = sockets::tcp_connect(relay, peer).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match stream {
            Ok(s) => {
                let state = PeerState::Connecting {
                    deadline: now + CONNECT_TIMEOUT,
                };
                self.slab
                    .insert(Entry::Peer(Box::new(PeerConn::new(s, id, state))));
                self.peers.insert(id, Token(key));
            }
            Err(_) => self.server.peer_connect_result(now, id, false),
        }
    }

    pub(super) fn bind_connection(&mut self, id: u32, data: FiveTuple) {
        let (Some(pt), Some(ct)) = (
            self.peers.get(&id).copied(),
            self.clients.get(&data).copied(),
        ) else {
            return;
        };
        let rest = match self.slab.get_mut(ct.0) {
            Some(Entry::Client(c)) => {
                c.mode = Mode::Raw { peer: pt };
                c.decoder.take_pending()
            }
            _ => return,
        };
        if let Some(Entry::Peer(p)) = self.slab.get_mut(pt.0) {
            p.state = PeerState::Bound { client: ct };
            p.queue(&rest);
            let _ = p.flush();
        }
        // Whatever the peer sent while waiting is in the kernel: read it now.
        self.again.push(pt);
    }
}

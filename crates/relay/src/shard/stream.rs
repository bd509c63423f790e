//! TCP/TLS clients: accepting (connection limits), reading frames and
//! handing them to the server, closing.

use super::*;

impl Shard {
    pub(super) fn accept(&mut self, t: Token, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Entry::Listener { l, local, tls }) = self.slab.get(t.0) else {
                return;
            };
            let (local, tls) = (*local, *tls);
            let (mut stream, from) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            };
            let (max, per_ip) = (self.cfg.max_connections, self.cfg.max_connections_per_ip);
            if !self.conns.open(from.ip(), max, per_ip) {
                self.stats.connections_refused += 1;
                continue;
            }
            let tls_conn = match tls.then(|| self.cfg.tls.clone()) {
                None => None,
                Some(cfg) => match cfg.map(rustls::ServerConnection::new) {
                    Some(Ok(c)) => Some(c),
                    _ => {
                        self.conns.close(from.ip());
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let ft = FiveTuple {
                client: from,
                server: local,
                transport: if tls { Transport::Tls } else { Transport::Tcp },
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
                self.conns.close(from.ip());
                continue;
            }
            let conn = ClientConn::new(stream, tls_conn, ft, self.cfg.max_frame, now);
            self.slab.insert(Entry::Client(Box::new(conn)));
            self.clients.insert(ft, Token(key));
        }
        self.again.push(t);
    }

    pub(super) fn client_ready(
        &mut self,
        t: Token,
        readable: bool,
        writable: bool,
        now: Instant,
        bufs: &mut Bufs,
    ) {
        if writable {
            let res = match self.slab.get_mut(t.0) {
                Some(Entry::Client(c)) => c.flush().map(|()| c.queued() < OUT_LIMIT / 2),
                _ => return,
            };
            match res {
                Err(_) => return self.close_client(t, now, bufs),
                // A raw pipe may have paused reading from its peer.
                Ok(true) => {
                    if let Some(Entry::Client(c)) = self.slab.get(t.0) {
                        if let Mode::Raw { peer } = c.mode {
                            self.again.push(peer);
                        }
                    }
                }
                Ok(false) => {}
            }
        }
        if !readable {
            return;
        }
        let mode = match self.slab.get(t.0) {
            Some(Entry::Client(c)) => c.mode,
            _ => return,
        };
        let budget = match mode {
            Mode::Frames => STREAM_BUDGET,
            Mode::Raw { peer } => match self.slab.get(peer.0) {
                Some(Entry::Peer(p)) => {
                    let room = OUT_LIMIT.saturating_sub(p.queued());
                    match self.server.stream_allowance(now, p.id, true) {
                        Ok(n) => room.min(n),
                        Err(wait) => return self.throttle(t, now + wait),
                    }
                }
                _ => 0,
            },
        };
        if budget == 0 {
            return;
        }
        let outcome = match self.slab.get_mut(t.0) {
            Some(Entry::Client(c)) => c.read(&mut bufs.scratch, budget, now),
            _ => return,
        };
        match mode {
            Mode::Frames => {
                if !self.client_frames(t, now, bufs) {
                    return self.close_client(t, now, bufs);
                }
            }
            Mode::Raw { peer } => self.pipe_client_to_peer(t, peer, now, bufs),
        }
        match outcome {
            ReadOutcome::Drained => {}
            ReadOutcome::More => self.again.push(t),
            ReadOutcome::Closed => self.close_client(t, now, bufs),
        }
    }

    /// Hands every complete frame to the server; false if the stream is bad.
    pub(super) fn client_frames(&mut self, t: Token, now: Instant, bufs: &mut Bufs) -> bool {
        loop {
            let (ft, len) = match self.slab.get_mut(t.0) {
                Some(Entry::Client(c)) if c.mode == Mode::Frames => match c.decoder.next_frame() {
                    Ok(Some((_kind, f))) => {
                        let len = f.len();
                        bufs.frame[..len].copy_from_slice(f);
                        c.got_frame = true;
                        (c.ft, len)
                    }
                    Ok(None) => return true,
                    Err(_) => return false,
                },
                _ => return true,
            };
            let Bufs { frame, peer, .. } = bufs;
            // RFC 6062: a data connection binding a peer connection of
            // another shard goes to that shard, bind frame and all.
            // RFC 8016: so does a Refresh whose ticket names an
            // allocation of another shard (the allocation stays there).
            if let Some(owner) = (self.server.connection_bind_shard(&frame[..len]))
                .or_else(|| self.server.mobility_shard(&frame[..len]))
            {
                self.hand_over(t, owner, &frame[..len]);
                return true;
            }
            if let Some(send) = self.server.handle_client_packet(now, ft, &frame[..len]) {
                self.send_to_peer(now, send, peer);
            }
            self.drain(now, bufs);
        }
    }

    pub(super) fn close_client(&mut self, t: Token, now: Instant, bufs: &mut Bufs) {
        let Some(Entry::Client(mut c)) = self.slab.try_remove(t.0) else {
            return;
        };
        let _ = c.flush();
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.clients.remove(&c.ft);
        self.conns.close(c.ft.client.ip());
        if let Mode::Raw { peer } = c.mode {
            self.close_peer(peer, now, bufs);
        }
        self.server.client_disconnected(now, c.ft);
        self.drain(now, bufs);
    }
}

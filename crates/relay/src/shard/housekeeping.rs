//! Housekeeping every tick: stream handshake and idle timeouts, RFC 6062
//! connect timeouts, metrics.

use super::*;

impl Shard {
    pub(super) fn housekeeping(&mut self, now: Instant, bufs: &mut Bufs) {
        let mut close = Vec::new();
        let mut failed_connects = Vec::new();
        for (k, e) in self.slab.iter() {
            match e {
                Entry::Client(c) => {
                    let handshake =
                        !c.got_frame && now.duration_since(c.opened) > self.cfg.handshake_timeout;
                    let idle = c.mode == Mode::Frames
                        && !self.server.has_allocation(&c.ft)
                        && now.duration_since(c.last_activity) > self.cfg.idle_timeout;
                    if handshake || idle {
                        close.push(Token(k));
                    }
                }
                Entry::Peer(p) => {
                    if let PeerState::Connecting { deadline } = p.state {
                        if now >= deadline {
                            failed_connects.push((Token(k), p.id));
                        }
                    }
                }
                _ => {}
            }
        }
        for t in close {
            self.stats.connections_timed_out += 1;
            self.close_client(t, now, bufs);
        }
        for (t, id) in failed_connects {
            self.remove_peer(t);
            self.server.peer_connect_result(now, id, false);
        }
        self.drain(now, bufs);
        self.publish();
    }

    pub(super) fn publish(&mut self) {
        self.stats.connections_current = [0, 0];
        for (_, e) in self.slab.iter() {
            if let Entry::Client(c) = e {
                let i = if c.ft.transport == Transport::Tls {
                    1
                } else {
                    0
                };
                self.stats.connections_current[i] += 1;
            }
        }
        self.metrics
            .update(self.index, self.server.stats(), &self.stats);
    }
}

//! UDP: client datagrams from the listener sockets, peer datagrams from
//! the relay sockets (each kept with its allocation's id), and client data
//! to peers or, as the server routes it, straight to another allocation.

use super::*;

impl Shard {
    pub(super) fn udp_ready(&mut self, t: Token, now: Instant, bufs: &mut Bufs) {
        for _ in 0..UDP_BUDGET / BATCH {
            let Some(Entry::Udp { sock, local, .. }) = self.slab.get(t.0) else {
                return;
            };
            let local = *local;
            let fd = sock.as_raw_fd();
            let n = match bufs.rx(&local).recv(fd) {
                Ok(n) => n,
                Err(_) => return,
            };
            for i in 0..n {
                let Bufs {
                    rx_v4, rx_v6, peer, ..
                } = &mut *bufs;
                let rx = if local.is_ipv4() { rx_v4 } else { rx_v6 };
                let Some((from, slot, len)) = rx.get(i) else {
                    self.stats.oversize_datagrams += 1;
                    continue;
                };
                let ft = FiveTuple {
                    client: from,
                    server: local,
                    transport: Transport::Udp,
                };
                let data = &slot[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + len];
                // RFC 8016: a ticket of another shard's allocation.
                if let Some(owner) = self.server.mobility_shard(data) {
                    self.fetch_allocation(owner, ft, data);
                    continue;
                }
                if let Some(send) = self.server.handle_client_packet(now, ft, data) {
                    self.send_to_peer(now, send, peer);
                }
                self.drain(now, bufs);
            }
            if !bufs.rx(&local).full() {
                return;
            }
        }
        self.again.push(t);
    }

    /// Relays client data to a peer, or straight to another allocation of
    /// this relay without a socket round trip, as the server says.
    pub(super) fn send_to_peer(&mut self, now: Instant, send: PeerSend<'_>, pbuf: &mut [u8]) {
        if let Destination::Allocation { id, from } = send.to {
            let len = send.data.len();
            pbuf[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + len].copy_from_slice(send.data);
            if let Some(f) = self.server.handle_allocation_data(now, id, from, pbuf, len) {
                self.send_client(&f.five_tuple, &pbuf[f.start..f.end]);
            }
            return;
        }
        let Some(t) = self.relay_by_local.get(&send.relay) else {
            return;
        };
        if let Some(Entry::RelayUdp { sock, .. }) = self.slab.get(t.0) {
            if sock.send_to(send.data, send.peer).is_err() {
                self.stats.send_errors += 1;
            }
        }
    }

    pub(super) fn relay_ready(&mut self, t: Token, now: Instant, bufs: &mut Bufs) {
        for _ in 0..UDP_BUDGET / BATCH {
            let Some(Entry::RelayUdp { sock, local, alloc }) = self.slab.get(t.0) else {
                return;
            };
            let (local, alloc) = (*local, *alloc);
            let fd = sock.as_raw_fd();
            let rx = bufs.rx(&local);
            let n = match rx.recv(fd) {
                Ok(n) => n,
                Err(_) => return,
            };
            for i in 0..n {
                let Some((from, slot, len)) = rx.get(i) else {
                    self.stats.oversize_datagrams += 1;
                    continue;
                };
                let f = match alloc {
                    Some(id) => self.server.handle_allocation_data(now, id, from, slot, len),
                    None => self.server.handle_peer_data(now, local, from, slot, len),
                };
                if let Some(f) = f {
                    self.send_client(&f.five_tuple, &slot[f.start..f.end]);
                }
            }
            if !rx.full() {
                return;
            }
        }
        self.again.push(t);
    }
}

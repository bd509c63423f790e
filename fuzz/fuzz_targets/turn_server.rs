//! The sans-IO TURN server driven by the input: it must never panic.
//!
//! Each input gets a fresh server (static user `fuzz`, four relay ports)
//! with two allocations made by signed requests: a UDP-relaying one on a UDP
//! flow and a TCP-relaying one (RFC 6062) on a TCP flow of the same client.
//! The input is then a sequence of chunks `[op][len][len bytes]` (with the
//! top bit of `op` set, the chunk is `8 × len` bytes); `op % 6` selects:
//!
//! - 0: the bytes as a client packet on the UDP flow (or, if the first
//!   byte is odd, on a UDP flow without an allocation);
//! - 1: the bytes as one frame on the TCP flow (or a TCP data connection);
//! - 2: peer data: byte 0 picks the relay port, byte 1 the peer, the rest
//!   is the payload, given to `handle_peer_data` with the headroom;
//! - 3: time passes (bytes 0–1, in 100 ms units) and `handle_timeout` runs;
//! - 4: a request signed by the harness with the user's key and a valid
//!   nonce, so that the fuzzer reaches past authentication: byte 0 picks
//!   the method and flow (bit 5: put the latest MOBILITY-TICKET the server
//!   gave first; bit 6: hand it to `export_moving`, as the shard owning the
//!   ticket does, and what leaves to `import_moving`), then attributes
//!   `[type: u16][len: u8][value]`;
//! - 5: driver events: a failed relay bind, a peer connect result, an
//!   incoming peer connection, a closed peer or client connection.
//!
//! The server is shard 0 of 2 (relay ports 50000-50001 of the four).
//! The harness acts like a real driver: it answers `BindRelay` (with
//! success unless told otherwise), hands `PeerSend` whose destination is
//! another allocation to `handle_allocation_data`, and slices
//! `buf[start..end]` of every `ClientForward`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stun::attr::{self, Attribute};
use stun::TransactionId;
use stun::{Class, Key, Message, MessageEncoder, MessageType, Method, PasswordAlgorithm};
use turn::auth::Credentials;
use turn::server::{
    ClientForward, Destination, Output, RelayAddresses, Server, ServerConfig, ShardId,
    PEER_DATA_HEADROOM, PEER_DATA_TAILROOM,
};
use turn::{FiveTuple, Transport};

const USER: &str = "fuzz";
const PASS: &str = "fuzz-pw";
const REALM: &str = "fuzz.realm";
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 50000..=50003;

/// Built once: the configuration (with a fixed secret, so nonces are the
/// same in every run), the key and the start of time.
struct Fixed {
    config: ServerConfig,
    key: Key,
    epoch: Instant,
}

static FIXED: LazyLock<Fixed> = LazyLock::new(|| {
    let creds = Credentials::new(REALM, [(USER, PASS)], [b"fuzz-secret"]).unwrap();
    let relay = RelayAddresses {
        ipv4: Some(IpAddr::V4(RELAY_IP)),
        ipv6: Some("2001:db8::10".parse().unwrap()),
        ..Default::default()
    };
    let mut config = ServerConfig::new(creds, relay);
    config.ports = RELAY_PORTS;
    config.secret = [7; 32];
    config.software = Some("fuzz".into());
    let key = Key::long_term(PasswordAlgorithm::Md5, USER, REALM, PASS).unwrap();
    Fixed {
        config,
        key,
        epoch: Instant::now(),
    }
});

fn flow(port: u16, transport: Transport) -> FiveTuple {
    FiveTuple {
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)), port),
        server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 3478),
        transport,
    }
}

/// Peers the fuzzer can pick: public, loopback, private, the relay itself,
/// IPv6, port 0.
fn peer(i: u8) -> SocketAddr {
    const PEERS: [&str; 8] = [
        "93.184.216.34:9000",
        "93.184.216.34:9001",
        "127.0.0.1:9000",
        "10.0.0.1:9000",
        "192.0.2.10:50000",
        "192.0.2.10:50001",
        "[2606:4700::1]:443",
        "93.184.216.35:0",
    ];
    PEERS[usize::from(i) % PEERS.len()].parse().unwrap()
}

struct Harness {
    server: Server,
    now: Instant,
    nonce: String,
    fail_binds: bool,
    connections: Vec<u32>,
    buf: Vec<u8>,
    /// The latest MOBILITY-TICKET in an answer (RFC 8016).
    ticket: Vec<u8>,
}

impl Harness {
    fn new() -> Self {
        let f = &*FIXED;
        // Shard 0 of 2 (ports 50000-50001): the paths to relayed addresses
        // of another shard and ConnectionBinds owned elsewhere are reached.
        let mut server = Server::new(f.config.clone(), f.epoch, 1_800_000_000);
        server.set_shard(ShardId::new(0, 2));
        let mut h = Harness {
            server,
            now: f.epoch,
            nonce: String::new(),
            fail_binds: false,
            connections: Vec::new(),
            buf: vec![0; PEER_DATA_HEADROOM + 1500 + PEER_DATA_TAILROOM],
            ticket: Vec::new(),
        };
        h.nonce = h
            .challenge_nonce(flow(40000, Transport::Udp))
            .unwrap_or_default();
        h.signed(
            flow(40000, Transport::Udp),
            Method::ALLOCATE,
            1,
            &[
                Attribute::RequestedTransport(17),
                Attribute::MobilityTicket(&[]),
            ],
        );
        h.signed(
            flow(40001, Transport::Tcp),
            Method::ALLOCATE,
            2,
            &[Attribute::RequestedTransport(6)],
        );
        // The harness itself works: both allocations exist, the first
        // with a mobility ticket.
        assert_eq!(h.server.allocation_count(), 2);
        assert!(!h.ticket.is_empty());
        h
    }

    /// The NONCE of the 401 to an unauthenticated Allocate.
    fn challenge_nonce(&mut self, ft: FiveTuple) -> Option<String> {
        let mut buf = [0u8; 64];
        let typ = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([0; 12])).ok()?;
        e.push(&Attribute::RequestedTransport(17)).ok()?;
        let n = e.finish();
        self.server.handle_client_packet(self.now, ft, &buf[..n]);
        let mut nonce = None;
        while let Some(o) = self.server.poll_output() {
            if let Output::Transmit { payload, .. } = o {
                if let Some(Ok(Attribute::Nonce(s))) = Message::parse(&payload)
                    .ok()
                    .and_then(|m| m.get(attr::NONCE))
                {
                    nonce = Some(s.to_owned());
                }
            }
        }
        nonce
    }

    /// Sends a request with `attrs`, then USERNAME, REALM, NONCE,
    /// MESSAGE-INTEGRITY and FINGERPRINT.
    fn signed(&mut self, ft: FiveTuple, method: Method, tx: u8, attrs: &[Attribute<'_>]) {
        if let Some(req) = self.encode_signed(method, tx, attrs) {
            self.client_packet(ft, &req);
        }
    }

    fn encode_signed(&self, method: Method, tx: u8, attrs: &[Attribute<'_>]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        let typ = MessageType::new(method, Class::Request);
        let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([tx; 12])).ok()?;
        let ok = attrs.iter().all(|a| e.push(a).is_ok())
            && e.push(&Attribute::Username(USER)).is_ok()
            && e.push(&Attribute::Realm(REALM)).is_ok()
            && e.push(&Attribute::Nonce(&self.nonce)).is_ok()
            && e.message_integrity(&FIXED.key).is_ok()
            && e.fingerprint().is_ok();
        if !ok {
            return None;
        }
        let n = e.finish();
        buf.truncate(n);
        Some(buf)
    }

    fn client_packet(&mut self, ft: FiveTuple, bytes: &[u8]) {
        let send = self
            .server
            .handle_client_packet(self.now, ft, bytes)
            .map(|s| (s.to, s.data.len().min(1500)));
        if let Some((Destination::Allocation { id, from }, len)) = send {
            let now = self.now;
            let f = (self.server).handle_allocation_data(now, id, from, &mut self.buf, len);
            self.framed(f, len);
        }
        self.drain();
    }

    /// `len` bytes (already in the buffer) from `peer` on `relay`.
    fn peer_data(&mut self, relay: SocketAddr, peer: SocketAddr, len: usize) {
        let f = (self.server).handle_peer_data(self.now, relay, peer, &mut self.buf, len);
        self.framed(f, len);
        self.drain();
    }

    fn framed(&self, f: Option<ClientForward>, len: usize) {
        if let Some(f) = f {
            let framed = &self.buf[f.start..f.end];
            assert!(framed.len() >= len);
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::Transmit { payload, .. } => {
                    if let Some(Ok(Attribute::MobilityTicket(t))) = Message::parse(&payload)
                        .ok()
                        .and_then(|m| m.get(attr::MOBILITY_TICKET))
                    {
                        self.ticket = t.to_vec();
                    }
                }
                Output::BindRelay { token, addrs, .. } => {
                    // A BindRelay always names at least one address.
                    let r = if self.fail_binds {
                        Err(addrs[0])
                    } else {
                        Ok(())
                    };
                    self.server.relay_bound(self.now, token, r);
                }
                Output::ConnectPeer { connection_id, .. } if self.connections.len() < 64 => {
                    self.connections.push(connection_id);
                }
                _ => {}
            }
        }
    }

    fn op(&mut self, op: u8, data: &[u8]) {
        let b = |i: usize| data.get(i).copied().unwrap_or(0);
        match (op & 0x7f) % 6 {
            0 => {
                let port = if b(0) % 2 == 0 { 40000 } else { 40002 };
                // What the driver asks of every datagram first.
                let _ = self.server.mobility_shard(data);
                self.client_packet(flow(port, Transport::Udp), data);
            }
            1 => {
                let port = if b(0) % 2 == 0 { 40001 } else { 40003 };
                // What the driver asks of every stream frame first.
                let _ = self.server.connection_bind_shard(data);
                let _ = self.server.mobility_shard(data);
                self.client_packet(flow(port, Transport::Tcp), data);
            }
            2 => {
                let port = RELAY_PORTS.start() + u16::from(b(0) % 4);
                let relay = SocketAddr::new(IpAddr::V4(RELAY_IP), port);
                let payload = data.get(2..).unwrap_or(&[]);
                let len = payload.len().min(1500);
                self.buf[PEER_DATA_HEADROOM..PEER_DATA_HEADROOM + len]
                    .copy_from_slice(&payload[..len]);
                self.peer_data(relay, peer(b(1)), len);
            }
            3 => {
                let steps = u64::from(u16::from_be_bytes([b(0), b(1)]));
                self.now += Duration::from_millis(100 * steps);
                self.server.handle_timeout(self.now);
                self.drain();
            }
            4 => self.fuzzed_request(data),
            _ => self.driver_event(data),
        }
    }

    fn fuzzed_request(&mut self, data: &[u8]) {
        const METHODS: [Method; 7] = [
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
            Method::CONNECT,
            Method::CONNECTION_BIND,
            Method::BINDING,
        ];
        let Some((&sel, mut rest)) = data.split_first() else {
            return;
        };
        let method = METHODS[usize::from(sel & 7) % METHODS.len()];
        let ft = match sel >> 3 & 3 {
            0 => flow(40000, Transport::Udp),
            1 => flow(40001, Transport::Tcp),
            2 => flow(40003, Transport::Tcp),
            _ => flow(40002, Transport::Udp),
        };
        let ticket = self.ticket.clone();
        let mut attrs = Vec::new();
        if sel & 0x20 != 0 {
            attrs.push(Attribute::MobilityTicket(&ticket));
        }
        while rest.len() >= 3 && attrs.len() < 16 {
            let typ = u16::from_be_bytes([rest[0], rest[1]]);
            let len = usize::from(rest[2]).min(rest.len() - 3);
            attrs.push(Attribute::Unknown {
                typ,
                value: &rest[3..3 + len],
            });
            rest = &rest[3 + len..];
        }
        if sel & 0x40 == 0 {
            self.signed(ft, method, sel, &attrs);
            return;
        }
        let Some(req) = self.encode_signed(method, sel, &attrs) else {
            return;
        };
        if let Some(m) = self.server.export_moving(self.now, ft, &req) {
            let _ = m.relay_addrs();
            self.server.import_moving(self.now, m);
        }
        self.drain();
    }

    fn driver_event(&mut self, data: &[u8]) {
        let b = |i: usize| data.get(i).copied().unwrap_or(0);
        let id = || {
            let i = usize::from(b(1));
            (!self.connections.is_empty()).then(|| self.connections[i % self.connections.len()])
        };
        match b(0) % 6 {
            0 => self.fail_binds = !self.fail_binds,
            1 => {
                if let Some(id) = id() {
                    self.server.peer_connect_result(self.now, id, b(2) % 2 == 0);
                }
            }
            2 => {
                let relay = SocketAddr::new(
                    IpAddr::V4(RELAY_IP),
                    RELAY_PORTS.start() + u16::from(b(2) % 4),
                );
                if let Some(id) = self
                    .server
                    .peer_connection_incoming(self.now, relay, peer(b(1)))
                {
                    if self.connections.len() < 64 {
                        self.connections.push(id);
                    }
                }
            }
            3 => {
                if let Some(id) = id() {
                    self.server.peer_connection_closed(self.now, id);
                }
            }
            4 => {
                let ports = [40000, 40001, 40002, 40003];
                let port = ports[usize::from(b(1)) % 4];
                let t = if port % 2 == 0 {
                    Transport::Udp
                } else {
                    Transport::Tcp
                };
                self.server.client_disconnected(self.now, flow(port, t));
            }
            _ => {
                // A fresh nonce, as a client would take from a 438.
                let ft = flow(40000, Transport::Udp);
                if let Some(n) = self.challenge_nonce(ft) {
                    self.nonce = n;
                }
            }
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let scale = if op & 0x80 != 0 { 8 } else { 1 };
        let n = (usize::from(*len) * scale).min(tail.len());
        h.op(*op, &tail[..n]);
        rest = &tail[n..];
    }
    let _ = h.server.stats();
    let _ = h.server.poll_timeout();
});

//! The plain-RTP media bridge for SIP phones (`[sip] media_ports`).
//!
//! Phones (baresip, Linphone, desk phones) speak plain RTP/AVP with no ICE:
//! the address in their SDP is where they want media. The sanitizer masks
//! it, so two phones could never reach each other; with the bridge on, a
//! call whose SDP is plain RTP gets two port pairs of ours (one per side,
//! RTP on an even port, RTCP on the next), the SDP each phone receives names
//! `[sip] media_address` and its side's RTP port, and the bridge forwards
//! datagrams between the sides unchanged (payload types and codecs pass
//! through: the callee answers from the caller's offer, RFC 3264, so both
//! share the codecs of the answer; a callee with none in common answers 488
//! itself).
//!
//! ```text
//! caller ──RTP──▶ side 0 (port p, p+1) ─┐      ┌─ side 1 (port q, q+1) ◀──RTP── callee
//!        ◀──────  (sent from p)        forward  (sent from q)  ──────▶
//! ```
//!
//! **Latching (symmetric RTP).** A side sends media to the address its
//! phone's packets come from, so phones behind NAT work. A side latches on
//! the first valid packet whose source IP is the phone's SIP peer address or
//! the address in its SDP, or whose source port is the one in its SDP (a
//! multi-homed phone whose RTP leaves from another address than its SIP);
//! packets from any other source, and once latched from any other address
//! and port, are dropped and counted (`onionrtc_sip_media_foreign_total`):
//! a stranger cannot take over or inject into a call without both knowing
//! the bridge's port and sending from the phone's address or port. Before latching, a side sends
//! to the SDP's address only when it is the phone's SIP peer address (no
//! reflection towards an address an SDP merely names).
//!
//! **Bounds.** At most `(last - first + 1) / 4` bridges (four ports each);
//! a call that finds the pool empty gets 488. Datagrams over
//! [`MAX_DATAGRAM`] bytes, or not RTP/RTCP version 2, are dropped and
//! counted; each port forwards [`PACKETS_PER_SEC`] of its phone's packets a
//! second (burst [`PACKET_BURST`]), more are dropped and counted (a
//! stranger's packets are dropped before they count). A bridge goes when its
//! call ends (BYE, CANCEL, failed INVITE, a closed connection, the
//! B2BUA's timers); a call whose media stopped for [`IDLE_TIMEOUT`] is hung
//! up (BYE to both phones).
//!
//! **Privacy.** The phones' addresses are known to the server (it must
//! send them media) but never written into what the other party receives;
//! nothing here is logged.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::ratelimit::TokenBucket;
use crate::sip_gateway::{Gateway, MediaRuntime, RelayAccess};
use crate::sip_ws::lock;

/// Datagrams larger than this are dropped (RTP over UDP stays under the
/// path MTU).
pub const MAX_DATAGRAM: usize = 1500;
/// Packets a second each bridge port accepts.
pub const PACKETS_PER_SEC: f64 = 500.0;
/// Burst of [`PACKETS_PER_SEC`].
pub const PACKET_BURST: u32 = 250;
/// An answered call with no media for this long is hung up, by default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// `[sip] media_address` and `media_ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    /// The address the bridge binds and writes into the phones' SDP.
    pub address: IpAddr,
    /// An answered call with no media for this long is hung up
    /// (`[sip] media_timeout`, default [`IDLE_TIMEOUT`]).
    pub idle: Duration,
    /// The relay's UDP listener as this host reaches it: where the
    /// WebRTC ↔ RTP gateways allocate (`None`: no gateways, calls between
    /// a browser and a phone get 488).
    pub relay: Option<SocketAddr>,
    /// The port range, inclusive.
    pub first: u16,
    pub last: u16,
}

impl MediaSettings {
    /// Parses `"A-B"` (1 ≤ A < B, room for at least one bridge).
    pub fn parse_ports(s: &str) -> Option<(u16, u16)> {
        let (a, b) = s.trim().split_once('-')?;
        let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        (a >= 1 && a < b && u32::from(b) - u32::from(a) + 1 >= 4).then_some((a, b))
    }

    /// Bridges that fit in the range.
    pub fn capacity(&self) -> usize {
        let first = self.first + self.first % 2;
        if self.last < first {
            return 0;
        }
        (usize::from(self.last - first) + 1) / 4
    }
}

/// What the bridges count.
#[derive(Debug, Default)]
pub(crate) struct MediaCounters {
    pub(crate) opened: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) foreign: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) no_peer: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) idle: AtomicU64,
    /// WebRTC ↔ RTP gateways opened ([`crate::sip_gateway`]).
    pub(crate) gateways_opened: AtomicU64,
}

/// One side's phone, as its SDP and signaling describe it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Peer {
    /// The phone's SIP peer address (its UDP flow or TCP connection).
    signaling: Option<IpAddr>,
    /// The RTP address in its SDP.
    declared: Option<SocketAddr>,
    /// Where its RTP and RTCP come from.
    latched: [Option<SocketAddr>; 2],
}

impl Peer {
    /// A phone whose SIP comes from `signaling` and whose SDP names
    /// `declared`, not latched yet.
    pub(crate) fn new(signaling: Option<IpAddr>, declared: Option<SocketAddr>) -> Peer {
        Peer {
            signaling,
            declared,
            latched: [None, None],
        }
    }

    /// The phone's answer names `declared`, and its SIP comes from
    /// `signaling`: what was latched stays unless the phone moved.
    pub(crate) fn answered(&mut self, signaling: Option<IpAddr>, declared: Option<SocketAddr>) {
        if self.signaling != signaling {
            *self = Peer::new(signaling, declared);
        } else {
            self.declared = declared;
        }
    }

    /// Whether a packet from `src` on component `c` is this phone's
    /// (latching on the first acceptable one).
    pub(crate) fn accept(&mut self, c: usize, src: SocketAddr) -> bool {
        match self.latched[c] {
            Some(l) => l == src,
            None => {
                // Its SIP address or its SDP's (NAT rewrites neither the
                // address… nor, on a multi-homed host, the port it chose).
                let port = if c == 0 {
                    self.declared.map(|d| d.port())
                } else {
                    self.declared.and_then(|d| d.port().checked_add(1))
                };
                let ok = Some(src.ip()) == self.signaling
                    || self.declared.is_some_and(|d| d.ip() == src.ip())
                    || (port.is_some_and(|p| p == src.port() && p != 0));
                if ok {
                    self.latched[c] = Some(src);
                }
                ok
            }
        }
    }

    /// Where component `c` goes.
    pub(crate) fn destination(&self, c: usize) -> Option<SocketAddr> {
        if let Some(l) = self.latched[c] {
            return Some(l);
        }
        let d = self.declared?;
        if Some(d.ip()) != self.signaling || d.port() == 0 {
            return None;
        }
        let port = if c == 0 {
            d.port()
        } else {
            d.port().checked_add(1)?
        };
        Some(SocketAddr::new(d.ip(), port))
    }
}

#[derive(Debug)]
struct State {
    peers: [Peer; 2],
    last_packet: Instant,
    idle_reported: bool,
}

#[derive(Debug)]
struct Bridge {
    /// RTP ports of side 0 and side 1 (RTCP: the next).
    ports: [u16; 2],
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // The sockets live in the task: aborting it closes them.
        self.task.abort();
    }
}

#[derive(Debug, Default)]
struct Inner {
    bridges: HashMap<u64, Bridge>,
    /// WebRTC ↔ RTP gateways by call and leg.
    gateways: HashMap<(u64, usize), Gateway>,
    used: HashSet<u16>,
    cursor: u16,
    /// Where the gateways' endpoints run (started with the first).
    runtime: Option<MediaRuntime>,
}

/// The bridges of one server.
#[derive(Debug)]
pub(crate) struct Bridges {
    settings: MediaSettings,
    inner: Mutex<Inner>,
    pub(crate) counters: Arc<MediaCounters>,
}

/// Whether `sdp` describes plain RTP (no ICE, no DTLS): a phone's.
pub fn is_plain_rtp(sdp: &str) -> bool {
    let mut audio = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("a=ice-ufrag") || line.starts_with("a=fingerprint") {
            return false;
        }
        if let Some(m) = line.strip_prefix("m=audio ") {
            let proto = m.split(' ').nth(1).unwrap_or("");
            if !proto.starts_with("RTP/") {
                return false;
            }
            audio = true;
        }
    }
    audio
}

/// The RTP address the first audio section of `sdp` names (its `c=`, or
/// the session's, and its port).
pub fn declared_address(sdp: &str) -> Option<SocketAddr> {
    let mut session_c = None;
    let mut media_c = None;
    let mut port = None;
    let mut section = 0u32; // 0 session, 1 first audio, 2 other
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            section = if port.is_none() && m.starts_with("audio ") {
                port = m.split(' ').nth(1).and_then(|p| p.parse::<u16>().ok());
                1
            } else {
                2
            };
            continue;
        }
        if let Some(c) = line.strip_prefix("c=") {
            let ip = connection_ip(c);
            match section {
                0 => session_c = ip,
                1 => media_c = ip,
                _ => {}
            }
        }
    }
    let ip = media_c.or(session_c)?;
    Some(SocketAddr::new(ip, port?))
}

/// `IN IP4 192.0.2.1` → the address (multicast TTLs and names: none).
fn connection_ip(c: &str) -> Option<IpAddr> {
    let mut f = c.split(' ');
    if f.next()? != "IN" {
        return None;
    }
    let (kind, addr) = (f.next()?, f.next()?);
    let ip: IpAddr = addr.parse().ok()?;
    match (kind, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(ip),
        _ => None,
    }
}

/// Rewrites a sanitized plain-RTP SDP to point at `address:port`: every
/// `c=` names `address`, the first audio section gets `port` (its
/// `a=rtcp` `port + 1`), every other media section is disabled (port 0).
pub fn point_at(sdp: &str, address: IpAddr, port: u16) -> String {
    let c = match address {
        IpAddr::V4(a) => format!("IN IP4 {a}"),
        IpAddr::V6(a) => format!("IN IP6 {a}"),
    };
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut first_audio_done = false;
    let mut in_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.splitn(3, ' ');
            let (media, _port, rest) = (
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
            );
            in_audio = media == "audio" && !first_audio_done;
            let p = if in_audio { port } else { 0 };
            first_audio_done |= in_audio;
            out.push_str(&format!("m={media} {p} {rest}\r\n"));
        } else if line.starts_with("c=") {
            out.push_str(&format!("c={c}\r\n"));
        } else if line.starts_with("a=rtcp:") {
            if in_audio {
                let rtcp = port.saturating_add(1);
                out.push_str(&format!("a=rtcp:{rtcp} {c}\r\n"));
            }
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// A valid-looking RTP or RTCP datagram: version 2 and at least a header.
pub fn rtp_like(d: &[u8]) -> bool {
    d.len() >= 8 && d.len() <= MAX_DATAGRAM && d[0] >> 6 == 2
}

fn bind(ip: IpAddr, port: u16) -> Option<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(ip, port)).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

impl Bridges {
    pub(crate) fn new(settings: MediaSettings) -> Self {
        let cursor = settings.first + settings.first % 2;
        Bridges {
            settings,
            inner: Mutex::new(Inner {
                cursor,
                ..Inner::default()
            }),
            counters: Arc::new(MediaCounters::default()),
        }
    }

    /// Open bridges.
    pub(crate) fn open(&self) -> usize {
        lock(&self.inner).bridges.len()
    }

    /// Open gateways.
    pub(crate) fn open_gateways(&self) -> usize {
        lock(&self.inner).gateways.len()
    }

    /// The relay the gateways allocate on.
    pub(crate) fn relay(&self) -> Option<SocketAddr> {
        self.settings.relay
    }

    /// The offer for leg `leg` of call `call` (`original`) going from a
    /// browser to a phone or from a phone to a browser (`from_browser`),
    /// the phone's SIP address `signaling`: opens the leg's gateway.
    /// `None`: no room, no codec in common, or our endpoint could not
    /// start (488 for this leg).
    pub(crate) fn gateway_offer(
        &self,
        (call, leg): (u64, usize),
        from_browser: bool,
        signaling: Option<IpAddr>,
        original: &str,
        relay: RelayAccess,
    ) -> Option<String> {
        let codecs = media::sdp::audio_codecs(original);
        if codecs.is_empty() {
            return None;
        }
        let mut inner = lock(&self.inner);
        if inner.bridges.len() + inner.gateways.len() >= self.settings.capacity() {
            self.counters.exhausted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if inner.runtime.is_none() {
            inner.runtime = MediaRuntime::start();
        }
        let runtime = inner.runtime.as_ref()?.handle().clone();
        let (ports, sockets) = self.take_ports(&mut inner)?;
        // The endpoint talks to the relay from the second pair's first
        // port (the same address family as the relay, else any port).
        let [rtp, rtcp, q, _]: [std::net::UdpSocket; 4] = sockets.try_into().ok()?;
        let to_relay = if relay.server.is_ipv4() == self.settings.address.is_ipv4() {
            q
        } else {
            let any: SocketAddr = if relay.server.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            bind(any.ip(), 0)?
        };
        // The phone's SDP address comes with its offer, or its answer.
        let (browser_offer, phone) = if from_browser {
            (Some(original.to_owned()), Peer::new(signaling, None))
        } else {
            (None, Peer::new(signaling, declared_address(original)))
        };
        let gw = Gateway::open(
            &runtime,
            ports,
            [rtp, rtcp, to_relay],
            self.settings.address,
            relay,
            browser_offer,
            codecs,
            phone,
            self.counters.clone(),
        )?;
        // Offering to a browser waits for our endpoint's allocation (the
        // SIP core waits anyway: it needs the offer to go on). No offer:
        // the gateway is dropped (its endpoint stops, its ports close).
        let offer = gw.offer()?;
        inner.used.extend(ports);
        self.counters
            .gateways_opened
            .fetch_add(1, Ordering::Relaxed);
        inner.gateways.insert((call, leg), gw);
        Some(offer)
    }

    /// The answer of leg `leg` of call `call` through its gateway, if it
    /// has one: `Some(None)` when the gateway cannot answer (488).
    pub(crate) fn gateway_answer(
        &self,
        (call, leg): (u64, usize),
        signaling: Option<IpAddr>,
        answer: &str,
    ) -> Option<Option<String>> {
        let mut inner = lock(&self.inner);
        let gw = inner.gateways.get_mut(&(call, leg))?;
        Some(gw.answer(answer, signaling))
    }

    /// Whether call `call` runs through a gateway.
    pub(crate) fn has_gateway(&self, call: u64) -> bool {
        lock(&self.inner).gateways.keys().any(|(c, _)| *c == call)
    }

    /// The SDP `sdp` (already sanitized; `original` as the phone sent it)
    /// of call `call`'s side `from` rewritten to the other side's ports;
    /// opens the call's bridge on first use. `None`: no room (488).
    pub(crate) fn rewrite(
        &self,
        call: u64,
        from: usize,
        signaling: Option<IpAddr>,
        original: &str,
        sanitized: &str,
    ) -> Option<String> {
        let declared = declared_address(original);
        let mut inner = lock(&self.inner);
        if !inner.bridges.contains_key(&call) {
            let Some(b) = self.open_bridge(&mut inner) else {
                self.counters.exhausted.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            self.counters.opened.fetch_add(1, Ordering::Relaxed);
            inner.bridges.insert(call, b);
        }
        let b = inner.bridges.get(&call)?;
        {
            let mut st = lock(&b.state);
            let p = &mut st.peers[from & 1];
            if p.declared != declared || p.signaling != signaling {
                // A new address (a re-INVITE from elsewhere): latch again.
                *p = Peer {
                    signaling,
                    declared,
                    latched: [None, None],
                };
            }
            // An offer or answer: the media (re)starts now.
            st.last_packet = Instant::now();
            st.idle_reported = false;
        }
        let port = b.ports[1 - (from & 1)];
        Some(point_at(sanitized, self.settings.address, port))
    }

    /// Releases call `call`'s bridge (its ports are free again).
    pub(crate) fn release(&self, call: u64) {
        let mut inner = lock(&self.inner);
        if let Some(b) = inner.bridges.remove(&call) {
            for p in b.ports {
                inner.used.remove(&p);
            }
        }
        let legs: Vec<(u64, usize)> = inner
            .gateways
            .keys()
            .filter(|(c, _)| *c == call)
            .copied()
            .collect();
        for key in legs {
            // Dropping the gateway closes its endpoint's channel: the
            // endpoint hangs up (deleting its allocation) and its sockets
            // close.
            if let Some(g) = inner.gateways.remove(&key) {
                for p in g.ports {
                    inner.used.remove(&p);
                }
            }
        }
    }

    /// `[sip] media_timeout`.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.settings.idle
    }

    /// Calls of `answered` whose media stopped for `timeout` (each
    /// reported once, and counted: the caller hangs them up). A call still
    /// ringing is not idle, however long it rings.
    pub(crate) fn idle(
        &self,
        now: Instant,
        timeout: Duration,
        answered: &HashSet<u64>,
    ) -> Vec<u64> {
        let inner = lock(&self.inner);
        let mut out = Vec::new();
        for (&call, b) in inner.bridges.iter().filter(|(c, _)| answered.contains(c)) {
            let mut st = lock(&b.state);
            if !st.idle_reported && now.saturating_duration_since(st.last_packet) >= timeout {
                st.idle_reported = true;
                out.push(call);
            }
        }
        // Only a leg that answered speaks for its call (a fork that lost
        // never gets media, and its endpoint gives up).
        let legs = inner.gateways.iter();
        for (&(call, _), g) in legs.filter(|((c, _), g)| g.is_answered() && answered.contains(c)) {
            let mut st = lock(&g.shared);
            let idle = now.saturating_duration_since(st.last_packet) >= timeout;
            if !st.idle_reported && (idle || st.failed) && !out.contains(&call) {
                st.idle_reported = true;
                out.push(call);
            }
        }
        self.counters
            .idle
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Two free port pairs (RTP even, RTCP next), bound: `[p, q]` and
    /// the sockets of p, p + 1, q, q + 1. Not marked used yet.
    fn take_ports(&self, inner: &mut Inner) -> Option<([u16; 2], Vec<std::net::UdpSocket>)> {
        let s = &self.settings;
        let first = s.first + s.first % 2;
        let mut sockets = Vec::with_capacity(4);
        let mut ports = Vec::with_capacity(2);
        let slots = usize::from(s.last.saturating_sub(first)) / 2 + 1;
        for _ in 0..slots {
            if ports.len() == 2 {
                break;
            }
            let p = inner.cursor;
            inner.cursor = if p.checked_add(3).is_some_and(|n| n <= s.last) {
                p + 2
            } else {
                first
            };
            if p.checked_add(1).is_none_or(|n| n > s.last)
                || inner.used.contains(&p)
                || ports.contains(&p)
            {
                continue;
            }
            // A port someone else holds is skipped.
            let (Some(rtp), Some(rtcp)) = (bind(s.address, p), bind(s.address, p + 1)) else {
                continue;
            };
            sockets.push(rtp);
            sockets.push(rtcp);
            ports.push(p);
        }
        if ports.len() < 2 {
            return None;
        }
        Some(([ports[0], ports[1]], sockets))
    }

    fn open_bridge(&self, inner: &mut Inner) -> Option<Bridge> {
        if inner.bridges.len() + inner.gateways.len() >= self.settings.capacity() {
            return None;
        }
        let (ports, sockets) = self.take_ports(inner)?;
        // Called from the SIP tasks, so inside the runtime; anywhere else
        // there is no bridge rather than a panic.
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let _guard = runtime.enter();
        let mut tokio_sockets = Vec::with_capacity(4);
        for s in sockets {
            tokio_sockets.push(UdpSocket::from_std(s).ok()?);
        }
        let state = Arc::new(Mutex::new(State {
            peers: [Peer::default(); 2],
            last_packet: Instant::now(),
            idle_reported: false,
        }));
        let task = runtime.spawn(forward(tokio_sockets, state.clone(), self.counters.clone()));
        inner.used.extend(ports);
        Some(Bridge { ports, state, task })
    }
}

/// What to do with a datagram that arrived on side `side`, component `c`.
fn route(
    st: &mut State,
    counters: &MediaCounters,
    side: usize,
    c: usize,
    src: SocketAddr,
    d: &[u8],
    now: Instant,
) -> Option<SocketAddr> {
    if !rtp_like(d) {
        counters.malformed.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if !st.peers[side].accept(c, src) {
        counters.foreign.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    st.last_packet = now;
    let to = st.peers[1 - side].destination(c);
    if to.is_none() {
        counters.no_peer.fetch_add(1, Ordering::Relaxed);
    }
    to
}

/// Sockets: side 0 RTP, side 0 RTCP, side 1 RTP, side 1 RTCP.
async fn forward(sockets: Vec<UdpSocket>, state: Arc<Mutex<State>>, counters: Arc<MediaCounters>) {
    let now = Instant::now();
    let mut buckets: Vec<TokenBucket> = (0..4)
        .map(|_| TokenBucket::new(PACKETS_PER_SEC, PACKET_BURST, now))
        .collect();
    let mut bufs = [[0u8; 2048]; 4];
    let [b0, b1, b2, b3] = &mut bufs;
    loop {
        let (i, r) = tokio::select! {
            r = sockets[0].recv_from(b0) => (0, r),
            r = sockets[1].recv_from(b1) => (1, r),
            r = sockets[2].recv_from(b2) => (2, r),
            r = sockets[3].recv_from(b3) => (3, r),
        };
        let Ok((n, src)) = r else {
            // ICMP errors (a phone gone) and the like: keep serving.
            continue;
        };
        let d = match i {
            0 => &b0[..n],
            1 => &b1[..n],
            2 => &b2[..n],
            _ => &b3[..n],
        };
        let now = Instant::now();
        let (side, c) = (i / 2, i % 2);
        // Strangers are dropped first: their flood cannot use up the
        // phone's budget.
        let to = route(&mut lock(&state), &counters, side, c, src, d, now);
        let Some(to) = to else {
            continue;
        };
        let Some(bucket) = buckets.get_mut(i) else {
            continue;
        };
        if !bucket.take(now) {
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // Out of the other side's socket of the same component.
        let out = (1 - side) * 2 + c;
        match sockets.get(out).map(|s| s.try_send_to(d, to)) {
            Some(Ok(_)) => counters.forwarded.fetch_add(1, Ordering::Relaxed),
            _ => counters.send_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.7\r\ns=baresip\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtcp:4001 IN IP4 192.0.2.7\r\nm=video 4002 RTP/AVP 96\r\nc=IN IP4 192.0.2.8\r\n";

    #[test]
    fn plain_rtp_is_recognised_and_its_address_read() {
        assert!(is_plain_rtp(PHONE));
        assert!(!is_plain_rtp("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
        assert!(!is_plain_rtp(&format!("{PHONE}a=ice-ufrag:abcd\r\n")));
        assert!(!is_plain_rtp("v=0\r\n"));
        assert_eq!(
            declared_address(PHONE),
            Some("192.0.2.7:4000".parse().unwrap())
        );
        let media_c = PHONE.replace(
            "m=audio 4000 RTP/AVP 0 8 101\r\n",
            "m=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.9\r\n",
        );
        assert_eq!(
            declared_address(&media_c),
            Some("192.0.2.9:4000".parse().unwrap())
        );
        assert_eq!(
            declared_address("c=IN IP4 host.example\r\nm=audio 1 RTP/AVP 0\r\n"),
            None
        );
        assert_eq!(
            declared_address("m=audio x RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\n"),
            None
        );
    }

    #[test]
    fn rewritten_sdp_names_only_the_bridge() {
        let phone = PHONE.replace("o=- 1 2 IN IP4 192.0.2.7", "o=- 1 2 IN IP4 0.0.0.0");
        let out = point_at(&phone, "198.51.100.1".parse().unwrap(), 30_000);
        assert!(!out.contains("192.0.2."), "{out}");
        assert!(out.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"), "{out}");
        assert!(
            out.contains("a=rtcp:30001 IN IP4 198.51.100.1\r\n"),
            "{out}"
        );
        assert!(out.contains("m=video 0 RTP/AVP 96\r\n"), "{out}");
        assert_eq!(out.matches("c=IN IP4 198.51.100.1").count(), 2, "{out}");
    }

    #[test]
    fn port_ranges() {
        assert_eq!(
            MediaSettings::parse_ports("30000-30099"),
            Some((30_000, 30_099))
        );
        assert_eq!(MediaSettings::parse_ports(" 10 - 13 "), Some((10, 13)));
        for bad in ["", "5", "10-12", "20-10", "0-100", "a-b", "1-70000"] {
            assert_eq!(MediaSettings::parse_ports(bad), None, "{bad}");
        }
        let s = |first, last| MediaSettings {
            address: "127.0.0.1".parse().unwrap(),
            idle: IDLE_TIMEOUT,
            relay: None,
            first,
            last,
        };
        assert_eq!(s(30_000, 30_099).capacity(), 25);
        assert_eq!(s(30_001, 30_004).capacity(), 0);
        assert_eq!(s(30_001, 30_006).capacity(), 1);
    }

    #[test]
    fn latching_accepts_only_the_phone() {
        let counters = MediaCounters::default();
        let now = Instant::now();
        let phone_a: IpAddr = "192.0.2.2".parse().unwrap();
        let mut st = State {
            peers: [
                Peer {
                    signaling: Some(phone_a),
                    declared: Some("10.0.0.2:4000".parse().unwrap()),
                    latched: [None, None],
                },
                Peer {
                    signaling: Some("192.0.2.3".parse().unwrap()),
                    declared: Some("192.0.2.3:5000".parse().unwrap()),
                    latched: [None, None],
                },
            ],
            last_packet: now,
            idle_reported: false,
        };
        let rtp = [0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        // A stranger first: dropped, no latch.
        let stranger: SocketAddr = "203.0.113.9:4444".parse().unwrap();
        assert_eq!(route(&mut st, &counters, 0, 0, stranger, &rtp, now), None);
        assert_eq!(counters.foreign.load(Ordering::Relaxed), 1);
        // The phone behind NAT (SIP address, another port): latched, and
        // sent to the other phone's SDP address (its SIP address).
        let nat: SocketAddr = "192.0.2.2:61000".parse().unwrap();
        assert_eq!(
            route(&mut st, &counters, 0, 0, nat, &rtp, now),
            Some("192.0.2.3:5000".parse().unwrap())
        );
        // Side 1's phone sends from another address but its SDP's port
        // (RTP leaving a multi-homed host by another interface): latched.
        let multi: SocketAddr = "198.51.100.3:5000".parse().unwrap();
        let mut st1 = State {
            peers: [st.peers[1], st.peers[0]],
            last_packet: now,
            idle_reported: false,
        };
        assert_eq!(
            route(&mut st1, &counters, 0, 0, multi, &rtp, now),
            Some(nat)
        );
        // Another port of the same host after latching: foreign.
        let other: SocketAddr = "192.0.2.2:61002".parse().unwrap();
        assert_eq!(route(&mut st, &counters, 0, 0, other, &rtp, now), None);
        assert_eq!(counters.foreign.load(Ordering::Relaxed), 2);
        // Side 1 answers from its own port: back to side 0's latched one.
        let b: SocketAddr = "192.0.2.3:5000".parse().unwrap();
        assert_eq!(route(&mut st, &counters, 1, 0, b, &rtp, now), Some(nat));
        // RTCP of side 1 before side 0's RTCP is latched: side 0 declared
        // a private address (not its SIP address), so nowhere yet.
        assert_eq!(
            route(
                &mut st,
                &counters,
                1,
                1,
                "192.0.2.3:5001".parse().unwrap(),
                &rtp,
                now
            ),
            None
        );
        assert_eq!(counters.no_peer.load(Ordering::Relaxed), 1);
        // Garbage and oversize: malformed.
        assert_eq!(route(&mut st, &counters, 0, 0, nat, &[0u8; 12], now), None);
        assert_eq!(
            route(&mut st, &counters, 0, 0, nat, &[0x80u8; 4], now),
            None
        );
        assert_eq!(
            route(&mut st, &counters, 0, 0, nat, &vec![0x80u8; 1501], now),
            None
        );
        assert_eq!(counters.malformed.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn bridges_forward_and_release_their_ports() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Four ports: one bridge at most.
        let probe = std::net::UdpSocket::bind((ip, 0)).unwrap();
        let base = probe.local_addr().unwrap().port() & !1;
        drop(probe);
        let bridges = Bridges::new(MediaSettings {
            address: ip,
            idle: IDLE_TIMEOUT,
            relay: None,
            first: base,
            last: base + 3,
        });
        let a = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        let b = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        let sdp = |s: &tokio::net::UdpSocket| {
            let p = s.local_addr().unwrap().port();
            format!("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio {p} RTP/AVP 0\r\n")
        };
        let to_b = bridges.rewrite(7, 0, Some(ip), &sdp(&a), &sdp(&a));
        let Some(to_b) = to_b else {
            return; // The probed ports were taken meanwhile: nothing to test.
        };
        let to_a = bridges.rewrite(7, 1, Some(ip), &sdp(&b), &sdp(&b)).unwrap();
        assert_eq!(bridges.open(), 1);
        // No room for a second call.
        assert!(bridges
            .rewrite(8, 0, Some(ip), &sdp(&a), &sdp(&a))
            .is_none());
        let port = |s: &str| -> u16 {
            s.lines()
                .find_map(|l| l.strip_prefix("m=audio "))
                .and_then(|m| m.split(' ').next())
                .and_then(|p| p.parse().ok())
                .unwrap()
        };
        let (pa, pb) = (port(&to_a), port(&to_b));
        assert_ne!(pa, pb);
        let rtp = [0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 42];
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            a.send_to(&rtp, (ip, pa)).await.unwrap();
            let (n, from) = tokio::time::timeout(Duration::from_secs(10), b.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((&buf[..n], from.port()), (&rtp[..], pb));
            b.send_to(&rtp, (ip, pb)).await.unwrap();
            let (n, from) = tokio::time::timeout(Duration::from_secs(10), a.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((&buf[..n], from.port()), (&rtp[..], pa));
        }
        assert_eq!(bridges.counters.forwarded.load(Ordering::Relaxed), 6);
        let answered: HashSet<u64> = [7].into();
        assert!(bridges
            .idle(Instant::now(), Duration::from_secs(3600), &answered)
            .is_empty());
        // A call not answered (still ringing) is never idle.
        let later = Instant::now() + Duration::from_secs(1);
        assert!(bridges
            .idle(later, Duration::ZERO, &HashSet::new())
            .is_empty());
        assert_eq!(bridges.counters.idle.load(Ordering::Relaxed), 0);
        assert_eq!(bridges.idle(later, Duration::ZERO, &answered), vec![7]);
        assert_eq!(bridges.counters.idle.load(Ordering::Relaxed), 1);
        bridges.release(7);
        bridges.release(7);
        assert_eq!(bridges.open(), 0);
        // The ports are free again (the aborted task drops its sockets).
        let deadline = Instant::now() + Duration::from_secs(10);
        while bridges
            .rewrite(9, 0, Some(ip), &sdp(&a), &sdp(&a))
            .is_none()
        {
            assert!(Instant::now() < deadline, "ports not released");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(bridges.open(), 1);
    }
}

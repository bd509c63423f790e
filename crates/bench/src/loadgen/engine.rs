//! The load generator's event loop: sessions (a TURN client and its link),
//! echo peers, client timers and the pacing timer, on one thread.
//!
//! Probes take a fast path: ChannelData from the server is read straight
//! from the receive buffer (no event, no allocation); only STUN messages go
//! through [`turn::client::Client`]. What the mode logic must decide on
//! (allocated, channel bound, failures) comes out of [`Engine::next_notice`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use turn::client::{Client, Event};

use super::link::{Link, LinkKind, MAX_FRAME};
use super::pacer::Pacer;
use super::peer::Peer;
use super::probe::{Clock, Probe};
use super::stats::{Samples, SeqTracker};

const PACER: Token = Token(0);
const PEER_BASE: usize = 1;
const SESSION_BASE: usize = 1 << 24;

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Not started.
    Idle,
    /// Allocating, or installing its permission and channel.
    Setup,
    /// Ready to carry probes.
    Ready,
    /// Gave up (see the notice).
    Failed,
}

/// One allocation (or, in direct mode, one client socket).
#[derive(Debug)]
pub struct Session {
    /// The connection to the server (or the peer, in direct mode).
    pub link: Option<Link>,
    /// The TURN client; `None` in direct mode.
    pub client: Option<Client>,
    /// Where probes go: a peer socket or a partner's relayed address.
    pub target: Option<SocketAddr>,
    /// The relayed address, once allocated.
    pub relayed: Option<SocketAddr>,
    /// Where the session stands.
    pub state: SessionState,
    armed: Option<Instant>,
}

impl Session {
    fn idle() -> Self {
        Session {
            link: None,
            client: None,
            target: None,
            relayed: None,
            state: SessionState::Idle,
            armed: None,
        }
    }
}

/// What the mode logic must handle.
#[derive(Debug)]
pub enum Notice {
    /// An event of the session's TURN client (never `Data`: probes are
    /// counted by the engine).
    Turn(Event),
    /// The link failed; the session is closed (its state is left as it was).
    LinkFailed(String),
}

/// Counters of the data path.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Probes sent.
    pub sent: u64,
    /// Sends the socket refused (buffer full): not counted as sent.
    pub send_dropped: u64,
    /// Probes echoed by a client-to-client responder.
    pub echoed: u64,
    /// Data that was not a probe.
    pub foreign: u64,
}

/// Local ports handed out in turn.
#[derive(Debug)]
struct PortCycle {
    range: std::ops::RangeInclusive<u16>,
    next: u16,
}

impl PortCycle {
    fn take(&mut self) -> u16 {
        let port = self.next;
        self.next = if port >= *self.range.end() {
            *self.range.start()
        } else {
            port + 1
        };
        port
    }
}

/// How sessions talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Through a TURN allocation to a peer.
    Relay,
    /// Straight to the peer socket.
    Direct,
    /// Through two allocations: even sessions send, odd ones echo.
    ClientToClient,
}

/// The event loop and everything it drives.
#[derive(Debug)]
pub struct Engine {
    poll: Poll,
    events: Events,
    ready: Vec<(Token, bool, bool)>,
    pacer: Pacer,
    /// The generator's clock.
    pub clock: Clock,
    /// Sessions by index.
    pub sessions: Vec<Session>,
    /// Echo peers by index.
    pub peers: Vec<Peer>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    notices: VecDeque<(usize, Notice)>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    probe: Vec<u8>,
    path: Path,
    kind: LinkKind,
    tls: Option<Arc<rustls::ClientConfig>>,
    ports: Option<PortCycle>,
    busy_poll: bool,
    /// Data path counters.
    pub counters: Counters,
    /// Which probes came back.
    pub seq: SeqTracker,
    /// Round trips.
    pub rtt: Samples,
    /// Sender to echo peer.
    pub to_peer: Samples,
    /// Echo peer back to the sender.
    pub from_peer: Samples,
}

impl Engine {
    /// An engine with `sessions` idle sessions of `kind` on `path`, carrying
    /// probes of `size` bytes.
    pub fn new(
        path: Path,
        kind: LinkKind,
        sessions: usize,
        size: usize,
        expected_probes: u64,
    ) -> io::Result<Engine> {
        let poll = Poll::new()?;
        let pacer = Pacer::new()?;
        pacer.register(poll.registry(), PACER)?;
        let tls = match kind {
            LinkKind::Tls => Some(
                super::tls::dangerous_client_config()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            ),
            _ => None,
        };
        let samples = usize::try_from(expected_probes)
            .unwrap_or(0)
            .min(50_000_000);
        Ok(Engine {
            poll,
            events: Events::with_capacity(1024),
            ready: Vec::with_capacity(1024),
            pacer,
            clock: Clock::new(),
            sessions: (0..sessions).map(|_| Session::idle()).collect(),
            peers: Vec::new(),
            timers: BinaryHeap::new(),
            notices: VecDeque::new(),
            rx: vec![0; MAX_FRAME],
            tx: vec![0; MAX_FRAME],
            probe: vec![0; size.max(super::probe::PROBE_LEN)],
            path,
            kind,
            tls,
            ports: None,
            busy_poll: false,
            counters: Counters::default(),
            seq: SeqTracker::with_capacity(expected_probes),
            rtt: Samples::with_capacity(samples),
            to_peer: Samples::with_capacity(samples),
            from_peer: Samples::with_capacity(samples),
        })
    }

    /// Opens an echo peer on `ip` and returns its address.
    pub fn add_peer(&mut self, ip: std::net::IpAddr) -> io::Result<SocketAddr> {
        let mut p = Peer::bind(ip)?;
        p.register(self.poll.registry(), Token(PEER_BASE + self.peers.len()))?;
        let addr = p.addr();
        self.peers.push(p);
        Ok(addr)
    }

    /// Polls without sleeping while traffic runs (one CPU kept busy).
    pub fn set_busy_poll(&mut self, on: bool) {
        self.busy_poll = on;
    }

    /// From now on, UDP links bind the ports of `range` in turn (skipping
    /// ports in use), so a 5-tuple is reused as late as possible.
    pub fn cycle_ports(&mut self, range: std::ops::RangeInclusive<u16>) {
        self.ports = Some(PortCycle {
            next: *range.start(),
            range,
        });
    }

    fn udp_link(&mut self, to: SocketAddr) -> io::Result<Link> {
        let Some(cycle) = self.ports.as_mut() else {
            return Link::udp(to, 0);
        };
        let mut last = None;
        for _ in 0..64 {
            let port = cycle.take();
            match Link::udp(to, port) {
                Ok(link) => return Ok(link),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
    }

    /// Opens session `i`'s link to `to`. With `client`, sends its Allocate.
    pub fn open(&mut self, i: usize, to: SocketAddr, client: Option<Client>) -> io::Result<()> {
        let mut link = match self.kind {
            LinkKind::Udp => self.udp_link(to)?,
            LinkKind::Tcp => Link::stream(to, None)?,
            LinkKind::Tls => Link::stream(to, self.tls.as_ref())?,
        };
        link.register(self.poll.registry(), Token(SESSION_BASE + i))?;
        let s = &mut self.sessions[i];
        s.link = Some(link);
        s.state = SessionState::Setup;
        s.relayed = None;
        s.armed = None;
        s.client = client;
        if let Some(c) = s.client.as_mut() {
            // A fresh client in state Idle: allocate cannot fail.
            let _ = c.allocate(Instant::now());
        } else {
            s.state = SessionState::Ready;
        }
        self.service(i);
        Ok(())
    }

    /// Closes session `i`'s link and forgets its client.
    pub fn close(&mut self, i: usize) {
        let s = &mut self.sessions[i];
        if let Some(mut link) = s.link.take() {
            let _ = link.deregister(self.poll.registry());
        }
        s.client = None;
        s.armed = None;
    }

    /// The next thing the mode logic must handle.
    pub fn next_notice(&mut self) -> Option<(usize, Notice)> {
        self.notices.pop_front()
    }

    /// Lets session `i`'s client act (after the mode logic called it):
    /// sends its transmits, queues its events, re-arms its timer.
    pub fn touch(&mut self, i: usize) {
        self.service(i);
    }

    /// Sends probe `seq` from session `i`; false if it could not be sent
    /// (then `seq` was not used).
    pub fn send_probe(&mut self, i: usize, seq: u64) -> bool {
        let Engine {
            sessions,
            probe,
            tx,
            clock,
            counters,
            ..
        } = self;
        let s = &mut sessions[i];
        let (Some(link), Some(target)) = (s.link.as_mut(), s.target) else {
            counters.send_dropped += 1;
            return false;
        };
        let now = Instant::now();
        let p = Probe {
            seq,
            sent_ns: clock.ns(now),
            peer_ns: 0,
            from: u32::try_from(i).unwrap_or(u32::MAX),
        };
        p.write(probe);
        let sent = match s.client.as_ref() {
            Some(c) => match c.encode_send(target, probe, tx) {
                Some(n) => link.send(&tx[..n]),
                None => Ok(false),
            },
            None => link.send(probe),
        };
        match sent {
            Ok(true) => {
                counters.sent += 1;
                true
            }
            Ok(false) => {
                counters.send_dropped += 1;
                false
            }
            Err(e) => {
                self.fail(i, &e);
                false
            }
        }
    }

    /// One round of the loop: waits for I/O until `precise` (to the
    /// microsecond), the next client timer, or `max_wait`, whichever is
    /// first; handles what is ready; runs due client timers.
    pub fn pump(&mut self, precise: Option<Instant>, max_wait: Duration) -> io::Result<()> {
        let now = Instant::now();
        let mut wait = max_wait;
        if let Some(Reverse((t, _))) = self.timers.peek() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        if self.busy_poll && precise.is_some() {
            // Never sleep while traffic runs: no wake-up latency on our side.
            wait = Duration::ZERO;
        } else if let Some(at) = precise {
            if at <= now {
                wait = Duration::ZERO;
            } else if at - now < wait {
                self.pacer.arm(at, now)?;
                // epoll rounds up to whole milliseconds; the timer wakes us first.
                wait = at - now + Duration::from_millis(1);
            }
        }
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.ready.clear();
        for ev in self.events.iter() {
            self.ready.push((
                ev.token(),
                ev.is_readable() || ev.is_read_closed(),
                ev.is_writable(),
            ));
        }
        let ready = std::mem::take(&mut self.ready);
        for &(token, readable, writable) in &ready {
            match token.0 {
                0 => self.pacer.fired(),
                t if t < SESSION_BASE => {
                    let p = t - PEER_BASE;
                    if let Some(peer) = self.peers.get_mut(p) {
                        peer.echo_all(&self.clock, &mut self.rx)?;
                    }
                }
                t => {
                    let i = t - SESSION_BASE;
                    if writable {
                        self.on_writable(i);
                    }
                    if readable {
                        self.on_readable(i);
                    }
                }
            }
        }
        self.ready = ready;
        self.run_timers();
        Ok(())
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let i = i as usize;
            let s = &mut self.sessions[i];
            if s.armed != Some(t) {
                continue;
            }
            s.armed = None;
            if let Some(c) = s.client.as_mut() {
                c.handle_timeout(now);
            }
            self.service(i);
        }
    }

    fn on_writable(&mut self, i: usize) {
        let Some(link) = self.sessions[i].link.as_mut() else {
            return;
        };
        if let Err(e) = link.on_writable() {
            self.fail(i, &e);
        }
    }

    fn on_readable(&mut self, i: usize) {
        loop {
            let Some(link) = self.sessions[i].link.as_mut() else {
                return;
            };
            match link.recv(&mut self.rx) {
                Ok(Some(n)) => self.dispatch(i, n),
                Ok(None) => return,
                Err(e) => {
                    self.fail(i, &e);
                    return;
                }
            }
        }
    }

    /// Handles `self.rx[..n]`, received by session `i`.
    fn dispatch(&mut self, i: usize, n: usize) {
        if self.path == Path::Direct {
            self.on_probe(i, 0, n);
            return;
        }
        let b = &self.rx[..n];
        if n >= 4 && b[0] >> 6 == 1 {
            let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            if 4 + len <= n {
                self.on_probe(i, 4, len);
            }
            return;
        }
        let now = Instant::now();
        let s = &mut self.sessions[i];
        if let Some(c) = s.client.as_mut() {
            let server = c.config().server;
            c.handle_datagram(now, server, &self.rx[..n]);
        }
        self.service(i);
    }

    /// Handles the probe in `self.rx[at..at + len]`, received by session `i`.
    fn on_probe(&mut self, i: usize, at: usize, len: usize) {
        let now = Instant::now();
        let now_ns = self.clock.ns(now);
        let Some(p) = Probe::read(&self.rx[at..at + len]) else {
            self.counters.foreign += 1;
            return;
        };
        if self.path == Path::ClientToClient && p.from as usize != i {
            // The responder of a pair: stamp and echo through its allocation.
            let data = &mut self.rx[at..at + len];
            Probe::stamp_peer(data, now_ns);
            let s = &mut self.sessions[i];
            let (Some(c), Some(link), Some(target)) =
                (s.client.as_ref(), s.link.as_mut(), s.target)
            else {
                return;
            };
            let Some(m) = c.encode_send(target, data, &mut self.tx) else {
                return;
            };
            match link.send(&self.tx[..m]) {
                Ok(true) => self.counters.echoed += 1,
                Ok(false) => self.counters.send_dropped += 1,
                Err(e) => self.fail(i, &e),
            }
            return;
        }
        if self.seq.receive(p.seq, self.counters.sent) {
            self.rtt.push(now_ns.saturating_sub(p.sent_ns));
            if p.peer_ns != 0 {
                self.to_peer.push(p.peer_ns.saturating_sub(p.sent_ns));
                self.from_peer.push(now_ns.saturating_sub(p.peer_ns));
            }
        }
    }

    /// Drains session `i`'s transmits and events and re-arms its timer.
    fn service(&mut self, i: usize) {
        let s = &mut self.sessions[i];
        let Some(c) = s.client.as_mut() else {
            return;
        };
        let mut failure = None;
        while let Some(t) = c.poll_transmit() {
            if let Some(link) = s.link.as_mut() {
                if let Err(e) = link.send(&t.payload) {
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut data = Vec::new();
        while let Some(ev) = c.poll_event() {
            match ev {
                Event::Data { data: d, .. } => data.push(d),
                other => self.notices.push_back((i, Notice::Turn(other))),
            }
        }
        let t = c.poll_timeout();
        if t != s.armed {
            if let Some(t) = t {
                self.timers
                    .push(Reverse((t, u32::try_from(i).unwrap_or(u32::MAX))));
            }
            s.armed = t;
        }
        // Send indications carry probes as Data events (no channel yet).
        for d in data {
            let len = d.len().min(self.rx.len());
            self.rx[..len].copy_from_slice(&d[..len]);
            self.on_probe(i, 0, len);
        }
        if let Some(e) = failure {
            self.fail(i, &e);
        }
    }

    /// Closes session `i` after a link error and tells the mode logic, which
    /// decides the session's state.
    fn fail(&mut self, i: usize, e: &io::Error) {
        if self.sessions[i].link.is_none() {
            return;
        }
        self.close(i);
        self.notices
            .push_back((i, Notice::LinkFailed(e.to_string())));
    }
}

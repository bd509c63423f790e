//! Two endpoints and our sans-IO TURN server in simulated time: no socket,
//! no sleep. Every hop takes `HOP` and may lose packets (seeded).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use turn::auth::Credentials;
use turn::server::{Output as ServerOutput, RelayAddresses, Server, ServerConfig};
use turn::{FiveTuple, Transport};

use super::*;
use crate::jitter::{FrameDecoder, JitterBuffer};

const HOP: Duration = Duration::from_millis(10);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn server_addr() -> SocketAddr {
    addr("192.0.2.1:3478")
}

fn server() -> Server {
    let creds = Credentials::new(
        "sim",
        [("alice", "alice-pw"), ("bob", "bob-pw")],
        [b"rest-secret".to_vec()],
    )
    .unwrap();
    let relay_ip: IpAddr = "192.0.2.10".parse().unwrap();
    let mut c = ServerConfig::new(
        creds,
        RelayAddresses {
            ipv4: Some(relay_ip),
            ..Default::default()
        },
    );
    c.ports = 50000..=50999;
    Server::new(c, Instant::now(), 1_800_000_000)
}

fn endpoint(user: &str, pass: &str, client: SocketAddr, now: Instant) -> Endpoint {
    let turn = ClientConfig::new(server_addr(), Transport::Udp, user, pass);
    let mut ep = Endpoint::new(EndpointConfig::new(turn, client), now).unwrap();
    ep.start(now).unwrap();
    ep
}

/// Where a packet goes.
#[derive(Debug)]
enum To {
    Server(SocketAddr),
    Client(usize),
}

/// The world: a relay, endpoints at known client addresses, packets in
/// flight ordered by delivery time.
struct World {
    now: Instant,
    server: Server,
    eps: Vec<Endpoint>,
    clients: Vec<SocketAddr>,
    flight: BTreeMap<(Instant, u64), (To, Vec<u8>)>,
    seq: u64,
    rng: u64,
    /// Probability that a packet between relay and client B is lost.
    loss_to_b: f64,
    /// The lab's impairment stage on the relay → B leg of the TURN path.
    impair_b: Option<lab::impair::ImpairStage<Vec<u8>>>,
    t0: Instant,
    events: Vec<Vec<EndpointEvent>>,
}

impl World {
    fn new(users: &[(&str, &str)]) -> World {
        let now = Instant::now();
        let clients: Vec<SocketAddr> = (0..users.len())
            .map(|i| addr(&format!("198.51.100.{}:40000", i + 1)))
            .collect();
        let eps = users
            .iter()
            .zip(&clients)
            .map(|((u, p), c)| endpoint(u, p, *c, now))
            .collect();
        World {
            now,
            server: server(),
            eps,
            events: vec![Vec::new(); users.len()],
            clients,
            flight: BTreeMap::new(),
            seq: 0,
            rng: 0x1234_5678_9abc_def1,
            loss_to_b: 0.0,
            impair_b: None,
            t0: now,
        }
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.t0).as_nanos() as u64
    }

    fn send(&mut self, to: To, bytes: Vec<u8>) {
        if let (To::Client(1), Some(_)) = (&to, &self.impair_b) {
            let now = self.ns(self.now);
            if let Some(stage) = self.impair_b.as_mut() {
                stage.push(now, bytes.len(), bytes);
            }
            return;
        }
        let lossy =
            matches!(to, To::Client(1)) || matches!(to, To::Server(a) if a == self.clients[1]);
        if lossy && self.loss_to_b > 0.0 && self.random() < self.loss_to_b {
            return;
        }
        self.seq += 1;
        self.flight.insert((self.now + HOP, self.seq), (to, bytes));
    }

    /// Moves every output of every party into flight.
    fn collect(&mut self) {
        for i in 0..self.eps.len() {
            while let Some(t) = self.eps[i].poll_transmit() {
                assert_eq!(t.destination, server_addr());
                let from = self.clients[i];
                self.send(To::Server(from), t.payload);
            }
            while let Some(e) = self.eps[i].poll_event() {
                self.events[i].push(e);
            }
        }
        while let Some(out) = self.server.poll_output() {
            match out {
                ServerOutput::Transmit {
                    five_tuple,
                    payload,
                } => {
                    if let Some(i) = self.clients.iter().position(|c| *c == five_tuple.client) {
                        self.send(To::Client(i), payload);
                    }
                }
                ServerOutput::BindRelay { token, .. } => {
                    self.server.relay_bound(self.now, token, Ok(()));
                }
                _ => {}
            }
        }
    }

    fn deliver(&mut self, to: To, bytes: Vec<u8>) {
        match to {
            To::Client(i) => self.eps[i].handle_turn_datagram(self.now, server_addr(), &bytes),
            To::Server(client) => {
                let ft = FiveTuple {
                    client,
                    server: server_addr(),
                    transport: Transport::Udp,
                };
                let Some(send) = self.server.handle_client_packet(self.now, ft, &bytes) else {
                    return;
                };
                // Both allocations are on this relay: hand the data to the
                // peer's relayed address directly.
                let (relay, peer, data) = (send.relay, send.peer, send.data.to_vec());
                let h = turn::server::PEER_DATA_HEADROOM;
                let mut buf = vec![0u8; h + data.len() + turn::server::PEER_DATA_TAILROOM];
                buf[h..h + data.len()].copy_from_slice(&data);
                if let Some(fwd) =
                    self.server
                        .handle_peer_data(self.now, peer, relay, &mut buf, data.len())
                {
                    if let Some(i) = self
                        .clients
                        .iter()
                        .position(|c| *c == fwd.five_tuple.client)
                    {
                        self.send(To::Client(i), buf[fwd.start..fwd.end].to_vec());
                    }
                }
            }
        }
    }

    /// Runs until `until`, calling `each` at every 20 ms tick.
    fn run(&mut self, until: Instant, mut each: impl FnMut(&mut World)) {
        let mut next_tick = self.now;
        for _ in 0..10_000_000 {
            self.collect();
            if self.now >= until {
                return;
            }
            let mut next = until.min(next_tick);
            if let Some(((t, _), _)) = self.flight.first_key_value() {
                next = next.min(*t);
            }
            for ep in &self.eps {
                if let Some(t) = ep.poll_timeout() {
                    next = next.min(t.max(self.now));
                }
            }
            if let Some(t) = self.server.poll_timeout() {
                next = next.min(t.max(self.now));
            }
            if let Some(at) = self.impair_b.as_ref().and_then(|s| s.next_deadline()) {
                next = next.min((self.t0 + Duration::from_nanos(at)).max(self.now));
            }
            self.now = next.max(self.now);
            let now_ns = self.ns(self.now);
            while let Some(bytes) = self.impair_b.as_mut().and_then(|s| s.poll(now_ns)) {
                self.deliver(To::Client(1), bytes);
            }
            while let Some(entry) = self.flight.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (to, bytes) = entry.remove();
                self.deliver(to, bytes);
            }
            for ep in &mut self.eps {
                if ep.poll_timeout().is_some_and(|t| t <= self.now) {
                    ep.handle_timeout(self.now);
                }
            }
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_timeout(self.now);
            }
            if self.now >= next_tick {
                next_tick = self.now + Duration::from_millis(20);
                each(self);
            }
        }
        panic!("simulation did not finish");
    }

    fn has(&self, i: usize, f: impl Fn(&EndpointEvent) -> bool) -> bool {
        self.events[i].iter().any(f)
    }

    /// Allocates both, offers from 0, answers from 1, until both connect.
    fn connect(&mut self) {
        let deadline = self.now + Duration::from_secs(2);
        self.run(deadline, |_| {});
        for i in 0..2 {
            assert!(
                self.has(i, |e| matches!(e, EndpointEvent::Allocated { .. })),
                "endpoint {i} not allocated: {:?}",
                self.events[i]
            );
        }
        let now = self.now;
        let offer = self.eps[0].create_offer(now).unwrap();
        assert!(offer.contains("typ relay"), "{offer}");
        assert!(!offer.contains("typ host"));
        assert!(!offer.contains("str0m"), "software name in o=: {offer}");
        let answer = self.eps[1].accept_offer(now, &offer).unwrap();
        assert!(answer.contains("typ relay"), "{answer}");
        assert!(!answer.contains("str0m"));
        self.eps[0].accept_answer(now, &answer).unwrap();
        let deadline = self.now + Duration::from_secs(5);
        self.run(deadline, |_| {});
        for i in 0..2 {
            assert!(
                self.has(i, |e| matches!(e, EndpointEvent::Connected)),
                "endpoint {i} not connected: {:?}",
                self.events[i]
            );
        }
    }
}

struct Fake;
impl FrameDecoder for Fake {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
        out[..crate::FRAME_SAMPLES].fill(i16::from(*payload.first()?));
        Some(crate::FRAME_SAMPLES)
    }
    fn conceal(&mut self, out: &mut [i16]) -> usize {
        out[..crate::FRAME_SAMPLES].fill(0);
        crate::FRAME_SAMPLES
    }
}

/// Sends `n` frames from endpoint 0 to 1, one per tick; returns the
/// jitter buffer that played them at endpoint 1.
fn stream(w: &mut World, n: u32) -> JitterBuffer {
    let mut jb = JitterBuffer::new();
    let mut sent = 0u32;
    let mut out = vec![0i16; crate::FRAME_SAMPLES];
    let until = w.now + Duration::from_millis(20 * u64::from(n) + 500);
    let mut seen = 0;
    w.run(until, |w| {
        if sent < n {
            let payload = vec![(sent % 250) as u8 + 1; 60];
            let now = w.now;
            assert!(w.eps[0].send_audio(now, 7 + sent * 960, &payload));
            sent += 1;
        }
        for e in &w.events[1][seen..] {
            if let EndpointEvent::Audio(p) = e {
                jb.push(p.seq, p.rtp_time, p.arrival, &p.payload);
            }
        }
        seen = w.events[1].len();
        jb.pop(w.now, &mut Fake, &mut out);
    });
    jb
}

#[test]
fn two_endpoints_connect_through_the_relay_and_audio_flows() {
    let mut w = World::new(&[("alice", "alice-pw"), ("bob", "bob-pw")]);
    w.connect();
    // Both relayed addresses are on the relay; nothing else was a candidate.
    for ep in &w.eps {
        assert_eq!(
            ep.relayed().map(|a| a.ip()),
            Some("192.0.2.10".parse().unwrap())
        );
    }
    let jb = stream(&mut w, 250);
    let s = jb.stats();
    assert_eq!(s.packets_received, 250, "{s:?}");
    assert_eq!(s.packets_lost, 0);
    // Only the three frames after the stream stopped (see jitter.rs).
    assert_eq!(s.concealed_samples, 3 * crate::FRAME_SAMPLES as u64);
    assert!(s.jitter < 0.002, "{s:?}");
    assert_eq!(w.eps[0].sent().1, 250);
    // RTCP gave the sender an RTT: two hops each way, 40 ms.
    let rtt = w.eps[0].rtt().expect("RTT measured");
    assert!(
        rtt >= Duration::from_millis(35) && rtt <= Duration::from_millis(60),
        "{rtt:?}"
    );
    assert_eq!(w.eps[1].drops().bad_input, 0);
}

#[test]
fn loss_on_the_path_is_counted_and_concealed() {
    let mut w = World::new(&[("alice", "alice-pw"), ("bob", "bob-pw")]);
    w.connect();
    w.loss_to_b = 0.05;
    let jb = stream(&mut w, 1000);
    let s = jb.stats();
    // Loss on the two hops into and out of B (the relay leg to B only
    // carries A's media once): about 5 %.
    let lost = s.packets_lost;
    assert!((20..=90).contains(&lost), "lost {lost}: {s:?}");
    let concealed = s.concealed_samples / crate::FRAME_SAMPLES as u64;
    // Every lost or late frame concealed, plus up to three after the end.
    assert!(
        (lost + s.late_packets..=lost + s.late_packets + 3).contains(&concealed),
        "{s:?}"
    );
}

#[test]
fn a_refused_allocation_is_reported_not_hung() {
    let mut w = World::new(&[("alice", "wrong"), ("bob", "bob-pw")]);
    let deadline = w.now + Duration::from_secs(2);
    w.run(deadline, |_| {});
    assert!(
        w.has(0, |e| matches!(
            e,
            EndpointEvent::AllocationFailed { code: 401, .. }
        )),
        "{:?}",
        w.events[0]
    );
    assert!(matches!(
        w.eps[0].create_offer(w.now),
        Err(Error::NotAllocated)
    ));
}

#[test]
fn bad_sdp_and_candidates_are_errors_not_panics() {
    let mut w = World::new(&[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let deadline = w.now + Duration::from_secs(2);
    w.run(deadline, |_| {});
    let now = w.now;
    let ep = &mut w.eps[1];
    assert!(matches!(
        ep.accept_offer(now, "garbage"),
        Err(Error::NoAudio)
    ));
    let video_only = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
    assert!(matches!(
        ep.accept_offer(now, video_only),
        Err(Error::NoAudio)
    ));
    let pcmu_only = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
    assert!(matches!(
        ep.accept_offer(now, pcmu_only),
        Err(Error::NoAudio)
    ));
    let opus_broken = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
    assert!(ep.accept_offer(now, opus_broken).is_err());
    assert!(matches!(
        ep.accept_answer(now, "v=0"),
        Err(Error::NoPendingOffer)
    ));
    // Host candidates are ignored (counted), broken relay ones refused.
    ep.add_remote_candidate(now, "candidate:1 1 udp 2122260223 10.1.2.3 5000 typ host")
        .unwrap();
    assert_eq!(ep.drops().candidates_ignored, 1);
    assert!(ep
        .add_remote_candidate(now, "candidate:x typ relay")
        .is_err());
    ep.add_remote_candidate(now, "").unwrap();
}

#[test]
fn garbage_from_the_peer_is_dropped() {
    let mut w = World::new(&[("alice", "alice-pw"), ("bob", "bob-pw")]);
    w.connect();
    let now = w.now;
    let peer = w.eps[0].relayed().unwrap();
    // Garbage "RTP" (and STUN- and DTLS-looking junk) straight into B's
    // TURN client as if the relay forwarded it from A's relayed address.
    let mut rng = 99u64;
    for i in 0..2000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut junk: Vec<u8> = (0..(rng % 300) as usize)
            .map(|k| (rng >> (k % 56)) as u8)
            .collect();
        if let Some(b) = junk.first_mut() {
            *b = [0x80, 0x00, 0x16, 0x90][i % 4];
        }
        let ev = TurnEvent::Data { peer, data: junk };
        w.eps[1].on_turn_event(now, ev);
        w.eps[1].drive(now);
    }
    // The call still works.
    let jb = stream(&mut w, 50);
    assert!(jb.stats().packets_received >= 45, "{:?}", jb.stats());
}

/// The jitter buffer with libopus under the lab's impairment stage in the
/// TURN path (relay → B): seeded 60 ms of jitter (±30 ms) and 5 % loss for
/// 10 s, then 10 s clean. The buffer's delay rises to at least the p95 of
/// the jitter seen and falls back; the concealment is libopus's PLC; the
/// MOS from the measured figures matches the lab's E-model for the
/// configured conditions.
#[cfg(feature = "opus")]
#[test]
fn opus_through_the_lab_impairment_in_the_turn_path() {
    use crate::codec::{Decoder, Encoder};
    use lab::impair::{ImpairStage, Impairment};

    let mut w = World::new(&[("alice", "alice-pw"), ("bob", "bob-pw")]);
    w.connect();
    let bad = Impairment {
        delay_ms: 40.0,
        jitter_ms: 30.0,
        loss_pct: 5.0,
        ..Impairment::none()
    };
    w.impair_b = Some(ImpairStage::new(bad, 0x5eed));
    let mut enc = Encoder::new(32_000).unwrap();
    let mut dec = Decoder::new().unwrap();
    let mut tone = crate::tone::Tone::new(440.0);
    let mut jb = JitterBuffer::new();
    let mut out = vec![0i16; crate::FRAME_SAMPLES];
    let mut played: Vec<i16> = Vec::new();
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut transits: Vec<f64> = Vec::new();
    let mut peak_target = 0.0f64;
    let mut seen = 0;
    let mut frame = 0u32;
    let phase = 500; // frames per phase (10 s)
    let until = w.now + Duration::from_secs(21);
    let mut stats_after_bad = None;
    w.run(until, |w| {
        if frame == phase {
            // The jitter stops; what the old stage holds is still delivered
            // at its time.
            if let Some(mut old) = w.impair_b.replace(ImpairStage::new(Impairment::none(), 1)) {
                while let Some(at) = old.next_deadline() {
                    let Some(bytes) = old.poll(at) else { break };
                    w.seq += 1;
                    w.flight.insert(
                        (w.t0 + Duration::from_nanos(at), w.seq),
                        (To::Client(1), bytes),
                    );
                }
            }
            stats_after_bad = Some(jb.stats());
        }
        if frame < 2 * phase {
            let pkt = enc.encode(&tone.frame()).unwrap().to_vec();
            let now = w.now;
            w.eps[0].send_audio(now, frame * 960, &pkt);
            sent_at.push(now);
            frame += 1;
        }
        for e in &w.events[1][seen..] {
            if let EndpointEvent::Audio(p) = e {
                let i = (p.rtp_time / 960) as usize;
                if let Some(t) = sent_at.get(i) {
                    if i < phase as usize {
                        transits.push(p.arrival.duration_since(*t).as_secs_f64());
                    }
                }
                jb.push(p.seq, p.rtp_time, p.arrival, &p.payload);
            }
        }
        seen = w.events[1].len();
        jb.pop(w.now, &mut dec, &mut out);
        played.extend_from_slice(&out);
        if frame <= phase {
            peak_target = peak_target.max(jb.target_delay());
        }
    });
    let bad_stats = stats_after_bad.expect("phase change");
    let end = jb.stats();
    transits.sort_by(f64::total_cmp);
    let min = transits[0];
    let p95 = transits[(transits.len() as f64 * 0.95) as usize] - min;
    eprintln!(
        "p95 jitter {p95:.3} s, peak target {peak_target:.3} s, final target {:.3} s; \
         bad phase {bad_stats:?}; end {end:?}",
        jb.target_delay()
    );
    assert!(
        peak_target >= p95,
        "target {peak_target} below p95 jitter {p95}"
    );
    assert!(
        jb.target_delay() < 0.030,
        "did not fall back: {}",
        jb.target_delay()
    );
    // Loss: about 5 % in the bad phase, none after.
    let loss = bad_stats.loss_fraction();
    assert!((0.03..0.07).contains(&loss), "loss {loss}");
    assert_eq!(
        end.packets_lost, bad_stats.packets_lost,
        "loss after the jitter stopped"
    );
    // Concealment came from libopus (its PLC or FEC path), and it still plays a tone.
    assert!(
        end.concealed_samples >= bad_stats.packets_lost * 960,
        "{end:?}"
    );
    assert_eq!(dec.errors, 0);
    let tail = &played[played.len() * 3 / 4..];
    assert!(crate::tone::goertzel(tail, 440.0) > 20.0 * crate::tone::goertzel(tail, 1000.0));
    // MOS from the measured figures (as `onionrtc call` computes it) against
    // the lab's E-model for the configured conditions: 40 ms + the relay
    // hops one way, 5 % random loss.
    let jb_delay = bad_stats.mean_jitter_buffer_delay().unwrap_or(0.0);
    let measured = lab::emodel::rate(
        lab::emodel::Codec::Opus,
        (min + jb_delay) * 1000.0 + 20.0,
        loss * 100.0,
        1.0,
    );
    let configured = lab::emodel::rate(
        lab::emodel::Codec::Opus,
        min * 1000.0 + bad.jitter_ms + 20.0 + 20.0,
        bad.loss_pct,
        1.0,
    );
    eprintln!(
        "MOS measured {:.2}, E-model for the conditions {:.2}",
        measured.mos, configured.mos
    );
    assert!(
        (measured.mos - configured.mos).abs() < 0.25,
        "{measured:?} vs {configured:?}"
    );
}

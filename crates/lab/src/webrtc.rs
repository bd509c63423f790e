//! The webrtc agent: two [`media`] endpoints (ICE, DTLS-SRTP, RTP/RTCP,
//! Opus, the adaptive jitter buffer with libopus's concealment) call each
//! other through the relay of the scenario's paths, with the lab's
//! [`ImpairStage`] in the path.
//!
//! ## One attempt
//! 1. Each side connects to its path's relay ([`PathOpener::turn_target`]:
//!    the same server, transport, credentials and TLS roots as a synthetic
//!    leg; `turn-socks`/`turn-tor` reach it through their connector) and its
//!    endpoint allocates with our TURN client.
//! 2. The caller offers, the callee answers (SDP handed over in memory),
//!    both wait for ICE and DTLS within the setup timeout.
//! 3. Each side runs on its own thread: a 440 Hz tone encoded with Opus
//!    every 20 ms (frame *i* at `media_start + i·20 ms` on the shared
//!    [`LabClock`]), and a jitter-buffer pop every 20 ms.
//!
//! ## Where the impairment sits
//! - **TURN over UDP:** on each side's egress, on the datagrams to the
//!   relay (media, RTCP, ICE consent and TURN refreshes alike), like a
//!   lossy access link.
//! - **TURN over a stream** (TCP, TLS, and the connectors' paths): stream
//!   bytes cannot be lost, so the stage acts on the received audio packets
//!   just before the jitter buffer.
//!
//! ## What is measured (per direction, at the receiver)
//! - one-way delay including buffering: the median network transit of the
//!   audio packets (send schedule → arrival, one clock) plus the mean time
//!   a frame spent in the jitter buffer;
//! - loss on the wire (RTP sequence gaps) and **loss after concealment**:
//!   the share of played samples the decoder had to conceal (lost or late);
//! - concealed samples; RFC 3550 jitter; RTT from the endpoint (ICE/RTCP);
//! - R and MOS: the lab's E-model for Opus with the delay above plus the
//!   20 ms frame, and the loss after concealment (random loss, BurstR 1).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use media::codec::{Decoder, Encoder};
use media::{AudioPacket, Endpoint, EndpointConfig, EndpointEvent, JitterBuffer, Pop};
use turn::client::ClientConfig;
use turn::Transport;

use crate::call::{CallReport, DirectionReport, Outcome, SideReport};
use crate::emodel::{self, Codec};
use crate::impair::ImpairStage;
use crate::metrics::{median, percentile};
use crate::path::wire::{Recv, Wire};
use crate::path::PathOpener;
use crate::realtime::{with_retries, CallSpec, LabClock};

/// Longest wait in a loop, so stop flags and schedules are seen.
const MAX_WAIT: Duration = Duration::from_millis(2);
/// Loop rounds at most per side and call (each round waits or works).
const MAX_ROUNDS: u64 = 1 << 32;
/// Opus bit rate of the tone.
const BITRATE: i32 = 32_000;
/// The tone sent.
const TONE_HZ: f64 = 440.0;
/// One frame, ns.
const FRAME_NS: u64 = 20_000_000;

/// One side: its endpoint and the connection to its relay.
struct Side {
    name: &'static str,
    ep: Endpoint,
    server: SocketAddr,
    wire: Wire,
    stream: bool,
    buf: Vec<u8>,
    allocated: bool,
    connected: bool,
    failed: Option<String>,
}

impl std::fmt::Debug for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Side").field("name", &self.name).finish()
    }
}

impl Side {
    fn open(
        name: &'static str,
        opener: &dyn PathOpener,
        deadline: Instant,
    ) -> Result<Side, String> {
        let target = opener.turn_target().ok_or_else(|| {
            format!(
                "{name} ({}): the webrtc agent needs a TURN path",
                opener.kind()
            )
        })?;
        let err = |e: std::io::Error| format!("{name} ({}): {e}", opener.kind());
        let wire = match target.transport {
            Transport::Udp => Wire::udp(target.server).map_err(err)?,
            Transport::Tcp => Wire::tcp(target.server, deadline).map_err(err)?,
            Transport::Tls => {
                let tls = target
                    .tls
                    .as_ref()
                    .ok_or_else(|| format!("{name}: turn-tls without TLS settings"))?;
                Wire::tls(target.server, tls, deadline).map_err(err)?
            }
        };
        let turn = ClientConfig::new(
            target.server,
            target.transport,
            target.username,
            target.password,
        );
        // The local address only labels the endpoint's host side; no host
        // candidate is ever gathered.
        let local: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9));
        let now = Instant::now();
        let mut config = EndpointConfig::new(turn, local);
        if target.transport == Transport::Tls {
            config.relay_protocol = media::RelayProtocol::Tls;
        }
        let mut ep = Endpoint::new(config, now).map_err(|e| format!("{name}: {e}"))?;
        ep.start(now).map_err(|e| format!("{name}: {e}"))?;
        Ok(Side {
            name,
            ep,
            server: target.server,
            wire,
            stream: target.transport != Transport::Udp,
            buf: vec![0u8; 65_536],
            allocated: false,
            connected: false,
            failed: None,
        })
    }

    /// Sends what the endpoint has (through `egress` when given).
    fn flush(&mut self, now: u64, egress: Option<&mut ImpairStage<Vec<u8>>>) -> Result<(), String> {
        let io = |e: std::io::Error| format!("{}: relay connection: {e}", self.name);
        match egress {
            Some(stage) => {
                while let Some(t) = self.ep.poll_transmit() {
                    stage.push(now, t.payload.len(), t.payload);
                }
                let server = self.server;
                while let Some(p) = stage.poll(now) {
                    self.wire.send(server, &p).map_err(io)?;
                }
            }
            None => {
                while let Some(t) = self.ep.poll_transmit() {
                    self.wire.send(t.destination, &t.payload).map_err(io)?;
                }
            }
        }
        Ok(())
    }

    /// Waits up to `wait` for bytes from the relay and hands them over.
    fn receive(&mut self, wait: Duration) -> Result<(), String> {
        let got = self
            .wire
            .recv(wait, &mut self.buf)
            .map_err(|e| format!("{}: relay connection: {e}", self.name))?;
        let now = Instant::now();
        match got {
            Recv::Datagram(from, n) => self.ep.handle_turn_datagram(now, from, &self.buf[..n]),
            Recv::Stream(n) => self
                .ep
                .handle_turn_stream(now, &self.buf[..n])
                .map_err(|e| format!("{}: relay stream: {e}", self.name))?,
            Recv::Timeout => {}
        }
        Ok(())
    }

    fn timers(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
    }

    /// Setup events; audio is not expected yet (and dropped).
    fn setup_events(&mut self) {
        while let Some(e) = self.ep.poll_event() {
            match e {
                EndpointEvent::Allocated { .. } => self.allocated = true,
                EndpointEvent::Connected => self.connected = true,
                EndpointEvent::AllocationFailed { code, reason } => {
                    self.failed = Some(format!(
                        "{}: allocation refused ({code} {reason})",
                        self.name
                    ));
                }
                EndpointEvent::Failed(r) => self.failed = Some(format!("{}: {r}", self.name)),
                EndpointEvent::Disconnected | EndpointEvent::Audio(_) => {}
            }
        }
    }
}

/// Drives both sides until `done` holds, or fails at `deadline`.
fn setup_until(
    sides: &mut [&mut Side; 2],
    deadline: Instant,
    what: &str,
    done: impl Fn(&Side) -> bool,
) -> Result<(), String> {
    for _ in 0..MAX_ROUNDS {
        for s in sides.iter_mut() {
            s.flush(0, None)?;
            s.receive(Duration::from_millis(1))?;
            s.timers(Instant::now());
            s.setup_events();
            if let Some(f) = &s.failed {
                return Err(f.clone());
            }
        }
        if sides.iter().all(|s| done(s)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: timed out"));
        }
    }
    Err(format!("{what}: gave up"))
}

/// What one side's loop measured.
#[derive(Debug, Default)]
struct SideEnd {
    /// Audio frames sent.
    sent_packets: u64,
    sent_bytes: u64,
    /// Network transits of received audio packets, ms.
    transits_ms: Vec<f64>,
    stats: media::CallStats,
    rtt_ms: Option<f64>,
    relay_protocol: String,
    error: Option<String>,
}

struct LoopParams<'a> {
    clock: LabClock,
    media_start: u64,
    frames: u64,
    stop_at: u64,
    stop: &'a AtomicBool,
}

fn side_loop(mut side: Side, seed: u64, spec: &CallSpec, p: &LoopParams<'_>) -> SideEnd {
    let mut end = SideEnd {
        relay_protocol: side.ep.relay_protocol().as_str().to_owned(),
        ..SideEnd::default()
    };
    let (mut enc, mut dec) = match (Encoder::new(BITRATE), Decoder::new()) {
        (Ok(e), Ok(d)) => (e, d),
        _ => {
            end.error = Some("libopus: cannot create the codec".into());
            return end;
        }
    };
    let mut egress = (!side.stream).then(|| ImpairStage::new(spec.impairment, seed));
    let mut ingress: Option<ImpairStage<AudioPacket>> =
        side.stream.then(|| ImpairStage::new(spec.impairment, seed));
    let mut tone = media::tone::Tone::new(TONE_HZ);
    let mut jb = JitterBuffer::new();
    let mut out = vec![0i16; media::FRAME_SAMPLES];
    let mut next_frame = 0u64;
    let mut next_pop = p.media_start;
    let media_end = p.media_start + p.frames * FRAME_NS;
    for _ in 0..MAX_ROUNDS {
        if p.stop.load(Ordering::Relaxed) {
            break;
        }
        let now_i = Instant::now();
        let now = p.clock.at(now_i);
        if now >= p.stop_at {
            break;
        }
        while next_frame < p.frames && now >= p.media_start + next_frame * FRAME_NS {
            let frame = tone.frame();
            match enc.encode(&frame) {
                Ok(pkt) => {
                    let rtp = u32::try_from((next_frame * 960) & 0xffff_ffff).unwrap_or(0);
                    if side.ep.send_audio(now_i, rtp, pkt) {
                        end.sent_packets += 1;
                        end.sent_bytes += pkt.len() as u64;
                    }
                }
                Err(e) => end.error = Some(format!("libopus: {e}")),
            }
            next_frame += 1;
        }
        if let Err(e) = side.flush(now, egress.as_mut()) {
            end.error = Some(e);
            break;
        }
        // Audio from the endpoint (through the ingress stage on streams).
        let mut arrived: Vec<AudioPacket> = Vec::new();
        while let Some(e) = side.ep.poll_event() {
            match e {
                EndpointEvent::Audio(a) => match ingress.as_mut() {
                    Some(stage) => {
                        let _ = stage.push(now, a.payload.len(), a);
                    }
                    None => arrived.push(a),
                },
                EndpointEvent::Failed(r) => end.error = Some(format!("{}: {r}", side.name)),
                _ => {}
            }
        }
        if let Some(stage) = ingress.as_mut() {
            while let Some(mut a) = stage.poll(now) {
                a.arrival = now_i;
                arrived.push(a);
            }
        }
        for a in arrived {
            let send_ns = p.media_start + u64::from(a.rtp_time / 960) * FRAME_NS;
            let arrival = p.clock.at(a.arrival);
            if end.transits_ms.len() < crate::agent::MAX_RTT_SAMPLES {
                end.transits_ms
                    .push(arrival.saturating_sub(send_ns) as f64 / 1e6);
            }
            jb.push(a.seq, a.rtp_time, a.arrival, &a.payload);
        }
        if end.error.is_some() {
            break;
        }
        // Playout every 20 ms while media flows (and a drain's worth after).
        while now >= next_pop && next_pop < media_end {
            let _: Pop = jb.pop(now_i, &mut dec, &mut out);
            next_pop += FRAME_NS;
        }
        let next = [
            side.ep.poll_timeout().map(|t| p.clock.at(t)),
            egress.as_ref().and_then(ImpairStage::next_deadline),
            ingress.as_ref().and_then(ImpairStage::next_deadline),
            (next_frame < p.frames).then(|| p.media_start + next_frame * FRAME_NS),
            (next_pop < media_end).then_some(next_pop),
            Some(p.stop_at),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(p.stop_at);
        let wait = Duration::from_nanos(next.saturating_sub(now)).min(MAX_WAIT);
        if let Err(e) = side.receive(wait) {
            end.error = Some(e);
            break;
        }
        side.timers(Instant::now());
    }
    if end.error.is_some() {
        p.stop.store(true, Ordering::Relaxed);
    }
    side.ep.close(Instant::now());
    let _ = side.flush(p.clock.now_ns(), None);
    end.stats = jb.stats();
    end.rtt_ms = side.ep.rtt().map(|d| d.as_secs_f64() * 1e3);
    end
}

/// The direction `sender` → `receiver`, measured at the receiver.
fn direction(sender: &SideEnd, receiver: &SideEnd) -> DirectionReport {
    let s = &receiver.stats;
    let jb_ms = s.mean_jitter_buffer_delay().unwrap_or(0.0) * 1e3;
    let transit = median(&receiver.transits_ms);
    let owd_median_ms = transit.map(|t| t + jb_ms);
    let owd_p95_ms = percentile(&receiver.transits_ms, 95.0).map(|t| t + jb_ms);
    let received = s.packets_received;
    let sent = sender.sent_packets;
    let lost = sent.saturating_sub(received);
    let loss_pct = if sent == 0 {
        0.0
    } else {
        100.0 * lost as f64 / sent as f64
    };
    let concealed = concealed_pct(s);
    let rated = owd_median_ms.map(|d| {
        emodel::rate(
            Codec::Opus,
            d + FRAME_NS as f64 / 1e6,
            concealed.unwrap_or(loss_pct),
            1.0,
        )
    });
    DirectionReport {
        sent,
        received,
        lost,
        loss_pct,
        owd_median_ms,
        owd_p95_ms,
        jitter_ms: s.jitter * 1e3,
        rtt_median_ms: sender.rtt_ms,
        rtt_p95_ms: sender.rtt_ms,
        rtt_samples: u64::from(sender.rtt_ms.is_some()),
        burst_r: 1.0,
        r: rated.map(|r| r.r),
        mos: rated.map(|r| r.mos),
        tx_bytes: sender.sent_bytes,
        rx_bytes: s.bytes_received,
        ..DirectionReport::default()
    }
}

/// Concealed samples as a percentage of the samples played.
fn concealed_pct(s: &media::CallStats) -> Option<f64> {
    (s.total_samples > 0).then(|| 100.0 * s.concealed_samples as f64 / s.total_samples as f64)
}

fn side_report(name: &str, end: &SideEnd) -> SideReport {
    SideReport {
        side: name.to_owned(),
        local_candidate: Some("relay".into()),
        remote_candidate: Some("relay".into()),
        relay_protocol: Some(end.relay_protocol.clone()),
        jitter_buffer_ms: end.stats.mean_jitter_buffer_delay().map(|d| d * 1e3),
        concealed_samples: Some(end.stats.concealed_samples),
        concealed_pct: concealed_pct(&end.stats),
    }
}

/// Makes one attempt; `Err` is a setup failure (to retry).
fn attempt(
    caller: &dyn PathOpener,
    callee: &dyn PathOpener,
    spec: &CallSpec,
    clock: LabClock,
) -> Result<CallReport, String> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(spec.timing.setup_timeout_s);
    let mut a = Side::open("caller", caller, deadline)?;
    let mut b = Side::open("callee", callee, deadline)?;
    setup_until(&mut [&mut a, &mut b], deadline, "allocation", |s| {
        s.allocated
    })?;
    let now = Instant::now();
    let offer = a.ep.create_offer(now).map_err(|e| format!("caller: {e}"))?;
    let answer =
        b.ep.accept_offer(now, &offer)
            .map_err(|e| format!("callee: {e}"))?;
    a.ep.accept_answer(now, &answer)
        .map_err(|e| format!("caller: {e}"))?;
    setup_until(&mut [&mut a, &mut b], deadline, "ICE and DTLS", |s| {
        s.connected
    })?;
    let setup_ms = t0.elapsed().as_secs_f64() * 1e3;
    let media_start = clock.now_ns() + 5_000_000;
    let frames = spec.profile.duration_ns / FRAME_NS;
    let stop = AtomicBool::new(false);
    let params = LoopParams {
        clock,
        media_start,
        frames,
        stop_at: media_start + frames * FRAME_NS + spec.drain_ns(),
        stop: &stop,
    };
    let (seed_a, seed_b) = (spec.seed, spec.seed ^ 0x5eed_0000_b00c_0001);
    let (end_a, end_b) = std::thread::scope(|s| {
        let ha = s.spawn(|| side_loop(a, seed_a, spec, &params));
        let hb = s.spawn(|| side_loop(b, seed_b, spec, &params));
        (ha.join(), hb.join())
    });
    let (end_a, end_b) = match (end_a, end_b) {
        (Ok(x), Ok(y)) => (x, y),
        _ => return Err("a webrtc side panicked".into()),
    };
    let failure = end_a.error.clone().or_else(|| end_b.error.clone());
    let mut rtts: Vec<f64> = [end_a.rtt_ms, end_b.rtt_ms].into_iter().flatten().collect();
    rtts.sort_by(f64::total_cmp);
    Ok(CallReport {
        outcome: if failure.is_some() {
            Outcome::FailedDuringCall
        } else {
            Outcome::Success
        },
        failure,
        attempts: 1,
        setup_ms: Some(setup_ms),
        duration_ms: (frames * FRAME_NS) as f64 / 1e6,
        forward: direction(&end_a, &end_b),
        backward: direction(&end_b, &end_a),
        rtt_ms: median(&rtts),
        rtt_p95_ms: percentile(&rtts, 95.0),
        owd_estimated: false,
        // Each side as the receiver of the other's audio.
        sides: vec![side_report("caller", &end_a), side_report("callee", &end_b)],
    })
}

/// Runs a webrtc call, retrying a failed setup up to `spec.setup_retries` times.
pub fn run_call(
    caller: &dyn PathOpener,
    callee: &dyn PathOpener,
    spec: &CallSpec,
    clock: LabClock,
) -> CallReport {
    with_retries(spec, |s| attempt(caller, callee, s, clock))
}

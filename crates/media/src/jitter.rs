//! An adaptive jitter buffer for 20 ms audio frames.
//!
//! Frames are kept by RTP timestamp. The player pops one frame every
//! 20 ms ([`JitterBuffer::pop`]); the buffer decodes the frame due, or —
//! when it is missing or late — asks the decoder for FEC from the next
//! packet (when the decoder has it) or packet-loss concealment.
//!
//! **Adaptation.** Every packet's transit time (arrival minus its media
//! time, relative to the first packet) goes into a window of the last
//! [`WINDOW`]. The target playout offset is the window's 95th percentile
//! of transit plus one frame (the player pops on a 20 ms grid). When the
//! current offset (now minus the media time of the frame due) is below
//! the target by more than half a frame, one concealment frame is inserted
//! without advancing (playout slows down by 20 ms); when it is above the
//! target by more than two frames, one frame is skipped (at most one in
//! [`ACCELERATE_EVERY`] pops, so speech is not chopped). So the delay
//! rises to cover the jitter within a frame or two of seeing it, and falls
//! back within [`WINDOW`] after the jitter stops.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::stats::{secs, CallStats, ReceiveStats};
use crate::{FRAME, FRAME_SAMPLES};

/// How long transit times are remembered for the target delay.
pub const WINDOW: Duration = Duration::from_secs(2);
/// Frames held at most (older ones are dropped first): 2 s.
pub const MAX_FRAMES: usize = 100;
/// Largest target delay.
pub const MAX_TARGET: Duration = Duration::from_millis(1000);
/// At most one frame is skipped to shrink the buffer in this many pops.
pub const ACCELERATE_EVERY: u32 = 3;

/// Samples per frame, as the u64 step of RTP time.
const STEP: u64 = FRAME_SAMPLES as u64;

/// A decoder the jitter buffer drives (libopus in [`crate::codec`], a fake
/// in tests).
pub trait FrameDecoder {
    /// Decodes one packet into `out` (one frame); returns the samples
    /// written, or `None` when the packet cannot be decoded.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize>;
    /// Conceals one missing frame (the codec's PLC) into `out`.
    fn conceal(&mut self, out: &mut [i16]) -> usize;
    /// Recovers the missing frame from the in-band FEC of the packet that
    /// follows it, if the packet carries FEC; `None` otherwise.
    fn decode_fec(&mut self, _next_payload: &[u8], _out: &mut [i16]) -> Option<usize> {
        None
    }
}

/// What one pop produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop {
    /// Nothing received yet, or the buffer is still filling to its target:
    /// `out` is silence and no sample is counted.
    Idle,
    /// A frame decoded from its packet.
    Decoded,
    /// The frame was recovered from the next packet's FEC.
    Fec,
    /// The frame was missing or late: concealed.
    Concealed,
    /// A frame inserted (concealment) to let the buffer grow.
    Inserted,
}

#[derive(Debug)]
struct Slot {
    payload: Vec<u8>,
    arrival: Instant,
}

/// The adaptive jitter buffer with its receive statistics.
#[derive(Debug, Default)]
pub struct JitterBuffer {
    frames: BTreeMap<u64, Slot>,
    /// First packet: its extended RTP time and arrival.
    base: Option<(u64, Instant)>,
    /// Last extended RTP time seen (for unwrapping).
    last_ext: u64,
    /// The extended RTP time of the frame due next; `None` until playout starts.
    cursor: Option<u64>,
    transits: VecDeque<(Instant, f64)>,
    pops_since_accelerate: u32,
    receive: ReceiveStats,
    stats: CallStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    fn extend(&mut self, ts: u32) -> u64 {
        let Some((_, _)) = self.base else {
            // First timestamp: start well above 0 so earlier packets unwrap.
            let ext = (1u64 << 32) + u64::from(ts);
            self.last_ext = ext;
            return ext;
        };
        let last = self.last_ext;
        let diff = ts.wrapping_sub(last as u32) as i32;
        let ext = last.saturating_add_signed(i64::from(diff));
        if ext > last {
            self.last_ext = ext;
        }
        ext
    }

    /// Media time of `ext` after the first packet's, in seconds.
    fn media_secs(&self, ext: u64) -> f64 {
        let base = self.base.map_or(ext, |(b, _)| b);
        (ext as f64 - base as f64) / f64::from(crate::SAMPLE_RATE)
    }

    /// Seconds from the first packet's arrival to `t`.
    fn wall_secs(&self, t: Instant) -> f64 {
        match self.base {
            Some((_, at)) if t >= at => secs(t - at),
            Some((_, at)) => -secs(at - t),
            None => 0.0,
        }
    }

    /// Adds a received packet: extended sequence number, RTP timestamp,
    /// arrival time and the encoded frame.
    pub fn push(&mut self, seq: u64, rtp_time: u32, arrival: Instant, payload: &[u8]) {
        self.receive
            .on_packet(seq, rtp_time, arrival, payload.len());
        let ext = self.extend(rtp_time);
        if self.base.is_none() {
            self.base = Some((ext, arrival));
        }
        let transit = self.wall_secs(arrival) - self.media_secs(ext);
        self.transits.push_back((arrival, transit));
        while self
            .transits
            .front()
            .is_some_and(|(t, _)| arrival.saturating_duration_since(*t) > WINDOW)
        {
            self.transits.pop_front();
        }
        if self.cursor.is_some_and(|c| ext < c) {
            self.stats.late_packets += 1;
            return;
        }
        self.frames.entry(ext).or_insert(Slot {
            payload: payload.to_vec(),
            arrival,
        });
        while self.frames.len() > MAX_FRAMES {
            self.frames.pop_first();
        }
    }

    /// The target playout offset (s) after the first packet's transit.
    fn target_offset(&self) -> f64 {
        let mut t: Vec<f64> = self.transits.iter().map(|(_, d)| *d).collect();
        if t.is_empty() {
            return secs(FRAME);
        }
        t.sort_by(f64::total_cmp);
        let idx = ((t.len() - 1) as f64 * 0.95).round() as usize;
        let p95 = t[idx.min(t.len() - 1)];
        let min = t[0];
        // The offset covers the p95 transit; never less than the lowest
        // transit plus a frame, never more than the cap.
        (p95 + secs(FRAME))
            .max(min + secs(FRAME))
            .min(min + secs(MAX_TARGET))
    }

    /// The current target delay above the fastest packet (s): what the
    /// buffer holds back to absorb jitter.
    pub fn target_delay(&self) -> f64 {
        let min = self
            .transits
            .iter()
            .map(|(_, d)| *d)
            .min_by(f64::total_cmp)
            .unwrap_or(0.0);
        (self.target_offset() - min).max(0.0)
    }

    /// Produces the next 20 ms of audio into `out` (at least
    /// [`FRAME_SAMPLES`] long), at `now` on the player's clock.
    pub fn pop(&mut self, now: Instant, dec: &mut dyn FrameDecoder, out: &mut [i16]) -> Pop {
        let n = FRAME_SAMPLES.min(out.len());
        let frame = &mut out[..n];
        frame.fill(0);
        let Some((base_ext, _)) = self.base else {
            return Pop::Idle;
        };
        let target = self.target_offset();
        let cursor = match self.cursor {
            Some(c) => c,
            None => {
                // Start once the first frame has waited for the target.
                if self.frames.is_empty() {
                    return Pop::Idle;
                }
                let first = self.frames.keys().next().copied().unwrap_or(base_ext);
                if self.wall_secs(now) - self.media_secs(first) < target - secs(FRAME) / 2.0 {
                    return Pop::Idle;
                }
                self.cursor = Some(first);
                first
            }
        };
        // Frames older than the cursor can never play.
        while self
            .frames
            .first_key_value()
            .is_some_and(|(k, _)| *k < cursor)
        {
            self.frames.pop_first();
        }
        // The stream paused (the sender stopped, or a long outage): after
        // three concealed frames with nothing newer, stop counting and
        // re-buffer when packets come back.
        if self.frames.is_empty() && cursor > self.last_ext + 3 * STEP {
            self.cursor = None;
            return Pop::Idle;
        }
        let offset = self.wall_secs(now) - self.media_secs(cursor);
        self.pops_since_accelerate = self.pops_since_accelerate.saturating_add(1);
        self.stats.jitter_buffer_target_delay = self.target_delay();
        if offset < target - secs(FRAME) / 2.0 {
            let n = dec.conceal(frame);
            self.stats.inserted_samples_for_deceleration += n as u64;
            self.count_emitted(n, None, now);
            return Pop::Inserted;
        }
        let mut cursor = cursor;
        if offset > target + 2.0 * secs(FRAME) && self.pops_since_accelerate >= ACCELERATE_EVERY {
            self.pops_since_accelerate = 0;
            if self.frames.remove(&cursor).is_some() {
                self.stats.removed_samples_for_acceleration += STEP;
            }
            cursor += STEP;
        }
        self.cursor = Some(cursor + STEP);
        if let Some(slot) = self.frames.remove(&cursor) {
            if let Some(n) = dec.decode(&slot.payload, frame) {
                self.count_emitted(n, Some(slot.arrival), now);
                return Pop::Decoded;
            }
        } else if let Some(next) = self.frames.get(&(cursor + STEP)) {
            if let Some(n) = dec.decode_fec(&next.payload, frame) {
                self.stats.fec_frames += 1;
                self.stats.concealed_samples += n as u64;
                self.count_emitted(n, None, now);
                return Pop::Fec;
            }
        }
        let n = dec.conceal(frame);
        self.stats.concealed_samples += n as u64;
        self.count_emitted(n, None, now);
        Pop::Concealed
    }

    fn count_emitted(&mut self, n: usize, arrival: Option<Instant>, now: Instant) {
        self.stats.total_samples += n as u64;
        self.stats.jitter_buffer_emitted_count += n as u64;
        if let Some(at) = arrival {
            // getStats: the delay is weighted by the samples emitted.
            self.stats.jitter_buffer_delay +=
                secs(now.saturating_duration_since(at)) * n as f64 / FRAME_SAMPLES as f64;
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The statistics so far (send-side fields and RTT are left at zero;
    /// the endpoint fills them).
    pub fn stats(&self) -> CallStats {
        let mut s = self.stats.clone();
        s.packets_received = self.receive.packets_received;
        s.packets_lost = self.receive.packets_lost();
        s.bytes_received = self.receive.bytes_received;
        s.jitter = self.receive.jitter();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "codec" whose frames are their sequence number repeated; PLC
    /// writes -1.
    #[derive(Default)]
    struct Fake {
        decoded: Vec<i16>,
        concealed: usize,
    }

    impl FrameDecoder for Fake {
        fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
            let v = i16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
            out[..FRAME_SAMPLES].fill(v);
            self.decoded.push(v);
            Some(FRAME_SAMPLES)
        }
        fn conceal(&mut self, out: &mut [i16]) -> usize {
            out[..FRAME_SAMPLES].fill(-1);
            self.concealed += 1;
            FRAME_SAMPLES
        }
    }

    /// A deterministic generator (xorshift) so the tests are seeded.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Runs `n` frames through the buffer in simulated time: packet i is
    /// sent at 20·i ms and arrives after 30 ms + `delay(i)`, or is lost
    /// when `lost(i)`. The player pops every 20 ms. Returns the decoder
    /// and the buffer's target delay sampled each second.
    fn simulate(
        n: u64,
        mut delay: impl FnMut(u64) -> f64,
        mut lost: impl FnMut(u64) -> bool,
        jb: &mut JitterBuffer,
    ) -> (Fake, Vec<f64>) {
        let t0 = Instant::now();
        let mut arrivals: Vec<(Instant, u64)> = Vec::new();
        for i in 0..n {
            if lost(i) {
                continue;
            }
            let at = t0 + Duration::from_secs_f64(0.020 * i as f64 + 0.030 + delay(i));
            arrivals.push((at, i));
        }
        arrivals.sort();
        let mut dec = Fake::default();
        let mut out = vec![0i16; FRAME_SAMPLES];
        let mut next = 0;
        let mut targets = Vec::new();
        let end = n + 100;
        for tick in 0..end {
            let now = t0 + Duration::from_millis(5 + 20 * tick);
            while next < arrivals.len() && arrivals[next].0 <= now {
                let i = arrivals[next].1;
                let payload = (i as i16).to_be_bytes();
                jb.push(
                    1000 + i,
                    ((i * STEP) as u32).wrapping_add(0xFFFF_0000),
                    arrivals[next].0,
                    &payload,
                );
                next += 1;
            }
            jb.pop(now, &mut dec, &mut out);
            if tick % 50 == 0 {
                targets.push(jb.target_delay());
            }
        }
        (dec, targets)
    }

    #[test]
    fn steady_stream_plays_everything_in_order_without_concealment() {
        let mut jb = JitterBuffer::new();
        let (dec, _) = simulate(500, |_| 0.0, |_| false, &mut jb);
        assert_eq!(dec.decoded.len(), 500);
        assert!(dec.decoded.windows(2).all(|w| w[1] == w[0] + 1));
        let s = jb.stats();
        // When the stream stops, the buffer cannot tell a stop from a loss
        // until three frames are missing: those are concealed.
        assert_eq!(s.concealed_samples, 3 * STEP);
        assert_eq!(s.packets_lost, 0);
        let delay = s.mean_jitter_buffer_delay().unwrap_or(1.0);
        assert!(delay < 0.045, "mean buffer delay {delay}");
    }

    #[test]
    fn loss_is_concealed_by_the_decoder() {
        let mut jb = JitterBuffer::new();
        let mut rng = Rng(7);
        let (dec, _) = simulate(1000, |_| 0.0, |_| rng.unit() < 0.05, &mut jb);
        let s = jb.stats();
        let lost = s.packets_lost;
        assert!((30..=70).contains(&lost), "lost {lost}");
        // Every lost frame was concealed by the decoder (PLC), nothing else
        // (the stream is steady: no insertions beyond the start-up).
        assert_eq!(s.concealed_samples, (lost + 3) * STEP);
        assert!(dec.concealed as u64 >= lost);
        let expected = (s.packets_received + lost) as f64;
        assert!((s.loss_fraction() - lost as f64 / expected).abs() < 1e-9);
    }

    #[test]
    fn delay_rises_with_jitter_and_falls_back() {
        let mut jb = JitterBuffer::new();
        let mut rng = Rng(42);
        // 10 s calm, 10 s of 0–60 ms uniform jitter, 10 s calm.
        let mut jitter = Vec::new();
        let (dec, targets) = simulate(
            1500,
            |i| {
                let d = if (500..1000).contains(&i) {
                    0.060 * rng.unit()
                } else {
                    0.0
                };
                if (500..1000).contains(&i) {
                    jitter.push(d);
                }
                d
            },
            |_| false,
            &mut jb,
        );
        jitter.sort_by(f64::total_cmp);
        let p95 = jitter[(jitter.len() as f64 * 0.95) as usize];
        let calm = targets[5];
        let peak = targets[12..20].iter().copied().fold(0.0, f64::max);
        let after = targets[targets.len() - 2];
        assert!(calm < 0.030, "calm target {calm}");
        assert!(peak >= p95, "target {peak} below p95 jitter {p95}");
        assert!(after < 0.030, "target did not fall back: {after}");
        let s = jb.stats();
        // Late frames during the jitter are concealed, but few once adapted.
        let lates = s.late_packets;
        assert!(lates < 100, "late packets {lates}");
        assert!(dec.decoded.len() > 1300, "decoded {}", dec.decoded.len());
        assert!(s.inserted_samples_for_deceleration > 0);
        assert!(s.removed_samples_for_acceleration > 0);
    }

    #[test]
    fn reordered_packets_play_in_order() {
        let mut jb = JitterBuffer::new();
        // Pairs swapped: packet 2k arrives 15 ms late, after 2k+1.
        let (dec, _) = simulate(
            200,
            |i| if i % 2 == 0 { 0.015 } else { 0.0 },
            |_| false,
            &mut jb,
        );
        let played: Vec<i16> = dec.decoded.clone();
        assert!(played.windows(2).all(|w| w[1] > w[0]), "out of order");
        assert!(played.len() >= 195, "played {}", played.len());
    }

    #[test]
    fn garbage_and_floods_are_bounded() {
        let mut jb = JitterBuffer::new();
        let t0 = Instant::now();
        // Timestamps all over the place, never popped: the buffer stays bounded.
        let mut rng = Rng(3);
        for i in 0..10_000u64 {
            jb.push(i, rng.next() as u32, t0, &[1, 2, 3]);
        }
        assert!(jb.len() <= MAX_FRAMES);
        let mut dec = Fake::default();
        let mut out = vec![0i16; FRAME_SAMPLES];
        for k in 0..10 {
            jb.pop(t0 + Duration::from_secs(k), &mut dec, &mut out);
        }
        // An empty payload does not decode: concealed instead.
        let mut jb = JitterBuffer::new();
        jb.push(0, 0, t0, &[]);
        let mut pops = Vec::new();
        for k in 0..5 {
            pops.push(jb.pop(t0 + Duration::from_millis(20 * k + 40), &mut dec, &mut out));
        }
        assert!(pops.contains(&Pop::Concealed), "{pops:?}");
    }
}

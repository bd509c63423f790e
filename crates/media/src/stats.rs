//! The statistics a browser's `getStats()` gives for an audio call, kept
//! by the receiving side (RFC 3550 §6.4.1 and A.3, A.8).

use std::time::{Duration, Instant};

use crate::SAMPLE_RATE;

/// Counters of one received RTP stream (RFC 3550 reception statistics).
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    /// Packets received (duplicates included, as RFC 3550 counts them).
    pub packets_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    base_seq: Option<u64>,
    highest_seq: u64,
    /// Interarrival jitter estimate, in RTP timestamp units (× 16 kept for
    /// precision as in RFC 3550 A.8).
    jitter_x16: u64,
    last_transit: Option<i64>,
    start: Option<Instant>,
}

impl ReceiveStats {
    /// Records one packet: extended sequence number, RTP timestamp,
    /// arrival time and payload length.
    pub fn on_packet(&mut self, seq: u64, rtp_time: u32, arrival: Instant, len: usize) {
        self.packets_received += 1;
        self.bytes_received += len as u64;
        match self.base_seq {
            None => {
                self.base_seq = Some(seq);
                self.highest_seq = seq;
            }
            Some(base) => {
                if seq < base {
                    self.base_seq = Some(seq);
                }
                self.highest_seq = self.highest_seq.max(seq);
            }
        }
        let start = *self.start.get_or_insert(arrival);
        let arrival_ts = (arrival.saturating_duration_since(start).as_micros() as u64
            * SAMPLE_RATE as u64
            / 1_000_000) as i64;
        let transit = arrival_ts.wrapping_sub(i64::from(rtp_time));
        if let Some(last) = self.last_transit {
            // RTP timestamps wrap at 2^32: take the transit difference mod 2^32.
            let d = (transit.wrapping_sub(last) as i32).unsigned_abs() as u64;
            // J += (|D| - J) / 16, with J kept × 16.
            self.jitter_x16 = self.jitter_x16 + d - ((self.jitter_x16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Packets expected from the sequence numbers seen.
    pub fn packets_expected(&self) -> u64 {
        self.base_seq
            .map_or(0, |base| self.highest_seq.saturating_sub(base) + 1)
    }

    /// Cumulative packets lost: expected − received (0 when duplicates make
    /// it negative; RFC 3550 allows negative, getStats shows ≥ 0 in practice).
    pub fn packets_lost(&self) -> u64 {
        self.packets_expected()
            .saturating_sub(self.packets_received)
    }

    /// Interarrival jitter in seconds.
    pub fn jitter(&self) -> f64 {
        (self.jitter_x16 as f64 / 16.0) / f64::from(SAMPLE_RATE)
    }
}

/// One snapshot of a call's audio statistics, in getStats units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStats {
    /// RTP packets received.
    pub packets_received: u64,
    /// RTP packets lost (expected − received).
    pub packets_lost: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Round-trip time from RTCP (s), once measured.
    pub rtt: Option<f64>,
    /// Interarrival jitter (s).
    pub jitter: f64,
    /// Sum of the time each emitted frame spent in the jitter buffer (s).
    pub jitter_buffer_delay: f64,
    /// Samples emitted by the jitter buffer (decoded or concealed).
    pub jitter_buffer_emitted_count: u64,
    /// The jitter buffer's current target delay (s).
    pub jitter_buffer_target_delay: f64,
    /// Samples produced by concealment (a frame missing or late).
    pub concealed_samples: u64,
    /// Samples inserted to slow playout down (the buffer growing).
    pub inserted_samples_for_deceleration: u64,
    /// Samples dropped to speed playout up (the buffer shrinking).
    pub removed_samples_for_acceleration: u64,
    /// Samples played in total.
    pub total_samples: u64,
    /// Packets that arrived after their playout time.
    pub late_packets: u64,
    /// Missing frames decoded through the decoder's FEC path (the next
    /// packet's in-band FEC when it has some, else the decoder's PLC).
    pub fec_frames: u64,
}

impl CallStats {
    /// Loss as a fraction of the packets expected (0 when nothing was expected).
    pub fn loss_fraction(&self) -> f64 {
        let expected = self.packets_received + self.packets_lost;
        if expected == 0 {
            0.0
        } else {
            self.packets_lost as f64 / expected as f64
        }
    }

    /// Mean time a frame spent in the jitter buffer (s), once one was emitted.
    pub fn mean_jitter_buffer_delay(&self) -> Option<f64> {
        (self.jitter_buffer_emitted_count > 0).then(|| {
            self.jitter_buffer_delay * crate::FRAME_SAMPLES as f64
                / self.jitter_buffer_emitted_count as f64
        })
    }
}

/// `d` as seconds.
pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_stream_has_no_jitter_or_loss() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        for i in 0..100u64 {
            let at = t0 + Duration::from_millis(20 * i);
            s.on_packet(1000 + i, (i * 960) as u32, at, 80);
        }
        assert_eq!(s.packets_received, 100);
        assert_eq!(s.packets_lost(), 0);
        assert!(s.jitter() < 0.0005, "{}", s.jitter());
        assert_eq!(s.bytes_received, 8000);
    }

    #[test]
    fn gaps_count_as_loss_and_late_packets_as_jitter() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        for i in 0..200u64 {
            if i % 10 == 3 {
                continue; // 10 % loss
            }
            // every other packet 10 ms late
            let late = if i % 2 == 0 { 10 } else { 0 };
            let at = t0 + Duration::from_millis(20 * i + late);
            s.on_packet(u64::from(u16::MAX) - 50 + i, (i * 960) as u32, at, 80);
        }
        assert_eq!(s.packets_lost(), 20);
        // |D| alternates around 10 ms: J converges near 10 ms.
        assert!(s.jitter() > 0.005 && s.jitter() < 0.012, "{}", s.jitter());
    }

    #[test]
    fn rtp_timestamp_wrap_is_not_jitter() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        let base = u32::MAX - 960 * 5;
        for i in 0..20u32 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            s.on_packet(u64::from(i), base.wrapping_add(i * 960), at, 10);
        }
        assert!(s.jitter() < 0.0005, "{}", s.jitter());
    }
}

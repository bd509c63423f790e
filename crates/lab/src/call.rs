//! What a finished call reports: per-direction figures, the call's
//! outcome, its classification against the published thresholds and
//! ITU-T G.114, and its E-model rating.
//!
//! ## Call-level figures (what the summary and the report aggregate)
//! - RTT: median of all echo samples of both agents;
//! - one-way delay, jitter, loss: the worse direction (largest median
//!   one-way delay, largest final RFC 3550 jitter, largest loss);
//! - R and MOS: the worse direction's rating;
//! - throughput: mean received media bit rate per direction, summed.
//!
//! A call is *acceptable* when it succeeded with RTT < 400 ms, loss < 2 %
//! and jitter < 30 ms (the thresholds of the DTU WebRTC-over-Tor study);
//! its G.114 class is `good` below 150 ms one-way delay, `acceptable`
//! below 400 ms, else `poor`.

use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::emodel::{self, Codec};
use crate::metrics::{median, percentile};

/// Acceptable RTT, ms (exclusive).
pub const MAX_RTT_MS: f64 = 400.0;
/// Acceptable loss, percent (exclusive).
pub const MAX_LOSS_PCT: f64 = 2.0;
/// Acceptable jitter, ms (exclusive).
pub const MAX_JITTER_MS: f64 = 30.0;
/// G.114: one-way delay below this is good, ms.
pub const G114_GOOD_MS: f64 = 150.0;
/// G.114: one-way delay below this is acceptable, ms.
pub const G114_ACCEPTABLE_MS: f64 = 400.0;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Set up and stayed up for its whole duration.
    Success,
    /// Not set up (allocation, permission or first media packet failed or
    /// timed out) after every retry.
    FailedSetup,
    /// Set up, then broke (transport error, allocation lost, media stalled).
    FailedDuringCall,
}

impl Outcome {
    /// All outcomes, in report order.
    pub const ALL: [Outcome; 3] = [
        Outcome::Success,
        Outcome::FailedSetup,
        Outcome::FailedDuringCall,
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::FailedSetup => "failed_setup",
            Outcome::FailedDuringCall => "failed_during_call",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// ITU-T G.114 class of a one-way delay.
pub fn g114_class(owd_ms: f64) -> &'static str {
    if owd_ms < G114_GOOD_MS {
        "good"
    } else if owd_ms < G114_ACCEPTABLE_MS {
        "acceptable"
    } else {
        "poor"
    }
}

/// One direction of a call (sender → receiver).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DirectionReport {
    /// Media packets sent.
    pub sent: u64,
    /// Distinct media packets received.
    pub received: u64,
    /// Lost packets (sent − received).
    pub lost: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Reordered packets.
    pub reordered: u64,
    /// Loss, percent.
    pub loss_pct: f64,
    /// Median one-way delay, ms.
    pub owd_median_ms: Option<f64>,
    /// 95th percentile one-way delay, ms.
    pub owd_p95_ms: Option<f64>,
    /// Final RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Median RTT of the sender's echo requests, ms.
    pub rtt_median_ms: Option<f64>,
    /// 95th percentile of that RTT, ms.
    pub rtt_p95_ms: Option<f64>,
    /// RTT samples.
    pub rtt_samples: u64,
    /// G.107 burst ratio of the loss pattern.
    pub burst_r: f64,
    /// E-model R of this direction.
    pub r: Option<f64>,
    /// E-model MOS of this direction.
    pub mos: Option<f64>,
    /// Media bytes sent.
    pub tx_bytes: u64,
    /// Media bytes received.
    pub rx_bytes: u64,
    /// Per-second samples.
    pub seconds: Vec<Sample>,
}

/// One second of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Second since the media start.
    pub t_s: u32,
    /// Bytes the sender sent in that second.
    pub tx_bytes: u64,
    /// Bytes the receiver got in that second.
    pub rx_bytes: u64,
    /// Packets the receiver got in that second.
    pub rx_packets: u64,
    /// RFC 3550 jitter at the end of that second, ms.
    pub jitter_ms: f64,
    /// The sender's RTT in that second, ms (browser calls; synthetic calls
    /// keep their RTT samples per call).
    pub rtt_ms: Option<f64>,
}

/// What one browser page reported about its connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SideReport {
    /// `caller` or `callee`.
    pub side: String,
    /// The selected pair's local candidate type (`relay`).
    pub local_candidate: Option<String>,
    /// The selected pair's remote candidate type.
    pub remote_candidate: Option<String>,
    /// The local candidate's relay protocol (`udp`, `tcp`, `tls`).
    pub relay_protocol: Option<String>,
    /// Mean jitter-buffer delay of what this page received, ms.
    pub jitter_buffer_ms: Option<f64>,
    /// Webrtc calls: samples the decoder concealed (lost or late frames).
    pub concealed_samples: Option<u64>,
    /// Webrtc calls: concealed samples as a percentage of the samples
    /// played (the loss the listener hears, after the jitter buffer).
    pub concealed_pct: Option<f64>,
}

/// How the E-model is fed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RatingInputs {
    /// Codec constants.
    pub codec: Codec,
    /// Added to the measured one-way delay (packetisation, jitter buffer), ms.
    pub extra_delay_ms: f64,
    /// Use the measured burst ratio (else BurstR = 1, random loss).
    pub measured_burst: bool,
}

impl Default for RatingInputs {
    fn default() -> Self {
        RatingInputs {
            codec: Codec::G711,
            extra_delay_ms: 0.0,
            measured_burst: true,
        }
    }
}

impl DirectionReport {
    /// The direction `sender` → `receiver`.
    pub fn from_agents(sender: &Agent, receiver: &Agent, rating: &RatingInputs) -> Self {
        let rx = &receiver.rx;
        let sent = sender.tx.packets;
        let owd_median_ms = median(&rx.delays_ms);
        let loss_pct = rx.loss_pct(sent);
        let burst_r = if rating.measured_burst {
            rx.burst_ratio(u32::try_from(sent).unwrap_or(u32::MAX))
        } else {
            1.0
        };
        let rated = owd_median_ms
            .map(|d| emodel::rate(rating.codec, d + rating.extra_delay_ms, loss_pct, burst_r));
        let n = sender
            .tx
            .per_second
            .bytes
            .len()
            .max(rx.per_second.bytes.len());
        let seconds = (0..n)
            .map(|i| Sample {
                t_s: i as u32,
                tx_bytes: sender.tx.per_second.bytes.get(i).copied().unwrap_or(0),
                rx_bytes: rx.per_second.bytes.get(i).copied().unwrap_or(0),
                rx_packets: rx.per_second.packets.get(i).copied().unwrap_or(0),
                jitter_ms: rx
                    .jitter_per_second_ms
                    .get(i)
                    .or(rx.jitter_per_second_ms.last())
                    .copied()
                    .unwrap_or(0.0),
                rtt_ms: None,
            })
            .collect();
        DirectionReport {
            sent,
            received: rx.unique,
            lost: rx.lost(sent),
            duplicates: rx.duplicates,
            reordered: rx.reordered,
            loss_pct,
            owd_median_ms,
            owd_p95_ms: percentile(&rx.delays_ms, 95.0),
            jitter_ms: rx.jitter_ms(),
            rtt_median_ms: median(&sender.rtt_ms),
            rtt_p95_ms: percentile(&sender.rtt_ms, 95.0),
            rtt_samples: sender.rtt_ms.len() as u64,
            burst_r,
            r: rated.map(|r| r.r),
            mos: rated.map(|r| r.mos),
            tx_bytes: sender.tx.bytes,
            rx_bytes: rx.bytes,
            seconds,
        }
    }
}

/// Everything measured in one call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallReport {
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Setup attempts made (1 + retries used).
    pub attempts: u32,
    /// First request to first media packet (the later of both sides), ms.
    pub setup_ms: Option<f64>,
    /// Media duration asked for, ms.
    pub duration_ms: f64,
    /// Caller → callee.
    pub forward: DirectionReport,
    /// Callee → caller.
    pub backward: DirectionReport,
    /// Median RTT over both agents' echoes, ms.
    pub rtt_ms: Option<f64>,
    /// 95th percentile RTT over both agents' echoes, ms.
    pub rtt_p95_ms: Option<f64>,
    /// Whether the one-way delays are estimates (browser calls: RTT/2 +
    /// jitter-buffer delay + packetisation) rather than measured.
    pub owd_estimated: bool,
    /// Browser calls: what each page reported about its connection.
    pub sides: Vec<SideReport>,
}

impl CallReport {
    /// A call that was never set up.
    pub fn failed_setup(attempts: u32, reason: String, duration_ms: f64) -> Self {
        CallReport {
            outcome: Outcome::FailedSetup,
            failure: Some(reason),
            attempts,
            setup_ms: None,
            duration_ms,
            forward: DirectionReport::default(),
            backward: DirectionReport::default(),
            rtt_ms: None,
            rtt_p95_ms: None,
            owd_estimated: false,
            sides: Vec::new(),
        }
    }

    /// A call measured between `caller` and `callee`.
    pub fn from_agents(
        caller: &Agent,
        callee: &Agent,
        rating: &RatingInputs,
        outcome: Outcome,
        failure: Option<String>,
        setup_ms: Option<f64>,
    ) -> Self {
        let mut rtts = caller.rtt_ms.clone();
        rtts.extend_from_slice(&callee.rtt_ms);
        CallReport {
            outcome,
            failure,
            attempts: 1,
            setup_ms,
            duration_ms: caller.profile().duration_ns as f64 / 1e6,
            forward: DirectionReport::from_agents(caller, callee, rating),
            backward: DirectionReport::from_agents(callee, caller, rating),
            rtt_ms: median(&rtts),
            rtt_p95_ms: percentile(&rtts, 95.0),
            owd_estimated: false,
            sides: Vec::new(),
        }
    }

    fn worse(a: Option<f64>, b: Option<f64>, pick_max: bool) -> Option<f64> {
        match (a, b) {
            (Some(x), Some(y)) => Some(if pick_max { x.max(y) } else { x.min(y) }),
            (x, y) => x.or(y),
        }
    }

    /// The larger median one-way delay of the two directions, ms.
    pub fn owd_ms(&self) -> Option<f64> {
        Self::worse(
            self.forward.owd_median_ms,
            self.backward.owd_median_ms,
            true,
        )
    }

    /// The larger final jitter of the two directions, ms.
    pub fn jitter_ms(&self) -> Option<f64> {
        self.measured()
            .then(|| self.forward.jitter_ms.max(self.backward.jitter_ms))
    }

    /// The larger loss of the two directions, percent.
    pub fn loss_pct(&self) -> Option<f64> {
        self.measured()
            .then(|| self.forward.loss_pct.max(self.backward.loss_pct))
    }

    /// The worse direction's R.
    pub fn r(&self) -> Option<f64> {
        Self::worse(self.forward.r, self.backward.r, false)
    }

    /// The worse direction's MOS.
    pub fn mos(&self) -> Option<f64> {
        Self::worse(self.forward.mos, self.backward.mos, false)
    }

    /// Mean received media throughput, both directions summed, kbit/s.
    pub fn rx_kbps(&self) -> Option<f64> {
        let secs = self.duration_ms / 1000.0;
        (self.measured() && secs > 0.0)
            .then(|| 8.0 * (self.forward.rx_bytes + self.backward.rx_bytes) as f64 / secs / 1000.0)
    }

    /// Whether media was measured at all.
    pub fn measured(&self) -> bool {
        self.forward.sent + self.backward.sent > 0
    }

    /// Success within RTT < 400 ms, loss < 2 %, jitter < 30 ms.
    pub fn acceptable(&self) -> bool {
        self.outcome == Outcome::Success
            && self.rtt_ms.is_some_and(|r| r < MAX_RTT_MS)
            && self.loss_pct().is_some_and(|l| l < MAX_LOSS_PCT)
            && self.jitter_ms().is_some_and(|j| j < MAX_JITTER_MS)
    }

    /// G.114 class of the worse direction's one-way delay.
    pub fn g114(&self) -> Option<&'static str> {
        self.owd_ms().map(g114_class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g114_classes() {
        assert_eq!(g114_class(149.9), "good");
        assert_eq!(g114_class(150.0), "acceptable");
        assert_eq!(g114_class(400.0), "poor");
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}

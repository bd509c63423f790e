//! One `stats` message, validated: numbers finite and non-negative, strings
//! from short fixed sets. A field that fails is stored as NULL; nothing
//! outside these fields (and never an address) is kept.
//!
//! [`Cumulative`] turns one member's cumulative counters (bytes, packets,
//! jitter-buffer totals) into increments, so the store can keep per-call
//! totals without keeping the per-second values.

use serde::Serialize;
use serde_json::{Map, Value};

/// `state` values the page reports (`window.onionrtc.state`).
pub(crate) const STATES: &[&str] = &[
    "new",
    "joining",
    "waiting",
    "connecting",
    "connected",
    "disconnected",
    "failed",
    "closed",
];
/// ICE candidate types.
pub(crate) const CANDIDATE_TYPES: &[&str] = &["host", "srflx", "prflx", "relay"];
/// `relayProtocol` values.
pub(crate) const RELAY_PROTOCOLS: &[&str] = &["udp", "tcp", "tls"];
/// Counters beyond this are not plausible (2^53, JavaScript's exact limit).
const MAX_COUNT: f64 = 9_007_199_254_740_992.0;

/// A validated statistics sample (units as in docs/signaling.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSample {
    /// Connection state.
    pub state: Option<&'static str>,
    /// Round-trip time of the selected pair, s.
    pub rtt: Option<f64>,
    /// Inbound jitter, s.
    pub jitter: Option<f64>,
    /// Packets lost, cumulative.
    pub packets_lost: Option<i64>,
    /// Packets received, cumulative.
    pub packets_received: Option<i64>,
    /// Jitter-buffer delay, s, cumulative.
    pub jitter_buffer_delay: Option<f64>,
    /// Jitter-buffer emitted count, cumulative.
    pub jitter_buffer_emitted_count: Option<i64>,
    /// Bytes sent on the selected pair, cumulative.
    pub bytes_sent: Option<i64>,
    /// Bytes received on the selected pair, cumulative.
    pub bytes_received: Option<i64>,
    /// Inbound bit rate, bit/s.
    pub bitrate_in: Option<f64>,
    /// Outbound bit rate, bit/s.
    pub bitrate_out: Option<f64>,
    /// Local candidate type of the selected pair.
    pub local_candidate_type: Option<&'static str>,
    /// Remote candidate type of the selected pair.
    pub remote_candidate_type: Option<&'static str>,
    /// `udp`, `tcp` or `tls`.
    pub relay_protocol: Option<&'static str>,
}

impl StatsSample {
    /// Reads the `stats` object of a message; `None` if it is not an object.
    /// Bad or unknown fields are ignored.
    pub fn from_json(value: &Value) -> Option<StatsSample> {
        let m = value.as_object()?;
        Some(StatsSample {
            state: word(m, "state", STATES),
            rtt: real(m, "rtt"),
            jitter: real(m, "jitter"),
            packets_lost: count(m, "packetsLost"),
            packets_received: count(m, "packetsReceived"),
            jitter_buffer_delay: real(m, "jitterBufferDelay"),
            jitter_buffer_emitted_count: count(m, "jitterBufferEmittedCount"),
            bytes_sent: count(m, "bytesSent"),
            bytes_received: count(m, "bytesReceived"),
            bitrate_in: real(m, "bitrateIn"),
            bitrate_out: real(m, "bitrateOut"),
            local_candidate_type: word(m, "localCandidateType", CANDIDATE_TYPES),
            remote_candidate_type: word(m, "remoteCandidateType", CANDIDATE_TYPES),
            relay_protocol: word(m, "relayProtocol", RELAY_PROTOCOLS),
        })
    }
}

/// The bit of `value` in a set over `names` (index `i` → bit `i`); 0 if
/// absent.
pub(crate) fn bit(value: Option<&str>, names: &[&str]) -> i64 {
    value
        .and_then(|v| names.iter().position(|n| *n == v))
        .map_or(0, |i| 1 << i)
}

/// The names whose bits are set in `bits`, in `names`' order.
pub(crate) fn names_in(bits: i64, names: &[&'static str]) -> Vec<&'static str> {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// What one sample adds to its call's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Increment {
    /// Packets lost.
    pub packets_lost: i64,
    /// Packets received.
    pub packets_received: i64,
    /// Jitter-buffer delay, s.
    pub jitter_buffer_delay: f64,
    /// Jitter-buffer emitted count.
    pub jitter_buffer_emitted_count: i64,
    /// Bytes sent.
    pub bytes_sent: i64,
    /// Bytes received.
    pub bytes_received: i64,
}

/// One member's cumulative counters as last reported. A counter that goes
/// down (a new `RTCPeerConnection` after the other member changed, or a
/// correction of `packetsLost`) adds nothing and restarts from its new
/// value; the first report of a counter adds all of it.
#[derive(Debug, Clone, Default)]
pub struct Cumulative {
    packets_lost: Option<i64>,
    packets_received: Option<i64>,
    jitter_buffer_delay: Option<f64>,
    jitter_buffer_emitted_count: Option<i64>,
    bytes_sent: Option<i64>,
    bytes_received: Option<i64>,
}

impl Cumulative {
    /// Takes `s`'s counters as the latest; returns what they add.
    pub fn advance(&mut self, s: &StatsSample) -> Increment {
        fn step<T: Copy + PartialOrd + std::ops::Sub<Output = T> + Default>(
            prev: &mut Option<T>,
            now: Option<T>,
        ) -> T {
            let Some(now) = now else {
                return T::default();
            };
            let inc = match *prev {
                None => now,
                Some(p) if now >= p => now - p,
                Some(_) => T::default(),
            };
            *prev = Some(now);
            inc
        }
        Increment {
            packets_lost: step(&mut self.packets_lost, s.packets_lost),
            packets_received: step(&mut self.packets_received, s.packets_received),
            jitter_buffer_delay: step(&mut self.jitter_buffer_delay, s.jitter_buffer_delay),
            jitter_buffer_emitted_count: step(
                &mut self.jitter_buffer_emitted_count,
                s.jitter_buffer_emitted_count,
            ),
            bytes_sent: step(&mut self.bytes_sent, s.bytes_sent),
            bytes_received: step(&mut self.bytes_received, s.bytes_received),
        }
    }
}

fn real(m: &Map<String, Value>, key: &str) -> Option<f64> {
    let v = m.get(key)?.as_f64()?;
    (0.0..MAX_COUNT).contains(&v).then_some(v)
}

fn count(m: &Map<String, Value>, key: &str) -> Option<i64> {
    let v = m.get(key)?;
    if let Some(i) = v.as_i64() {
        return (i >= 0 && (i as f64) < MAX_COUNT).then_some(i);
    }
    let f = v.as_f64()?;
    // Whole numbers written as floats (`12.0`) are fine.
    ((0.0..MAX_COUNT).contains(&f) && f.fract() == 0.0).then_some(f as i64)
}

fn word(m: &Map<String, Value>, key: &str, allowed: &[&'static str]) -> Option<&'static str> {
    let s = m.get(key)?.as_str()?;
    allowed.iter().copied().find(|a| *a == s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn good_and_bad_fields() {
        let v = json!({
            "ts": 1, "state": "connected", "rtt": 0.012, "jitter": -1.0,
            "packetsLost": 3, "packetsReceived": 12.0, "jitterBufferDelay": "x",
            "bytesSent": 1e300, "bytesReceived": 2.5, "bitrateIn": 64000,
            "localCandidateType": "relay", "remoteCandidateType": "192.0.2.1",
            "relayProtocol": "udp", "address": "192.0.2.1"
        });
        let s = StatsSample::from_json(&v).unwrap_or_default();
        assert_eq!(s.state, Some("connected"));
        assert_eq!(s.rtt, Some(0.012));
        assert_eq!(s.jitter, None);
        assert_eq!(s.packets_lost, Some(3));
        assert_eq!(s.packets_received, Some(12));
        assert_eq!(s.jitter_buffer_delay, None);
        assert_eq!(s.bytes_sent, None);
        assert_eq!(s.bytes_received, None);
        assert_eq!(s.bitrate_in, Some(64000.0));
        assert_eq!(s.local_candidate_type, Some("relay"));
        assert_eq!(s.remote_candidate_type, None);
        assert_eq!(s.relay_protocol, Some("udp"));
        assert_eq!(StatsSample::from_json(&json!([1])), None);
    }

    #[test]
    fn cumulative_counters_become_increments() {
        let s = |sent: Option<i64>, lost: i64| StatsSample {
            bytes_sent: sent,
            packets_lost: Some(lost),
            jitter_buffer_delay: Some(1.5),
            ..StatsSample::default()
        };
        let mut c = Cumulative::default();
        let i = c.advance(&s(Some(1000), 5));
        assert_eq!((i.bytes_sent, i.packets_lost), (1000, 5));
        assert_eq!(i.jitter_buffer_delay, 1.5);
        assert_eq!(i.bytes_received, 0);
        let i = c.advance(&s(Some(2500), 7));
        assert_eq!((i.bytes_sent, i.packets_lost), (1500, 2));
        assert_eq!(i.jitter_buffer_delay, 0.0);
        // A missing value adds nothing and keeps the previous one.
        let i = c.advance(&s(None, 7));
        assert_eq!(i.bytes_sent, 0);
        let i = c.advance(&s(Some(2600), 7));
        assert_eq!(i.bytes_sent, 100);
        // Going down (a new peer connection, a loss correction): nothing
        // added, counting restarts from there.
        let i = c.advance(&s(Some(300), 6));
        assert_eq!((i.bytes_sent, i.packets_lost), (0, 0));
        let i = c.advance(&s(Some(400), 8));
        assert_eq!((i.bytes_sent, i.packets_lost), (100, 2));
    }

    #[test]
    fn bit_sets() {
        assert_eq!(bit(Some("tcp"), RELAY_PROTOCOLS), 2);
        assert_eq!(bit(Some("quic"), RELAY_PROTOCOLS), 0);
        assert_eq!(bit(None, RELAY_PROTOCOLS), 0);
        assert_eq!(names_in(5, RELAY_PROTOCOLS), ["udp", "tls"]);
        assert_eq!(names_in(0, STATES), Vec::<&str>::new());
    }
}

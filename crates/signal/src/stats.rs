//! One `stats` message, validated: numbers finite and non-negative, strings
//! from short fixed sets. A field that fails is stored as NULL; nothing
//! outside these fields (and never an address) is kept.

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
}

//! The E-model, ITU-T G.107, simplified as VoIP monitors use it.
//!
//! - R = 93.2 − Id − Ie,eff (93.2 = R0 − Is with the default values; the
//!   advantage factor A is 0)
//! - Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3), d the one-way delay in ms
//! - Ie,eff = Ie + (95 − Ie)·Ppl / (Ppl/BurstR + Bpl), Ppl the packet loss
//!   in percent, BurstR 1 for random loss
//! - MOS = 1 if R < 0, 4.5 if R > 100, else
//!   1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R)
//!
//! ## Codec constants ([`Codec`])
//! From ITU-T G.113 Appendix I: G.711 Ie = 0, Bpl = 25.1 with packet-loss
//! concealment (4.3 without); G.729A with VAD Ie = 11, Bpl = 19.
//!
//! **Opus (our assumption).** G.113 has no narrowband entry for Opus, and
//! its wideband/fullband treatment (G.107.1/G.107.2) uses a different R
//! scale. The lab rates Opus on the narrowband scale as G.711 with PLC:
//! Ie = 0 (Opus at ≥ 24 kbit/s is at least transparent narrowband speech)
//! and Bpl = 25.1 (no credit taken for Opus's in-band FEC or its better
//! concealment, so the figure is conservative). Other implementations
//! differ (one Rust monitoring agent uses G.711 Bpl = 10), so compare MOS
//! figures only with the constants stated.
//!
//! ## What the lab feeds in
//! d is the median measured one-way network delay of the direction plus the
//! plan's `extra_delay_ms` (packetisation, jitter buffer; 0 by default);
//! Ppl is the direction's measured loss; BurstR is estimated from the loss
//! pattern (see [`crate::metrics::burst_ratio`]) unless the plan asks for
//! random loss.

use serde::{Deserialize, Serialize};

/// R with default values and A = 0 (R0 − Is).
pub const R_DEFAULT: f64 = 93.2;

/// A codec's equipment impairment factor and packet-loss robustness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Codec {
    /// G.711 with packet-loss concealment: Ie 0, Bpl 25.1.
    G711,
    /// G.711 without packet-loss concealment: Ie 0, Bpl 4.3.
    G711NoPlc,
    /// G.729A with VAD: Ie 11, Bpl 19.
    G729aVad,
    /// Opus, rated as G.711 with PLC (Ie 0, Bpl 25.1): our assumption.
    Opus,
}

impl Codec {
    /// Equipment impairment factor Ie.
    pub const fn ie(self) -> f64 {
        match self {
            Codec::G711 | Codec::G711NoPlc | Codec::Opus => 0.0,
            Codec::G729aVad => 11.0,
        }
    }

    /// Packet-loss robustness factor Bpl.
    pub const fn bpl(self) -> f64 {
        match self {
            Codec::G711 | Codec::Opus => 25.1,
            Codec::G711NoPlc => 4.3,
            Codec::G729aVad => 19.0,
        }
    }

    /// The name used in plan files.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::G711 => "g711",
            Codec::G711NoPlc => "g711-no-plc",
            Codec::G729aVad => "g729a-vad",
            Codec::Opus => "opus",
        }
    }
}

/// The parts of one E-model rating.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rating {
    /// Delay impairment Id.
    pub id: f64,
    /// Effective equipment impairment Ie,eff.
    pub ie_eff: f64,
    /// Transmission rating R.
    pub r: f64,
    /// Estimated MOS (conversational quality).
    pub mos: f64,
}

/// Delay impairment Id for one-way delay `d_ms`.
pub fn delay_impairment(d_ms: f64) -> f64 {
    let d = d_ms.max(0.0);
    let mut id = 0.024 * d;
    if d >= 177.3 {
        id += 0.11 * (d - 177.3);
    }
    id
}

/// Effective equipment impairment for `loss_pct` percent loss.
pub fn effective_equipment_impairment(codec: Codec, loss_pct: f64, burst_r: f64) -> f64 {
    let ppl = loss_pct.clamp(0.0, 100.0);
    let burst_r = if burst_r.is_finite() && burst_r > 0.0 {
        burst_r
    } else {
        1.0
    };
    let ie = codec.ie();
    ie + (95.0 - ie) * ppl / (ppl / burst_r + codec.bpl())
}

/// MOS from R.
pub fn mos_from_r(r: f64) -> f64 {
    if r < 0.0 {
        1.0
    } else if r > 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    }
}

/// Rates a direction: one-way delay `d_ms`, loss `loss_pct` (percent) with
/// burst ratio `burst_r` (1 for random loss).
pub fn rate(codec: Codec, d_ms: f64, loss_pct: f64, burst_r: f64) -> Rating {
    let id = delay_impairment(d_ms);
    let ie_eff = effective_equipment_impairment(codec, loss_pct, burst_r);
    let r = R_DEFAULT - id - ie_eff;
    Rating {
        id,
        ie_eff,
        r,
        mos: mos_from_r(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mos_limits() {
        assert_eq!(mos_from_r(-3.0), 1.0);
        assert_eq!(mos_from_r(101.0), 4.5);
        assert!((mos_from_r(0.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn delay_knee() {
        assert!((delay_impairment(100.0) - 2.4).abs() < 1e-12);
        assert!((delay_impairment(177.3) - 0.024 * 177.3).abs() < 1e-12);
    }

    #[test]
    fn bursty_loss_hurts_more() {
        let random = rate(Codec::G711, 50.0, 5.0, 1.0);
        let bursty = rate(Codec::G711, 50.0, 5.0, 3.0);
        assert!(bursty.r < random.r);
    }
}

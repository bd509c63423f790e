//! Test signals and sample-rate conversion (no codec needed).

use crate::{FRAME_SAMPLES, SAMPLE_RATE};

/// A sine tone at `hz`, -12 dBFS, produced 20 ms at a time.
#[derive(Debug, Clone)]
pub struct Tone {
    phase: f64,
    step: f64,
}

impl Tone {
    /// A tone of `hz` hertz.
    pub fn new(hz: f64) -> Self {
        Tone {
            phase: 0.0,
            step: std::f64::consts::TAU * hz / f64::from(SAMPLE_RATE),
        }
    }

    /// The next frame.
    pub fn frame(&mut self) -> [i16; FRAME_SAMPLES] {
        let mut out = [0i16; FRAME_SAMPLES];
        for s in out.iter_mut() {
            *s = (self.phase.sin() * 8192.0) as i16;
            self.phase = (self.phase + self.step) % std::f64::consts::TAU;
        }
        out
    }
}

/// Converts mono samples at `from_hz` to 48 kHz by linear interpolation.
pub fn resample_to_48k(samples: &[i16], from_hz: u32) -> Vec<i16> {
    if from_hz == SAMPLE_RATE || samples.is_empty() || from_hz == 0 {
        return samples.to_vec();
    }
    let ratio = f64::from(from_hz) / f64::from(SAMPLE_RATE);
    let n = (samples.len() as f64 / ratio).floor() as usize;
    (0..n)
        .map(|i| {
            let x = i as f64 * ratio;
            let k = x.floor() as usize;
            let frac = x - k as f64;
            let a = f64::from(samples[k.min(samples.len() - 1)]);
            let b = f64::from(samples[(k + 1).min(samples.len() - 1)]);
            (a + (b - a) * frac).round() as i16
        })
        .collect()
}

/// Level of `samples` in dBFS (RMS against full scale); -inf for silence.
pub fn dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / samples.len() as f64).sqrt();
    20.0 * (rms / 32768.0).log10()
}

/// The strength of frequency `hz` in `samples` (Goertzel), normalised so a
/// full-scale sine gives about 0.5.
pub fn goertzel(samples: &[i16], hz: f64) -> f64 {
    let n = samples.len();
    if n == 0 {
        return 0.0;
    }
    let w = std::f64::consts::TAU * hz / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power.max(0.0).sqrt() / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_is_at_its_frequency_and_level() {
        let mut t = Tone::new(440.0);
        let s: Vec<i16> = (0..10).flat_map(|_| t.frame()).collect();
        let level = dbfs(&s);
        assert!((level + 15.0).abs() < 1.0, "{level}"); // -12 dBFS peak = -15 dBFS RMS
        assert!(goertzel(&s, 440.0) > 10.0 * goertzel(&s, 1000.0));
    }

    #[test]
    fn resampling_keeps_the_frequency() {
        let sr = 16_000.0;
        let s: Vec<i16> = (0..16_000)
            .map(|i| ((std::f64::consts::TAU * 500.0 * f64::from(i) / sr).sin() * 10_000.0) as i16)
            .collect();
        let r = resample_to_48k(&s, 16_000);
        assert_eq!(r.len(), 48_000);
        assert!(goertzel(&r, 500.0) > 10.0 * goertzel(&r, 800.0));
        assert_eq!(resample_to_48k(&[], 8000), Vec::<i16>::new());
    }
}

//! Opus through libopus (the `opus` crate): 48 kHz mono, 20 ms frames.

use crate::jitter::FrameDecoder;
use crate::FRAME_SAMPLES;

/// Errors from libopus.
#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct CodecError(#[from] opus::Error);

/// An Opus encoder for speech (VoIP application), constant bitrate
/// (the sanitizer asks browsers for `cbr=1`: every packet the same size).
#[derive(Debug)]
pub struct Encoder {
    inner: opus::Encoder,
    buf: Vec<u8>,
}

impl Encoder {
    /// An encoder at `bitrate` bit/s with in-band FEC on.
    ///
    /// # Errors
    /// When libopus refuses the settings.
    pub fn new(bitrate: i32) -> Result<Self, CodecError> {
        let mut inner = opus::Encoder::new(
            crate::SAMPLE_RATE,
            opus::Channels::Mono,
            opus::Application::Voip,
        )?;
        inner.set_bitrate(opus::Bitrate::Bits(bitrate))?;
        inner.set_vbr(false)?;
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(5)?;
        Ok(Encoder {
            inner,
            buf: vec![0; 1500],
        })
    }

    /// Encodes one 20 ms frame.
    ///
    /// # Errors
    /// When libopus fails (a frame of the wrong length).
    pub fn encode(&mut self, frame: &[i16; FRAME_SAMPLES]) -> Result<&[u8], CodecError> {
        let n = self.inner.encode(frame, &mut self.buf)?;
        Ok(&self.buf[..n])
    }
}

/// An Opus decoder with libopus's packet-loss concealment and FEC.
#[derive(Debug)]
pub struct Decoder {
    inner: opus::Decoder,
    /// Packets libopus refused.
    pub errors: u64,
}

impl Decoder {
    /// A mono 48 kHz decoder.
    ///
    /// # Errors
    /// When libopus cannot create it.
    pub fn new() -> Result<Self, CodecError> {
        Ok(Decoder {
            inner: opus::Decoder::new(crate::SAMPLE_RATE, opus::Channels::Mono)?,
            errors: 0,
        })
    }
}

impl FrameDecoder for Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
        if payload.is_empty() {
            return None;
        }
        // A packet longer than 20 ms is cut to the frame (we play 20 ms per pop).
        let mut tmp = [0i16; 5760];
        match self.inner.decode(payload, &mut tmp, false) {
            Ok(n) => {
                let n = n.min(FRAME_SAMPLES).min(out.len());
                out[..n].copy_from_slice(&tmp[..n]);
                Some(n)
            }
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }

    fn conceal(&mut self, out: &mut [i16]) -> usize {
        let n = FRAME_SAMPLES.min(out.len());
        // An empty packet asks libopus for concealment of `n` samples.
        self.inner
            .decode(&[], &mut out[..n], false)
            .unwrap_or_else(|_| {
                out[..n].fill(0);
                n
            })
    }

    fn decode_fec(&mut self, next_payload: &[u8], out: &mut [i16]) -> Option<usize> {
        let n = FRAME_SAMPLES.min(out.len());
        // libopus recovers the missing frame from the next packet's LBRR
        // data when it carries some, and conceals otherwise.
        if next_payload.is_empty() {
            return None;
        }
        self.inner.decode(next_payload, &mut out[..n], true).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tone::{goertzel, Tone};

    #[test]
    fn a_tone_survives_encoding_and_concealment_is_smooth() {
        let mut enc = Encoder::new(32_000).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut tone = Tone::new(440.0);
        let mut out = Vec::new();
        let mut buf = [0i16; FRAME_SAMPLES];
        for i in 0..50 {
            let pkt = enc.encode(&tone.frame()).unwrap().to_vec();
            if i % 10 == 5 {
                dec.conceal(&mut buf);
            } else {
                assert_eq!(dec.decode(&pkt, &mut buf), Some(FRAME_SAMPLES));
            }
            out.extend_from_slice(&buf);
        }
        let tail = &out[out.len() / 2..];
        assert!(goertzel(tail, 440.0) > 10.0 * goertzel(tail, 1000.0));
        assert_eq!(dec.decode(&[0xff, 0xff, 0xff], &mut buf), None);
        assert_eq!(dec.decode(&[], &mut buf), None);
    }
}

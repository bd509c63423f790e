//! Live microphone and speaker for `onionrtc call` (cpal: ALSA on Linux,
//! so whatever ALSA routes to — a sound card, PulseAudio or PipeWire
//! through their ALSA plugins). See docs/call.md.
//!
//! The device runs on cpal's own thread at its own rate and channel count;
//! the call loop works in 20 ms mono frames at 48 kHz. Between them sits a
//! bounded queue of mono samples at the device's rate and a streaming
//! linear resampler on the call loop's side:
//!
//! - microphone: the device callback mixes to mono and appends; the call
//!   loop takes one frame per tick (resampled to 48 kHz). The queue holds
//!   at most [`MAX_QUEUE`] (older samples are dropped: the delay stays
//!   bounded when the device runs faster than our clock); after running
//!   dry it waits for [`PRIME`] before it is read again (silence meanwhile).
//! - speaker: the call loop appends each decoded frame (resampled to the
//!   device's rate); the device callback plays it on every channel, silence
//!   while the queue is below [`PRIME`] after running dry. Same bound.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use cpal::traits::{DeviceTrait as _, HostTrait as _, StreamTrait as _};
use cpal::{FromSample, Sample, SizedSample};

/// Most audio a queue holds, in seconds.
const MAX_QUEUE: f64 = 0.2;
/// What a queue fills to after running dry before it is read, in seconds.
const PRIME: f64 = 0.04;

/// Mono samples at the device's rate, shared with the device's thread.
#[derive(Debug)]
struct Fifo {
    samples: VecDeque<f32>,
    max: usize,
    prime: usize,
    /// Read only once `prime` samples are queued (after start or underrun).
    primed: bool,
    /// The first error the device reported (printed once by the call).
    error: Option<String>,
}

impl Fifo {
    fn new(rate: u32) -> Self {
        let max = (f64::from(rate) * MAX_QUEUE) as usize;
        Fifo {
            samples: VecDeque::with_capacity(max),
            max,
            prime: (f64::from(rate) * PRIME) as usize,
            primed: false,
            error: None,
        }
    }

    fn push(&mut self, s: f32) {
        if self.samples.len() >= self.max {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// The next sample, or `None` while not primed (or dry).
    fn pop(&mut self) -> Option<f32> {
        if !self.primed {
            if self.samples.len() < self.prime {
                return None;
            }
            self.primed = true;
        }
        let s = self.samples.pop_front();
        if s.is_none() {
            self.primed = false;
        }
        s
    }
}

type Shared = Arc<Mutex<Fifo>>;

fn lock(f: &Shared) -> std::sync::MutexGuard<'_, Fifo> {
    // A panic on the device thread cannot leave the queue inconsistent.
    f.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Streaming linear-interpolation resampler (mono).
#[derive(Debug, Clone)]
pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Position between `prev` (0) and `cur` (1) of the next output.
    pos: f64,
    prev: f32,
    cur: f32,
}

impl Resampler {
    /// From `from_hz` to `to_hz`.
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        Resampler {
            step: f64::from(from_hz.max(1)) / f64::from(to_hz.max(1)),
            pos: 1.0,
            prev: 0.0,
            cur: 0.0,
        }
    }

    /// The next output sample, taking input from `pull` as needed; `None`
    /// when `pull` runs dry (the state stays consistent: call again later).
    pub fn next(&mut self, mut pull: impl FnMut() -> Option<f32>) -> Option<f32> {
        while self.pos >= 1.0 {
            let s = pull()?;
            self.prev = self.cur;
            self.cur = s;
            self.pos -= 1.0;
        }
        let v = self.prev + (self.cur - self.prev) * self.pos as f32;
        self.pos += self.step;
        Some(v)
    }
}

/// Which device: the default one, or one named as `--list-devices` shows.
fn pick(host: &cpal::Host, name: Option<&str>, input: bool) -> anyhow::Result<cpal::Device> {
    let what = if input { "input" } else { "output" };
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        let d = if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        };
        return d.with_context(|| format!("no default audio {what} device"));
    };
    let devices = if input {
        host.input_devices().map(|d| d.collect::<Vec<_>>())
    } else {
        host.output_devices().map(|d| d.collect::<Vec<_>>())
    }
    .with_context(|| format!("cannot list the audio {what} devices"))?;
    let mut names = Vec::new();
    for d in devices {
        let (id, desc) = names_of(&d);
        if id == name || desc == name {
            return Ok(d);
        }
        names.push(id);
    }
    bail!(
        "no audio {what} device {name:?} (there are: {})",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )
}

/// A device's id (what `--mic=`/`--speaker=` take) and its description.
fn names_of(d: &cpal::Device) -> (String, String) {
    let id = d.id().map(|i| i.id().to_owned()).unwrap_or_default();
    let desc = d
        .description()
        .map(|x| x.name().to_owned())
        .unwrap_or_default();
    (id, desc)
}

/// The stream configuration: 48 kHz when the device offers it (no
/// resampling), else its default; its sample format.
fn config(
    d: &cpal::Device,
    input: bool,
) -> anyhow::Result<(cpal::StreamConfig, cpal::SampleFormat)> {
    let default = if input {
        d.default_input_config()
    } else {
        d.default_output_config()
    }
    .context("the device offers no configuration")?;
    let ranges: Vec<cpal::SupportedStreamConfigRange> = if input {
        d.supported_input_configs().map(Iterator::collect)
    } else {
        d.supported_output_configs().map(Iterator::collect)
    }
    .unwrap_or_default();
    let at_48k = ranges
        .into_iter()
        .filter(|r| {
            r.sample_format() == default.sample_format() && r.channels() == default.channels()
        })
        .find_map(|r| r.try_with_sample_rate(media::SAMPLE_RATE));
    let chosen = at_48k.unwrap_or(default);
    Ok((chosen.config(), chosen.sample_format()))
}

/// Builds a stream, with a 20 ms period (two of them buffered) when the
/// device takes it, else the device's default.
fn build(
    d: &cpal::Device,
    mut cfg: cpal::StreamConfig,
    format: cpal::SampleFormat,
    fifo: &Shared,
    input: bool,
) -> anyhow::Result<cpal::Stream> {
    cfg.buffer_size = cpal::BufferSize::Fixed(cfg.sample_rate / 50);
    match build_typed(d, &cfg, format, fifo, input) {
        Ok(s) => Ok(s),
        Err(_) => {
            cfg.buffer_size = cpal::BufferSize::Default;
            build_typed(d, &cfg, format, fifo, input)
        }
    }
}

fn build_typed(
    d: &cpal::Device,
    cfg: &cpal::StreamConfig,
    format: cpal::SampleFormat,
    fifo: &Shared,
    input: bool,
) -> anyhow::Result<cpal::Stream> {
    use cpal::SampleFormat as F;
    let stream = match format {
        F::F32 => stream::<f32>(d, cfg, fifo, input),
        F::I16 => stream::<i16>(d, cfg, fifo, input),
        F::I32 => stream::<i32>(d, cfg, fifo, input),
        F::U16 => stream::<u16>(d, cfg, fifo, input),
        F::U8 => stream::<u8>(d, cfg, fifo, input),
        F::I8 => stream::<i8>(d, cfg, fifo, input),
        F::F64 => stream::<f64>(d, cfg, fifo, input),
        other => bail!("the device's sample format {other} is not supported"),
    }?;
    Ok(stream)
}

fn stream<T>(
    d: &cpal::Device,
    cfg: &cpal::StreamConfig,
    fifo: &Shared,
    input: bool,
) -> anyhow::Result<cpal::Stream>
where
    T: SizedSample + FromSample<f32>,
    f32: FromSample<T>,
{
    let channels = usize::from(cfg.channels.max(1));
    let errors = fifo.clone();
    let on_error = move |e: cpal::Error| {
        if e.kind() == cpal::ErrorKind::Xrun {
            // cpal recovers by itself; a glitch, not news for the user.
            tracing::debug!("audio device: {e}");
            return;
        }
        let mut f = lock(&errors);
        if f.error.is_none() {
            f.error = Some(e.to_string());
        }
    };
    let q = fifo.clone();
    let s = if input {
        d.build_input_stream::<T, _, _>(
            *cfg,
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                let mut f = lock(&q);
                for frame in data.chunks(channels) {
                    let sum: f32 = frame.iter().map(|s| s.to_sample::<f32>()).sum();
                    f.push(sum / frame.len() as f32);
                }
            },
            on_error,
            None,
        )
    } else {
        d.build_output_stream::<T, _, _>(
            *cfg,
            move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
                let mut f = lock(&q);
                for frame in data.chunks_mut(channels) {
                    let v = f.pop().unwrap_or(0.0).to_sample::<T>();
                    frame.fill(v);
                }
            },
            on_error,
            None,
        )
    }?;
    Ok(s)
}

/// An open device: its stream (stops when dropped), queue and rate.
struct Device {
    _stream: cpal::Stream,
    fifo: Shared,
    resampler: Resampler,
    label: String,
    warned: bool,
}

impl Device {
    fn open(name: Option<&str>, input: bool) -> anyhow::Result<Device> {
        let host = cpal::default_host();
        let d = pick(&host, name, input)?;
        let label = match name.filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => "default".to_owned(),
        };
        let (cfg, format) = config(&d, input)?;
        let fifo = Arc::new(Mutex::new(Fifo::new(cfg.sample_rate)));
        let stream = build(&d, cfg, format, &fifo, input)
            .with_context(|| format!("cannot open audio device {label}"))?;
        stream
            .play()
            .with_context(|| format!("cannot start audio device {label}"))?;
        let resampler = if input {
            Resampler::new(cfg.sample_rate, media::SAMPLE_RATE)
        } else {
            Resampler::new(media::SAMPLE_RATE, cfg.sample_rate)
        };
        tracing::debug!(
            device = %label, rate = cfg.sample_rate, channels = cfg.channels, ?format,
            "audio device open"
        );
        Ok(Device {
            _stream: stream,
            fifo,
            resampler,
            label,
            warned: false,
        })
    }
}

/// Prints a device's first error once (the call goes on).
fn warn(warned: &mut bool, what: &str, label: &str, f: &Fifo) {
    if let (false, Some(e)) = (*warned, &f.error) {
        *warned = true;
        eprintln!("{what} {label}: {e}");
    }
}

/// The microphone: 20 ms frames at 48 kHz.
pub struct Mic(Device);

impl Mic {
    /// Opens the default input device, or the one named.
    pub fn open(name: Option<&str>) -> anyhow::Result<Mic> {
        Device::open(name, true).map(Mic)
    }

    /// The next 20 ms (silence for what the device has not delivered).
    pub fn frame(&mut self) -> [i16; media::FRAME_SAMPLES] {
        let mut out = [0i16; media::FRAME_SAMPLES];
        let dev = &mut self.0;
        let mut f = lock(&dev.fifo);
        for o in out.iter_mut() {
            match dev.resampler.next(|| f.pop()) {
                Some(v) => *o = (v * 32767.0).clamp(-32768.0, 32767.0) as i16,
                None => break,
            }
        }
        warn(&mut dev.warned, "microphone", &dev.label, &f);
        out
    }
}

/// The speaker: plays 20 ms frames at 48 kHz.
pub struct Speaker(Device);

impl Speaker {
    /// Opens the default output device, or the one named.
    pub fn open(name: Option<&str>) -> anyhow::Result<Speaker> {
        Device::open(name, false).map(Speaker)
    }

    /// Queues one frame for playing.
    pub fn play(&mut self, frame: &[i16]) {
        let dev = &mut self.0;
        let mut f = lock(&dev.fifo);
        let mut input = frame.iter().map(|&s| f32::from(s) / 32768.0);
        while let Some(v) = dev.resampler.next(|| input.next()) {
            f.push(v);
        }
        warn(&mut dev.warned, "speaker", &dev.label, &f);
    }
}

/// The `--list-devices` text: input and output devices by the names
/// `--mic=`/`--speaker=` take, with their descriptions.
pub fn list() -> anyhow::Result<String> {
    let host = cpal::default_host();
    let mut out = String::new();
    for input in [true, false] {
        let devices: Vec<cpal::Device> = if input {
            host.input_devices().map(Iterator::collect)
        } else {
            host.output_devices().map(Iterator::collect)
        }
        .context("cannot list the audio devices")?;
        let _ = writeln!(
            out,
            "{} devices ({}):",
            if input { "input" } else { "output" },
            if input {
                "--mic=NAME"
            } else {
                "--speaker=NAME"
            }
        );
        if devices.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for d in devices {
            let (id, desc) = names_of(&d);
            let _ = writeln!(out, "  {id:<24} {desc}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut Resampler, input: &[f32]) -> Vec<f32> {
        let mut it = input.iter().copied();
        let mut out = Vec::new();
        while let Some(v) = r.next(|| it.next()) {
            out.push(v);
        }
        out
    }

    #[test]
    fn resampler_keeps_the_rate_and_frequency_across_chunks() {
        // 44.1 kHz → 48 kHz in uneven chunks: as many samples as the rates
        // say, and a 1 kHz sine stays 1 kHz.
        let sine: Vec<f32> = (0..44_100)
            .map(|i| (std::f64::consts::TAU * 1000.0 * f64::from(i) / 44_100.0).sin() as f32)
            .collect();
        let mut r = Resampler::new(44_100, 48_000);
        let mut out = Vec::new();
        for chunk in sine.chunks(441 * 3 + 7) {
            out.extend(run(&mut r, chunk));
        }
        assert!((out.len() as i64 - 48_000).abs() <= 2, "{}", out.len());
        let pcm: Vec<i16> = out.iter().map(|v| (v * 16_000.0) as i16).collect();
        let on = media::tone::goertzel(&pcm[4800..], 1000.0);
        let off = media::tone::goertzel(&pcm[4800..], 1300.0);
        assert!(on > 20.0 * off, "{on} vs {off}");
        // Downsampling and the identity.
        let mut r = Resampler::new(48_000, 16_000);
        assert_eq!(run(&mut r, &[0.5; 960]).len(), 320);
        let mut r = Resampler::new(48_000, 48_000);
        let x: Vec<f32> = (0..100).map(|i| i as f32).collect();
        // The identity lags one sample (it interpolates towards the next).
        assert_eq!(run(&mut r, &x)[1..], x[..99]);
    }

    #[test]
    fn queue_is_bounded_and_primes_after_running_dry() {
        let mut f = Fifo::new(1000); // max 200, prime 40
        for i in 0..500 {
            f.push(i as f32);
        }
        assert_eq!(f.samples.len(), 200);
        // The oldest went: the delay stays bounded.
        assert_eq!(f.pop(), Some(300.0));
        while f.pop().is_some() {}
        for _ in 0..39 {
            f.push(1.0);
        }
        assert_eq!(f.pop(), None, "not primed below 40 ms");
        f.push(1.0);
        assert_eq!(f.pop(), Some(1.0));
    }
}

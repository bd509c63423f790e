//! `onionrtc call` with a live microphone and speaker (cpal → ALSA), end to
//! end, without a sound card.
//!
//! ALSA's own plugins cannot pace a stream by themselves (the `null`
//! plugin's poll is always ready, so a `file` plugin on `null` spins: the
//! speaker file would grow as fast as the CPU writes), and `snd-aloop`
//! needs a kernel module a container does not have. So the clock is a
//! private PulseAudio daemon (a real sound server, paced by its own timer)
//! reached through ALSA's `pulse` plugin, configured by an ALSA
//! configuration of the test's own (`ALSA_CONFIG_PATH`):
//!
//! - microphone: ALSA `default` capture → pulse source `micsink.monitor`,
//!   the monitor of a null sink into which `module-sine` plays 440 Hz;
//! - speaker: ALSA `default` playback → ALSA's `file` plugin (everything
//!   played is also written to a WAV file) → pulse null sink `spk`.
//!
//! Caller A uses the defaults (no --tone/--send/--record: microphone and
//! speaker); caller B sends `--tone 1000` and records. B's recording holds
//! A's microphone (440 Hz); A's speaker file holds B's tone (1000 Hz).
//! Negative controls: a device name that does not exist, and no sound
//! server at all, are clear errors (exit 1, no panic) before the call.

use std::path::Path;
use std::time::Duration;

use testkit::Proc;

use super::call::{
    assert_connected, assert_tone, on_path, read_wav, serve_with_tls, spawn_call, spawn_call_env,
    summary,
};
use super::random_room;

/// A private PulseAudio daemon in `dir`, and the environment that points
/// ALSA (through `dir/asound.conf`) at it.
struct Sound {
    _pulse: Proc,
    env: Vec<(String, String)>,
    speaker_file: std::path::PathBuf,
}

impl Sound {
    /// Starts it (bounded wait); `None` (the test is skipped) without
    /// pulseaudio.
    fn start(dir: &Path) -> Option<Sound> {
        let Some(pulseaudio) = on_path("pulseaudio") else {
            eprintln!("skipping: pulseaudio is not installed (scripts/test.sh installs it)");
            return None;
        };
        let socket = dir.join("native");
        let mut cmd = std::process::Command::new(pulseaudio);
        cmd.args([
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--disable-shm=yes",
            "-L",
            "module-null-sink sink_name=spk",
            "-L",
            "module-null-sink sink_name=micsink",
            "-L",
            "module-sine sink=micsink frequency=440",
            // Last: the socket appears once the devices above exist.
            "-L",
        ])
        .arg(format!(
            "module-native-protocol-unix socket={} auth-anonymous=1",
            socket.display()
        ))
        .env("HOME", dir)
        .env("XDG_RUNTIME_DIR", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("pulse.log")).unwrap());
        let pulse = Proc::spawn(&mut cmd).unwrap();
        testkit::wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            socket.exists().then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "pulseaudio did not start: {}",
                std::fs::read_to_string(dir.join("pulse.log")).unwrap_or_default()
            )
        });
        let speaker_file = dir.join("speaker.wav");
        let conf = dir.join("asound.conf");
        std::fs::write(
            &conf,
            format!(
                "pcm.!default {{ type asym; playback.pcm \"speaker\"; capture.pcm \"mic\" }}\n\
                 pcm.pulse_spk {{ type pulse; device \"spk\" }}\n\
                 pcm.speaker {{ type file; slave.pcm \"pulse_spk\"; file \"{}\"; format \"wav\"; \
                 hint.description \"test speaker\" }}\n\
                 pcm.mic {{ type pulse; device \"micsink.monitor\"; hint.description \"test mic\" }}\n",
                speaker_file.display()
            ),
        )
        .unwrap();
        let env = vec![
            ("ALSA_CONFIG_PATH".to_owned(), conf.display().to_string()),
            (
                "PULSE_SERVER".to_owned(),
                format!("unix:{}", socket.display()),
            ),
        ];
        Some(Sound {
            _pulse: pulse,
            env,
            speaker_file,
        })
    }
}

/// A WAV file of any format, mixed to mono, as 16-bit samples; its rate.
fn read_any_wav(path: &Path) -> (Vec<i16>, u32) {
    let mut r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("{}: not a WAV file: {e}", path.display()));
    let spec = r.spec();
    let raw: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(Result::unwrap).collect(),
        hound::SampleFormat::Int => {
            let scale = (1i64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.unwrap() as f32 / scale)
                .collect()
        }
    };
    let mono = raw
        .chunks(usize::from(spec.channels))
        .map(|c| (c.iter().sum::<f32>() / c.len() as f32 * 32767.0) as i16)
        .collect();
    (mono, spec.sample_rate)
}

#[test]
fn microphone_and_speaker_through_alsa() {
    let dir = tempfile::tempdir().unwrap();
    let Some(sound) = Sound::start(dir.path()) else {
        return;
    };

    // The devices are listed by the names --mic= and --speaker= take.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onionrtc"))
        .args(["call", "--list-devices"])
        .envs(sound.env.clone())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("mic") && listed.contains("speaker"),
        "{listed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (server, _, _) = serve_with_tls(dir.path(), "");
    let url = server.url(&format!("/?room={}", random_room()));
    let secs = "8";
    let common = ["--duration", secs, "--json", "--timeout", "40"].map(String::from);
    // A: no --tone, --send or --record: the microphone and the speaker.
    let a = spawn_call_env(url.clone(), common.to_vec(), sound.env.clone());
    std::thread::sleep(Duration::from_millis(300));
    let b_wav = dir.path().join("b.wav");
    let mut b_args = common.to_vec();
    b_args.extend(["--tone", "1000", "--record"].map(String::from));
    b_args.push(b_wav.display().to_string());
    let b = spawn_call(url, b_args);
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let (va, vb) = (summary(&a), summary(&b));
    let a_err = String::from_utf8_lossy(&a.stderr);
    eprintln!("A {va}\nB {vb}\nA's stderr: {a_err}");
    assert!(a.status.success() && b.status.success(), "{va} {vb}");
    assert!(!a_err.contains("panicked"), "{a_err}");
    assert_connected(&va, "udp", "A");
    assert_connected(&vb, "udp", "B");
    // B hears A's microphone.
    assert_tone(&read_wav(&b_wav), 440.0, "B hears A's microphone");
    // A's speaker played B's tone: most of the call, decoded.
    let (played, rate) = read_any_wav(&sound.speaker_file);
    assert_eq!(rate, 48_000, "the device offers 48 kHz: no resampling");
    // What the device played with sound in it (100 ms windows). PulseAudio
    // holds a new playback stream ~2 s before it runs, and again after an
    // underrun on a loaded machine: the bound leaves room for two stalls.
    let audible: Vec<i16> = played
        .chunks(4800)
        .filter(|c| c.len() == 4800 && media::tone::dbfs(c) > -30.0)
        .flatten()
        .copied()
        .collect();
    let audible_secs = audible.len() as f64 / 48_000.0;
    eprintln!(
        "A's speaker: {audible_secs:.1} s of sound, {:.1} s played in all",
        played.len() as f64 / 48_000.0
    );
    assert!(
        audible_secs >= 1.5,
        "A's speaker played {audible_secs:.1} s of sound in a {secs} s call ({:.1} s played in all)",
        played.len() as f64 / 48_000.0
    );
    assert_tone(&audible, 1000.0, "A's speaker plays B's tone");
}

#[test]
fn missing_audio_devices_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let Some(sound) = Sound::start(dir.path()) else {
        return;
    };
    let url = format!("http://127.0.0.1:9/?room={}", random_room());
    let run = |args: &[&str], env: Vec<(String, String)>| {
        let out = spawn_call_env(
            url.clone(),
            args.iter().map(|s| (*s).to_owned()).collect(),
            env,
        )
        .join()
        .unwrap();
        let v = summary(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{v}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(v["state"], "failed", "{v}");
        v["error"].as_str().unwrap_or("").to_owned()
    };
    // A microphone name that does not exist: the error names the devices.
    let e = run(
        &["--json", "--mic=nosuch", "--no-speaker"],
        sound.env.clone(),
    );
    assert!(
        e.contains("no microphone") && e.contains("\"nosuch\"") && e.contains("mic"),
        "{e}"
    );
    let e = run(
        &["--json", "--tone", "440", "--speaker=nosuch"],
        sound.env.clone(),
    );
    assert!(
        e.contains("no speaker") && e.contains("--no-speaker"),
        "{e}"
    );
    // No sound server behind ALSA's default device: the default
    // microphone (no --tone/--send) and speaker (no --record) are errors
    // that say what to do instead, before anything goes on the network.
    let mut gone = sound.env.clone();
    gone[1].1 = format!("unix:{}", dir.path().join("nothing-here").display());
    let e = run(&["--json"], gone.clone());
    assert!(e.contains("no microphone") && e.contains("--no-mic"), "{e}");
    let e = run(&["--json", "--tone", "440"], gone);
    assert!(e.contains("no speaker") && e.contains("--record"), "{e}");
}

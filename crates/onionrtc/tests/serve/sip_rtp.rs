//! Phone ↔ phone audio through the plain-RTP media bridge (`[sip]
//! media_ports`, docs/sip.md) with two Debian **baresip** phones, a client
//! we did not write: each registers over UDP with an account made by
//! `onionrtc users add`, plays its own tone from a WAV (`aufile`) and
//! records what it decodes (`sndfile`); alice (127.0.0.2) calls bob
//! (127.0.0.3), bob answers automatically. Each recording must hold the
//! *other* phone's tone (Goertzel); the negative control: bob's recording
//! must not hold bob's own tone (the check can fail, and the bridge does not
//! echo). While the call is up a stranger sends RTP, garbage and an
//! oversized datagram to the bridge: dropped and counted, the audio
//! unharmed. After the hang-up no bridge is left open. Privacy: nothing
//! either phone received names the other's address (each phone's own trace
//! names its own, so the grep can fail), nor does the server's log.

use std::net::UdpSocket;
use std::path::PathBuf;

use super::sip_ws::{sip_config, users, DOMAIN};
use super::*;

const CALLER_IP: &str = "127.0.0.2";
const CALLEE_IP: &str = "127.0.0.3";
const STRANGER_IP: &str = "127.0.0.4";
const CALLER_HZ: f64 = 440.0;
const CALLEE_HZ: f64 = 1000.0;
pub(crate) const PASSWORD: &str = "phones-on-a-trusted-lan";
/// Seconds of decoded audio each phone must have recorded.
const AUDIO_SECS: usize = 3;
/// baresip records 8 kHz mono here (`audio_srate`, PCMU).
pub(crate) const RATE: u32 = 8000;

/// A 20 s tone at `hz`, 8 kHz mono, about -12 dBFS.
pub(crate) fn tone_wav(path: &Path, hz: f64) {
    let n = RATE as usize * 20;
    let mut data = Vec::with_capacity(n * 2);
    for i in 0..n {
        let t = i as f64 / f64::from(RATE);
        let v = ((std::f64::consts::TAU * hz * t).sin() * 8000.0) as i16;
        data.extend_from_slice(&v.to_le_bytes());
    }
    write_pcm_wav(path, RATE, &data);
}

/// The samples of a 16-bit PCM WAV, up to the end of the file (a header
/// not finalised yet is fine).
fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let Some(at) = bytes.windows(4).position(|w| w == b"data") else {
        return Vec::new();
    };
    bytes
        .get(at + 8..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// The strength of `hz` in 8 kHz `samples` (media's Goertzel, at 48 kHz).
pub(crate) fn strength(samples: &[i16], hz: f64) -> f64 {
    media::tone::goertzel(&media::tone::resample_to_48k(samples, RATE), hz)
}

/// Whether `samples` clearly hold `hz` and not `other`.
pub(crate) fn has_tone(samples: &[i16], hz: f64, other: f64) -> bool {
    let (s, o) = (strength(samples, hz), strength(samples, other));
    s > 0.02 && s > 5.0 * o
}

/// What `dir`'s phone decoded (sndfile's `dump-*-dec.wav`).
pub(crate) fn decoded(dir: &Path) -> Vec<i16> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .map(|p| read_wav(&p))
        .unwrap_or_default()
}

/// A baresip configuration directory: UDP from `ip`, the tone of `wav` as
/// microphone, ALSA's null device as speaker, decoded audio recorded.
pub(crate) fn phone_dir(work: &Path, user: &str, ip: &str, sip: SocketAddr, wav: &Path) -> PathBuf {
    let dir = work.join(user);
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "poll_method epoll\nsip_listen {ip}:0\nnet_interface {ip}\n\
         audio_player alsa,null\naudio_alert alsa,null\naudio_source aufile,{}\n\
         audio_srate {RATE}\naudio_channels 1\nrtp_ports 10000-19999\n\
         module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
         module alsa.so\nmodule sndfile.so\nmodule_app account.so\nmodule_app menu.so\n\
         snd_path {}\n",
        wav.display(),
        dir.display()
    );
    std::fs::write(dir.join("config"), config).unwrap();
    let account = format!(
        "<sip:{user}@{DOMAIN};transport=udp>;auth_pass={PASSWORD};\
         outbound=\"sip:{sip};transport=udp\";regint=600;answermode=auto\n"
    );
    std::fs::write(dir.join("accounts"), account).unwrap();
    dir
}

/// baresip with config dir `dir`, its output (and SIP trace) in `log`,
/// quitting after 90 s at the latest; `extra` arguments appended.
pub(crate) fn baresip(dir: &Path, log: &Path, extra: &[&str]) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new("baresip");
    // -s: print the SIP trace (the privacy grep reads it); -t: a bound.
    cmd.arg("-f")
        .arg(dir)
        .args(["-s", "-t", "90"])
        .args(extra)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    Proc::spawn(&mut cmd).unwrap()
}

/// The bridge port named in the first `m=audio` line after `after` in `text`.
pub(crate) fn audio_port(text: &str, after: &str) -> Option<u16> {
    let at = text.find(after)?;
    text[at..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .and_then(|p| p.parse().ok())
}

#[test]
fn baresip_phones_talk_through_the_rtp_bridge() {
    if !testkit::require_tool("baresip", &["-h"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (config, _) = sip_config(work);
    let sip_port = testkit::free_port();
    // A range of 40 ports (10 bridges) below the ephemeral range (where
    // other tests' free ports come from), baresip's RTP ports below that;
    // ports other programs hold are skipped.
    let first = 24_000 + (std::process::id() % 400) as u16 * 20;
    let mut text = std::fs::read_to_string(&config).unwrap();
    // baresip 1.0 answers only the first challenge.
    text.push_str(&format!(
        "listen = [\"udp://127.0.0.1:{sip_port}\"]\ndigest_algorithms = [\"MD5\"]\n\
         media_ports = \"{first}-{}\"\n",
        first + 39
    ));
    std::fs::write(&config, text).unwrap();
    let data = work.join("data");
    for user in ["alice", "bob"] {
        let (ok, _, err) = users(&config, &data, &["add", user], &format!("{PASSWORD}\n"));
        assert!(ok, "users add {user}: {err}");
    }
    let log = work.join("serve.log");
    let server = Server::start_logged(&config, &data, "info", Some(&log));
    let sip = SocketAddr::from(([127, 0, 0, 1], sip_port));
    let metrics = || server.get_as_operator("/metrics", &data).1;
    let gauge = |name: &str| metric_sum(&metrics(), name);

    let (alice_wav, bob_wav) = (work.join("alice.wav"), work.join("bob.wav"));
    tone_wav(&alice_wav, CALLER_HZ);
    tone_wav(&bob_wav, CALLEE_HZ);
    let alice = phone_dir(work, "alice", CALLER_IP, sip, &alice_wav);
    let bob = phone_dir(work, "bob", CALLEE_IP, sip, &bob_wav);
    let (alice_log, bob_log) = (work.join("alice.log"), work.join("bob.log"));
    let fail = |what: &str| -> String {
        format!(
            "{what}\nalice:\n{}\nbob:\n{}\nserve:\n{}",
            std::fs::read_to_string(&alice_log).unwrap_or_default(),
            std::fs::read_to_string(&bob_log).unwrap_or_default(),
            server.stderr_tail()
        )
    };

    let mut bob_proc = baresip(&bob, &bob_log, &[]);
    let registered =
        testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            (gauge("onionrtc_sip_registrations") >= 1).then_some(())
        });
    assert!(registered.is_some(), "{}", fail("bob did not register"));
    let dial = format!("/dial sip:bob@{DOMAIN}");
    let mut alice_proc = baresip(&alice, &alice_log, &["-e", &dial]);

    // The call is up: the bridge port bob was told about takes a stranger's
    // RTP, garbage and an oversized datagram (dropped, counted).
    let bridge = testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let t = std::fs::read_to_string(&bob_log).unwrap_or_default();
        audio_port(&t, "INVITE sip:bob")
    });
    let bridge = bridge.unwrap_or_else(|| panic!("{}", fail("bob got no bridged INVITE")));
    let before = metrics();
    let stranger = UdpSocket::bind(format!("{STRANGER_IP}:0")).unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], bridge));
    let mut rtp = vec![0x80u8, 0, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
    rtp.extend_from_slice(&[0xffu8; 160]);
    for _ in 0..200 {
        stranger.send_to(&rtp, to).unwrap();
    }
    stranger.send_to(b"not rtp", to).unwrap();
    stranger.send_to(&vec![0x80u8; 4000], to).unwrap();

    // Both phones record the other's tone.
    let enough = AUDIO_SECS * RATE as usize;
    let got = testkit::wait_until(Duration::from_secs(45), Duration::from_millis(200), || {
        (decoded(&alice).len() > enough && decoded(&bob).len() > enough).then_some(())
    });
    assert!(
        got.is_some(),
        "{}",
        fail("no audio recorded on both phones")
    );
    let dropped = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let m = metrics();
        let grew = |name: &str, by: u64| metric_sum(&m, name) >= metric_sum(&before, name) + by;
        (grew("onionrtc_sip_media_foreign_total", 1)
            && grew("onionrtc_sip_media_malformed_total", 2))
        .then_some(())
    });
    assert!(
        dropped.is_some(),
        "stranger's datagrams not counted:\n{}",
        metrics()
    );
    let m = metrics();
    assert_eq!(metric_sum(&m, "onionrtc_sip_media_bridges"), 1, "{m}");
    assert!(
        metric_sum(&m, "onionrtc_sip_media_packets_total") > 100,
        "{m}"
    );

    // Hang up: alice quits (BYE); the bridge closes.
    let pid = alice_proc.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let _ = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        alice_proc.0.try_wait().ok().flatten()
    });
    let closed = testkit::wait_until(Duration::from_secs(40), Duration::from_millis(100), || {
        (gauge("onionrtc_sip_media_bridges") == 0).then_some(())
    });
    assert!(closed.is_some(), "{}", fail("the bridge was not released"));
    let _ = bob_proc.0.kill();

    let (a, b) = (decoded(&alice), decoded(&bob));
    eprintln!(
        "bob heard {:.3} at {CALLER_HZ} Hz ({:.3} at {CALLEE_HZ}); alice heard {:.3} at {CALLEE_HZ} Hz ({:.3} at {CALLER_HZ}); {} and {} samples",
        strength(&b, CALLER_HZ),
        strength(&b, CALLEE_HZ),
        strength(&a, CALLEE_HZ),
        strength(&a, CALLER_HZ),
        b.len(),
        a.len()
    );
    assert!(
        has_tone(&b, CALLER_HZ, CALLEE_HZ),
        "bob did not hear alice's tone"
    );
    assert!(
        has_tone(&a, CALLEE_HZ, CALLER_HZ),
        "alice did not hear bob's tone"
    );
    // Negative control: the check fails on bob's own tone in bob's recording.
    assert!(!has_tone(&b, CALLEE_HZ, CALLER_HZ), "bob hears himself");

    // Privacy: each phone's trace names its own address (the grep can
    // fail), never the other's; the server's log names neither.
    let (alice_got, bob_got) = (
        std::fs::read_to_string(&alice_log).unwrap(),
        std::fs::read_to_string(&bob_log).unwrap(),
    );
    assert!(alice_got.contains(CALLER_IP) && bob_got.contains(CALLEE_IP));
    assert!(bob_got.contains("c=IN IP4 127.0.0.1"), "{bob_got}");
    assert!(
        !bob_got.contains(CALLER_IP),
        "bob received alice's address:\n{bob_got}"
    );
    assert!(
        !alice_got.contains(CALLEE_IP),
        "alice received bob's address:\n{alice_got}"
    );
    let server_log = std::fs::read_to_string(&log).unwrap();
    for ip in [CALLER_IP, CALLEE_IP, STRANGER_IP] {
        assert!(
            !server_log.contains(ip),
            "the log names {ip}:\n{server_log}"
        );
    }
    let status = server.terminate().unwrap();
    assert!(status.success(), "serve exited with {status}");
}

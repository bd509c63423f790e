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
//!
//! `idle_bridged_call_is_hung_up` (`media_timeout = 3`): the call survives
//! 4 s of live media (the negative control: no idle hang-up, audio and the
//! bridge's packet count growing); then both phones freeze (SIGSTOP: no
//! media, no BYE) and within 15 s the server counts the call idle
//! (`onionrtc_sip_media_idle_total` 1, not before 2.5 s) and releases its
//! bridge; thawed, each phone reads a BYE from the server, and neither sent
//! one. `cancelled_call_releases_its_bridge` (`media_timeout = 1`): bob
//! does not answer; while he rings (his trace: the INVITE, his 180) the
//! bridge is open, and 2.5 s of ringing count as nothing idle (a call not
//! answered carries no media; it once did count); alice quits on
//! SIGTERM, which makes baresip send CANCEL (her trace shows it): the
//! bridge closes (one opened in all, none idle), and bob gets the CANCEL.

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
    tone_wav_at(path, hz, RATE);
}

/// [`tone_wav`] at `rate` Hz (baresip's `aufile` wants the codec's rate:
/// 16 kHz for G.722).
pub(crate) fn tone_wav_at(path: &Path, hz: f64, rate: u32) {
    let n = rate as usize * 20;
    let mut data = Vec::with_capacity(n * 2);
    for i in 0..n {
        let t = i as f64 / f64::from(rate);
        let v = ((std::f64::consts::TAU * hz * t).sin() * 8000.0) as i16;
        data.extend_from_slice(&v.to_le_bytes());
    }
    write_pcm_wav(path, rate, &data);
}

/// The samples of a 16-bit PCM WAV, up to the end of the file (a header
/// not finalised yet is fine).
fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let Some(at) = bytes.windows(4).position(|w| w == b"data") else {
        return Vec::new();
    };
    let samples: Vec<i16> = bytes
        .get(at + 8..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    // A wideband recording (G.722 decodes at 16 kHz) comes back at 8 kHz:
    // pairs averaged (a low-pass enough for tones far below 4 kHz).
    let rate = bytes
        .get(24..28)
        .map_or(RATE, |r| u32::from_le_bytes([r[0], r[1], r[2], r[3]]));
    if rate == 2 * RATE {
        return samples
            .chunks_exact(2)
            .map(|p| ((i32::from(p[0]) + i32::from(p[1])) / 2) as i16)
            .collect();
    }
    samples
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
/// microphone, ALSA's null device as speaker, decoded audio recorded;
/// incoming calls answered at once.
pub(crate) fn phone_dir(work: &Path, user: &str, ip: &str, sip: SocketAddr, wav: &Path) -> PathBuf {
    answering_phone_dir(work, user, ip, sip, wav, true, &["g711.so"])
}

/// [`phone_dir`] with the codec modules `codecs` (e.g. `g722.so`, in the
/// order baresip prefers them).
pub(crate) fn phone_dir_with(
    work: &Path,
    user: &str,
    ip: &str,
    sip: SocketAddr,
    wav: &Path,
    codecs: &[&str],
) -> PathBuf {
    answering_phone_dir(work, user, ip, sip, wav, true, codecs)
}

/// [`phone_dir`], answering incoming calls at once if `answers`, else
/// leaving them ringing.
fn answering_phone_dir(
    work: &Path,
    user: &str,
    ip: &str,
    sip: SocketAddr,
    wav: &Path,
    answers: bool,
    codecs: &[&str],
) -> PathBuf {
    let dir = work.join(user);
    std::fs::create_dir_all(&dir).unwrap();
    let modules: String = codecs.iter().map(|m| format!("module {m}\n")).collect();
    let config = format!(
        "poll_method epoll\nsip_listen {ip}:0\nnet_interface {ip}\n\
         audio_player alsa,null\naudio_alert alsa,null\naudio_source aufile,{}\n\
         audio_srate {RATE}\naudio_channels 1\nrtp_ports 10000-19999\n\
         module_path /usr/lib/baresip/modules\n{modules}module aufile.so\n\
         module alsa.so\nmodule sndfile.so\nmodule_app account.so\nmodule_app menu.so\n\
         snd_path {}\n",
        wav.display(),
        dir.display()
    );
    std::fs::write(dir.join("config"), config).unwrap();
    let mode = if answers { "auto" } else { "manual" };
    let account = format!(
        "<sip:{user}@{DOMAIN};transport=udp>;auth_pass={PASSWORD};\
         outbound=\"sip:{sip};transport=udp\";regint=600;answermode={mode}\n"
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

/// A served B2BUA with the bridge, accounts alice and bob, and their
/// phones' config dirs (alice plays [`CALLER_HZ`], bob [`CALLEE_HZ`]).
struct Scene {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    server: Server,
    sip: SocketAddr,
    alice: PathBuf,
    bob: PathBuf,
    alice_log: PathBuf,
    bob_log: PathBuf,
}

impl Scene {
    /// Serves with the bridge on 40 ports (10 bridges) from `first` and
    /// `extra` `[sip]` lines; bob answers if `bob_answers`.
    fn start(first: u16, extra: &str, bob_answers: bool) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path();
        let sip_port = testkit::free_port();
        // baresip 1.0 answers only the first challenge.
        let (config, _) = sip_config(
            work,
            &format!(
                "listen = [\"udp://127.0.0.1:{sip_port}\"]\ndigest_algorithms = [\"MD5\"]\n\
                 media_ports = \"{first}-{}\"\n{extra}",
                first + 39
            ),
        );
        let data = work.join("data");
        for user in ["alice", "bob"] {
            let (ok, _, err) = users(&config, &data, &["add", user], &format!("{PASSWORD}\n"));
            assert!(ok, "users add {user}: {err}");
        }
        let log = work.join("serve.log");
        let server = Server::start_logged(&config, &data, "info", Some(&log));
        let sip = SocketAddr::from(([127, 0, 0, 1], sip_port));
        let (alice_wav, bob_wav) = (work.join("alice.wav"), work.join("bob.wav"));
        tone_wav(&alice_wav, CALLER_HZ);
        tone_wav(&bob_wav, CALLEE_HZ);
        Scene {
            alice: phone_dir(work, "alice", CALLER_IP, sip, &alice_wav),
            bob: answering_phone_dir(
                work,
                "bob",
                CALLEE_IP,
                sip,
                &bob_wav,
                bob_answers,
                &["g711.so"],
            ),
            alice_log: work.join("alice.log"),
            bob_log: work.join("bob.log"),
            data,
            log,
            server,
            sip,
            _dir: dir,
        }
    }

    fn metrics(&self) -> String {
        self.server.get_as_operator("/metrics", &self.data).1
    }

    fn gauge(&self, name: &str) -> u64 {
        metric_sum(&self.metrics(), name)
    }

    /// `what`, both phones' logs and the server's stderr.
    fn fail(&self, what: &str) -> String {
        format!(
            "{what}\nalice:\n{}\nbob:\n{}\nserve:\n{}",
            String::from_utf8_lossy(&std::fs::read(&self.alice_log).unwrap_or_default()),
            String::from_utf8_lossy(&std::fs::read(&self.bob_log).unwrap_or_default()),
            self.server.stderr_tail()
        )
    }

    /// Starts bob's phone and waits (bounded) for its registration.
    fn start_bob(&self) -> Proc {
        let bob = baresip(&self.bob, &self.bob_log, &[]);
        let registered =
            testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
                (self.gauge("onionrtc_sip_registrations") >= 1).then_some(())
            });
        assert!(
            registered.is_some(),
            "{}",
            self.fail("bob did not register")
        );
        bob
    }

    /// Starts alice's phone, calling bob.
    fn dial(&self) -> Proc {
        let dial = format!("/dial sip:bob@{DOMAIN}");
        baresip(&self.alice, &self.alice_log, &["-e", &dial])
    }

    /// Waits (bounded) for the bridged INVITE in bob's trace: the bridge
    /// port it names.
    fn bridge_port(&self) -> u16 {
        let port = testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let t = std::fs::read_to_string(&self.bob_log).unwrap_or_default();
            audio_port(&t, "INVITE sip:bob")
        });
        port.unwrap_or_else(|| panic!("{}", self.fail("bob got no bridged INVITE")))
    }
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`) to `proc`.
fn kill(proc: &Proc, signal: &str) {
    let pid = proc.pid().to_string();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid}");
}

/// baresip quits on SIGTERM (hanging up its call); waits (bounded) for it.
pub(crate) fn quit(proc: &mut Proc) {
    kill(proc, "TERM");
    let _ = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        proc.0.try_wait().ok().flatten()
    });
}

/// Whether the SIP trace (`-s`) in baresip log `log` holds a message
/// starting with `start` that `from` sent to `to` (each an IP address, or
/// IP address and port; empty: any). baresip prints each message as
/// `ESC[36;1m#`, `UDP src -> dst`, the message, `ESC[;m`.
fn traced(log: &Path, from: &str, to: &str, start: &str) -> bool {
    let is = |addr: &str, want: &str| {
        want.is_empty() || addr == want || addr.starts_with(&format!("{want}:"))
    };
    let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    text.split("\x1b[36;1m#\n").skip(1).any(|block| {
        let Some((route, message)) = block.split_once('\n') else {
            return false;
        };
        let mut route = route.split_whitespace().skip(1);
        let (src, dst) = (route.next().unwrap_or(""), route.nth(1).unwrap_or(""));
        is(src, from) && is(dst, to) && message.starts_with(start)
    })
}

#[test]
fn baresip_phones_talk_through_the_rtp_bridge() {
    if !testkit::require_tool("baresip", &["-h"]) {
        return;
    }
    // A range of 40 ports (10 bridges) below the ephemeral range (where
    // other tests' free ports come from), baresip's RTP ports below that;
    // ports other programs hold are skipped.
    let first = 24_000 + (std::process::id() % 400) as u16 * 20;
    let scene = Scene::start(first, "", true);
    let (alice, bob) = (&scene.alice, &scene.bob);
    let metrics = || scene.metrics();
    let fail = |what: &str| scene.fail(what);
    let gauge = |name: &str| scene.gauge(name);

    let bob_proc = scene.start_bob();
    let mut alice_proc = scene.dial();

    // The call is up: the bridge port bob was told about takes a stranger's
    // RTP, garbage and an oversized datagram (dropped, counted).
    let bridge = scene.bridge_port();
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
        (decoded(alice).len() > enough && decoded(bob).len() > enough).then_some(())
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
    quit(&mut alice_proc);
    let closed = testkit::wait_until(Duration::from_secs(40), Duration::from_millis(100), || {
        (gauge("onionrtc_sip_media_bridges") == 0).then_some(())
    });
    assert!(closed.is_some(), "{}", fail("the bridge was not released"));
    drop(bob_proc);

    let (a, b) = (decoded(alice), decoded(bob));
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
        std::fs::read_to_string(&scene.alice_log).unwrap(),
        std::fs::read_to_string(&scene.bob_log).unwrap(),
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
    let server_log = std::fs::read_to_string(&scene.log).unwrap();
    for ip in [CALLER_IP, CALLEE_IP, STRANGER_IP] {
        assert!(
            !server_log.contains(ip),
            "the log names {ip}:\n{server_log}"
        );
    }
    let status = scene.server.terminate().unwrap();
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn idle_bridged_call_is_hung_up() {
    if !testkit::require_tool("baresip", &["-h"]) {
        return;
    }
    let started = Instant::now();
    // 40 ports, never on the other tests' (24000 + (pid % 400)·20,
    // 26000 + (pid % 200)·20) in the same process.
    let first = 20_000 + (std::process::id() % 100) as u16 * 20;
    let scene = Scene::start(first, "media_timeout = 3\n", true);
    let fail = |what: &str| scene.fail(what);
    let mut bob = scene.start_bob();
    let mut alice = scene.dial();

    // The call is up, audio flows both ways.
    scene.bridge_port();
    let flowing = testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let n = RATE as usize / 2;
        (decoded(&scene.alice).len() > n && decoded(&scene.bob).len() > n).then_some(())
    });
    assert!(flowing.is_some(), "{}", fail("no audio on both phones"));
    let heard = || (decoded(&scene.alice).len(), decoded(&scene.bob).len());
    let packets = || scene.gauge("onionrtc_sip_media_packets_total");
    let ((a0, b0), p0) = (heard(), packets());

    // Negative control: 4 s of live media (over media_timeout; 50 packets
    // a second each way), the call stays up.
    std::thread::sleep(Duration::from_secs(4));
    let m = scene.metrics();
    let ((a1, b1), p1) = (heard(), metric_sum(&m, "onionrtc_sip_media_packets_total"));
    assert_eq!(
        metric_sum(&m, "onionrtc_sip_media_idle_total"),
        0,
        "{}",
        fail(&m)
    );
    assert_eq!(
        metric_sum(&m, "onionrtc_sip_media_bridges"),
        1,
        "{}",
        fail(&m)
    );
    let grown = 2 * RATE as usize;
    assert!(
        a1 >= a0 + grown && b1 >= b0 + grown,
        "{}",
        fail(&format!(
            "audio stalled: alice {a0} → {a1}, bob {b0} → {b1} samples"
        ))
    );
    assert!(p1 >= p0 + 200, "{}", fail(&format!("{p0} → {p1} packets")));

    // Both phones freeze: no media, no BYE either. The server hangs up
    // after media_timeout and releases the bridge.
    // (Should anything below panic, Proc's drop SIGKILLs them, stopped or
    // not.)
    kill(&alice, "STOP");
    kill(&bob, "STOP");
    let frozen = Instant::now();
    let hung_up = testkit::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let m = scene.metrics();
        (metric_sum(&m, "onionrtc_sip_media_idle_total") == 1
            && metric_sum(&m, "onionrtc_sip_media_bridges") == 0)
            .then(|| frozen.elapsed())
    });
    kill(&alice, "CONT");
    kill(&bob, "CONT");
    let after = hung_up
        .unwrap_or_else(|| panic!("{}", fail(&format!("not hung up:\n{}", scene.metrics()))));
    assert!(
        after >= Duration::from_millis(2500),
        "hung up {after:?} after the media stopped"
    );

    // Thawed, each phone reads the server's BYE; neither sent one.
    let server = scene.sip.to_string();
    let byes = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        (traced(&scene.alice_log, &server, CALLER_IP, "BYE ")
            && traced(&scene.bob_log, &server, CALLEE_IP, "BYE "))
        .then_some(())
    });
    assert!(
        byes.is_some(),
        "{}",
        fail("a phone got no BYE from the server")
    );
    assert!(
        !traced(&scene.alice_log, CALLER_IP, "", "BYE ")
            && !traced(&scene.bob_log, CALLEE_IP, "", "BYE "),
        "{}",
        fail("a phone hung up itself")
    );
    quit(&mut alice);
    quit(&mut bob);
    eprintln!(
        "idle call hung up {after:?} after both phones froze; test took {:?}",
        started.elapsed()
    );
}

#[test]
fn cancelled_call_releases_its_bridge() {
    if !testkit::require_tool("baresip", &["-h"]) {
        return;
    }
    let started = Instant::now();
    // 40 ports, never on the other tests' in the same process.
    let first = 22_000 + (std::process::id() % 100) as u16 * 20;
    // A 1 s media timeout: ringing longer is not silence (no media flows
    // before the answer), the bridge must stay and nothing count as idle.
    let scene = Scene::start(first, "media_timeout = 1\n", false);
    let fail = |what: &str| scene.fail(what);
    let _bob = scene.start_bob();
    let mut alice = scene.dial();

    // bob rings (no answer); the bridge opened on alice's offer.
    let ringing = testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        (traced(&scene.bob_log, "", CALLEE_IP, "INVITE ")
            && traced(&scene.bob_log, CALLEE_IP, "", "SIP/2.0 180 ")
            && scene.gauge("onionrtc_sip_media_bridges") == 1)
            .then_some(())
    });
    assert!(
        ringing.is_some(),
        "{}",
        fail("bob is not ringing with a bridge open")
    );
    assert!(
        !traced(&scene.bob_log, CALLEE_IP, "", "SIP/2.0 200 "),
        "{}",
        fail("bob answered")
    );
    std::thread::sleep(Duration::from_millis(2500));
    let m = scene.metrics();
    assert_eq!(metric_sum(&m, "onionrtc_sip_media_idle_total"), 0, "{m}");
    assert_eq!(metric_sum(&m, "onionrtc_sip_media_bridges"), 1, "{m}");

    // alice gives up: baresip quits with a CANCEL; the bridge closes.
    quit(&mut alice);
    assert!(
        traced(&scene.alice_log, CALLER_IP, "", "CANCEL "),
        "{}",
        fail("alice sent no CANCEL")
    );
    let released = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        (scene.gauge("onionrtc_sip_media_bridges") == 0).then_some(())
    });
    assert!(
        released.is_some(),
        "{}",
        fail("the bridge outlived the CANCEL")
    );
    let m = scene.metrics();
    assert_eq!(metric_sum(&m, "onionrtc_sip_media_bridges_total"), 1, "{m}");
    assert_eq!(metric_sum(&m, "onionrtc_sip_media_idle_total"), 0, "{m}");
    let server = scene.sip.to_string();
    let cancelled = testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        traced(&scene.bob_log, &server, CALLEE_IP, "CANCEL ").then_some(())
    });
    assert!(cancelled.is_some(), "{}", fail("bob got no CANCEL"));
    eprintln!("cancelled call: test took {:?}", started.elapsed());
}

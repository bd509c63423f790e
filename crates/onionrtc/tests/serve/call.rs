//! `onionrtc call` (issue 11) through `onionrtc serve`: our own WebRTC
//! endpoint (crate `media`) against headless Chromium running the web app,
//! in both directions of who offers, audio decoded both ways; and
//! `call` ↔ `call` over TURN UDP, TCP and TLS. Needs the `call` feature.
//!
//! - What we record contains Chromium's fake-microphone beeps: short bursts
//!   at a steady pace (every 0.5 s) with quiet between them.
//! - Chromium hears our `--tone 440`: a Web Audio analyser on the remote
//!   track (the page also plays it in its media element) finds 440 Hz as
//!   the dominant frequency, and its `concealedSamples` stay low.
//! - Negative control: a call whose peer never comes exits non-zero with
//!   `state: failed`.
//! - aiortc (Debian's python3-aiortc, `aiortc_peer.py`) as a third-party
//!   peer, both ways of who offers: each records the other's tone.
//! - The echo test: `onionrtc call --echo` hears its own tone back through
//!   relay → echo → relay; `POST /api/echo` answers 201 with a sanitized
//!   answer, 400 to garbage, an offer without audio or without Opus, 415
//!   to another content type, 503 beyond the concurrent sessions, 429
//!   beyond the per-address rate.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testkit::chromium::{serde_json, Chromium, LaunchOptions, Page, Value};

pub(super) use super::serve_with_tls;
use super::{fail, random_room, wait_connected, CONNECT};

/// Seconds each call lasts once connected.
const CALL_SECS: u64 = 6;
/// A call must have ended within this.
const CALL_LIMIT: Duration = Duration::from_secs(90);

/// `onionrtc call URL ARGS…` run to its end (bounded) in a thread. It
/// never touches this machine's sound devices: `--no-speaker`, and
/// `--no-mic` unless ARGS say what to send.
pub(super) fn spawn_call(url: String, mut args: Vec<String>) -> std::thread::JoinHandle<Output> {
    let asks = |args: &[String], flag: &str| args.iter().any(|a| a.starts_with(flag));
    if !asks(&args, "--speaker") {
        args.push("--no-speaker".into());
    }
    if !["--mic", "--tone", "--send"].iter().any(|f| asks(&args, f)) {
        args.push("--no-mic".into());
    }
    spawn_call_env(url, args, Vec::new())
}

/// `onionrtc call URL ARGS…` with `ENV` added, as given (devices and all),
/// run to its end (bounded) in a thread.
pub(super) fn spawn_call_env(
    url: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> std::thread::JoinHandle<Output> {
    std::thread::spawn(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_onionrtc"));
        cmd.arg("call")
            .arg(url)
            .args(args)
            .envs(env)
            .env("RUST_LOG", "warn");
        testkit::run_bounded(&mut cmd, CALL_LIMIT)
    })
}

/// The `--json` summary: the last line of stdout.
pub(super) fn summary(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}); status {:?}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The samples of a 48 kHz mono 16-bit WAV we recorded.
pub(super) fn read_wav(path: &Path) -> Vec<i16> {
    let r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (48_000, 1, 16)
    );
    r.into_samples::<i16>().map(Result::unwrap).collect()
}

/// Level of each 50 ms window, dBFS.
fn window_levels(samples: &[i16]) -> Vec<f64> {
    samples.chunks(2400).map(media::tone::dbfs).collect()
}

/// The recording holds short bursts at a steady pace with quiet between
/// them (Chromium's fake microphone beeps; Chromium 156 beeps every 0.5 s,
/// measured here): returns the burst start times (s).
fn beeps(samples: &[i16]) -> Result<Vec<f64>, String> {
    let levels = window_levels(samples);
    let loud: Vec<bool> = levels.iter().map(|l| *l > -45.0).collect();
    let mut starts = Vec::new();
    for i in 0..loud.len() {
        if loud[i] && (i == 0 || !loud[i - 1]) {
            starts.push(i as f64 * 0.05);
        }
    }
    let quiet = loud.iter().filter(|l| !**l).count() as f64 / loud.len().max(1) as f64;
    let summary = format!(
        "bursts at {starts:?}, quiet fraction {quiet:.2}, levels {:?}",
        levels
            .iter()
            .map(|l| l.max(-200.0).round() as i64)
            .collect::<Vec<_>>()
    );
    if starts.len() < 3 || quiet < 0.5 {
        return Err(format!("no beeps: {summary}"));
    }
    let mut gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    let steady = gaps
        .iter()
        .filter(|g| (**g - median).abs() <= 0.3 * median)
        .count();
    if !(0.3..=1.2).contains(&median) || steady * 5 < gaps.len() * 4 {
        return Err(format!(
            "bursts not at a steady pace (median gap {median:.2} s): {summary}"
        ));
    }
    Ok(starts)
}

/// The dominant frequency the page hears on its remote track (Web Audio
/// analyser) and its inbound audio concealment.
const PAGE_HEARS: &str = r#"(async () => {
  // The first peer's received audio track (the app plays it in its tile's
  // media element, which Chromium needs before Web Audio gets samples).
  const pc = window.onionrtc && window.onionrtc.pc;
  const track = pc && pc.getReceivers().map((r) => r.track).find((t) => t && t.kind === 'audio');
  if (!track) return {error: 'no remote audio track'};
  const stream = new MediaStream([track]);
  const ctx = new AudioContext();
  await ctx.resume();
  const an = ctx.createAnalyser();
  an.fftSize = 8192;
  ctx.createMediaStreamSource(stream).connect(an);
  await new Promise((r) => setTimeout(r, 1500));
  const data = new Float32Array(an.frequencyBinCount);
  an.getFloatFrequencyData(data);
  let best = 1;
  for (let i = 2; i < data.length; i++) if (data[i] > data[best]) best = i;
  const r = await window.onionrtc.pc.getStats();
  let inb = null;
  r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') inb = s; });
  ctx.close();
  return {
    hz: best * ctx.sampleRate / an.fftSize, level: data[best],
    concealed: inb ? inb.concealedSamples : null, total: inb ? inb.totalSamplesReceived : null,
  };
})()"#;

pub(super) fn assert_connected(v: &Value, proto: &str, who: &str) {
    assert_eq!(v["state"], "connected", "{who}: {v}");
    assert_eq!(v["relayProtocol"], proto, "{who}: {v}");
    let received = v["packetsReceived"].as_u64().unwrap_or(0);
    // 50 packets a second for CALL_SECS, minus the start.
    assert!(
        received as f64 > 50.0 * CALL_SECS as f64 * 0.7,
        "{who}: {v}"
    );
    for k in ["rtt", "jitter", "mos", "packetsLost"] {
        assert!(v[k].is_number(), "{who}: {k} missing: {v}");
    }
    assert!(v["mos"].as_f64().unwrap_or(0.0) > 4.0, "{who}: {v}");
}

/// A browser's inbound audio (`concealed` of `total` samples, from the
/// page) was concealed for less than `max` of it.
pub(super) fn assert_low_concealment(heard: &Value, max: f64, who: &str) {
    let concealed = heard["concealed"].as_f64().unwrap_or(f64::MAX);
    let total = heard["total"].as_f64().unwrap_or(0.0);
    assert!(
        total > 0.0 && concealed / total < max,
        "{who} concealed too much ({concealed} of {total} samples): {heard}"
    );
}

/// The tone `hz` dominates `samples` (second half: past the start-up).
pub(super) fn assert_tone(samples: &[i16], hz: f64, who: &str) {
    let tail = &samples[samples.len() / 2..];
    let want = media::tone::goertzel(tail, hz);
    let other = media::tone::goertzel(tail, hz * 1.37);
    assert!(
        want > 0.05 && want > 20.0 * other,
        "{who}: {hz} Hz at {want}, {} Hz at {other}",
        hz * 1.37
    );
}

#[test]
fn call_to_call_over_turn_udp_tcp_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, spki, _) = serve_with_tls(dir.path(), "");
    for proto in ["udp", "tcp", "tls"] {
        let started = Instant::now();
        let url = server.url(&format!("/?room={}", random_room()));
        let call = |tone: &str, rec: &str| {
            let mut args: Vec<String> = [
                "--tone",
                tone,
                "--duration",
                "6",
                "--json",
                "--turn-transport",
                proto,
                "--timeout",
                "40",
                "--record",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.push(dir.path().join(rec).display().to_string());
            args.extend(["--relay-spki".to_owned(), spki.clone()]);
            spawn_call(url.clone(), args)
        };
        let a = call("440", &format!("a-{proto}.wav"));
        std::thread::sleep(Duration::from_millis(300));
        let b = call("1000", &format!("b-{proto}.wav"));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let (va, vb) = (summary(&a), summary(&b));
        eprintln!(
            "{proto}: A {va}\n{proto}: B {vb}\n({:?})",
            started.elapsed()
        );
        assert!(
            a.status.success() && b.status.success(),
            "{proto}: exit {:?} {:?}",
            a.status,
            b.status
        );
        assert_connected(&va, proto, "A");
        assert_connected(&vb, proto, "B");
        // Each recorded the other's tone, decoded.
        assert_tone(
            &read_wav(&dir.path().join(format!("a-{proto}.wav"))),
            1000.0,
            "A hears B",
        );
        assert_tone(
            &read_wav(&dir.path().join(format!("b-{proto}.wav"))),
            440.0,
            "B hears A",
        );
    }
    // Negative control: nobody comes; the call gives up, exit non-zero.
    let url = server.url(&format!("/?room={}", random_room()));
    let out = spawn_call(url, ["--json", "--timeout", "3"].map(String::from).to_vec())
        .join()
        .unwrap();
    assert!(!out.status.success());
    let v = summary(&out);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["packetsReceived"].is_null(), "{v}");
}

/// One Chromium page and one `onionrtc call` in a room; `call_first`
/// decides who joins first (the second offers).
fn chromium_and_call(call_first: bool) {
    if !testkit::require_tool("chromium", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = serve_with_tls(dir.path(), "");
    let browser = Chromium::launch(LaunchOptions::default()).unwrap();
    let url = server.url(&format!("/?room={}", random_room()));
    let wav = dir.path().join("heard.wav");
    let args: Vec<String> = vec![
        "--tone".into(),
        "440".into(),
        "--duration".into(),
        (CALL_SECS + 4).to_string(),
        "--json".into(),
        "--timeout".into(),
        "40".into(),
        "--record".into(),
        wav.display().to_string(),
    ];
    let mut pages: Vec<Page> = Vec::new();
    let handle = if call_first {
        let h = spawn_call(url.clone(), args);
        std::thread::sleep(Duration::from_secs(1));
        pages.push(browser.new_page(&url).unwrap());
        h
    } else {
        pages.push(browser.new_page(&url).unwrap());
        std::thread::sleep(Duration::from_secs(1));
        spawn_call(url.clone(), args)
    };
    let deadline = Instant::now() + CONNECT;
    if let Err(e) = wait_connected(&mut pages[0], deadline) {
        fail(
            &format!("page not connected to onionrtc call: {e}"),
            &mut pages,
            &server,
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let heard = match pages[0].evaluate(PAGE_HEARS) {
        Ok(v) => v,
        Err(e) => fail(&format!("analyser: {e}"), &mut pages, &server),
    };
    let out = handle.join().unwrap();
    let v = summary(&out);
    eprintln!("call_first={call_first}: page hears {heard}; call: {v}");
    if !out.status.success() {
        fail(
            &format!(
                "onionrtc call failed: {v}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            &mut pages,
            &server,
        );
    }
    assert_connected(&v, "udp", "call");
    let hz = heard["hz"].as_f64().unwrap_or(0.0);
    assert!(
        (hz - 440.0).abs() < 15.0,
        "Chromium's dominant frequency is not 440 Hz: {heard}"
    );
    assert_low_concealment(&heard, 0.05, "Chromium");
    let samples = read_wav(&wav);
    match beeps(&samples) {
        Ok(b) => eprintln!("beeps recorded at {b:?}"),
        Err(e) => fail(&e, &mut pages, &server),
    }
}

#[test]
fn chromium_offers_to_onionrtc_call() {
    chromium_and_call(true);
}

#[test]
fn onionrtc_call_offers_to_chromium() {
    chromium_and_call(false);
}

#[test]
fn beep_detector_needs_bursts() {
    // Negative controls for the detector itself: silence, and a constant tone.
    assert!(beeps(&vec![0i16; 48_000 * 5]).is_err());
    let mut t = media::tone::Tone::new(440.0);
    let tone: Vec<i16> = (0..250).flat_map(|_| t.frame()).collect();
    assert!(beeps(&tone).is_err());
    // Bursts of 100 ms once a second pass.
    let bursts: Vec<i16> = tone
        .iter()
        .enumerate()
        .map(|(i, s)| if i % 48_000 < 4_800 { *s } else { 0 })
        .collect();
    assert!(beeps(&bursts).is_ok());
}

/// A minimal Opus offer (what a browser's looks like after the sanitizer).
fn opus_offer(codec_line: &str) -> String {
    let fp: Vec<String> = (0..32).map(|i| format!("{:02X}", i * 7 % 256)).collect();
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:Ab1d\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 {}\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\n\
         a=rtcp-mux\r\n{codec_line}\r\n",
        fp.join(":")
    )
}

#[test]
fn echo_test_from_onionrtc_call() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = serve_with_tls(dir.path(), "");
    let wav = dir.path().join("echo.wav");
    let args: Vec<String> = [
        "--echo",
        "--tone",
        "440",
        "--duration",
        "4",
        "--json",
        "--timeout",
        "30",
        "--record",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([wav.display().to_string()])
    .collect();
    let out = spawn_call(server.url("/"), args).join().unwrap();
    let v = summary(&out);
    eprintln!("echo: {v}");
    assert!(
        out.status.success(),
        "{v}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["state"], "connected", "{v}");
    assert_eq!(v["verdict"], "good", "{v}");
    assert!(v["packetsReceived"].as_u64().unwrap_or(0) > 120, "{v}");
    // Our own tone came back, decoded.
    assert_tone(&read_wav(&wav), 440.0, "echo");
}

#[test]
fn echo_api_refuses_bad_offers_and_limits_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = serve_with_tls(
        dir.path(),
        "echo_max_sessions = 1\necho_sessions_per_minute = 5",
    );
    let sdp = "Content-Type: application/sdp\r\n";
    let post = |extra: &str, body: &str| server.request("POST", "/api/echo", extra, body);
    // GET: fresh credentials and the relay policy.
    let (status, body) = server.get("/api/echo");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["iceTransportPolicy"], "relay");
    assert!(
        v["iceServers"][0]["username"]
            .as_str()
            .unwrap_or("")
            .contains(':'),
        "{v}"
    );
    // Not SDP: 415, not counted against the rate.
    assert_eq!(post("Content-Type: text/plain\r\n", "v=0").0, 415);
    // 1: garbage → 400.
    assert_eq!(post(sdp, "this is not SDP \u{1}").0, 400);
    // 2: no audio → 400.
    let video = opus_offer("a=rtpmap:111 opus/48000/2").replace("m=audio", "m=video");
    assert_eq!(post(sdp, &video).0, 400);
    // 3: an unsupported codec only → 400 with a reason.
    let (status, why) = post(
        sdp,
        &opus_offer("a=rtpmap:0 PCMU/8000").replace(" 111\r\n", " 0\r\n"),
    );
    assert_eq!(status, 400, "{why}");
    // 4: a good offer → 201 with a sanitized answer: relay candidates only.
    let (status, answer) = post(sdp, &opus_offer("a=rtpmap:111 opus/48000/2"));
    assert_eq!(status, 201, "{answer}\n{}", server.stderr_tail());
    assert!(
        answer.contains("typ relay raddr 0.0.0.0 rport 0"),
        "{answer}"
    );
    assert!(
        !answer.contains("typ host") && !answer.contains("str0m"),
        "{answer}"
    );
    assert!(
        answer
            .lines()
            .any(|l| l.starts_with("o=- ") && l.ends_with("IN IP4 0.0.0.0")),
        "{answer}"
    );
    // 5: the one session is running (its ICE never connects; it holds the
    // slot for up to 20 s) → 503.
    let (status, why) = post(sdp, &opus_offer("a=rtpmap:111 opus/48000/2"));
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("busy"), "{why}");
    // 6: over 5 a minute from this address → 429.
    assert_eq!(post(sdp, &opus_offer("a=rtpmap:111 opus/48000/2")).0, 429);
}

#[test]
fn echo_test_button_in_chromium() {
    if !testkit::require_tool("chromium", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = serve_with_tls(dir.path(), "");
    let browser = Chromium::launch(LaunchOptions::default()).unwrap();
    let mut pages = vec![browser.new_page(&server.url("/")).unwrap()];
    let clicked = pages[0].wait_for(
        "(() => { const b = document.getElementById('echo-button'); \
         if (!b || b.offsetParent === null) return false; b.click(); return true; })()",
        Duration::from_secs(10),
    );
    if let Err(e) = clicked {
        fail(&format!("no visible echo button: {e}"), &mut pages, &server);
    }
    let done = pages[0].wait_for(
        "window.onionrtc.echo && window.onionrtc.echo.state !== 'running' \
         && JSON.stringify(window.onionrtc.echo)",
        Duration::from_secs(40),
    );
    let result = match done {
        Ok(Value::String(s)) => serde_json::from_str::<Value>(&s).unwrap(),
        other => fail(
            &format!("echo test did not finish: {other:?}"),
            &mut pages,
            &server,
        ),
    };
    let shown = pages[0]
        .evaluate("document.getElementById('echo-result').textContent")
        .unwrap_or_default();
    eprintln!("echo button: {result}\nshown: {shown}");
    assert_eq!(result["state"], "done", "{result}");
    assert_eq!(result["verdict"], "good", "{result}");
    assert!(result["received"].as_u64().unwrap_or(0) > 100, "{result}");
    assert!(result["mos"].as_f64().unwrap_or(0.0) > 4.0, "{result}");
    assert!(shown.as_str().unwrap_or("").contains("good"), "{shown}");
}

/// The program `name` on PATH, if installed.
pub(super) fn on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn call_via_socks5_uses_turn_over_tls() {
    let Some(bin) = on_path("microsocks") else {
        eprintln!("skipping: microsocks is not installed");
        return;
    };
    let (_socks, socks_port) = testkit::start_microsocks(&bin);
    let dir = tempfile::tempdir().unwrap();
    let (server, spki, _) = serve_with_tls(dir.path(), "");
    let url = server.url(&format!("/?room={}", random_room()));
    let args = |tone: &str, rec: &str, via: bool| {
        let mut a: Vec<String> = [
            "--tone",
            tone,
            "--duration",
            "5",
            "--json",
            "--timeout",
            "40",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend([
            "--record".to_owned(),
            dir.path().join(rec).display().to_string(),
        ]);
        if via {
            a.extend([
                "--via".to_owned(),
                format!("socks5://127.0.0.1:{socks_port}"),
                "--relay-spki".to_owned(),
                spki.clone(),
            ]);
        }
        a
    };
    let a = spawn_call(url.clone(), args("440", "a.wav", true));
    std::thread::sleep(Duration::from_millis(300));
    let b = spawn_call(url, args("1000", "b.wav", false));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let (va, vb) = (summary(&a), summary(&b));
    eprintln!("via socks5: A {va}\ndirect: B {vb}");
    // Through a proxy the caller picks TURN over TLS by itself.
    assert_eq!(va["relayProtocol"], "tls", "{va}");
    assert!(a.status.success() && b.status.success(), "{va}\n{vb}");
    assert_connected(&va, "tls", "A via socks5");
    assert_connected(&vb, "udp", "B direct");
    assert_tone(&read_wav(&dir.path().join("a.wav")), 1000.0, "A hears B");
    assert_tone(&read_wav(&dir.path().join("b.wav")), 440.0, "B hears A");
    // Negative control: --via with UDP is refused on the command line.
    let out = spawn_call(
        server.url("/?room=x"),
        ["--via", "socks5://127.0.0.1:1", "--turn-transport", "udp"]
            .map(String::from)
            .to_vec(),
    )
    .join()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcp or tls"));
    // And a proxy that is not there: nothing goes around it.
    let out = spawn_call(
        server.url("/?room=y"),
        ["--via", "socks5://127.0.0.1:1", "--timeout", "5", "--json"]
            .map(String::from)
            .to_vec(),
    )
    .join()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the site"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The --json contract holds for a call that never got going.
    let v = summary(&out);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot reach the site"),
        "{v}"
    );
}

#[test]
fn the_server_going_away_mid_call_is_a_clean_hang_up() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = serve_with_tls(dir.path(), "");
    let url = server.url(&format!("/?room={}", random_room()));
    // No --duration: only the server going away ends these calls.
    let args = || {
        ["--tone", "440", "--json", "--timeout", "40"]
            .map(String::from)
            .to_vec()
    };
    let a = spawn_call(url.clone(), args());
    std::thread::sleep(Duration::from_millis(300));
    let b = spawn_call(url, args());
    std::thread::sleep(Duration::from_secs(5));
    let stopped = Instant::now();
    server.terminate().unwrap();
    for (who, h) in [("A", a), ("B", b)] {
        let out = h.join().unwrap();
        let v = summary(&out);
        eprintln!(
            "{who} after the server stopped ({:?}): {v}",
            stopped.elapsed()
        );
        assert_eq!(v["state"], "disconnected", "{who}: {v}");
        assert!(
            v["packetsReceived"].as_u64().unwrap_or(0) > 100,
            "{who}: {v}"
        );
        assert!(v["error"].is_string(), "{who}: {v}");
        // It connected, so it exits 0 (state tells the rest).
        assert!(out.status.success(), "{who}: {:?}", out.status);
    }
    assert!(stopped.elapsed() < Duration::from_secs(60), "no hang");
}

/// Debian's python3 with aiortc (python3-aiortc, python3-websockets).
fn aiortc_python() -> Option<&'static str> {
    let py = "/usr/bin/python3";
    let ok = Command::new(py)
        .args(["-c", "import aiortc, websockets"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

/// A mono (first channel) view of any 16-bit WAV and its rate.
fn read_any_wav(path: &Path) -> (Vec<i16>, u32) {
    let r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    let ch = usize::from(spec.channels.max(1));
    let all: Vec<i16> = r.into_samples::<i16>().map(Result::unwrap).collect();
    (all.into_iter().step_by(ch).collect(), spec.sample_rate)
}

/// aiortc (a WebRTC stack in Python) ↔ `onionrtc call`, both ways of who
/// offers: each records the other's tone.
fn aiortc_and_call(call_offers: bool) {
    let Some(py) = aiortc_python() else {
        eprintln!("skipping: python3-aiortc is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = serve_with_tls(dir.path(), "");
    let room = random_room();
    let url = server.url(&format!("/?room={room}"));
    let ws = format!("ws://{}/ws", server.web);
    // aiortc sends a 1000 Hz WAV.
    let tone_wav = dir.path().join("t1000.wav");
    let mut w = hound::WavWriter::create(
        &tone_wav,
        hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
    )
    .unwrap();
    let mut t = media::tone::Tone::new(1000.0);
    for _ in 0..150 {
        for s in t.frame() {
            w.write_sample(s).unwrap();
        }
    }
    w.finalize().unwrap();
    let heard_by_aiortc = dir.path().join("aiortc.wav");
    let heard_by_call = dir.path().join("call.wav");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/serve/aiortc_peer.py");
    let peer_args: Vec<String> = vec![
        script.into(),
        ws,
        room,
        tone_wav.display().to_string(),
        heard_by_aiortc.display().to_string(),
        "5".into(),
    ];
    let spawn_peer = move || {
        std::thread::spawn(move || {
            let mut cmd = Command::new(py);
            cmd.args(&peer_args);
            testkit::run_bounded(&mut cmd, CALL_LIMIT)
        })
    };
    let call_args: Vec<String> = [
        "--tone",
        "440",
        "--duration",
        "8",
        "--json",
        "--timeout",
        "40",
        "--record",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([heard_by_call.display().to_string()])
    .collect();
    // The second to join offers.
    let (peer, call) = if call_offers {
        let p = spawn_peer();
        std::thread::sleep(Duration::from_secs(2));
        (p, spawn_call(url, call_args))
    } else {
        let c = spawn_call(url, call_args);
        std::thread::sleep(Duration::from_secs(1));
        (spawn_peer(), c)
    };
    let (peer, call) = (peer.join().unwrap(), call.join().unwrap());
    let peer_out = String::from_utf8_lossy(&peer.stdout).into_owned();
    let v = summary(&call);
    eprintln!("aiortc (call offers: {call_offers}): {peer_out}call: {v}");
    assert!(
        peer_out.contains("\"state\": \"connected\""),
        "aiortc: {peer_out}\n{}",
        String::from_utf8_lossy(&peer.stderr)
    );
    assert!(call.status.success(), "{v}");
    assert_eq!(v["state"], "connected", "{v}");
    let (heard, _) = read_any_wav(&heard_by_call);
    assert_tone(&heard, 1000.0, "call hears aiortc");
    let (heard, rate) = read_any_wav(&heard_by_aiortc);
    assert_eq!(rate, 48_000);
    assert_tone(&heard, 440.0, "aiortc hears call");
}

#[test]
fn onionrtc_call_offers_to_aiortc() {
    aiortc_and_call(true);
}

#[test]
fn aiortc_offers_to_onionrtc_call() {
    aiortc_and_call(false);
}

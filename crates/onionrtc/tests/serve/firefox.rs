//! Firefox ESR and Chromium in one call on `onionrtc serve` (issue 13):
//! Debian's `firefox-esr`, headless, driven over WebDriver BiDi by
//! `tests/js/firefox_call.mjs` (npm `puppeteer-core`, pinned in
//! `tests/js/package-lock.json`, installed by scripts/test.sh with
//! `npm ci`), joins a room where a Chromium tab waits. Both must reach
//! `connected` relay/relay, with audio flowing both ways (Firefox checks
//! its side and prints it; the test checks Chromium's).
//!
//! With the `call` feature, the same Firefox (one per test binary) then
//! calls `onionrtc call --tone 440 --record` in a room of its own (issue
//! 11), audio decoded both ways: what Firefox decodes from the remote
//! track (recorded in the page, decoded offline: headless Firefox without
//! a sound device keeps an AudioContext suspended) is 440 Hz, with little
//! concealment, and our recording holds Firefox's fake microphone (a
//! steady tone).

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testkit::chromium::{serde_json, Chromium, LaunchOptions, Value};
use testkit::Proc;

use super::group::{check_pairs, wait_mesh};
use super::{random_room, serve_config, Server, CONNECT};

/// The Firefox side's whole run (launch, connect, check) is bounded by this.
const FIREFOX_RESULT: Duration = Duration::from_secs(75);

/// The node driver, stopped with SIGTERM on drop (puppeteer then closes
/// Firefox, which a SIGKILL of node would leave running), then killed by
/// PID if it has not exited within 10 s.
struct Driver(Proc);

impl Drop for Driver {
    fn drop(&mut self) {
        let pid = self.0.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            self.0 .0.try_wait().ok().flatten()
        });
    }
}

pub(crate) fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/js")
}

#[test]
fn firefox_and_chromium_call() {
    if !testkit::require_tool("chromium", &["--version"])
        || !testkit::require_tool("firefox-esr", &["--version"])
        || !testkit::require_tool("node", &["--version"])
    {
        return;
    }
    let script = js_dir().join("firefox_call.mjs");
    if !js_dir().join("node_modules/puppeteer-core").is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/js/node_modules is missing in CI (scripts/test.sh runs npm ci)"
        );
        eprintln!("skipping: run `npm ci` in tests/js first");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = serve_config(dir.path(), &["udp", "tcp"]);
    let server = Server::start(&config, &dir.path().join("data"));
    let browser = Chromium::launch(LaunchOptions::default()).unwrap();
    let room = random_room();
    let url = server.url(&format!("/?room={room}&audio=only"));
    let mut page = browser.new_page(&url).unwrap();
    let chromium_id = page
        .wait_for("window.onionrtc.memberId", Duration::from_secs(10))
        .unwrap();

    let started = Instant::now();
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .arg(&url)
        .arg("20")
        .arg("--more")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // stdin piped: the next room's URL goes there (Proc::spawn closes it).
    let mut firefox = Driver(Proc(cmd.spawn().unwrap()));
    let mut to_firefox = firefox.0 .0.stdin.take().unwrap();
    let stdout = firefox.0 .0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(FIREFOX_RESULT);
    let result: Value = match line {
        Ok(l) => serde_json::from_str(&l).unwrap_or(Value::String(l)),
        Err(e) => panic!(
            "no result from Firefox within {FIREFOX_RESULT:?} ({e}); Chromium console: {:#?}; serve: {}",
            page.console(),
            server.stderr_tail()
        ),
    };
    let firefox_in = started.elapsed();
    assert!(result.get("error").is_none(), "Firefox: {result}");
    assert_eq!(result["peerState"], "connected", "{result}");
    assert_eq!(result["peer"], chromium_id, "{result}");
    assert_eq!(
        (result["local"].as_str(), result["remote"].as_str()),
        (Some("relay"), Some("relay")),
        "{result}"
    );
    let grew = |now: &str, before: &str| {
        result[now].as_u64().unwrap_or(0) > result[before].as_u64().unwrap_or(u64::MAX)
    };
    assert!(
        grew("audioIn", "audioInBefore"),
        "Firefox hears nothing: {result}"
    );
    assert!(
        grew("audioOut", "audioOutBefore"),
        "Firefox sends nothing: {result}"
    );

    // Chromium's side of the same pair.
    let firefox_id = result["memberId"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + CONNECT;
    if let Err(e) = wait_mesh(&mut page, &[firefox_id.as_str()], deadline)
        .and_then(|()| check_pairs(&mut page, &[firefox_id.as_str()]))
    {
        panic!(
            "Chromium side: {e}\nconsole: {:#?}\nserve: {}",
            page.console(),
            server.stderr_tail()
        );
    }
    eprintln!(
        "firefox: {} connected relay/relay with Chromium, audio both ways, {firefox_in:?} after launch",
        result["userAgent"]
    );
    #[cfg(feature = "call")]
    firefox_and_onionrtc_call(&server, dir.path(), &mut to_firefox, &rx);
    let _ = writeln!(to_firefox, "quit");
    drop(firefox);
}

/// The same Firefox in a room with `onionrtc call --tone 440 --record`
/// (the call joins first, so Firefox offers and our endpoint answers).
#[cfg(feature = "call")]
fn firefox_and_onionrtc_call(
    server: &Server,
    dir: &std::path::Path,
    to_firefox: &mut std::process::ChildStdin,
    from_firefox: &mpsc::Receiver<String>,
) {
    use super::call::{assert_connected, assert_low_concealment, read_wav, spawn_call, summary};
    let url = server.url(&format!("/?room={}&audio=only", random_room()));
    let wav = dir.join("from-firefox.wav");
    let call = spawn_call(
        url.clone(),
        [
            "--tone",
            "440",
            "--record",
            &wav.display().to_string(),
            "--duration",
            "10",
            "--json",
            "--timeout",
            "60",
        ]
        .map(String::from)
        .to_vec(),
    );
    writeln!(to_firefox, "{url}").unwrap();
    let line = from_firefox.recv_timeout(FIREFOX_RESULT);
    let result: Value = match line {
        Ok(l) => serde_json::from_str(&l).unwrap_or(Value::String(l)),
        Err(e) => panic!(
            "no result from Firefox's call within {FIREFOX_RESULT:?} ({e}); serve: {}",
            server.stderr_tail()
        ),
    };
    let out = call.join().unwrap();
    let v = summary(&out);
    eprintln!(
        "firefox ↔ call: Firefox {result}
call {v}"
    );
    assert!(result.get("error").is_none(), "Firefox: {result}");
    assert_eq!(result["peerState"], "connected", "{result}");
    assert_eq!(
        (result["local"].as_str(), result["remote"].as_str()),
        (Some("relay"), Some("relay")),
        "{result}"
    );
    // Firefox hears our 440 Hz, decoded, with little concealment.
    let hz = result["hz"].as_f64().unwrap_or(0.0);
    let (strength, off) = (
        result["strength"].as_f64().unwrap_or(0.0),
        result["off"].as_f64().unwrap_or(f64::MAX),
    );
    assert!(
        (hz - 440.0).abs() < 20.0 && strength > 10.0 * off,
        "Firefox hears {hz} Hz: {result}"
    );
    assert_low_concealment(&result, 0.2, "Firefox");
    // We hear Firefox's fake microphone: one steady tone dominates.
    assert!(out.status.success(), "call: {v}");
    assert_connected(&v, "udp", "call");
    let samples = read_wav(&wav);
    let tail = &samples[samples.len() / 2..];
    let level = media::tone::dbfs(tail);
    let (best, strength) = (100..4000)
        .step_by(10)
        .map(|f| (f, media::tone::goertzel(tail, f64::from(f))))
        .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let off = media::tone::goertzel(tail, f64::from(best) * 1.37);
    eprintln!(
        "call hears Firefox: {level:.1} dBFS, dominant {best} Hz ({strength:.4} vs {off:.4})"
    );
    assert!(
        level > -40.0 && strength > 10.0 * off,
        "our recording of Firefox: {level:.1} dBFS, {best} Hz at {strength}, {off} at 1.37×"
    );
}

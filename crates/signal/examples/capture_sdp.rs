//! Captures real SDP offers/answers and trickled ICE candidates from the
//! browsers installed here (Debian's `chromium` and `firefox-esr`), for the
//! sanitizer's tests in `crates/signal/tests/data/`.
//!
//! ```text
//! cargo run -p signal --example capture_sdp -- OUT_DIR [TURN_HOST:PORT SECRET]
//! ```
//!
//! It serves a small page from a `std::net` HTTP server on 127.0.0.1, opens
//! it in headless Chromium and Firefox (each with a fresh profile, killed by
//! PID), and the page runs a list of scenarios: an `RTCPeerConnection` with
//! audio+video transceivers and a data channel, with or without
//! `getUserMedia` (without it, browsers hide host addresses behind mDNS
//! names), with or without a TURN server (REST credentials made from
//! `SECRET`; start a relay first, e.g. `ONIONRTC_AUTH_SECRET=s onionrtc relay
//! --listen udp://127.0.0.1:34780 --listen tcp://127.0.0.1:34780`). After ICE
//! gathering completes it POSTs `localDescription.sdp` and the trickled
//! candidates back. Files are written as captured: replace this machine's
//! own addresses with documentation addresses before committing them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The capture page: runs `/scenarios` one after the other.
const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>capture</title>
<script>
async function gather(pc, cands) {
  await new Promise(resolve => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
    setTimeout(resolve, 15000);
  });
}
function watch(pc, cands) {
  pc.addEventListener('icecandidate', e => cands.push(e.candidate ? e.candidate.toJSON() : null));
}
async function scenario(s) {
  const cfg = s.ice ? { iceServers: s.ice, iceTransportPolicy: s.policy || 'all' } : {};
  const pc = new RTCPeerConnection(cfg);
  const offerCands = [];
  watch(pc, offerCands);
  if (s.gum) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    stream.getTracks().forEach(t => pc.addTrack(t, stream));
  } else {
    pc.addTransceiver('audio');
    pc.addTransceiver('video');
  }
  pc.createDataChannel('chat');
  await pc.setLocalDescription(await pc.createOffer());
  await gather(pc, offerCands);
  const out = { offer: pc.localDescription.sdp, offerCandidates: offerCands, ua: navigator.userAgent };
  const offer = pc.localDescription;
  // Release the offerer's TURN allocations before the answerer gathers.
  pc.close();
  if (s.answer) {
    const pc2 = new RTCPeerConnection(cfg);
    const answerCands = [];
    watch(pc2, answerCands);
    if (s.gum) {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      stream.getTracks().forEach(t => pc2.addTrack(t, stream));
    }
    await pc2.setRemoteDescription(offer);
    await pc2.setLocalDescription(await pc2.createAnswer());
    await gather(pc2, answerCands);
    out.answer = pc2.localDescription.sdp;
    out.answerCandidates = answerCands;
    pc2.close();
  }
  return out;
}
(async () => {
  const list = await (await fetch('/scenarios' + location.search)).json();
  for (const s of list) {
    let body;
    try { body = await scenario(s); } catch (e) { body = { error: String(e) }; }
    await fetch('/result?name=' + encodeURIComponent(s.name), { method: 'POST', body: JSON.stringify(body) });
  }
  await fetch('/done' + location.search, { method: 'POST', body: '{}' });
})();
</script>"#;

#[derive(Default)]
struct Shared {
    scenarios: HashMap<String, Value>,
    results: HashMap<String, Value>,
    done: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().map(PathBuf::from) else {
        bail!("usage: capture_sdp OUT_DIR [TURN_HOST:PORT SECRET]");
    };
    let turn = match (args.get(1), args.get(2)) {
        (Some(addr), Some(secret)) => Some((addr.clone(), secret.clone())),
        _ => None,
    };
    std::fs::create_dir_all(&out)?;

    let ice = turn.as_ref().map(|(addr, secret)| {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 3600;
        let username = turn::auth::rest_username(expiry, Some("0123456789abcdef"));
        let credential = turn::auth::rest_password(secret.as_bytes(), &username);
        json!([{
            "urls": [format!("turn:{addr}?transport=udp"), format!("turn:{addr}?transport=tcp")],
            "username": username,
            "credential": credential,
        }])
    });

    let shared = Arc::new(Mutex::new(Shared::default()));
    for browser in ["chromium", "firefox"] {
        let mut list = vec![json!({"name": format!("{browser}"), "gum": true, "answer": true})];
        if let Some(ice) = &ice {
            list.push(json!({"name": format!("{browser}-relay"), "gum": true, "answer": true, "ice": ice}));
            list.push(json!({"name": format!("{browser}-relayonly"), "gum": true, "answer": false, "ice": ice, "policy": "relay"}));
        }
        lock(&shared)
            .scenarios
            .insert(browser.to_owned(), Value::Array(list));
    }

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    if let Err(e) = handle(stream, &shared) {
                        eprintln!("http: {e:#}");
                    }
                });
            }
        });
    }

    let tmp = std::env::temp_dir().join(format!("capture-sdp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;

    // Chromium: first without the fake permission UI, so that no media
    // permission is granted and host addresses hide behind mDNS names (the
    // mDNS scenario), then with it.
    lock(&shared).scenarios.insert(
        "chromium-default".to_owned(),
        json!([{"name": "chromium-mdns", "gum": false, "answer": false}]),
    );
    for (key, fake_ui) in [("chromium-default", false), ("chromium", true)] {
        let url = format!("http://127.0.0.1:{port}/?b={key}");
        let profile = tmp.join(key);
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--use-fake-device-for-media-stream",
        ]);
        if fake_ui {
            cmd.arg("--use-fake-ui-for-media-stream");
        }
        let child = cmd
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromium")?;
        wait_done(&shared, key, child)?;
    }

    // Firefox: one profile with the default host-address obfuscation (the
    // mDNS scenario runs without getUserMedia), real addresses otherwise.
    let profile = tmp.join("firefox");
    std::fs::create_dir_all(&profile)?;
    std::fs::write(
        profile.join("user.js"),
        "user_pref(\"media.navigator.streams.fake\", true);\n\
         user_pref(\"media.navigator.permission.disabled\", true);\n\
         user_pref(\"media.peerconnection.ice.obfuscate_host_addresses\", false);\n\
         user_pref(\"media.peerconnection.ice.loopback\", true);\n\
         user_pref(\"browser.shell.checkDefaultBrowser\", false);\n\
         user_pref(\"datareporting.policy.dataSubmissionEnabled\", false);\n",
    )?;
    let url = format!("http://127.0.0.1:{port}/?b=firefox");
    let child = Command::new("firefox-esr")
        .args(["--headless", "--no-remote", "--profile"])
        .arg(&profile)
        .arg(&url)
        .env("HOME", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting firefox-esr")?;
    wait_done(&shared, "firefox", child)?;
    // The mDNS scenario again with obfuscation on (Firefox's default).
    let profile = tmp.join("firefox-default");
    std::fs::create_dir_all(&profile)?;
    std::fs::write(
        profile.join("user.js"),
        "user_pref(\"media.navigator.streams.fake\", true);\n\
         user_pref(\"media.navigator.permission.disabled\", true);\n",
    )?;
    lock(&shared).scenarios.insert(
        "firefox-default".to_owned(),
        json!([{"name": "firefox-mdns", "gum": false, "answer": false}]),
    );
    let url = format!("http://127.0.0.1:{port}/?b=firefox-default");
    let child = Command::new("firefox-esr")
        .args(["--headless", "--no-remote", "--profile"])
        .arg(&profile)
        .arg(&url)
        .env("HOME", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting firefox-esr")?;
    wait_done(&shared, "firefox-default", child)?;

    let results = std::mem::take(&mut lock(&shared).results);
    for (name, body) in results {
        write_result(&out, &name, &body)?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (at most two minutes) for the page to report `/done`, then kills
/// the browser by PID.
fn wait_done(shared: &Mutex<Shared>, key: &str, mut child: Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        if lock(shared).done.iter().any(|d| d == key) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_secs(1));
    let _ = child.kill();
    let _ = child.wait();
    if !finished {
        bail!("{key}: no result within two minutes");
    }
    Ok(())
}

fn write_result(out: &Path, name: &str, body: &Value) -> anyhow::Result<()> {
    if let Some(err) = body.get("error") {
        eprintln!("{name}: page error {err}");
        return Ok(());
    }
    for (field, file) in [("offer", "offer.sdp"), ("answer", "answer.sdp")] {
        if let Some(sdp) = body.get(field).and_then(Value::as_str) {
            std::fs::write(out.join(format!("{name}-{file}")), sdp)?;
        }
        let key = format!("{field}Candidates");
        if let Some(list) = body.get(&key).and_then(Value::as_array) {
            let mut text = String::new();
            for c in list {
                match c.get("candidate").and_then(Value::as_str) {
                    Some(s) => text.push_str(s),
                    None => text.push_str("null"),
                }
                text.push('\n');
            }
            std::fs::write(out.join(format!("{name}-{field}-candidates.txt")), text)?;
        }
    }
    if let Some(ua) = body.get("ua").and_then(Value::as_str) {
        eprintln!("{name}: {ua}");
    }
    Ok(())
}

fn handle(stream: TcpStream, shared: &Mutex<Shared>) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length.min(4 << 20)];
    reader.read_exact(&mut body)?;
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |k: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_owned())
    };
    let (ctype, reply) = match path {
        "/" => ("text/html", PAGE.to_owned()),
        "/scenarios" => {
            let b = param("b").unwrap_or_default();
            let list = lock(shared).scenarios.get(&b).cloned().unwrap_or(json!([]));
            ("application/json", list.to_string())
        }
        "/result" => {
            let name = param("name").unwrap_or_default().replace("%2F", "");
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            lock(shared).results.insert(name, value);
            ("text/plain", "ok".to_owned())
        }
        "/done" => {
            let b = param("b").unwrap_or_default();
            lock(shared).done.push(b);
            ("text/plain", "ok".to_owned())
        }
        _ => ("text/plain", String::new()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    Ok(())
}

//! `onionrtc serve` end to end with a real browser: the binary runs the relay
//! and the signaling server on free loopback ports; one headless Chromium
//! opens the web app twice in one room (fake camera and microphone). The call
//! must connect through the relay only, the pages must receive no address
//! but the relay's, the relay's metrics and the stored statistics must show
//! the call, a third page must connect after one hangs up, and SIGTERM must
//! stop the server cleanly. Every wait is bounded; the browser and the
//! server are killed by PID on any failure. Submodules: `group` (four tabs
//! in a group call, chat, screen sharing, room-full), `firefox` (Firefox
//! ESR with Chromium), `speech` (no speech activity in clear),
//! `sip_gateway` (a JsSIP browser and a baresip phone through the
//! WebRTC↔RTP gateway).

// Helpers outside `#[test]` fns unwrap too: a panic in a test is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::chromium::{serde_json, Chromium, LaunchOptions, Page, Value};
use testkit::Proc;

#[path = "serve/baresip.rs"]
mod baresip;
#[path = "serve/cluster.rs"]
mod cluster;
#[path = "serve/firefox.rs"]
mod firefox;
#[path = "serve/group.rs"]
mod group;
#[path = "serve/sip_gateway.rs"]
mod sip_gateway;
#[path = "serve/sip_rtp.rs"]
mod sip_rtp;
#[path = "serve/sip.rs"]
mod sip_ws;
#[path = "serve/sipp.rs"]
mod sipp;
#[path = "serve/speech.rs"]
mod speech;
#[path = "serve/wellknown.rs"]
mod wellknown;

#[path = "common/ws.rs"]
mod ws_common;

#[cfg(feature = "call")]
#[path = "serve/call.rs"]
mod call;
#[cfg(feature = "call")]
#[path = "serve/call_audio.rs"]
mod call_audio;

/// Both pages must be `connected` within this.
const CONNECT: Duration = Duration::from_secs(30);
/// The server must print its URL within this.
const STARTUP: Duration = Duration::from_secs(20);
/// Lines of the server's stderr kept for failure messages.
const STDERR_LINES: usize = 80;

/// The running `onionrtc serve`.
struct Server {
    proc: Proc,
    web: SocketAddr,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts `serve` with `config` and waits (bounded) for its one line.
    fn start(config: &Path, data_dir: &Path) -> Server {
        Self::start_logged(config, data_dir, "info", None)
    }

    /// [`Server::start`] with `RUST_LOG=level`, and every stderr line also
    /// written to `log` when given.
    fn start_logged(config: &Path, data_dir: &Path, level: &str, log: Option<&Path>) -> Server {
        Self::start_env(config, data_dir, level, log, &[])
    }

    /// [`Server::start_logged`] with extra environment variables.
    fn start_env(
        config: &Path,
        data_dir: &Path,
        level: &str,
        log: Option<&Path>,
        env: &[(&str, &Path)],
    ) -> Server {
        let mut log = log.map(|p| std::fs::File::create(p).unwrap());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_onionrtc"));
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("ONIONRTC_AUTH_SECRET")
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(&mut cmd).unwrap();
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let pipe = proc.0.stderr.take().unwrap();
        let tail = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let mut t = tail.lock().unwrap();
                if t.len() == STDERR_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = proc.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(STARTUP);
        let server = |web| Server {
            proc,
            web,
            stderr: Arc::clone(&stderr),
        };
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let s = server(SocketAddr::from(([127, 0, 0, 1], 0)));
                panic!(
                    "no `Open http://…/` line within {STARTUP:?} ({e}); stderr:\n{}",
                    s.stderr_tail()
                );
            }
        };
        let addr = line
            .strip_prefix("Open http://")
            .and_then(|r| r.strip_suffix('/'))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line on stdout: {line:?}"));
        // Nothing else may appear on stdout.
        std::thread::spawn(move || {
            for extra in rx {
                eprintln!("UNEXPECTED stdout line from serve: {extra}");
            }
        });
        server(addr)
    }

    fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().unwrap();
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.web)
    }

    /// A bounded `GET` from loopback with the operator token of
    /// `data_dir/admin-token`: status and body.
    fn get_as_operator(&self, path: &str, data_dir: &Path) -> (u16, String) {
        let token = std::fs::read_to_string(data_dir.join("admin-token")).unwrap();
        self.get_with(path, &format!("Authorization: Bearer {}\r\n", token.trim()))
    }

    /// A bounded `GET` from loopback: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        self.get_with(path, "")
    }

    /// [`Server::get`] with extra header lines (each ending in CRLF).
    fn get_with(&self, path: &str, extra: &str) -> (u16, String) {
        self.request("GET", path, extra, "")
    }

    /// A bounded request from loopback with extra header lines and a body
    /// (sent with its Content-Length when not empty): status and body.
    fn request(&self, method: &str, path: &str, extra: &str, body: &str) -> (u16, String) {
        let limit = Duration::from_secs(5);
        let mut s = TcpStream::connect_timeout(&self.web, limit).unwrap();
        s.set_read_timeout(Some(limit)).unwrap();
        s.set_write_timeout(Some(limit)).unwrap();
        let length = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra}{length}\r\n{body}",
            self.web
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, body)
    }

    /// SIGTERM, then the exit status within a bound.
    fn terminate(mut self) -> Result<std::process::ExitStatus, String> {
        let pid = self.proc.pid().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("kill -TERM failed".into());
        }
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            self.proc.0.try_wait().ok().flatten()
        })
        .ok_or_else(|| "serve did not exit within 10 s of SIGTERM".to_owned())
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The sum of a metric's samples (every label set), 0 when absent.
/// Writes a mono 16-bit PCM WAV of `rate` Hz; `data` is little-endian samples.
fn write_pcm_wav(path: &Path, rate: u32, data: &[u8]) {
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(data);
    std::fs::write(path, wav).unwrap();
}

fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.split_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.trim().parse::<u64>().ok()
        })
        .sum()
}

/// The fields of the per-second summary (docs/signaling.md).
const STATS_FIELDS: [&str; 15] = [
    "ts",
    "state",
    "rtt",
    "jitter",
    "packetsLost",
    "packetsReceived",
    "jitterBufferDelay",
    "jitterBufferEmittedCount",
    "bytesSent",
    "bytesReceived",
    "bitrateIn",
    "bitrateOut",
    "localCandidateType",
    "remoteCandidateType",
    "relayProtocol",
];

/// A room name no other run shares.
fn random_room() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("e2e-{:x}-{}", nanos, std::process::id())
}

/// What one page reports about its selected candidate pair and media.
const PAGE_STATS: &str = r#"(async () => {
  const pc = window.onionrtc.pc;
  if (!pc) return null;
  const r = await pc.getStats();
  let pair = null;
  r.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = r.get(s.selectedCandidatePairId);
  });
  const local = pair ? r.get(pair.localCandidateId) : null;
  const remote = pair ? r.get(pair.remoteCandidateId) : null;
  let inbound = 0;
  r.forEach((s) => { if (s.type === 'inbound-rtp') inbound += s.bytesReceived || 0; });
  return {
    local: local ? local.candidateType : null,
    remote: remote ? remote.candidateType : null,
    localAddress: local ? (local.address || local.ip) : null,
    relayProtocol: local ? local.relayProtocol : null,
    inbound,
  };
})()"#;

/// Everything a page may say about itself when a check fails.
fn page_report(page: &mut Page) -> String {
    let state = page
        .evaluate(
            "JSON.stringify({state: window.onionrtc.state, stats: window.onionrtc.stats, \
             notice: document.getElementById('notice').textContent})",
        )
        .unwrap_or_else(Value::String);
    format!("{state}\nconsole: {:#?}", page.console())
}

/// Fails the test with the pages' and the server's view.
fn fail(what: &str, pages: &mut [Page], server: &Server) -> ! {
    let mut text = format!("{what}\n");
    for (i, p) in pages.iter_mut().enumerate() {
        text.push_str(&format!("--- page {i}: {}\n", page_report(p)));
    }
    text.push_str(&format!("--- serve stderr:\n{}", server.stderr_tail()));
    panic!("{text}");
}

fn wait_connected(page: &mut Page, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    page.wait_for(
        "window.onionrtc.state === 'connected'",
        left.max(Duration::from_secs(1)),
    )
    .map(|_| ())
}

/// The page's selected pair is relay on both ends; inbound media grows.
fn check_media(page: &mut Page) -> Result<Value, String> {
    let first = page.evaluate(PAGE_STATS)?;
    for end in ["local", "remote"] {
        if first[end] != "relay" {
            return Err(format!("{end} candidate type is not relay: {first}"));
        }
    }
    let b1 = first["inbound"].as_u64().unwrap_or(0);
    let grown = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(300), || {
        let v = page.evaluate(PAGE_STATS).ok()?;
        (v["inbound"].as_u64().unwrap_or(0) > b1).then_some(v)
    });
    grown.ok_or_else(|| format!("inbound bytes do not grow from {b1}: {first}"))
}

/// Every IPv4 address written in `text`.
fn ipv4_literals(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|t| t.split('.').count() == 4 && t.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .collect()
}

/// What the server forwarded to a page holds no caller address: relay
/// candidates only, `raddr 0.0.0.0`, `c=` and `a=rtcp` on 0.0.0.0, and no
/// IPv4 address but the relay's (127.0.0.1) and 0.0.0.0.
fn check_received(received: &Value) -> Result<(), String> {
    let entries = received
        .as_array()
        .ok_or_else(|| format!("window.onionrtc.received is not an array: {received}"))?;
    let mut descriptions = 0;
    let mut relay_candidates = 0;
    let mut lines: Vec<String> = Vec::new();
    for e in entries {
        match e["type"].as_str() {
            Some("offer" | "answer") => {
                descriptions += 1;
                let sdp = e["sdp"].as_str().ok_or_else(|| format!("no sdp: {e}"))?;
                lines.extend(sdp.lines().map(str::to_owned));
            }
            Some("candidate") => {
                if let Some(c) = e["candidate"].as_str() {
                    lines.push(format!("a={c}"));
                }
            }
            _ => return Err(format!("unexpected entry {e}")),
        }
    }
    if descriptions == 0 {
        return Err(format!("no offer or answer received: {received}"));
    }
    for l in &lines {
        let l = l.trim_end();
        if let Some(c) = l.strip_prefix("a=candidate:") {
            let t: Vec<&str> = c.split(' ').collect();
            let after = |k: &str| t.iter().position(|x| *x == k).and_then(|i| t.get(i + 1));
            if after("typ") != Some(&"relay") {
                return Err(format!("a non-relay candidate reached the page: {l}"));
            }
            if let Some(raddr) = after("raddr") {
                if *raddr != "0.0.0.0" {
                    return Err(format!("raddr is not 0.0.0.0: {l}"));
                }
            }
            if c.contains(".local ") {
                return Err(format!("an mDNS candidate reached the page: {l}"));
            }
            relay_candidates += 1;
        } else if l.starts_with("c=") && l != "c=IN IP4 0.0.0.0" && l != "c=IN IP6 ::" {
            return Err(format!("a c= line with an address: {l}"));
        } else if let Some(r) = l.strip_prefix("a=rtcp:") {
            if !(r.ends_with(" IN IP4 0.0.0.0") || r.ends_with(" IN IP6 ::") || !r.contains(' ')) {
                return Err(format!("an a=rtcp line with an address: {l}"));
            }
        }
        for ip in ipv4_literals(l) {
            if ip != "0.0.0.0" && ip != "127.0.0.1" {
                return Err(format!("address {ip} reached the page: {l}"));
            }
        }
    }
    if relay_candidates == 0 {
        return Err(format!("no relay candidate reached the page: {received:#}"));
    }
    Ok(())
}

/// Writes `DIR/onionrtc.toml`: the relay on free loopback port(s) for
/// `protos` (`udp`, `tcp`), the web listener on another. Returns the file,
/// the TURN port and the web port.
fn serve_config(dir: &Path, protos: &[&str]) -> (std::path::PathBuf, u16, u16) {
    let turn_port = testkit::free_port();
    let web_port = loop {
        let p = testkit::free_port();
        if p != turn_port {
            break p;
        }
    };
    let listen: Vec<String> = protos
        .iter()
        .map(|p| format!("\"{p}://127.0.0.1:{turn_port}\""))
        .collect();
    let config = dir.join("onionrtc.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nlisten = [{}]\n[serve]\nlisten = \"127.0.0.1:{web_port}\"\n",
            listen.join(", ")
        ),
    )
    .unwrap();
    (config, turn_port, web_port)
}

/// `serve` with TURN on UDP, TCP and TLS (a self-signed certificate for
/// 127.0.0.1: its SPKI pin is returned) and `extra` lines in `[serve]`.
fn serve_with_tls(dir: &Path, extra: &str) -> (Server, String, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let spki = testkit::chromium::spki_sha256_base64(&ck.cert.pem()).unwrap();
    let turn = testkit::free_port();
    let tls = loop {
        let p = testkit::free_port();
        if p != turn {
            break p;
        }
    };
    let web = loop {
        let p = testkit::free_port();
        if p != turn && p != tls {
            break p;
        }
    };
    let config = dir.join("onionrtc.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nlisten = [\"udp://127.0.0.1:{turn}\", \"tcp://127.0.0.1:{turn}\", \
             \"tls://127.0.0.1:{tls}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             [serve]\nlisten = \"127.0.0.1:{web}\"\n{extra}\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    )
    .unwrap();
    let data = dir.join("data");
    (Server::start(&config, &data), spki, data)
}

#[test]
fn two_tabs_call_through_serve() {
    if !testkit::require_tool("chromium", &["--version"]) {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (config, _, web_port) = serve_config(dir.path(), &["udp", "tcp"]);
    let data_dir = dir.path().join("data");
    let server = Server::start(&config, &data_dir);
    assert_eq!(server.web.port(), web_port);

    // The data directory and the generated secret, private to this user.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&data_dir.join("turn-secret")), 0o600);
    assert_eq!(mode(&data_dir.join("admin-token")), 0o600);
    // Operator views need the token, loopback or not.
    for path in ["/metrics", "/api/calls", "/calls"] {
        assert_eq!(server.get(path).0, 401, "{path}");
    }
    let (status, body) = server.get("/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));

    let browser = Chromium::launch(LaunchOptions::default()).unwrap();
    let room = random_room();
    let page_url = server.url(&format!("/?room={room}"));
    // pages[i] is the i-th page opened while it is open.
    let mut pages = vec![
        browser.new_page(&page_url).unwrap(),
        browser.new_page(&page_url).unwrap(),
    ];

    // Both connect, through the relay only, and media flows both ways.
    let deadline = Instant::now() + CONNECT;
    for i in 0..2 {
        if let Err(e) = wait_connected(&mut pages[i], deadline) {
            fail(&format!("page {i} not connected: {e}"), &mut pages, &server);
        }
    }
    let connected_in = started.elapsed();
    let mut media = Vec::new();
    for i in 0..2 {
        match check_media(&mut pages[i]) {
            Ok(v) => media.push(v),
            Err(e) => fail(&format!("page {i}: {e}"), &mut pages, &server),
        }
    }

    // The relay counts the call: two live allocations, bytes relayed.
    let metrics = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let (status, m) = server.get_as_operator("/metrics", &data_dir);
        (status == 200
            && metric_sum(&m, "onionrtc_allocations_current") >= 2
            && metric_sum(&m, "onionrtc_relayed_bytes_total") > 0)
            .then_some(m)
    });
    let Some(metrics) = metrics else {
        let (status, m) = server.get_as_operator("/metrics", &data_dir);
        fail(
            &format!("GET /metrics ({status}) lacks >= 2 allocations and relayed bytes:\n{m}"),
            &mut pages,
            &server,
        );
    };

    // What each page received carries no address of the other.
    for i in 0..2 {
        let received = pages[i].evaluate("window.onionrtc.received").unwrap();
        if let Err(e) = check_received(&received) {
            fail(&format!("page {i}: {e}"), &mut pages, &server);
        }
    }

    // The server found nothing wrong with what the pages sent, and the
    // pages handled everything it forwarded.
    for i in 0..2 {
        let console = pages[i].console();
        if let Some(l) = console
            .iter()
            .find(|l| l.contains("signaling error") || l.contains("failed:"))
        {
            fail(&format!("page {i} console: {l}"), &mut pages, &server);
        }
    }

    // The page's own summary has exactly the documented fields.
    // (sampled once a second: wait for one taken while connected).
    let stats = match pages[0].wait_for(
        "(s => s && s.state === 'connected' && s.localCandidateType ? s : null)\
         (window.onionrtc.stats)",
        Duration::from_secs(5),
    ) {
        Ok(v) => v,
        Err(e) => fail(&format!("page 0 summary: {e}"), &mut pages, &server),
    };
    let mut got: Vec<&str> = stats
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    got.sort_unstable();
    let mut want = STATS_FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "stats summary fields: {stats}");
    assert_eq!(stats["localCandidateType"], "relay", "{stats}");

    // The server stored statistics for this call.
    // (Found by the room's name: only its keyed hash is stored.)
    let calls_of_room = format!("/api/calls?room={room}");
    let call = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(300), || {
        let (status, body) = server.get_as_operator(&calls_of_room, &data_dir);
        if status != 200 {
            return None;
        }
        let calls: Value = serde_json::from_str(&body).ok()?;
        calls
            .as_array()?
            .iter()
            .find(|c| c["samples"].as_u64().unwrap_or(0) > 0)
            .cloned()
    });
    let Some(call) = call else {
        let (status, body) = server.get_as_operator(&calls_of_room, &data_dir);
        fail(
            &format!("GET /api/calls ({status}) shows no samples for room {room}: {body}"),
            &mut pages,
            &server,
        );
    };

    // One hangs up: it is closed, the other waits, then calls the next one
    // with a fresh peer connection.
    let hung_up = pages[1]
        .evaluate("document.getElementById('hangup').click(); window.onionrtc.state")
        .unwrap();
    if hung_up != "closed" || pages[1].evaluate("window.onionrtc.pc").unwrap() != Value::Null {
        fail(
            &format!("page 1 after hang-up: {hung_up}"),
            &mut pages,
            &server,
        );
    }
    drop(pages.pop());
    if let Err(e) = pages[0].wait_for(
        "window.onionrtc.state === 'waiting' && window.onionrtc.pc === null",
        Duration::from_secs(10),
    ) {
        fail(&format!("page 0 after peer-left: {e}"), &mut pages, &server);
    }
    pages.push(browser.new_page(&page_url).unwrap());
    let deadline = Instant::now() + CONNECT;
    for i in 0..2 {
        if let Err(e) = wait_connected(&mut pages[i], deadline) {
            fail(
                &format!("after a peer left, page {i} not connected to the next: {e}"),
                &mut pages,
                &server,
            );
        }
    }
    if let Err(e) = check_media(&mut pages[1]) {
        fail(&format!("the next peer: {e}"), &mut pages, &server);
    }

    drop(pages);
    drop(browser);
    let tail = server.stderr_tail();
    if std::env::var_os("ONIONRTC_PRINT_SERVE_LOG").is_some() {
        eprintln!("--- serve stderr (tail):\n{tail}");
    }
    match server.terminate() {
        Ok(status) => assert!(status.success(), "serve exited with {status}:\n{tail}"),
        Err(e) => panic!("{e}:\n{tail}"),
    }
    eprintln!(
        "serve e2e: connected in {connected_in:?}, total {:?}; media {media:?}; call {call}; \
         allocations {}, relayed bytes {}",
        started.elapsed(),
        metric_sum(&metrics, "onionrtc_allocations_current"),
        metric_sum(&metrics, "onionrtc_relayed_bytes_total"),
    );
}

//! Privacy end to end: the `onionrtc` binary (`serve` in a server network
//! namespace, `connect` in a caller's namespace) and headless Chromium in
//! client namespaces of a [`testkit::topology::Topology`]. Every address
//! exists only inside namespaces these tests make.
//!
//! - `tor_call`: a private caller (connector through a private Tor network)
//!   and a direct caller in one call; the private caller's address must
//!   appear in no artifact of the servers or of the other caller.
//! - `restricted`: a caller behind a firewall that lets only TCP to port
//!   443 out calls through the connector in `--via direct` mode.
//! - `proxy`: Debian's nginx as the reverse proxy in front of `serve`:
//!   client addresses, operator tokens, join limits per client, 421.
//! - `exhaustion`: one address floods the web listener; another still
//!   calls and the relay still allocates.
//! - `onion`: `serve --onion` on a private Tor network of five relays: a
//!   caller through the .onion (embedded Tor) and a direct caller; per-circuit
//!   identities; the onion address across restarts.
//!
//! Support here: processes in namespaces with their output kept, Chromium
//! launched inside a namespace, the relay log's allocation lines, the pages'
//! `getStats()` and received SDP, the statistics store.

// Helpers outside `#[test]` fns unwrap too: a panic in a test is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod exhaustion;
mod onion;
mod proxy;
mod restricted;
mod tor_call;
#[cfg(feature = "call")]
mod tor_cli_call;

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::chromium::{Chromium, LaunchOptions, Page, Value};
use testkit::topology::Netns;
use testkit::Proc;

/// The server namespace's address (relay, relay sockets, web).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The relay's UDP and TCP TURN port.
pub const TURN_PORT: u16 = 3478;
/// Both pages must be `connected` within this.
pub const CONNECT: Duration = Duration::from_secs(45);
/// Lines of a process's stderr kept (all of a test's run fits).
const MAX_LINES: usize = 200_000;

/// The `onionrtc` binary of this package.
pub fn onionrtc() -> &'static str {
    env!("CARGO_BIN_EXE_onionrtc")
}

/// A room name no other run shares.
pub fn random_room() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("privacy-{:x}-{}", nanos, std::process::id())
}

// ---- certificates ----------------------------------------------------------

/// A self-signed certificate for the relay's TLS listener.
#[derive(Debug)]
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// base64 SHA-256 of its SubjectPublicKeyInfo (`--relay-spki`).
    pub spki: String,
}

pub fn write_cert(dir: &Path, ip: Ipv4Addr) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec![ip.to_string()]).unwrap();
    let (cert, key) = (dir.join("relay-cert.pem"), dir.join("relay-key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let spki = testkit::chromium::spki_sha256_base64(&ck.cert.pem()).unwrap();
    Cert { cert, key, spki }
}

// ---- processes in namespaces ----------------------------------------------

/// A child process (started in a namespace, killed by PID on drop) whose
/// stdout lines arrive on a channel and whose stderr is kept whole.
#[derive(Debug)]
pub struct Logged {
    name: String,
    proc: Proc,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    /// Starts `cmd` (made with [`Netns::command`]) in `ns`.
    pub fn spawn(name: &str, ns: &Netns, mut cmd: Command) -> Logged {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let proc = ns
            .spawn(cmd)
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self::from_proc(name, proc)
    }

    /// Starts `cmd` (made with [`testkit::topology::tied_command`]) in
    /// this test's own namespace.
    pub fn spawn_here(name: &str, mut cmd: Command) -> Logged {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let proc = testkit::topology::spawn_tied(cmd)
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self::from_proc(name, proc)
    }

    fn from_proc(name: &str, mut proc: Proc) -> Logged {
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = proc.0.stderr.take().unwrap();
        let keep = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut v = keep.lock().unwrap();
                if v.len() < MAX_LINES {
                    v.push(line);
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = proc.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Logged {
            name: name.to_owned(),
            proc,
            stdout: rx,
            stderr,
        }
    }

    /// The first stdout line starting with `prefix`, within `limit`
    /// (earlier lines are skipped); panics with the stderr otherwise.
    pub fn wait_line(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => panic!(
                    "{}: no stdout line {prefix:?} within {limit:?} ({e}); status {:?}; stderr:\n{}",
                    self.name,
                    self.proc.0.try_wait(),
                    self.stderr_tail(60)
                ),
            }
        }
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The last `n` stderr lines.
    pub fn stderr_tail(&self, n: usize) -> String {
        let v = self.stderr.lock().unwrap();
        v[v.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM by PID, then the exit status within `limit` (`None`: still
    /// running; it is killed on drop).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let pid = self.proc.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = testkit::wait_until(limit, Duration::from_millis(50), || {
            self.proc.0.try_wait().ok().flatten()
        });
        // Let the reader threads take the last lines.
        std::thread::sleep(Duration::from_millis(200));
        status
    }
}

/// Writes `DIR/onionrtc.toml`: the relay on the server's address (UDP and
/// TCP on `TURN_PORT`, TLS on 443 with `cert`, client addresses logged),
/// the web listener on `web`, and `serve_extra` lines in `[serve]`.
/// Returns the file.
pub fn write_server_config(dir: &Path, cert: &Cert, web: SocketAddr, serve_extra: &str) -> PathBuf {
    let config = dir.join("onionrtc.toml");
    std::fs::write(
        &config,
        format!(
            r#"[relay]
listen = ["udp://{SERVER_IP}:{TURN_PORT}", "tcp://{SERVER_IP}:{TURN_PORT}", "tls://{SERVER_IP}:443"]
relay_ip = "{SERVER_IP}"
tls_cert = "{}"
tls_key = "{}"
log_client_addresses = true

[serve]
listen = "{web}"
{serve_extra}
"#,
            cert.cert.display(),
            cert.key.display()
        ),
    )
    .unwrap();
    config
}

/// `onionrtc serve --config CONFIG --data-dir DATA` in `ns` (info logs),
/// once it has printed its `Open http://…/` line.
pub fn start_serve(ns: &Netns, config: &Path, data: &Path) -> Logged {
    let mut cmd = ns.command(onionrtc());
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env_remove("ONIONRTC_AUTH_SECRET")
        .env("RUST_LOG", "info");
    let mut serve = Logged::spawn("serve", ns, cmd);
    serve.wait_line("Open http://", Duration::from_secs(20));
    serve
}

// ---- a SOCKS port on a caller's loopback ------------------------------------

/// Makes a TCP service of this namespace (the private Tor network's SOCKS
/// port) appear on `127.0.0.1:PORT` inside another namespace, as a tor
/// running on the caller's own machine would: the listener is made inside
/// that namespace, the onward connections here. Stopped on drop.
///
/// [`LoopbackBridge::stall`] stalls the connections open now to one SOCKS
/// target port: from then on their bytes are read and dropped both ways,
/// as a circuit whose relay stopped forwarding (a fault a test injects).
#[derive(Debug)]
pub struct LoopbackBridge {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    conns: Conns,
}

/// The bridge's connections: the SOCKS target port once known (0 before),
/// and whether the connection is stalled.
type Conns = Arc<Mutex<Vec<(Arc<AtomicU16>, Arc<AtomicBool>)>>>;

impl LoopbackBridge {
    pub fn start(ns: &Netns, port: u16, target: SocketAddr) -> LoopbackBridge {
        let listener = ns
            .run_in(|| TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
            .unwrap()
            .unwrap_or_else(|e| panic!("bridge on 127.0.0.1:{port} in {}: {e}", ns.name()));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let conns: Conns = Arc::default();
        let list = Arc::clone(&conns);
        // Spawned from this thread: onward connections are made here.
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inside, _)) => {
                        let port = Arc::new(AtomicU16::new(0));
                        let stalled = Arc::new(AtomicBool::new(false));
                        {
                            let mut l = list.lock().unwrap();
                            l.retain(|(p, _)| Arc::strong_count(p) > 1);
                            l.push((Arc::clone(&port), Arc::clone(&stalled)));
                        }
                        std::thread::spawn(move || bridge_one(inside, target, &port, &stalled));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        LoopbackBridge {
            stop,
            thread: Some(thread),
            conns,
        }
    }

    /// Stalls every open connection whose SOCKS request named `port`;
    /// returns how many.
    pub fn stall(&self, port: u16) -> usize {
        let l = self.conns.lock().unwrap();
        let mut n = 0;
        for (p, stalled) in l.iter() {
            if Arc::strong_count(p) > 1 && p.load(Ordering::Relaxed) == port {
                stalled.store(true, Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }
}

impl Drop for LoopbackBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The destination port of a SOCKS5 CONNECT in the client's first bytes
/// (greeting, optional username/password, request), once they are all there.
pub fn socks_connect_port(b: &[u8]) -> Option<u16> {
    if *b.first()? != 5 {
        return None;
    }
    let mut i = 2 + usize::from(*b.get(1)?);
    if *b.get(i)? == 1 {
        // RFC 1929 username/password.
        i += 2 + usize::from(*b.get(i + 1)?);
        i += 1 + usize::from(*b.get(i)?);
    }
    if *b.get(i)? != 5 || *b.get(i + 1)? != 1 {
        return None;
    }
    let addr = match *b.get(i + 3)? {
        1 => 4,
        3 => 1 + usize::from(*b.get(i + 4)?),
        4 => 16,
        _ => return None,
    };
    let p = b.get(i + 4 + addr..i + 6 + addr)?;
    Some(u16::from_be_bytes([p[0], p[1]]))
}

/// Copies `from` to `to` until either ends; while `stalled`, bytes are
/// read and dropped. With `port`, notes the SOCKS target port from the
/// first bytes.
fn pump(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool, port: Option<&AtomicU16>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut head: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(p) = port {
            if p.load(Ordering::Relaxed) == 0 && head.len() < 1024 {
                head.extend_from_slice(&buf[..n]);
                if let Some(target) = socks_connect_port(&head) {
                    p.store(target, Ordering::Relaxed);
                }
            }
        }
        if stalled.load(Ordering::Relaxed) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn bridge_one(
    inside: TcpStream,
    target: SocketAddr,
    port: &Arc<AtomicU16>,
    stalled: &Arc<AtomicBool>,
) {
    let _ = inside.set_nonblocking(false);
    let Ok(outside) = TcpStream::connect_timeout(&target, Duration::from_secs(10)) else {
        return;
    };
    let (Ok(in_r), Ok(out_w)) = (inside.try_clone(), outside.try_clone()) else {
        return;
    };
    let (up_port, up_stalled) = (Arc::clone(port), Arc::clone(stalled));
    let up = std::thread::spawn(move || pump(in_r, out_w, &up_stalled, Some(&up_port)));
    pump(outside, inside, stalled, None);
    let _ = up.join();
}

// ---- the relay's log ---------------------------------------------------------

/// One `allocation created` line of the relay's log.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub client: SocketAddr,
    pub transport: String,
    pub relayed: Vec<SocketAddr>,
    pub line: String,
}

/// The `allocation created client=IP:PORT transport=T relayed=A,B …` lines
/// (client addresses in clear: `log_client_addresses = true`).
pub fn allocations(log: &[String]) -> Vec<Allocation> {
    log.iter()
        .filter(|l| l.contains("allocation created"))
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap_or_else(|| panic!("no {k} in {l:?}"))
            };
            Allocation {
                client: field("client=")
                    .parse()
                    .unwrap_or_else(|_| panic!("client= is not IP:PORT in {l:?}")),
                transport: field("transport=").to_owned(),
                relayed: field("relayed=")
                    .split(',')
                    .filter_map(|a| a.parse().ok())
                    .collect(),
                line: l.clone(),
            }
        })
        .collect()
}

/// The allocation whose relayed address is `relayed`.
pub fn allocation_of(all: &[Allocation], relayed: SocketAddr) -> Option<&Allocation> {
    all.iter().find(|a| a.relayed.contains(&relayed))
}

// ---- Chromium in a namespace -------------------------------------------------

/// A headless Chromium started inside a namespace, with one page. The
/// browser, its DevTools endpoint (127.0.0.1 of that namespace) and the
/// CDP sockets all live there.
///
/// Killed by PID on drop. It is also started under `setpriv --pdeathsig
/// KILL` from a keeper thread (inside the namespace) that lives as long as
/// this value, so it dies with the test binary even when that is killed
/// without unwinding (e.g. at the group's time limit).
#[derive(Debug)]
pub struct Browser {
    pub name: String,
    pub page: Page,
    chromium: Option<Chromium>,
    keeper: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    _wrapper: tempfile::TempDir,
}

impl Browser {
    /// Launches Chromium in `ns` with `extra` flags and opens `url`.
    pub fn open(ns: &Netns, name: &str, extra: &[String], url: &str) -> Browser {
        let wrapper_dir = tempfile::tempdir().unwrap();
        let wrapper = wrapper_dir.path().join("chromium");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec setpriv --pdeathsig KILL -- '{}' \"$@\"\n",
                testkit::chromium::chromium_binary().display()
            ),
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let opts = LaunchOptions {
            binary: Some(wrapper),
            extra_args: extra.to_vec(),
            ..LaunchOptions::default()
        };
        let url = url.to_owned();
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        // A thread spawned inside the namespace stays in it.
        let keeper = ns
            .run_in(move || {
                std::thread::spawn(move || {
                    let launched = Chromium::launch(opts).and_then(|c| {
                        let p = c.new_page(&url).map_err(|e| {
                            format!("opening {url}: {e}; stderr tail:\n{}", c.stderr_tail())
                        })?;
                        Ok((c, p))
                    });
                    let ok = launched.is_ok();
                    let _ = tx.send(launched);
                    if ok {
                        // Until the Browser is dropped (its sender with it).
                        let _ = stop_rx.recv();
                    }
                })
            })
            .unwrap();
        let (chromium, page) = rx
            .recv()
            .unwrap_or_else(|_| Err("the launching thread panicked".into()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Browser {
            name: name.to_owned(),
            page,
            chromium: Some(chromium),
            keeper: Some((stop_tx, keeper)),
            _wrapper: wrapper_dir,
        }
    }

    /// What the page says about itself (for failure messages).
    pub fn report(&mut self) -> String {
        let state = self
            .page
            .evaluate(
                "JSON.stringify({url: location.href, state: window.onionrtc.state, \
                 stats: window.onionrtc.stats, \
                 notice: document.getElementById('notice').textContent})",
            )
            .unwrap_or_else(Value::String);
        format!(
            "--- {}: {state}\nconsole: {:#?}\nchromium stderr tail:\n{}",
            self.name,
            self.page.console(),
            self.chromium
                .as_ref()
                .map(Chromium::stderr_tail)
                .unwrap_or_default()
        )
    }
}

/// The two pages of a call: `a_name` in `private` through the connector's
/// web proxy (`http://127.0.0.1:8081`), `b_name` in `direct` on `site`
/// (`http://IP:PORT`, treated as a secure context: no camera otherwise),
/// both in `room`.
pub fn open_call(
    (private, a_name): (&Netns, &str),
    (direct, b_name): (&Netns, &str),
    site: &str,
    room: &str,
) -> [Browser; 2] {
    let a = Browser::open(
        private,
        a_name,
        &[],
        &format!("http://127.0.0.1:8081/?room={room}"),
    );
    let b = Browser::open(
        direct,
        b_name,
        &[format!("--unsafely-treat-insecure-origin-as-secure={site}")],
        &format!("{site}/?room={room}"),
    );
    [a, b]
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Kill by PID first, then let the keeper thread end.
        drop(self.chromium.take());
        if let Some((stop, thread)) = self.keeper.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// Fails the test with every page's and process's view.
pub fn fail(what: &str, browsers: &mut [Browser], procs: &[&Logged]) -> ! {
    let mut text = format!("{what}\n");
    for b in browsers.iter_mut() {
        text.push_str(&b.report());
        text.push('\n');
    }
    for p in procs {
        text.push_str(&format!("--- {} stderr:\n{}\n", p.name, p.stderr_tail(60)));
    }
    panic!("{text}");
}

/// What a page reports about its selected candidate pair and media.
pub const PAGE_STATS: &str = r#"(async () => {
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
    localPort: local ? local.port : null,
    remoteAddress: remote ? (remote.address || remote.ip) : null,
    relayProtocol: local ? local.relayProtocol : null,
    url: local ? local.url : null,
    rtt: pair ? pair.currentRoundTripTime : null,
    inbound,
  };
})()"#;

/// Waits (bounded) for both pages to be `connected`.
pub fn wait_connected(browsers: &mut [Browser], procs: &[&Logged]) {
    let deadline = Instant::now() + CONNECT;
    for i in 0..browsers.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = browsers[i].page.wait_for(
            "window.onionrtc.state === 'connected'",
            left.max(Duration::from_secs(1)),
        );
        if let Err(e) = r {
            let name = browsers[i].name.clone();
            fail(&format!("{name} not connected: {e}"), browsers, procs);
        }
    }
}

/// The page's selected pair is relay/relay and its inbound media grows;
/// returns the pair as [`PAGE_STATS`] reports it.
pub fn check_media(b: &mut Browser) -> Result<Value, String> {
    let first = b.page.evaluate(PAGE_STATS)?;
    for end in ["local", "remote"] {
        if first[end] != "relay" {
            return Err(format!("{end} candidate type is not relay: {first}"));
        }
    }
    let b1 = first["inbound"].as_u64().unwrap_or(0);
    let page = &mut b.page;
    testkit::wait_until(Duration::from_secs(10), Duration::from_millis(300), || {
        let v = page.evaluate(PAGE_STATS).ok()?;
        (v["inbound"].as_u64().unwrap_or(0) > b1).then_some(v)
    })
    .ok_or_else(|| format!("inbound bytes do not grow from {b1}: {first}"))
}

/// [`check_media`] on every page, failing the test with all views.
pub fn check_all_media(browsers: &mut [Browser], procs: &[&Logged]) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..browsers.len() {
        match check_media(&mut browsers[i]) {
            Ok(v) => out.push(v),
            Err(e) => {
                let name = browsers[i].name.clone();
                fail(&format!("{name}: {e}"), browsers, procs);
            }
        }
    }
    out
}

/// The selected pair's local (relayed) address.
pub fn relayed_addr(stats: &Value) -> SocketAddr {
    let ip = stats["localAddress"].as_str().unwrap_or_default();
    let port = stats["localPort"].as_u64().unwrap_or_default();
    format!("{ip}:{port}")
        .parse()
        .unwrap_or_else(|_| panic!("no local address in {stats}"))
}

/// The address `GET /api/whoami` of the page's own site reports.
pub fn whoami(b: &mut Browser) -> (String, Value) {
    let v = b
        .page
        .evaluate("fetch('/api/whoami', {cache: 'no-store'}).then((r) => r.json())")
        .unwrap_or_else(|e| panic!("{}: /api/whoami: {e}", b.name));
    (v["ip"].as_str().unwrap_or_default().to_owned(), v)
}

/// Whether the page shows "private mode", and the TURN URLs its peer
/// connection uses.
pub fn mode_and_urls(b: &mut Browser) -> (bool, Vec<String>) {
    let v = b
        .page
        .evaluate(
            "({mode: !document.getElementById('mode').hidden, \
              urls: window.onionrtc.pc.getConfiguration().iceServers.flatMap((s) => [].concat(s.urls))})",
        )
        .unwrap();
    let urls = v["urls"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (v["mode"] == true, urls)
}

/// Every IPv4 address written in `text`.
pub fn ipv4_literals(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|t| t.split('.').count() == 4 && t.parse::<Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .collect()
}

/// What the server forwarded to a page (`window.onionrtc.received`): the
/// SDP and candidate lines, after checking that there is at least one
/// description and one candidate and that every candidate is a relay
/// candidate.
pub fn received_lines(received: &Value) -> Result<Vec<String>, String> {
    let entries = received
        .as_array()
        .ok_or_else(|| format!("window.onionrtc.received is not an array: {received}"))?;
    let mut lines = Vec::new();
    let (mut descriptions, mut candidates) = (0, 0);
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
    for l in &lines {
        if let Some(c) = l.strip_prefix("a=candidate:") {
            if !c.contains(" typ relay") {
                return Err(format!("a non-relay candidate reached the page: {l}"));
            }
            candidates += 1;
        }
    }
    if descriptions == 0 || candidates == 0 {
        return Err(format!(
            "{descriptions} descriptions and {candidates} candidates received: {received}"
        ));
    }
    Ok(lines)
}

// ---- the statistics store ----------------------------------------------------

/// Every row of every table of the SQLite database `db`, one line per row
/// (`table: v1 | v2 | …`), read directly (not through the server).
pub fn sqlite_rows(db: &Path) -> Vec<String> {
    use rusqlite::types::ValueRef;
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let tables: Vec<String> = {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(!tables.is_empty(), "no tables in {}", db.display());
    let mut out = Vec::new();
    for t in tables {
        let mut st = conn
            .prepare(&format!("SELECT * FROM \"{}\"", t.replace('"', "\"\"")))
            .unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let cells: Vec<String> = (0..n)
                .map(|i| match row.get_ref(i).unwrap() {
                    ValueRef::Null => "NULL".to_owned(),
                    ValueRef::Integer(v) => v.to_string(),
                    ValueRef::Real(v) => v.to_string(),
                    ValueRef::Text(v) | ValueRef::Blob(v) => {
                        String::from_utf8_lossy(v).into_owned()
                    }
                })
                .collect();
            out.push(format!("{t}: {}", cells.join(" | ")));
        }
    }
    out
}

/// The stored form of `room`: its hash under the data directory's
/// `room-key`, as `serve` computes it.
pub fn room_hash(data_dir: &Path, room: &str) -> String {
    let key = std::fs::read_to_string(data_dir.join("room-key")).unwrap();
    signal::store::RoomKey::new(key.trim().as_bytes()).hash(room)
}

/// Samples stored for `room` (both sides; only per-call aggregates are
/// kept, so not per side).
pub fn samples_of_room(db: &Path, room_hash: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT coalesce(sum(samples), 0) FROM calls WHERE room_hash = ?1",
        [room_hash],
        |r| r.get(0),
    )
    .unwrap()
}

/// Every file of `dir` (the data directory: database, WAL, secret), whole.
pub fn files_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Round trips on one UDP flow to `server` (a connector's TURN port, which
/// opens a flow for an Allocate only and forwards TURN requests): the first
/// unauthenticated Allocate (its 401 answer; this builds the flow's
/// circuit), then the median of `n` more on the same flow.
pub fn allocate_rtts(server: SocketAddr, n: usize) -> (Duration, Duration) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rtts = Vec::new();
    for i in 0..=n {
        let mut req = vec![0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(&u32::try_from(i).unwrap().to_be_bytes());
        req.extend_from_slice(b"onionrtt");
        req.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
        let t = Instant::now();
        s.send_to(&req, server).unwrap();
        let mut buf = [0u8; 1500];
        loop {
            let (len, _) = s.recv_from(&mut buf).unwrap();
            if len >= 20 && buf[8..20] == req[8..20] {
                break;
            }
        }
        rtts.push(t.elapsed());
    }
    let first = rtts.remove(0);
    rtts.sort();
    (first, rtts[rtts.len() / 2])
}

// ---- direct connections ----

/// The source address with which a direct TCP connection from `client`
/// reaches a listener of `server` on `server_ip` (a free port): what a
/// bypass of the connector would show the servers.
pub fn direct_source(client: &Netns, server: &Netns, server_ip: Ipv4Addr) -> IpAddr {
    let listener = server
        .run_in(|| TcpListener::bind((server_ip, 0)))
        .unwrap()
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let _conn = client
        .run_in(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap()
        .unwrap_or_else(|e| panic!("{} cannot reach {addr}: {e}", client.name()));
    // Established: it waits in the backlog.
    let (_, peer) = listener.accept().unwrap();
    peer.ip()
}

/// Sends a STUN Binding request from `ns` to `server` over UDP. `Ok` with
/// the XOR-MAPPED-ADDRESS of the answer, `Err` with the send or receive
/// error.
pub fn stun_binding(ns: &Netns, server: SocketAddr) -> Result<SocketAddr, std::io::Error> {
    ns.run_in(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(&std::process::id().to_be_bytes());
        req.extend_from_slice(b"privacy!");
        s.send_to(&req, server)?;
        let mut buf = [0u8; 1500];
        let (n, _) = s.recv_from(&mut buf)?;
        parse_xor_mapped(&buf[..n], &req[8..20])
            .ok_or_else(|| std::io::Error::other("no XOR-MAPPED-ADDRESS in the answer"))
    })?
}

pub fn parse_xor_mapped(msg: &[u8], txid: &[u8]) -> Option<SocketAddr> {
    if msg.len() < 20 || msg[0..2] != [0x01, 0x01] || &msg[8..20] != txid {
        return None;
    }
    let mut i = 20;
    while i + 4 <= msg.len() {
        let kind = u16::from_be_bytes([msg[i], msg[i + 1]]);
        let len = usize::from(u16::from_be_bytes([msg[i + 2], msg[i + 3]]));
        let v = msg.get(i + 4..i + 4 + len)?;
        if kind == 0x0020 && len == 8 && v[1] == 1 {
            let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
            let ip = Ipv4Addr::new(v[4] ^ 0x21, v[5] ^ 0x12, v[6] ^ 0xa4, v[7] ^ 0x42);
            return Some(SocketAddr::from((ip, port)));
        }
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

// ---- plain HTTP and WebSocket clients (call them inside `Netns::run_in`) ----

/// A bounded HTTP/1.0 request (no chunked answers) to `addr`: `target` is
/// `"GET /path"`, `headers` extra lines (`"Name: value"`; `Host` is `addr`
/// unless one is given). Status and body; status 0 if the connection failed.
pub fn http(addr: SocketAddr, target: &str, headers: &[&str]) -> (u16, String) {
    let limit = Duration::from_secs(5);
    let Ok(mut s) = TcpStream::connect_timeout(&addr, limit) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    let mut req = format!("{target} HTTP/1.0\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// The value of an unlabelled metric (or of `name{labels}` written whole).
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[path = "../common/ws.rs"]
mod ws_common;
pub use ws_common::{ws_connect, ws_connect_within, ws_join, ws_recv, ws_send, Ws};

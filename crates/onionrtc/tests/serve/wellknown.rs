//! The one-argument connector (issue 15): `serve` publishes
//! `/.well-known/onionrtc.json`; `onionrtc connect https://SITE` (here
//! `--via direct`, on loopback; through embedded Tor in the privacy
//! tests' `tor_call` group) configures itself from it.
//!
//! ```text
//! connect https://127.0.0.1:NGINX ──TLS (test CA, --ca)──▶ nginx ──▶ serve web
//!         relay from the document ──TLS, pinned to the document──▶ serve's relay
//! ```
//!
//! - The document: version, TURN URLs, the current certificate's pin and
//!   the next key's (`DATA_DIR/tls-next-key.pem`, 0600), no onion yet;
//!   cacheable, the same for everybody.
//! - `connect URL`: ready, the local URL keeps the room, a page through it
//!   is the site's; the relay is pinned to the document's keys.
//! - Negative controls: plain http:// to a non-onion host, a site
//!   certificate no trusted CA signed, and a document over valid HTTPS
//!   whose pin is wrong (nginx answers a tampered copy): all refused.
//!   `--relay-spki` overrides the tampered pin (explicit flags win).
//! - `--open --browser`: the browser gets a fresh profile, removed after
//!   (a stand-in script records its arguments); and with the real Chromium
//!   (`open_starts_chromium_on_a_fresh_profile`, headless through a wrapper
//!   that adds a DevTools port): over CDP, its tab shows the local URL in
//!   private mode and its `--user-data-dir` is a fresh temporary directory
//!   Chromium writes to; after connect stops no process of it is left and
//!   the directory is gone (a Chromium killed outright left files there).
//! - (`call` feature) `onionrtc call https://SITE/?room=…` ↔ another: TURN
//!   over TLS pinned by the document alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use testkit::chromium::{serde_json, Value};
use testkit::nginx::TestCa;
use testkit::Proc;

use super::Server;

/// How long `connect` may take to print its local URL (direct, loopback).
const READY: Duration = Duration::from_secs(30);

/// `serve` (relay TLS with a self-signed certificate) behind nginx (HTTPS
/// with a test CA's certificate for 127.0.0.1).
struct Site {
    server: Server,
    _nginx: Proc,
    https: SocketAddr,
    /// The relay certificate's SPKI pin.
    spki: String,
    data: PathBuf,
    ca: TestCa,
}

fn start_nginx(dir: &Path, upstream: SocketAddr, ca: &TestCa, extra: &str) -> (Proc, SocketAddr) {
    std::fs::create_dir_all(dir).unwrap();
    let https = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let conf = testkit::nginx::proxy_config(dir, https, upstream, Some(ca), extra);
    let mut proc = Proc::spawn(&mut testkit::nginx::command(dir, &conf)).unwrap();
    assert!(
        testkit::process::wait_for_tcp(&mut proc, https, Duration::from_secs(10)),
        "nginx does not listen on {https}: {}",
        std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
    );
    (proc, https)
}

impl Site {
    fn start(dir: &Path) -> Site {
        Self::start_with(dir, false)
    }

    /// With `ws_port`, nginx passes the WebSocket's `Host` with its port
    /// (`$http_host`): serve compares the upgrade's `Origin` with `Host`,
    /// and nginx's usual `$host` drops the port of this non-443 site.
    fn start_with(dir: &Path, ws_port: bool) -> Site {
        let (server, spki, data) = super::serve_with_tls(dir, "");
        let ca = TestCa::new(dir, &["127.0.0.1"]);
        let extra = if ws_port {
            format!(
                "location /ws {{ proxy_pass http://{}; proxy_http_version 1.1; \
                 proxy_set_header Host $http_host; proxy_set_header Upgrade $http_upgrade; \
                 proxy_set_header Connection $connection_upgrade; }}",
                server.web
            )
        } else {
            String::new()
        };
        let (nginx, https) = start_nginx(&dir.join("nginx"), server.web, &ca, &extra);
        Site {
            server,
            _nginx: nginx,
            https,
            spki,
            data,
            ca,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https)
    }
}

/// A bounded HTTP/1.1 GET to `addr`: the head and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let limit = Duration::from_secs(20);
    let mut s = TcpStream::connect_timeout(&addr, limit).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

/// A running `onionrtc connect`: stdout lines on a channel, stderr kept;
/// killed by PID on drop.
struct Connect {
    proc: Proc,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

impl Connect {
    fn spawn(args: &[&str]) -> Connect {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_onionrtc"));
        cmd.arg("connect")
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut proc = Proc::spawn(&mut cmd).unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = proc.0.stderr.take().unwrap();
        let keep = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().take(10_000) {
                let Ok(line) = line else { break };
                keep.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = proc.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().take(10_000) {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Connect {
            proc,
            stdout: rx,
            stderr,
            started,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The local URL of the `Open http://…` line, within `limit`.
    fn ready(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(l) => {
                    if let Some(url) = l.strip_prefix("Open ") {
                        return url.to_owned();
                    }
                }
                Err(e) => {
                    std::thread::sleep(Duration::from_millis(200));
                    panic!(
                        "connect: no `Open` line within {limit:?} ({e}); status {:?}; stderr:\n{}",
                        self.proc.0.try_wait(),
                        self.stderr()
                    )
                }
            }
        }
    }

    /// The exit status within `limit` (the process ends by itself), and
    /// its stderr.
    fn exit(mut self, limit: Duration) -> (Option<i32>, String) {
        let status = testkit::wait_until(limit, Duration::from_millis(50), || {
            self.proc.0.try_wait().ok().flatten()
        });
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(200));
        let status = status.unwrap_or_else(|| panic!("connect still runs:\n{}", self.stderr()));
        (status.code(), self.stderr())
    }

    /// SIGTERM by PID; exits 0 within a bound.
    fn stop(self) -> String {
        let pid = self.proc.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let (code, stderr) = self.exit(Duration::from_secs(15));
        assert_eq!(code, Some(0), "{stderr}");
        stderr
    }
}

/// `connect URL --via direct` on free loopback ports, with `extra` flags.
fn connect_direct(url: &str, extra: &[&str]) -> Connect {
    let mut args = vec![
        url,
        "--via",
        "direct",
        "--listen",
        "127.0.0.1:0",
        "--web-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Connect::spawn(&args)
}

/// The address of a local `http://ADDR/PATH` URL.
fn local_addr(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("http://").unwrap();
    rest[..rest.find('/').unwrap()].parse().unwrap()
}

fn pin_of_key(path: &Path) -> String {
    let pem = std::fs::read(path).unwrap();
    let pin = connector::tls::key_pem_spki_sha256(&pem).unwrap();
    base64::engine::general_purpose::STANDARD.encode(pin)
}

#[test]
fn connect_by_url_configures_itself_from_the_site() {
    if !testkit::require_tool("nginx", &["-v"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path());

    // ---- the document, straight from serve ----
    let (head, body) = get(site.server.web, "/.well-known/onionrtc.json");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert!(
        lower.contains("cache-control: public, max-age=300"),
        "{head}"
    );
    assert!(
        !lower.contains("set-cookie") && !lower.contains("vary"),
        "{head}"
    );
    let doc: Value = serde_json::from_str(&body).unwrap();
    eprintln!("document: {doc}");
    assert_eq!(doc["version"], 1, "{doc}");
    let turns = doc["turn"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|u| u.starts_with("turns:127.0.0.1:") && u.ends_with("?transport=tcp"))
        .unwrap_or_else(|| panic!("no turns: URL in {doc}"))
        .to_owned();
    let tls_port = &turns["turns:127.0.0.1:".len()..turns.len() - "?transport=tcp".len()];
    let next_key = site.data.join("tls-next-key.pem");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&next_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let pins: Vec<&str> = doc["tls_spki_sha256"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(pins, [site.spki.as_str(), &pin_of_key(&next_key)], "{doc}");
    assert_eq!(doc["onion"], serde_json::json!([]), "{doc}");
    // Through nginx the same bytes.
    let ca = site.ca.ca.to_str().unwrap();

    // ---- connect URL: ready, pinned, a page through it ----
    let url = site.url("/?room=wellknown");
    let mut c = connect_direct(&url, &["--ca", ca]);
    let local = c.ready(READY);
    let ready = c.started.elapsed();
    assert!(local.ends_with("/?room=wellknown"), "{local}");
    let (head, page) = get(local_addr(&local), "/?room=wellknown");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    let (_, through) = get(local_addr(&local), "/.well-known/onionrtc.json");
    assert_eq!(through, body, "the document through connect and nginx");
    let stderr = c.stop();
    assert!(stderr.contains("relay TLS pinned to 2 key(s)"), "{stderr}");
    assert!(
        stderr.contains(&format!("relay tls://127.0.0.1:{tls_port} reachable")),
        "{stderr}"
    );
    eprintln!("connect URL --via direct: ready in {ready:?}");

    // ---- negative: a site certificate no trusted CA signed ----
    let c = connect_direct(&url, &[]);
    let (code, stderr) = c.exit(READY);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(!stderr.contains("reachable"), "{stderr}");

    // ---- negative: plain http:// to a host that is not an onion ----
    let plain = format!("http://{}/", site.server.web);
    let c = connect_direct(&plain, &[]);
    let (code, stderr) = c.exit(READY);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("refusing http://{}", site.server.web)),
        "{stderr}"
    );

    // ---- negative: a tampered document (wrong pin) over valid HTTPS ----
    let wrong = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let tampered =
        format!(r#"{{"version":1,"turn":["{turns}"],"tls_spki_sha256":["{wrong}"],"onion":[]}}"#);
    let (_evil, evil) = start_nginx(
        &dir.path().join("nginx-tampered"),
        site.server.web,
        &site.ca,
        &format!(
            "location = /.well-known/onionrtc.json {{ default_type application/json; \
             return 200 '{tampered}'; }}"
        ),
    );
    let evil_url = format!("https://{evil}/");
    let c = connect_direct(&evil_url, &["--ca", ca]);
    let (code, stderr) = c.exit(READY);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the relay's certificate was refused")
            && stderr.contains("does not match the pin"),
        "{stderr}"
    );

    // ---- an explicit flag overrides the document ----
    let mut c = connect_direct(&evil_url, &["--ca", ca, "--relay-spki", &site.spki]);
    c.ready(READY);
    let stderr = c.stop();
    assert!(!stderr.contains("pinned to"), "{stderr}");
    assert!(stderr.contains("reachable"), "{stderr}");

    // ---- --open: a fresh profile, removed afterwards ----
    let args_file = dir.path().join("browser-args");
    let fake = dir.path().join("fake-chromium");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" > '{}'\nexec sleep 60\n",
            args_file.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut c = connect_direct(
        &url,
        &["--ca", ca, "--open", "--browser", fake.to_str().unwrap()],
    );
    let local = c.ready(READY);
    let args = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        std::fs::read_to_string(&args_file)
            .ok()
            .filter(|a| a.ends_with('\n'))
    })
    .unwrap_or_else(|| panic!("the browser was not started:\n{}", c.stderr()));
    let profile = args
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--user-data-dir="))
        .unwrap_or_else(|| panic!("no --user-data-dir: {args}"))
        .to_owned();
    assert!(Path::new(&profile).is_dir(), "{profile}");
    assert!(args.trim_end().ends_with(&local), "{args}");
    c.stop();
    assert!(!Path::new(&profile).exists(), "{profile} left behind");
}

/// `onionrtc call https://SITE/?room=…` twice: each takes the relay's pins
/// from the site's document (no --relay-spki) and connects over TURN/TLS.
#[cfg(feature = "call")]
#[test]
fn call_by_url_pins_the_relay_from_the_document() {
    use super::call::{assert_connected, spawn_call, summary};
    if !testkit::require_tool("nginx", &["-v"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path());
    let url = site.url(&format!("/?room={}", super::random_room()));
    let ca = site.ca.ca.display().to_string();
    let call = |tone: &str| {
        let args: Vec<String> = [
            "--tone",
            tone,
            "--duration",
            "6",
            "--json",
            "--turn-transport",
            "tls",
            "--timeout",
            "40",
            "--ca",
            &ca,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        spawn_call(url.clone(), args)
    };
    let a = call("440");
    std::thread::sleep(Duration::from_millis(300));
    let b = call("1000");
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let (va, vb) = (summary(&a), summary(&b));
    eprintln!("call by URL: A {va}\nB {vb}");
    assert_connected(&va, "tls", "A");
    assert_connected(&vb, "tls", "B");
    // Negative control: without the site's CA the document (and the
    // call) is refused.
    let out = spawn_call(
        url.clone(),
        ["--json", "--timeout", "10"].map(String::from).to_vec(),
    )
    .join()
    .unwrap();
    assert!(!out.status.success());
    let v = summary(&out);
    assert!(
        v["error"].as_str().unwrap_or("").contains("certificate"),
        "{v}"
    );
}

/// A script that starts the real Chromium headless with a DevTools port
/// (what a user's display would show, a test reads over CDP), passing on
/// the arguments `connect --open` gives it; `exec` keeps the PID.
fn chromium_wrapper(dir: &Path, devtools_port: u16) -> PathBuf {
    let path = dir.join("chromium-headless");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec '{}' --headless=new --no-sandbox --disable-gpu \
             --use-fake-device-for-media-stream --use-fake-ui-for-media-stream \
             --window-size=1100,700 --enable-automation \
             --remote-debugging-address=127.0.0.1 --remote-debugging-port={devtools_port} \"$@\"\n",
            testkit::chromium::chromium_binary().display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    path
}

/// PIDs of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// A site, and `connect SITE --open` with the real Chromium (headless, a
/// DevTools port) attached over CDP: the connect process, the browser and
/// the local URL connect printed.
fn open_with_chromium(
    dir: &Path,
    ws_port: bool,
) -> (Site, Connect, testkit::chromium::Chromium, String) {
    let site = Site::start_with(dir, ws_port);
    let ca = site.ca.ca.display().to_string();
    let port = testkit::free_port();
    let wrapper = chromium_wrapper(dir, port);
    let mut c = connect_direct(
        &site.url("/"),
        &[
            "--ca",
            &ca,
            "--open",
            "--browser",
            wrapper.to_str().unwrap(),
        ],
    );
    let local = c.ready(READY);
    let chrome =
        testkit::chromium::Chromium::attach(port, Duration::from_secs(30), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\nconnect:\n{}", c.stderr()));
    (site, c, chrome, local)
}

/// The browser's tab on `local` (connect's `Open` URL), once loaded: the
/// DevTools list names the URL being loaded (after a moment of
/// about:blank), the document follows.
fn opened_tab(
    chrome: &testkit::chromium::Chromium,
    local: &str,
    c: &Connect,
) -> testkit::chromium::Page {
    let target = testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        chrome
            .targets()
            .ok()?
            .into_iter()
            .find(|t| t["type"] == "page" && t["url"].as_str() == Some(local))
    })
    .unwrap_or_else(|| {
        panic!(
            "no page on {local}: {:?}\nconnect:\n{}",
            chrome.targets(),
            c.stderr()
        )
    });
    let mut page = chrome.attach_page(target["id"].as_str().unwrap()).unwrap();
    // The list shows the URL being loaded; the document follows.
    let local_js = serde_json::to_string(&local).unwrap();
    if let Err(e) = page.wait_for(
        &format!("document.readyState === 'complete' && location.href === {local_js}"),
        Duration::from_secs(30),
    ) {
        panic!(
            "the tab did not load {local}: {e}; it shows {:?}",
            page.evaluate("location.href")
        );
    }
    page
}

/// The `--user-data-dir` the browser runs with (over CDP; the wrapper
/// passes `--enable-automation`, which `Browser.getBrowserCommandLine`
/// needs), checked to be a fresh `onionrtc-browser-*` temporary directory.
fn profile_of(chrome: &testkit::chromium::Chromium) -> PathBuf {
    let line = chrome
        .browser_command("Browser.getBrowserCommandLine", serde_json::json!({}))
        .unwrap();
    let args: Vec<&str> = line["arguments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let dirs: Vec<&str> = args
        .iter()
        .filter_map(|a| a.strip_prefix("--user-data-dir="))
        .collect();
    assert_eq!(dirs.len(), 1, "{args:?}");
    let profile = PathBuf::from(dirs[0]);
    assert!(
        profile.starts_with(std::env::temp_dir())
            && profile
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("onionrtc-browser-")),
        "not a fresh temporary profile: {}",
        profile.display()
    );
    profile
}

/// `connect URL --open` with the real Chromium: the browser it starts
/// shows the connector's local URL (the site in private mode), runs on a
/// fresh temporary profile (not the user's), and when connect stops the
/// browser and all its processes are gone and the profile is removed.
#[test]
fn open_starts_chromium_on_a_fresh_profile() {
    if !testkit::require_tool("nginx", &["-v"])
        || !testkit::require_tool("chromium", &["--version"])
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_site, c, chrome, local) = open_with_chromium(dir.path(), false);
    let opened = Instant::now();

    let mut page = opened_tab(&chrome, &local, &c);
    // It is the site through the connector: the page found
    // /connector.json and shows private mode.
    page.wait_for(
        "!document.getElementById('mode').hidden",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("no private mode badge: {e}"));
    eprintln!(
        "--open: the page showed private mode {:.1} s after the Open line",
        opened.elapsed().as_secs_f64()
    );

    // Its profile: a fresh temporary directory, not the user's.
    let profile = profile_of(&chrome);
    if let Some(home) = std::env::var_os("HOME") {
        assert!(!profile.starts_with(home), "{}", profile.display());
    }
    // Chromium keeps its state there (the directory is the one in use).
    assert!(
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            profile.join("Local State").exists().then_some(())
        })
        .is_some(),
        "Chromium wrote nothing to {}",
        profile.display()
    );
    let needle = profile.display().to_string();
    assert!(!processes_with(&needle).is_empty());
    drop(page);
    drop(chrome);

    // connect stops: the browser with it, and the profile is removed.
    let stderr = c.stop();
    let left = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        processes_with(&needle).is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "browser processes left: {:?}",
        processes_with(&needle)
    );
    assert!(
        !profile.exists(),
        "{} left behind\n{stderr}",
        profile.display()
    );
}

/// Regenerates the screenshots of docs/privacy.md and docs/connector.md
/// (`cargo test -p onionrtc --test serve wellknown::screenshots -- --ignored`;
/// `ONIONRTC_SCREENSHOTS=DIR` writes them elsewhere): the page `connect
/// --open` shows (private mode badge), that page in a call with a caller
/// who opened the site directly, and the page the badge links to. `--via
/// direct` on loopback: the pages look the same as through Tor.
#[test]
#[ignore = "regenerates docs/screenshots; run by hand"]
fn screenshots_of_the_one_command_path() {
    let out = std::env::var_os("ONIONRTC_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"));
    std::fs::create_dir_all(&out).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (site, c, chrome, local) = open_with_chromium(dir.path(), true);
    let mut page = opened_tab(&chrome, &local, &c);
    page.command(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 1000, "height": 640, "deviceScaleFactor": 1, "mobile": false}),
    )
    .unwrap();
    page.wait_for(
        "(() => { const v = document.getElementById('preview'); \
         return !document.getElementById('mode').hidden && !document.getElementById('join').hidden \
         && v.srcObject && v.videoWidth > 0; })()",
        Duration::from_secs(30),
    )
    .unwrap();
    let shot = |page: &mut testkit::chromium::Page, name: &str| {
        let png = page.screenshot_png().unwrap();
        assert!(png.len() < 200_000, "{name}: {} bytes", png.len());
        std::fs::write(out.join(name), &png).unwrap();
        eprintln!("{name}: {} bytes", png.len());
    };
    let room = super::random_room();
    let room_js = serde_json::to_string(&room).unwrap();
    page.evaluate(&format!(
        "document.getElementById('room').value = {room_js}; \
         document.getElementById('name').value = 'Source'; true"
    ))
    .unwrap();
    shot(&mut page, "connect-open.png");

    // A call with a normal caller, who opens the site directly.
    let other =
        testkit::chromium::Chromium::launch(testkit::chromium::LaunchOptions::default()).unwrap();
    let mut normal = other
        .new_page(&site.server.url(&format!("/?room={room}")))
        .unwrap();
    page.evaluate("document.getElementById('join-button').click(); true")
        .unwrap();
    for p in [&mut page, &mut normal] {
        if let Err(e) = p.wait_for(
            "window.onionrtc && window.onionrtc.state === 'connected'",
            Duration::from_secs(40),
        ) {
            let state = p.evaluate(
                "JSON.stringify({s: window.onionrtc && window.onionrtc.state, \
                 n: document.getElementById('notice').textContent})",
            );
            panic!("{e}\nstate: {state:?}\nconnect:\n{}", c.stderr());
        }
    }
    page.wait_for(
        "[...document.querySelectorAll('#grid video')].filter((v) => v.videoWidth > 0).length >= 2",
        Duration::from_secs(20),
    )
    .unwrap();
    shot(&mut page, "connect-call.png");
    drop((normal, other));

    // What the badge links to: the page on what private mode protects.
    let privacy = format!("{}/privacy.html", local.trim_end_matches('/'));
    page.navigate(&privacy).unwrap();
    shot(&mut page, "connect-privacy.png");
    drop((page, chrome));
    c.stop();
}

/// Closing the browser `--open` started (the user closes its window) stops
/// connect, which removes the profile.
#[test]
fn closing_the_open_browser_stops_connect() {
    if !testkit::require_tool("nginx", &["-v"])
        || !testkit::require_tool("chromium", &["--version"])
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_site, c, chrome, local) = open_with_chromium(dir.path(), false);
    drop(opened_tab(&chrome, &local, &c));
    let profile = profile_of(&chrome);
    // The browser may close before it answers.
    let _ = chrome.browser_command("Browser.close", serde_json::json!({}));
    drop(chrome);
    let (code, stderr) = c.exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("the browser closed"), "{stderr}");
    assert!(
        !profile.exists(),
        "{} left behind\n{stderr}",
        profile.display()
    );
}

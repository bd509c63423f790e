//! # cdp — headless Chromium over the DevTools protocol, synchronously
//!
//! A small blocking CDP driver shared by the call-quality lab (`lab`'s
//! browser mode) and the integration tests (re-exported by
//! `testkit::chromium`).
//!
//! ```text
//! Chromium::launch(opts) ─ /json/version ─ browser WebSocket
//!        └─ new_page(url) ─ Target.createTarget ─ page WebSocket ─ Page::{navigate, evaluate, wait_for}
//! ```
//!
//! Design decisions:
//! - No async runtime: one blocking WebSocket per target, with a read timeout
//!   on the socket and a deadline on every call, so nothing waits forever.
//! - The browser is started with the flags measured to work here
//!   (`shared/BROWSER-TESTS.md`), a fresh profile directory, and the DevTools
//!   endpoint on 127.0.0.1 only. It is killed by PID on drop (its helper
//!   processes die with it) and the profile is removed.
//! - No panics on what the browser sends: every answer is checked and turned
//!   into an error string.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use tungstenite::{Message, WebSocket};

/// What [`Page::evaluate`] returns; re-exported so tests need no JSON crate.
pub use serde_json::{self, Value};

/// The flags of `shared/BROWSER-TESTS.md`, less the per-launch ones
/// (`--user-data-dir`, `--remote-debugging-port`).
const BASE_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-address=127.0.0.1",
];

/// Lines of Chromium's stderr kept for error messages.
const STDERR_LINES: usize = 60;
/// CDP events kept per connection (older ones are dropped).
const MAX_EVENTS: usize = 2000;
/// Console lines kept per page.
const MAX_CONSOLE: usize = 500;

/// How to start the browser.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The executable; `None` means `$CHROMIUM`, else `/usr/bin/chromium`.
    pub binary: Option<PathBuf>,
    /// Flags added after the standard ones, e.g.
    /// `--ignore-certificate-errors-spki-list=…` or
    /// `--allow-loopback-in-peer-connection`.
    pub extra_args: Vec<String>,
    /// How long the DevTools endpoint may take to come up.
    pub startup_timeout: Duration,
    /// The default limit of one CDP call (`evaluate`, `navigate`, …).
    pub call_timeout: Duration,
    /// Start the browser under `setpriv --pdeathsig KILL` (when `setpriv`
    /// exists), so it dies with the thread that launched it even if this
    /// process is killed before it can stop the browser by PID.
    pub kill_with_parent: bool,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            binary: None,
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(20),
            call_timeout: Duration::from_secs(30),
            kill_with_parent: false,
        }
    }
}

impl LaunchOptions {
    /// Adds one flag.
    pub fn arg(mut self, flag: impl Into<String>) -> Self {
        self.extra_args.push(flag.into());
        self
    }
}

/// The executable the tests use: `$CHROMIUM`, else `/usr/bin/chromium`.
pub fn chromium_binary() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// A running headless Chromium; killed by PID and its profile removed on drop.
#[derive(Debug)]
pub struct Chromium {
    // Declared before `profile`: the browser dies before its profile goes.
    proc: Option<Proc>,
    profile: Option<tempfile::TempDir>,
    port: u16,
    version: Value,
    browser: Mutex<Cdp>,
    stderr: Arc<Mutex<Stderr>>,
    call_timeout: Duration,
}

/// Why one launch failed.
enum Launch {
    /// The DevTools port was taken before Chromium bound it: try another.
    PortTaken(String),
    Failed(String),
}

/// What Chromium wrote to stderr: its last lines, and the DevTools line.
#[derive(Debug, Default)]
struct Stderr {
    tail: VecDeque<String>,
    listening: Option<String>,
    bind_failed: bool,
}

impl Chromium {
    /// Starts the browser and waits (bounded) for its DevTools endpoint.
    /// Tries again on a new port if the chosen one was taken meanwhile.
    pub fn launch(opts: LaunchOptions) -> Result<Chromium, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::launch_once(&opts) {
                Ok(c) => return Ok(c),
                Err(Launch::PortTaken(e)) => last = e,
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(last)
    }

    fn launch_once(opts: &LaunchOptions) -> Result<Chromium, Launch> {
        let binary = opts.binary.clone().unwrap_or_else(chromium_binary);
        let profile = tempfile::Builder::new()
            .prefix("cdp-chromium-")
            .tempdir()
            .map_err(|e| Launch::Failed(format!("cannot create a profile directory: {e}")))?;
        let port = free_port().map_err(Launch::Failed)?;
        let mut cmd = if opts.kill_with_parent && has_setpriv() {
            // setpriv execs the browser: the PID stays the browser's.
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        cmd.args(BASE_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--remote-debugging-port={port}"))
            .args(&opts.extra_args)
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(&mut cmd)
            .map_err(|e| Launch::Failed(format!("cannot start {}: {e}", binary.display())))?;
        let stderr = Arc::new(Mutex::new(Stderr::default()));
        if let Some(pipe) = proc.0.stderr.take() {
            let state = Arc::clone(&stderr);
            std::thread::spawn(move || keep_tail(pipe, &state));
        }
        let failed =
            |what: String| Launch::Failed(format!("{what}; stderr tail:\n{}", tail_text(&stderr)));

        // Chromium announces its endpoint on stderr. If the port was taken
        // it says `bind() failed` and may listen on [::1] instead: then
        // another server could be answering on 127.0.0.1:port.
        let expected = format!("DevTools listening on ws://127.0.0.1:{port}/");
        let deadline = Instant::now() + opts.startup_timeout;
        loop {
            if let Ok(Some(status)) = proc.0.try_wait() {
                return Err(failed(format!(
                    "{} exited during startup ({status})",
                    binary.display()
                )));
            }
            let (listening, bind_failed) = stderr
                .lock()
                .map(|s| (s.listening.clone(), s.bind_failed))
                .unwrap_or_default();
            match listening {
                Some(l) if l.starts_with(&expected) => break,
                Some(l) => return Err(Launch::PortTaken(format!("port {port} taken: {l}"))),
                None if bind_failed => {
                    return Err(Launch::PortTaken(format!("port {port} taken")));
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "no DevTools endpoint within {:?}",
                    opts.startup_timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let version = http_json("GET", port, "/json/version", opts.call_timeout)
            .map_err(|e| failed(format!("DevTools endpoint: {e}")))?;
        let ws_url = version["webSocketDebuggerUrl"]
            .as_str()
            .ok_or_else(|| failed(format!("no webSocketDebuggerUrl in {version}")))?
            .to_owned();
        let browser = Cdp::connect(&ws_url, opts.call_timeout)
            .map_err(|e| failed(format!("browser WebSocket {ws_url}: {e}")))?;
        Ok(Chromium {
            proc: Some(proc),
            profile: Some(profile),
            port,
            version,
            browser: Mutex::new(browser),
            stderr,
            call_timeout: opts.call_timeout,
        })
    }

    /// Connects to a Chromium that another program started with
    /// `--remote-debugging-port=port` (on 127.0.0.1), waiting (bounded by
    /// `startup_timeout`) for its endpoint. Dropping the result neither
    /// kills that browser nor removes its profile.
    pub fn attach(
        port: u16,
        startup_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Chromium, String> {
        let deadline = Instant::now() + startup_timeout;
        let version = loop {
            match http_json("GET", port, "/json/version", call_timeout) {
                Ok(v) => break v,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("no DevTools endpoint on port {port}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let ws_url = version["webSocketDebuggerUrl"]
            .as_str()
            .ok_or_else(|| format!("no webSocketDebuggerUrl in {version}"))?
            .to_owned();
        let browser = Cdp::connect(&ws_url, call_timeout)?;
        Ok(Chromium {
            proc: None,
            profile: None,
            port,
            version,
            browser: Mutex::new(browser),
            stderr: Arc::new(Mutex::new(Stderr::default())),
            call_timeout,
        })
    }

    /// The browser's targets (`/json/list`: `id`, `type`, `url`, …).
    pub fn targets(&self) -> Result<Vec<Value>, String> {
        let list = http_json("GET", self.port, "/json/list", self.call_timeout)?;
        list.as_array()
            .cloned()
            .ok_or_else(|| format!("/json/list answered {list}"))
    }

    /// A browser-level CDP command (`Browser.getVersion`,
    /// `Browser.getBrowserCommandLine`, …).
    pub fn browser_command(&self, method: &str, params: Value) -> Result<Value, String> {
        let mut browser = self.browser.lock().map_err(|_| "browser lock poisoned")?;
        browser.call(method, params, self.call_timeout)
    }

    /// Connects to a tab that is already open (a target id of
    /// [`Chromium::targets`]), without loading anything.
    pub fn attach_page(&self, target_id: &str) -> Result<Page, String> {
        let ws_url = format!("ws://127.0.0.1:{}/devtools/page/{target_id}", self.port);
        let mut cdp = Cdp::connect(&ws_url, self.call_timeout)?;
        cdp.call("Page.enable", json!({}), self.call_timeout)?;
        cdp.call("Runtime.enable", json!({}), self.call_timeout)?;
        Ok(Page {
            cdp,
            target_id: target_id.to_owned(),
            call_timeout: self.call_timeout,
            console: VecDeque::new(),
        })
    }

    /// What `/json/version` answered (`Browser`, `Protocol-Version`, …).
    pub fn version(&self) -> &Value {
        &self.version
    }

    /// The DevTools port on 127.0.0.1.
    pub fn devtools_port(&self) -> u16 {
        self.port
    }

    /// The browser's PID.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The last lines Chromium wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        tail_text(&self.stderr)
    }

    /// Opens a new tab, connects to it and loads `url` (waits for `load`).
    pub fn new_page(&self, url: &str) -> Result<Page, String> {
        self.open_page(url, None)
    }

    /// Like [`Chromium::new_page`], and runs `init_script` in the page
    /// before any of the page's own scripts (`Page.addScriptToEvaluateOnNewDocument`),
    /// e.g. to wrap a browser API.
    pub fn open_page(&self, url: &str, init_script: Option<&str>) -> Result<Page, String> {
        let target = {
            let mut browser = self.browser.lock().map_err(|_| "browser lock poisoned")?;
            browser.call(
                "Target.createTarget",
                json!({ "url": "about:blank" }),
                self.call_timeout,
            )?
        };
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| format!("Target.createTarget answered {target}"))?
            .to_owned();
        let mut page = self.attach_page(&target_id)?;
        if let Some(js) = init_script {
            page.command(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": js }),
            )?;
        }
        page.navigate(url)?;
        Ok(page)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Kill by PID first (Proc's drop), then remove the profile.
        drop(self.proc.take());
        if let Some(dir) = self.profile.take() {
            let path = dir.path().to_owned();
            if dir.close().is_err() {
                // Helper processes may still write for a moment.
                std::thread::sleep(Duration::from_millis(200));
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}

/// One tab, driven over its own WebSocket.
#[derive(Debug)]
pub struct Page {
    cdp: Cdp,
    target_id: String,
    call_timeout: Duration,
    console: VecDeque<String>,
}

impl Page {
    /// The DevTools target id.
    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    /// Loads `url` and waits (bounded) for its `load` event.
    pub fn navigate(&mut self, url: &str) -> Result<(), String> {
        self.cdp
            .events
            .retain(|e| e["method"] != "Page.loadEventFired");
        let r = self
            .cdp
            .call("Page.navigate", json!({ "url": url }), self.call_timeout)?;
        if let Some(err) = r["errorText"].as_str() {
            return Err(format!("navigating to {url}: {err}"));
        }
        self.cdp
            .wait_event("Page.loadEventFired", self.call_timeout)
            .map(|_| ())
            .map_err(|e| format!("navigating to {url}: {e}"))
    }

    /// Evaluates `js` in the page (promises are awaited) and returns its
    /// value as JSON (`undefined` is `null`). A thrown exception is an error.
    pub fn evaluate(&mut self, js: &str) -> Result<Value, String> {
        self.evaluate_within(js, self.call_timeout)
    }

    /// [`Page::evaluate`] with its own limit.
    pub fn evaluate_within(&mut self, js: &str, limit: Duration) -> Result<Value, String> {
        let r = self.cdp.call(
            "Runtime.evaluate",
            json!({ "expression": js, "awaitPromise": true, "returnByValue": true }),
            limit,
        );
        self.collect_console();
        let r = r?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("page threw: {}", describe_exception(ex)));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Polls `js_expr` until it is truthy, at most `limit`; returns its value.
    pub fn wait_for(&mut self, js_expr: &str, limit: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.evaluate_within(js_expr, left.max(Duration::from_millis(500)))?;
            if truthy(&v) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "`{js_expr}` not truthy within {limit:?} (last: {v})"
                ));
            }
            std::thread::sleep(Duration::from_millis(100).min(left));
        }
    }

    /// Any DevTools command on this tab (e.g. `Emulation.setDeviceMetricsOverride`),
    /// with the default call limit; returns its `result`.
    pub fn command(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let r = self.cdp.call(method, params, self.call_timeout);
        self.collect_console();
        r
    }

    /// Like [`Page::evaluate`], as if the user had just clicked: APIs that
    /// need a user gesture (`getDisplayMedia`, clipboard) work.
    pub fn evaluate_with_gesture(&mut self, js: &str) -> Result<Value, String> {
        let r = self.command(
            "Runtime.evaluate",
            json!({ "expression": js, "awaitPromise": true, "returnByValue": true, "userGesture": true }),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("page threw: {}", describe_exception(ex)));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// A PNG of the visible page (`Page.captureScreenshot`).
    pub fn screenshot_png(&mut self) -> Result<Vec<u8>, String> {
        let r = self.command("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = r["data"]
            .as_str()
            .ok_or_else(|| format!("Page.captureScreenshot answered {r}"))?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("screenshot is not base64: {e}"))
    }

    /// Console messages and uncaught exceptions seen so far (oldest first).
    pub fn console(&mut self) -> Vec<String> {
        self.collect_console();
        self.console.iter().cloned().collect()
    }

    fn collect_console(&mut self) {
        let events = std::mem::take(&mut self.cdp.events);
        for e in events {
            let line = match e["method"].as_str() {
                Some("Runtime.consoleAPICalled") => {
                    let p = &e["params"];
                    let args: Vec<String> = p["args"]
                        .as_array()
                        .map(|a| a.iter().map(remote_object_text).collect())
                        .unwrap_or_default();
                    format!(
                        "console.{}: {}",
                        p["type"].as_str().unwrap_or("?"),
                        args.join(" ")
                    )
                }
                Some("Runtime.exceptionThrown") => format!(
                    "uncaught: {}",
                    describe_exception(&e["params"]["exceptionDetails"])
                ),
                _ => {
                    // Keep other events for `wait_event`.
                    self.cdp.push_event(e);
                    continue;
                }
            };
            if self.console.len() == MAX_CONSOLE {
                self.console.pop_front();
            }
            self.console.push_back(line);
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Best effort: close the tab so its peer connections go away.
        let _ = self.cdp.send("Page.close", json!({}));
        let _ = self.cdp.ws.close(None);
        let _ = self.cdp.ws.flush();
    }
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn describe_exception(ex: &Value) -> String {
    ex["exception"]["description"]
        .as_str()
        .or_else(|| ex["text"].as_str())
        .unwrap_or("unknown exception")
        .to_owned()
}

fn remote_object_text(o: &Value) -> String {
    match o.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => o["description"].as_str().unwrap_or("?").to_owned(),
    }
}

/// One CDP WebSocket: numbered calls, events buffered until asked for.
#[derive(Debug)]
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    events: VecDeque<Value>,
}

impl Cdp {
    fn connect(ws_url: &str, limit: Duration) -> Result<Cdp, String> {
        let rest = ws_url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("not a ws:// URL: {ws_url}"))?;
        let host = rest.split('/').next().unwrap_or_default();
        let addr: SocketAddr = host
            .parse()
            .map_err(|e| format!("bad DevTools address {host}: {e}"))?;
        let stream =
            TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(limit))
            .and_then(|()| stream.set_write_timeout(Some(limit)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| format!("socket options: {e}"))?;
        let (ws, _) = tungstenite::client(ws_url, stream)
            .map_err(|e| format!("WebSocket handshake with {ws_url}: {e}"))?;
        Ok(Cdp {
            ws,
            next_id: 1,
            events: VecDeque::new(),
        })
    }

    fn send(&mut self, method: &str, params: Value) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws
            .send(Message::text(msg))
            .map_err(|e| format!("{method}: send: {e}"))?;
        Ok(id)
    }

    /// Sends `method` and waits (bounded) for its answer.
    fn call(&mut self, method: &str, params: Value, limit: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + limit;
        let id = self.send(method, params)?;
        loop {
            let Some(msg) = self.recv(deadline).map_err(|e| format!("{method}: {e}"))? else {
                return Err(format!("{method}: no answer within {limit:?}"));
            };
            if msg.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = msg.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
            }
            if msg.get("method").is_some() {
                self.push_event(msg);
            }
            // Answers to earlier calls that timed out are dropped.
        }
    }

    /// Waits (bounded) for the event `method`, taking it from the buffer.
    fn wait_event(&mut self, method: &str, limit: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
                return Ok(self.events.remove(i).unwrap_or(Value::Null));
            }
            let Some(msg) = self.recv(deadline)? else {
                return Err(format!("no {method} within {limit:?}"));
            };
            if msg.get("method").is_some() {
                self.push_event(msg);
            }
        }
    }

    fn push_event(&mut self, e: Value) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The next JSON message, or `None` at the deadline.
    fn recv(&mut self, deadline: Instant) -> Result<Option<Value>, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.ws
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| format!("set_read_timeout: {e}"))?;
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return serde_json::from_str(t.as_str())
                        .map(Some)
                        .map_err(|e| format!("bad CDP message: {e}"));
                }
                Ok(Message::Close(f)) => return Err(format!("DevTools closed the socket: {f:?}")),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("DevTools socket: {e}")),
            }
        }
    }
}

/// A bounded HTTP/1.1 request to the DevTools endpoint, answer parsed as JSON.
fn http_json(method: &str, port: u16, path: &str, limit: Duration) -> Result<Value, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(limit))
        .and_then(|()| s.set_write_timeout(Some(limit)))
        .map_err(|e| format!("socket options: {e}"))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{method} {path}: {e}"))?;
    let (status, body) = read_http_response(&mut s).map_err(|e| format!("{method} {path}: {e}"))?;
    if status != 200 {
        return Err(format!(
            "{method} {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{method} {path}: bad JSON: {e}"))
}

/// Reads one response: status code and body (by Content-Length, else to EOF).
fn read_http_response(s: &mut impl Read) -> Result<(u16, Vec<u8>), String> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut len = None;
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed in headers".into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).map_err(|e| e.to_string())?;
        }
        None => {
            r.read_to_end(&mut body).map_err(|e| e.to_string())?;
        }
    }
    Ok((status, body))
}

fn keep_tail(pipe: impl Read, state: &Mutex<Stderr>) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        if line.contains("ERROR:dbus/") {
            continue; // No system bus here: noise, not a cause.
        }
        let Ok(mut s) = state.lock() else { break };
        if line.starts_with("DevTools listening on ") {
            s.listening.get_or_insert_with(|| line.clone());
        }
        if line.contains("bind() failed") {
            s.bind_failed = true;
        }
        if s.tail.len() == STDERR_LINES {
            s.tail.pop_front();
        }
        s.tail.push_back(line);
    }
}

fn tail_text(state: &Mutex<Stderr>) -> String {
    state
        .lock()
        .map(|s| s.tail.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// The base64 SHA-256 of a PEM certificate's SubjectPublicKeyInfo, the form
/// `--ignore-certificate-errors-spki-list` takes (the same as
/// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der |
/// openssl dgst -sha256 -binary | base64`).
pub fn spki_sha256_base64(cert_pem: &str) -> Result<String, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let digest = Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(base64::engine::general_purpose::STANDARD.encode(digest))
}

/// A child process killed by PID (and reaped) when dropped.
#[derive(Debug)]
struct Proc(Child);

impl Proc {
    fn spawn(cmd: &mut Command) -> std::io::Result<Proc> {
        cmd.stdin(Stdio::null()).spawn().map(Proc)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether util-linux's `setpriv` can be started.
pub fn has_setpriv() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new("setpriv")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A port free on 127.0.0.1 for both UDP and TCP (at the time of the call).
pub fn free_port() -> Result<u16, String> {
    for _ in 0..100 {
        let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = u.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port on 127.0.0.1".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // A self-signed certificate (`openssl req -x509 -newkey ec -pkeyopt
    // ec_paramgen_curve:P-256 -subj /CN=localhost`), and the hash that
    // `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der |
    // openssl dgst -sha256 -binary | base64` gives for it.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfjCCASWgAwIBAgIUSyOXeugncTVRwp7Qm9cqcS/wReowCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjAwMDcwMloYDzIxMjYxMDI5
MDAwNzAyWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASIVxWjo9j+h6N54p23cPyLNzlmTDMsfVIPUhYpswK0quW/vhshS0hB
3nSKcjT0vNGsTbBhOo7m6KgLy+zudlMoo1MwUTAdBgNVHQ4EFgQUZoXiOH6lVjWv
4FJteWp3lTymjBwwHwYDVR0jBBgwFoAUZoXiOH6lVjWv4FJteWp3lTymjBwwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiA4KxKJ06JM/cCBo09PrJTa
qCAIUHQN37CALiJINtRrWQIgKi3Jo95r1I7wHy7+VMpHryBI/rmk8NJuqpoy7ZNq
PYI=
-----END CERTIFICATE-----
";
    const CERT_SPKI: &str = "aMTOpr5xZaUPJoGENzQNUFEotpNEVuJM8OWABnP/SXo=";

    #[test]
    fn spki_hash_matches_openssl() {
        assert_eq!(spki_sha256_base64(CERT).unwrap(), CERT_SPKI);
    }

    #[test]
    fn spki_hash_rejects_garbage() {
        assert!(spki_sha256_base64("").is_err());
        assert!(spki_sha256_base64(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
    }

    #[test]
    fn truthiness_is_javascripts() {
        for v in [json!(null), json!(false), json!(0), json!(0.0), json!("")] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [
            json!(true),
            json!(1),
            json!(-0.5),
            json!("x"),
            json!([]),
            json!({}),
        ] {
            assert!(truthy(&v), "{v}");
        }
    }

    #[test]
    fn http_response_by_content_length_and_to_eof() {
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}trailing";
        assert_eq!(
            read_http_response(&mut r).unwrap(),
            (200, b"{\"a\":1}".to_vec())
        );
        let mut r: &[u8] = b"HTTP/1.0 404 Not Found\r\nX: y\r\n\r\nnope";
        assert_eq!(read_http_response(&mut r).unwrap(), (404, b"nope".to_vec()));
        let mut r: &[u8] = b"garbage";
        assert!(read_http_response(&mut r).is_err());
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n";
        assert!(read_http_response(&mut r).is_err());
    }

    #[test]
    fn launch_failure_is_an_error_not_a_hang() {
        let opts = LaunchOptions {
            binary: Some(PathBuf::from("/nonexistent/chromium")),
            ..LaunchOptions::default()
        };
        let err = Chromium::launch(opts).unwrap_err();
        assert!(err.contains("cannot start"), "{err}");
        // A program that exits at once: the error carries its stderr.
        let opts = LaunchOptions {
            binary: Some(PathBuf::from("/bin/sh")),
            extra_args: vec![],
            startup_timeout: Duration::from_secs(5),
            ..LaunchOptions::default()
        };
        let started = Instant::now();
        let err = Chromium::launch(opts).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert!(err.contains("exited during startup"), "{err}");
    }
}

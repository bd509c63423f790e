//! SIP over WebSocket at `/sip` (docs/sip.md): accounts made with
//! `onionrtc users add`, digest registration, `/api/sip/turn`, the Origin
//! and subprotocol rules, bad input (answered 400/413 or closed, counted,
//! the server unharmed), and calls between Chromium pages through our
//! relay: JsSIP to JsSIP, then JsSIP to SIP.js
//! (`jssip_and_sipjs_calls_through_serve`).

use super::firefox::js_dir;
use super::*;

use ::sip::digest::ha1;
use ::sip::Algorithm;

pub(crate) const DOMAIN: &str = "sip.test";

/// `serve_config` plus `[sip] enabled = true, domain = "sip.test"` and
/// the `[sip]` lines `extra`.
pub(crate) fn sip_config(dir: &Path, extra: &str) -> (std::path::PathBuf, u16) {
    let (config, _, web_port) = serve_config(dir, &["udp", "tcp"]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[sip]\nenabled = true\ndomain = \"{DOMAIN}\"\n{extra}"
    ));
    std::fs::write(&config, text).unwrap();
    (config, web_port)
}

/// `onionrtc users ARGS…` with `stdin` piped in: (success, stdout, stderr).
pub(crate) fn users(
    config: &Path,
    data_dir: &Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onionrtc"));
    cmd.arg("users")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Proc::spawn gives the child no stdin; this one reads its password there.
    let mut child = Proc(cmd.spawn().unwrap());
    let mut input = child.0.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "onionrtc users {args:?} did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), out, err)
}

type Ws = tungstenite::WebSocket<TcpStream>;

/// Opens `ws://addr/sip` with `headers`; the handshake's error text if refused.
fn sip_ws(addr: SocketAddr, headers: &[(&'static str, &str)]) -> Result<Ws, String> {
    use tungstenite::client::IntoClientRequest as _;
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut req = format!("ws://{addr}/sip")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (k, v) in headers {
        req.headers_mut().append(*k, v.parse().unwrap());
    }
    tungstenite::client(req, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// The next SIP message as text; `None` when the server closed or nothing came.
fn recv(ws: &mut Ws) -> Option<String> {
    for _ in 0..10 {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => return Some(t.to_string()),
            Ok(tungstenite::Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

fn register(user: &str, cseq: u32, auth: &str) -> String {
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/WSS tester.invalid;branch=z9hG4bK{cseq}x\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=t1\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
Call-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:x@tester.invalid;transport=ws>\r\n\
Expires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

/// The digest answer to the first challenge of `resp`.
fn answer(resp: &str, user: &str, password: &str) -> String {
    let challenges: Vec<&str> = resp
        .lines()
        .filter(|l| l.starts_with("WWW-Authenticate:"))
        .collect();
    assert_eq!(challenges.len(), 2, "{resp}");
    // SHA-256 preferred (first); MD5 last, the one JsSIP and SIP.js read.
    assert!(challenges[0].contains("algorithm=SHA-256"), "{resp}");
    let ch = challenges[1];
    assert!(ch.contains("algorithm=MD5"), "{resp}");
    let nonce = ch
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let alg = Algorithm::Md5;
    let h1 = ha1(alg, user, DOMAIN, password);
    let uri = format!("sip:{DOMAIN}");
    let h2 = alg.hash(&format!("REGISTER:{uri}"));
    let r = alg.hash(&format!("{h1}:{nonce}:00000001:c0ffee:auth:{h2}"));
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", \
uri=\"{uri}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\", response=\"{r}\"\r\n"
    )
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {b}\r\n")
}

#[test]
fn sip_over_websocket_accounts_auth_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = sip_config(dir.path(), "");
    let data_dir = dir.path().join("data");

    // Accounts: the password from stdin, only hashes on disk.
    let (ok, _, err) = users(&config, &data_dir, &["add", "alice"], "alice-secret-pw\n");
    assert!(ok, "users add: {err}");
    let (ok, _, err) = users(&config, &data_dir, &["add", "alice"], "other-password\n");
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, _, err) = users(&config, &data_dir, &["add", "bad@name"], "long-enough-pw\n");
    assert!(!ok, "{err}");
    let (ok, out, _) = users(&config, &data_dir, &["list"], "");
    assert!(
        ok && out.starts_with(&format!("alice\t{DOMAIN}\t")),
        "{out}"
    );
    let (ok, _, err) = users(
        &config,
        &data_dir,
        &["passwd", "alice"],
        "alice-new-secret\n",
    );
    assert!(ok, "{err}");

    let server = Server::start(&config, &data_dir);

    // TURN credentials for the account only.
    let (status, _) = server.get("/api/sip/turn");
    assert_eq!(status, 401);
    let (status, _) = server.get_with("/api/sip/turn", &basic("alice", "alice-secret-pw"));
    assert_eq!(status, 401, "the old password still works");
    let (status, body) = server.get_with("/api/sip/turn", &basic("alice", "alice-new-secret"));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["iceTransportPolicy"], "relay");
    let turn_user = v["iceServers"][0]["username"].as_str().unwrap().to_owned();
    assert!(!turn_user.contains("alice"), "{turn_user}");
    let (_, again) = server.get_with("/api/sip/turn", &basic("alice", "alice-new-secret"));
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_ne!(
        again["iceServers"][0]["username"],
        turn_user.as_str(),
        "a TURN user per request"
    );

    // Off, /sip and /api/sip/turn do not exist (the default).
    let off = dir.path().join("off");
    std::fs::create_dir(&off).unwrap();
    let (off_config, _, _) = serve_config(&off, &["udp"]);
    let off_server = Server::start(&off_config, &off.join("data"));
    assert_eq!(off_server.get("/sip").0, 404);
    assert_eq!(off_server.get("/api/sip/turn").0, 404);
    off_server.terminate().unwrap();

    // The upgrade: subprotocol `sip` required; foreign origins refused.
    let proto = ("Sec-WebSocket-Protocol", "sip");
    let e = sip_ws(server.web, &[]).err().unwrap();
    assert!(e.contains("400"), "{e}");
    let e = sip_ws(server.web, &[proto, ("Origin", "https://evil.example")])
        .err()
        .unwrap();
    assert!(e.contains("403"), "{e}");
    let own = format!("http://{}", server.web);
    let mut ws = sip_ws(server.web, &[proto, ("Origin", &own)]).unwrap();

    // Digest registration.
    ws.send(tungstenite::Message::text(register("alice", 1, "")))
        .unwrap();
    let challenge = recv(&mut ws).unwrap();
    assert!(challenge.starts_with("SIP/2.0 401 "), "{challenge}");
    let auth = answer(&challenge, "alice", "alice-new-secret");
    ws.send(tungstenite::Message::text(register("alice", 2, &auth)))
        .unwrap();
    let ok = recv(&mut ws).unwrap();
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    assert!(
        ok.contains("Contact: <sip:x@tester.invalid;transport=ws>;expires="),
        "{ok}"
    );
    // The same answer again is a replay: a new challenge.
    ws.send(tungstenite::Message::text(register("alice", 3, &auth)))
        .unwrap();
    assert!(recv(&mut ws).unwrap().starts_with("SIP/2.0 401 "));

    // Bad input: a readable head gets 400, a truncated one nothing, an
    // oversized one 413 (just over the limit) or a close (far over).
    let bad = register("alice", 4, "").replace("CSeq: 4 REGISTER", "CSeq: 4 INVITE");
    ws.send(tungstenite::Message::text(bad)).unwrap();
    assert!(recv(&mut ws).unwrap().starts_with("SIP/2.0 400 "));
    let truncated = register("alice", 5, "");
    ws.send(tungstenite::Message::text(
        &truncated[..truncated.len() / 2],
    ))
    .unwrap();
    ws.send(tungstenite::Message::binary(vec![0xffu8, 0xfe, 0, 1]))
        .unwrap();
    let big = register("alice", 6, "").replace(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Length: 65600\r\n\r\n{}", "x".repeat(65_600)),
    );
    ws.send(tungstenite::Message::text(big)).unwrap();
    let r = recv(&mut ws).unwrap();
    assert!(r.starts_with("SIP/2.0 413 "), "{r}");
    let huge = "x".repeat(200_000);
    let _ = ws.send(tungstenite::Message::text(huge));
    assert!(
        recv(&mut ws).is_none(),
        "a message far over the limit closes the connection"
    );

    // Counted; the server still answers.
    let (status, m) = server.get_as_operator("/metrics", &data_dir);
    assert_eq!(status, 200);
    assert!(metric_sum(&m, "onionrtc_sip_malformed_total") >= 3, "{m}");
    assert!(metric_sum(&m, "onionrtc_sip_too_large_total") >= 2, "{m}");
    assert_eq!(metric_sum(&m, "onionrtc_sip_turn_issued_total"), 2, "{m}");
    assert_eq!(metric_sum(&m, "onionrtc_sip_turn_denied_total"), 2, "{m}");
    assert_eq!(server.get("/healthz").0, 200);
    // The closed connection's registration is gone.
    let regs = testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let (_, m) = server.get_as_operator("/metrics", &data_dir);
        (metric_sum(&m, "onionrtc_sip_registrations") == 0).then_some(())
    });
    assert!(regs.is_some(), "the registration outlived its connection");

    // Nothing of the account's password on disk; the log names no client.
    let tail = server.stderr_tail();
    assert!(
        !tail.contains("tester.invalid") && !tail.contains("alice"),
        "{tail}"
    );
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("alice-new-secret") && !text.contains("alice-secret-pw"));
        assert!(!text.contains("tester.invalid"));
    }
    server.terminate().unwrap();
}

/// Two JsSIP user agents in one page each: TURN credentials from
/// `/api/sip/turn`, every SIP message sent and received recorded, incoming
/// calls answered with relay-only ICE.
pub(crate) const JSSIP_HARNESS: &str = r#"window.sipt = (() => {
  const t = { sent: [], received: [], events: [], session: null, ua: null, creds: null };
  const W = JsSIP.WebSocketInterface.prototype;
  if (!W.__recorded) {
    const send = W.send;
    W.send = function (m) { t.sent.push(String(m)); return send.call(this, m); };
    const onMessage = W._onMessage;
    W._onMessage = function (ev) { t.received.push(String(ev.data)); return onMessage.call(this, ev); };
    W.__recorded = true;
  }
  const media = () => ({
    mediaConstraints: { audio: true, video: false },
    pcConfig: { iceServers: t.creds.iceServers, iceTransportPolicy: 'relay' },
  });
  t.start = async (user, password, domain) => {
    const r = await fetch('/api/sip/turn', { headers: { Authorization: 'Basic ' + btoa(user + ':' + password) } });
    if (r.status !== 200) throw new Error('/api/sip/turn: ' + r.status);
    t.creds = await r.json();
    const socket = new JsSIP.WebSocketInterface('ws://' + location.host + '/sip');
    t.ua = new JsSIP.UA({ sockets: [socket], uri: 'sip:' + user + '@' + domain, password, session_timers: false });
    t.ua.on('registered', () => t.events.push('registered'));
    t.ua.on('registrationFailed', (e) => t.events.push('registrationFailed:' + e.cause));
    t.ua.on('newRTCSession', (e) => {
      const s = e.session;
      t.session = s;
      for (const name of ['progress', 'accepted', 'confirmed', 'ended', 'failed']) {
        s.on(name, (x) => t.events.push(name + (x && x.cause ? ':' + x.cause : '')));
      }
      for (const name of ['hold', 'unhold']) s.on(name, (x) => t.events.push(name + ':' + x.originator));
      if (e.originator === 'remote') s.answer(media());
    });
    t.ua.start();
    return true;
  };
  t.call = (target) => { t.ua.call(target, media()); return true; };
  t.hangup = () => { t.session.terminate(); return true; };
  t.pc = () => t.session && t.session.connection;
  return t;
})(); true"#;

/// `sipt.stats()` over either harness's `sipt.pc()`: the connection
/// state, the selected pair's candidate types, inbound RTP totals.
pub(crate) const STATS_JS: &str = r#"sipt.stats = async () => {
    const pc = sipt.pc();
    if (!pc) return null;
    const r = await pc.getStats();
    let pair = null;
    r.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = r.get(s.selectedCandidatePairId); });
    const local = pair ? r.get(pair.localCandidateId) : null;
    const remote = pair ? r.get(pair.remoteCandidateId) : null;
    let packets = 0, bytes = 0;
    r.forEach((s) => { if (s.type === 'inbound-rtp') { packets += s.packetsReceived || 0; bytes += s.bytesReceived || 0; } });
    return { state: pc.connectionState, local: local && local.candidateType, remote: remote && remote.candidateType, packets, bytes };
};
true"#;

/// JsSIP as a browser script: its CommonJS files bundled by
/// tests/js/cjs_bundle.mjs.
pub(crate) fn jssip_bundle() -> Option<String> {
    let js = js_dir();
    if !js.join("node_modules/jssip").is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/js/node_modules is missing in CI (scripts/test.sh runs npm ci)"
        );
        eprintln!("skipping: run `npm ci` in tests/js first");
        return None;
    }
    let out = Command::new("node")
        .arg(js.join("cjs_bundle.mjs"))
        .args(["jssip", "JsSIP"])
        .current_dir(&js)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bundling JsSIP: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The value of header `name` in the last message of `messages` that
/// starts with `start`.
fn header_of(messages: &[String], start: &str, name: &str) -> String {
    let m = messages
        .iter()
        .rev()
        .find(|m| m.starts_with(start))
        .unwrap_or_else(|| panic!("no {start} among {messages:#?}"));
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {m}"))
        .trim()
        .to_owned()
}

/// What a page's `sipt` saw (events, first lines of the SIP messages sent
/// and received) and its console, for failure messages.
pub(crate) fn sip_page_report(p: &mut Page) -> String {
    let state = p
        .evaluate("JSON.stringify({events: sipt.events, sent: sipt.sent.map(m => m.split('\\r\\n')[0]), received: sipt.received.map(m => m.split('\\r\\n')[0])})")
        .unwrap_or_else(Value::String);
    format!("{state}\nconsole: {:#?}", p.console())
}

fn sip_fail(what: &str, pages: &mut [Page], server: &Server) -> ! {
    let mut text = format!("{what}\n");
    for (i, p) in pages.iter_mut().enumerate() {
        text.push_str(&format!("--- page {i}: {}\n", sip_page_report(p)));
    }
    text.push_str(&format!("--- serve stderr:\n{}", server.stderr_tail()));
    panic!("{text}");
}

/// The files under `root` over HTTP on 127.0.0.1, with
/// `Access-Control-Allow-Origin: *` (SIP.js is ES modules only: the pages
/// import it across origins). Stopped on drop.
pub(crate) struct ModuleServer {
    pub(crate) addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ModuleServer {
    pub(crate) fn start(root: std::path::PathBuf) -> ModuleServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = [0u8; 4096];
                let n = conn.read(&mut head).unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..n]);
                let path = text.split_whitespace().nth(1).unwrap_or("/");
                let file = root.join(path.trim_start_matches('/'));
                let body = if path.contains("..") {
                    None
                } else {
                    std::fs::read(&file).ok()
                };
                let (status, body) = match body {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", Vec::new()),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: text/javascript\r\n\
                     Access-Control-Allow-Origin: *\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(&body);
            }
        });
        ModuleServer { addr, stop }
    }
}

impl Drop for ModuleServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The same `window.sipt` interface over SIP.js (UserAgent, Registerer,
/// incoming INVITEs accepted); `MODULE` is replaced by the URL of
/// `sip.js/lib/index.js`.
pub(crate) const SIPJS_HARNESS: &str = r#"(async () => {
  const SIP = await import('MODULE');
  const t = { sent: [], received: [], events: [], session: null, ua: null, creds: null };
  const watch = (s) => {
    t.session = s;
    s.stateChange.addListener((st) => t.events.push(st === 'Established' ? 'confirmed' : st === 'Terminated' ? 'ended' : st));
  };
  t.start = async (user, password, domain) => {
    const r = await fetch('/api/sip/turn', { headers: { Authorization: 'Basic ' + btoa(user + ':' + password) } });
    if (r.status !== 200) throw new Error('/api/sip/turn: ' + r.status);
    t.creds = await r.json();
    t.ua = new SIP.UserAgent({
      uri: SIP.UserAgent.makeURI('sip:' + user + '@' + domain),
      transportOptions: { server: 'ws://' + location.host + '/sip' },
      authorizationUsername: user,
      authorizationPassword: password,
      logBuiltinEnabled: false,
      sessionDescriptionHandlerFactoryOptions: {
        peerConnectionConfiguration: { iceServers: t.creds.iceServers, iceTransportPolicy: 'relay' },
      },
      delegate: {
        onInvite: (inv) => {
          watch(inv);
          inv.accept({ sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } } });
        },
      },
    });
    const tr = t.ua.transport;
    const send = tr.send.bind(tr);
    tr.send = (m) => { t.sent.push(String(m)); return send(m); };
    const onMessage = tr.onMessage;
    tr.onMessage = (m) => { t.received.push(String(m)); onMessage(m); };
    await t.ua.start();
    const reg = new SIP.Registerer(t.ua);
    reg.stateChange.addListener((st) => { if (st === 'Registered') t.events.push('registered'); });
    await reg.register();
    return true;
  };
  t.call = (target) => {
    const inv = new SIP.Inviter(t.ua, SIP.UserAgent.makeURI(target), {
      sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } },
    });
    watch(inv);
    inv.invite();
    return true;
  };
  t.hangup = () => { t.session.bye(); return true; };
  t.pc = () => t.session && t.session.sessionDescriptionHandler && t.session.sessionDescriptionHandler.peerConnection;
  window.sipt = t;
  return true;
})()"#;

/// Waits until the call between `pages[a]` and `pages[b]` is connected
/// relay/relay on both with inbound audio growing on both.
fn check_call(pages: &mut [Page], a: usize, b: usize, server: &Server) {
    let connected = "(async () => { const s = await sipt.stats(); \
        return s && s.state === 'connected' && sipt.events.includes('confirmed') ? s : null; })()";
    for i in [a, b] {
        if let Err(e) = pages[i].wait_for(connected, CONNECT) {
            sip_fail(&format!("page {i} not connected: {e}"), pages, server);
        }
    }
    for i in [a, b] {
        let first = pages[i].evaluate("sipt.stats()").unwrap();
        if first["local"] != "relay" || first["remote"] != "relay" {
            sip_fail(
                &format!("page {i}: not relay/relay: {first}"),
                pages,
                server,
            );
        }
        let p0 = first["packets"].as_u64().unwrap_or(0);
        let grown =
            testkit::wait_until(Duration::from_secs(10), Duration::from_millis(300), || {
                let v = pages[i].evaluate("sipt.stats()").ok()?;
                (v["packets"].as_u64().unwrap_or(0) > p0 && v["bytes"].as_u64().unwrap_or(0) > 0)
                    .then_some(v)
            });
        if grown.is_none() {
            let what = format!("page {i}: inbound audio does not grow from {first}");
            sip_fail(&what, pages, server);
        }
    }
}

/// What identifies the caller's device in the INVITE it sent last: its
/// Via host, Call-ID and Contact user.
pub(crate) fn caller_secrets(page: &mut Page) -> Vec<String> {
    let sent: Vec<String> = serde_json::from_value(page.evaluate("sipt.sent").unwrap()).unwrap();
    let via = header_of(&sent, "INVITE ", "Via");
    let host = via
        .split_whitespace()
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert!(host.ends_with(".invalid"), "{via}");
    let contact = header_of(&sent, "INVITE ", "Contact");
    let user = contact
        .split("sip:")
        .nth(1)
        .unwrap()
        .split('@')
        .next()
        .unwrap();
    vec![
        host.to_owned(),
        header_of(&sent, "INVITE ", "Call-ID"),
        user.to_owned(),
    ]
}

/// Nothing the callee received names the caller's device, and the SDP it
/// got holds relay candidates only and no address but the relay's.
fn check_callee_got(page: &mut Page, secrets: &[String], who: &str) {
    check_page_got(page, secrets, who, "INVITE ");
}

/// Nothing the page received names the other party's device (`secrets`),
/// no IPv4 address but the relay's (127.0.0.1) and 0.0.0.0 reached it, and
/// the SDP of the last message it received starting with `start` (an
/// offer's `INVITE `, an answer's `SIP/2.0 200 `) holds relay candidates only.
pub(crate) fn check_page_got(page: &mut Page, secrets: &[String], who: &str, start: &str) {
    let received: Vec<String> =
        serde_json::from_value(page.evaluate("sipt.received").unwrap()).unwrap();
    let with_sdp = received
        .iter()
        .rev()
        .find(|m| m.starts_with(start) && m.contains("\r\nm=audio"))
        .unwrap_or_else(|| panic!("{who} got no {start:?} with SDP"));
    for m in &received {
        for secret in secrets {
            assert!(
                !m.contains(secret.as_str()),
                "{who} received the other party's {secret}:\n{m}"
            );
        }
        for ip in ipv4_literals(m) {
            assert!(
                ip == "127.0.0.1" || ip == "0.0.0.0",
                "address {ip} reached {who}:\n{m}"
            );
        }
    }
    let sdp = with_sdp.split("\r\n\r\n").nth(1).unwrap_or("");
    let candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(!candidates.is_empty(), "{sdp}");
    for c in &candidates {
        assert!(c.contains(" typ relay"), "{c}");
    }
}

/// JsSIP ↔ JsSIP, then JsSIP → SIP.js, in one browser on one server.
#[test]
fn jssip_and_sipjs_calls_through_serve() {
    if !testkit::require_tool("chromium", &["--version"])
        || !testkit::require_tool("node", &["--version"])
    {
        return;
    }
    let Some(bundle) = jssip_bundle() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = sip_config(dir.path(), "");
    let data_dir = dir.path().join("data");
    let accounts = [
        ("alice", "alice-password"),
        ("bob", "bob-password"),
        ("carol", "carol-password"),
    ];
    for (user, pw) in accounts {
        let (ok, _, err) = users(&config, &data_dir, &["add", user], &format!("{pw}\n"));
        assert!(ok, "users add {user}: {err}");
    }
    let log = dir.path().join("serve.log");
    let server = Server::start_logged(&config, &data_dir, "info", Some(&log));
    let modules = ModuleServer::start(js_dir().join("node_modules/sip.js/lib"));
    let browser = Chromium::launch(LaunchOptions::default()).unwrap();
    // Pages of the server's own origin (for /sip's Origin rule and
    // /api/sip/turn); the libraries and harnesses are injected: alice and
    // bob on JsSIP, carol on SIP.js.
    let mut pages: Vec<Page> = (0..3)
        .map(|_| browser.new_page(&server.url("/healthz")).unwrap())
        .collect();
    for p in pages.iter_mut().take(2) {
        p.evaluate_within(&bundle, Duration::from_secs(30)).unwrap();
        p.evaluate(JSSIP_HARNESS).unwrap();
    }
    let module = format!("http://{}/index.js", modules.addr);
    pages[2]
        .evaluate_within(
            &SIPJS_HARNESS.replace("MODULE", &module),
            Duration::from_secs(30),
        )
        .unwrap();
    for p in pages.iter_mut() {
        p.evaluate(STATS_JS).unwrap();
    }
    let deadline = Duration::from_secs(20);
    for (i, (user, pw)) in accounts.iter().enumerate() {
        let js = format!("sipt.start('{user}', '{pw}', '{DOMAIN}')");
        if let Err(e) = pages[i].evaluate(&js) {
            sip_fail(&format!("{user} start: {e}"), &mut pages, &server);
        }
        if let Err(e) = pages[i].wait_for("sipt.events.includes('registered')", deadline) {
            sip_fail(&format!("{user} not registered: {e}"), &mut pages, &server);
        }
    }

    // alice (JsSIP) calls bob (JsSIP); bob answers at once.
    pages[0]
        .evaluate(&format!("sipt.call('sip:bob@{DOMAIN}')"))
        .unwrap();
    check_call(&mut pages, 0, 1, &server);
    let (_, m) = server.get_as_operator("/metrics", &data_dir);
    assert!(metric_sum(&m, "onionrtc_allocations_current") >= 2, "{m}");
    assert_eq!(
        metric_sum(&m, "onionrtc_sip_calls_answered_total"),
        1,
        "{m}"
    );
    // Hold and resume (re-INVITEs forwarded both ways through the B2BUA).
    // JsSIP emits `hold` when it sends the re-INVITE and refuses a new one
    // until that transaction is over: wait for it before each step.
    for (what, js) in [
        ("hold", "sipt.session.hold()"),
        ("unhold", "sipt.session.unhold()"),
    ] {
        let ready = "sipt.session.isReadyToReOffer()";
        if let Err(e) = pages[0].wait_for(ready, deadline) {
            sip_fail(
                &format!("alice not ready to {what}: {e}"),
                &mut pages,
                &server,
            );
        }
        let sent = pages[0].evaluate(js).unwrap();
        assert_eq!(sent, Value::Bool(true), "{js}");
        for (i, who) in [(0, "local"), (1, "remote")] {
            let js = format!("sipt.events.includes('{what}:{who}')");
            if let Err(e) = pages[i].wait_for(&js, deadline) {
                sip_fail(
                    &format!("page {i}: no {what}:{who}: {e}"),
                    &mut pages,
                    &server,
                );
            }
        }
    }
    if let Err(e) = pages[0].wait_for("sipt.session.isReadyToReOffer()", deadline) {
        sip_fail(
            &format!("alice's resume did not complete: {e}"),
            &mut pages,
            &server,
        );
    }
    let mut secrets = caller_secrets(&mut pages[0]);
    // Control: the needles are findable in traffic (the responses to
    // alice echo her own Via and Call-ID).
    let own: Vec<String> =
        serde_json::from_value(pages[0].evaluate("sipt.received").unwrap()).unwrap();
    for needle in &secrets[..2] {
        assert!(
            own.iter().any(|m| m.contains(needle.as_str())),
            "{needle} not in {own:#?}"
        );
    }
    check_callee_got(&mut pages[1], &secrets, "bob");
    // alice hangs up: bob's side ends too.
    pages[0].evaluate("sipt.hangup()").unwrap();
    if let Err(e) = pages[1].wait_for("sipt.events.some(e => e.startsWith('ended'))", deadline) {
        sip_fail(&format!("bob's call did not end: {e}"), &mut pages, &server);
    }

    // alice (JsSIP) calls carol (SIP.js); carol hangs up.
    pages[0]
        .evaluate(&format!("sipt.call('sip:carol@{DOMAIN}')"))
        .unwrap();
    check_call(&mut pages, 0, 2, &server);
    let second = caller_secrets(&mut pages[0]);
    check_callee_got(&mut pages[2], &second, "carol");
    secrets.extend(second);
    pages[2].evaluate("sipt.hangup()").unwrap();
    let alice_ended = "sipt.events.filter(e => e.startsWith('ended')).length >= 2";
    if let Err(e) = pages[0].wait_for(alice_ended, deadline) {
        sip_fail(
            &format!("alice's second call did not end: {e}"),
            &mut pages,
            &server,
        );
    }

    // carol (SIP.js: its own 407 handling) calls bob (JsSIP); bob hangs up.
    pages[2]
        .evaluate(&format!("sipt.call('sip:bob@{DOMAIN}')"))
        .unwrap();
    check_call(&mut pages, 2, 1, &server);
    let carol = caller_secrets(&mut pages[2]);
    check_callee_got(&mut pages[1], &carol, "bob");
    secrets.extend(carol);
    pages[1].evaluate("sipt.hangup()").unwrap();
    let carol_ended = "sipt.events.filter(e => e === 'ended').length >= 2";
    if let Err(e) = pages[2].wait_for(carol_ended, deadline) {
        sip_fail(
            &format!("carol's call did not end: {e}"),
            &mut pages,
            &server,
        );
    }
    let ended = testkit::wait_until(Duration::from_secs(40), Duration::from_millis(250), || {
        let (_, m) = server.get_as_operator("/metrics", &data_dir);
        (metric_sum(&m, "onionrtc_sip_calls") == 0).then_some(())
    });
    assert!(ended.is_some(), "a call outlived its BYE");
    drop(pages);
    drop(browser);
    server.terminate().unwrap();

    // Neither the log (default level) nor the data directory names the
    // caller's SIP URI, Via host, Contact or Call-IDs.
    secrets.push("sip:alice".to_owned());
    secrets.push("sip:carol".to_owned());
    let mut files = vec![(
        "serve.log".to_owned(),
        std::fs::read_to_string(&log).unwrap(),
    )];
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let p = entry.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        files.push((
            p.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    for (name, text) in &files {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{name} holds {secret}");
        }
    }
}

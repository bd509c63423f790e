//! SIP over WebSocket at `/sip` (docs/sip.md): accounts made with
//! `onionrtc users add`, digest registration, `/api/sip/turn`, the Origin
//! and subprotocol rules, bad input (answered 400/413 or closed, counted,
//! the server unharmed), and a JsSIP call between two Chromium pages
//! through our relay (`jssip_call_through_serve`).

use super::*;

use ::sip::digest::ha1;
use ::sip::Algorithm;

pub(crate) const DOMAIN: &str = "sip.test";

/// `serve_config` plus `[sip] enabled = true, domain = "sip.test"`.
pub(crate) fn sip_config(dir: &Path) -> (std::path::PathBuf, u16) {
    let (config, _, web_port) = serve_config(dir, &["udp", "tcp"]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("[sip]\nenabled = true\ndomain = \"{DOMAIN}\"\n"));
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
    let ch = resp
        .lines()
        .find(|l| l.starts_with("WWW-Authenticate:"))
        .unwrap_or_else(|| panic!("no challenge in {resp}"));
    assert!(
        ch.contains("algorithm=MD5"),
        "MD5 must be offered first: {ch}"
    );
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
    let (config, _) = sip_config(dir.path());
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

    // Digest registration (MD5 offered first, for JsSIP and SIP.js).
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

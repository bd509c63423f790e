//! `onionrtc serve` behind Debian's nginx, as docs/deployment.md sets it
//! up (`X-Forwarded-For $proxy_add_x_forwarded_for`, WebSocket upgrade
//! headers), with callers on their own veths:
//!
//! ```text
//!  client ns 0  10.201.0.2 ─┐
//!  client ns 1  10.201.1.2 ─┴─▶ server ns: nginx 10.200.0.2:80 ─▶ serve 127.0.0.1:8080
//!                                           relay udp/tcp 10.200.0.2:3478
//! ```
//!
//! Through nginx: operator views need the token (401 without, 200 with);
//! `/api/whoami` shows each caller's own veth address, not nginx's and not
//! a spoofed `X-Forwarded-For`; one caller's join limit does not lock out
//! the other. Directly on loopback, a foreign `Host` gets 421 even with
//! the token. Negative control: with `trusted_proxies` empty, nginx's
//! header is ignored and everybody is 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::topology::{Netns, Topology, TopologyConfig};

use super::*;

/// serve's web listener inside the server namespace (behind nginx).
const WEB: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// nginx's port on the server address.
const NGINX_PORT: u16 = 80;

/// Writes serve's configuration; `trusted`: nginx (127.0.0.1) is a trusted
/// proxy.
fn serve_config(dir: &Path, trusted: bool) -> PathBuf {
    let path = dir.join(format!("serve-{trusted}.toml"));
    let proxies = if trusted { "[\"127.0.0.1/32\"]" } else { "[]" };
    std::fs::write(
        &path,
        format!(
            r#"[relay]
listen = ["udp://{SERVER_IP}:{TURN_PORT}", "tcp://{SERVER_IP}:{TURN_PORT}"]
relay_ip = "{SERVER_IP}"

[serve]
listen = "{WEB}"
turn_urls = ["turn:{SERVER_IP}:{TURN_PORT}?transport=udp"]
trusted_proxies = {proxies}
hostnames = ["{SERVER_IP}"]
"#
        ),
    )
    .unwrap();
    path
}

/// nginx (master and one worker) with its own configuration, pid and log
/// files in `dir`; stopped by SIGTERM to the master's PID (which stops
/// the worker), then killed by PID.
struct Nginx(Logged);

impl Nginx {
    fn start(ns: &Netns, dir: &Path) -> Nginx {
        let listen = SocketAddr::new(IpAddr::V4(SERVER_IP), NGINX_PORT);
        let conf = testkit::nginx::proxy_config(dir, listen, WEB, None, "");
        let mut cmd = ns.command("nginx");
        cmd.args(testkit::nginx::args(dir, &conf));
        Nginx(Logged::spawn("nginx", ns, cmd))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.terminate(Duration::from_secs(5));
    }
}

#[test]
fn nginx_in_front_of_serve() {
    if !testkit::require_tool("nginx", &["-v"]) {
        return;
    }
    if !testkit::netns::run_isolated("proxy::nginx_in_front_of_serve") {
        return;
    }
    let t0 = Instant::now();
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    let (c1, c2) = (topo.add_client().unwrap(), topo.add_client().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = start_serve(topo.server(), &serve_config(dir.path(), true), &data);
    let nginx = Nginx::start(topo.server(), dir.path());
    let site = SocketAddr::from((SERVER_IP, NGINX_PORT));
    let up = c1
        .run_in(|| {
            testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                (http(site, "GET /healthz", &[]).0 == 200).then_some(())
            })
        })
        .unwrap();
    assert!(
        up.is_some(),
        "nginx does not answer: {}\n{}",
        nginx.0.stderr_tail(20),
        std::fs::read_to_string(dir.path().join("nginx-error.log")).unwrap_or_default()
    );
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());

    // Operator views through nginx: the token, not the (loopback) address.
    for path in ["/api/calls", "/calls", "/metrics"] {
        let target = format!("GET {path}");
        let (without, _) = c1.run_in(|| http(site, &target, &[])).unwrap();
        assert_eq!(without, 401, "{path} without a token through nginx");
        let (with, body) = c1.run_in(|| http(site, &target, &[&bearer])).unwrap();
        assert_eq!(with, 200, "{path} with the token through nginx: {body}");
        let (wrong, _) = c1
            .run_in(|| http(site, &target, &["Authorization: Bearer not-the-token"]))
            .unwrap();
        assert_eq!(wrong, 403, "{path} with a wrong token");
    }

    // Who each caller is: its own veth address, whatever it claims.
    let who = |ns: &Netns, extra: &[&str]| -> String {
        let (status, body) = ns.run_in(|| http(site, "GET /api/whoami", extra)).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["ip"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(who(&c1, &[]), c1.addr().to_string());
    assert_eq!(who(&c2, &[]), c2.addr().to_string());
    assert_eq!(
        who(&c1, &["X-Forwarded-For: 1.2.3.4"]),
        c1.addr().to_string(),
        "a spoofed X-Forwarded-For was believed"
    );
    assert_eq!(
        who(&c1, &["X-Real-IP: 1.2.3.4", "Forwarded: for=1.2.3.4"]),
        c1.addr().to_string()
    );

    // Join limits per caller: c1 spends its 20 joins a minute (WebSocket
    // through nginx), then c2 still joins.
    let (joined, refused) = c1
        .run_in(|| {
            let mut ws = ws_connect(site, &[]).unwrap();
            let mut joined = 0;
            let mut refused = None;
            for i in 0..25 {
                let r = ws_join(&mut ws, &format!("limit-{i}"));
                if r["type"] == "joined" {
                    joined += 1;
                    ws_send(&mut ws, &serde_json::json!({"type": "bye"}));
                } else {
                    refused = Some(r);
                    break;
                }
            }
            (joined, refused)
        })
        .unwrap();
    assert_eq!(joined, 20, "c1's joins before the limit");
    assert_eq!(
        refused.as_ref().map(|r| r["code"].clone()),
        Some(Value::from("too-many-joins")),
        "{refused:?}"
    );
    let other = c2
        .run_in(|| {
            let mut ws = ws_connect(site, &[]).unwrap();
            ws_join(&mut ws, "other-caller")
        })
        .unwrap();
    assert_eq!(other["type"], "joined", "c2 locked out by c1: {other}");

    // WebSockets are capped per caller, not per proxy: c1 holds 64, the
    // 65th is refused, c2 still gets one.
    let (held, refused) = c1
        .run_in(|| {
            let held: Vec<Ws> = (0..64).map_while(|_| ws_connect(site, &[]).ok()).collect();
            (held.len(), ws_connect(site, &[]).err())
        })
        .unwrap();
    assert_eq!(held, 64, "c1's WebSockets before the cap");
    let refused = refused.expect("c1's 65th WebSocket was accepted");
    assert!(refused.contains("503"), "{refused}");
    let c2_ws = c2.run_in(|| ws_connect(site, &[]).map(drop)).unwrap();
    assert!(c2_ws.is_ok(), "c2 refused because of c1: {c2_ws:?}");

    // DNS rebinding: a foreign Host gets 421, directly on loopback and
    // through nginx (which passes the client's Host on), token or not.
    let attacker = "Host: attacker.example:8080";
    for path in ["/api/calls", "/calls", "/metrics"] {
        let target = format!("GET {path}");
        let (direct, _) = topo
            .server()
            .run_in(|| http(WEB, &target, &[attacker, &bearer]))
            .unwrap();
        assert_eq!(direct, 421, "{path} directly with a foreign Host");
        let (proxied, _) = c1
            .run_in(|| http(site, &target, &[attacker, &bearer]))
            .unwrap();
        assert_eq!(proxied, 421, "{path} through nginx with a foreign Host");
        // The site's own names still work directly.
        let (own, _) = topo
            .server()
            .run_in(|| http(WEB, &target, &[&bearer]))
            .unwrap();
        assert_eq!(own, 200, "{path} directly on loopback with the token");
    }
    let (status, metrics) = c1
        .run_in(|| http(site, "GET /metrics", &[&bearer]))
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "onionrtc_signal_forwarded_malformed_total"),
        Some(0),
        "{metrics}"
    );

    // Negative control: nobody trusted → nginx's header is ignored.
    assert!(serve.terminate(Duration::from_secs(15)).is_some());
    // The server knew each caller's address from nginx's header; it is in
    // neither its log nor its data directory.
    assert!(
        serve.stderr().iter().any(|l| l.contains("web listening")),
        "serve's log was not captured"
    );
    for client in [c1.addr().to_string(), c2.addr().to_string()] {
        let logged: Vec<String> = serve
            .stderr()
            .into_iter()
            .filter(|l| l.contains(&client))
            .collect();
        assert!(logged.is_empty(), "serve logged {client}: {logged:#?}");
        for (path, bytes) in files_bytes(&data) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&client), "{} holds {client}", path.display());
        }
    }
    drop(serve);
    let _serve = start_serve(topo.server(), &serve_config(dir.path(), false), &data);
    let seen = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let (status, body) = c1.run_in(|| http(site, "GET /api/whoami", &[])).unwrap();
        (status == 200).then_some(body)
    })
    .expect("serve did not come back behind nginx");
    let v: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(v["ip"], "127.0.0.1", "{seen}");
    eprintln!("nginx test took {:?}", t0.elapsed());
}

//! Who the client is and what it may hold: forwarded addresses from trusted
//! proxies only, per-client join limits and WebSocket caps, per-address TCP
//! caps, header and idle timeouts, the operator's Host rule and token form.

use std::time::{Duration, Instant};

use serde_json::json;
use signal::{Cidr, ForwardRule, SignalConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{config, http_raw, start, Client, Server, ADMIN, ADMIN_TOKEN, WAIT};

fn behind_proxy() -> SignalConfig {
    SignalConfig {
        forward: ForwardRule {
            trusted: vec!["127.0.0.1/32".parse::<Cidr>().unwrap()],
            ..ForwardRule::default()
        },
        metrics: Some(std::sync::Arc::new(String::new)),
        ..config()
    }
}

async fn whoami(server: &Server, xff: Option<&str>) -> serde_json::Value {
    let h = xff.map(|v| format!("X-Forwarded-For: {v}"));
    let headers: Vec<&str> = h.iter().map(String::as_str).collect();
    server.get("/api/whoami", &headers).await.json()
}

async fn metric(server: &Server, name: &str) -> u64 {
    let r = server.get("/metrics", &[ADMIN]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{}", r.body))
}

#[tokio::test]
async fn forwarded_address_only_from_trusted_proxies() {
    let server = start(behind_proxy()).await;
    assert_eq!(
        whoami(&server, Some("1.2.3.4, 203.0.113.9")).await,
        json!({"ip": "203.0.113.9"})
    );
    // A trusted proxy's own request.
    assert_eq!(whoami(&server, None).await["ip"], "127.0.0.1");
    // Unreadable: the proxy's address, counted.
    assert_eq!(whoami(&server, Some("not-an-ip")).await["ip"], "127.0.0.1");
    assert_eq!(
        metric(&server, "onionrtc_signal_forwarded_malformed_total").await,
        1
    );
    // Another header is never read.
    let r = server
        .get("/api/whoami", &["X-Real-IP: 203.0.113.9"])
        .await
        .json();
    assert_eq!(r["ip"], "127.0.0.1");

    // Nobody trusted (the default): the header is ignored.
    let plain = start(config()).await;
    assert_eq!(whoami(&plain, Some("203.0.113.9")).await["ip"], "127.0.0.1");
}

async fn ws_from(server: &Server, client: &str) -> Result<Client, String> {
    Client::connect_with(&server.ws_url(), &[("X-Forwarded-For", client)])
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn limits_count_the_forwarded_client() {
    let server = start(SignalConfig {
        joins_per_minute_per_ip: 2,
        max_connections_per_ip: 3,
        ..behind_proxy()
    })
    .await;
    // Joins: A exhausts its limit, B is not affected.
    let mut a = ws_from(&server, "203.0.113.1").await.unwrap();
    assert_eq!(a.join("r1").await["type"], "joined");
    a.send(json!({"type": "bye"})).await;
    assert_eq!(a.join("r2").await["type"], "joined");
    a.send(json!({"type": "bye"})).await;
    assert_eq!(a.join("r3").await["code"], "too-many-joins");
    let mut b = ws_from(&server, "203.0.113.2").await.unwrap();
    assert_eq!(b.join("r4").await["type"], "joined");

    // WebSockets per client: A holds 1 (+2 = 3), the 4th is refused.
    let a2 = ws_from(&server, "203.0.113.1").await.unwrap();
    let a3 = ws_from(&server, "203.0.113.1").await.unwrap();
    let e = ws_from(&server, "203.0.113.1").await.err().unwrap();
    assert!(e.contains("503"), "{e}");
    let b2 = ws_from(&server, "203.0.113.2").await;
    assert!(b2.is_ok());
    // Upgraded connections keep their slots: a, b, a2, a3, b2 and this
    // request.
    assert_eq!(metric(&server, "onionrtc_signal_web_connections").await, 6);
    let refused = server.get("/metrics", &[ADMIN]).await.body;
    assert!(
        refused.contains("onionrtc_signal_web_refused_total{reason=\"websocket_per_address\"} 1\n"),
        "{refused}"
    );
    // A slot comes back when a WebSocket closes.
    a2.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        if ws_from(&server, "203.0.113.1").await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the slot did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((a3, b2));
}

/// Whether the server closed `s` (EOF or reset) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn per_address_tcp_cap_and_timeouts() {
    let server = start(SignalConfig {
        max_connections_per_ip: 4,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        metrics: Some(std::sync::Arc::new(String::new)),
        ..config()
    })
    .await;
    // Untrusted peer 127.0.0.1: 4 connections; the 5th is closed at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut fifth = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut fifth, Duration::from_secs(2)).await);
    // One sends one byte of a header: closed by the header timeout. One
    // sends nothing: closed by the idle timeout (or the header timeout).
    held[0].write_all(b"G").await.unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut held[0], Duration::from_secs(5)).await);
    assert!(closed_within(&mut held[1], Duration::from_secs(5)).await);
    eprintln!("one-byte connection closed after {:?}", t0.elapsed());
    // A keep-alive connection idle after a request is closed too.
    held[2]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut held[2], Duration::from_secs(6)).await);
    drop(held);
    // Slots are back: requests work again.
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer test-admin-token\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        if text.starts_with("HTTP/1.1 200") {
            break text;
        }
        assert!(Instant::now() < deadline, "no slot came back: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        body.contains("onionrtc_signal_web_refused_total{reason=\"per_address\"} 1\n"),
        "{body}"
    );
}

#[tokio::test]
async fn total_cap() {
    let server = start(SignalConfig {
        max_web_connections: 16,
        metrics: Some(std::sync::Arc::new(String::new)),
        ..config()
    })
    .await;
    assert_eq!(server.state.max_web_connections(), 16);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(2)).await);
    drop(held);
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let r = server.get("/metrics", &[ADMIN]).await;
        if r.status == 200 {
            break r.body;
        }
        assert!(Instant::now() < deadline, "no slot came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        text.contains("onionrtc_signal_web_refused_total{reason=\"total\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("onionrtc_signal_web_connections_max 16\n"),
        "{text}"
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = start(SignalConfig {
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(1),
        metrics: Some(std::sync::Arc::new(String::new)),
        ..config()
    })
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(4)).await);
    assert_eq!(
        metric(&server, "onionrtc_signal_web_idle_closed_total").await,
        1
    );
}

#[tokio::test]
async fn operator_host_rule_and_token_form() {
    let server = start(config()).await;
    // DNS rebinding: a foreign Host gets 421, token or not.
    for path in ["/api/calls", "/calls", "/metrics", "/api/calls/00"] {
        let r = server
            .get(path, &["Host: attacker.example:8080", ADMIN])
            .await;
        assert_eq!(r.status, 421, "{path}");
    }
    // The app itself answers any Host.
    assert_eq!(
        server
            .get("/healthz", &["Host: attacker.example:8080"])
            .await
            .status,
        200
    );
    // /calls without credentials: the form.
    let r = server.get("/calls", &[]).await;
    assert_eq!(r.status, 401);
    assert!(
        r.body.contains("<form method=\"post\" action=\"/calls\""),
        "{}",
        r.body
    );

    let post = |extra: &str, token: &str| {
        let body = format!("token={token}");
        format!(
            "POST /calls HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            server.addr,
            body.len()
        )
    };
    // Cross-site posts are refused even with the right token.
    let r = http_raw(
        server.addr,
        &post("Origin: https://evil.example\r\n", ADMIN_TOKEN),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
    // A wrong token: no session.
    let origin = format!("Origin: http://{}\r\n", server.addr);
    let r = http_raw(server.addr, &post(&origin, "wrong-token")).await;
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
    // The right one: a session cookie (not the token).
    let r = http_raw(server.addr, &post(&origin, ADMIN_TOKEN)).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r.header("set-cookie").unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/calls"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains(ADMIN_TOKEN), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    let with_cookie = format!("Cookie: {pair}");
    assert_eq!(server.get("/calls", &[&with_cookie]).await.status, 200);
    assert_eq!(server.get("/calls/00ff", &[&with_cookie]).await.status, 404);
    // The cookie opens the pages only, not the API or the metrics.
    assert_eq!(server.get("/api/calls", &[&with_cookie]).await.status, 401);
    assert_eq!(server.get("/metrics", &[&with_cookie]).await.status, 401);
}

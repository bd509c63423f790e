//! The web proxy in front of our signaling server: `/api/whoami` shows the
//! connector's upstream socket, `/connector.json` is answered locally, the
//! signaling WebSocket works with the proxy's Origin (rewritten) and a
//! foreign Origin is still refused.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use connector::Endpoint;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

/// The signaling server on 127.0.0.1:0, stopped when the runtime ends.
async fn signal_server(dir: &std::path::Path) -> SocketAddr {
    let config = signal::SignalConfig {
        data_dir: dir.join("signal"),
        turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        turn_secret: "test-secret".into(),
        ..signal::SignalConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(signal::serve(config, listener, std::future::pending()));
    addr
}

/// A GET with `Connection: close`: (status, headers, body, our local port).
async fn get(addr: SocketAddr, host: &str, path: &str) -> (u16, String, String, u16) {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let local = s.local_addr().unwrap().port();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned(), local)
}

/// Connects a WebSocket to `ws://host/ws` with `origin`; joins `room` and
/// returns the first answer, or the HTTP status of a refused upgrade.
async fn ws_join(host: &str, origin: &str, room: &str) -> Result<Value, u16> {
    let mut req = format!("ws://{host}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(origin).unwrap());
    let (mut ws, _) = match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
    {
        Ok(v) => v,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            return Err(resp.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    };
    let join = serde_json::json!({"type": "join", "room": room}).to_string();
    ws.send(Message::Text(join.into())).await.unwrap();
    for _ in 0..10 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return Ok(serde_json::from_str(&t).unwrap());
        }
    }
    panic!("no text message");
}

#[test]
fn web_proxy() {
    let relay = TestRelay::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let site = rt.block_on(signal_server(dir.path()));
    let mut c = config(relay.tcp_endpoint());
    c.web = Some(Endpoint::parse_web(&format!("http://{site}")).unwrap());
    let h = start(&rt, c);
    let web = h.web_addr().unwrap();
    let host = web.to_string();
    rt.block_on(async {
        // /api/whoami through the proxy: the server sees the connector's
        // upstream socket, not ours.
        let (status, _, body, ours) = get(web, &host, "/api/whoami").await;
        assert_eq!(status, 200, "{body}");
        let who: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(who["ip"], "127.0.0.1");
        let port = who["port"].as_u64().unwrap();
        assert_ne!(port, u64::from(ours), "the site saw the connector's socket");
        assert_ne!(port, u64::from(web.port()));
        // Straight to the site it is our own socket.
        let (_, _, body, ours) = get(site, &site.to_string(), "/api/whoami").await;
        let who: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(who["port"].as_u64(), Some(u64::from(ours)));

        // /connector.json is answered here.
        let (status, head, body, _) = get(web, &host, "/connector.json").await;
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains("cache-control: no-store"),
            "{head}"
        );
        let j: Value = serde_json::from_str(&body).unwrap();
        let turn = h.turn_addr();
        assert_eq!(j["turn"], format!("turn:{turn}?transport=udp"));
        assert_eq!(j["turnTcp"], format!("turn:{turn}?transport=tcp"));
        assert_eq!(j["mode"], "direct");
        // The site's public origin, for the room link the page shares.
        assert_eq!(j["site"], format!("http://{site}"));
        // The site itself has none.
        let (status, _, _, _) = get(site, &site.to_string(), "/connector.json").await;
        assert_eq!(status, 404);

        // The web app's files come through.
        let (status, _, _, _) = get(web, &host, "/healthz").await;
        assert_eq!(status, 200);

        // A page on another name (DNS rebinding) is refused.
        let (status, _, _, _) = get(web, &format!("evil.example:{}", web.port()), "/").await;
        assert_eq!(status, 421);

        // The signaling WebSocket with the proxy's own Origin: rewritten
        // to the site's, so the origin check passes.
        let joined = ws_join(&host, &format!("http://{host}"), "room1")
            .await
            .unwrap();
        assert_eq!(joined["type"], "joined", "{joined}");
        assert_eq!(joined["room"], "room1");
        let by_name = format!("localhost:{}", web.port());
        let joined = ws_join(&by_name, &format!("http://{by_name}"), "room2")
            .await
            .unwrap();
        assert_eq!(joined["type"], "joined", "{joined}");
        // A foreign page's Origin is passed on as it is, and refused.
        assert_eq!(
            ws_join(&host, "https://evil.example", "room3").await,
            Err(403)
        );
        // Even one naming another local port.
        assert_eq!(
            ws_join(
                &host,
                &format!("http://127.0.0.1:{}", web.port() ^ 1),
                "room4"
            )
            .await,
            Err(403)
        );
    });
    let s = h.stats();
    assert!(s.web_requests >= 6, "{s:?}");
    assert_eq!(s.web_upgrades, 2, "refused upgrades are not tunnels: {s:?}");
    stop(&rt, h);
}

#[test]
fn web_upstream_down_is_502() {
    let relay = TestRelay::start();
    let rt = runtime();
    let closed = free_port();
    let mut c = config(relay.tcp_endpoint());
    c.web = Some(Endpoint::parse_web(&format!("http://127.0.0.1:{closed}")).unwrap());
    let h = start(&rt, c);
    let web = h.web_addr().unwrap();
    rt.block_on(async {
        let (status, _, _, _) = get(web, &web.to_string(), "/").await;
        assert_eq!(status, 502);
        // /connector.json does not need the site.
        let (status, _, _, _) = get(web, &web.to_string(), "/connector.json").await;
        assert_eq!(status, 200);
    });
    stop(&rt, h);
}

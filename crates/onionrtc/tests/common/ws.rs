//! Blocking signaling WebSocket clients for tests (tungstenite), shared by
//! the `privacy` and `serve` test binaries (`#[path]`-included).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A WebSocket to `ws://addr/ws` (blocking, 5 s read timeout).
pub type Ws = tungstenite::WebSocket<TcpStream>;

/// Opens the signaling WebSocket with extra request headers.
pub fn ws_connect(addr: SocketAddr, headers: &[(&'static str, &str)]) -> Result<Ws, String> {
    ws_connect_with(addr, headers, Duration::from_secs(5))
}

/// [`ws_connect`] with a longer read timeout (e.g. through Tor).
#[allow(dead_code)] // not every binary that includes this file uses it
pub fn ws_connect_within(addr: SocketAddr, limit: Duration) -> Result<Ws, String> {
    ws_connect_with(addr, &[], limit)
}

fn ws_connect_with(
    addr: SocketAddr,
    headers: &[(&'static str, &str)],
    limit: Duration,
) -> Result<Ws, String> {
    use tungstenite::client::IntoClientRequest as _;
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (k, v) in headers {
        req.headers_mut()
            .append(*k, v.parse().map_err(|_| format!("bad header {v}"))?);
    }
    tungstenite::client(req, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Sends one JSON message.
pub fn ws_send(ws: &mut Ws, v: &Value) {
    ws.send(tungstenite::Message::text(v.to_string())).unwrap();
}

/// The next JSON text message (pings are skipped); panics on timeout.
pub fn ws_recv(ws: &mut Ws) -> Value {
    for _ in 0..20 {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => return serde_json::from_str(&t).unwrap(),
            Ok(_) => {}
            Err(e) => panic!("WebSocket read: {e}"),
        }
    }
    panic!("no text message");
}

/// Joins `room`; the server's answer (`joined` or an `error`).
pub fn ws_join(ws: &mut Ws, room: &str) -> Value {
    ws_send(ws, &serde_json::json!({"type": "join", "room": room}));
    ws_recv(ws)
}

/// Reads JSON text messages until one satisfies `want` (returned) or
/// `limit` passes (`Err` with what was read meanwhile). Read timeouts are
/// waited through; a closed socket ends the wait.
#[allow(dead_code)] // not every including binary uses it
pub fn ws_wait(
    ws: &mut Ws,
    limit: Duration,
    want: impl Fn(&Value) -> bool,
) -> Result<Value, Vec<Value>> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if want(&v) {
                    return Ok(v);
                }
                seen.push(v);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    Err(seen)
}

//! A server on 127.0.0.1:0 with a temporary data directory, a WebSocket
//! client and a minimal HTTP/1.1 client. Every wait has a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use signal::{SignalConfig, SignalState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The TURN REST secret of test servers.
pub const SECRET: &str = "test-secret";
/// The TURN URLs of test servers.
pub const TURN_URLS: &[&str] = &[
    "turn:127.0.0.1:3478?transport=udp",
    "turn:127.0.0.1:3478?transport=tcp",
];
/// The admin token of test servers, and the header that presents it.
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const ADMIN: &str = "Authorization: Bearer test-admin-token";
/// How long a test waits for one message.
pub const WAIT: Duration = Duration::from_secs(5);

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: SignalState,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The test configuration: loopback TURN URLs, a secret, a temp data dir
/// filled in by [`start`].
pub fn config() -> SignalConfig {
    SignalConfig {
        turn_urls: TURN_URLS.iter().map(|s| (*s).to_owned()).collect(),
        turn_secret: SECRET.to_owned(),
        relay_addresses: vec!["203.0.113.0/24".parse().unwrap()],
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        ..SignalConfig::default()
    }
}

/// Starts `serve_state` on 127.0.0.1:0.
pub async fn start(mut config: SignalConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    config.data_dir = dir.path().join("data");
    let mut server = start_with_data_dir(config).await;
    server._dir = Some(dir);
    server
}

/// Starts `serve_state` on 127.0.0.1:0 with `config.data_dir` as it is
/// (the caller's directory, which outlives the server).
pub async fn start_with_data_dir(config: SignalConfig) -> Server {
    // Blocking (and PostgreSQL's client must not run on an async task).
    let state = tokio::task::spawn_blocking(move || SignalState::new(config))
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(signal::serve_state(state.clone(), listener, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        state,
        _dir: None,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Server {
    /// `ws://addr/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Connects a WebSocket client (no `Origin`, like a non-browser client).
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url(), None).await.unwrap()
    }

    /// Connects and joins `room`; returns the client and its `joined`.
    pub async fn joined(&self, room: &str) -> (Client, Value) {
        let mut c = self.client().await;
        let j = c.join(room).await;
        assert_eq!(j["type"], "joined", "{j}");
        (c, j)
    }

    /// A GET request with extra header lines (`"Name: value"`).
    pub async fn get(&self, path: &str, headers: &[&str]) -> HttpResponse {
        http_get(self.addr, path, headers).await
    }

    /// A POST request with a form body
    /// (`application/x-www-form-urlencoded`).
    pub async fn post_form(&self, path: &str, headers: &[&str], body: &str) -> HttpResponse {
        let mut all = vec![
            "Content-Type: application/x-www-form-urlencoded".to_owned(),
            format!("Content-Length: {}", body.len()),
        ];
        all.extend(headers.iter().map(|h| (*h).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        http_request(self.addr, "POST", path, &all, body).await
    }

    /// Stops the server and waits for `serve_state` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(15), task).await??,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking JSON text frames.
pub struct Client {
    ws: Ws,
}

impl Client {
    /// Connects, with an `Origin` header if given.
    pub async fn connect(
        url: &str,
        origin: Option<&str>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        Client::connect_with(url, &headers).await
    }

    /// Connects with extra request headers.
    pub async fn connect_with(
        url: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut()
                .append(*k, HeaderValue::from_str(v).unwrap());
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect timed out")?;
        Ok(Client { ws })
    }

    /// Sends a JSON value.
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Sends a text frame (errors ignored: the server may have closed).
    pub async fn send_text(&mut self, text: &str) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    /// The next JSON message (panics on timeout or close).
    pub async fn recv(&mut self) -> Value {
        match self.next_text(WAIT).await {
            Some(t) => serde_json::from_str(&t).unwrap(),
            None => panic!("no message: closed or timed out"),
        }
    }

    /// The next text frame within `wait`; `None` on close or timeout.
    pub async fn next_text(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Binary(_)) => panic!("binary frame from server"),
                Ok(Message::Close(_)) | Err(_) => return None,
            }
        }
    }

    /// Asserts that nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(t) = self.next_text(wait).await {
            panic!("unexpected message: {t}");
        }
    }

    /// Waits until the server closes the connection; true if it did
    /// within `wait`. Text frames before the close are returned too.
    pub async fn closed(&mut self, wait: Duration) -> (bool, Vec<String>) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut texts = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return (false, texts),
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                    return (true, texts)
                }
                Ok(Some(Ok(Message::Text(t)))) => texts.push(t.to_string()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Sends `join` and returns the answer.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(serde_json::json!({"type": "join", "room": room}))
            .await;
        self.recv().await
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The client's local port for this request.
    pub local_port: u16,
}

impl HttpResponse {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `GET path` over a fresh connection (`Connection: close`).
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[&str]) -> HttpResponse {
    http_request(addr, "GET", path, headers, "").await
}

/// One request over a fresh connection (`Connection: close`); `Host` is
/// added unless `headers` has one.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> HttpResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    req.push_str("Connection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    http_raw(addr, &req).await
}

/// Sends `req` (a whole HTTP/1.1 request) and reads the response to EOF.
pub async fn http_raw(addr: SocketAddr, req: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local_port = stream.local_addr().unwrap().port();
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("http timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
        local_port,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

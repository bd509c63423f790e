//! The web proxy: the signaling site on a loopback port, over the same
//! upstream route as TURN, so the signaling server sees only the exit.
//!
//! ```text
//! browser ──HTTP/1.1──▶ connection task (hyper server, upgrades on)
//!   GET /connector.json  → answered here (the local TURN URLs and mode)
//!   GET /connector/flows → answered here (each TURN flow's circuit figures)
//!   GET /connector/events → answered here: server-sent events, one
//!                          `degraded` per flow whose circuit degraded
//!                          (same origin only)
//!   Upgrade: websocket   → a fresh upstream connection; after 101 both
//!                          upgraded streams are copied byte for byte
//!   anything else        → the connection's upstream (dialled on first
//!                          use, kept for the next request; one SOCKS
//!                          identity per browser connection)
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::config::Endpoint;
use crate::dial::Dialer;
use crate::headers;
use crate::stats::Stats;
use crate::Shutdown;

type Body = BoxBody<Bytes, hyper::Error>;

/// How long the site may take to answer (headers).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a kept upstream connection may take to be ready again.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for a browser connection.
const DRAIN: Duration = Duration::from_secs(2);

/// What the proxy needs.
#[derive(Debug)]
pub(crate) struct Web {
    pub(crate) site: Endpoint,
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) dialer: Dialer,
    pub(crate) connector_json: Bytes,
    pub(crate) registry: Arc<crate::health::Registry>,
    pub(crate) port: u16,
    pub(crate) stats: Arc<Stats>,
    pub(crate) max_connections: usize,
    /// How long a browser may take to send a request's headers (and stay
    /// idle between requests).
    pub(crate) header_timeout: Duration,
}

/// The body of `/connector.json`: the local TURN URLs, the mode, and the
/// site's public origin (`site`), so that the room link the page shares
/// names the site and not this loopback address, which nobody else can open.
pub(crate) fn connector_json(turn: std::net::SocketAddr, mode: &str, site: &str) -> Bytes {
    let value = serde_json::json!({
        "turn": format!("turn:{turn}?transport=udp"),
        "turnTcp": format!("turn:{turn}?transport=tcp"),
        "mode": mode,
        "site": site,
    });
    Bytes::from(value.to_string())
}

/// Accepts browser connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, web: Arc<Web>, mut shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(web.max_connections));
    loop {
        let conn = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            r = listener.accept() => match r {
                Ok((conn, _)) => conn,
                Err(e) => {
                    tracing::debug!("web: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            Stats::inc(&web.stats.web_refused);
            tracing::debug!("web: too many connections");
            continue;
        };
        tokio::spawn(connection(Arc::clone(&web), conn, permit, shutdown.clone()));
    }
}

async fn connection(
    web: Arc<Web>,
    conn: TcpStream,
    _permit: OwnedSemaphorePermit,
    shutdown: Shutdown,
) {
    let _ = conn.set_nodelay(true);
    let upstream: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
    let stop = shutdown.clone();
    let header_timeout = web.header_timeout;
    let stats = Arc::clone(&web.stats);
    let service = hyper::service::service_fn(move |req| {
        let (web, upstream, stop) = (Arc::clone(&web), Arc::clone(&upstream), stop.clone());
        async move { Ok::<_, Infallible>(handle(&web, &upstream, req, stop).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let served = builder
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades();
    tokio::pin!(served);
    let mut shutdown = shutdown;
    tokio::select! {
        r = served.as_mut() => {
            // hyper's timer runs while it waits for a request's headers:
            // for the first request and between kept-alive ones.
            if r.is_err_and(|e| e.is_timeout()) {
                Stats::inc(&stats.web_header_timeouts);
            }
        }
        () = shutdown.wait() => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, served.as_mut()).await;
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn bad_gateway(why: &str) -> Response<Body> {
    tracing::warn!("web: {why}");
    text(
        StatusCode::BAD_GATEWAY,
        "onionrtc connect: the site could not be reached through the connector's upstream\n",
    )
}

async fn handle(
    web: &Web,
    upstream: &Mutex<Option<SendRequest<Incoming>>>,
    mut req: Request<Incoming>,
    shutdown: Shutdown,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host.filter(|h| headers::is_local_host(h, web.port)) else {
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            "onionrtc connect: open the site at http://127.0.0.1:PORT/ (the connector's own address)\n",
        );
    };
    let local_origin = format!("http://{host}");
    let own = match req.uri().path() {
        "/connector.json" => Some(Own::Json(web.connector_json.clone())),
        "/connector/flows" => Some(Own::Json(web.registry.json())),
        "/connector/events" => Some(Own::Events),
        _ => None,
    };
    if let Some(own) = own {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        if !same_origin(req.headers(), &local_origin) {
            return text(
                StatusCode::FORBIDDEN,
                "onionrtc connect: only the connector's own pages may ask\n",
            );
        }
        let body = match own {
            Own::Json(b) => Full::new(b).map_err(|n| match n {}).boxed(),
            Own::Events => return events(web, shutdown),
        };
        let mut r = Response::new(body);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    let upgrade = headers::is_upgrade(req.headers());
    headers::to_upstream(req.headers_mut(), &web.site, &local_origin, upgrade);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    match path.parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad request target\n"),
    }
    *req.version_mut() = Version::HTTP_11;
    Stats::inc(&web.stats.web_requests);
    let response = if upgrade {
        tunnel(web, req, shutdown).await
    } else {
        forward(web, upstream, req).await
    };
    match response {
        Ok(mut r) => {
            let switching = r.status() == StatusCode::SWITCHING_PROTOCOLS;
            headers::to_browser(r.headers_mut(), &web.site, &local_origin, switching);
            r.map(|b| b.boxed())
        }
        Err(why) => bad_gateway(&why),
    }
}

/// What the connector answers itself.
enum Own {
    Json(Bytes),
    Events,
}

/// Whether a request to the connector's own endpoints comes from its own
/// pages: no `Origin` (a same-origin GET) or its own origin, and no
/// `Sec-Fetch-Site` naming another site. The `Host` check has passed.
fn same_origin(h: &hyper::HeaderMap, local_origin: &str) -> bool {
    let origin_ok = h
        .get(header::ORIGIN)
        .is_none_or(|o| o.as_bytes() == local_origin.as_bytes());
    let site_ok = h
        .get("sec-fetch-site")
        .is_none_or(|s| matches!(s.as_bytes(), b"same-origin" | b"none"));
    origin_ok && site_ok
}

/// Server-sent events queued per subscriber.
const EVENTS_QUEUE: usize = 16;
/// A comment line this often keeps the stream open (and finds a closed
/// browser connection).
const EVENTS_KEEPALIVE: Duration = Duration::from_secs(15);

/// `/connector/events`: a `text/event-stream` of `degraded` events until
/// the browser goes or the connector stops.
fn events(web: &Web, mut shutdown: Shutdown) -> Response<Body> {
    let mut events = web.registry.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(EVENTS_QUEUE);
    tokio::spawn(async move {
        if tx
            .send(Bytes::from_static(b"retry: 1000\n: connected\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.wait() => return,
                e = events.recv() => match e {
                    Ok(b) => b,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep(EVENTS_KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
            };
            if tx.send(next).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(EventBody(rx).boxed());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A response body fed by a channel.
struct EventBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// A new HTTP/1.1 connection to the site (upgrades enabled).
async fn open(web: &Web) -> Result<SendRequest<Incoming>, String> {
    let io = web
        .dialer
        .dial(&web.site, web.tls.as_ref(), None)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake with {} failed: {e}", web.site.authority()))?;
    // Ends when the sender is dropped and the connection is idle, or the
    // site closes it.
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Sends `req` on the browser connection's kept upstream connection (or a
/// new one), once more on a new one if the kept one was found closed.
async fn forward(
    web: &Web,
    upstream: &Mutex<Option<SendRequest<Incoming>>>,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, String> {
    let mut slot = upstream.lock().await;
    let mut req = req;
    for attempt in 0..2 {
        let kept = match slot.take() {
            Some(mut s) => match tokio::time::timeout(READY_TIMEOUT, s.ready()).await {
                Ok(Ok(())) => Some(s),
                _ => None,
            },
            None => None,
        };
        let mut sender = match kept {
            Some(s) => s,
            None => open(web).await?,
        };
        let sent = tokio::time::timeout(RESPONSE_TIMEOUT, sender.try_send_request(req)).await;
        match sent {
            Ok(Ok(resp)) => {
                *slot = Some(sender);
                return Ok(resp);
            }
            Ok(Err(mut e)) => match e.take_message() {
                Some(back) if attempt == 0 => req = back,
                _ => return Err(format!("the site failed to answer: {}", e.error())),
            },
            Err(_) => {
                return Err(format!(
                    "the site did not answer within {RESPONSE_TIMEOUT:?}"
                ))
            }
        }
    }
    Err("the site's connection closed twice".into())
}

/// Forwards an Upgrade request on a new upstream connection; on 101 joins
/// the two upgraded streams.
async fn tunnel(
    web: &Web,
    mut req: Request<Incoming>,
    mut shutdown: Shutdown,
) -> Result<Response<Incoming>, String> {
    let browser = hyper::upgrade::on(&mut req);
    let mut sender = open(web).await?;
    let mut resp = match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(format!("the site failed to answer an upgrade: {e}")),
        Err(_) => {
            return Err(format!(
                "the site did not answer within {RESPONSE_TIMEOUT:?}"
            ))
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp);
    }
    Stats::inc(&web.stats.web_upgrades);
    let site = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (b, s) = tokio::join!(browser, site);
        let (Ok(b), Ok(s)) = (b, s) else {
            return;
        };
        let (mut b, mut s) = (TokioIo::new(b), TokioIo::new(s));
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut b, &mut s) => {}
            () = shutdown.wait() => {}
        }
        drop(sender);
    });
    Ok(resp)
}

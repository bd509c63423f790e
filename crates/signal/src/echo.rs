//! The echo test's HTTP side: `GET /api/echo` (TURN credentials) and
//! `POST /api/echo` (an SDP offer in, `201 Created` with the answer out),
//! the `POST /offer` pattern of native VoIP clients, shaped like WHIP.
//!
//! The media side is an [`EchoService`] the embedding binary provides
//! (`onionrtc serve`: its own WebRTC endpoint on the local relay). This
//! module checks and limits requests, sanitizes the offer and the answer
//! like any description, and counts. Without a service the routes are 404.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client_addr::ClientAddr;
use crate::config::SignalConfig;
use crate::ratelimit::JoinLimiter;
use crate::sanitize::Sanitizer;
use crate::state::{now_unix, SignalState};

/// Largest offer accepted (bytes).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

/// The relay credentials an echo session allocates with (like a caller's).
#[derive(Clone, PartialEq, Eq)]
pub struct EchoRelay {
    /// The TURN URLs (`[serve] turn_urls`).
    pub urls: Vec<String>,
    /// TURN REST user name.
    pub username: String,
    /// TURN REST password.
    pub credential: String,
}

impl std::fmt::Debug for EchoRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoRelay")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The offer cannot be answered (no Opus audio, malformed): 400.
    #[error("{0}")]
    BadOffer(String),
    /// The echo's own endpoint failed (allocation refused, …): 503.
    #[error("{0}")]
    Unavailable(String),
}

/// A future answering one offer.
pub type AnswerFuture = Pin<Box<dyn Future<Output = Result<String, EchoError>> + Send>>;

/// The media side: answers an offer and echoes the caller's RTP back for
/// at most the session limit, holding `permit` while the session lives.
pub trait EchoService: Send + Sync + std::fmt::Debug {
    /// Starts a session for `offer` (already sanitized); resolves to the
    /// SDP answer once the endpoint has its relay address.
    fn answer(&self, offer: String, relay: EchoRelay, permit: OwnedSemaphorePermit)
        -> AnswerFuture;
}

/// The echo test: the service, its limits and counters.
#[derive(Debug)]
pub struct Echo {
    service: Arc<dyn EchoService>,
    sessions: Arc<Semaphore>,
    max_sessions: usize,
    limiter: JoinLimiter,
    /// Sessions started.
    pub started: AtomicU64,
    /// Requests refused: rate limit, busy, bad offer, service failure.
    pub refused: AtomicU64,
}

impl Echo {
    /// An echo test with at most `max_sessions` at once and
    /// `per_minute` sessions a minute per client address (IPv6: per /64).
    pub fn new(service: Arc<dyn EchoService>, max_sessions: usize, per_minute: u32) -> Self {
        Echo {
            service,
            sessions: Arc::new(Semaphore::new(max_sessions)),
            max_sessions,
            limiter: JoinLimiter::new(per_minute),
            started: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Sessions running now.
    pub fn active(&self) -> usize {
        self.max_sessions
            .saturating_sub(self.sessions.available_permits())
    }

    /// Prometheus lines for `/metrics`.
    pub fn metrics(&self) -> String {
        format!(
            "# HELP onionrtc_echo_sessions_current Echo test sessions running.\n\
             # TYPE onionrtc_echo_sessions_current gauge\n\
             onionrtc_echo_sessions_current {}\n\
             # HELP onionrtc_echo_sessions_total Echo test sessions started.\n\
             # TYPE onionrtc_echo_sessions_total counter\n\
             onionrtc_echo_sessions_total {}\n\
             # HELP onionrtc_echo_refused_total Echo test requests refused (rate limit, busy, bad offer).\n\
             # TYPE onionrtc_echo_refused_total counter\n\
             onionrtc_echo_refused_total {}\n",
            self.active(),
            self.started.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// Fresh TURN REST credentials, as `joined` gives them.
pub(crate) fn relay_credentials(config: &SignalConfig) -> EchoRelay {
    let ttl = config.credential_ttl.as_secs();
    let id = format!("{:016x}", rand::random::<u64>());
    let username = turn::auth::rest_username(now_unix().saturating_add(ttl), Some(&id));
    let credential = turn::auth::rest_password(config.turn_secret.as_bytes(), &username);
    EchoRelay {
        urls: config.turn_urls.clone(),
        username,
        credential,
    }
}

fn ice_servers(relay: &EchoRelay) -> Value {
    json!([{
        "urls": relay.urls,
        "username": relay.username,
        "credential": relay.credential,
    }])
}

fn text(code: StatusCode, body: &str) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{body}\n"),
    )
        .into_response()
}

/// `GET /api/echo`.
pub(crate) async fn get(State(state): State<SignalState>) -> Response {
    let config = state.config();
    if config.echo.is_none() {
        return text(StatusCode::NOT_FOUND, "no echo test on this server");
    }
    let relay = relay_credentials(config);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "iceServers": ice_servers(&relay),
            "iceTransportPolicy": "relay",
        })),
    )
        .into_response()
}

/// `POST /api/echo` with `Content-Type: application/sdp`.
pub(crate) async fn post(
    State(state): State<SignalState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = state.config();
    let Some(echo) = config.echo.clone() else {
        return text(StatusCode::NOT_FOUND, "no echo test on this server");
    };
    let refuse = |code: StatusCode, why: &str| {
        echo.refused.fetch_add(1, Ordering::Relaxed);
        text(code, why)
    };
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        });
    if !is_sdp {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be an SDP offer (Content-Type: application/sdp)",
        );
    }
    if body.len() > MAX_OFFER_BYTES {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the offer is too large");
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the offer is not text");
    };
    if !allow(&echo.limiter, ip) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many echo tests from your address: try again in a minute",
        );
    }
    let sanitizer = Sanitizer::new(&config.relay_addresses);
    let Ok(clean) = sanitizer.sdp(offer) else {
        return refuse(StatusCode::BAD_REQUEST, "malformed SDP offer");
    };
    if !clean.sdp.lines().any(|l| l.starts_with("m=audio ")) {
        return refuse(StatusCode::BAD_REQUEST, "the offer has no audio");
    }
    let Ok(permit) = Arc::clone(&echo.sessions).try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the echo test is busy (too many sessions at once): try again shortly",
        );
    };
    let relay = relay_credentials(config);
    match echo.service.answer(clean.sdp, relay, permit).await {
        Ok(answer) => {
            let Ok(clean) = sanitizer.sdp(&answer) else {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the echo's answer was refused",
                );
            };
            echo.started.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                clean.sdp,
            )
                .into_response()
        }
        Err(EchoError::BadOffer(why)) => refuse(StatusCode::BAD_REQUEST, &why),
        Err(EchoError::Unavailable(why)) => refuse(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

fn allow(limiter: &JoinLimiter, ip: IpAddr) -> bool {
    limiter.allow(ip, Instant::now())
}

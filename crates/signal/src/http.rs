//! HTTP endpoints besides `/ws`: the web app's files, `/healthz`,
//! `/api/whoami`, the operator API and page, `/metrics`, and the access
//! rules of docs/signaling.md.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::json;

use crate::html;
use crate::state::{now_ms, SignalState};
use crate::store::{StoreError, MAX_LISTED_CALLS};

/// `GET /healthz`.
pub(crate) async fn healthz() -> Response {
    no_store(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response())
}

/// `GET /api/whoami`: the address the server sees.
pub(crate) async fn whoami(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    no_store(
        Json(json!({"ip": peer.ip().to_canonical().to_string(), "port": peer.port()}))
            .into_response(),
    )
}

/// `?room=NAME` of `GET /api/calls`, or the `room` field of the
/// `POST /calls/find` form: one room's calls, found by the name's hash.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct RoomQuery {
    room: Option<String>,
}

impl RoomQuery {
    /// The stored form of the name asked for, if any.
    fn hash(&self, state: &SignalState) -> Option<String> {
        self.room.as_deref().map(|r| state.store().room_hash(r))
    }
}

/// `GET /api/calls[?room=NAME]`.
pub(crate) async fn calls(
    State(state): State<SignalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<RoomQuery>, QueryRejection>,
) -> Response {
    if let Err(denied) = operator(&state, &headers, peer.ip()) {
        return denied.into_response();
    }
    let Ok(Query(query)) = query else {
        return status(StatusCode::BAD_REQUEST, "bad query\n");
    };
    let hash = query.hash(&state);
    match blocking(&state, move |s| {
        s.store().calls(MAX_LISTED_CALLS, hash.as_deref())
    })
    .await
    {
        Ok(list) => no_store(Json(list).into_response()),
        Err(resp) => resp,
    }
}

/// `GET /api/calls/{id}`.
pub(crate) async fn call(
    State(state): State<SignalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = operator(&state, &headers, peer.ip()) {
        return denied.into_response();
    }
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return not_found();
    }
    match blocking(&state, move |s| s.store().call(&id)).await {
        Ok(Some(detail)) => no_store(Json(detail).into_response()),
        Ok(None) => not_found(),
        Err(resp) => resp,
    }
}

/// `GET /calls`: the operator page.
pub(crate) async fn calls_page(
    State(state): State<SignalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = operator(&state, &headers, peer.ip()) {
        return denied.into_response();
    }
    render_calls_page(&state, None).await
}

/// `POST /calls/find` (form field `room`): the page with one room's calls.
/// A form body, not a query, so the name is in no URL (proxy logs,
/// browser history).
pub(crate) async fn calls_find(
    State(state): State<SignalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<RoomQuery>, FormRejection>,
) -> Response {
    if let Err(denied) = operator(&state, &headers, peer.ip()) {
        return denied.into_response();
    }
    let Ok(Form(query)) = form else {
        return status(StatusCode::BAD_REQUEST, "bad form\n");
    };
    render_calls_page(&state, query.hash(&state)).await
}

async fn render_calls_page(state: &SignalState, hash: Option<String>) -> Response {
    let filter = hash.clone();
    match blocking(state, move |s| {
        s.store().calls(MAX_LISTED_CALLS, hash.as_deref())
    })
    .await
    {
        Ok(list) => {
            let body = html::calls_page(&list, now_ms(), filter.as_deref());
            no_store(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
        }
        Err(resp) => resp,
    }
}

/// `GET /metrics`: loopback clients (if trusted) or the admin token.
pub(crate) async fn metrics(
    State(state): State<SignalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let config = state.config();
    let loopback_ok = config.trust_loopback_metrics && is_loopback(peer.ip());
    if !loopback_ok {
        if config.admin_token.is_none() {
            return status(StatusCode::FORBIDDEN, "loopback clients only\n");
        }
        if let Err(denied) = bearer(&state, &headers) {
            return denied.into_response();
        }
    }
    let Some(render) = &config.metrics else {
        return not_found();
    };
    let render = render.clone();
    let mut text = match tokio::task::spawn_blocking(move || render()).await {
        Ok(text) => text,
        Err(_) => return status(StatusCode::INTERNAL_SERVER_ERROR, "metrics failed\n"),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&state.render_metrics());
    no_store(
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
    )
}

/// Everything else: the web app's files.
pub(crate) async fn assets(State(state): State<SignalState>, uri: Uri) -> Response {
    let Some((ctype, body)) = state.config().web_root.get(uri.path()) else {
        return not_found();
    };
    let mut resp = ([(header::CONTENT_TYPE, ctype)], body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if ctype.starts_with("text/html") {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    resp
}

/// Why an operator request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// 401: no bearer token presented.
    NoToken,
    /// 403: a wrong token.
    WrongToken,
    /// 403: not a loopback client (and no token configured).
    NotLoopback,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::NoToken => {
                let mut resp = status(StatusCode::UNAUTHORIZED, "bearer token required\n");
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                resp
            }
            Denied::WrongToken => status(StatusCode::FORBIDDEN, "wrong token\n"),
            Denied::NotLoopback => status(
                StatusCode::FORBIDDEN,
                "operator endpoints are loopback-only\n",
            ),
        }
    }
}

/// The operator rule: with an admin token, a matching `Authorization:
/// Bearer` from anyone (401 without one, 403 with a wrong one); without,
/// loopback clients only (403 otherwise).
fn operator(state: &SignalState, headers: &HeaderMap, ip: IpAddr) -> Result<(), Denied> {
    if state.config().admin_token.is_some() {
        return bearer(state, headers);
    }
    if is_loopback(ip) {
        Ok(())
    } else {
        Err(Denied::NotLoopback)
    }
}

fn bearer(state: &SignalState, headers: &HeaderMap) -> Result<(), Denied> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match token {
        None => Err(Denied::NoToken),
        Some(t) if state.token_matches(t) => Ok(()),
        Some(_) => Err(Denied::WrongToken),
    }
}

/// 127.0.0.0/8, ::1 and their IPv4-mapped forms.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

async fn blocking<T, F>(state: &SignalState, f: F) -> Result<T, Response>
where
    T: Send + 'static,
    F: FnOnce(&SignalState) -> Result<T, StoreError> + Send + 'static,
{
    let state = state.clone();
    match tokio::task::spawn_blocking(move || f(&state)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "stats store query failed");
            Err(status(StatusCode::INTERNAL_SERVER_ERROR, "store error\n"))
        }
        Err(_) => Err(status(StatusCode::INTERNAL_SERVER_ERROR, "store error\n")),
    }
}

fn status(code: StatusCode, text: &'static str) -> Response {
    no_store(
        (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response(),
    )
}

fn not_found() -> Response {
    status(StatusCode::NOT_FOUND, "not found\n")
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SignalConfig;

    fn state(dir: &std::path::Path, token: Option<&str>) -> Option<SignalState> {
        SignalState::new(SignalConfig {
            data_dir: dir.to_owned(),
            admin_token: token.map(str::to_owned),
            ..SignalConfig::default()
        })
        .ok()
    }

    fn code(r: Result<(), Denied>) -> u16 {
        r.err().map_or(200, |d| d.into_response().status().as_u16())
    }

    #[test]
    fn operator_rules() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir");
        };
        let remote: IpAddr = IpAddr::from([203, 0, 113, 7]);
        let mapped: IpAddr = IpAddr::from([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1]);
        let v6loop: IpAddr = IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]);
        let none = HeaderMap::new();
        let mut good = HeaderMap::new();
        good.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        let mut bad = HeaderMap::new();
        bad.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok2"),
        );

        let Some(open) = state(&dir.path().join("a"), None) else {
            panic!("state");
        };
        assert_eq!(
            code(operator(&open, &none, IpAddr::from([127, 0, 0, 1]))),
            200
        );
        assert_eq!(
            code(operator(&open, &none, IpAddr::from([127, 9, 9, 9]))),
            200
        );
        assert_eq!(code(operator(&open, &none, mapped)), 200);
        assert_eq!(code(operator(&open, &none, v6loop)), 200);
        assert_eq!(code(operator(&open, &none, remote)), 403);
        // A token presented when none is configured grants nothing.
        assert_eq!(code(operator(&open, &good, remote)), 403);

        let Some(locked) = state(&dir.path().join("b"), Some("tok")) else {
            panic!("state");
        };
        assert_eq!(
            code(operator(&locked, &none, IpAddr::from([127, 0, 0, 1]))),
            401
        );
        assert_eq!(
            code(operator(&locked, &bad, IpAddr::from([127, 0, 0, 1]))),
            403
        );
        assert_eq!(code(operator(&locked, &good, remote)), 200);
        assert!(!locked.token_matches(""));
        assert!(!locked.token_matches("to"));
        assert!(locked.token_matches("tok"));
    }
}

//! HTTP endpoints besides `/ws`: the web app's files, `/healthz`,
//! `/api/whoami`, the operator API and pages, `/metrics` (access rules in
//! [`crate::operator`]).

use std::net::SocketAddr;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::json;

use crate::client_addr::ClientAddr;
use crate::html;
use crate::operator::{self, Denied};
use crate::state::{now_ms, SignalState};
use crate::store::{StoreError, MAX_LISTED_CALLS};

/// `GET /healthz`.
pub(crate) async fn healthz() -> Response {
    no_store(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response())
}

/// `GET /api/whoami`: the client address the server sees (behind a
/// trusted proxy, the forwarded one; the port only when the client is the
/// TCP peer itself).
pub(crate) async fn whoami(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ClientAddr(ip): ClientAddr,
) -> Response {
    let body = if ip == peer.ip().to_canonical() {
        json!({"ip": ip.to_string(), "port": peer.port()})
    } else {
        json!({"ip": ip.to_string()})
    };
    no_store(Json(body).into_response())
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
    headers: HeaderMap,
    query: Result<Query<RoomQuery>, QueryRejection>,
) -> Response {
    if let Err(denied) = operator::bearer_only(&state, &headers) {
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
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = operator::bearer_only(&state, &headers) {
        return denied.into_response();
    }
    call_detail(&state, id).await
}

/// `GET /calls/{id}`: the same JSON as `/api/calls/{id}`, for the page's
/// links (where the session cookie is sent).
pub(crate) async fn call_page(
    State(state): State<SignalState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = operator::bearer_or_session(&state, &headers) {
        return page_denied(denied);
    }
    call_detail(&state, id).await
}

async fn call_detail(state: &SignalState, id: String) -> Response {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return not_found();
    }
    match blocking(state, move |s| s.store().call(&id)).await {
        Ok(Some(detail)) => no_store(Json(detail).into_response()),
        Ok(None) => not_found(),
        Err(resp) => resp,
    }
}

/// `GET /calls`: the operator page.
pub(crate) async fn calls_page(State(state): State<SignalState>, headers: HeaderMap) -> Response {
    if let Err(denied) = operator::bearer_or_session(&state, &headers) {
        return page_denied(denied);
    }
    render_calls_page(&state, None).await
}

/// `POST /calls/find` (form field `room`): the page with one room's calls.
/// A form body, not a query, so the name is in no URL (proxy logs,
/// browser history).
pub(crate) async fn calls_find(
    State(state): State<SignalState>,
    headers: HeaderMap,
    form: Result<Form<RoomQuery>, FormRejection>,
) -> Response {
    if let Err(denied) = operator::bearer_or_session(&state, &headers) {
        return page_denied(denied);
    }
    // The session cookie is SameSite=Strict; a cross-site form is refused
    // here too, as the token form is.
    if !operator::same_origin_post(&headers) {
        return status(StatusCode::FORBIDDEN, "cross-site form\n");
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

/// The `/calls` pages without credentials get the token form.
fn page_denied(denied: Denied) -> Response {
    match denied {
        Denied::NoToken => operator::login_page(StatusCode::UNAUTHORIZED, "Enter the admin token."),
        other => other.into_response(),
    }
}

/// The token form's fields.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `POST /calls`: the token form; a right token sets the session cookie.
pub(crate) async fn login(
    State(state): State<SignalState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if let Err(denied) = operator::check_host(&state, &headers) {
        return denied.into_response();
    }
    if !operator::same_origin_post(&headers) {
        return status(StatusCode::FORBIDDEN, "cross-site form post refused\n");
    }
    let Ok(Form(form)) = form else {
        return status(StatusCode::BAD_REQUEST, "expected the token form\n");
    };
    if state.config().admin_token.is_none() {
        return Denied::NoTokenConfigured.into_response();
    }
    if !state.token_matches(form.token.trim()) {
        return operator::login_page(StatusCode::FORBIDDEN, "Wrong token.");
    }
    let id = state
        .inner
        .sessions
        .create(&state, std::time::Instant::now());
    let mut resp = no_store(
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, "/calls")],
            "signed in\n",
        )
            .into_response(),
    );
    if let Ok(v) = HeaderValue::from_str(&operator::set_cookie(&id)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /metrics`: the admin token (a Prometheus scraper sends it as
/// `Authorization: Bearer`).
pub(crate) async fn metrics(State(state): State<SignalState>, headers: HeaderMap) -> Response {
    if let Err(denied) = operator::bearer_only(&state, &headers) {
        return denied.into_response();
    }
    let config = state.config();
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
    if let Some(echo) = &config.echo {
        text.push_str(&echo.metrics());
    }
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

/// How long a client may keep `/.well-known/onionrtc.json`: short, so a
/// changed relay is seen soon; the document pins the next TLS key too, so
/// a cached copy survives a certificate rotation.
const WELL_KNOWN_MAX_AGE: &str = "public, max-age=300";

/// `GET /.well-known/onionrtc.json`: the connector's document, the same
/// for every client (no cookie, no address, no `Vary`).
pub(crate) async fn well_known(State(state): State<SignalState>) -> Response {
    let Some(render) = &state.config().well_known else {
        return not_found();
    };
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], render()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(WELL_KNOWN_MAX_AGE),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
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

    fn headers(host: &'static str, auth: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(a));
        }
        h
    }

    #[tokio::test]
    async fn well_known_is_the_renderers_text_or_404() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir");
        };
        let Some(none) = state(&dir.path().join("a"), None) else {
            panic!("state");
        };
        assert_eq!(
            well_known(State(none)).await.status(),
            StatusCode::NOT_FOUND
        );
        let Ok(with) = SignalState::new(SignalConfig {
            data_dir: dir.path().join("b"),
            well_known: Some(std::sync::Arc::new(|| "{\"version\":1}".to_owned())),
            ..SignalConfig::default()
        }) else {
            panic!("state");
        };
        let r = well_known(State(with)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers().get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
            Some(&b"public, max-age=300"[..])
        );
        assert_eq!(
            r.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
    }

    #[test]
    fn operator_rules() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir");
        };
        let Some(open) = state(&dir.path().join("a"), None) else {
            panic!("state");
        };
        // No token configured: closed to everybody, loopback included.
        let none = headers("127.0.0.1:8080", None);
        assert_eq!(code(operator::bearer_only(&open, &none)), 403);
        assert_eq!(
            code(operator::bearer_only(
                &open,
                &headers("127.0.0.1", Some("Bearer tok"))
            )),
            403
        );

        let Some(locked) = state(&dir.path().join("b"), Some("tok")) else {
            panic!("state");
        };
        assert_eq!(code(operator::bearer_only(&locked, &none)), 401);
        assert_eq!(
            code(operator::bearer_only(
                &locked,
                &headers("127.0.0.1", Some("Bearer tok2"))
            )),
            403
        );
        assert_eq!(
            code(operator::bearer_only(
                &locked,
                &headers("[::1]:1", Some("bearer tok"))
            )),
            200
        );
        // DNS rebinding: the right token, a foreign Host.
        assert_eq!(
            code(operator::bearer_only(
                &locked,
                &headers("attacker.example:8080", Some("Bearer tok"))
            )),
            421
        );
        assert_eq!(code(operator::bearer_or_session(&locked, &none)), 401);
        // A session id that was never issued.
        let mut fake = none.clone();
        fake.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "onionrtc_session=0000000000000000000000000000000000000000000000000000000000000000",
            ),
        );
        assert_eq!(code(operator::bearer_or_session(&locked, &fake)), 401);
        // An issued one.
        let id = locked
            .inner
            .sessions
            .create(&locked, std::time::Instant::now());
        let mut real = none.clone();
        real.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("onionrtc_session={id}"))
                .unwrap_or(HeaderValue::from_static("x")),
        );
        assert_eq!(code(operator::bearer_or_session(&locked, &real)), 200);
        // The API never takes the cookie.
        assert_eq!(code(operator::bearer_only(&locked, &real)), 401);
        // Expired.
        assert!(!locked.inner.sessions.valid(
            &locked,
            &id,
            std::time::Instant::now() + operator::SESSION_TTL
        ));
        assert!(!locked.token_matches(""));
        assert!(!locked.token_matches("to"));
        assert!(locked.token_matches("tok"));
    }
}

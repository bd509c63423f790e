//! Who may read the operator views (`/api/calls`, `/api/calls/{id}`,
//! `/calls`, `/calls/{id}`, `/metrics`): whoever presents the admin token,
//! for requests addressed to one of the site's names. Never by address: a
//! reverse proxy or the tor of an onion service connects from loopback for
//! everybody.
//!
//! ```text
//! Host not a site name ─▶ 421            (DNS rebinding)
//! Authorization: Bearer <token> ─▶ ok | 403 wrong token
//! /calls pages: cookie onionrtc_session=<id> (from POST /calls with the token) ─▶ ok
//! nothing ─▶ 401 (/calls: the token form)
//! ```
//!
//! Design decisions:
//! - Sessions are random 256-bit ids, not the token: a stolen cookie
//!   expires ([`SESSION_TTL`]) and dies with the process. The table is
//!   bounded ([`MAX_SESSIONS`]; the oldest goes first) and keyed by an HMAC
//!   of the id, so a lookup leaks no timing about the ids.
//! - The cookie is `HttpOnly; SameSite=Strict; Path=/calls`: scripts cannot
//!   read it, other sites cannot make the browser send it, and the API and
//!   `/metrics` never accept it (they take the bearer token only).
//! - The form's POST is refused unless it comes from the page itself
//!   (`Origin` equal to the site's, or `Sec-Fetch-Site: same-origin`), and
//!   a wrong token answers 403 without a session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::SignalState;

/// How long a session cookie is valid.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions at once; beyond, the oldest is dropped.
pub const MAX_SESSIONS: usize = 64;
/// The session cookie's name.
pub const COOKIE: &str = "onionrtc_session";

/// Why an operator request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// 421: `Host` is not one of the site's names.
    WrongHost,
    /// 401: no credentials.
    NoToken,
    /// 403: a wrong token.
    WrongToken,
    /// 403: no admin token is configured.
    NoTokenConfigured,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (code, text) = match self {
            Denied::WrongHost => (
                StatusCode::MISDIRECTED_REQUEST,
                "this server does not answer for that host name\n",
            ),
            Denied::NoToken => (StatusCode::UNAUTHORIZED, "bearer token required\n"),
            Denied::WrongToken => (StatusCode::FORBIDDEN, "wrong token\n"),
            Denied::NoTokenConfigured => (
                StatusCode::FORBIDDEN,
                "no admin token is configured; operator endpoints are off\n",
            ),
        };
        let mut resp = (
            code,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response();
        if self == Denied::NoToken {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The name part of a `Host` value (`name`, `name:port`, `[v6]:port`),
/// lower case; `None` if it is not of that form.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inner
    } else {
        match host.split_once(':') {
            Some((n, p)) if is_port(p) => n,
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.trim_end_matches('.');
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `host` (a `Host` header value) names this site: a loopback
/// name or address, or one of `names`, with any port.
pub(crate) fn is_site_host(host: &str, names: &[String]) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if name
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
    {
        return true;
    }
    names
        .iter()
        .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(&name))
}

/// The `Host` rule alone.
pub(crate) fn check_host(state: &SignalState, headers: &HeaderMap) -> Result<(), Denied> {
    let ok = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| is_site_host(h, &state.config().hostnames));
    if ok {
        Ok(())
    } else {
        Err(Denied::WrongHost)
    }
}

/// The API and `/metrics`: site host and bearer token.
pub(crate) fn bearer_only(state: &SignalState, headers: &HeaderMap) -> Result<(), Denied> {
    check_host(state, headers)?;
    bearer(state, headers)
}

/// The `/calls` pages: site host, and the bearer token or a session cookie.
pub(crate) fn bearer_or_session(state: &SignalState, headers: &HeaderMap) -> Result<(), Denied> {
    check_host(state, headers)?;
    match bearer(state, headers) {
        Err(Denied::NoToken) => {}
        other => return other,
    }
    let session = cookie(headers, COOKIE);
    if session.is_some_and(|id| state.inner.sessions.valid(state, id, Instant::now())) {
        Ok(())
    } else {
        Err(Denied::NoToken)
    }
}

fn bearer(state: &SignalState, headers: &HeaderMap) -> Result<(), Denied> {
    if state.config().admin_token.is_none() {
        return Err(Denied::NoTokenConfigured);
    }
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

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether a form POST comes from the site's own page.
pub(crate) fn same_origin_post(headers: &HeaderMap) -> bool {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get(header::HeaderName::from_static("sec-fetch-site")) {
        if site != "same-origin" {
            return false;
        }
    }
    match (get(header::ORIGIN), get(header::HOST)) {
        (Some(origin), Some(host)) => ["http://", "https://"].iter().any(|s| {
            origin
                .strip_prefix(s)
                .is_some_and(|h| h.eq_ignore_ascii_case(host.trim()))
        }),
        // Browsers send Origin on every POST; a client without it is not a
        // page another site could drive.
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// The session table.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    /// HMAC(id) → (created, expires).
    table: Mutex<HashMap<String, (Instant, Instant)>>,
}

impl Sessions {
    /// A new session id (64 hex digits).
    pub(crate) fn create(&self, state: &SignalState, now: Instant) -> String {
        let bytes: [u8; 32] = rand::random();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, (_, exp)| *exp > now);
        while t.len() >= MAX_SESSIONS {
            let oldest = t
                .iter()
                .min_by_key(|(_, (created, _))| *created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => t.remove(&k),
                None => break,
            };
        }
        t.insert(state.mac(&id), (now, now + SESSION_TTL));
        id
    }

    /// Whether `id` is a live session.
    pub(crate) fn valid(&self, state: &SignalState, id: &str, now: Instant) -> bool {
        if id.len() != 64 {
            return false;
        }
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.get(&state.mac(id)).is_some_and(|(_, exp)| *exp > now)
    }
}

/// The `Set-Cookie` value for session `id`.
pub(crate) fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/calls; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The token form (the 401 page of `/calls`).
pub(crate) fn login_page(status: StatusCode, note: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>OnionRTC calls: sign in</title>\
         </head><body><h1>Operator sign-in</h1><p>{}</p>\
         <form method=\"post\" action=\"/calls\"><label>Admin token \
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label> \
         <button type=\"submit\">Sign in</button></form>\
         <p>The token is in <code>DATA_DIR/admin-token</code> (or <code>[serve] admin_token</code>).</p>\
         </body></html>",
        crate::html::escape(note)
    );
    let mut resp = (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_hosts() {
        let names = vec!["call.example.org".to_owned(), "10.200.0.2".to_owned()];
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "app.localhost:1",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.9.9.9:1",
            "[::1]:8080",
            "[::1]",
            "call.example.org",
            "Call.Example.Org.:443",
            "10.200.0.2:80",
        ] {
            assert!(is_site_host(ok, &names), "{ok}");
        }
        for bad in [
            "attacker.example:8080",
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "call.example.org.evil",
            "10.200.0.3",
            "[::2]:80",
            "::1",
            "",
            ":80",
            "127.0.0.1:80x",
            "[::1]x",
        ] {
            assert!(!is_site_host(bad, &names), "{bad}");
        }
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; onionrtc_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);

        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("call.example:8080"));
        assert!(same_origin_post(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://call.example:8080"),
        );
        assert!(same_origin_post(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin_post(&h));
        h.remove("sec-fetch-site");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin_post(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin_post(&h));
    }

    #[test]
    fn cookie_attributes() {
        let c = set_cookie("ab");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/calls", "Max-Age="] {
            assert!(c.contains(attr), "{c}");
        }
    }
}

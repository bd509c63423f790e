//! Header rewriting of the web proxy (pure functions).
//!
//! Towards the site: hop-by-hop headers go, `Host` becomes the site's, and
//! `Origin`/`Referer` naming the proxy's own origin become the site's, so
//! the signaling server's origin check sees its own page. An `Origin` of
//! any other site is left alone: the server then refuses it, as it would
//! without the proxy (a foreign page cannot borrow the connector).
//! Nothing is added (no `Forwarded`, `Via`, `X-Forwarded-For`).
//!
//! Towards the browser: hop-by-hop headers go (except on a 101 answer),
//! and a `Location` on the site's origin points back at the proxy.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::Endpoint;

/// Headers that belong to one connection (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether the message asks for a protocol upgrade (WebSocket).
pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && connection_has(h, "upgrade")
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes hop-by-hop headers (and those the `Connection` header names);
/// with `keep_upgrade`, puts back `Connection: upgrade` and `Upgrade`.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let upgrade = h.get(header::UPGRADE).cloned();
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        h.remove(name);
    }
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
    if keep_upgrade {
        if let Some(u) = upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, u);
        }
    }
}

/// Whether `host` (a `Host` header) names the proxy itself: a loopback
/// name or address with the proxy's port. Anything else is refused
/// (DNS rebinding: a page on another name must not use the proxy).
pub fn is_local_host(host: &str, port: u16) -> bool {
    let (name, p) = match host.rsplit_once(':') {
        Some((n, p)) if !n.is_empty() => (n, p),
        _ => return false,
    };
    if p.parse::<u16>() != Ok(port) {
        return false;
    }
    let name = name.to_ascii_lowercase();
    if name == "localhost" {
        return true;
    }
    let bare = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(b) => b,
        None if name.contains(':') => return false,
        None => &name,
    };
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Rewrites a request's headers for the site. `local_origin` is the
/// proxy's origin as the browser sees it, e.g. `http://127.0.0.1:8081`.
pub fn to_upstream(h: &mut HeaderMap, site: &Endpoint, local_origin: &str, upgrade: bool) {
    strip_hop_by_hop(h, upgrade);
    if let Ok(v) = HeaderValue::from_str(&site.host_header()) {
        h.insert(header::HOST, v);
    }
    let origin = site.origin();
    if let Some(v) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        if v.eq_ignore_ascii_case(local_origin) {
            if let Ok(v) = HeaderValue::from_str(&origin) {
                h.insert(header::ORIGIN, v);
            }
        }
    }
    if let Some(v) = h.get(header::REFERER).and_then(|v| v.to_str().ok()) {
        if let Some(rest) = strip_origin(v, local_origin) {
            if let Ok(v) = HeaderValue::from_str(&format!("{origin}{rest}")) {
                h.insert(header::REFERER, v);
            }
        }
    }
}

/// Rewrites a response's headers for the browser.
pub fn to_browser(h: &mut HeaderMap, site: &Endpoint, local_origin: &str, switching: bool) {
    strip_hop_by_hop(h, switching);
    if let Some(v) = h.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        if let Some(rest) = strip_origin(v, &site.origin()) {
            if let Ok(v) = HeaderValue::from_str(&format!("{local_origin}{rest}")) {
                h.insert(header::LOCATION, v);
            }
        }
    }
}

/// `url` without `origin` when it starts with it (followed by `/`, `?`,
/// `#` or nothing).
fn strip_origin<'a>(url: &'a str, origin: &str) -> Option<&'a str> {
    let head = url.get(..origin.len())?;
    if !head.eq_ignore_ascii_case(origin) {
        return None;
    }
    let rest = &url[origin.len()..];
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Endpoint {
        Endpoint::parse_web("https://call.example.org").unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const LOCAL: &str = "http://127.0.0.1:8081";

    #[test]
    fn request_rewrite() {
        let mut h = map(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:8081"),
            ("referer", "http://127.0.0.1:8081/?room=abc"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("cookie", "a=b"),
        ]);
        to_upstream(&mut h, &site(), LOCAL, false);
        assert_eq!(h["host"], "call.example.org");
        assert_eq!(h["origin"], "https://call.example.org");
        assert_eq!(h["referer"], "https://call.example.org/?room=abc");
        assert_eq!(h["cookie"], "a=b");
        for gone in ["connection", "x-secret", "keep-alive"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn foreign_origin_is_kept() {
        let mut h = map(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "https://evil.example"),
            ("referer", "http://127.0.0.1:80811/x"),
        ]);
        to_upstream(&mut h, &site(), LOCAL, false);
        assert_eq!(h["origin"], "https://evil.example");
        assert_eq!(h["referer"], "http://127.0.0.1:80811/x");
    }

    #[test]
    fn upgrade_survives() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        to_upstream(&mut h, &site(), LOCAL, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
        let mut plain = map(&[("upgrade", "websocket")]);
        assert!(!is_upgrade(&plain));
        to_upstream(&mut plain, &site(), LOCAL, false);
        assert!(!plain.contains_key("upgrade"));
    }

    #[test]
    fn location_points_back() {
        let mut h = map(&[
            ("location", "https://call.example.org/?room=x"),
            ("transfer-encoding", "chunked"),
        ]);
        to_browser(&mut h, &site(), LOCAL, false);
        assert_eq!(h["location"], "http://127.0.0.1:8081/?room=x");
        assert!(!h.contains_key("transfer-encoding"));
        let mut other = map(&[("location", "https://call.example.org.evil/")]);
        to_browser(&mut other, &site(), LOCAL, false);
        assert_eq!(other["location"], "https://call.example.org.evil/");
    }

    #[test]
    fn local_hosts() {
        for ok in [
            "127.0.0.1:8081",
            "localhost:8081",
            "[::1]:8081",
            "127.0.0.2:8081",
        ] {
            assert!(is_local_host(ok, 8081), "{ok}");
        }
        for bad in [
            "127.0.0.1:8082",
            "evil.example:8081",
            "127.0.0.1",
            "::1:8081",
            ":8081",
            "192.168.1.2:8081",
        ] {
            assert!(!is_local_host(bad, 8081), "{bad}");
        }
    }
}

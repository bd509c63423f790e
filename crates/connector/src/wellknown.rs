//! `/.well-known/onionrtc.json`: what a site publishes so that
//! `onionrtc connect https://SITE` (and `onionrtc call`) can configure
//! itself from one URL — the relay's TURN URLs, the SPKI pins of the
//! relay's current and next TLS key, its onion addresses.
//!
//! ```json
//! {
//!   "version": 1,
//!   "turn": ["turns:relay.example.org:443?transport=tcp",
//!            "turn:relay.example.org:3478?transport=tcp",
//!            "turn:relay.example.org:3478?transport=udp"],
//!   "tls_spki_sha256": ["CURRENT-BASE64", "NEXT-BASE64"],
//!   "onion": []
//! }
//! ```
//!
//! - `turn`: RFC 7065 URLs; the connector carries TURN over a stream, so it
//!   uses `turns:` (TLS) first, then `turn:…?transport=tcp`; UDP entries
//!   are listed for completeness and skipped. Entries it cannot parse are
//!   skipped too (a later version may add schemes).
//! - `tls_spki_sha256`: base64 SHA-256 of the SubjectPublicKeyInfo of the
//!   relay's current certificate, then of the key it rotates to next. The
//!   relay's TLS is accepted if its key matches any of them, so a
//!   certificate reload to the next key locks nobody out.
//! - `onion`: the site's and relay's onion URLs (`http://X.onion`,
//!   `turns:X.onion:443?transport=tcp`, …); through Tor the connector
//!   prefers an onion relay, reached without any exit.
//!
//! # Trust
//! The answer decides where TURN goes and which key the relay must hold,
//! so it must come from the site itself: over an onion address (the
//! address is the key), or over HTTPS with a certificate valid for the
//! host (Mozilla's roots, or `--ca`). Plain `http://` to any other host
//! is refused before anything is sent ([`check_site`]): a Tor exit could
//! rewrite the answer. A malformed answer (bad pin, wrong version, too
//! big, not JSON) is refused whole.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;

use crate::config::Endpoint;
use crate::dial::Dialer;

/// Where the document lives on the site.
pub const PATH: &str = "/.well-known/onionrtc.json";
/// The protocol version this build reads and writes.
pub const VERSION: u64 = 1;
/// Largest document read (a real one is well under 1 KiB).
pub const MAX_BYTES: usize = 64 * 1024;
/// Most entries read from each list.
pub const MAX_ENTRIES: usize = 32;
/// Longest URL entry.
const MAX_URL: usize = 512;
/// How long the site may take to answer once connected.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the document could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WellKnownError {
    /// Plain HTTP to a host that is not an onion address.
    #[error(
        "refusing {0}: plain http:// to a host that is not a .onion address lets anyone on the \
         path (a Tor exit, the network) change the answer and send your call elsewhere; use \
         https:// (or the site's .onion address)"
    )]
    Insecure(String),
    /// The site could not be reached or its certificate was refused.
    #[error("cannot fetch {url}: {source}")]
    Dial {
        /// The document's URL.
        url: String,
        /// The error.
        source: crate::DialError,
    },
    /// HTTP failed or the answer was not 200.
    #[error("cannot fetch {url}: {reason}")]
    Http {
        /// The document's URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The body is not a valid document.
    #[error("{url} is not a valid OnionRTC document: {reason}")]
    Invalid {
        /// The document's URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

impl WellKnownError {
    /// Whether the site's certificate was refused.
    pub fn is_certificate(&self) -> bool {
        matches!(self, WellKnownError::Dial { source, .. } if source.is_certificate())
    }
}

/// A TURN URL of the document, as far as the connector uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl {
    /// The stream endpoint (`tls` for `turns:`).
    pub endpoint: Endpoint,
    /// `transport=udp` (not usable by the connector).
    pub udp: bool,
}

impl TurnUrl {
    /// Parses `turn:HOST[:PORT][?transport=udp|tcp]` and `turns:…` (RFC
    /// 7065; default ports 3478 and 5349, IPv6 in brackets).
    pub fn parse(url: &str) -> Option<TurnUrl> {
        let (scheme, rest) = url.split_once(':')?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "turns" => true,
            "turn" => false,
            _ => return None,
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let udp = match query.to_ascii_lowercase().as_str() {
            "" => !tls,
            "transport=udp" => true,
            "transport=tcp" => false,
            _ => return None,
        };
        if tls && udp {
            return None;
        }
        let (form, default) = if tls {
            ("tls://", 5349)
        } else {
            ("tcp://", 3478)
        };
        let mut endpoint = Endpoint::parse_relay(&format!("{form}{authority}")).ok()?;
        let has_port = authority
            .rsplit_once(']')
            .map_or(authority, |(_, after)| after)
            .contains(':');
        if !has_port {
            endpoint.port = default;
        }
        Some(TurnUrl { endpoint, udp })
    }
}

/// A parsed, checked document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The protocol version (1).
    pub version: u64,
    /// The relay's TURN URLs that parsed.
    pub turn: Vec<TurnUrl>,
    /// SPKI SHA-256 pins of the relay's TLS keys (current first).
    pub pins: Vec<[u8; 32]>,
    /// Onion URLs as published (web and TURN).
    pub onion: Vec<String>,
}

fn str_list<'a>(
    v: &'a serde_json::Value,
    key: &str,
) -> Result<impl Iterator<Item = &'a str>, String> {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new().into_iter()),
        Some(serde_json::Value::Array(a)) => {
            if a.len() > MAX_ENTRIES {
                return Err(format!("{key} has more than {MAX_ENTRIES} entries"));
            }
            let mut out = Vec::with_capacity(a.len());
            for e in a {
                let s = e
                    .as_str()
                    .ok_or_else(|| format!("{key} holds a value that is not a string"))?;
                if s.len() > MAX_URL {
                    return Err(format!("{key} holds an entry longer than {MAX_URL} bytes"));
                }
                out.push(s);
            }
            Ok(out.into_iter())
        }
        Some(_) => Err(format!("{key} is not a list")),
    }
}

impl Document {
    /// Parses and checks a document. Unknown keys and TURN URLs of unknown
    /// form are ignored; a bad pin, a missing or newer version, or lists
    /// longer than [`MAX_ENTRIES`] are errors.
    pub fn parse(body: &[u8]) -> Result<Document, String> {
        if body.len() > MAX_BYTES {
            return Err(format!("larger than {MAX_BYTES} bytes"));
        }
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
        if !v.is_object() {
            return Err("not a JSON object".into());
        }
        let version = v
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or("no \"version\" number")?;
        if version != VERSION {
            return Err(format!(
                "protocol version {version}; this onionrtc reads version {VERSION} \
                 (a newer site needs a newer onionrtc)"
            ));
        }
        let turn = str_list(&v, "turn")?.filter_map(TurnUrl::parse).collect();
        let mut pins = Vec::new();
        for p in str_list(&v, "tls_spki_sha256")? {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p.trim())
                .map_err(|_| format!("tls_spki_sha256 entry {p:?} is not base64"))?;
            let pin: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("tls_spki_sha256 entry {p:?} is not a SHA-256"))?;
            pins.push(pin);
        }
        let onion = str_list(&v, "onion")?.map(str::to_owned).collect();
        Ok(Document {
            version,
            turn,
            pins,
            onion,
        })
    }

    /// The document as JSON (the form `serve` publishes). `turn` and
    /// `onion` are given as URL strings.
    pub fn render(turn: &[String], pins: &[[u8; 32]], onion: &[String]) -> String {
        let pins: Vec<String> = pins
            .iter()
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p))
            .collect();
        serde_json::json!({
            "version": VERSION,
            "turn": turn,
            "tls_spki_sha256": pins,
            "onion": onion,
        })
        .to_string()
    }

    /// The relay a stream connector should use: through Tor (`tor`) an
    /// onion relay first (TLS, then TCP); then `turns:`; then
    /// `turn:…?transport=tcp`. `None` when the document offers no stream
    /// relay.
    pub fn relay(&self, tor: bool) -> Option<Endpoint> {
        let onions: Vec<TurnUrl> = self
            .onion
            .iter()
            .filter_map(|u| TurnUrl::parse(u))
            .filter(|t| !t.udp && t.endpoint.is_onion())
            .collect();
        let pick = |list: &[TurnUrl]| {
            list.iter()
                .find(|t| t.endpoint.tls)
                .or_else(|| list.iter().find(|t| !t.udp))
                .map(|t| t.endpoint.clone())
        };
        if tor {
            if let Some(e) = pick(&onions) {
                return Some(e);
            }
        }
        pick(&self.turn)
    }

    /// The site's onion web address (`http://X.onion` or `https://…`), if
    /// published.
    pub fn onion_web(&self) -> Option<Endpoint> {
        self.onion
            .iter()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .filter_map(|u| Endpoint::parse_web(u).ok())
            .find(Endpoint::is_onion)
    }
}

/// Refuses a site whose answer could be changed on the way: `http://` to
/// a host that is not an onion address.
pub fn check_site(site: &Endpoint) -> Result<(), WellKnownError> {
    if site.tls || site.is_onion() {
        Ok(())
    } else {
        Err(WellKnownError::Insecure(site.origin()))
    }
}

/// Fetches and parses `site`'s document along `dialer`'s route, TLS
/// checked with `tls` (for https://). Refuses an insecure site first
/// ([`check_site`]).
pub async fn fetch(
    dialer: &Dialer,
    site: &Endpoint,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Document, WellKnownError> {
    check_site(site)?;
    let url = format!("{}{PATH}", site.origin());
    let http = |reason: String| WellKnownError::Http {
        url: url.clone(),
        reason,
    };
    let io = dialer
        .dial(site, tls, None)
        .await
        .map_err(|source| WellKnownError::Dial {
            url: url.clone(),
            source,
        })?;
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| http(format!("HTTP handshake failed: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::get(PATH)
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let h = req.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&site.host_header()) {
            h.insert(header::HOST, v);
        }
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(format!("no answer: {e}")))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| http(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        if status == StatusCode::NOT_FOUND {
            return Err(http(
                "404: the site publishes no OnionRTC document (an older onionrtc serve? \
                 give --relay and --web instead)"
                    .into(),
            ));
        }
        if status != StatusCode::OK {
            return Err(http(format!("the site answered {status}")));
        }
        Ok(body)
    };
    let body = tokio::time::timeout(RESPONSE_TIMEOUT, exchange)
        .await
        .map_err(|_| http(format!("no answer within {RESPONSE_TIMEOUT:?}")))??;
    Document::parse(&body).map_err(|reason| WellKnownError::Invalid {
        url: url.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls() {
        let t = TurnUrl::parse("turns:relay.example.org:443?transport=tcp").unwrap();
        assert!(t.endpoint.tls && !t.udp);
        assert_eq!(t.endpoint.authority(), "relay.example.org:443");
        let t = TurnUrl::parse("turn:[::1]?transport=tcp").unwrap();
        assert_eq!(t.endpoint.authority(), "[::1]:3478");
        assert!(!t.endpoint.tls);
        assert!(TurnUrl::parse("turn:h").unwrap().udp);
        assert_eq!(TurnUrl::parse("turns:h").unwrap().endpoint.port, 5349);
        for bad in [
            "stun:h:3478",
            "turns:h:1?transport=udp",
            "turn:h:1?transport=sctp",
            "turn:",
            "turn:h/x",
            "turn:u@h",
        ] {
            assert!(TurnUrl::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn round_trip_and_choice() {
        let pins = [[1u8; 32], [2u8; 32]];
        let text = Document::render(
            &[
                "turn:192.0.2.1:3478?transport=udp".into(),
                "turn:192.0.2.1:3478?transport=tcp".into(),
                "turns:relay.example.org:443?transport=tcp".into(),
                "future:thing".into(),
            ],
            &pins,
            &[],
        );
        let d = Document::parse(text.as_bytes()).unwrap();
        assert_eq!(d.pins, pins);
        assert_eq!(d.turn.len(), 3);
        assert_eq!(
            d.relay(true).unwrap().to_string(),
            "tls://relay.example.org:443"
        );
        let mut tcp_only = d.clone();
        tcp_only.turn.retain(|t| !t.endpoint.tls);
        assert_eq!(
            tcp_only.relay(false).unwrap().to_string(),
            "tcp://192.0.2.1:3478"
        );
        tcp_only.turn.retain(|t| t.udp);
        assert!(tcp_only.relay(false).is_none());
        // Through Tor, an onion relay wins; not without Tor.
        let onion = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion";
        let mut d2 = d.clone();
        d2.onion = vec![
            format!("http://{onion}"),
            format!("turns:{onion}:443?transport=tcp"),
        ];
        assert_eq!(d2.relay(true).unwrap().host, onion);
        assert_eq!(d2.relay(false).unwrap().host, "relay.example.org");
        assert_eq!(d2.onion_web().unwrap().host, onion);
        assert!(d.onion_web().is_none());
    }

    #[test]
    fn bad_documents() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"version\":2}",
            b"{\"version\":\"1\"}",
            b"{\"version\":1,\"turn\":\"turns:h\"}",
            b"{\"version\":1,\"turn\":[1]}",
            b"{\"version\":1,\"tls_spki_sha256\":[\"aGVsbG8=\"]}",
            b"{\"version\":1,\"tls_spki_sha256\":[\"not base64!\"]}",
        ] {
            assert!(
                Document::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("turn:h{i}")).collect();
        let text = serde_json::json!({"version": 1, "turn": many}).to_string();
        assert!(Document::parse(text.as_bytes()).is_err());
        assert!(Document::parse(&vec![b' '; MAX_BYTES + 1]).is_err());
        // Unknown keys are fine.
        assert!(Document::parse(b"{\"version\":1,\"later\":{}}").is_ok());
    }

    #[test]
    fn only_https_or_onion() {
        let onion = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion";
        assert!(check_site(&Endpoint::parse_web("https://call.example.org").unwrap()).is_ok());
        assert!(check_site(&Endpoint::parse_web(&format!("http://{onion}")).unwrap()).is_ok());
        let e = check_site(&Endpoint::parse_web("http://call.example.org").unwrap()).unwrap_err();
        assert!(e.to_string().contains("http://call.example.org"), "{e}");
        assert!(check_site(&Endpoint::parse_web("http://127.0.0.1:8080").unwrap()).is_err());
    }
}

//! Digest authentication (RFC 3261 §22, RFC 8760): MD5 and SHA-256 with
//! `qop=auth`, stateless HMAC nonces with an expiry, and replay protection
//! by nonce count.
//!
//! A nonce is `hex(issued_at) hex(random) hex(HMAC(key, both)[..16])`: the
//! server keeps nothing per challenge, and a restart (a new key) only makes
//! clients authenticate once more. The highest `nc` seen per nonce is kept
//! (bounded: [`MAX_TRACKED_NONCES`]); a request reusing a count is a replay.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::header::{split_commas, unquote};

/// Nonces whose counts are tracked at most; beyond, new nonces are refused
/// (answered with a fresh challenge) until old ones expire.
pub const MAX_TRACKED_NONCES: usize = 65_536;

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The name in challenges and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses `MD5` or `SHA-256` (case-insensitive).
    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Lower-case hex of the hash of `data`.
    pub fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

/// `H(user:realm:password)`, what the account store keeps.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash(&format!("{user}:{realm}:{password}"))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The fields of an `Authorization`/`Proxy-Authorization` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

impl Credentials {
    /// Parses `Digest username="…", …`; `None` if it is not Digest or a
    /// required field is missing.
    pub fn parse(value: &str) -> Option<Credentials> {
        let (scheme, rest) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut c = Credentials::default();
        for part in split_commas(rest) {
            let (k, v) = part.split_once('=')?;
            let v = unquote(v).to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "username" => c.username = v,
                "realm" => c.realm = v,
                "nonce" => c.nonce = v,
                "uri" => c.uri = v,
                "response" => c.response = v,
                "algorithm" => c.algorithm = Some(v),
                "qop" => c.qop = Some(v),
                "nc" => c.nc = Some(v),
                "cnonce" => c.cnonce = Some(v),
                _ => {}
            }
        }
        if c.username.is_empty() || c.nonce.is_empty() || c.uri.is_empty() || c.response.is_empty()
        {
            return None;
        }
        Some(c)
    }

    /// The algorithm named (MD5 when absent, RFC 2617).
    pub fn algorithm(&self) -> Option<Algorithm> {
        match &self.algorithm {
            None => Some(Algorithm::Md5),
            Some(a) => Algorithm::parse(a),
        }
    }

    /// Whether `response` is right for `ha1` and `method` (constant-time).
    /// Only `qop=auth` is accepted (replay protection needs `nc`).
    pub fn verify(&self, alg: Algorithm, ha1: &str, method: &str) -> bool {
        let (Some(qop), Some(nc), Some(cnonce)) = (&self.qop, &self.nc, &self.cnonce) else {
            return false;
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return false;
        }
        let ha2 = alg.hash(&format!("{method}:{}", self.uri));
        let expected = alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce));
        expected
            .as_bytes()
            .ct_eq(self.response.to_ascii_lowercase().as_bytes())
            .into()
    }
}

/// A challenge header value.
pub fn challenge(alg: Algorithm, realm: &str, nonce: &str, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!(
        "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
        alg.name()
    )
}

/// The verdict on a nonce and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, fresh, and the count is new.
    Fresh,
    /// Ours but expired: challenge again with `stale=true`.
    Stale,
    /// Not ours, or a count already used.
    Invalid,
}

/// Issues and checks nonces. Time is seconds on the caller's clock.
#[derive(Debug)]
pub struct Nonces {
    key: [u8; 32],
    ttl: u64,
    seen: HashMap<String, (u32, u64)>,
}

impl Nonces {
    pub fn new(ttl_secs: u64) -> Nonces {
        Nonces {
            key: rand::random(),
            ttl: ttl_secs,
            seen: HashMap::new(),
        }
    }

    fn mac(&self, data: &str) -> String {
        let mut m = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        m.update(data.as_bytes());
        hex(&m.finalize().into_bytes()[..16])
    }

    /// A new nonce issued at `now`.
    pub fn issue(&self, now: u64) -> String {
        let data = format!("{now:016x}{:016x}", rand::random::<u64>());
        let mac = self.mac(&data);
        format!("{data}{mac}")
    }

    /// Checks `nonce` with count `nc` (hex, as sent) at `now`, and records
    /// the count when fresh.
    pub fn check(&mut self, nonce: &str, nc: &str, now: u64) -> NonceCheck {
        if nonce.len() != 64 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (data, mac) = nonce.split_at(32);
        if !bool::from(self.mac(data).as_bytes().ct_eq(mac.as_bytes())) {
            return NonceCheck::Invalid;
        }
        let Ok(issued) = u64::from_str_radix(&data[..16], 16) else {
            return NonceCheck::Invalid;
        };
        if now.saturating_sub(issued) > self.ttl || issued > now.saturating_add(5) {
            return NonceCheck::Stale;
        }
        let Ok(count) = u32::from_str_radix(nc, 16) else {
            return NonceCheck::Invalid;
        };
        let expires = issued.saturating_add(self.ttl);
        match self.seen.get_mut(nonce) {
            Some((last, _)) if count <= *last => NonceCheck::Invalid,
            Some((last, _)) => {
                *last = count;
                NonceCheck::Fresh
            }
            None => {
                if self.seen.len() >= MAX_TRACKED_NONCES {
                    self.prune(now);
                    if self.seen.len() >= MAX_TRACKED_NONCES {
                        return NonceCheck::Stale;
                    }
                }
                self.seen.insert(nonce.to_string(), (count, expires));
                NonceCheck::Fresh
            }
        }
    }

    /// Forgets the counts of expired nonces.
    pub fn prune(&mut self, now: u64) {
        self.seen.retain(|_, (_, exp)| *exp >= now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_style_response() {
        // The RFC 2617 §3.5 example (HTTP, but the same computation).
        let c = Credentials::parse(
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, \
             nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert!(c.verify(Algorithm::Md5, &h, "GET"));
        assert!(!c.verify(Algorithm::Md5, &h, "POST"));
        let wrong = ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", "x");
        assert!(!c.verify(Algorithm::Md5, &wrong, "GET"));
    }

    #[test]
    fn sha256_response() {
        // RFC 7616 §3.9.1 (SHA-256).
        let c = Credentials::parse(
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", uri=\"/dir/index.html\", \
             algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, \
             cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, \
             response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\"",
        )
        .unwrap();
        assert_eq!(c.algorithm(), Some(Algorithm::Sha256));
        let h = ha1(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert!(c.verify(Algorithm::Sha256, &h, "GET"));
    }

    #[test]
    fn no_qop_is_refused() {
        let c =
            Credentials::parse("Digest username=\"a\", nonce=\"n\", uri=\"sip:x\", response=\"r\"")
                .unwrap();
        assert!(!c.verify(Algorithm::Md5, "h", "REGISTER"));
        assert!(Credentials::parse("Basic YTpi").is_none());
        assert!(Credentials::parse("Digest garbage").is_none());
    }

    #[test]
    fn nonces_expire_and_replays_fail() {
        let mut n = Nonces::new(300);
        let nonce = n.issue(1000);
        assert_eq!(n.check(&nonce, "00000001", 1001), NonceCheck::Fresh);
        assert_eq!(n.check(&nonce, "00000001", 1002), NonceCheck::Invalid);
        assert_eq!(n.check(&nonce, "00000002", 1002), NonceCheck::Fresh);
        assert_eq!(n.check(&nonce, "00000003", 1301), NonceCheck::Stale);
        let mut forged = nonce.clone();
        forged.replace_range(0..1, if nonce.starts_with('0') { "1" } else { "0" });
        assert_eq!(n.check(&forged, "00000009", 1002), NonceCheck::Invalid);
        let other = Nonces::new(300);
        assert_eq!(
            n.check(&other.issue(1000), "00000001", 1001),
            NonceCheck::Invalid
        );
        n.prune(2000);
        assert!(n.seen.is_empty());
    }
}

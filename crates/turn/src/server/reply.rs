//! Encoding of responses and indications.

use stun::attr::{self, Attribute};
use stun::{Class, Key, MessageEncoder, MessageType, Method, TransactionId};

/// Largest control message the server sends.
pub(crate) const MAX_REPLY: usize = 1024;

/// How to seal a response.
#[derive(Debug, Clone)]
pub(crate) struct Seal {
    pub key: Option<Key>,
    pub sha256: bool,
    pub fingerprint: bool,
}

impl Seal {
    pub fn none(fingerprint: bool) -> Self {
        Seal {
            key: None,
            sha256: false,
            fingerprint,
        }
    }
}

/// A response under construction: attributes borrowed from the caller.
pub(crate) struct Reply<'a> {
    pub method: Method,
    pub class: Class,
    pub txid: TransactionId,
    pub attrs: Vec<Attribute<'a>>,
    pub unknown: &'a [u16],
    pub password_algorithms: bool,
}

impl<'a> Reply<'a> {
    pub fn success(method: Method, txid: TransactionId) -> Self {
        Reply {
            method,
            class: Class::Success,
            txid,
            attrs: Vec::new(),
            unknown: &[],
            password_algorithms: false,
        }
    }

    pub fn error(method: Method, txid: TransactionId, code: u16) -> Self {
        let mut r = Reply::success(method, txid);
        r.class = Class::Error;
        r.attrs.push(Attribute::ErrorCode(attr::ErrorCode {
            code,
            reason: attr::reason_phrase(code),
        }));
        r
    }

    /// The error response of a [`super::Refusal`].
    pub fn refusal(method: Method, txid: TransactionId, why: super::Refusal) -> Self {
        let mut r = Reply::success(method, txid);
        r.class = Class::Error;
        r.attrs.push(Attribute::ErrorCode(attr::ErrorCode {
            code: why.code(),
            reason: why.reason(),
        }));
        r
    }

    pub fn with(mut self, a: Attribute<'a>) -> Self {
        self.attrs.push(a);
        self
    }

    /// Encodes with SOFTWARE (if configured) and the seal.
    pub fn encode(&self, software: Option<&str>, seal: &Seal) -> Option<Vec<u8>> {
        let mut buf = [0u8; MAX_REPLY];
        let typ = MessageType::new(self.method, self.class);
        let mut e = MessageEncoder::new(&mut buf, typ, self.txid).ok()?;
        for a in &self.attrs {
            e.push(a).ok()?;
        }
        if !self.unknown.is_empty() {
            e.push_unknown_attributes(self.unknown).ok()?;
        }
        if self.password_algorithms {
            e.push_password_algorithms(&PASSWORD_ALGORITHMS).ok()?;
        }
        if let Some(s) = software {
            e.push(&Attribute::Software(s)).ok()?;
        }
        if let Some(k) = &seal.key {
            if seal.sha256 {
                e.message_integrity_sha256(k).ok()?;
            } else {
                e.message_integrity(k).ok()?;
            }
        }
        if seal.fingerprint {
            e.fingerprint().ok()?;
        }
        let n = e.finish();
        Some(buf[..n].to_vec())
    }
}

/// What the server offers in PASSWORD-ALGORITHMS, in order of preference.
pub(crate) const PASSWORD_ALGORITHMS: [(u16, &[u8]); 2] = [
    (stun::integrity::ALGORITHM_SHA256, &[]),
    (stun::integrity::ALGORITHM_MD5, &[]),
];

/// The PASSWORD-ALGORITHMS value as it appears on the wire, for comparison
/// with what a client echoes.
pub(crate) const PASSWORD_ALGORITHMS_WIRE: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

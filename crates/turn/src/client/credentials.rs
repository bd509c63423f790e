//! Long-term credentials (RFC 8489 §9.2) and request encoding.

use stun::attr::{self, Attribute, PasswordAlgorithmEntry};
use stun::nonce::SecurityFeatures;
use stun::{Class, Key, Message, MessageEncoder, MessageType, Method, PasswordAlgorithm};
use stun::{TransactionId, HEADER_LEN};

/// What the server's last challenge (401 or 438) told us, and the key.
#[derive(Debug, Clone)]
pub(super) struct Credentials {
    pub(super) realm: String,
    pub(super) nonce: String,
    pub(super) algorithm: PasswordAlgorithm,
    /// PASSWORD-ALGORITHMS exactly as the server sent it, echoed in every
    /// authenticated request when the nonce cookie announces the feature.
    pub(super) algorithms: Option<Vec<u8>>,
    pub(super) key: Key,
}

impl Credentials {
    /// Credentials from a 401 or 438 response. REALM may be omitted when
    /// `previous` has one (a 438 need not repeat it); NONCE is required.
    ///
    /// With the "password algorithms" bit in the nonce cookie and a
    /// PASSWORD-ALGORITHMS attribute, SHA-256 is chosen if listed, else MD5
    /// if listed, and both attributes go into later requests; otherwise MD5
    /// without them. A 438 without PASSWORD-ALGORITHMS keeps the previous
    /// choice.
    pub(super) fn from_challenge(
        msg: &Message<'_>,
        previous: Option<&Credentials>,
        username: &str,
        password: &str,
    ) -> Result<Credentials, &'static str> {
        let nonce = match msg.get(attr::NONCE) {
            Some(Ok(Attribute::Nonce(n))) => n.to_owned(),
            _ => return Err("challenge without a valid NONCE"),
        };
        let realm = match (msg.get(attr::REALM), previous) {
            (Some(Ok(Attribute::Realm(r))), _) => r.to_owned(),
            (None, Some(p)) => p.realm.clone(),
            _ => return Err("challenge without a valid REALM"),
        };
        let feature = SecurityFeatures::from_nonce(&nonce).is_some_and(|f| f.password_algorithms);
        let offered = match msg.get(attr::PASSWORD_ALGORITHMS) {
            Some(Ok(Attribute::PasswordAlgorithms(p))) if feature => Some(p),
            _ => None,
        };
        let (algorithm, algorithms) = match (offered, previous) {
            (Some(list), _) => {
                let has = |n: u16| list.iter().any(|e| e.algorithm == n);
                let alg = if has(PasswordAlgorithm::Sha256.number()) {
                    PasswordAlgorithm::Sha256
                } else if has(PasswordAlgorithm::Md5.number()) {
                    PasswordAlgorithm::Md5
                } else {
                    return Err("no supported password algorithm offered");
                };
                (alg, Some(list.as_bytes().to_vec()))
            }
            (None, Some(p)) if feature && p.algorithms.is_some() => {
                (p.algorithm, p.algorithms.clone())
            }
            (None, _) => (PasswordAlgorithm::Md5, None),
        };
        let key = Key::long_term(algorithm, username, &realm, password)
            .map_err(|_| "password is not a valid OpaqueString")?;
        Ok(Credentials {
            realm,
            nonce,
            algorithm,
            algorithms,
            key,
        })
    }
}

/// Encodes a request: `attrs`, then SOFTWARE, then — with credentials —
/// USERNAME, REALM, NONCE, PASSWORD-ALGORITHMS, PASSWORD-ALGORITHM and
/// MESSAGE-INTEGRITY (MESSAGE-INTEGRITY-SHA256 with a SHA-256 key), then
/// FINGERPRINT.
pub(super) fn encode_request(
    method: Method,
    txid: TransactionId,
    attrs: &[Attribute<'_>],
    software: Option<&str>,
    username: &str,
    creds: Option<&Credentials>,
) -> stun::Result<Vec<u8>> {
    let mut cap = HEADER_LEN + 256 + software.map_or(0, str::len) + username.len();
    for a in attrs {
        cap += 4 + a.value_len()?;
    }
    if let Some(c) = creds {
        cap += c.realm.len() + c.nonce.len() + c.algorithms.as_ref().map_or(0, Vec::len);
    }
    let mut buf = vec![0u8; cap];
    let mut enc = MessageEncoder::new(&mut buf, MessageType::new(method, Class::Request), txid)?;
    for a in attrs {
        enc.push(a)?;
    }
    if let Some(s) = software {
        enc.push(&Attribute::Software(s))?;
    }
    if let Some(c) = creds {
        enc.push(&Attribute::Username(username))?;
        enc.push(&Attribute::Realm(&c.realm))?;
        enc.push(&Attribute::Nonce(&c.nonce))?;
        if let Some(list) = &c.algorithms {
            enc.push_raw(attr::PASSWORD_ALGORITHMS, list)?;
            enc.push(&Attribute::PasswordAlgorithm(PasswordAlgorithmEntry {
                algorithm: c.algorithm.number(),
                params: &[],
            }))?;
        }
        match c.algorithm {
            PasswordAlgorithm::Sha256 => enc.message_integrity_sha256(&c.key)?,
            PasswordAlgorithm::Md5 => enc.message_integrity(&c.key)?,
        }
    }
    enc.fingerprint()?;
    let n = enc.finish();
    buf.truncate(n);
    Ok(buf)
}

/// Whether a response is authenticated by `key` (RFC 8489 §9.2.5):
/// always true for a request sent without credentials; otherwise a
/// MESSAGE-INTEGRITY-SHA256 or MESSAGE-INTEGRITY that verifies is required.
pub(super) fn is_authentic(msg: &Message<'_>, key: Option<&Key>) -> bool {
    let Some(key) = key else { return true };
    if msg.has_integrity_sha256() {
        msg.verify_integrity_sha256(key).is_ok()
    } else {
        msg.has_integrity() && msg.verify_integrity(key).is_ok()
    }
}

//! Credentials: static long-term users and the TURN REST shared-secret scheme.
//!
//! The REST scheme (draft-uberti-behave-turn-rest, coturn's
//! `--use-auth-secret`) lets a web service hand out short-lived credentials
//! without talking to the relay: the username is `"<expiry>:<id>"` (or just
//! `"<expiry>"`), a Unix time in seconds, and the password is
//! `base64(HMAC-SHA1(secret, username))`. The relay recomputes the password
//! from the shared secret, so it keeps no per-user state.
//!
//! [`Credentials`] accepts several secrets at once (the first is the current
//! one) so a secret can be rotated without a flag day: [`Credentials::keys`]
//! returns one candidate key per secret and the server tries each.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rustc_hash::FxHashMap;
use sha1::{Digest, Sha1};
use stun::{Key, PasswordAlgorithm};

/// The longest USERNAME accepted, in bytes (RFC 8489 §14.3: "less than 509").
pub const MAX_USERNAME_LEN: usize = 508;

/// HMAC-SHA1 (RFC 2104) built from a full 64-byte block key, which cannot
/// fail: a longer key is hashed first and a shorter one zero-padded, exactly
/// as HMAC specifies.
fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut mac = <Hmac<Sha1> as KeyInit>::new(&block.into());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The REST username: `"<expiry>"` or `"<expiry>:<id>"`.
pub fn rest_username(expiry_unix: u64, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{expiry_unix}:{id}"),
        None => expiry_unix.to_string(),
    }
}

/// The REST password: `base64(HMAC-SHA1(secret, username))`, standard
/// alphabet with padding, as coturn and browsers' `RTCIceServer` expect.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    STANDARD.encode(hmac_sha1(secret, username.as_bytes()))
}

/// How a username reads as a REST username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestUsername {
    /// A valid expiry.
    Expiry(u64),
    /// Shaped like one but unusable: empty timestamp or beyond `u64`.
    Malformed,
    /// Not a REST username at all.
    NotRest,
}

fn parse_rest(username: &str) -> RestUsername {
    let (stamp, has_colon) = match username.split_once(':') {
        Some((s, _)) => (s, true),
        None => (username, false),
    };
    if stamp.is_empty() {
        return if has_colon {
            RestUsername::Malformed
        } else {
            RestUsername::NotRest
        };
    }
    if !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return RestUsername::NotRest;
    }
    match stamp.parse() {
        Ok(expiry) => RestUsername::Expiry(expiry),
        Err(_) => RestUsername::Malformed,
    }
}

/// The expiry (Unix seconds) of a REST username: the decimal number before
/// the first `':'`, or the whole username if it has none (coturn's form).
pub fn rest_expiry(username: &str) -> Option<u64> {
    match parse_rest(username) {
        RestUsername::Expiry(e) => Some(e),
        RestUsername::Malformed | RestUsername::NotRest => None,
    }
}

/// Why [`Credentials::keys`] found no key. Every variant answers 401
/// Unauthenticated; [`as_str`](Self::as_str) is a label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Neither a static user nor a REST username (or no secret configured).
    #[error("unknown user")]
    UnknownUser,
    /// A REST username whose expiry is in the past.
    #[error("credentials expired")]
    Expired,
    /// Empty, longer than [`MAX_USERNAME_LEN`], or a malformed REST username.
    #[error("malformed username")]
    BadUsername,
}

impl AuthError {
    /// A stable lower-case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthError::UnknownUser => "unknown-user",
            AuthError::Expired => "expired",
            AuthError::BadUsername => "bad-username",
        }
    }
}

/// Why a [`Credentials`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The realm is empty.
    #[error("the realm is empty")]
    EmptyRealm,
    /// A static user name is empty or longer than [`MAX_USERNAME_LEN`] bytes.
    #[error("static user name {0:?} is empty or longer than 508 bytes")]
    BadUsername(String),
    /// A static user is listed twice.
    #[error("static user {0:?} is listed twice")]
    DuplicateUser(String),
    /// A static user's password is rejected by SASLprep (RFC 4013).
    #[error("the password of static user {0:?} is not valid under SASLprep")]
    BadPassword(String),
    /// A shared secret is empty (index in the list).
    #[error("shared secret #{0} is empty")]
    EmptySecret(usize),
}

/// The candidate keys for one username: one for a static user, one per
/// shared secret (current secret first) for a REST username. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys(Vec<Key>);

impl Keys {
    /// The keys, current first.
    pub fn as_slice(&self) -> &[Key] {
        &self.0
    }

    /// Iterates over the keys, current first.
    pub fn iter(&self) -> std::slice::Iter<'_, Key> {
        self.0.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false for keys returned by [`Credentials::keys`].
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Keys {
    type Item = &'a Key;
    type IntoIter = std::slice::Iter<'a, Key>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Keys {
    type Item = Key;
    type IntoIter = std::vec::IntoIter<Key>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The relay's credentials: a realm, static users and REST shared secrets.
///
/// Static users' MD5 and SHA-256 long-term keys and their USERHASH values are
/// computed once at construction. `Debug` shows only the realm and counts.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    /// Static users: `[MD5 key, SHA-256 key]`.
    users: FxHashMap<String, [Key; 2]>,
    /// USERHASH → static user name.
    by_hash: FxHashMap<[u8; 32], String>,
    secrets: Vec<Vec<u8>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

const fn slot(algorithm: PasswordAlgorithm) -> usize {
    match algorithm {
        PasswordAlgorithm::Md5 => 0,
        PasswordAlgorithm::Sha256 => 1,
    }
}

impl Credentials {
    /// Builds the credentials from a realm, static `(name, password)` pairs
    /// and shared secrets (all accepted; the first is the current one).
    pub fn new<U, N, P, S>(realm: &str, users: U, secrets: S) -> Result<Self, CredentialsError>
    where
        U: IntoIterator<Item = (N, P)>,
        N: Into<String>,
        P: AsRef<str>,
        S: IntoIterator,
        S::Item: AsRef<[u8]>,
    {
        if realm.is_empty() {
            return Err(CredentialsError::EmptyRealm);
        }
        let mut map = FxHashMap::default();
        let mut by_hash = FxHashMap::default();
        for (name, password) in users {
            let name: String = name.into();
            if name.is_empty() || name.len() > MAX_USERNAME_LEN {
                return Err(CredentialsError::BadUsername(name));
            }
            if map.contains_key(&name) {
                return Err(CredentialsError::DuplicateUser(name));
            }
            let key = |alg| Key::long_term(alg, &name, realm, password.as_ref());
            let (Ok(md5), Ok(sha256)) =
                (key(PasswordAlgorithm::Md5), key(PasswordAlgorithm::Sha256))
            else {
                return Err(CredentialsError::BadPassword(name));
            };
            by_hash.insert(stun::integrity::userhash(&name, realm), name.clone());
            map.insert(name, [md5, sha256]);
        }
        let mut list = Vec::new();
        for (i, s) in secrets.into_iter().enumerate() {
            let s = s.as_ref();
            if s.is_empty() {
                return Err(CredentialsError::EmptySecret(i));
            }
            list.push(s.to_vec());
        }
        Ok(Credentials {
            realm: realm.to_owned(),
            users: map,
            by_hash,
            secrets: list,
        })
    }

    /// Whether `username` is a static (configured) user; static users win
    /// over REST parsing, as in [`Credentials::keys`].
    pub fn is_static(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The candidate keys of `username` for `algorithm` at `now_unix`.
    ///
    /// A static user of that name wins over REST parsing. Otherwise a REST
    /// username is valid while `expiry >= now_unix` and gets one key per
    /// shared secret, current first.
    pub fn keys(
        &self,
        username: &str,
        algorithm: PasswordAlgorithm,
        now_unix: u64,
    ) -> Result<Keys, AuthError> {
        if let Some(pair) = self.users.get(username) {
            return Ok(Keys(vec![pair[slot(algorithm)].clone()]));
        }
        if username.is_empty() || username.len() > MAX_USERNAME_LEN {
            return Err(AuthError::BadUsername);
        }
        if self.secrets.is_empty() {
            return Err(AuthError::UnknownUser);
        }
        let expiry = match parse_rest(username) {
            RestUsername::Expiry(e) => e,
            RestUsername::Malformed => return Err(AuthError::BadUsername),
            RestUsername::NotRest => return Err(AuthError::UnknownUser),
        };
        if expiry < now_unix {
            return Err(AuthError::Expired);
        }
        self.secrets
            .iter()
            .map(|s| {
                let password = rest_password(s, username);
                // The password is base64, which SASLprep always accepts.
                Key::long_term(algorithm, username, &self.realm, &password)
                    .map_err(|_| AuthError::BadUsername)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Keys)
    }

    /// The static user whose USERHASH (RFC 8489 §14.4) is `hash`. REST users
    /// cannot be found by hash: their names are not known in advance.
    pub fn username_for_hash(&self, hash: &[u8; 32]) -> Option<&str> {
        self.by_hash.get(hash).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::{Class, Message, MessageEncoder, MessageType, Method, TransactionId};

    const REALM: &str = "example.org";
    const NOW: u64 = 1_700_000_000;
    const NO_USERS: [(&str, &str); 0] = [];

    fn creds(secrets: &[&[u8]]) -> Credentials {
        Credentials::new(
            REALM,
            [("alice", "pw-a"), ("1700000000:bob", "pw-b")],
            secrets.iter(),
        )
        .unwrap()
    }

    /// A request signed as a client holding `password` would sign it.
    fn signed_request(username: &str, password: &str) -> Vec<u8> {
        let key = Key::long_term(PasswordAlgorithm::Md5, username, REALM, password).unwrap();
        let mut buf = [0u8; 512];
        let ty = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut enc = MessageEncoder::new(&mut buf, ty, TransactionId([7; 12])).unwrap();
        enc.push(&stun::attr::Attribute::Username(username))
            .unwrap();
        enc.message_integrity(&key).unwrap();
        let n = enc.finish();
        buf[..n].to_vec()
    }

    #[test]
    fn rest_password_known_values() {
        // Computed with Python's hmac/hashlib/base64.
        let table: &[(&[u8], &str, &str)] = &[
            (
                b"s3cret",
                "1700000000:alice",
                "TtElzSjT0GdnTQ9xdcRNxx96yQs=",
            ),
            (b"other", "1700000000:alice", "k4XPUH6lu3YPdwu9quEHG44deCs="),
            (
                &[b'x'; 100],
                "1700000000:alice",
                "kfMlSk7XdUYhsKh/pM81//pPw/8=",
            ),
            (&[b'k'; 64], "1700000000", "hvKQBiLccGeWgu0MoSenN+nvrZ0="),
            (b"", "1700000000", "/b+i2AbJcvCF/iRRRvbEdHMR1N0="),
        ];
        for (secret, user, expected) in table {
            assert_eq!(rest_password(secret, user), *expected, "{user}");
        }
    }

    #[test]
    fn rest_username_and_expiry() {
        assert_eq!(rest_username(NOW, Some("alice")), "1700000000:alice");
        assert_eq!(rest_username(NOW, None), "1700000000");
        let table: &[(&str, Option<u64>)] = &[
            ("1700000000:alice", Some(NOW)),
            ("1700000000", Some(NOW)),
            ("1700000000:", Some(NOW)),
            ("1700000000:a:b", Some(NOW)),
            ("0", Some(0)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("", None),
            (":alice", None),
            ("alice", None),
            ("alice:1700000000", None),
            ("17000x0000:alice", None),
            ("+1700000000", None),
            ("-1", None),
            (" 1700000000", None),
            ("١٢٣", None),
        ];
        for (user, expected) in table {
            assert_eq!(rest_expiry(user), *expected, "{user:?}");
        }
    }

    #[test]
    fn static_users() {
        let c = creds(&[b"s3cret"]);
        for alg in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
            let keys = c.keys("alice", alg, NOW).unwrap();
            assert_eq!(
                keys.as_slice(),
                &[Key::long_term(alg, "alice", REALM, "pw-a").unwrap()]
            );
        }
        // Static wins over REST parsing, even when the REST reading is expired.
        let keys = c
            .keys("1700000000:bob", PasswordAlgorithm::Md5, NOW + 100)
            .unwrap();
        let expected = Key::long_term(PasswordAlgorithm::Md5, "1700000000:bob", REALM, "pw-b");
        assert_eq!(keys.as_slice(), &[expected.unwrap()]);
    }

    #[test]
    fn rest_keys_and_expiry_edge() {
        let c = creds(&[b"s3cret"]);
        let user = "1700000000:carol";
        for alg in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
            let keys = c.keys(user, alg, NOW).unwrap();
            let pw = rest_password(b"s3cret", user);
            assert_eq!(
                keys.as_slice(),
                &[Key::long_term(alg, user, REALM, &pw).unwrap()]
            );
            assert!(c.keys(user, alg, NOW - 1).is_ok());
            assert_eq!(c.keys(user, alg, NOW + 1), Err(AuthError::Expired));
        }
        assert!(c.keys("1700000000", PasswordAlgorithm::Md5, NOW).is_ok());
    }

    #[test]
    fn rotation_accepts_either_secret() {
        let c = creds(&[b"new", b"old"]);
        let user = rest_username(NOW + 60, Some("dave"));
        let keys = c.keys(&user, PasswordAlgorithm::Md5, NOW).unwrap();
        assert_eq!(keys.len(), 2);
        for (i, secret) in [&b"new"[..], b"old"].into_iter().enumerate() {
            let req = signed_request(&user, &rest_password(secret, &user));
            let msg = Message::parse(&req).unwrap();
            let ok: Vec<bool> = keys
                .iter()
                .map(|k| msg.verify_integrity(k).is_ok())
                .collect();
            assert_eq!(ok, [i == 0, i == 1], "secret #{i}");
        }
        let req = signed_request(&user, &rest_password(b"wrong", &user));
        let msg = Message::parse(&req).unwrap();
        assert!(keys.iter().all(|k| msg.verify_integrity(k).is_err()));
    }

    #[test]
    fn errors() {
        let c = creds(&[b"s3cret"]);
        let long = "1".repeat(MAX_USERNAME_LEN + 1);
        let table: &[(&str, AuthError)] = &[
            ("mallory", AuthError::UnknownUser),
            ("mallory:1700000000", AuthError::UnknownUser),
            ("Alice", AuthError::UnknownUser),
            ("", AuthError::BadUsername),
            (":x", AuthError::BadUsername),
            ("99999999999999999999999:x", AuthError::BadUsername),
            (&long, AuthError::BadUsername),
            ("1:old", AuthError::Expired),
        ];
        for (user, expected) in table {
            assert_eq!(
                c.keys(user, PasswordAlgorithm::Sha256, NOW),
                Err(*expected),
                "{user:?}"
            );
        }
        // Without secrets, REST usernames are unknown.
        let c = creds(&[]);
        let r = c.keys("1700000000:carol", PasswordAlgorithm::Md5, NOW);
        assert_eq!(r, Err(AuthError::UnknownUser));
        assert_eq!(AuthError::UnknownUser.as_str(), "unknown-user");
        assert_eq!(AuthError::Expired.as_str(), "expired");
        assert_eq!(AuthError::BadUsername.as_str(), "bad-username");
    }

    #[test]
    fn userhash_index() {
        let c = creds(&[b"s3cret"]);
        let h = stun::integrity::userhash("alice", REALM);
        assert_eq!(c.username_for_hash(&h), Some("alice"));
        let h = stun::integrity::userhash("alice", "other.realm");
        assert_eq!(c.username_for_hash(&h), None);
        assert_eq!(c.username_for_hash(&[0; 32]), None);
    }

    #[test]
    fn construction_errors() {
        let secrets: [&[u8]; 0] = [];
        let e = |users: &[(&str, &str)], realm: &str, secrets: &[&[u8]]| {
            Credentials::new(realm, users.iter().copied(), secrets.iter()).unwrap_err()
        };
        assert_eq!(e(&[], "", &secrets), CredentialsError::EmptyRealm);
        assert_eq!(
            e(&[("", "x")], REALM, &secrets),
            CredentialsError::BadUsername(String::new())
        );
        let dup = e(&[("a", "x"), ("a", "y")], REALM, &secrets);
        assert_eq!(dup, CredentialsError::DuplicateUser("a".into()));
        let bad = e(&[("a", "bad\u{7}pw")], REALM, &secrets);
        assert_eq!(bad, CredentialsError::BadPassword("a".into()));
        assert_eq!(
            e(&[], REALM, &[b"ok", b""]),
            CredentialsError::EmptySecret(1)
        );
        assert!(Credentials::new(REALM, NO_USERS, [b"k".to_vec()]).is_ok());
    }

    #[test]
    fn debug_hides_secrets() {
        let c = Credentials::new(REALM, [("alice", "hunter2")], [b"topsecret"]).unwrap();
        let shown = format!("{c:?}");
        assert_eq!(
            shown,
            r#"Credentials { realm: "example.org", users: 1, secrets: 1 }"#
        );
        let keys = c.keys("1700000000:x", PasswordAlgorithm::Md5, NOW).unwrap();
        assert_eq!(format!("{keys:?}"), "Keys([Key(..)])");
    }
}

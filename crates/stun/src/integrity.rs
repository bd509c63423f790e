//! MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT and key derivation
//! (RFC 8489 §9.1.2, §9.2.2, §14.5–§14.7, §18.5).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::HEADER_LEN;

/// XOR constant of FINGERPRINT ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// PASSWORD-ALGORITHM number of MD5.
pub const ALGORITHM_MD5: u16 = 0x0001;
/// PASSWORD-ALGORITHM number of SHA-256.
pub const ALGORITHM_SHA256: u16 = 0x0002;

/// The password algorithms of RFC 8489 §18.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    /// MD5(username ":" realm ":" password), the RFC 5389 key.
    Md5,
    /// SHA-256(username ":" realm ":" password).
    Sha256,
}

impl PasswordAlgorithm {
    /// The wire number.
    pub const fn number(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => ALGORITHM_MD5,
            PasswordAlgorithm::Sha256 => ALGORITHM_SHA256,
        }
    }

    /// From the wire number.
    pub const fn from_number(n: u16) -> Option<Self> {
        match n {
            ALGORITHM_MD5 => Some(PasswordAlgorithm::Md5),
            ALGORITHM_SHA256 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// A long-term or short-term credential key: 16 bytes (MD5), 32 bytes
/// (SHA-256) or, for short-term credentials, the prepared password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; 64],
    len: u8,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from raw bytes; `None` if longer than 64 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() > 64 {
            return None;
        }
        let mut bytes = [0u8; 64];
        bytes[..b.len()].copy_from_slice(b);
        Some(Key {
            bytes,
            len: b.len() as u8,
        })
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The long-term key (RFC 8489 §9.2.2): the algorithm's hash of
    /// `username ":" realm ":" password`.
    ///
    /// The password is prepared with SASLprep (RFC 4013), as RFC 5389 and
    /// the RFC 5769 vectors expect; RFC 8489's OpaqueString (RFC 8265) gives
    /// the same bytes for every ASCII password and for those vectors. The
    /// realm is used as sent: servers compare it byte for byte.
    pub fn long_term(
        algorithm: PasswordAlgorithm,
        username: &str,
        realm: &str,
        password: &str,
    ) -> Result<Self> {
        let password = stringprep::saslprep(password).map_err(|_| Error::BadPassword)?;
        let parts: [&[u8]; 5] = [
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ];
        Ok(match algorithm {
            PasswordAlgorithm::Md5 => {
                let mut h = Md5::new();
                for p in parts {
                    h.update(p);
                }
                Key::from_bytes(&h.finalize()).ok_or(Error::BadPassword)?
            }
            PasswordAlgorithm::Sha256 => {
                let mut h = Sha256::new();
                for p in parts {
                    h.update(p);
                }
                Key::from_bytes(&h.finalize()).ok_or(Error::BadPassword)?
            }
        })
    }

    /// The short-term key (RFC 8489 §9.1.2): OpaqueString(password).
    pub fn short_term(password: &str) -> Result<Self> {
        let p = stringprep::saslprep(password).map_err(|_| Error::BadPassword)?;
        Key::from_bytes(p.as_bytes()).ok_or(Error::BadPassword)
    }
}

/// USERHASH = SHA-256(OpaqueString(username) ":" OpaqueString(realm)) (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.finalize().into()
}

/// Feeds `msg[..end]` to `f` with the header's length field replaced by
/// `len_field`, as integrity and fingerprint computations require.
fn feed_prefix(msg: &[u8], end: usize, len_field: usize, mut f: impl FnMut(&[u8])) {
    f(&msg[0..2]);
    f(&(len_field as u16).to_be_bytes());
    f(&msg[4..end]);
}

/// HMAC-SHA1 over `msg[..end]` with the length field set to cover a
/// MESSAGE-INTEGRITY attribute starting at `end`.
pub(crate) fn hmac_sha1(key: &[u8], msg: &[u8], end: usize) -> [u8; 20] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for Hmac.
    let mut mac = match Hmac::<Sha1>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 20],
    };
    feed_prefix(msg, end, end + 24 - HEADER_LEN, |b| mac.update(b));
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over `msg[..end]` with the length field set to cover a
/// MESSAGE-INTEGRITY-SHA256 attribute of 32 bytes starting at `end`.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8], end: usize, value_len: usize) -> [u8; 32] {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    feed_prefix(msg, end, end + 4 + value_len - HEADER_LEN, |b| {
        mac.update(b)
    });
    mac.finalize().into_bytes().into()
}

/// CRC-32 over `msg[..end]` with the length field covering a FINGERPRINT at `end`.
pub(crate) fn fingerprint(msg: &[u8], end: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    feed_prefix(msg, end, end + 8 - HEADER_LEN, |b| h.update(b));
    h.finalize() ^ FINGERPRINT_XOR
}

/// Outcome of an integrity or fingerprint check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// The attribute is not in the message.
    #[error("attribute missing")]
    Missing,
    /// The value does not match.
    #[error("mismatch")]
    Mismatch,
}

impl Message<'_> {
    /// Verifies MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, in constant time.
    pub fn verify_integrity(&self, key: &Key) -> std::result::Result<(), IntegrityError> {
        let off = self.mi_offset().ok_or(IntegrityError::Missing)?;
        let buf = self.as_bytes();
        // The value must be exactly 20 bytes: padding is not part of it.
        if crate::message::be16(buf, off + 2) != 20 {
            return Err(IntegrityError::Mismatch);
        }
        let got = buf.get(off + 4..off + 24).ok_or(IntegrityError::Missing)?;
        let want = hmac_sha1(key.as_bytes(), buf, off);
        if bool::from(want.ct_eq(got)) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 (possibly truncated to 16–32 bytes)
    /// with `key`, in constant time.
    pub fn verify_integrity_sha256(&self, key: &Key) -> std::result::Result<(), IntegrityError> {
        let off = self.mi256_offset().ok_or(IntegrityError::Missing)?;
        let buf = self.as_bytes();
        let len = usize::from(crate::message::be16(buf, off + 2));
        let got = buf
            .get(off + 4..off + 4 + len)
            .ok_or(IntegrityError::Missing)?;
        let want = hmac_sha256(key.as_bytes(), buf, off, len);
        if !(16..=32).contains(&len) || !bool::from(want[..len].ct_eq(got)) {
            Err(IntegrityError::Mismatch)
        } else {
            Ok(())
        }
    }

    /// Verifies FINGERPRINT.
    pub fn verify_fingerprint(&self) -> std::result::Result<(), IntegrityError> {
        let off = self.fp_offset().ok_or(IntegrityError::Missing)?;
        let buf = self.as_bytes();
        // The value must be exactly 4 bytes: padding is not part of it.
        if crate::message::be16(buf, off + 2) != 4 {
            return Err(IntegrityError::Mismatch);
        }
        let got = buf.get(off + 4..off + 8).ok_or(IntegrityError::Missing)?;
        let got = u32::from_be_bytes([got[0], got[1], got[2], got[3]]);
        if fingerprint(buf, off) == got {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslprep_of_rfc5769_password() {
        let a = Key::long_term(
            PasswordAlgorithm::Md5,
            "u",
            "r",
            "The\u{00AD}M\u{00AA}tr\u{2168}",
        )
        .unwrap();
        let b = Key::long_term(PasswordAlgorithm::Md5, "u", "r", "TheMatrIX").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_bytes().len(), 16);
        let c = Key::long_term(PasswordAlgorithm::Sha256, "u", "r", "TheMatrIX").unwrap();
        assert_eq!(c.as_bytes().len(), 32);
    }

    #[test]
    fn key_debug_hides_bytes() {
        let k = Key::from_bytes(b"secret").unwrap();
        assert_eq!(format!("{k:?}"), "Key(..)");
        assert!(Key::from_bytes(&[0; 65]).is_none());
    }

    /// Rewrites the length field of the attribute at `off` (value bytes and
    /// padding stay: the attribute keeps its padded size).
    fn set_attr_len(buf: &mut [u8], off: usize, len: u16) {
        buf[off + 2..off + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn signed_message() -> (Vec<u8>, Key) {
        use crate::{Class, MessageEncoder, MessageType, Method, TransactionId};
        let key = Key::from_bytes(b"key").unwrap();
        let mut buf = vec![0u8; 128];
        let typ = MessageType::new(Method::BINDING, Class::Request);
        let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([2; 12])).unwrap();
        e.push(&crate::attr::Attribute::Software("x")).unwrap();
        e.message_integrity(&key).unwrap();
        e.fingerprint().unwrap();
        let n = e.finish();
        buf.truncate(n);
        (buf, key)
    }

    /// Regression: FINGERPRINT was read as the four bytes after its header
    /// whatever its length field said, so a FINGERPRINT of length 1–3 whose
    /// padding completed the CRC verified although it decodes as invalid.
    #[test]
    fn regression_fingerprint_with_bad_length_is_not_verified() {
        let (mut buf, _) = signed_message();
        let off = buf.len() - 8;
        for len in 1..=3 {
            set_attr_len(&mut buf, off, len);
            let m = Message::parse(&buf).unwrap();
            assert!(m.get(crate::attr::FINGERPRINT).unwrap().is_err());
            assert_eq!(
                m.verify_fingerprint(),
                Err(IntegrityError::Mismatch),
                "length {len}"
            );
        }
    }

    /// Regression: MESSAGE-INTEGRITY was read as the 20 bytes after its
    /// header whatever its length field said, so an MI of length 17–19
    /// (padded to 20) verified although it decodes as invalid.
    #[test]
    fn regression_integrity_with_bad_length_is_not_verified() {
        let (mut buf, key) = signed_message();
        // The fingerprint would change with the length field: drop it.
        buf.truncate(buf.len() - 8);
        let l = (buf.len() - HEADER_LEN) as u16;
        buf[2..4].copy_from_slice(&l.to_be_bytes());
        let off = buf.len() - 24;
        assert!(Message::parse(&buf).unwrap().verify_integrity(&key).is_ok());
        for len in 17..=19 {
            set_attr_len(&mut buf, off, len);
            let m = Message::parse(&buf).unwrap();
            assert!(m.get(crate::attr::MESSAGE_INTEGRITY).unwrap().is_err());
            assert_eq!(
                m.verify_integrity(&key),
                Err(IntegrityError::Mismatch),
                "length {len}"
            );
        }
    }
}

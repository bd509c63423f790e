//! The RFC 8489 nonce cookie and its security feature bits (§9.2, §18.1).
//!
//! A server that supports the RFC 8489 features starts its NONCE with
//! `obMatJos2` followed by four base64 characters that encode 24 feature bits.
//! Bit 0 (the most significant) is "Password algorithms", bit 1 "Username
//! anonymity".

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The nonce cookie prefix.
pub const NONCE_COOKIE: &str = "obMatJos2";
/// Length of cookie plus encoded features.
pub const NONCE_COOKIE_LEN: usize = 13;

/// The security feature set carried in a nonce cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecurityFeatures {
    /// The server supports PASSWORD-ALGORITHMS (bit 0).
    pub password_algorithms: bool,
    /// The server supports USERHASH (bit 1).
    pub username_anonymity: bool,
}

impl SecurityFeatures {
    /// The 24 feature bits.
    pub const fn bits(self) -> u32 {
        (if self.password_algorithms {
            0x80_0000
        } else {
            0
        }) | (if self.username_anonymity {
            0x40_0000
        } else {
            0
        })
    }

    /// From the 24 feature bits (unassigned bits ignored).
    pub const fn from_bits(b: u32) -> Self {
        SecurityFeatures {
            password_algorithms: b & 0x80_0000 != 0,
            username_anonymity: b & 0x40_0000 != 0,
        }
    }

    /// The 13-character nonce prefix announcing these features.
    pub fn cookie(self) -> String {
        let b = self.bits().to_be_bytes();
        format!("{NONCE_COOKIE}{}", STANDARD.encode(&b[1..4]))
    }

    /// The features announced by a nonce, if it starts with the cookie.
    pub fn from_nonce(nonce: &str) -> Option<Self> {
        let rest = nonce.strip_prefix(NONCE_COOKIE)?;
        let enc = rest.get(..4)?;
        let mut out = [0u8; 3];
        let n = STANDARD.decode_slice(enc, &mut out).ok()?;
        if n != 3 {
            return None;
        }
        Some(Self::from_bits(u32::from_be_bytes([
            0, out[0], out[1], out[2],
        ])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trip() {
        for pa in [false, true] {
            for ua in [false, true] {
                let f = SecurityFeatures {
                    password_algorithms: pa,
                    username_anonymity: ua,
                };
                let c = f.cookie();
                assert_eq!(c.len(), NONCE_COOKIE_LEN);
                assert_eq!(SecurityFeatures::from_nonce(&(c + "xyz")), Some(f));
            }
        }
        assert_eq!(SecurityFeatures::from_nonce("plain-nonce"), None);
        assert_eq!(SecurityFeatures::from_nonce("obMatJos2A"), None);
        assert_eq!(SecurityFeatures::from_nonce("obMatJos2!!!!"), None);
        // RFC 8489 B.1's nonce parses.
        assert!(
            SecurityFeatures::from_nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA").is_some()
        );
    }
}

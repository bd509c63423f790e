//! Stateless nonces (RFC 8489 §9.2): an HMAC of a timestamp, so the server
//! keeps no nonce table and an attacker cannot make it grow one.
//!
//! A nonce is the RFC 8489 cookie (`obMatJos2` and four characters of
//! security feature bits, from [`SecurityFeatures::cookie`]) followed by the
//! unpadded standard base64 of
//!
//! ```text
//! ms (u64, big-endian) ‖ HMAC-SHA256(key, cookie ‖ ms ‖ family ‖ client IP ‖ client port)[..12]
//! ```
//!
//! where `ms` counts milliseconds of wall-clock time (Unix time, taken once
//! at start: the generator then counts on the monotonic clock), so relays
//! that share the key (a pool behind one name, see
//! [`crate::server::ServerConfig::secret`]) accept each other's nonces, as a
//! client redirected by 300 ALTERNATE-SERVER expects; `family`
//! is one byte, 4 or 6. A nonce is therefore bound to the client's transport
//! address and to the features it announced, and it is 40 printable ASCII
//! characters without `"` or `\` (well under the 128-character limit of
//! RFC 8489 §14.10). A nonce older than the lifetime, or one from the future,
//! is stale (438 Stale Nonce); one that does not verify is invalid.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use stun::nonce::{SecurityFeatures, NONCE_COOKIE_LEN};
use subtle::ConstantTimeEq;

/// The default nonce lifetime: 600 s.
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(600);

/// How far in the future a nonce of another relay of the pool may be (the
/// start-up time is read in whole seconds, and clocks drift).
const CLOCK_SKEW_MS: u64 = 5_000;

/// Bytes of the truncated HMAC in a nonce.
const MAC_LEN: usize = 12;
/// Bytes before base64: timestamp and MAC.
const RAW_LEN: usize = 8 + MAC_LEN;
/// Characters of the unpadded base64 of [`RAW_LEN`] bytes.
const ENCODED_LEN: usize = (RAW_LEN * 4).div_ceil(3);
/// Length of every nonce issued, in characters (and bytes).
pub const NONCE_LEN: usize = NONCE_COOKIE_LEN + ENCODED_LEN;

/// The verdict of [`NonceGenerator::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NonceCheck {
    /// Issued by this generator to this client, within its lifetime.
    Valid,
    /// Issued by this generator to this client, but older than the lifetime
    /// or from the future: answer 438 Stale Nonce with a fresh one.
    Stale,
    /// Malformed, forged, or issued to another client address.
    Invalid,
}

impl NonceCheck {
    /// A stable lower-case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            NonceCheck::Valid => "valid",
            NonceCheck::Stale => "stale",
            NonceCheck::Invalid => "invalid",
        }
    }
}

/// Issues and checks stateless nonces; see the [module documentation](self).
///
/// `Debug` shows the lifetime only, never the key.
#[derive(Clone)]
pub struct NonceGenerator {
    /// HMAC-SHA256 keyed with the secret, cloned for each nonce.
    mac: Hmac<Sha256>,
    lifetime: Duration,
    epoch: Instant,
    /// Unix time in milliseconds at `epoch`.
    epoch_unix_ms: u64,
}

impl fmt::Debug for NonceGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceGenerator")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl NonceGenerator {
    /// A generator keyed with a 32-byte secret (draw it from a CSPRNG at
    /// start-up), with nonces valid for `lifetime` (see
    /// [`DEFAULT_NONCE_LIFETIME`]) and timestamps counted from `epoch`.
    pub fn new(key: [u8; 32], lifetime: Duration, epoch: Instant) -> Self {
        // A key shorter than the 64-byte block is zero-padded by HMAC itself,
        // so this is HMAC with `key`, built without a fallible constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&key);
        NonceGenerator {
            mac: <Hmac<Sha256> as KeyInit>::new(&block.into()),
            lifetime,
            epoch,
            epoch_unix_ms: 0,
        }
    }

    /// Counts timestamps as Unix time: `epoch` is `unix_ms` milliseconds
    /// after 1970 (see the [module documentation](self)).
    #[must_use]
    pub fn with_unix_epoch(mut self, unix_ms: u64) -> Self {
        self.epoch_unix_ms = unix_ms;
        self
    }

    /// The lifetime of a nonce.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Milliseconds from the epoch to `now` (0 before the epoch).
    fn millis(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(ms)
            .unwrap_or(u64::MAX)
            .saturating_add(self.epoch_unix_ms)
    }

    fn tag(&self, cookie: &[u8], ms: u64, client: SocketAddr) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(cookie);
        mac.update(&ms.to_be_bytes());
        match client.ip() {
            IpAddr::V4(a) => {
                mac.update(&[4]);
                mac.update(&a.octets());
            }
            IpAddr::V6(a) => {
                mac.update(&[6]);
                mac.update(&a.octets());
            }
        }
        mac.update(&client.port().to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&full[..MAC_LEN]);
        tag
    }

    /// A nonce for `client` at `now`, announcing `features`.
    pub fn issue(&self, now: Instant, client: SocketAddr, features: SecurityFeatures) -> String {
        let mut nonce = features.cookie();
        let ms = self.millis(now);
        let mut raw = [0u8; RAW_LEN];
        raw[..8].copy_from_slice(&ms.to_be_bytes());
        raw[8..].copy_from_slice(&self.tag(nonce.as_bytes(), ms, client));
        STANDARD_NO_PAD.encode_string(raw, &mut nonce);
        nonce
    }

    /// Checks a nonce a client sent back; never panics on any input.
    pub fn check(&self, nonce: &str, now: Instant, client: SocketAddr) -> NonceCheck {
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Invalid;
        }
        let (Some(cookie), Some(body)) =
            (nonce.get(..NONCE_COOKIE_LEN), nonce.get(NONCE_COOKIE_LEN..))
        else {
            return NonceCheck::Invalid;
        };
        // Room for the decoder's estimate; exactly RAW_LEN bytes expected.
        let mut raw = [0u8; RAW_LEN + 3];
        match STANDARD_NO_PAD.decode_slice(body, &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return NonceCheck::Invalid,
        }
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&raw[..8]);
        let ms = u64::from_be_bytes(ms);
        let expected = self.tag(cookie.as_bytes(), ms, client);
        if !bool::from(expected.ct_eq(&raw[8..RAW_LEN])) {
            return NonceCheck::Invalid;
        }
        // Another relay of the pool may run a little ahead: its nonces may
        // come from up to CLOCK_SKEW in the future.
        let now_ms = self.millis(now).saturating_add(CLOCK_SKEW_MS);
        match now_ms.checked_sub(ms) {
            Some(age)
                if Duration::from_millis(age.saturating_sub(CLOCK_SKEW_MS)) <= self.lifetime =>
            {
                NonceCheck::Valid
            }
            _ => NonceCheck::Stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [0x42; 32];
    const FEATURES: SecurityFeatures = SecurityFeatures {
        password_algorithms: true,
        username_anonymity: true,
    };

    fn setup() -> (NonceGenerator, Instant, SocketAddr) {
        let epoch = Instant::now();
        let gen = NonceGenerator::new(KEY, DEFAULT_NONCE_LIFETIME, epoch);
        (gen, epoch, "198.51.100.7:40000".parse().unwrap())
    }

    #[test]
    fn relays_sharing_the_key_accept_each_others_nonces() {
        let unix_ms = 1_800_000_000_000;
        let (a_start, b_start) = (Instant::now(), Instant::now() + Duration::from_secs(3600));
        // Relay b started an hour of monotonic time later, at the same wall clock
        // plus that hour.
        let a = NonceGenerator::new(KEY, DEFAULT_NONCE_LIFETIME, a_start).with_unix_epoch(unix_ms);
        let b = NonceGenerator::new(KEY, DEFAULT_NONCE_LIFETIME, b_start)
            .with_unix_epoch(unix_ms + 3_600_000);
        let client: SocketAddr = "198.51.100.7:0".parse().unwrap();
        let t = b_start + Duration::from_secs(10);
        let n = a.issue(t, client, FEATURES);
        assert_eq!(b.check(&n, t, client), NonceCheck::Valid);
        // A second or two ahead (start-up time read in whole seconds): valid.
        let ahead = a.issue(t + Duration::from_secs(2), client, FEATURES);
        assert_eq!(b.check(&ahead, t, client), NonceCheck::Valid);
        // Far ahead or too old: stale.
        let far = a.issue(t + Duration::from_secs(60), client, FEATURES);
        assert_eq!(b.check(&far, t, client), NonceCheck::Stale);
        assert_eq!(
            b.check(
                &n,
                t + DEFAULT_NONCE_LIFETIME + Duration::from_secs(6),
                client
            ),
            NonceCheck::Stale
        );
        // Another key: invalid.
        let c = NonceGenerator::new([7; 32], DEFAULT_NONCE_LIFETIME, b_start)
            .with_unix_epoch(unix_ms + 3_600_000);
        assert_eq!(c.check(&n, t, client), NonceCheck::Invalid);
    }

    #[test]
    fn shape() {
        let (gen, epoch, client) = setup();
        let v6: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        for now in [epoch, epoch + Duration::from_secs(86_400 * 365 * 50)] {
            for c in [client, v6] {
                for f in [FEATURES, SecurityFeatures::default()] {
                    let n = gen.issue(now, c, f);
                    assert_eq!(n.len(), NONCE_LEN);
                    assert!(n.len() < 128);
                    assert!(n
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'));
                    assert!(n.starts_with(&f.cookie()));
                    assert_eq!(SecurityFeatures::from_nonce(&n), Some(f));
                }
            }
        }
    }

    #[test]
    fn lifetime_in_simulated_time() {
        let (gen, epoch, client) = setup();
        // Issue at a time that is not a whole millisecond.
        let issued = epoch + Duration::from_micros(20_000_500);
        let n = gen.issue(issued, client, FEATURES);
        let ms = Duration::from_millis(1);
        let table: &[(Instant, NonceCheck)] = &[
            (issued, NonceCheck::Valid),
            (issued + ms, NonceCheck::Valid),
            (issued + DEFAULT_NONCE_LIFETIME - ms, NonceCheck::Valid),
            (issued + DEFAULT_NONCE_LIFETIME + ms, NonceCheck::Stale),
            (issued + DEFAULT_NONCE_LIFETIME * 10, NonceCheck::Stale),
            // Up to CLOCK_SKEW_MS from the future (another relay's clock).
            (issued - ms, NonceCheck::Valid),
            (
                issued - Duration::from_millis(CLOCK_SKEW_MS) - 2 * ms,
                NonceCheck::Stale,
            ),
            (epoch, NonceCheck::Stale),
        ];
        for (i, (now, expected)) in table.iter().enumerate() {
            assert_eq!(gen.check(&n, *now, client), *expected, "row {i}");
        }
        // A shorter lifetime.
        let short = NonceGenerator::new(KEY, Duration::from_secs(30), epoch);
        let n = short.issue(issued, client, FEATURES);
        assert_eq!(
            short.check(&n, issued + Duration::from_secs(29), client),
            NonceCheck::Valid
        );
        assert_eq!(
            short.check(&n, issued + Duration::from_secs(31), client),
            NonceCheck::Stale
        );
    }

    #[test]
    fn bound_to_client_key_and_epoch() {
        let (gen, epoch, client) = setup();
        let n = gen.issue(epoch, client, FEATURES);
        let others: [SocketAddr; 4] = [
            "198.51.100.7:40001".parse().unwrap(),
            "198.51.100.8:40000".parse().unwrap(),
            "[::ffff:198.51.100.7]:40000".parse().unwrap(),
            "[2001:db8::7]:40000".parse().unwrap(),
        ];
        for other in others {
            assert_eq!(gen.check(&n, epoch, other), NonceCheck::Invalid, "{other}");
        }
        let other_key = NonceGenerator::new([1; 32], DEFAULT_NONCE_LIFETIME, epoch);
        assert_eq!(other_key.check(&n, epoch, client), NonceCheck::Invalid);
        // Same key, later epoch: the timestamp is judged against that epoch.
        let later =
            NonceGenerator::new(KEY, DEFAULT_NONCE_LIFETIME, epoch + Duration::from_secs(1));
        assert_eq!(
            later.check(&n, epoch + Duration::from_secs(1), client),
            NonceCheck::Valid
        );
    }

    #[test]
    fn tampering_is_invalid() {
        let (gen, epoch, client) = setup();
        let n = gen.issue(epoch, client, FEATURES);
        assert_eq!(gen.check(&n, epoch, client), NonceCheck::Valid);
        for i in 0..n.len() {
            for c in [b'A', b'z', b'0', b'/'] {
                let mut t = n.clone().into_bytes();
                if t[i] == c {
                    continue;
                }
                t[i] = c;
                let t = String::from_utf8(t).unwrap();
                assert_eq!(gen.check(&t, epoch, client), NonceCheck::Invalid, "{t}");
            }
        }
        // Another feature cookie on the same body.
        let other = SecurityFeatures::default().cookie() + &n[NONCE_COOKIE_LEN..];
        assert_eq!(gen.check(&other, epoch, client), NonceCheck::Invalid);
    }

    #[test]
    fn garbage_is_invalid() {
        let (gen, epoch, client) = setup();
        let n = gen.issue(epoch, client, FEATURES);
        let table = [
            String::new(),
            "x".into(),
            "obMatJos2".into(),
            FEATURES.cookie(),
            n[..NONCE_LEN - 1].to_string(),
            format!("{n}A"),
            format!("{n}="),
            "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA".into(),
            "é".repeat(NONCE_LEN / 2),
            format!("{}{}", "é", &n[2..]),
            format!(
                "{}!!!{}",
                &n[..NONCE_COOKIE_LEN],
                &n[NONCE_COOKIE_LEN + 3..]
            ),
            "\"".repeat(NONCE_LEN),
        ];
        for garbage in &table {
            assert_eq!(
                gen.check(garbage, epoch, client),
                NonceCheck::Invalid,
                "{garbage:?}"
            );
        }
        assert_eq!(format!("{gen:?}"), "NonceGenerator { lifetime: 600s, .. }");
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..60)) {
            let (gen, epoch, client) = setup();
            prop_assert_eq!(gen.check(&s, epoch, client), NonceCheck::Invalid);
            let lossy = String::from_utf8_lossy(&bytes);
            prop_assert_eq!(gen.check(&lossy, epoch, client), NonceCheck::Invalid);
        }

        #[test]
        fn cookie_prefixed_garbage_is_invalid(body in "[A-Za-z0-9+/]{0,40}") {
            let (gen, epoch, client) = setup();
            let s = FEATURES.cookie() + &body;
            prop_assert_eq!(gen.check(&s, epoch, client), NonceCheck::Invalid);
        }
    }
}

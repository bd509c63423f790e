//! The STUN message header (RFC 8489 §5) and zero-copy message parsing.

use crate::attr::{self, Attribute, RawAttribute};
use crate::error::{Error, Result};
use crate::{HEADER_LEN, MAGIC_COOKIE};

/// The class of a STUN message (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request,
    /// An indication, never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    /// Whether this class is a response (success or error).
    pub const fn is_response(self) -> bool {
        matches!(self, Class::Success | Class::Error)
    }
}

/// A STUN method: 12 bits (RFC 8489 §5; TURN methods from RFC 8656 §17 and RFC 6062).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656).
    pub const REFRESH: Method = Method(0x004);
    /// Send (RFC 8656), indication only.
    pub const SEND: Method = Method(0x006);
    /// Data (RFC 8656), indication only.
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// Connect (RFC 6062).
    pub const CONNECT: Method = Method(0x00A);
    /// ConnectionBind (RFC 6062).
    pub const CONNECTION_BIND: Method = Method(0x00B);
    /// ConnectionAttempt (RFC 6062), indication only.
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// Every method this crate names.
    pub const ALL: [Method; 10] = [
        Method::BINDING,
        Method::ALLOCATE,
        Method::REFRESH,
        Method::SEND,
        Method::DATA,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
        Method::CONNECT,
        Method::CONNECTION_BIND,
        Method::CONNECTION_ATTEMPT,
    ];

    /// A method from its 12-bit number; `None` above 0xFFF.
    pub const fn new(value: u16) -> Option<Method> {
        if value <= 0xFFF {
            Some(Method(value))
        } else {
            None
        }
    }

    /// The 12-bit number.
    pub const fn value(self) -> u16 {
        self.0
    }

    /// The RFC name, or `"unknown"`.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x001 => "Binding",
            0x003 => "Allocate",
            0x004 => "Refresh",
            0x006 => "Send",
            0x007 => "Data",
            0x008 => "CreatePermission",
            0x009 => "ChannelBind",
            0x00A => "Connect",
            0x00B => "ConnectionBind",
            0x00C => "ConnectionAttempt",
            _ => "unknown",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}

/// Class and method together: the 14-bit message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The class.
    pub class: Class,
    /// The method.
    pub method: Method,
}

impl MessageType {
    /// A message type from its parts.
    pub const fn new(method: Method, class: Class) -> Self {
        MessageType { class, method }
    }

    /// Encodes the type into the 16-bit header field (the top two bits are zero).
    pub const fn to_u16(self) -> u16 {
        let m = self.method.0;
        let c = self.class.bits();
        (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
    }

    /// Decodes the 16-bit header field; `Err(NotStun)` if the top two bits are set.
    pub const fn from_u16(v: u16) -> Result<Self> {
        if v & 0xC000 != 0 {
            return Err(Error::NotStun);
        }
        let method = (v & 0x000F) | ((v >> 1) & 0x0070) | ((v >> 2) & 0x0F80);
        let class = match ((v >> 4) & 1) | ((v >> 7) & 2) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        Ok(MessageType {
            class,
            method: Method(method),
        })
    }
}

/// The 96-bit transaction ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

/// A parsed STUN message borrowing its bytes.
///
/// Parsing checks the header and walks the attribute list once, so that every
/// attribute header is known to be in bounds; attribute values are decoded on
/// demand with [`Message::get`] or [`Message::attributes`].
///
/// Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT, and after MESSAGE-INTEGRITY-SHA256 other than FINGERPRINT, are
/// ignored as RFC 8489 §14.5/§14.6 require; an attribute after FINGERPRINT is
/// an error.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    typ: MessageType,
    txid: TransactionId,
    mi: Option<usize>,
    mi256: Option<usize>,
    fp: Option<usize>,
}

/// Reads a big-endian u16 at `at`; callers have checked bounds.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Whether `buf` looks like the start of a STUN message (leading bits and magic cookie).
/// Used to demultiplex STUN from ChannelData and other protocols.
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] & 0xC0 == 0
        && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == MAGIC_COOKIE
}

impl<'a> Message<'a> {
    /// Parses one whole message; `buf` must hold exactly the message
    /// (20-byte header plus the length the header announces).
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        if buf.len() < HEADER_LEN {
            return Err(Error::TooShort);
        }
        let typ = MessageType::from_u16(be16(buf, 0))?;
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return Err(Error::BadMagicCookie);
        }
        let len = usize::from(be16(buf, 2));
        if len % 4 != 0 {
            return Err(Error::UnalignedLength);
        }
        if HEADER_LEN + len != buf.len() {
            return Err(Error::LengthMismatch);
        }
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&buf[8..20]);
        let mut msg = Message {
            buf,
            typ,
            txid: TransactionId(txid),
            mi: None,
            mi256: None,
            fp: None,
        };
        let mut off = HEADER_LEN;
        while off < buf.len() {
            if buf.len() - off < 4 {
                return Err(Error::TooShort);
            }
            let at = be16(buf, off);
            let alen = usize::from(be16(buf, off + 2));
            let padded = (alen + 3) & !3;
            if buf.len() - off - 4 < padded {
                return Err(Error::AttributeTruncated(at));
            }
            if msg.fp.is_some() {
                return Err(Error::AttributeAfterFingerprint);
            }
            // Offsets are kept as `usize`: a message may be 20 + 65532 bytes
            // long, so an attribute (FINGERPRINT) can start past byte 65535.
            match at {
                attr::MESSAGE_INTEGRITY if msg.mi.is_none() && msg.mi256.is_none() => {
                    msg.mi = Some(off)
                }
                attr::MESSAGE_INTEGRITY_SHA256 if msg.mi256.is_none() => msg.mi256 = Some(off),
                attr::FINGERPRINT => msg.fp = Some(off),
                _ => {}
            }
            off += 4 + padded;
        }
        Ok(msg)
    }

    /// The message type.
    pub fn message_type(&self) -> MessageType {
        self.typ
    }

    /// The class.
    pub fn class(&self) -> Class {
        self.typ.class
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.typ.method
    }

    /// The transaction ID.
    pub fn transaction_id(&self) -> TransactionId {
        self.txid
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Offset of MESSAGE-INTEGRITY, if present.
    pub(crate) fn mi_offset(&self) -> Option<usize> {
        self.mi
    }

    /// Offset of MESSAGE-INTEGRITY-SHA256, if present.
    pub(crate) fn mi256_offset(&self) -> Option<usize> {
        self.mi256
    }

    /// Offset of FINGERPRINT, if present.
    pub(crate) fn fp_offset(&self) -> Option<usize> {
        self.fp
    }

    /// Whether the message carries MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.mi.is_some()
    }

    /// Whether the message carries MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity_sha256(&self) -> bool {
        self.mi256.is_some()
    }

    /// Whether the message carries FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.fp.is_some()
    }

    /// The attributes that count (see the type's documentation), undecoded.
    pub fn raw_attributes(&self) -> RawAttributes<'a> {
        RawAttributes {
            buf: self.buf,
            off: HEADER_LEN,
            mi: self.mi,
            mi256: self.mi256,
            fp: self.fp,
        }
    }

    /// Every attribute in the message, undecoded, including those after
    /// MESSAGE-INTEGRITY or FINGERPRINT that [`Message::raw_attributes`]
    /// skips: what a lenient receiver (a browser's TURN client) may read.
    /// For checks that must not miss an attribute, e.g. a proxy refusing
    /// ALTERNATE-SERVER.
    pub fn every_raw_attribute(&self) -> RawAttributes<'a> {
        RawAttributes {
            buf: self.buf,
            off: HEADER_LEN,
            mi: None,
            mi256: None,
            fp: None,
        }
    }

    /// The attributes that count, decoded. Unknown types decode to
    /// [`Attribute::Unknown`]; a known type with a malformed value yields an error item.
    pub fn attributes(&self) -> impl Iterator<Item = Result<Attribute<'a>>> + 'a {
        let txid = self.txid;
        self.raw_attributes()
            .map(move |raw| Attribute::decode(raw, &txid))
    }

    /// The first attribute of type `typ` that counts, undecoded.
    pub fn get_raw(&self, typ: u16) -> Option<RawAttribute<'a>> {
        self.raw_attributes().find(|a| a.typ == typ)
    }

    /// The first attribute of type `typ` that counts, decoded; `None` if absent,
    /// `Some(Err(_))` if present but malformed.
    pub fn get(&self, typ: u16) -> Option<Result<Attribute<'a>>> {
        self.get_raw(typ)
            .map(|raw| Attribute::decode(raw, &self.txid))
    }

    /// Comprehension-required attribute types (0x0000–0x7FFF) that `known`
    /// does not accept, deduplicated, at most `out.len()` of them; returns
    /// how many were written. A non-zero result calls for a 420 response
    /// with UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1).
    pub fn unknown_required(&self, known: impl Fn(u16) -> bool, out: &mut [u16]) -> usize {
        let mut n = 0;
        for a in self.raw_attributes() {
            if a.typ < 0x8000 && !known(a.typ) && !out[..n].contains(&a.typ) && n < out.len() {
                out[n] = a.typ;
                n += 1;
            }
        }
        n
    }
}

/// Iterator over the attributes of a message that count (see [`Message`]).
#[derive(Debug, Clone)]
pub struct RawAttributes<'a> {
    buf: &'a [u8],
    off: usize,
    mi: Option<usize>,
    mi256: Option<usize>,
    fp: Option<usize>,
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        // Bounds were checked by `Message::parse`; `get` keeps this panic-free anyway.
        while self.off + 4 <= self.buf.len() {
            let off = self.off;
            let typ = be16(self.buf, off);
            let len = usize::from(be16(self.buf, off + 2));
            let value = self.buf.get(off + 4..off + 4 + len)?;
            self.off = off + 4 + ((len + 3) & !3);
            let after_mi = self.mi.is_some_and(|m| off > m);
            let after_mi256 = self.mi256.is_some_and(|m| off > m);
            let allowed = if after_mi256 {
                Some(off) == self.fp
            } else if after_mi {
                Some(off) == self.mi256 || Some(off) == self.fp
            } else {
                true
            };
            if allowed {
                return Some(RawAttribute {
                    typ,
                    value,
                    offset: off,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_raw_attribute_sees_past_integrity() {
        // SOFTWARE, MESSAGE-INTEGRITY, then ALTERNATE-DOMAIN (ignored by
        // the strict view, seen by the lenient one).
        let mut m = vec![0u8; HEADER_LEN];
        m[0..2].copy_from_slice(&0x0113u16.to_be_bytes());
        m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        for (typ, len) in [
            (attr::SOFTWARE, 4usize),
            (attr::MESSAGE_INTEGRITY, 20),
            (attr::ALTERNATE_DOMAIN, 4),
        ] {
            m.extend_from_slice(&typ.to_be_bytes());
            m.extend_from_slice(&(len as u16).to_be_bytes());
            m.extend_from_slice(&vec![b'a'; len]);
        }
        let body = (m.len() - HEADER_LEN) as u16;
        m[2..4].copy_from_slice(&body.to_be_bytes());
        let msg = Message::parse(&m).unwrap();
        let strict: Vec<u16> = msg.raw_attributes().map(|a| a.typ).collect();
        let every: Vec<u16> = msg.every_raw_attribute().map(|a| a.typ).collect();
        assert_eq!(strict, [attr::SOFTWARE, attr::MESSAGE_INTEGRITY]);
        assert_eq!(
            every,
            [
                attr::SOFTWARE,
                attr::MESSAGE_INTEGRITY,
                attr::ALTERNATE_DOMAIN
            ]
        );
    }

    #[test]
    fn message_type_round_trip() {
        for m in Method::ALL {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = MessageType::new(m, c);
                assert_eq!(MessageType::from_u16(t.to_u16()).unwrap(), t);
            }
        }
        // Known encodings from RFC 8489/8656.
        assert_eq!(
            MessageType::new(Method::BINDING, Class::Request).to_u16(),
            0x0001
        );
        assert_eq!(
            MessageType::new(Method::BINDING, Class::Success).to_u16(),
            0x0101
        );
        assert_eq!(
            MessageType::new(Method::BINDING, Class::Error).to_u16(),
            0x0111
        );
        assert_eq!(
            MessageType::new(Method::ALLOCATE, Class::Request).to_u16(),
            0x0003
        );
        assert_eq!(
            MessageType::new(Method::ALLOCATE, Class::Error).to_u16(),
            0x0113
        );
        assert_eq!(
            MessageType::new(Method::SEND, Class::Indication).to_u16(),
            0x0016
        );
        assert_eq!(
            MessageType::new(Method::DATA, Class::Indication).to_u16(),
            0x0017
        );
        assert_eq!(
            MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication).to_u16(),
            0x001C
        );
    }

    #[test]
    fn all_type_values_decode_without_panic() {
        for v in 0..=u16::MAX {
            let r = MessageType::from_u16(v);
            if v & 0xC000 == 0 {
                assert_eq!(r.unwrap().to_u16(), v);
            } else {
                assert_eq!(r, Err(Error::NotStun));
            }
        }
    }

    #[test]
    fn header_errors() {
        assert_eq!(Message::parse(&[]).unwrap_err(), Error::TooShort);
        let mut b = [0u8; 20];
        b[1] = 1;
        assert_eq!(Message::parse(&b).unwrap_err(), Error::BadMagicCookie);
        b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert!(Message::parse(&b).is_ok());
        b[0] = 0x40;
        assert_eq!(Message::parse(&b).unwrap_err(), Error::NotStun);
        b[0] = 0;
        b[3] = 2;
        assert_eq!(Message::parse(&b).unwrap_err(), Error::UnalignedLength);
        b[3] = 4;
        assert_eq!(Message::parse(&b).unwrap_err(), Error::LengthMismatch);
    }

    #[test]
    fn truncated_attribute() {
        let mut b = vec![0u8; 28];
        b[1] = 1;
        b[3] = 8;
        b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b[20..22].copy_from_slice(&0x0006u16.to_be_bytes());
        b[22..24].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(
            Message::parse(&b).unwrap_err(),
            Error::AttributeTruncated(6)
        );
    }

    /// Regression: attribute offsets were stored as `u16`, so a valid message
    /// whose last attribute starts past byte 65535 (possible: a message may
    /// be 20 + 65532 bytes long) was refused with `LengthMismatch`.
    #[test]
    fn regression_attribute_offset_above_u16_max() {
        use crate::{Key, MessageEncoder};
        // DATA header + 65 492 bytes, MI (24) and FINGERPRINT (8): the body is
        // 65 528 bytes and FINGERPRINT starts at byte 65 540.
        let data = vec![0xAB; 65_492];
        let mut buf = vec![0u8; HEADER_LEN + 0xFFFC];
        let typ = MessageType::new(Method::SEND, Class::Indication);
        let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([1; 12])).unwrap();
        e.push(&Attribute::Data(&data)).unwrap();
        let key = Key::from_bytes(b"k").unwrap();
        e.message_integrity(&key).unwrap();
        e.fingerprint().unwrap();
        let n = e.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        let fp = m.get_raw(attr::FINGERPRINT).unwrap();
        assert!(fp.offset > usize::from(u16::MAX));
        assert_eq!(m.get(attr::DATA), Some(Ok(Attribute::Data(&data))));
        m.verify_integrity(&key).unwrap();
        m.verify_fingerprint().unwrap();
        assert_eq!(m.attributes().count(), 3);
    }
}

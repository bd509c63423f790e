//! Allocation-free message encoding into a caller-provided buffer.

use crate::attr::{self, Attribute};
use crate::error::{Error, Result};
use crate::integrity::{self, Key};
use crate::message::{MessageType, TransactionId};
use crate::{HEADER_LEN, MAGIC_COOKIE};

/// Writes a STUN message into a borrowed buffer.
///
/// ```
/// use stun::{attr::Attribute, Class, MessageEncoder, MessageType, Method, TransactionId};
/// let mut buf = [0u8; 128];
/// let typ = MessageType::new(Method::BINDING, Class::Request);
/// let mut enc = MessageEncoder::new(&mut buf, typ, TransactionId([1; 12])).unwrap();
/// enc.push(&Attribute::Software("demo")).unwrap();
/// enc.fingerprint().unwrap();
/// let n = enc.finish();
/// let msg = stun::Message::parse(&buf[..n]).unwrap();
/// assert!(msg.verify_fingerprint().is_ok());
/// ```
#[derive(Debug)]
pub struct MessageEncoder<'b> {
    buf: &'b mut [u8],
    len: usize,
    txid: TransactionId,
    padding: u8,
    sealed: Sealed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sealed {
    Open,
    Integrity,
    Integrity256,
    Fingerprint,
}

impl<'b> MessageEncoder<'b> {
    /// Starts a message: writes the 20-byte header.
    pub fn new(buf: &'b mut [u8], typ: MessageType, txid: TransactionId) -> Result<Self> {
        if buf.len() < HEADER_LEN {
            return Err(Error::BufferTooSmall);
        }
        buf[0..2].copy_from_slice(&typ.to_u16().to_be_bytes());
        buf[2..4].fill(0);
        buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf[8..20].copy_from_slice(&txid.0);
        Ok(MessageEncoder {
            buf,
            len: HEADER_LEN,
            txid,
            padding: 0,
            sealed: Sealed::Open,
        })
    }

    /// Byte used to pad attribute values (0 by default; RFC 5769's vectors use 0x20).
    pub fn set_padding(&mut self, byte: u8) {
        self.padding = byte;
    }

    /// The transaction ID.
    pub fn transaction_id(&self) -> TransactionId {
        self.txid
    }

    fn update_length(&mut self) {
        let l = (self.len - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&l.to_be_bytes());
    }

    /// Reserves an attribute header plus padded value; returns the value slice.
    fn reserve(&mut self, typ: u16, vlen: usize) -> Result<&mut [u8]> {
        let padded = (vlen + 3) & !3;
        let end = self.len + 4 + padded;
        if end - HEADER_LEN > usize::from(u16::MAX) {
            return Err(Error::ValueTooLong);
        }
        if end > self.buf.len() {
            return Err(Error::BufferTooSmall);
        }
        let start = self.len;
        self.buf[start..start + 2].copy_from_slice(&typ.to_be_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(vlen as u16).to_be_bytes());
        self.buf[start + 4 + vlen..end].fill(self.padding);
        self.len = end;
        self.update_length();
        Ok(&mut self.buf[start + 4..start + 4 + vlen])
    }

    fn check_order(&self, typ: u16) -> Result<()> {
        let ok = match self.sealed {
            Sealed::Open => true,
            Sealed::Integrity => typ == attr::MESSAGE_INTEGRITY_SHA256 || typ == attr::FINGERPRINT,
            Sealed::Integrity256 => typ == attr::FINGERPRINT,
            Sealed::Fingerprint => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::BadOrder)
        }
    }

    /// Appends an attribute.
    pub fn push(&mut self, a: &Attribute<'_>) -> Result<()> {
        self.check_order(a.typ())?;
        let vlen = a.value_len()?;
        let txid = self.txid;
        let out = self.reserve(a.typ(), vlen)?;
        a.encode_value(&txid, out);
        self.sealed = self.sealed.max(match a.typ() {
            attr::MESSAGE_INTEGRITY => Sealed::Integrity,
            attr::MESSAGE_INTEGRITY_SHA256 => Sealed::Integrity256,
            attr::FINGERPRINT => Sealed::Fingerprint,
            _ => Sealed::Open,
        });
        Ok(())
    }

    /// Appends an attribute with a raw value.
    pub fn push_raw(&mut self, typ: u16, value: &[u8]) -> Result<()> {
        self.push(&Attribute::Unknown { typ, value })
    }

    /// Appends UNKNOWN-ATTRIBUTES listing `types`.
    pub fn push_unknown_attributes(&mut self, types: &[u16]) -> Result<()> {
        self.check_order(attr::UNKNOWN_ATTRIBUTES)?;
        let out = self.reserve(attr::UNKNOWN_ATTRIBUTES, types.len() * 2)?;
        for (c, t) in out.chunks_exact_mut(2).zip(types) {
            c.copy_from_slice(&t.to_be_bytes());
        }
        Ok(())
    }

    /// Appends PASSWORD-ALGORITHMS listing `(algorithm, params)` entries.
    pub fn push_password_algorithms(&mut self, algs: &[(u16, &[u8])]) -> Result<()> {
        self.check_order(attr::PASSWORD_ALGORITHMS)?;
        let vlen: usize = algs.iter().map(|(_, p)| (4 + p.len() + 3) & !3).sum();
        let out = self.reserve(attr::PASSWORD_ALGORITHMS, vlen)?;
        let mut at = 0;
        for (a, p) in algs {
            out[at..at + 2].copy_from_slice(&a.to_be_bytes());
            out[at + 2..at + 4].copy_from_slice(&(p.len() as u16).to_be_bytes());
            out[at + 4..at + 4 + p.len()].copy_from_slice(p);
            let next = at + ((4 + p.len() + 3) & !3);
            out[at + 4 + p.len()..next].fill(0);
            at = next;
        }
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`).
    pub fn message_integrity(&mut self, key: &Key) -> Result<()> {
        self.check_order(attr::MESSAGE_INTEGRITY)?;
        if self.sealed != Sealed::Open {
            return Err(Error::BadOrder);
        }
        let start = self.len;
        self.reserve(attr::MESSAGE_INTEGRITY, 20)?;
        let mac = integrity::hmac_sha1(key.as_bytes(), self.buf, start);
        self.buf[start + 4..start + 24].copy_from_slice(&mac);
        self.sealed = Sealed::Integrity;
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes, HMAC-SHA256 with `key`).
    pub fn message_integrity_sha256(&mut self, key: &Key) -> Result<()> {
        self.check_order(attr::MESSAGE_INTEGRITY_SHA256)?;
        let start = self.len;
        self.reserve(attr::MESSAGE_INTEGRITY_SHA256, 32)?;
        let mac = integrity::hmac_sha256(key.as_bytes(), self.buf, start, 32);
        self.buf[start + 4..start + 36].copy_from_slice(&mac);
        self.sealed = Sealed::Integrity256;
        Ok(())
    }

    /// Appends FINGERPRINT; nothing may follow it.
    pub fn fingerprint(&mut self) -> Result<()> {
        self.check_order(attr::FINGERPRINT)?;
        let start = self.len;
        self.reserve(attr::FINGERPRINT, 4)?;
        let crc = integrity::fingerprint(self.buf, start);
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
        self.sealed = Sealed::Fingerprint;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether only the header has been written.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Finishes the message; returns its length in bytes.
    pub fn finish(self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Class, Message, Method};

    #[test]
    fn buffer_too_small_is_an_error() {
        let mut small = [0u8; 10];
        let typ = MessageType::new(Method::BINDING, Class::Request);
        assert!(MessageEncoder::new(&mut small, typ, TransactionId([0; 12])).is_err());
        let mut buf = [0u8; 30];
        let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([0; 12])).unwrap();
        assert_eq!(
            e.push(&Attribute::Software("0123456789")),
            Err(Error::BufferTooSmall)
        );
        // The failed push left the message unchanged.
        assert_eq!(e.len(), 20);
    }

    #[test]
    fn order_is_enforced() {
        let mut buf = [0u8; 200];
        let typ = MessageType::new(Method::BINDING, Class::Request);
        let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([3; 12])).unwrap();
        let k = Key::from_bytes(b"k").unwrap();
        e.message_integrity(&k).unwrap();
        assert_eq!(e.push(&Attribute::Software("x")), Err(Error::BadOrder));
        e.message_integrity_sha256(&k).unwrap();
        e.fingerprint().unwrap();
        assert_eq!(e.fingerprint(), Err(Error::BadOrder));
        let n = e.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        m.verify_integrity(&k).unwrap();
        m.verify_integrity_sha256(&k).unwrap();
        m.verify_fingerprint().unwrap();
        let wrong = Key::from_bytes(b"j").unwrap();
        assert!(m.verify_integrity(&wrong).is_err());
        assert!(m.verify_integrity_sha256(&wrong).is_err());
    }

    #[test]
    fn ignores_attributes_after_integrity_when_parsing() {
        // Build a message with MI then SOFTWARE by hand (the encoder refuses).
        let mut buf = [0u8; 200];
        let typ = MessageType::new(Method::BINDING, Class::Request);
        let k = Key::from_bytes(b"k").unwrap();
        let mut e = MessageEncoder::new(&mut buf, typ, TransactionId([3; 12])).unwrap();
        e.message_integrity(&k).unwrap();
        let mut n = e.finish();
        buf[n..n + 8].copy_from_slice(&[0x80, 0x22, 0, 4, b'a', b'b', b'c', b'd']);
        n += 8;
        buf[3] = (n - 20) as u8;
        let m = Message::parse(&buf[..n]).unwrap();
        assert!(m.get(attr::SOFTWARE).is_none());
        assert!(m.get(attr::MESSAGE_INTEGRITY).is_some());
    }
}

//! # stun — the STUN/TURN wire format of OnionRTC
//!
//! Zero-copy parsing from `&[u8]` and allocation-free encoding into
//! caller-provided buffers for:
//! - STUN messages (RFC 8489): header, classes, methods, attributes,
//!   MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT, long-term and
//!   short-term keys, USERHASH, the nonce cookie;
//! - TURN (RFC 8656) and TURN-TCP (RFC 6062) methods and attributes;
//! - ICE attributes (RFC 8445);
//! - ChannelData messages and the framing of STUN and ChannelData on streams.
//!
//! ```
//! use stun::{attr::{self, Attribute}, Class, Key, Message, MessageEncoder, MessageType, Method, TransactionId};
//! # fn main() -> Result<(), stun::Error> {
//! let key = Key::long_term(stun::PasswordAlgorithm::Md5, "alice", "example.org", "pw")?;
//! let mut buf = [0u8; 256];
//! let mut enc = MessageEncoder::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), TransactionId([9; 12]))?;
//! enc.push(&Attribute::RequestedTransport(17))?;
//! enc.push(&Attribute::Username("alice"))?;
//! enc.message_integrity(&key)?;
//! enc.fingerprint()?;
//! let n = enc.finish();
//!
//! let msg = Message::parse(&buf[..n])?;
//! assert_eq!(msg.method(), Method::ALLOCATE);
//! assert!(matches!(msg.get(attr::USERNAME), Some(Ok(Attribute::Username("alice")))));
//! assert!(msg.verify_integrity(&key).is_ok());
//! # Ok(()) }
//! ```
//!
//! ## Design decisions
//! - Parsing walks the attribute list once to bound-check it and remembers
//!   where MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are;
//!   values are decoded lazily, so the relay's hot path touches only what it
//!   needs.
//! - Integrity is computed by streaming the prefix into the HMAC with the
//!   adjusted length field: no copy of the message.
//! - Every function on untrusted bytes returns [`Result`]; nothing panics.
//!   The crate forbids `unsafe`.
//! - No sockets, no clocks, no policy: those live in `turn` and `relay`.

pub mod addr;
pub mod attr;
pub mod channel;
mod encode;
mod error;
pub mod framing;
pub mod integrity;
mod message;
pub mod nonce;

pub use addr::AddressFamily;
pub use channel::ChannelData;
pub use encode::MessageEncoder;
pub use error::{Error, Result};
pub use framing::{FrameKind, StreamDecoder};
pub use integrity::{IntegrityError, Key, PasswordAlgorithm};
pub use message::{is_stun, Class, Message, MessageType, Method, RawAttributes, TransactionId};

/// The magic cookie of RFC 8489 §5.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;

/// What a received datagram or stream frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// STUN (first two bits 0b00 and the magic cookie).
    Stun,
    /// ChannelData (first two bits 0b01).
    ChannelData,
    /// Anything else.
    Other,
}

/// Demultiplexes a packet by its first bytes (RFC 8656 §12.5, RFC 7983).
pub fn classify(buf: &[u8]) -> PacketKind {
    if is_stun(buf) {
        PacketKind::Stun
    } else if channel::is_channel_data(buf) {
        PacketKind::ChannelData
    } else {
        PacketKind::Other
    }
}

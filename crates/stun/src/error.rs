//! Errors of the wire format.

/// Why bytes could not be parsed or a message could not be encoded.
///
/// Every parser in this crate returns one of these instead of panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the structure needs.
    #[error("input too short")]
    TooShort,
    /// The first two bits of a STUN message must be zero.
    #[error("not a STUN message (leading bits)")]
    NotStun,
    /// The magic cookie is not 0x2112A442 (RFC 3489 messages are not accepted).
    #[error("bad magic cookie")]
    BadMagicCookie,
    /// The message length is not a multiple of four.
    #[error("message length is not a multiple of 4")]
    UnalignedLength,
    /// The length field disagrees with the number of bytes.
    #[error("length field does not match the input")]
    LengthMismatch,
    /// An attribute header announces more bytes than the message holds.
    #[error("attribute {0:#06x} is truncated")]
    AttributeTruncated(u16),
    /// An attribute value does not have the form its type requires.
    #[error("attribute {0:#06x} has an invalid value")]
    InvalidAttribute(u16),
    /// An attribute follows FINGERPRINT, which must be last.
    #[error("attribute after FINGERPRINT")]
    AttributeAfterFingerprint,
    /// The caller's buffer cannot hold the encoded output.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A value is too long to be encoded (attribute or message over 65535 bytes,
    /// or a limit of the RFC such as 508 bytes for USERNAME).
    #[error("value too long to encode")]
    ValueTooLong,
    /// Not a ChannelData message (channel number outside 0x4000..=0x4FFF
    /// or the reserved range 0x5000..=0x7FFF).
    #[error("not a ChannelData message")]
    NotChannelData,
    /// A stream frame is larger than the configured maximum.
    #[error("frame of {0} bytes exceeds the configured maximum")]
    FrameTooLarge(usize),
    /// Bytes on a stream are neither STUN nor ChannelData.
    #[error("stream carries neither STUN nor ChannelData")]
    UnknownFrame,
    /// A password could not be prepared with the OpaqueString/SASLprep profile.
    #[error("password is not a valid OpaqueString")]
    BadPassword,
    /// Attributes were added after FINGERPRINT or integrity in an order
    /// the RFC forbids.
    #[error("attribute order violates RFC 8489")]
    BadOrder,
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

//! ChannelData messages (RFC 8656 §12.4).

use crate::error::{Error, Result};

/// Length of the ChannelData header.
pub const CHANNEL_HEADER_LEN: usize = 4;
/// Lowest valid channel number.
pub const MIN_CHANNEL: u16 = 0x4000;
/// Highest valid channel number.
pub const MAX_CHANNEL: u16 = 0x4FFF;

/// Whether `n` is a channel number a client may bind (0x4000–0x4FFF).
pub const fn is_valid_channel(n: u16) -> bool {
    n >= MIN_CHANNEL && n <= MAX_CHANNEL
}

/// Highest channel number of RFC 5766 (superseded by [`MAX_CHANNEL`] in
/// RFC 8656, but still used by deployed clients such as coturn's).
pub const MAX_CHANNEL_RFC5766: u16 = 0x7FFF;

/// Whether `n` is a channel number under RFC 5766 (0x4000–0x7FFF). Servers
/// accept these for interoperability; RFC 8656 reserves 0x5000 and above
/// only to keep them apart from DTLS on multiplexed 5-tuples, which a TURN
/// client connection never carries.
pub const fn is_rfc5766_channel(n: u16) -> bool {
    n >= MIN_CHANNEL && n <= MAX_CHANNEL_RFC5766
}

/// Whether `buf` starts like ChannelData (first two bits 0b01).
pub fn is_channel_data(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0xC0 == 0x40)
}

/// A parsed ChannelData message borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// Channel number (0x4000–0x7FFF, see [`is_rfc5766_channel`]).
    pub number: u16,
    /// Application data.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses ChannelData from a datagram or a stream frame (channel numbers
    /// 0x4000–0x7FFF, see [`is_rfc5766_channel`]). Up to three bytes of
    /// padding after the data are accepted; more is an error.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        if buf.len() < CHANNEL_HEADER_LEN {
            return Err(Error::TooShort);
        }
        let number = u16::from_be_bytes([buf[0], buf[1]]);
        if !is_rfc5766_channel(number) {
            return Err(Error::NotChannelData);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let data = buf
            .get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len)
            .ok_or(Error::TooShort)?;
        if buf.len() - CHANNEL_HEADER_LEN - len > 3 {
            return Err(Error::LengthMismatch);
        }
        Ok(ChannelData { number, data })
    }

    /// Encoded length, with or without stream padding.
    pub fn encoded_len(data_len: usize, pad: bool) -> usize {
        let n = CHANNEL_HEADER_LEN + data_len;
        if pad {
            (n + 3) & !3
        } else {
            n
        }
    }

    /// Writes a ChannelData message into `out`; `pad` adds the padding that
    /// stream transports require. Returns the bytes written.
    /// `Err(NotChannelData)` if `number` is outside 0x4000–0x7FFF.
    pub fn encode(number: u16, data: &[u8], out: &mut [u8], pad: bool) -> Result<usize> {
        if !is_rfc5766_channel(number) {
            return Err(Error::NotChannelData);
        }
        if data.len() > usize::from(u16::MAX) {
            return Err(Error::ValueTooLong);
        }
        let n = Self::encoded_len(data.len(), pad);
        if out.len() < n {
            return Err(Error::BufferTooSmall);
        }
        write_header(number, data.len() as u16, out)?;
        out[CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + data.len()].copy_from_slice(data);
        out[CHANNEL_HEADER_LEN + data.len()..n].fill(0);
        Ok(n)
    }
}

/// Writes just the 4-byte header, for callers that place the payload
/// directly after it (zero-copy relaying).
/// `Err(NotChannelData)` if `number` is outside 0x4000–0x7FFF (the range
/// [`ChannelData::parse`] and [`ChannelData::encode`] accept).
pub fn write_header(number: u16, len: u16, out: &mut [u8]) -> Result<()> {
    if !is_rfc5766_channel(number) {
        return Err(Error::NotChannelData);
    }
    let h = out
        .get_mut(..CHANNEL_HEADER_LEN)
        .ok_or(Error::BufferTooSmall)?;
    h[0..2].copy_from_slice(&number.to_be_bytes());
    h[2..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let mut out = [0u8; 16];
        let n = ChannelData::encode(0x4001, b"hello", &mut out, true).unwrap();
        assert_eq!(n, 12);
        let c = ChannelData::parse(&out[..n]).unwrap();
        assert_eq!(c.number, 0x4001);
        assert_eq!(c.data, b"hello");
        let n = ChannelData::encode(0x4001, b"hello", &mut out, false).unwrap();
        assert_eq!(n, 9);
        assert_eq!(ChannelData::parse(&out[..9]).unwrap().data, b"hello");
    }

    #[test]
    fn errors() {
        assert_eq!(ChannelData::parse(&[0x40, 0]), Err(Error::TooShort));
        assert_eq!(
            ChannelData::parse(&[0x80, 0, 0, 0]),
            Err(Error::NotChannelData)
        );
        // RFC 5766 numbers above 0x4FFF are accepted (see `is_rfc5766_channel`).
        assert!(ChannelData::parse(&[0x50, 0, 0, 0]).is_ok());
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 5, 1]),
            Err(Error::TooShort)
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 0, 1, 2, 3, 4]),
            Err(Error::LengthMismatch)
        );
        assert!(ChannelData::encode(0x4000, b"abc", &mut [0u8; 6], true).is_err());
        assert!(is_channel_data(&[0x7f]));
        assert!(!is_channel_data(&[0x00]));
        assert!(!is_channel_data(&[]));
    }

    /// Regression: `encode` and `write_header` wrote any channel number, so
    /// e.g. 0x0001 produced bytes that demultiplex as STUN. They accept
    /// exactly what `parse` accepts (0x4000–0x7FFF): a server that binds an
    /// RFC 5766 channel above 0x4FFF must be able to write its header.
    #[test]
    fn regression_encode_refuses_invalid_channel_number() {
        let mut out = [0u8; 16];
        for n in [0x0000, 0x0001, 0x3FFF, 0x8000, 0xBFFF, 0xFFFF] {
            assert_eq!(
                ChannelData::encode(n, b"x", &mut out, true),
                Err(Error::NotChannelData)
            );
            assert_eq!(write_header(n, 1, &mut out), Err(Error::NotChannelData));
        }
        for n in [MIN_CHANNEL, MAX_CHANNEL, 0x5000, MAX_CHANNEL_RFC5766] {
            let len = ChannelData::encode(n, b"x", &mut out, true).unwrap();
            assert_eq!(ChannelData::parse(&out[..len]).unwrap().number, n);
            assert!(write_header(n, 1, &mut out).is_ok());
        }
    }
}

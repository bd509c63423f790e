//! Framing of STUN and ChannelData over stream transports (TCP, TLS):
//! RFC 8489 §6.2.2 and RFC 8656 §12.5 (ChannelData padded to 4 bytes).

use crate::error::{Error, Result};
use crate::HEADER_LEN;

/// The kind of a stream frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A STUN message.
    Stun,
    /// A ChannelData message (the frame includes its padding).
    ChannelData,
}

/// The length of the frame at the start of `buf`, once at least four bytes
/// are there; `Ok(None)` when more bytes are needed to tell.
pub fn frame_len(buf: &[u8]) -> Result<Option<(FrameKind, usize)>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match buf[0] >> 6 {
        0 => {
            if len % 4 != 0 {
                return Err(Error::UnalignedLength);
            }
            Ok(Some((FrameKind::Stun, HEADER_LEN + len)))
        }
        1 => Ok(Some((FrameKind::ChannelData, (4 + len + 3) & !3))),
        _ => Err(Error::UnknownFrame),
    }
}

/// Incremental decoder for a byte stream of STUN and ChannelData frames.
///
/// Feed it what the socket returns with [`StreamDecoder::push`], then take
/// frames with [`StreamDecoder::next_frame`] until it returns `Ok(None)`.
/// A frame longer than the configured maximum is an error as soon as its
/// header arrives, so a peer announcing 64 KiB and never sending it costs
/// at most its header. The buffer never holds more than `max_frame` plus one
/// push of unframed bytes.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
}

impl StreamDecoder {
    /// A decoder refusing frames above `max_frame` bytes (at least 24).
    pub fn new(max_frame: usize) -> Self {
        StreamDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame: max_frame.max(HEADER_LEN + 4),
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends received bytes. Fails if the bytes already pending plus these
    /// exceed twice the maximum frame (the caller did not drain frames).
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let limit = self.max_frame.saturating_mul(2).max(65_536 + HEADER_LEN);
        if self.pending() + data.len() > limit {
            return Err(Error::FrameTooLarge(self.pending() + data.len()));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Result<Option<(FrameKind, &[u8])>> {
        let avail = &self.buf[self.start..];
        let Some((kind, len)) = frame_len(avail)? else {
            return Ok(None);
        };
        if len > self.max_frame {
            return Err(Error::FrameTooLarge(len));
        }
        if avail.len() < len {
            return Ok(None);
        }
        let s = self.start;
        self.start += len;
        Ok(Some((kind, &self.buf[s..s + len])))
    }

    /// Takes the bytes that were received but not framed (used when an
    /// RFC 6062 data connection switches from STUN to raw bytes).
    pub fn take_pending(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelData;

    fn stun_frame(len: u16) -> Vec<u8> {
        let mut v = vec![0u8; 20 + usize::from(len)];
        v[1] = 1;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        v[4..8].copy_from_slice(&crate::MAGIC_COOKIE.to_be_bytes());
        v
    }

    #[test]
    fn byte_by_byte() {
        let mut stream = stun_frame(8);
        let mut cd = [0u8; 12];
        let n = ChannelData::encode(0x4000, b"hello", &mut cd, true).unwrap();
        stream.extend_from_slice(&cd[..n]);
        stream.extend_from_slice(&stun_frame(0));
        let mut d = StreamDecoder::new(1500);
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b)).unwrap();
            while let Some((k, f)) = d.next_frame().unwrap() {
                got.push((k, f.len()));
            }
        }
        assert_eq!(
            got,
            vec![
                (FrameKind::Stun, 28),
                (FrameKind::ChannelData, 12),
                (FrameKind::Stun, 20)
            ]
        );
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn oversize_refused_on_header() {
        let mut d = StreamDecoder::new(1500);
        d.push(&[0x40, 0x00, 0xff, 0xff]).unwrap();
        assert_eq!(d.next_frame(), Err(Error::FrameTooLarge(65_540)));
        let mut d = StreamDecoder::new(1500);
        d.push(&[0x00, 0x01, 0xff, 0xfc]).unwrap();
        assert!(matches!(d.next_frame(), Err(Error::FrameTooLarge(_))));
    }

    #[test]
    fn garbage_refused() {
        let mut d = StreamDecoder::new(1500);
        d.push(b"GET / HTTP/1.1\r\n").unwrap();
        // 'G' = 0x47 = 0b01..., so it looks like ChannelData of length 0x2F20 -> too large
        assert!(d.next_frame().is_err());
        let mut d = StreamDecoder::new(1500);
        d.push(&[0xC0, 0, 0, 0]).unwrap();
        assert_eq!(d.next_frame(), Err(Error::UnknownFrame));
    }

    #[test]
    fn push_limit() {
        let mut d = StreamDecoder::new(100);
        assert!(d.push(&vec![0u8; 70_000]).is_err());
    }

    #[test]
    fn take_pending_after_frames() {
        let mut d = StreamDecoder::new(1500);
        let mut s = stun_frame(0);
        s.extend_from_slice(b"raw bytes");
        d.push(&s).unwrap();
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(d.take_pending(), b"raw bytes");
        assert_eq!(d.pending(), 0);
    }
}

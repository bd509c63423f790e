//! Between datagrams and stream frames (RFC 8489 §6.2.2, RFC 8656 §12.5).
//!
//! A STUN message is the same on both sides (its length is a multiple of
//! four). ChannelData over a stream is padded to a multiple of four bytes;
//! over UDP the padding may be absent, so the datagram side gets exactly
//! `4 + length` bytes. A client datagram that is neither is dropped, never
//! written: one bad frame would desynchronise the whole stream.

use stun::framing::FrameKind;
use stun::{TransactionId, HEADER_LEN, MAGIC_COOKIE};

/// The largest frame read from an upstream stream: a 65,535-byte
/// ChannelData payload padded (65,540) or a STUN message with the largest
/// aligned body (65,552).
pub const MAX_STREAM_FRAME: usize = HEADER_LEN + 65_532;

/// What a client datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// A STUN request (answered by a response or error with the same
    /// transaction ID).
    Request(TransactionId),
    /// Another STUN message (indication, response).
    OtherStun,
    /// ChannelData.
    ChannelData,
}

/// Why a client datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than a header, or shorter than its length field says.
    #[error("truncated")]
    Truncated,
    /// A STUN length that disagrees with the datagram or is not aligned.
    #[error("bad STUN length")]
    BadLength,
    /// No magic cookie (not RFC 5389+ STUN).
    #[error("no magic cookie")]
    NoCookie,
    /// Neither STUN nor ChannelData (first two bits 10 or 11). Channel
    /// numbers 0x5000-0x7FFF (reserved by RFC 8656, valid in RFC 5766) pass:
    /// the relay decides.
    #[error("not STUN or ChannelData")]
    NotTurn,
}

/// The STUN class bits of a message type: 0 request, 1 indication, 2
/// success response, 3 error response.
fn stun_class(message_type: u16) -> u8 {
    (((message_type >> 7) & 0b10) | ((message_type >> 4) & 0b01)) as u8
}

fn transaction_id(msg: &[u8]) -> Option<TransactionId> {
    let bytes: [u8; 12] = msg.get(8..20)?.try_into().ok()?;
    Some(TransactionId(bytes))
}

/// Checks a client datagram and appends its stream form to `out`.
pub fn datagram_to_stream(dgram: &[u8], out: &mut Vec<u8>) -> Result<Datagram, FrameError> {
    if dgram.len() < 4 {
        return Err(FrameError::Truncated);
    }
    let len = usize::from(u16::from_be_bytes([dgram[2], dgram[3]]));
    match dgram[0] >> 6 {
        0 => {
            if dgram.len() < HEADER_LEN {
                return Err(FrameError::Truncated);
            }
            if len % 4 != 0 || HEADER_LEN + len != dgram.len() {
                return Err(FrameError::BadLength);
            }
            if u32::from_be_bytes([dgram[4], dgram[5], dgram[6], dgram[7]]) != MAGIC_COOKIE {
                return Err(FrameError::NoCookie);
            }
            out.extend_from_slice(dgram);
            let kind = u16::from_be_bytes([dgram[0], dgram[1]]);
            Ok(match (stun_class(kind), transaction_id(dgram)) {
                (0, Some(id)) => Datagram::Request(id),
                _ => Datagram::OtherStun,
            })
        }
        1 => {
            let end = 4 + len;
            let Some(msg) = dgram.get(..end) else {
                return Err(FrameError::Truncated);
            };
            out.extend_from_slice(msg);
            let padded = (end + 3) & !3;
            out.resize(out.len() + (padded - end), 0);
            Ok(Datagram::ChannelData)
        }
        _ => Err(FrameError::NotTurn),
    }
}

/// The datagram form of a stream frame as [`stun::StreamDecoder`] returns
/// it, and the transaction ID when it is a STUN response or error.
pub fn stream_to_datagram(kind: FrameKind, frame: &[u8]) -> (&[u8], Option<TransactionId>) {
    match kind {
        FrameKind::Stun => {
            let class = match frame.get(..2) {
                Some(t) => stun_class(u16::from_be_bytes([t[0], t[1]])),
                None => 1,
            };
            let answer = if class >= 2 {
                transaction_id(frame)
            } else {
                None
            };
            (frame, answer)
        }
        FrameKind::ChannelData => {
            let len = match frame.get(2..4) {
                Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
                None => 0,
            };
            (frame.get(..4 + len).unwrap_or(frame), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(class_bits: u16, body: usize) -> Vec<u8> {
        let mut m = vec![0u8; HEADER_LEN + body];
        // Binding (method 1) with the class bits in place.
        let t = 0x0001 | class_bits;
        m[0..2].copy_from_slice(&t.to_be_bytes());
        m[2..4].copy_from_slice(&(body as u16).to_be_bytes());
        m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m[8..20].copy_from_slice(&[7; 12]);
        m
    }

    #[test]
    fn stun_passes_unchanged_and_requests_are_seen() {
        let mut out = Vec::new();
        let req = stun(0x0000, 8);
        assert_eq!(
            datagram_to_stream(&req, &mut out),
            Ok(Datagram::Request(TransactionId([7; 12])))
        );
        assert_eq!(out, req);
        let ind = stun(0x0010, 0);
        assert_eq!(datagram_to_stream(&ind, &mut out), Ok(Datagram::OtherStun));
        let ok = stun(0x0100, 4);
        let err = stun(0x0110, 4);
        assert_eq!(
            stream_to_datagram(FrameKind::Stun, &ok),
            (&ok[..], Some(TransactionId([7; 12])))
        );
        assert_eq!(
            stream_to_datagram(FrameKind::Stun, &err).1,
            Some(TransactionId([7; 12]))
        );
        assert_eq!(stream_to_datagram(FrameKind::Stun, &req).1, None);
        assert_eq!(stream_to_datagram(FrameKind::Stun, &ind).1, None);
    }

    #[test]
    fn channel_data_is_padded_on_the_stream_and_trimmed_back() {
        let mut out = Vec::new();
        let dgram = [0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];
        assert_eq!(
            datagram_to_stream(&dgram, &mut out),
            Ok(Datagram::ChannelData)
        );
        assert_eq!(out, [0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(
            stream_to_datagram(FrameKind::ChannelData, &out),
            (&dgram[..], None)
        );
        // A padded datagram is re-padded, not doubled.
        let mut out2 = Vec::new();
        datagram_to_stream(&out, &mut out2).unwrap();
        assert_eq!(out2, out);
        // Aligned: no padding.
        let mut out3 = Vec::new();
        datagram_to_stream(&[0x4f, 0xff, 0, 4, 9, 9, 9, 9], &mut out3).unwrap();
        assert_eq!(out3.len(), 8);
    }

    #[test]
    fn garbage_is_refused() {
        let mut out = Vec::new();
        for bad in [
            &b""[..],
            &[0x00, 0x01, 0x00],
            &[0x40, 0x00, 0x00, 0x08, 1],
            &[0x80, 0, 0, 0],
            &[0xC0, 0, 0, 0],
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(datagram_to_stream(bad, &mut out).is_err(), "{bad:?}");
        }
        let mut s = stun(0, 4);
        s[2..4].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(datagram_to_stream(&s, &mut out), Err(FrameError::BadLength));
        let mut s = stun(0, 4);
        s[4] = 0;
        assert_eq!(datagram_to_stream(&s, &mut out), Err(FrameError::NoCookie));
        let mut s = stun(0, 3);
        s[2..4].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(datagram_to_stream(&s, &mut out), Err(FrameError::BadLength));
        assert!(out.is_empty());
    }
}

//! Between datagrams and stream frames (RFC 8489 §6.2.2, RFC 8656 §12.5).
//!
//! A STUN message is the same on both sides (its length is a multiple of
//! four). ChannelData over a stream is padded to a multiple of four bytes;
//! over UDP the padding may be absent, so the datagram side gets exactly
//! `4 + length` bytes. A client datagram that is neither is dropped, never
//! written: one bad frame would desynchronise the whole stream.

use stun::attr::{self, Attribute, ErrorCode};
use stun::framing::FrameKind;
use stun::{
    Class, Message, MessageEncoder, MessageType, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE,
};

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

/// Whether a client message may open an upstream stream: a TURN Allocate
/// request. Browsers' TURN clients start every allocation with one; a STUN
/// Binding (what any web page gets by listing the connector as a `stun:`
/// server) or anything else opens nothing and gets no answer.
pub fn is_allocate_request(msg: &[u8]) -> bool {
    Message::parse(msg).is_ok_and(|m| m.class() == Class::Request && m.method() == Method::ALLOCATE)
}

/// The transaction ID of a STUN request.
pub fn request_id(msg: &[u8]) -> Option<TransactionId> {
    Message::parse(msg)
        .ok()
        .filter(|m| m.class() == Class::Request)
        .map(|m| m.transaction_id())
}

/// Whether a client message is a STUN Binding request: never carried
/// (browsers' TURN clients do not send one to the TURN server; a web page
/// listing the connector as a `stun:` server does).
pub fn is_binding_request(msg: &[u8]) -> bool {
    Message::parse(msg).is_ok_and(|m| m.class() == Class::Request && m.method() == Method::BINDING)
}

/// What a frame from the relay is, to the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromRelay {
    /// Passed on to the client. `answer`: the transaction ID of a response;
    /// `allocated`: a success response to Allocate (the relay accepted the
    /// client's credentials).
    Pass {
        /// The transaction ID of a response (success or error).
        answer: Option<TransactionId>,
        /// A success response to Allocate.
        allocated: bool,
    },
    /// A redirect: ERROR-CODE 300 (or an ERROR-CODE the connector cannot
    /// read), ALTERNATE-SERVER or ALTERNATE-DOMAIN anywhere in the message,
    /// even after MESSAGE-INTEGRITY. Never passed on: a browser would dial
    /// the alternate address itself, around Tor. A response is answered
    /// with [`redirect_refusal`] instead; anything else is dropped.
    Redirect {
        /// The transaction ID of a response.
        answer: Option<TransactionId>,
    },
    /// A STUN frame that does not parse: never passed on (what the
    /// connector cannot read, it cannot vouch for).
    Malformed,
}

/// Looks at a frame from the relay (as [`stun::StreamDecoder`] returns it).
pub fn inspect_from_relay(kind: FrameKind, frame: &[u8]) -> FromRelay {
    if kind == FrameKind::ChannelData {
        return FromRelay::Pass {
            answer: None,
            allocated: false,
        };
    }
    let Ok(m) = Message::parse(frame) else {
        return FromRelay::Malformed;
    };
    let answer = m.class().is_response().then(|| m.transaction_id());
    if is_redirect(&m) {
        return FromRelay::Redirect { answer };
    }
    FromRelay::Pass {
        answer,
        allocated: m.class() == Class::Success && m.method() == Method::ALLOCATE,
    }
}

fn is_redirect(m: &Message<'_>) -> bool {
    let id = m.transaction_id();
    m.every_raw_attribute().any(|a| match a.typ {
        attr::ALTERNATE_SERVER | attr::ALTERNATE_DOMAIN => true,
        attr::ERROR_CODE => !matches!(
            Attribute::decode(a, &id),
            Ok(Attribute::ErrorCode(ErrorCode { code, .. })) if code != 300
        ),
        _ => false,
    })
}

/// The error code the connector answers a redirected request with.
pub const REDIRECT_REFUSED: u16 = 300;

/// The connector's own answer to a request the relay answered with a
/// redirect: an error response of the same method and transaction ID with
/// ERROR-CODE 300 (Try Alternate) and *no* ALTERNATE-SERVER or
/// ALTERNATE-DOMAIN, and no MESSAGE-INTEGRITY (the connector has no key).
/// A 300 is the one unauthenticated error browsers act on at once (a
/// redirect cannot always be authenticated, RFC 8489 §10): with no
/// address to go to, Chromium fails that allocation ("Missing alternate
/// server attribute"). Other unauthenticated errors it discards and
/// retransmits until its 39.5 s timeout (tried: 400, 403, 420, 437, 441,
/// 486, 500, 508). `None` when the frame is not a STUN response.
pub fn redirect_refusal(frame: &[u8]) -> Option<Vec<u8>> {
    let m = Message::parse(frame).ok()?;
    if !m.class().is_response() {
        return None;
    }
    let mut buf = [0u8; 128];
    let mut enc = MessageEncoder::new(
        &mut buf,
        MessageType::new(m.method(), Class::Error),
        m.transaction_id(),
    )
    .ok()?;
    enc.push(&Attribute::ErrorCode(ErrorCode {
        code: REDIRECT_REFUSED,
        reason: attr::reason_phrase(REDIRECT_REFUSED),
    }))
    .ok()?;
    enc.fingerprint().ok()?;
    let n = enc.finish();
    buf.get(..n).map(<[u8]>::to_vec)
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

    fn message(method: Method, class: Class, attrs: &[Attribute<'_>]) -> Vec<u8> {
        let mut buf = [0u8; 512];
        let mut enc = MessageEncoder::new(
            &mut buf,
            MessageType::new(method, class),
            TransactionId([5; 12]),
        )
        .unwrap();
        for a in attrs {
            enc.push(a).unwrap();
        }
        let n = enc.finish();
        buf[..n].to_vec()
    }

    fn error(code: u16) -> Attribute<'static> {
        Attribute::ErrorCode(ErrorCode {
            code,
            reason: attr::reason_phrase(code),
        })
    }

    /// Appends a raw attribute after whatever the message holds (even
    /// MESSAGE-INTEGRITY), fixing the length.
    fn append(mut m: Vec<u8>, typ: u16, value: &[u8]) -> Vec<u8> {
        m.extend_from_slice(&typ.to_be_bytes());
        m.extend_from_slice(&(value.len() as u16).to_be_bytes());
        m.extend_from_slice(value);
        m.resize((m.len() + 3) & !3, 0);
        let body = (m.len() - HEADER_LEN) as u16;
        m[2..4].copy_from_slice(&body.to_be_bytes());
        m
    }

    #[test]
    fn only_allocate_opens() {
        let alloc = message(
            Method::ALLOCATE,
            Class::Request,
            &[Attribute::RequestedTransport(17)],
        );
        assert!(is_allocate_request(&alloc));
        assert!(!is_binding_request(&alloc));
        assert!(is_binding_request(&message(
            Method::BINDING,
            Class::Request,
            &[]
        )));
        for other in [
            message(Method::BINDING, Class::Request, &[]),
            message(Method::ALLOCATE, Class::Indication, &[]),
            message(Method::REFRESH, Class::Request, &[]),
            vec![0x40, 0, 0, 4, 1, 2, 3, 4],
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        ] {
            assert!(!is_allocate_request(&other), "{other:?}");
        }
    }

    #[test]
    fn relay_frames_pass_or_are_refused() {
        let id = Some(TransactionId([5; 12]));
        let ok = message(
            Method::ALLOCATE,
            Class::Success,
            &[Attribute::Lifetime(600)],
        );
        assert_eq!(
            inspect_from_relay(FrameKind::Stun, &ok),
            FromRelay::Pass {
                answer: id,
                allocated: true
            }
        );
        let unauth = message(Method::ALLOCATE, Class::Error, &[error(401)]);
        let refresh = message(Method::REFRESH, Class::Success, &[]);
        for m in [&unauth, &refresh] {
            assert_eq!(
                inspect_from_relay(FrameKind::Stun, m),
                FromRelay::Pass {
                    answer: id,
                    allocated: false
                }
            );
        }
        assert_eq!(
            inspect_from_relay(FrameKind::ChannelData, &[0x40, 0, 0, 0]),
            FromRelay::Pass {
                answer: None,
                allocated: false
            }
        );
        let alternate = Attribute::AlternateServer("192.0.2.7:3478".parse().unwrap());
        let redirects = [
            message(Method::ALLOCATE, Class::Error, &[error(300), alternate]),
            message(Method::ALLOCATE, Class::Error, &[error(300)]),
            message(Method::ALLOCATE, Class::Success, &[alternate]),
            message(
                Method::ALLOCATE,
                Class::Error,
                &[error(401), Attribute::AlternateDomain("evil.example")],
            ),
            // Hidden after MESSAGE-INTEGRITY, where a strict parser stops.
            append(
                append(unauth.clone(), attr::MESSAGE_INTEGRITY, &[0; 20]),
                attr::ALTERNATE_SERVER,
                &[0, 1, 0x0d, 0x96, 192, 0, 2, 7],
            ),
            append(
                append(
                    message(Method::ALLOCATE, Class::Error, &[]),
                    attr::MESSAGE_INTEGRITY,
                    &[0; 20],
                ),
                attr::ERROR_CODE,
                &[0, 0, 3, 0],
            ),
            // An ERROR-CODE the connector cannot read.
            append(
                message(Method::ALLOCATE, Class::Error, &[]),
                attr::ERROR_CODE,
                &[0, 0, 3],
            ),
        ];
        for r in &redirects {
            assert_eq!(
                inspect_from_relay(FrameKind::Stun, r),
                FromRelay::Redirect { answer: id },
                "{r:?}"
            );
        }
        let indication = message(Method::DATA, Class::Indication, &[alternate]);
        assert_eq!(
            inspect_from_relay(FrameKind::Stun, &indication),
            FromRelay::Redirect { answer: None }
        );
        assert_eq!(redirect_refusal(&indication), None);
        let mut bad = ok.clone();
        bad[3] += 4;
        assert_eq!(
            inspect_from_relay(FrameKind::Stun, &bad),
            FromRelay::Malformed
        );
    }

    #[test]
    fn redirect_refusal_is_a_300_without_an_alternate() {
        let alternate = Attribute::AlternateServer("192.0.2.7:3478".parse().unwrap());
        let redirect = message(Method::ALLOCATE, Class::Error, &[error(300), alternate]);
        let reply = redirect_refusal(&redirect).unwrap();
        let m = Message::parse(&reply).unwrap();
        assert_eq!(
            (m.method(), m.class(), m.transaction_id()),
            (Method::ALLOCATE, Class::Error, TransactionId([5; 12]))
        );
        assert!(matches!(
            m.get(attr::ERROR_CODE),
            Some(Ok(Attribute::ErrorCode(ErrorCode { code: 300, .. })))
        ));
        assert!(m.every_raw_attribute().all(|a| !matches!(
            a.typ,
            attr::ALTERNATE_SERVER | attr::ALTERNATE_DOMAIN | attr::MESSAGE_INTEGRITY
        )));
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

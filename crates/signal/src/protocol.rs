//! The WebSocket messages of docs/signaling.md: parsing what pages send and
//! building what the server sends.

use serde_json::{json, Map, Value};

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, or a field missing or of the wrong type.
    BadMessage,
    /// A `type` the server does not know.
    UnknownType,
    /// A message larger than the limit (the connection is then closed).
    TooLarge,
    /// Too many messages per second.
    RateLimited,
    /// A room name that is not 1–64 characters `[A-Za-z0-9_-]`.
    BadRoom,
    /// The room already has `max_room_size` members.
    RoomFull,
    /// `join` while in a room.
    AlreadyJoined,
    /// `offer`/`answer`/`candidate` before `join`.
    NotJoined,
    /// `offer`/`answer`/`candidate` while alone in the room.
    NoPeer,
    /// Too many joins per minute from this address.
    TooManyJoins,
    /// Too many rooms on the server.
    ServerFull,
    /// An offer or answer the sanitizer refused (control or non-ASCII
    /// characters, a malformed line); it was not forwarded.
    BadSdp,
    /// `to` names no other member of the sender's room.
    NoSuchMember,
    /// No `to` while the room has several other members.
    ToRequired,
    /// The rooms' shared store (Redis, with several nodes) cannot be
    /// reached: the join (or message) was not handled; try again later.
    ServerUnavailable,
}

impl ErrorCode {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad-message",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::BadRoom => "bad-room",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::NoPeer => "no-peer",
            ErrorCode::TooManyJoins => "too-many-joins",
            ErrorCode::ServerFull => "server-full",
            ErrorCode::BadSdp => "bad-sdp",
            ErrorCode::NoSuchMember => "no-such-member",
            ErrorCode::ToRequired => "to-required",
            ErrorCode::ServerUnavailable => "server-unavailable",
        }
    }

    /// A human-readable explanation.
    pub const fn message(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "not JSON, or a field is missing or of the wrong type",
            ErrorCode::UnknownType => "unknown message type",
            ErrorCode::TooLarge => "message too large",
            ErrorCode::RateLimited => "too many messages, slow down",
            ErrorCode::BadRoom => "a room name is 1-64 characters A-Z a-z 0-9 _ -",
            ErrorCode::RoomFull => "the room is full",
            ErrorCode::AlreadyJoined => "already in a room",
            ErrorCode::NotJoined => "join a room first",
            ErrorCode::NoPeer => "nobody else is in the room",
            ErrorCode::TooManyJoins => "too many joins from this address, try again later",
            ErrorCode::ServerFull => "the server has too many rooms, try again later",
            ErrorCode::BadSdp => {
                "the description has a control or non-ASCII character or a malformed line"
            }
            ErrorCode::NoSuchMember => "`to` names no other member of your room",
            ErrorCode::ToRequired => "the room has several other members: say which one in `to`",
            ErrorCode::ServerUnavailable => {
                "the server cannot reach its room store at the moment, try again shortly"
            }
        }
    }
}

/// A parsed page → server message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    Join {
        room: String,
    },
    Offer {
        sdp: String,
        to: Option<String>,
    },
    Answer {
        sdp: String,
        to: Option<String>,
    },
    /// `None` is the end of candidates.
    Candidate {
        candidate: Option<CandidateInit>,
        to: Option<String>,
    },
    Bye,
    Stats(Value),
    /// New TURN credentials, please.
    Refresh,
}

/// An `RTCIceCandidateInit`, with only the fields that are forwarded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CandidateInit {
    pub(crate) candidate: String,
    pub(crate) sdp_mid: Option<String>,
    pub(crate) sdp_m_line_index: Option<u64>,
    pub(crate) username_fragment: Option<String>,
}

/// Longest `sdpMid` / `usernameFragment` accepted.
const MAX_TOKEN: usize = 256;

/// Whether the server accepts one text frame from a page, and if not the
/// error it answers: [`parse`] without the parsed message (the fuzz target
/// `signal_message` drives it).
pub fn check(text: &str) -> Result<(), ErrorCode> {
    parse(text).map(|_| ())
}

/// Parses one text frame.
pub(crate) fn parse(text: &str) -> Result<Incoming, ErrorCode> {
    let value: Value = serde_json::from_str(text).map_err(|_| ErrorCode::BadMessage)?;
    let Value::Object(mut m) = value else {
        return Err(ErrorCode::BadMessage);
    };
    let ty = match m.get("type") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ErrorCode::BadMessage),
    };
    match ty.as_str() {
        "join" => {
            let room = take_string(&mut m, "room")?;
            if !valid_room(&room) {
                return Err(ErrorCode::BadRoom);
            }
            Ok(Incoming::Join { room })
        }
        "offer" => Ok(Incoming::Offer {
            sdp: take_string(&mut m, "sdp")?,
            to: take_to(&mut m)?,
        }),
        "answer" => Ok(Incoming::Answer {
            sdp: take_string(&mut m, "sdp")?,
            to: take_to(&mut m)?,
        }),
        "candidate" => {
            let candidate = match m.remove("candidate") {
                Some(Value::Null) => None,
                Some(Value::Object(c)) => Some(candidate_init(c)?),
                _ => return Err(ErrorCode::BadMessage),
            };
            Ok(Incoming::Candidate {
                candidate,
                to: take_to(&mut m)?,
            })
        }
        "bye" => Ok(Incoming::Bye),
        "refresh" => Ok(Incoming::Refresh),
        "stats" => match m.remove("stats") {
            Some(v @ Value::Object(_)) => Ok(Incoming::Stats(v)),
            _ => Err(ErrorCode::BadMessage),
        },
        _ => Err(ErrorCode::UnknownType),
    }
}

fn take_string(m: &mut Map<String, Value>, key: &str) -> Result<String, ErrorCode> {
    match m.remove(key) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(ErrorCode::BadMessage),
    }
}

/// The optional `to`: absent or `null` is `None`; otherwise a member id
/// ([`valid_member_id`]), else `bad-message`.
fn take_to(m: &mut Map<String, Value>) -> Result<Option<String>, ErrorCode> {
    match m.remove("to") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if valid_member_id(&s) => Ok(Some(s)),
        Some(_) => Err(ErrorCode::BadMessage),
    }
}

/// Member ids are [`MEMBER_ID_LEN`] lowercase hex digits.
pub(crate) fn valid_member_id(id: &str) -> bool {
    id.len() == MEMBER_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The length of a member id: 64 random bits in hex.
pub(crate) const MEMBER_ID_LEN: usize = 16;

/// A fresh random member id (never derived from anything about the caller).
pub(crate) fn new_member_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn candidate_init(mut c: Map<String, Value>) -> Result<CandidateInit, ErrorCode> {
    let candidate = take_string(&mut c, "candidate")?;
    let sdp_mid = match c.remove("sdpMid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_TOKEN => Some(s),
        Some(_) => return Err(ErrorCode::BadMessage),
    };
    let sdp_m_line_index = match c.remove("sdpMLineIndex") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|i| *i <= u64::from(u16::MAX))
                .ok_or(ErrorCode::BadMessage)?,
        ),
    };
    let username_fragment = match c.remove("usernameFragment") {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_TOKEN
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/') =>
        {
            Some(s)
        }
        _ => None,
    };
    Ok(CandidateInit {
        candidate,
        sdp_mid,
        sdp_m_line_index,
        username_fragment,
    })
}

/// 1–64 characters `[A-Za-z0-9_-]`.
pub(crate) fn valid_room(room: &str) -> bool {
    (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `{"type":"error","code":…,"message":…}`.
pub(crate) fn error(code: ErrorCode) -> String {
    json!({"type": "error", "code": code.as_str(), "message": code.message()}).to_string()
}

/// `{"type": ty, "memberId": id}` for `peer-joined` / `peer-left`.
pub(crate) fn peer(ty: &str, member_id: &str) -> String {
    json!({ "type": ty, "memberId": member_id }).to_string()
}

/// `{"type": "offer"|"answer", "sdp": …, "from": …}`.
pub(crate) fn description(ty: &str, sdp: &str, from: &str) -> String {
    json!({"type": ty, "sdp": sdp, "from": from}).to_string()
}

/// `{"type": "candidate", "candidate": …, "from": …}` (`None`: `null`).
pub(crate) fn candidate(c: Option<&CandidateInit>, from: &str) -> String {
    let value = match c {
        None => Value::Null,
        Some(c) => {
            let mut m = Map::new();
            m.insert("candidate".into(), Value::String(c.candidate.clone()));
            m.insert(
                "sdpMid".into(),
                c.sdp_mid.clone().map_or(Value::Null, Value::String),
            );
            m.insert(
                "sdpMLineIndex".into(),
                c.sdp_m_line_index.map_or(Value::Null, Value::from),
            );
            if let Some(u) = &c.username_fragment {
                m.insert("usernameFragment".into(), Value::String(u.clone()));
            }
            Value::Object(m)
        }
    };
    json!({"type": "candidate", "candidate": value, "from": from}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_messages() {
        assert_eq!(
            parse(r#"{"type":"join","room":"a-B_9"}"#),
            Ok(Incoming::Join {
                room: "a-B_9".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"join","room":""}"#),
            Err(ErrorCode::BadRoom)
        );
        assert_eq!(
            parse(r#"{"type":"join","room":"a b"}"#),
            Err(ErrorCode::BadRoom)
        );
        assert_eq!(
            parse(&format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(65))),
            Err(ErrorCode::BadRoom)
        );
        assert_eq!(
            parse(r#"{"type":"join","room":5}"#),
            Err(ErrorCode::BadMessage)
        );
        assert_eq!(parse(r#"{"type":"join"}"#), Err(ErrorCode::BadMessage));
        assert_eq!(parse("nope"), Err(ErrorCode::BadMessage));
        assert_eq!(parse("[]"), Err(ErrorCode::BadMessage));
        assert_eq!(parse(r#"{"type":7}"#), Err(ErrorCode::BadMessage));
        assert_eq!(parse(r#"{"type":"hello"}"#), Err(ErrorCode::UnknownType));
        assert_eq!(parse(r#"{"type":"bye"}"#), Ok(Incoming::Bye));
        assert_eq!(
            parse(r#"{"type":"candidate","candidate":null}"#),
            Ok(Incoming::Candidate {
                candidate: None,
                to: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"offer","sdp":"v=0","to":"0123456789abcdef"}"#),
            Ok(Incoming::Offer {
                sdp: "v=0".into(),
                to: Some("0123456789abcdef".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"answer","sdp":"v=0","to":null}"#),
            Ok(Incoming::Answer {
                sdp: "v=0".into(),
                to: None
            })
        );
        for bad in [
            r#""0123""#,
            r#""0123456789ABCDEF""#,
            "7",
            r#"["a"]"#,
            r#""0123456789abcdeg""#,
        ] {
            assert_eq!(
                parse(&format!(r#"{{"type":"offer","sdp":"v=0","to":{bad}}}"#)),
                Err(ErrorCode::BadMessage),
                "{bad}"
            );
        }
        assert_eq!(parse(r#"{"type":"refresh"}"#), Ok(Incoming::Refresh));
        assert!(valid_member_id(&new_member_id()));
        assert_eq!(parse(r#"{"type":"candidate"}"#), Err(ErrorCode::BadMessage));
        assert_eq!(
            parse(r#"{"type":"candidate","candidate":{"candidate":"x","sdpMLineIndex":-1}}"#),
            Err(ErrorCode::BadMessage)
        );
        let c = parse(
            r#"{"type":"candidate","candidate":{"candidate":"x","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"ab+/"}}"#,
        );
        let Ok(Incoming::Candidate {
            candidate: Some(c),
            to: None,
        }) = c
        else {
            panic!("{c:?}");
        };
        let out: Value = serde_json::from_str(&candidate(Some(&c), "f")).unwrap_or_default();
        assert_eq!(
            out,
            json!({"type": "candidate", "candidate": {"candidate": "x", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "ab+/"}, "from": "f"})
        );
        assert_eq!(
            parse(r#"{"type":"stats","stats":1}"#),
            Err(ErrorCode::BadMessage)
        );
        assert_eq!(parse(r#"{"type":"offer"}"#), Err(ErrorCode::BadMessage));
    }
}

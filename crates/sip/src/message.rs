//! The SIP wire format (RFC 3261 §7): one message in, one [`Message`] out.
//!
//! Bounded: at most [`MAX_MESSAGE_BYTES`] bytes and [`MAX_HEADERS`] header
//! fields; the whole message must be UTF-8 (SIP over WebSocket sends text
//! frames, and SDP is text). Header values never hold CR, LF or NUL, so
//! anything copied from one message into another cannot inject a header.
//! Compact header names are expanded; folded header lines are joined.

use std::fmt::Write as _;

/// The largest message accepted (and the largest UDP datagram).
pub const MAX_MESSAGE_BYTES: usize = 65_535;
/// The most header fields a message may have.
pub const MAX_HEADERS: usize = 64;
/// The longest request URI accepted.
pub const MAX_URI_BYTES: usize = 1024;

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("the message ends before its headers do")]
    Truncated,
    #[error("message is not UTF-8")]
    Encoding,
    #[error("bad start line")]
    StartLine,
    #[error("bad header field")]
    Header,
    #[error("bad Content-Length")]
    ContentLength,
    #[error("body shorter than its Content-Length")]
    ShortBody,
    #[error("bad CSeq")]
    CSeq,
    #[error("missing header {0}")]
    Missing(&'static str),
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// One header field, its name in canonical form for the common ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub body: String,
}

const COMPACT: &[(&str, &str)] = &[
    ("v", "Via"),
    ("f", "From"),
    ("t", "To"),
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("k", "Supported"),
    ("s", "Subject"),
    ("e", "Content-Encoding"),
    ("o", "Event"),
    ("u", "Allow-Events"),
    ("r", "Refer-To"),
];

const CANONICAL: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Max-Forwards",
    "Expires",
    "Min-Expires",
    "Authorization",
    "Proxy-Authorization",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Record-Route",
    "Route",
    "Supported",
    "Require",
    "Allow",
    "User-Agent",
    "Server",
];

pub(crate) fn canonical(name: &str) -> String {
    if name.len() == 1 {
        if let Some((_, long)) = COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
            return (*long).to_string();
        }
    }
    match CANONICAL.iter().find(|c| c.eq_ignore_ascii_case(name)) {
        Some(c) => (*c).to_string(),
        None => name.to_string(),
    }
}

/// RFC 3261 `token` characters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

fn clean_value(s: &str) -> bool {
    !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

impl Message {
    /// Parses one complete message (a WebSocket frame or a datagram).
    pub fn parse(input: &[u8]) -> Result<Message, ParseError> {
        if input.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLarge);
        }
        let text = std::str::from_utf8(input).map_err(|_| ParseError::Encoding)?;
        // RFC 3261 §7.5: CRLFs before the start line are ignored.
        let text = text.trim_start_matches("\r\n");
        let Some(end) = text.find("\r\n\r\n") else {
            return Err(ParseError::Truncated);
        };
        let head = &text[..end];
        let rest = &text[end + 4..];
        let mut lines = head.split("\r\n");
        let start = parse_start(lines.next().unwrap_or(""))?;
        let mut headers: Vec<Header> = Vec::new();
        // Content-Length is not kept (`to_bytes` writes its own) and does
        // not count towards MAX_HEADERS; at most two may repeat the value.
        let mut lengths: Vec<&str> = Vec::new();
        let mut folding_length = false;
        for line in lines {
            if !clean_value(line) {
                return Err(ParseError::Header);
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                if folding_length {
                    return Err(ParseError::ContentLength);
                }
                let Some(last) = headers.last_mut() else {
                    return Err(ParseError::Header);
                };
                if !last.value.is_empty() {
                    last.value.push(' ');
                }
                last.value.push_str(line.trim());
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(ParseError::Header);
            };
            let name = name.trim_end();
            if !is_token(name) {
                return Err(ParseError::Header);
            }
            let name = canonical(name);
            folding_length = name == "Content-Length";
            if folding_length {
                if lengths.len() >= 2 {
                    return Err(ParseError::ContentLength);
                }
                lengths.push(value.trim());
                continue;
            }
            if headers.len() >= MAX_HEADERS {
                return Err(ParseError::TooManyHeaders);
            }
            headers.push(Header {
                name,
                value: value.trim().to_string(),
            });
        }
        let mut msg = Message {
            start,
            headers,
            body: String::new(),
        };
        let mut length: Option<usize> = None;
        for v in lengths {
            if v.is_empty() || v.len() > 6 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::ContentLength);
            }
            let n: usize = v.parse().map_err(|_| ParseError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::ContentLength);
            }
            length = Some(n);
        }
        msg.body = match length {
            None => rest.to_string(),
            Some(n) if n > rest.len() => return Err(ParseError::ShortBody),
            Some(n) => rest.get(..n).ok_or(ParseError::ContentLength)?.to_string(),
        };
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if msg.get(name).is_none() {
                return Err(ParseError::Missing(name));
            }
        }
        let cseq = msg.cseq().ok_or(ParseError::CSeq)?;
        if let StartLine::Request { method, .. } = &msg.start {
            if cseq.1 != method {
                return Err(ParseError::CSeq);
            }
        }
        Ok(msg)
    }

    /// A new request with no headers.
    pub fn request(method: &str, uri: &str) -> Message {
        Message {
            start: StartLine::Request {
                method: method.to_string(),
                uri: uri.to_string(),
            },
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// A new response with no headers.
    pub fn response(code: u16, reason: &str) -> Message {
        Message {
            start: StartLine::Response {
                code,
                reason: reason.to_string(),
            },
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// The request method, or `None` for a response.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The request URI, or `None` for a response.
    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code, or `None` for a request.
    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Appends a header. Values with CR, LF or NUL are not added.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if clean_value(&value) && is_token(name) {
            self.headers.push(Header {
                name: name.to_string(),
                value,
            });
        }
    }

    /// Removes every header `name`.
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// `(sequence number, method)` of the CSeq header.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let (n, m) = self.get("CSeq")?.split_once([' ', '\t'])?;
        let m = m.trim();
        if !is_token(m) || n.len() > 10 {
            return None;
        }
        Some((n.parse().ok()?, m))
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &str {
        self.get("Call-ID").unwrap_or("")
    }

    /// The wire form, with a Content-Length of its own.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(out, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for h in &self.headers {
            if h.name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            let _ = write!(out, "{}: {}\r\n", h.name, h.value);
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        out.push_str(&self.body);
        out.into_bytes()
    }
}

fn parse_start(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::StartLine);
        }
        let code: u16 = code.parse().map_err(|_| ParseError::StartLine)?;
        if !(100..=699).contains(&code) || !clean_value(reason) {
            return Err(ParseError::StartLine);
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine);
    };
    if !is_token(method)
        || version != "SIP/2.0"
        || uri.is_empty()
        || uri.len() > MAX_URI_BYTES
        || !uri.contains(':')
        || !uri.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ParseError::StartLine);
    }
    Ok(StartLine::Request {
        method: method.to_string(),
        uri: uri.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const REGISTER: &str = "REGISTER sip:example.invalid SIP/2.0\r\n\
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK-524287-1\r\n\
Max-Forwards: 69\r\n\
To: <sip:alice@example.invalid>\r\n\
f: \"Alice\" <sip:alice@example.invalid>;tag=8a8sdg87s\r\n\
i: 1j9FpLxk3uxtm8tn@df7jal23ls0d.invalid\r\n\
CSeq: 1 REGISTER\r\n\
m: <sip:alice@df7jal23ls0d.invalid;transport=ws>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n\
Expires: 600\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_and_round_trips() {
        let m = Message::parse(REGISTER.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("REGISTER"));
        assert_eq!(
            m.get("from").unwrap(),
            "\"Alice\" <sip:alice@example.invalid>;tag=8a8sdg87s"
        );
        assert_eq!(m.call_id(), "1j9FpLxk3uxtm8tn@df7jal23ls0d.invalid");
        assert_eq!(m.cseq(), Some((1, "REGISTER")));
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn body_and_length() {
        let msg =
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/WSS h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:b@b>\r\nCall-ID: x\r\nCSeq: 2 INVITE\r\nContent-Length: 4\r\n\r\nv=0\nEXTRA";
        let m = Message::parse(msg.as_bytes()).unwrap();
        assert_eq!(m.code(), Some(200));
        assert_eq!(m.body, "v=0\n");
        let short = msg.replace("Content-Length: 4", "Content-Length: 400");
        assert_eq!(Message::parse(short.as_bytes()), Err(ParseError::ShortBody));
        let two = msg.replace("Content-Length: 4", "Content-Length: 4\r\nl: 5");
        assert_eq!(
            Message::parse(two.as_bytes()),
            Err(ParseError::ContentLength)
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Message::parse(b"INVITE sip:a SIP/2.0\r\n"),
            Err(ParseError::Truncated)
        );
        assert_eq!(
            Message::parse(&vec![b'a'; MAX_MESSAGE_BYTES + 1]),
            Err(ParseError::TooLarge)
        );
        assert_eq!(
            Message::parse(b"\xff\xfe\r\n\r\n"),
            Err(ParseError::Encoding)
        );
        assert_eq!(
            Message::parse(b"INVITE sip:a SIP/3.0\r\n\r\n"),
            Err(ParseError::StartLine)
        );
        assert_eq!(
            Message::parse(b"SIP/2.0 99 x\r\n\r\n"),
            Err(ParseError::StartLine)
        );
        let lf = REGISTER.replace("Max-Forwards: 69", "Max-Forwards: 69\nX-Injected: 1");
        assert_eq!(Message::parse(lf.as_bytes()), Err(ParseError::Header));
        let noid = REGISTER.replace("i: 1j9", "X-i: 1j9");
        assert_eq!(
            Message::parse(noid.as_bytes()),
            Err(ParseError::Missing("Call-ID"))
        );
        let cseq = REGISTER.replace("1 REGISTER", "1 INVITE");
        assert_eq!(Message::parse(cseq.as_bytes()), Err(ParseError::CSeq));
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let big = REGISTER.replacen("Expires: 600\r\n", &many, 1);
        assert_eq!(
            Message::parse(big.as_bytes()),
            Err(ParseError::TooManyHeaders)
        );
    }

    #[test]
    fn a_full_message_without_length_round_trips() {
        // Regression (fuzz): MAX_HEADERS fields and no Content-Length; the
        // serialized form adds one, which must not count.
        let extra = MAX_HEADERS - 7;
        let many: String = (0..extra).map(|i| format!("X-{i}: y\r\n")).collect();
        let text = REGISTER
            .replacen("Expires: 600\r\n", &many, 1)
            .replace("Content-Length: 0\r\n", "");
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(m.headers.len(), MAX_HEADERS);
        assert_eq!(Message::parse(&m.to_bytes()).unwrap(), m);
        let three = REGISTER.replace("Content-Length: 0", "l: 0\r\nl: 0\r\nl: 0");
        assert_eq!(
            Message::parse(three.as_bytes()),
            Err(ParseError::ContentLength)
        );
    }

    #[test]
    fn folded_lines_join() {
        let folded = REGISTER.replace("Expires: 600", "Expires:\r\n  600");
        let m = Message::parse(folded.as_bytes()).unwrap();
        assert_eq!(m.get("Expires"), Some("600"));
    }

    #[test]
    fn push_refuses_injection() {
        let mut m = Message::response(200, "OK");
        m.push("X", "a\r\nVia: evil");
        assert!(m.get("X").is_none());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Message::parse(&data);
        }

        #[test]
        fn mutated_register_never_panics(i in 0usize..400, b in proptest::num::u8::ANY) {
            let mut data = REGISTER.as_bytes().to_vec();
            if i < data.len() { data[i] = b; }
            if let Ok(m) = Message::parse(&data) {
                let _ = Message::parse(&m.to_bytes());
            }
        }
    }
}

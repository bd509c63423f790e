//! The SDP and ICE-candidate sanitizer: what a member receives never names
//! the other member's addresses, only the relay's.
//!
//! Rules (docs/signaling.md, "The sanitizer"):
//! - only `typ relay` candidates pass; `host`, `srflx`, `prflx` candidates,
//!   candidates whose address is an mDNS name (`*.local`) and candidate lines
//!   that do not parse are removed;
//! - in relay candidates `raddr`/`rport` become `0.0.0.0`/`0` (and so does
//!   the value of any other extension that is an IP address: browsers send
//!   none, and an address there could only be a caller's);
//! - `c=` lines become `c=IN IP4 0.0.0.0` (`c=IN IP6 ::`); `a=rtcp:` lines
//!   keep their port but get address `0.0.0.0` (`::`);
//! - everything else passes unchanged, with two additions the contract's
//!   intent ("no caller address") asks for: the `o=` line's address becomes
//!   `0.0.0.0` (`::`) — Chromium writes `127.0.0.1` there, a modified client
//!   could write anything — and `a=remote-candidates:` lines (ICE-lite only,
//!   never sent by browsers, made of addresses) are removed.
//!
//! Design decisions:
//! - Pure functions on strings, no allocation beyond the output, no panics:
//!   a line that does not parse as what its prefix says is dropped (when it
//!   could carry an address) or passed as is (when it cannot).
//! - Lines may end in CRLF, LF or a lone CR; the output uses CRLF when the
//!   input has any CRLF and LF otherwise, so the sanitizer is idempotent.
//! - A relay candidate is rebuilt from its tokens separated by single
//!   spaces; the order of the tokens and all extensions (`generation`,
//!   `ufrag`, `network-id`, `network-cost`, `tcptype`, unknown ones) stay.

use std::net::IpAddr;

/// The address written over every caller address in IPv4 form.
const ANY4: &str = "0.0.0.0";
/// The address written over every caller address in IPv6 form.
const ANY6: &str = "::";

/// Sanitizes a whole SDP body (offer or answer). See the module docs for the
/// rules.
pub fn sanitize_sdp(sdp: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len());
    let (lines, trailing_eol) = split_lines(sdp);
    let mut first = true;
    for line in lines {
        let Some(clean) = sanitize_sdp_line(line) else {
            continue;
        };
        if !first {
            out.push_str(eol);
        }
        first = false;
        out.push_str(&clean);
    }
    if trailing_eol && !first {
        out.push_str(eol);
    }
    out
}

/// Sanitizes one trickled candidate string (`candidate:…`, or the SDP form
/// `a=candidate:…`). `None` means the candidate must be dropped (not
/// forwarded at all). An empty string (some browsers' end-of-candidates
/// marker) passes unchanged.
pub fn sanitize_candidate(candidate: &str) -> Option<String> {
    let trimmed = candidate.trim();
    if trimmed.is_empty() {
        return Some(String::new());
    }
    let (prefix, body) = match strip_prefix_ci(trimmed, "a=") {
        Some(rest) => ("a=", rest),
        None => ("", trimmed),
    };
    let rest = strip_prefix_ci(body, "candidate:")?;
    sanitize_candidate_fields(rest).map(|fields| format!("{prefix}candidate:{fields}"))
}

/// Splits on CRLF, LF and lone CR; reports whether the text ended with a
/// line ending (no empty last line is returned for it).
fn split_lines(text: &str) -> (Vec<&str>, bool) {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    let trailing = start == bytes.len() && !bytes.is_empty();
    if start < bytes.len() {
        lines.push(&text[start..]);
    }
    (lines, trailing)
}

/// One SDP line: `None` drops it.
fn sanitize_sdp_line(line: &str) -> Option<String> {
    // Line types are lower case in SDP; upper case is matched too, in case a
    // parser out there is lenient about it.
    let t = line.trim_start();
    if let Some(attr) = strip_prefix_ci(t, "a=") {
        let (name, value) = match attr.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (attr, None),
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("candidate") {
            return sanitize_candidate_fields(value.unwrap_or(""))
                .map(|fields| format!("a=candidate:{fields}"));
        }
        if name.eq_ignore_ascii_case("rtcp") {
            return sanitize_rtcp(value.unwrap_or(""));
        }
        if name.eq_ignore_ascii_case("remote-candidates") {
            return None;
        }
        return Some(line.to_owned());
    }
    if let Some(value) = strip_prefix_ci(t, "c=") {
        return Some(format!("c={}", connection_any(value)));
    }
    if let Some(value) = strip_prefix_ci(t, "o=") {
        return sanitize_origin(value);
    }
    Some(line.to_owned())
}

/// `IN IP4 <anything>` → `IN IP4 0.0.0.0`, `IN IP6 …` → `IN IP6 ::`.
fn connection_any(value: &str) -> String {
    let mut tokens = value.split_ascii_whitespace();
    let _nettype = tokens.next();
    let addrtype = tokens.next().unwrap_or("IP4");
    if addrtype.eq_ignore_ascii_case("IP6") {
        format!("IN IP6 {ANY6}")
    } else {
        format!("IN IP4 {ANY4}")
    }
}

/// `a=rtcp:<port> [IN IP4 <addr>]`: keeps the port, replaces the address;
/// drops the line if the port is not a number.
fn sanitize_rtcp(value: &str) -> Option<String> {
    let mut tokens = value.split_ascii_whitespace();
    let port = tokens.next()?;
    if !is_number(port) {
        return None;
    }
    if tokens.next().is_none() {
        return Some(format!("a=rtcp:{port}"));
    }
    Some(format!("a=rtcp:{port} {}", connection_any_from(value)))
}

/// The address part of an `a=rtcp` value (after the port) as `IN IP4 …`.
fn connection_any_from(value: &str) -> String {
    let rest = value
        .split_ascii_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ");
    connection_any(&rest)
}

/// `o=<user> <sess-id> <sess-version> IN IP4 <addr>`: replaces the address;
/// a line without the six fields is dropped (it is invalid anyway).
fn sanitize_origin(value: &str) -> Option<String> {
    let tokens: Vec<&str> = value.split_ascii_whitespace().collect();
    if tokens.len() < 6 {
        return None;
    }
    let any = if tokens[4].eq_ignore_ascii_case("IP6") {
        ANY6
    } else {
        ANY4
    };
    Some(format!(
        "o={} {} {} {} {} {any}",
        tokens[0], tokens[1], tokens[2], tokens[3], tokens[4]
    ))
}

/// The part after `candidate:`: `None` unless it is a well-formed relay
/// candidate (RFC 8839 §5.1), which comes back with `raddr 0.0.0.0 rport 0`.
fn sanitize_candidate_fields(fields: &str) -> Option<String> {
    if fields
        .chars()
        .any(|c| !(c.is_ascii_graphic() || c.is_ascii_whitespace()))
    {
        return None;
    }
    let mut tokens: Vec<&str> = fields.split_ascii_whitespace().collect();
    // foundation component transport priority address port "typ" type
    if tokens.len() < 8 || tokens.len() % 2 != 0 {
        return None;
    }
    let (component, transport, priority, address, port) =
        (tokens[1], tokens[2], tokens[3], tokens[4], tokens[5]);
    let transport_ok = ["udp", "tcp"]
        .iter()
        .any(|t| transport.eq_ignore_ascii_case(t));
    if !is_number(component) || !is_number(priority) || !is_number(port) || !transport_ok {
        return None;
    }
    if !tokens[6].eq_ignore_ascii_case("typ") || !tokens[7].eq_ignore_ascii_case("relay") {
        return None;
    }
    if is_mdns(address) {
        return None;
    }
    for i in (8..tokens.len()).step_by(2) {
        if tokens[i].eq_ignore_ascii_case("rport") {
            tokens[i + 1] = "0";
        } else if tokens[i].eq_ignore_ascii_case("raddr") || tokens[i + 1].parse::<IpAddr>().is_ok()
        {
            // raddr, and any unknown extension whose value is an address.
            tokens[i + 1] = ANY4;
        }
    }
    Some(tokens.join(" "))
}

fn is_mdns(address: &str) -> bool {
    let a = address.trim_end_matches('.');
    a.len()
        .checked_sub(6)
        .and_then(|start| a.get(start..))
        .is_some_and(|tail| tail.eq_ignore_ascii_case(".local"))
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
#[path = "sanitize_tests.rs"]
mod capture_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "candidate:4281032442 1 udp 58597631 203.0.113.5 49461 typ relay raddr 192.0.2.2 rport 59934 generation 0 network-id 1";

    #[test]
    fn relay_candidate_keeps_address_and_loses_raddr() {
        assert_eq!(
            sanitize_candidate(RELAY).as_deref(),
            Some("candidate:4281032442 1 udp 58597631 203.0.113.5 49461 typ relay raddr 0.0.0.0 rport 0 generation 0 network-id 1")
        );
    }

    #[test]
    fn non_relay_candidates_are_dropped() {
        for c in [
            "candidate:1 1 udp 2122194687 192.0.2.2 59934 typ host generation 0",
            "candidate:1 1 UDP 1686052607 198.51.100.9 40000 typ srflx raddr 192.0.2.2 rport 59934",
            "candidate:1 1 udp 1845501695 198.51.100.9 40000 typ prflx raddr 0.0.0.0 rport 0",
            "candidate:2 1 tcp 1518214911 2001:db8::2 9 typ host tcptype active",
            "candidate:0 1 UDP 2122187007 2fb61f6e-495c-407e-862e-0079d1c4ef75.local 37244 typ host",
            "candidate:0 1 UDP 2122187007 2fb61f6e.LOCAL 37244 typ relay",
            "candidate:0 1 UDP 2122187007 1.2.3.4 37244 typ relay raddr",
            "candidate:0 1 UDP 2122187007 1.2.3.4 37244 TYP",
            "candidate:0 1 sctp 2122187007 1.2.3.4 37244 typ relay",
            "candidate:0 x udp 2122187007 1.2.3.4 37244 typ relay",
            "candidate:",
            "garbage",
            "candidate:0 1 udp 1 1.2.3.4 5 typ relay raddr 1.2.3.4\u{0} rport 5",
        ] {
            assert_eq!(sanitize_candidate(c), None, "{c}");
        }
    }

    #[test]
    fn candidate_forms() {
        assert_eq!(sanitize_candidate("").as_deref(), Some(""));
        assert_eq!(
            sanitize_candidate("a=candidate:1 1 TCP 8265727 127.0.0.1 50451 typ relay raddr 127.0.0.1 rport 50451 tcptype passive").as_deref(),
            Some("a=candidate:1 1 TCP 8265727 127.0.0.1 50451 typ relay raddr 0.0.0.0 rport 0 tcptype passive")
        );
        assert_eq!(
            sanitize_candidate("candidate:1  1 udp 5 2001:db8::7 9 typ relay\r\n").as_deref(),
            Some("candidate:1 1 udp 5 2001:db8::7 9 typ relay")
        );
    }

    #[test]
    fn sdp_lines() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\nc=IN IP4 192.0.2.2\r\nc=IN IP6 2001:db8::2\r\na=rtcp:9 IN IP4 192.0.2.2\r\na=rtcp:9\r\na=rtcp:x 1.2.3.4\r\na=remote-candidates:1 192.0.2.2 5\r\na=end-of-candidates\r\n";
        assert_eq!(
            sanitize_sdp(sdp),
            "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\nc=IN IP4 0.0.0.0\r\nc=IN IP6 ::\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp:9\r\na=end-of-candidates\r\n"
        );
    }

    #[test]
    fn line_endings() {
        assert_eq!(
            sanitize_sdp("v=0\nc=IN IP4 1.2.3.4"),
            "v=0\nc=IN IP4 0.0.0.0"
        );
        assert_eq!(
            sanitize_sdp("v=0\rc=IN IP4 1.2.3.4\r"),
            "v=0\nc=IN IP4 0.0.0.0\n"
        );
        assert_eq!(
            sanitize_sdp("v=0\r\nc=IN IP4 1.2.3.4\na=x\r\n"),
            "v=0\r\nc=IN IP4 0.0.0.0\r\na=x\r\n"
        );
        assert_eq!(sanitize_sdp(""), "");
        assert_eq!(sanitize_sdp("\r\n"), "\r\n");
    }
}

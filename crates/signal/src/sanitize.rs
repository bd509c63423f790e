//! The SDP and ICE-candidate sanitizer: what a member receives names no
//! address but our relays' (and `0.0.0.0`/`::`), and no address a sender
//! chooses can make the receiving browser send anywhere but our relays.
//!
//! It rebuilds rather than patches: every line it forwards is either
//! re-serialized from parsed, grammar-checked fields, or passed unchanged
//! only when it contains nothing that could be an IP literal. Rules
//! (docs/signaling.md, "The sanitizer"):
//!
//! - **Characters.** Every line is printable ASCII (0x20–0x7E). A control
//!   character (TAB, NUL, a lone CR, DEL, …) or any non-ASCII character
//!   (zero-width space, bidi controls, BOM, …) rejects the whole description
//!   ([`SdpError`]; the sender gets `bad-sdp`). Lines end in CRLF or LF; the
//!   output always uses CRLF.
//! - **Structure.** Every line is `<letter>=…`; `v=`, `o=`, `t=`, `m=`,
//!   `a=mid`, `a=ice-ufrag`, `a=ice-pwd` and `a=fingerprint` must match
//!   their grammar or the description is rejected. `o=` becomes
//!   `o=- <id> <version> IN IP4 0.0.0.0` (or `IP6 ::`): the user name, where
//!   str0m and others write their name and version, becomes `-`. `s=`
//!   becomes `s=-`; `c=` and the address of `a=rtcp` become `0.0.0.0`/`::`;
//!   `i=`, `u=`, `e=`, `p=`, `k=`, `r=`, `z=` and malformed `b=` lines are
//!   removed.
//! - **Candidates** (SDP and trickled) are rebuilt from their fields: the
//!   foundation 1–32 `ice-char`s (ALPHA / DIGIT / `+` / `/`), numbers for
//!   component, priority and port, `udp`/`tcp`, only `typ relay`, the
//!   address an IP literal inside the configured relay networks (else the
//!   candidate is dropped and counted as foreign), always `raddr 0.0.0.0
//!   rport 0`, and only the extensions `tcptype` (`active`/`passive`/`so`),
//!   `generation`, `network-id`, `network-cost` (numbers) and `ufrag`
//!   (`ice-char`s), each at most once, in the sender's order.
//!   `a=remote-candidates` is removed.
//! - **Header extensions.** Only the `a=extmap` URIs of [`KEPT_EXTMAPS`]
//!   pass (each with a justification there); audio levels, send and capture
//!   times and the rest are removed, so neither browser sends them.
//! - **Opus.** Every Opus payload type gets `cbr=1;usedtx=0` in its
//!   `a=fmtp` line (added when absent), whose other parameters are rebuilt
//!   from the known numeric ones.
//! - **Everything else** (`a=ssrc`, `a=msid`, `a=rtpmap`, other `a=fmtp`,
//!   unknown attributes, …) passes unchanged unless it *might* contain an IP
//!   literal — a run of `[0-9A-Fa-f.:]` with three dots or two colons —
//!   in which case the line is removed. The only line exempt is the strictly
//!   parsed `a=fingerprint` (its colon-separated hex can look like IPv6).
//!
//! Design decisions:
//! - Reject the whole description on bad characters rather than drop the
//!   line: browsers never send them, so the sender is a modified client; a
//!   dropped line could change how the receiver reads the lines around it
//!   (an unfolded candidate, a half-removed media section), and a rejected
//!   description cannot reach the peer in any form. Address-bearing lines
//!   and unwanted candidates, which an honest browser does produce (host
//!   candidates, mDNS), are dropped instead.
//! - Pure functions on strings, no panics, output at most a few bytes per
//!   line longer than the input (one added `a=fmtp` per Opus payload type).
//! - Idempotent: sanitizing the output again yields the same text.

use std::net::IpAddr;

use turn::policy::Cidr;

/// The address written over every caller address in IPv4 form.
const ANY4: &str = "0.0.0.0";
/// The address written over every caller address in IPv6 form.
const ANY6: &str = "::";
/// Longest candidate (after `candidate:`) accepted.
const MAX_CANDIDATE: usize = 1024;
/// Longest foundation accepted (RFC 8839: 1*32 ice-char).
const MAX_FOUNDATION: usize = 32;
/// Longest `ufrag` / `ice-ufrag` / `ice-pwd` accepted (RFC 8839: 256).
const MAX_ICE_TOKEN: usize = 256;
/// Longest `sdpMid` / `a=mid` accepted.
pub const MAX_MID: usize = 32;

/// The RTP header extensions that pass, each with why it is needed. Every
/// other `a=extmap` is removed; among them:
/// `urn:ietf:params:rtp-hdrext:ssrc-audio-level` and `csrc-audio-level`
/// (the speaker's level, in clear: when each person talks),
/// `http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time` and
/// `abs-capture-time` (the sender's clock; congestion control uses
/// transport-wide-cc instead), `urn:ietf:params:rtp-hdrext:toffset`,
/// `video-timing`, `playout-delay` (timing), `video-content-type` (whether
/// the screen is shared), `urn:3gpp:video-orientation` (how the device is
/// held), `color-space`, `video-layers-allocation00`, the AV1 dependency
/// descriptor (frame structure; nothing on a direct path needs them).
pub const KEPT_EXTMAPS: &[(&str, &str)] = &[
    (
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "BUNDLE needs it to tell the media sections apart (RFC 8843); a constant",
    ),
    (
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "congestion control: a per-packet sequence number, which the relay can count anyway",
    ),
    (
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "names the stream (RID) when the browser uses it; a constant",
    ),
    (
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        "ties retransmissions (RTX) to their stream; a constant",
    ),
];

/// The Opus `a=fmtp` parameters kept (all take a number); others go.
const OPUS_PARAMS: &[&str] = &[
    "minptime",
    "ptime",
    "maxptime",
    "useinbandfec",
    "stereo",
    "sprop-stereo",
    "maxplaybackrate",
    "sprop-maxcapturerate",
    "maxaveragebitrate",
    "cbr",
    "usedtx",
];

/// Why a description was rejected as a whole (1-based line numbers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// A control character, a lone CR or a non-ASCII character.
    #[error("line {0}: a control or non-ASCII character")]
    Character(usize),
    /// A line that is not `<letter>=…`.
    #[error("line {0}: not an SDP line")]
    NotSdp(usize),
    /// A line whose fields do not match its grammar.
    #[error("line {line}: malformed {what}")]
    Malformed {
        /// The line number.
        line: usize,
        /// What it should have been.
        what: &'static str,
    },
}

/// Why a candidate was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CandidateDrop {
    /// Not `typ relay` (host, srflx, prflx).
    #[error("not a relay candidate")]
    NotRelay,
    /// A relay candidate whose address is not one of our relays'.
    #[error("relay address outside the relay networks")]
    ForeignRelay,
    /// Does not parse.
    #[error("malformed candidate")]
    Malformed,
}

/// What the sanitizer removed from one description.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Candidates removed because they are not relay candidates or do not
    /// parse.
    pub candidates_dropped: u32,
    /// Relay candidates removed because of their address.
    pub foreign_relays: u32,
    /// Other lines removed (header extensions, address-bearing or
    /// unneeded lines).
    pub lines_removed: u32,
}

/// A sanitized description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitized {
    /// The SDP to forward.
    pub sdp: String,
    /// What was removed.
    pub report: Report,
}

/// The sanitizer for one server: knows which relay addresses may appear.
#[derive(Debug, Clone, Copy)]
pub struct Sanitizer<'a> {
    relays: &'a [Cidr],
}

impl<'a> Sanitizer<'a> {
    /// A sanitizer that forwards relay candidates inside `relays` only
    /// (empty: no relay candidate passes).
    pub fn new(relays: &'a [Cidr]) -> Self {
        Sanitizer { relays }
    }

    /// Sanitizes a whole SDP body (offer or answer).
    pub fn sdp(&self, sdp: &str) -> Result<Sanitized, SdpError> {
        let lines = split_lines(sdp)?;
        let opus = opus_sections(&lines);
        let mut report = Report::default();
        let mut out = String::with_capacity(sdp.len() + 64);
        let mut section = 0usize;
        for (i, line) in lines.iter().enumerate() {
            let n = i + 1;
            if line.is_empty() {
                continue;
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || !bytes[0].is_ascii_lowercase() || bytes[1] != b'=' {
                return Err(SdpError::NotSdp(n));
            }
            let value = &line[2..];
            if bytes[0] == b'm' {
                section += 1;
            }
            let ctx = LineCtx {
                n,
                opus: opus.get(section).map(Vec::as_slice).unwrap_or(&[]),
            };
            if let Some(clean) = self.line(bytes[0], value, &ctx, &mut report)? {
                out.push_str(&clean);
                out.push_str("\r\n");
            }
        }
        Ok(Sanitized { sdp: out, report })
    }

    /// Sanitizes one trickled candidate string (`candidate:…`, or the SDP
    /// form `a=candidate:…`). An empty string (some browsers' end of
    /// candidates) passes unchanged.
    pub fn candidate(&self, candidate: &str) -> Result<String, CandidateDrop> {
        if candidate.is_empty() {
            return Ok(String::new());
        }
        if !printable(candidate) {
            return Err(CandidateDrop::Malformed);
        }
        let (prefix, body) = match strip_prefix_ci(candidate, "a=") {
            Some(rest) => ("a=", rest),
            None => ("", candidate),
        };
        let rest = strip_prefix_ci(body, "candidate:").ok_or(CandidateDrop::Malformed)?;
        self.candidate_fields(rest)
            .map(|fields| format!("{prefix}candidate:{fields}"))
    }

    /// One line (`kind=value`): `Ok(None)` drops it.
    fn line(
        &self,
        kind: u8,
        value: &str,
        ctx: &LineCtx<'_>,
        report: &mut Report,
    ) -> Result<Option<String>, SdpError> {
        let n = ctx.n;
        let malformed = |what| SdpError::Malformed { line: n, what };
        Ok(Some(match kind {
            b'v' if value == "0" => "v=0".to_owned(),
            b'v' => return Err(malformed("v=")),
            b'o' => format!("o={}", origin(value).ok_or_else(|| malformed("o="))?),
            b's' => "s=-".to_owned(),
            b't' => {
                let t: Vec<&str> = value.split(' ').collect();
                if t.len() != 2 || !t.iter().all(|x| is_number(x)) {
                    return Err(malformed("t="));
                }
                format!("t={} {}", t[0], t[1])
            }
            b'c' => format!("c={}", connection_any(value)),
            b'm' => {
                if !media_ok(value) {
                    return Err(malformed("m="));
                }
                format!("m={value}")
            }
            b'b' => match value.split_once(':') {
                Some((t, bw)) if is_token(t, 16) && is_number(bw) => format!("b={t}:{bw}"),
                _ => return Ok(remove(report)),
            },
            b'a' => return self.attribute(value, ctx, report),
            _ => return Ok(remove(report)),
        }))
    }

    /// One `a=` line's value: `Ok(None)` drops it.
    fn attribute(
        &self,
        attr: &str,
        ctx: &LineCtx<'_>,
        report: &mut Report,
    ) -> Result<Option<String>, SdpError> {
        let n = ctx.n;
        let malformed = |what| SdpError::Malformed { line: n, what };
        let (name, value) = match attr.split_once(':') {
            Some((a, v)) => (a, Some(v)),
            None => (attr, None),
        };
        if !is_token(name, 64) {
            return Ok(remove(report));
        }
        let v = value.unwrap_or("");
        let lower = name.to_ascii_lowercase();
        let line = match lower.as_str() {
            "candidate" => match self.candidate_fields(v) {
                Ok(fields) => format!("a=candidate:{fields}"),
                Err(CandidateDrop::ForeignRelay) => {
                    report.foreign_relays += 1;
                    return Ok(None);
                }
                Err(_) => {
                    report.candidates_dropped += 1;
                    return Ok(None);
                }
            },
            "remote-candidates" => return Ok(remove(report)),
            "rtcp" => match rtcp(v) {
                Some(l) => l,
                None => return Ok(remove(report)),
            },
            "extmap" => match extmap(v) {
                Some(l) => l,
                None => return Ok(remove(report)),
            },
            "fmtp" => {
                let pt = v.split(' ').next().unwrap_or("");
                if ctx.is_opus(pt) {
                    opus_fmtp(pt, v.get(pt.len()..).unwrap_or(""))
                } else if might_hold_ip(attr) {
                    return Ok(remove(report));
                } else {
                    format!("a={attr}")
                }
            }
            "rtpmap" => {
                if might_hold_ip(attr) {
                    return Ok(remove(report));
                }
                let pt = v.split(' ').next().unwrap_or("");
                if ctx.is_opus(pt) && !ctx.opus_has_fmtp(pt) {
                    // Opus without an fmtp line: add one after its rtpmap.
                    format!("a={attr}\r\na=fmtp:{pt} cbr=1;usedtx=0")
                } else {
                    format!("a={attr}")
                }
            }
            "mid" if valid_mid(v) => format!("a=mid:{v}"),
            "mid" => return Err(malformed("a=mid")),
            "ice-ufrag" if is_ice_token(v, 4) => format!("a=ice-ufrag:{v}"),
            "ice-ufrag" => return Err(malformed("a=ice-ufrag")),
            "ice-pwd" if is_ice_token(v, 22) => format!("a=ice-pwd:{v}"),
            "ice-pwd" => return Err(malformed("a=ice-pwd")),
            "fingerprint" => format!(
                "a=fingerprint:{}",
                fingerprint(v).ok_or_else(|| malformed("a=fingerprint"))?
            ),
            _ if might_hold_ip(attr) => return Ok(remove(report)),
            _ => format!("a={attr}"),
        };
        Ok(Some(line))
    }

    /// The part after `candidate:`, rebuilt; see the module docs.
    fn candidate_fields(&self, fields: &str) -> Result<String, CandidateDrop> {
        use CandidateDrop::Malformed;
        if fields.len() > MAX_CANDIDATE || !printable(fields) {
            return Err(Malformed);
        }
        let t: Vec<&str> = fields.split(' ').collect();
        if t.len() < 8 || !t.len().is_multiple_of(2) {
            return Err(Malformed);
        }
        let (foundation, component, transport, priority, address, port) =
            (t[0], t[1], t[2], t[3], t[4], t[5]);
        let transport_ok = ["udp", "tcp"]
            .iter()
            .any(|x| transport.eq_ignore_ascii_case(x));
        if !is_ice_chars(foundation, 1, MAX_FOUNDATION)
            || component.len() > 3
            || !is_number(component)
            || !transport_ok
            || priority.len() > 10
            || priority.parse::<u32>().is_err()
            || port.parse::<u16>().is_err()
            || !is_number(port)
            || !t[6].eq_ignore_ascii_case("typ")
        {
            return Err(Malformed);
        }
        if !t[7].eq_ignore_ascii_case("relay") {
            return Err(CandidateDrop::NotRelay);
        }
        let Ok(ip) = address.parse::<IpAddr>() else {
            // An FQDN or mDNS name: the browser would resolve it itself.
            return Err(CandidateDrop::ForeignRelay);
        };
        if !self.relays.iter().any(|c| c.contains(ip)) {
            return Err(CandidateDrop::ForeignRelay);
        }
        let mut out = format!(
            "{foundation} {component} {transport} {priority} {ip} {port} typ relay raddr {ANY4} rport 0"
        );
        let mut seen: Vec<&str> = Vec::new();
        for pair in t[8..].chunks_exact(2) {
            let (name, value) = (pair[0], pair[1]);
            let lower = name.to_ascii_lowercase();
            let ok = match lower.as_str() {
                "raddr" | "rport" => continue,
                "generation" | "network-id" | "network-cost" => {
                    value.len() <= 10 && is_number(value)
                }
                "ufrag" => is_ice_token(value, 1),
                "tcptype" => ["active", "passive", "so"]
                    .iter()
                    .any(|x| value.eq_ignore_ascii_case(x)),
                _ => false,
            };
            if !ok || seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
                continue;
            }
            seen.push(name);
            out.push(' ');
            out.push_str(name);
            out.push(' ');
            out.push_str(value);
        }
        Ok(out)
    }
}

/// A counted removal.
fn remove(report: &mut Report) -> Option<String> {
    report.lines_removed += 1;
    None
}

/// Per-line context: the line number and the Opus payload types of its
/// media section (with whether each has an `a=fmtp` line).
struct LineCtx<'l> {
    n: usize,
    opus: &'l [(&'l str, bool)],
}

impl LineCtx<'_> {
    fn is_opus(&self, pt: &str) -> bool {
        self.opus.iter().any(|(p, _)| *p == pt)
    }

    fn opus_has_fmtp(&self, pt: &str) -> bool {
        self.opus.iter().any(|(p, has)| *p == pt && *has)
    }
}

/// For each section (0: the session part, then one per `m=`), the Opus
/// payload types (`a=rtpmap:<pt> opus/…`) and whether each has an `a=fmtp`.
fn opus_sections<'l>(lines: &[&'l str]) -> Vec<Vec<(&'l str, bool)>> {
    let mut sections: Vec<Vec<(&'l str, bool)>> = vec![Vec::new()];
    let mut fmtp: Vec<Vec<&'l str>> = vec![Vec::new()];
    for line in lines {
        if line.starts_with("m=") {
            sections.push(Vec::new());
            fmtp.push(Vec::new());
        }
        let (Some(s), Some(f)) = (sections.last_mut(), fmtp.last_mut()) else {
            continue;
        };
        if let Some(v) = strip_prefix_ci(line, "a=rtpmap:") {
            if let Some((pt, codec)) = v.split_once(' ') {
                let opus = strip_prefix_ci(codec, "opus/").is_some();
                if opus && pt.len() <= 3 && is_number(pt) && !s.iter().any(|(p, _)| *p == pt) {
                    s.push((pt, false));
                }
            }
        } else if let Some(v) = strip_prefix_ci(line, "a=fmtp:") {
            f.push(v.split(' ').next().unwrap_or(""));
        }
    }
    for (s, f) in sections.iter_mut().zip(&fmtp) {
        for (pt, has) in s.iter_mut() {
            *has = f.contains(pt);
        }
    }
    sections
}

/// `a=fmtp:<pt> <params>` for Opus: the known numeric parameters in the
/// sender's order, then `cbr=1` and `usedtx=0` (overriding any value).
fn opus_fmtp(pt: &str, params: &str) -> String {
    let mut kept: Vec<(String, &str)> = Vec::new();
    for p in params.split(';') {
        let Some((k, v)) = p.trim().split_once('=') else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim();
        let known = OPUS_PARAMS.contains(&k.as_str());
        if !known || v.len() > 10 || !is_number(v) || kept.iter().any(|(x, _)| *x == k) {
            continue;
        }
        let v = match k.as_str() {
            "cbr" => "1",
            "usedtx" => "0",
            _ => v,
        };
        kept.push((k, v));
    }
    for (k, v) in [("cbr", "1"), ("usedtx", "0")] {
        if !kept.iter().any(|(x, _)| x == k) {
            kept.push((k.to_owned(), v));
        }
    }
    let params: Vec<String> = kept.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("a=fmtp:{pt} {}", params.join(";"))
}

/// `a=extmap:<id>[/<direction>] <uri> …`: kept URIs only, rebuilt without
/// extension attributes.
fn extmap(value: &str) -> Option<String> {
    let mut t = value.split(' ');
    let id_dir = t.next()?;
    let uri = t.next()?;
    let (id, dir) = match id_dir.split_once('/') {
        Some((i, d)) => (i, Some(d)),
        None => (id_dir, None),
    };
    if !is_number(id)
        || id
            .parse::<u16>()
            .ok()
            .filter(|i| (1..=255).contains(i))
            .is_none()
    {
        return None;
    }
    if let Some(d) = dir {
        if !["sendonly", "recvonly", "sendrecv", "inactive"].contains(&d) {
            return None;
        }
    }
    let (uri, _) = KEPT_EXTMAPS.iter().find(|(u, _)| *u == uri)?;
    Some(match dir {
        Some(d) => format!("a=extmap:{id}/{d} {uri}"),
        None => format!("a=extmap:{id} {uri}"),
    })
}

/// `<hash-func> <hex>:<hex>:…` (RFC 8122), upper or lower case, 16–64
/// bytes: rebuilt as is.
fn fingerprint(value: &str) -> Option<String> {
    let (hash, hex) = value.split_once(' ')?;
    if !is_token(hash, 16) {
        return None;
    }
    let bytes: Vec<&str> = hex.split(':').collect();
    let ok = (16..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| format!("{hash} {hex}"))
}

/// `m=<media> <port>[/<n>] <proto> <fmt> …` with token fields.
fn media_ok(value: &str) -> bool {
    let t: Vec<&str> = value.split(' ').collect();
    if t.len() < 4 || t.len() > 68 {
        return false;
    }
    let port_ok = match t[1].split_once('/') {
        Some((p, n)) => is_number(p) && is_number(n),
        None => is_number(t[1]),
    };
    t[0].len() <= 16
        && t[0].bytes().all(|b| b.is_ascii_lowercase())
        && !t[0].is_empty()
        && port_ok
        && !t[2].is_empty()
        && t[2].len() <= 32
        && t[2].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/')
        && t[3..].iter().all(|f| is_token(f, 32))
}

/// Splits on CRLF and LF; rejects any other control character, a lone CR
/// and non-ASCII.
fn split_lines(text: &str) -> Result<Vec<&str>, SdpError> {
    let mut lines = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if !printable(line) {
            return Err(SdpError::Character(i + 1));
        }
        lines.push(line);
    }
    Ok(lines)
}

/// Printable ASCII and space only.
fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// `IN IP4 <anything>` → `IN IP4 0.0.0.0`, `IN IP6 …` → `IN IP6 ::`.
fn connection_any(value: &str) -> String {
    let addrtype = value.split(' ').nth(1).unwrap_or("IP4");
    if addrtype.eq_ignore_ascii_case("IP6") {
        format!("IN IP6 {ANY6}")
    } else {
        format!("IN IP4 {ANY4}")
    }
}

/// `a=rtcp:<port> [IN IP4 <addr>]`: keeps the port, replaces the address.
fn rtcp(value: &str) -> Option<String> {
    let (port, rest) = match value.split_once(' ') {
        Some((p, r)) => (p, Some(r)),
        None => (value, None),
    };
    if port.parse::<u16>().is_err() || !is_number(port) {
        return None;
    }
    Some(match rest {
        None => format!("a=rtcp:{port}"),
        Some(r) => format!("a=rtcp:{port} {}", connection_any(r)),
    })
}

/// `<user> <sess-id> <sess-version> IN <IP4|IP6> <addr>` → `- <id> <version>
/// IN IP4 0.0.0.0`.
fn origin(value: &str) -> Option<String> {
    let t: Vec<&str> = value.split(' ').collect();
    if t.len() != 6 || !is_number(t[1]) || !is_number(t[2]) {
        return None;
    }
    Some(format!(
        "- {} {} {}",
        t[1],
        t[2],
        connection_any(&t[3..].join(" "))
    ))
}

/// Whether `text` might hold an IP literal: a run of `[0-9A-Fa-f.:]` with
/// at least three dots (IPv4) or two colons (IPv6, including `::` and
/// IPv4-embedding forms). A superset: some lines without an address are
/// removed too, never the reverse.
pub fn might_hold_ip(text: &str) -> bool {
    let mut dots = 0;
    let mut colons = 0;
    for b in text.bytes() {
        match b {
            b'.' => dots += 1,
            b':' => colons += 1,
            b if b.is_ascii_hexdigit() => {}
            _ => {
                dots = 0;
                colons = 0;
            }
        }
        if dots >= 3 || colons >= 2 {
            return true;
        }
    }
    false
}

/// An `sdpMid` / `a=mid` value: 1–[`MAX_MID`] characters `[A-Za-z0-9_-]`.
pub fn valid_mid(mid: &str) -> bool {
    (1..=MAX_MID).contains(&mid.len())
        && mid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A `usernameFragment` / `ufrag` value: 1–256 `ice-char`s.
pub fn valid_ufrag(ufrag: &str) -> bool {
    is_ice_token(ufrag, 1)
}

/// `min`–[`MAX_ICE_TOKEN`] `ice-char`s.
fn is_ice_token(s: &str, min: usize) -> bool {
    is_ice_chars(s, min, MAX_ICE_TOKEN)
}

/// `min`–`max` `ice-char`s: ALPHA / DIGIT / `+` / `/` (RFC 8445).
fn is_ice_chars(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// 1–`max` characters `[A-Za-z0-9_-]`.
fn is_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
#[path = "sanitize_tests.rs"]
mod capture_tests;

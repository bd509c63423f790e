//! Reading the structured header values the registrar and the B2BUA need:
//! name-addr (`From`, `To`, `Contact`), `Via`, SIP URIs and `;params`.
//! Every function is total: bad input gives `None`, never a panic.

/// Splits a header value at commas outside quotes and angle brackets.
pub fn split_commas(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// `;name=value` parameters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// Parses `;a=b;c;d="e f"` (the leading `;` optional).
    pub fn parse(s: &str) -> Params {
        let mut out = Vec::new();
        for part in split_outside_quotes(s, ';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) => out.push((k.trim().to_string(), Some(v.trim().to_string()))),
                None => out.push((part.to_string(), None)),
            }
        }
        Params(out)
    }

    /// The value of `name` (`Some("")` for a parameter without value).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Removes one level of double quotes.
pub fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// A `From`/`To`/`Contact` value: `"Name" <uri>;params` or `uri;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub uri: String,
    pub params: Params,
}

impl NameAddr {
    /// Parses one name-addr (not a comma list).
    pub fn parse(value: &str) -> Option<NameAddr> {
        let value = value.trim();
        // Skip a quoted display name.
        let mut rest = value;
        if rest.starts_with('"') {
            let mut escaped = false;
            let mut end = None;
            for (i, c) in rest.char_indices().skip(1) {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                }
            }
            rest = rest.get(end? + 1..)?.trim_start();
            if !rest.starts_with('<') {
                return None;
            }
        }
        if let Some(open) = rest.find('<') {
            let close = rest[open..].find('>')? + open;
            let uri = rest[open + 1..close].trim();
            if uri.is_empty() {
                return None;
            }
            return Some(NameAddr {
                uri: uri.to_string(),
                params: Params::parse(&rest[close + 1..]),
            });
        }
        let (uri, params) = rest.split_once(';').unwrap_or((rest, ""));
        if uri.is_empty() || uri.contains(' ') {
            return None;
        }
        Some(NameAddr {
            uri: uri.to_string(),
            params: Params::parse(params),
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").filter(|t| !t.is_empty())
    }
}

/// The parts of a `sip:`/`sips:` URI the B2BUA needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub user: Option<String>,
    pub host: String,
    pub params: Params,
}

impl SipUri {
    pub fn parse(uri: &str) -> Option<SipUri> {
        let lower = uri.get(..5)?.to_ascii_lowercase();
        let rest = if lower == "sips:" {
            &uri[5..]
        } else if lower.starts_with("sip:") {
            &uri[4..]
        } else {
            return None;
        };
        let rest = rest.split('?').next().unwrap_or("");
        let (addr, params) = rest.split_once(';').unwrap_or((rest, ""));
        let (user, hostport) = match addr.rsplit_once('@') {
            Some((u, h)) => (Some(u.split(':').next().unwrap_or(u)), h),
            None => (None, addr),
        };
        let host = if let Some(v6) = hostport.strip_prefix('[') {
            v6.split(']').next()?
        } else {
            hostport.split(':').next().unwrap_or("")
        };
        if host.is_empty() || user.is_some_and(str::is_empty) {
            return None;
        }
        Some(SipUri {
            user: user.map(percent_decode),
            host: host.to_ascii_lowercase(),
            params: Params::parse(params),
        })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `branch` of a `Via` value.
pub fn via_branch(via: &str) -> Option<&str> {
    let first = split_commas(via).into_iter().next()?;
    let (_, params) = first.split_once(';')?;
    for p in params.split(';') {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("branch") {
                return Some(v.trim());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addrs() {
        let a =
            NameAddr::parse("\"A, \\\"b\\\"\" <sip:alice@x.invalid;transport=ws>;tag=12").unwrap();
        assert_eq!(a.uri, "sip:alice@x.invalid;transport=ws");
        assert_eq!(a.tag(), Some("12"));
        let b = NameAddr::parse("sip:bob@h;expires=30").unwrap();
        assert_eq!(b.uri, "sip:bob@h");
        assert_eq!(b.params.get("expires"), Some("30"));
        let c = NameAddr::parse("<sip:x@y>;+sip.instance=\"<urn:uuid:a;b>\";reg-id=1").unwrap();
        assert_eq!(c.params.get("+sip.instance"), Some("\"<urn:uuid:a;b>\""));
        assert_eq!(c.params.get("reg-id"), Some("1"));
        assert!(NameAddr::parse("\"unterminated <sip:a@b>").is_none());
        assert!(NameAddr::parse("<>").is_none());
    }

    #[test]
    fn commas() {
        assert_eq!(
            split_commas("<sip:a@b;x=\"1,2\">, \"c,d\" <sip:c@d>,"),
            vec!["<sip:a@b;x=\"1,2\">", "\"c,d\" <sip:c@d>"]
        );
    }

    #[test]
    fn uris() {
        let u = SipUri::parse("sip:al%69ce:pw@[::1]:5060;transport=ws?x=y").unwrap();
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "::1");
        assert_eq!(u.params.get("transport"), Some("ws"));
        assert_eq!(
            SipUri::parse("sip:Example.Invalid").unwrap().host,
            "example.invalid"
        );
        assert!(SipUri::parse("tel:+123").is_none());
        assert!(SipUri::parse("sip:@h").is_none());
        assert!(SipUri::parse("sip:a%").is_some());
    }

    #[test]
    fn branches() {
        assert_eq!(
            via_branch("SIP/2.0/WSS h.invalid;rport;branch=z9hG4bKa, SIP/2.0/UDP x"),
            Some("z9hG4bKa")
        );
        assert_eq!(via_branch("SIP/2.0/WSS h"), None);
    }
}

//! What we change in the SDP str0m writes before it leaves the endpoint.

/// Replaces the `o=` line's user name (str0m writes `str0m-<version>`)
/// with `-`; every other line is kept as it is. Line endings are CRLF.
pub fn anonymize(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        match line.strip_prefix("o=") {
            Some(rest) => {
                let fields = rest.split_once(' ').map_or("", |(_, f)| f);
                out.push_str("o=- ");
                out.push_str(fields);
            }
            None => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    out
}

/// Drops every `a=candidate` line that is not a relay candidate (or not
/// UDP) from a remote description; returns it and the number dropped.
pub fn relay_candidates_only(sdp: &str) -> (String, u64) {
    let mut out = String::with_capacity(sdp.len());
    let mut dropped = 0;
    for line in sdp.lines() {
        if let Some(c) = line.strip_prefix("a=candidate:") {
            let udp = c
                .split_ascii_whitespace()
                .nth(2)
                .is_some_and(|p| p.eq_ignore_ascii_case("udp"));
            if !udp || !is_relay_candidate(line) {
                dropped += 1;
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    (out, dropped)
}

/// Whether a candidate line (with or without `a=`/`candidate:`) is a relay
/// candidate: its `typ` field is `relay`.
pub fn is_relay_candidate(candidate: &str) -> bool {
    let mut words = candidate.split_ascii_whitespace();
    while let Some(w) = words.next() {
        if w == "typ" {
            return words.next() == Some("relay");
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn o_line_user_becomes_dash() {
        let sdp = "v=0\r\no=str0m-0.25.0 5058682828002148772 2 IN IP4 0.0.0.0\r\ns=-\r\n";
        let out = anonymize(sdp);
        assert_eq!(
            out,
            "v=0\r\no=- 5058682828002148772 2 IN IP4 0.0.0.0\r\ns=-\r\n"
        );
        assert!(!out.contains("str0m"));
        assert_eq!(anonymize(&out), out, "idempotent");
    }

    #[test]
    fn remote_host_candidates_are_dropped() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=candidate:1 1 udp 2122260223 192.168.1.2 50000 typ host\r\n\
                   a=candidate:2 1 udp 16777215 127.0.0.1 50001 typ relay raddr 0.0.0.0 rport 0\r\n\
                   a=candidate:3 1 tcp 16777215 127.0.0.1 50002 typ relay tcptype passive\r\n\
                   a=candidate:4 1 udp 1686052607 203.0.113.9 50003 typ srflx raddr 0.0.0.0 rport 0\r\n";
        let (out, dropped) = relay_candidates_only(sdp);
        assert_eq!(dropped, 3);
        assert!(out.contains("50001 typ relay"));
        assert!(
            !out.contains("192.168.1.2") && !out.contains("203.0.113.9") && !out.contains("tcp")
        );
    }

    #[test]
    fn relay_candidates_are_recognised() {
        assert!(is_relay_candidate(
            "candidate:1 1 udp 16777215 127.0.0.1 50000 typ relay raddr 0.0.0.0 rport 0"
        ));
        assert!(!is_relay_candidate(
            "candidate:1 1 udp 2122260223 192.168.1.2 50000 typ host"
        ));
        assert!(!is_relay_candidate("candidate:1 1 udp 1 10.0.0.1 5 typ"));
        assert!(!is_relay_candidate(""));
    }
}

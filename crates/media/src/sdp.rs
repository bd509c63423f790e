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

/// The audio codecs we can carry that the first audio section of `sdp`
/// lists, in its order: `(payload type, codec)`. Payload types without an
/// `a=rtpmap` count by RFC 3551's static table (0 PCMU, 8 PCMA, 9 G722).
pub fn audio_codecs(sdp: &str) -> Vec<(u8, crate::AudioCodec)> {
    let mut order: Option<Vec<u8>> = None;
    let mut names: Vec<(u8, String)> = Vec::new();
    let mut in_first = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if order.is_some() {
                break;
            }
            in_first = m.starts_with("audio ");
            if in_first {
                order = Some(
                    m.split_ascii_whitespace()
                        .skip(3)
                        .filter_map(|p| p.parse().ok())
                        .collect(),
                );
            }
        } else if in_first {
            if let Some(r) = line.strip_prefix("a=rtpmap:") {
                let mut f = r.split_ascii_whitespace();
                let pt = f.next().and_then(|p| p.parse::<u8>().ok());
                let name = f.next().and_then(|n| n.split('/').next());
                if let (Some(pt), Some(name)) = (pt, name) {
                    names.push((pt, name.to_owned()));
                }
            }
        }
    }
    order
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pt| {
            let codec = match names.iter().find(|(p, _)| *p == pt) {
                Some((_, name)) => crate::AudioCodec::from_encoding(name),
                None if pt == 0 => Some(crate::AudioCodec::Pcmu),
                None if pt == 8 => Some(crate::AudioCodec::Pcma),
                None if pt == 9 => Some(crate::AudioCodec::G722),
                None => None,
            };
            codec.map(|c| (pt, c))
        })
        .collect()
}

/// `sdp` with its first audio section restricted to the payload types
/// `keep` (the `m=` line's list, and the `a=rtpmap`, `a=fmtp` and
/// `a=rtcp-fb` lines of the others dropped): what an answer may then
/// choose from.
pub fn restrict_audio(sdp: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut in_first = false;
    let mut seen_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            in_first = false;
            if !seen_audio && m.starts_with("audio ") {
                (in_first, seen_audio) = (true, true);
                let mut f = m.split_ascii_whitespace();
                let head: Vec<&str> = f.by_ref().take(3).collect();
                let pts: Vec<&str> = f
                    .filter(|p| p.parse::<u8>().is_ok_and(|p| keep.contains(&p)))
                    .collect();
                out.push_str("m=");
                out.push_str(&head.join(" "));
                for p in pts {
                    out.push(' ');
                    out.push_str(p);
                }
                out.push_str("\r\n");
                continue;
            }
        } else if in_first {
            let attr = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                .iter()
                .find_map(|a| line.strip_prefix(a));
            if let Some(rest) = attr {
                let pt = rest.split_ascii_whitespace().next().unwrap_or("");
                // `a=rtcp-fb:*` applies to all that are kept.
                if pt != "*" && !pt.parse::<u8>().is_ok_and(|p| keep.contains(&p)) {
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
        a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n\
        a=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\n\
        a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn audio_codecs_in_offer_order() {
        use crate::AudioCodec::*;
        assert_eq!(
            audio_codecs(CHROME),
            vec![(111, Opus), (9, G722), (0, Pcmu), (8, Pcma)]
        );
        // A phone's static payload types need no rtpmap.
        let phone = "m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(audio_codecs(phone), vec![(8, Pcma), (0, Pcmu)]);
        assert!(audio_codecs("m=video 9 RTP/AVP 96\r\n").is_empty());
        assert!(audio_codecs("m=audio x\r\n").is_empty());
    }

    #[test]
    fn restricting_keeps_one_codec_and_other_sections() {
        let out = restrict_audio(CHROME, &[0]);
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"), "{out}");
        assert!(out.contains("a=rtpmap:0 PCMU/8000\r\n"), "{out}");
        for gone in [
            "opus",
            "red/",
            "G722",
            "111/111",
            "transport-cc",
            "telephone-event",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"));
        assert_eq!(audio_codecs(&out), vec![(0, crate::AudioCodec::Pcmu)]);
        // The first audio section, wherever it is.
        let video_first =
            "m=video 9 RTP/AVP 96\r\nm=audio 1 RTP/AVP 0 8\r\na=rtpmap:8 PCMA/8000\r\n";
        let out = restrict_audio(video_first, &[8]);
        assert!(
            out.contains("m=audio 1 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"),
            "{out}"
        );
        assert_eq!(audio_codecs(&out), vec![(8, crate::AudioCodec::Pcma)]);
    }

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

//! The sanitizer's tests: the rules one by one, the issue-10 smuggling
//! forms, real SDPs and candidates captured from Chromium 156 and Firefox
//! ESR 153 on this project's machines (`examples/capture_sdp.rs`, files in
//! `tests/data/`; the machine's own addresses replaced with documentation
//! addresses), and property tests that throw generated smuggling attempts
//! at it. The IP-literal finder here is deliberately not the sanitizer's
//! (`might_hold_ip`): it parses every substring with the standard library.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use turn::policy::Cidr;

use crate::sanitize::{
    valid_mid, valid_ufrag, CandidateDrop, Report, Sanitizer, SdpError, KEPT_EXTMAPS,
};

macro_rules! data {
    ($name:literal) => {
        ($name, include_str!(concat!("../tests/data/", $name)))
    };
}

/// Every captured SDP.
const SDPS: &[(&str, &str)] = &[
    data!("chromium-offer.sdp"),
    data!("chromium-answer.sdp"),
    data!("chromium-mdns-offer.sdp"),
    data!("chromium-relay-offer.sdp"),
    data!("chromium-relay-answer.sdp"),
    data!("chromium-relayonly-offer.sdp"),
    data!("firefox-offer.sdp"),
    data!("firefox-answer.sdp"),
    data!("firefox-mdns-offer.sdp"),
    data!("firefox-relay-offer.sdp"),
    data!("firefox-relay-answer.sdp"),
    data!("firefox-relayonly-offer.sdp"),
];

/// Every captured list of trickled candidates (one per line, `null` for the
/// end of candidates).
const CANDIDATES: &[(&str, &str)] = &[
    data!("chromium-offer-candidates.txt"),
    data!("chromium-answer-candidates.txt"),
    data!("chromium-mdns-offer-candidates.txt"),
    data!("chromium-relay-offer-candidates.txt"),
    data!("chromium-relay-answer-candidates.txt"),
    data!("chromium-relayonly-offer-candidates.txt"),
    data!("firefox-offer-candidates.txt"),
    data!("firefox-answer-candidates.txt"),
    data!("firefox-mdns-offer-candidates.txt"),
    data!("firefox-relay-offer-candidates.txt"),
    data!("firefox-relay-answer-candidates.txt"),
    data!("firefox-relayonly-offer-candidates.txt"),
];

/// The relay network of the generated tests (the captures' relay is
/// 127.0.0.1, included too).
fn relays() -> Vec<Cidr> {
    ["203.0.113.0/24", "2001:db8:5::/48", "127.0.0.1/32"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}

fn allowed(ip: IpAddr) -> bool {
    ip.is_unspecified() || relays().iter().any(|c| c.contains(ip))
}

/// Sanitizes with [`relays`].
fn sdp(text: &str) -> Result<String, SdpError> {
    Sanitizer::new(&relays()).sdp(text).map(|s| s.sdp)
}

fn cand(text: &str) -> Result<String, CandidateDrop> {
    Sanitizer::new(&relays()).candidate(text)
}

/// Every IP literal written anywhere in `text`, also inside longer tokens:
/// each run of `[0-9A-Fa-f.:]` is tried at every start and end (IPv4, IPv6
/// in every textual form the standard library reads, which includes the
/// address part of zoned, bracketed, `addr:port` and `addr/prefix` forms).
fn ip_literals(text: &str) -> Vec<IpAddr> {
    ip_spans(text).into_iter().map(|(_, _, ip)| ip).collect()
}

/// [`ip_literals`] with their byte ranges.
fn ip_spans(text: &str) -> Vec<(usize, usize, IpAddr)> {
    let b = text.as_bytes();
    let in_run = |c: u8| c.is_ascii_hexdigit() || c == b'.' || c == b':';
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !in_run(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && in_run(b[i]) {
            i += 1;
        }
        for s in start..i {
            for e in (s + 2)..=i.min(s + 45) {
                if let Ok(ip) = text[s..e].parse::<IpAddr>() {
                    found.push((s, e, ip));
                }
            }
        }
    }
    found
}

/// The IP literals of `text` that are not allowed and not part of an
/// allowed one (`3.0.113.7` inside the relay's `203.0.113.7` says nothing
/// but the relay's address).
fn foreign_literals(text: &str) -> Vec<IpAddr> {
    let spans = ip_spans(text);
    let covered = |s: usize, e: usize| {
        spans
            .iter()
            .any(|(s2, e2, ip)| *s2 <= s && e <= *e2 && allowed(*ip))
    };
    spans
        .iter()
        .filter(|(s, e, ip)| !allowed(*ip) && !covered(*s, *e))
        .map(|(_, _, ip)| *ip)
        .collect()
}

/// `a=fingerprint:<hash> XX:XX:…` (its hex looks like IPv6).
fn is_fingerprint_line(line: &str) -> bool {
    line.strip_prefix("a=fingerprint:")
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(h, hex)| {
            h.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && hex
                    .split(':')
                    .all(|x| x.len() == 2 && x.bytes().all(|c| c.is_ascii_hexdigit()))
        })
}

/// The goal of the sanitizer on what a member receives: no IP literal but
/// the relays' and 0.0.0.0/::, every candidate a relay one with the relay's
/// address, `raddr 0.0.0.0 rport 0`.
fn assert_clean(what: &str, out: &str) {
    for line in out.split("\r\n") {
        assert!(
            line.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "{what}: unprintable in {line:?}"
        );
        if is_fingerprint_line(line) {
            continue;
        }
        if let Some(ip) = foreign_literals(line).first() {
            panic!("{what}: foreign address {ip} in {line:?}");
        }
        let l = line.strip_prefix("a=").unwrap_or(line);
        if let Some(c) = l.strip_prefix("candidate:") {
            let t: Vec<&str> = c.split(' ').collect();
            assert_eq!(t.get(6..8), Some(&["typ", "relay"][..]), "{what}: {line}");
            let ip: IpAddr = t[4].parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            assert!(!ip.is_unspecified() && allowed(ip), "{what}: {line}");
            assert_eq!(t.get(8..12), Some(&["raddr", "0.0.0.0", "rport", "0"][..]));
        }
    }
}

fn lines(sdp: &str) -> Vec<&str> {
    sdp.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect()
}

fn cand_type(line: &str) -> Option<String> {
    let t: Vec<&str> = line.split(' ').collect();
    t.iter()
        .position(|x| x.eq_ignore_ascii_case("typ"))
        .and_then(|i| t.get(i + 1))
        .map(|s| s.to_ascii_lowercase())
}

fn is_candidate(line: &str) -> bool {
    line.starts_with("a=candidate:") || line.starts_with("candidate:")
}

fn kept_uri(line: &str) -> bool {
    line.split(' ')
        .nth(1)
        .is_some_and(|u| KEPT_EXTMAPS.iter().any(|(k, _)| *k == u))
}

// ---- the rules ----

const RELAY: &str = "candidate:4281032442 1 udp 58597631 203.0.113.5 49461 typ relay raddr 192.0.2.2 rport 59934 generation 0 network-id 1";

#[test]
fn relay_candidate_is_rebuilt() {
    assert_eq!(
        cand(RELAY).as_deref(),
        Ok("candidate:4281032442 1 udp 58597631 203.0.113.5 49461 typ relay raddr 0.0.0.0 rport 0 generation 0 network-id 1")
    );
    // raddr is added when absent; unknown extensions go; known ones stay in
    // order, once; bad values go.
    assert_eq!(
        cand("a=candidate:a+/B 2 TCP 5 2001:db8:5::9 9 typ relay tcptype passive x-ext 1 generation 3 ufrag ab+/ generation 4 network-cost 9x network-id 2").as_deref(),
        Ok("a=candidate:a+/B 2 TCP 5 2001:db8:5::9 9 typ relay raddr 0.0.0.0 rport 0 tcptype passive generation 3 ufrag ab+/ network-id 2")
    );
    assert_eq!(cand("").as_deref(), Ok(""));
}

#[test]
fn non_relay_and_malformed_candidates_are_dropped() {
    use CandidateDrop::*;
    for (c, why) in [
        (
            "candidate:1 1 udp 2122194687 192.0.2.2 59934 typ host generation 0",
            NotRelay,
        ),
        (
            "candidate:1 1 UDP 1686052607 198.51.100.9 40000 typ srflx raddr 192.0.2.2 rport 59934",
            NotRelay,
        ),
        (
            "candidate:1 1 udp 1845501695 198.51.100.9 40000 typ prflx raddr 0.0.0.0 rport 0",
            NotRelay,
        ),
        (
            "candidate:0 1 UDP 2122187007 2fb61f6e-495c.local 37244 typ host",
            NotRelay,
        ),
        (
            "candidate:0 1 UDP 2122187007 2fb61f6e.LOCAL 37244 typ relay",
            ForeignRelay,
        ),
        (
            "candidate:0 1 UDP 2122187007 relay.example 37244 typ relay",
            ForeignRelay,
        ),
        (
            "candidate:0 1 UDP 2122187007 203.0.113.5 37244 typ relay raddr",
            Malformed,
        ),
        (
            "candidate:0 1 UDP 2122187007 203.0.113.5 37244 TYP",
            Malformed,
        ),
        (
            "candidate:0 1 sctp 2122187007 203.0.113.5 37244 typ relay",
            Malformed,
        ),
        (
            "candidate:0 x udp 2122187007 203.0.113.5 37244 typ relay",
            Malformed,
        ),
        (
            "candidate:0 1 udp 4294967296 203.0.113.5 37244 typ relay",
            Malformed,
        ),
        ("candidate:0 1 udp 1 203.0.113.5 65536 typ relay", Malformed),
        ("candidate:0  1 udp 1 203.0.113.5 5 typ relay", Malformed),
        ("candidate:0\t1 udp 1 203.0.113.5 5 typ relay", Malformed),
        ("candidate:0 1 udp 1 203.0.113.5 5 typ relay\r\n", Malformed),
        (
            "candidate:1.2.3.4 1 udp 1 203.0.113.5 5 typ relay",
            Malformed,
        ),
        ("candidate:x:y 1 udp 1 203.0.113.5 5 typ relay", Malformed),
        ("candidate:", Malformed),
        ("garbage", Malformed),
        (
            "candidate:0 1 udp 1 203.0.113.5 5 typ relay raddr 1.2.3.4\u{0} rport 5",
            Malformed,
        ),
    ] {
        assert_eq!(cand(c), Err(why), "{c}");
    }
    assert_eq!(
        cand(&format!(
            "candidate:{} 1 udp 1 203.0.113.5 5 typ relay",
            "a".repeat(33)
        )),
        Err(Malformed)
    );
}

/// Every form issue 10 lists.
#[test]
fn issue_10_smuggling_forms() {
    use CandidateDrop::*;
    let base = "candidate:1 1 udp 5 203.0.113.5 9 typ relay";
    for addr in [
        "10.1.2.3",
        "2001:db8::77",
        "fe80::77%eth0",
        "[2001:db8::77]",
        "::ffff:10.1.2.3",
        "0.0.0.0",
        "::",
    ] {
        assert_eq!(
            cand(&format!("candidate:1 1 udp 5 {addr} 9 typ relay")),
            Err(ForeignRelay),
            "{addr}"
        );
    }
    for ext in [
        "generation 10.1.2.3:6000",
        "network-id [2001:db8::77]:6000",
        "network-cost 10.1.2.3/24",
        "ufrag 10.1.2.3",
        "10.1.2.3 1",
        "2001:db8::77 1",
        "x-caller 10.1.2.3",
        "tcptype 10.1.2.3",
        "raddr 10.1.2.3",
    ] {
        let out = cand(&format!("{base} {ext}")).unwrap();
        assert_eq!(out, format!("{base} raddr 0.0.0.0 rport 0"), "{ext}");
    }
    // A CRLF-embedded host candidate folded into a relay candidate.
    assert_eq!(
        cand(&format!(
            "{base} generation 0\r\na=candidate:2 1 udp 9 10.1.2.3 9 typ host"
        )),
        Err(Malformed)
    );
    let folded = format!(
        "v=0\r\na=mid:0\r\na={base} generation 0\r\na=candidate:2 1 udp 9 10.1.2.3 9 typ host\r\n"
    );
    let out = sdp(&folded).unwrap();
    assert!(!out.contains("10.1.2.3"), "{out}");
    assert!(matches!(
        sdp("v=0\r\na=candidate:1 1 udp 5 203.0.113.5 9 typ relay\r\n10.1.2.3 9 typ host\r\n"),
        Err(SdpError::NotSdp(3))
    ));
    assert!(matches!(
        sdp("v=0\r\na=candidate:1 1 udp 5 203.0.113.5 9 typ relay\rgeneration 10.1.2.3\r\n"),
        Err(SdpError::Character(2))
    ));
    // Unknown attributes with an address go, without one they stay.
    let out = sdp("v=0\r\na=x-caller:10.1.2.3\r\na=x-ok:hello\r\na=x6:[2001:db8::77]:6000\r\na=x7:fe80::77%eth0\r\na=x8:1.2.3.4/24\r\n").unwrap();
    assert_eq!(out, "v=0\r\na=x-ok:hello\r\n");
    // Lines behind invisible characters: the whole description is refused.
    for bad in [
        "\u{200b}", "\u{feff}", "\u{202e}", "\u{2066}", "\u{00ad}", "\u{0}", "\t", "\u{7f}",
        "\u{85}", "é",
    ] {
        let text = format!("v=0\r\n{bad}a=candidate:2 1 udp 9 10.1.2.3 9 typ host\r\na=mid:0\r\n");
        assert!(matches!(sdp(&text), Err(SdpError::Character(2))), "{bad:?}");
        let text = format!("v=0\r\na=x:{bad}\r\n");
        assert!(matches!(sdp(&text), Err(SdpError::Character(2))), "{bad:?}");
    }
    // sdpMid and usernameFragment.
    for mid in ["0", "audio", "video_1", "a-b"] {
        assert!(valid_mid(mid), "{mid}");
    }
    for mid in ["", "1.2.3.4", "::1", "a b", "x:y", &"a".repeat(33), "é"] {
        assert!(!valid_mid(mid), "{mid}");
    }
    assert!(valid_ufrag("ab+/") && !valid_ufrag("a.b") && !valid_ufrag(""));
    assert!(matches!(
        sdp("v=0\r\na=mid:10.1.2.3\r\n"),
        Err(SdpError::Malformed { line: 2, .. })
    ));
}

#[test]
fn sdp_lines() {
    let text = "v=0\r\no=str0m-0.6 1 2 IN IP4 127.0.0.1\r\ns=hello 10.0.0.1\r\ni=info\r\nu=http://x\r\nt=0 0\r\nb=AS:30\r\nb=X:1.2.3.4\r\nc=IN IP4 192.0.2.2\r\nc=IN IP6 2001:db8::2\r\na=rtcp:9 IN IP4 192.0.2.2\r\na=rtcp:9\r\na=rtcp:x 1.2.3.4\r\na=remote-candidates:1 192.0.2.2 5\r\na=end-of-candidates\r\n";
    let s = Sanitizer::new(&relays()).sdp(text).unwrap();
    assert_eq!(
        s.sdp,
        "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nb=AS:30\r\nc=IN IP4 0.0.0.0\r\nc=IN IP6 ::\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp:9\r\na=end-of-candidates\r\n"
    );
    assert_eq!(
        s.report,
        Report {
            candidates_dropped: 0,
            foreign_relays: 0,
            lines_removed: 5
        }
    );
    // LF input, CRLF output; empty lines skipped; a missing last EOL added.
    assert_eq!(
        sdp("v=0\nc=IN IP4 1.2.3.4\n\n"),
        Ok("v=0\r\nc=IN IP4 0.0.0.0\r\n".into())
    );
    assert_eq!(sdp("v=0"), Ok("v=0\r\n".into()));
    assert_eq!(sdp(""), Ok(String::new()));
    for bad in [
        "v=1\r\n",
        "x\r\n",
        "V=0\r\n",
        "=0\r\n",
        "v=0\r\no=- x 2 IN IP4 0.0.0.0\r\n",
        "v=0\r\nt=0\r\n",
        "v=0\r\nm=audio 1.2.3.4 RTP/AVP 0\r\n",
    ] {
        assert!(sdp(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn header_extensions_and_opus() {
    let text = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9\r\n\
        a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
        a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level\r\n\
        a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time\r\n\
        a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
        a=extmap:5 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=extmap:6/sendrecv urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=extmap:300 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=extmap:7/bogus urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1;cbr=0;usedtx=1;x=1.2.3.4;foo=bar\r\n\
        a=rtpmap:63 red/48000/2\r\n\
        a=fmtp:63 111/111\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 109\r\n\
        a=rtpmap:109 OPUS/48000/2\r\n\
        a=rtcp-fb:109 transport-cc\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=rtpmap:111 VP8/90000\r\n\
        a=fmtp:111 x=1\r\n";
    let out = sdp(text).unwrap();
    assert_eq!(
        out,
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9\r\n\
        a=extmap:5 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=extmap:6/sendrecv urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1;cbr=1;usedtx=0\r\n\
        a=rtpmap:63 red/48000/2\r\n\
        a=fmtp:63 111/111\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 109\r\n\
        a=rtpmap:109 OPUS/48000/2\r\n\
        a=fmtp:109 cbr=1;usedtx=0\r\n\
        a=rtcp-fb:109 transport-cc\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=rtpmap:111 VP8/90000\r\n\
        a=fmtp:111 x=1\r\n"
    );
    assert_eq!(sdp(&out).as_deref(), Ok(out.as_str()));
}

// ---- captured browser SDPs ----

#[test]
fn captured_sdps() {
    for (name, text) in SDPS {
        let s = Sanitizer::new(&relays())
            .sdp(text)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = &s.sdp;
        assert_clean(name, out);
        assert_eq!(
            sdp(out).as_deref(),
            Ok(out.as_str()),
            "{name}: not idempotent"
        );
        let (ins, outs) = (lines(text), lines(out));
        // Every m= section and the DTLS/ICE credentials survive in order.
        for prefix in [
            "m=",
            "a=fingerprint:",
            "a=ice-ufrag:",
            "a=ice-pwd:",
            "a=mid:",
            "a=setup:",
            "a=ssrc:",
            "a=msid:",
            "a=rtpmap:",
        ] {
            let a: Vec<_> = ins.iter().filter(|l| l.starts_with(prefix)).collect();
            let b: Vec<_> = outs.iter().filter(|l| l.starts_with(prefix)).collect();
            assert_eq!(a, b, "{name}: {prefix}");
        }
        // Relay candidates survive (rebuilt), the others go.
        let relay_in: Vec<String> = ins
            .iter()
            .filter(|l| is_candidate(l) && cand_type(l).as_deref() == Some("relay"))
            .filter_map(|l| cand(l).ok())
            .collect();
        let cand_out: Vec<String> = outs
            .iter()
            .filter(|l| is_candidate(l))
            .map(|l| (*l).to_owned())
            .collect();
        assert_eq!(relay_in, cand_out, "{name}");
        // Audio levels, clocks and timing are gone; what is kept stays.
        for gone in [
            "ssrc-audio-level",
            "csrc-audio-level",
            "abs-send-time",
            "abs-capture-time",
            "toffset",
            "video-timing",
            "playout-delay",
            "video-content-type",
            "video-orientation",
            "color-space",
        ] {
            assert!(!out.contains(gone), "{name}: {gone}");
        }
        let kept_in: Vec<_> = ins
            .iter()
            .filter(|l| l.starts_with("a=extmap:") && kept_uri(l))
            .collect();
        let kept_out: Vec<_> = outs.iter().filter(|l| l.starts_with("a=extmap:")).collect();
        assert_eq!(kept_in, kept_out, "{name}");
        assert!(
            out.contains("transport-wide-cc") && out.contains("sdes:mid"),
            "{name}"
        );
        // Every Opus payload type has cbr=1;usedtx=0.
        let opus: Vec<&str> = outs
            .iter()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter(|v| v.to_ascii_lowercase().contains(" opus/"))
            .filter_map(|v| v.split(' ').next())
            .collect();
        assert!(!opus.is_empty(), "{name}");
        for pt in opus {
            let f = outs
                .iter()
                .find(|l| l.starts_with(&format!("a=fmtp:{pt} ")))
                .unwrap_or_else(|| panic!("{name}: no fmtp for {pt}"));
            assert!(
                f.ends_with(";cbr=1;usedtx=0") && f.contains("useinbandfec=1"),
                "{name}: {f}"
            );
        }
        // Nothing else is removed: the removed lines are the non-relay
        // candidates, the dropped extmaps and the o= user name.
        let removed_ext = ins
            .iter()
            .filter(|l| l.starts_with("a=extmap:") && !kept_uri(l))
            .count();
        let non_relay = ins
            .iter()
            .filter(|l| is_candidate(l) && cand_type(l).as_deref() != Some("relay"))
            .count();
        assert_eq!(ins.len() - outs.len(), removed_ext + non_relay, "{name}");
        assert_eq!(s.report.lines_removed as usize, removed_ext, "{name}");
        assert_eq!(s.report.candidates_dropped as usize, non_relay, "{name}");
        assert_eq!(s.report.foreign_relays, 0, "{name}");
        let changed: Vec<_> = ins
            .iter()
            .filter(|l| !outs.contains(l))
            .filter(|l| {
                !is_candidate(l) && !l.starts_with("a=extmap:") && !l.starts_with("a=fmtp:")
            })
            .collect();
        assert!(
            changed
                .iter()
                .all(|l| l.starts_with("o=") || l.starts_with("c=") || l.starts_with("a=rtcp:")),
            "{name}: {changed:?}"
        );
    }
}

#[test]
fn captured_relay_sdps_keep_relay_addresses() {
    for (name, text) in SDPS.iter().filter(|(n, _)| n.contains("relay")) {
        let out = sdp(text).unwrap();
        let relays: Vec<&str> = lines(&out)
            .into_iter()
            .filter(|l| is_candidate(l))
            .collect();
        assert!(!relays.is_empty(), "{name}: no relay candidate left");
        for r in relays {
            assert_eq!(r.split(' ').nth(4), Some("127.0.0.1"), "{name}: {r}");
        }
        // A relay elsewhere: every relay candidate is dropped and counted.
        let only: Vec<Cidr> = vec!["198.51.100.0/24".parse().unwrap_or_else(|e| panic!("{e}"))];
        let s = Sanitizer::new(&only).sdp(text).unwrap();
        assert!(!s.sdp.contains("a=candidate:"), "{name}");
        assert!(s.report.foreign_relays > 0, "{name}");
    }
    let chromium = sdp(SDPS[3].1).unwrap();
    assert!(chromium.contains("typ relay raddr 0.0.0.0 rport 0 generation 0 network-id 1"));
    assert!(SDPS[3].1.contains("raddr 192.0.2.2"));
    assert!(!chromium.contains("192.0.2.2"));
}

#[test]
fn captured_candidates() {
    let mut relays = 0;
    let mut dropped = 0;
    for (name, text) in CANDIDATES {
        for line in text.lines().filter(|l| !l.is_empty() && *l != "null") {
            let out = cand(line);
            if cand_type(line).as_deref() == Some("relay") {
                relays += 1;
                let out = out.unwrap_or_else(|e| panic!("{name}: relay dropped ({e}): {line}"));
                assert!(out.contains(" raddr 0.0.0.0 rport 0"), "{name}: {out}");
                assert_eq!(out.split(' ').nth(4), line.split(' ').nth(4));
                assert_eq!(cand(&out).as_deref(), Ok(out.as_str()));
                assert_clean(name, &out);
            } else {
                dropped += 1;
                assert_eq!(out, Err(CandidateDrop::NotRelay), "{name}: {line}");
            }
        }
    }
    assert!(
        relays >= 10 && dropped >= 50,
        "{relays} relays, {dropped} dropped"
    );
}

#[test]
fn finder_finds_every_form() {
    for (text, want) in [
        ("x10.1.2.3y", "10.1.2.3"),
        ("a=x:[2001:db8::77]:6000", "2001:db8::77"),
        ("fe80::77%eth0", "fe80::77"),
        ("10.1.2.3/24", "10.1.2.3"),
        ("10.1.2.3:6000", "10.1.2.3"),
        ("::ffff:10.1.2.3", "::ffff:10.1.2.3"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0077", "2001:db8::77"),
        ("cname:2001:db8::77", "2001:db8::77"),
    ] {
        let want: IpAddr = want.parse().unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert!(ip_literals(text).contains(&want), "{text}");
    }
    assert!(
        ip_literals("a=rtpmap:111 opus/48000/2 urn:ietf:params:rtp-hdrext:sdes:mid").is_empty()
    );
}

// ---- property tests ----

/// An address outside the relay networks, in one of many textual forms.
fn arb_addr() -> impl Strategy<Value = String> {
    let v4 = any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string());
    let v6 = any::<[u16; 8]>().prop_map(|s| Ipv6Addr::from(s).to_string());
    let v6_full = any::<[u16; 8]>().prop_map(|s| {
        s.iter()
            .map(|x| format!("{x:04X}"))
            .collect::<Vec<_>>()
            .join(":")
    });
    prop_oneof![
        v4.clone(),
        v6.clone(),
        v6_full,
        (v6.clone(), "[a-z]{1,5}[0-9]").prop_map(|(a, z)| format!("{a}%{z}")),
        (v6.clone(), any::<u16>()).prop_map(|(a, p)| format!("[{a}]:{p}")),
        (v4.clone(), any::<u16>()).prop_map(|(a, p)| format!("{a}:{p}")),
        (v4.clone(), 0u8..33).prop_map(|(a, p)| format!("{a}/{p}")),
        (v6, 0u8..129).prop_map(|(a, p)| format!("{a}/{p}")),
        v4.clone().prop_map(|a| format!("::ffff:{a}")),
        ("[a-z]{0,3}", v4, "[a-z]{0,3}").prop_map(|(x, a, y)| format!("{x}{a}{y}")),
        Just("10.1.2.3".to_owned()),
        Just("fe80::77%eth0".to_owned()),
    ]
}

/// One line that tries to carry an address (`{}` is the address).
fn arb_smuggle() -> impl Strategy<Value = String> {
    let templates = prop_oneof![
        Just("a=candidate:1 1 udp 5 {} 9 typ relay"),
        Just("a=candidate:1 1 udp 5 {} 9 typ host"),
        Just("a=candidate:1 1 udp 5 203.0.113.7 9 typ relay raddr {} rport 1"),
        Just("a=candidate:1 1 udp 5 203.0.113.7 9 typ relay generation {}"),
        Just("a=candidate:1 1 udp 5 203.0.113.7 9 typ relay network-id {}"),
        Just("a=candidate:1 1 udp 5 203.0.113.7 9 typ relay ufrag {}"),
        Just("a=candidate:1 1 udp 5 203.0.113.7 9 typ relay {} 1"),
        Just("a=candidate:1 1 udp 5 203.0.113.7 9 typ relay x-{} {}"),
        Just("a=candidate:{} 1 udp 5 203.0.113.7 9 typ relay"),
        Just("a=candidate:1 1 udp 5 203.0.113.7 9 typ relay generation 0\r\na=candidate:2 1 udp 9 {} 9 typ host"),
        Just("a=candidate:1 1 udp 5 203.0.113.7 9 typ relay generation 0\r\n{} 9 typ host"),
        Just("a=candidate:1 1 udp 5 203.0.113.7 9 typ relay generation 0\r{}"),
        Just("a=x-caller:{}"),
        Just("a={}"),
        Just("a=fmtp:111 minptime=10;x={}"),
        Just("a=fmtp:111 {}"),
        Just("a=fmtp:96 apt={}"),
        Just("a=ssrc:1234 cname:{}"),
        Just("a=ssrc:1234 msid:{} x"),
        Just("a=msid:{} x"),
        Just("a=extmap:9 http://{}/ext"),
        Just("a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid {}"),
        Just("a=mid:{}"),
        Just("a=group:BUNDLE 0 {}"),
        Just("a=rtcp:9 IN IP4 {}"),
        Just("a=ice-ufrag:{}"),
        Just("a=ice-options:{}"),
        Just("a=rtpmap:96 {}/90000"),
        Just("a=fingerprint:sha-256 {}"),
        Just("a=remote-candidates:1 {} 9"),
        Just("o={} 1 2 IN IP4 {}"),
        Just("s={}"),
        Just("i={}"),
        Just("b=AS:{}"),
        Just("c=IN IP4 {}"),
        Just("m=audio {} UDP/TLS/RTP/SAVPF 111"),
        Just("\u{200b}a=candidate:2 1 udp 9 {} 9 typ host"),
        Just("a=x:\u{feff}{}"),
        Just("a=candidate:1\t1 udp 5 {} 9 typ relay"),
    ];
    (templates, arb_addr()).prop_map(|(t, a)| t.replace("{}", &a))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn smuggled_lines_leak_no_address(
        base in 0..SDPS.len(),
        inserts in proptest::collection::vec((any::<usize>(), arb_smuggle()), 1..8),
        lf_only in any::<bool>(),
    ) {
        let (name, text) = SDPS[base];
        let mut l: Vec<String> = lines(text).into_iter().map(str::to_owned).collect();
        for (i, line) in &inserts {
            let at = 1 + i % l.len();
            l.insert(at, line.clone());
        }
        let eol = if lf_only { "\n" } else { "\r\n" };
        let input = l.join(eol) + eol;
        if let Ok(out) = sdp(&input) {
            assert_clean(name, &out);
            prop_assert_eq!(sdp(&out), Ok(out.clone()));
        }
    }

    #[test]
    fn addresses_in_any_field_of_real_sdps(
        base in 0..SDPS.len(),
        edits in proptest::collection::vec(
            (any::<usize>(), any::<usize>(), any::<usize>(), arb_addr(), 0u8..3),
            1..6,
        ),
    ) {
        // Any token of any line replaced by an address, an address put
        // inside a token, or appended to a line.
        let (name, text) = SDPS[base];
        let mut l: Vec<String> = lines(text).into_iter().map(str::to_owned).collect();
        for (i, j, k, addr, mode) in &edits {
            let at = i % l.len();
            let line = &mut l[at];
            let mut t: Vec<String> = line.split(' ').map(str::to_owned).collect();
            let n = t.len();
            let tok = &mut t[j % n];
            match mode {
                0 => *tok = addr.clone(),
                1 => tok.insert_str(k % (tok.len() + 1), addr),
                _ => t.push(addr.clone()),
            }
            *line = t.join(" ");
        }
        let input = l.join("\r\n") + "\r\n";
        if let Ok(out) = sdp(&input) {
            assert_clean(name, &out);
            prop_assert_eq!(sdp(&out), Ok(out.clone()));
        }
    }

    #[test]
    fn smuggled_candidates_leak_no_address(line in arb_smuggle(), a in any::<bool>()) {
        let c = line.strip_prefix("a=").unwrap_or(&line);
        let c = if a { line.as_str() } else { c };
        if let Ok(out) = cand(c) {
            assert_clean("candidate", &out);
            prop_assert_eq!(cand(&out), Ok(out.clone()));
        }
    }

    #[test]
    fn random_text_leaks_no_address(text in "(?s)([a-z]=[ -~]{0,40}\r?\n){0,12}", addr in arb_addr(), at in any::<usize>()) {
        // An address anywhere in random SDP-ish text.
        let mut text = text;
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &addr);
        if let Ok(out) = sdp(&text) {
            assert_clean("random", &out);
            prop_assert_eq!(sdp(&out), Ok(out.clone()));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
        if let Ok(out) = sdp(&text) {
            prop_assert_eq!(sdp(&out), Ok(out.clone()));
        }
        let _ = cand(&text);
    }
}

//! The sanitizer on real SDPs and candidates captured from Chromium 156 and
//! Firefox ESR 153 on this project's machines (`examples/capture_sdp.rs`,
//! files in `tests/data/`; the machine's own addresses replaced with
//! documentation addresses), plus a property test on random mutations.

use std::collections::HashSet;
use std::net::IpAddr;

use proptest::prelude::*;

use crate::sanitize::{sanitize_candidate, sanitize_sdp};

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

fn lines(sdp: &str) -> Vec<&str> {
    sdp.split("\r\n")
        .flat_map(|l| l.split('\n'))
        .filter(|l| !l.is_empty())
        .collect()
}

/// The candidate type of a candidate line (`typ X`).
fn cand_type(line: &str) -> Option<String> {
    let t: Vec<&str> = line.split_ascii_whitespace().collect();
    t.iter()
        .position(|x| x.eq_ignore_ascii_case("typ"))
        .and_then(|i| t.get(i + 1))
        .map(|s| s.to_ascii_lowercase())
}

fn is_candidate(line: &str) -> bool {
    let l = line.trim_start().to_ascii_lowercase();
    l.starts_with("a=candidate:") || l.starts_with("candidate:")
}

/// The checks every sanitized SDP must pass; `input` is what went in.
fn check_sanitized(name: &str, input: &str, out: &str) {
    for line in lines(out) {
        if is_candidate(line) {
            assert_eq!(cand_type(line).as_deref(), Some("relay"), "{name}: {line}");
            assert!(
                !line.to_ascii_lowercase().contains(".local"),
                "{name}: {line}"
            );
            let t: Vec<&str> = line.split_ascii_whitespace().collect();
            for (i, tok) in t.iter().enumerate() {
                if tok.eq_ignore_ascii_case("raddr") {
                    assert_eq!(t.get(i + 1), Some(&"0.0.0.0"), "{name}: {line}");
                }
                if tok.eq_ignore_ascii_case("rport") {
                    assert_eq!(t.get(i + 1), Some(&"0"), "{name}: {line}");
                }
            }
        }
        if line.starts_with("c=") {
            assert!(
                line == "c=IN IP4 0.0.0.0" || line == "c=IN IP6 ::",
                "{name}: {line}"
            );
        }
        if let Some(rest) = line.strip_prefix("a=rtcp:") {
            let addr = rest.split_ascii_whitespace().nth(3);
            assert!(
                matches!(addr, None | Some("0.0.0.0") | Some("::")),
                "{name}: {line}"
            );
        }
    }
    assert_no_foreign_ip(name, out);
    assert_eq!(sanitize_sdp(out), out, "{name}: not idempotent");
    let _ = input;
}

/// Every IP literal in `text` is 0.0.0.0, :: or a relay candidate's address.
fn assert_no_foreign_ip(name: &str, text: &str) {
    let mut relay: HashSet<IpAddr> = HashSet::new();
    for line in lines(text) {
        if is_candidate(line) && cand_type(line).as_deref() == Some("relay") {
            if let Some(ip) = line
                .split_ascii_whitespace()
                .nth(4)
                .and_then(|a| a.parse().ok())
            {
                relay.insert(ip);
            }
        }
    }
    for token in text.split(|c: char| c.is_ascii_whitespace() || c == '/') {
        // `a=rtcp:9`-like prefixes are not addresses; strip `x=` prefixes.
        let token = token.split_once('=').map_or(token, |(_, v)| v);
        if let Ok(ip) = token.parse::<IpAddr>() {
            assert!(
                ip.is_unspecified() || relay.contains(&ip),
                "{name}: foreign address {ip} in output"
            );
        }
    }
}

#[test]
fn captured_sdps() {
    for (name, sdp) in SDPS {
        let out = sanitize_sdp(sdp);
        check_sanitized(name, sdp, &out);
        let (ins, outs) = (lines(sdp), lines(&out));
        // Line endings: browsers send CRLF, and so do we.
        assert!(sdp.contains("\r\n") && out.ends_with("\r\n"), "{name}");
        assert!(!out.replace("\r\n", "").contains('\n'), "{name}");
        // Every m= section and the DTLS/ICE credentials survive in order.
        for prefix in [
            "m=",
            "a=fingerprint:",
            "a=ice-ufrag:",
            "a=ice-pwd:",
            "a=mid:",
            "a=setup:",
        ] {
            let a: Vec<_> = ins.iter().filter(|l| l.starts_with(prefix)).collect();
            let b: Vec<_> = outs.iter().filter(|l| l.starts_with(prefix)).collect();
            assert_eq!(a, b, "{name}: {prefix}");
            if prefix != "a=fingerprint:" || !name.contains("answer") {
                assert!(!a.is_empty() || prefix == "a=setup:", "{name}: no {prefix}");
            }
        }
        // Every relay candidate survives (with raddr cleared); others go.
        let relay_in: Vec<String> = ins
            .iter()
            .filter(|l| is_candidate(l) && cand_type(l).as_deref() == Some("relay"))
            .filter_map(|l| sanitize_candidate(l))
            .collect();
        let cand_out: Vec<String> = outs
            .iter()
            .filter(|l| is_candidate(l))
            .map(|l| (*l).to_owned())
            .collect();
        assert_eq!(relay_in, cand_out, "{name}");
        // Nothing else is removed.
        let removed = ins.len() - outs.len();
        let non_relay = ins
            .iter()
            .filter(|l| is_candidate(l) && cand_type(l).as_deref() != Some("relay"))
            .count();
        assert_eq!(removed, non_relay, "{name}");
    }
}

#[test]
fn captured_relay_sdps_keep_relay_addresses() {
    for (name, sdp) in SDPS.iter().filter(|(n, _)| n.contains("relay")) {
        let out = sanitize_sdp(sdp);
        let relays: Vec<&str> = lines(&out)
            .into_iter()
            .filter(|l| is_candidate(l))
            .collect();
        assert!(!relays.is_empty(), "{name}: no relay candidate left");
        for r in relays {
            assert_eq!(
                r.split_ascii_whitespace().nth(4),
                Some("127.0.0.1"),
                "{name}: {r}"
            );
        }
    }
    // Chromium gathered UDP and TCP TURN relays; TCP ones carry `tcptype`
    // only on host candidates here, `generation`/`network-id` on all.
    let chromium = sanitize_sdp(SDPS[3].1);
    assert!(chromium.contains("typ relay raddr 0.0.0.0 rport 0 generation 0 network-id 1"));
    // The capture's own raddr values are gone.
    assert!(SDPS[3].1.contains("raddr 192.0.2.2"));
    assert!(!chromium.contains("192.0.2.2"));
}

#[test]
fn captured_mdns_and_host_candidates_are_removed() {
    let (name, sdp) = SDPS[8];
    assert!(sdp.contains(".local"), "{name} has no mDNS candidate");
    assert!(!sanitize_sdp(sdp).contains(".local"));
    let (_, sdp) = SDPS[2];
    assert!(sdp.contains(".local"));
    assert!(!sanitize_sdp(sdp).contains(".local"));
    // Firefox puts the host address in c= and a=rtcp lines.
    let (_, sdp) = SDPS[6];
    assert!(sdp.contains("a=rtcp:") && sdp.contains("IN IP4 192.0.2.2"));
    let out = sanitize_sdp(sdp);
    assert!(!out.contains("192.0.2.2") && !out.contains("2001:db8::2"));
}

#[test]
fn captured_candidates() {
    let mut relays = 0;
    let mut dropped = 0;
    for (name, text) in CANDIDATES {
        for line in text.lines().filter(|l| !l.is_empty() && *l != "null") {
            let out = sanitize_candidate(line);
            if cand_type(line).as_deref() == Some("relay") {
                relays += 1;
                let Some(out) = out else {
                    panic!("{name}: relay dropped: {line}");
                };
                assert!(out.contains(" raddr 0.0.0.0 rport 0"), "{name}: {out}");
                assert_eq!(
                    out.split_ascii_whitespace().nth(4),
                    line.split_ascii_whitespace().nth(4)
                );
                assert_eq!(sanitize_candidate(&out).as_deref(), Some(out.as_str()));
                assert_no_foreign_ip(name, &out);
            } else {
                dropped += 1;
                assert_eq!(out, None, "{name}: {line}");
            }
        }
    }
    assert!(
        relays >= 10 && dropped >= 50,
        "{relays} relays, {dropped} dropped"
    );
}

fn arb_ip() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::from(o).to_string()),
        any::<[u16; 8]>().prop_map(|s| IpAddr::from(s).to_string()),
        "[0-9a-f]{8}-[0-9a-f]{4}\\.(local|LOCAL)",
    ]
}

prop_compose! {
    fn arb_candidate()(
        prefix in prop_oneof![Just("a=candidate:"), Just("a=Candidate:"), Just(" a=candidate:")],
        foundation in "[0-9]{1,10}",
        component in 1u8..3,
        transport in prop_oneof![Just("udp"), Just("UDP"), Just("tcp"), Just("TCP")],
        priority in any::<u32>(),
        addr in arb_ip(),
        port in any::<u16>(),
        typ in prop_oneof![Just("host"), Just("srflx"), Just("prflx"), Just("relay"), Just("RELAY"), Just("Host")],
        raddr in proptest::option::of((arb_ip(), any::<u16>())),
        tail in proptest::collection::vec(prop_oneof![
            Just(" generation 0"), Just(" network-id 2"), Just(" ufrag aB+/"),
            Just(" tcptype active"), Just(" network-cost 999"), Just(" x-ext 1.2.3.4")
        ], 0..4),
        sep in prop_oneof![Just(" "), Just("  "), Just("\t")],
    ) -> String {
        let raddr = raddr.map(|(a, p)| format!(" raddr {a} rport {p}")).unwrap_or_default();
        let line = format!("{prefix}{foundation} {component} {transport} {priority} {addr} {port} typ {typ}{raddr}{}", tail.concat());
        line.replace(' ', sep)
    }
}

/// One mutation of an SDP's lines.
#[derive(Debug, Clone)]
enum Mutation {
    InsertCandidate(usize, String),
    Connection(usize, String),
    Rtcp(usize, u16, String),
    Origin(String),
    RemoteCandidates(usize, String),
    ReplaceCandidateAddress(usize, String),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), arb_candidate()).prop_map(|(i, c)| Mutation::InsertCandidate(i, c)),
        (any::<usize>(), arb_ip()).prop_map(|(i, a)| Mutation::Connection(i, a)),
        (any::<usize>(), any::<u16>(), arb_ip()).prop_map(|(i, p, a)| Mutation::Rtcp(i, p, a)),
        arb_ip().prop_map(Mutation::Origin),
        (any::<usize>(), arb_ip()).prop_map(|(i, a)| Mutation::RemoteCandidates(i, a)),
        (any::<usize>(), arb_ip()).prop_map(|(i, a)| Mutation::ReplaceCandidateAddress(i, a)),
    ]
}

fn family(addr: &str) -> &'static str {
    if addr.contains(':') {
        "IP6"
    } else {
        "IP4"
    }
}

fn mutate(sdp: &str, mutations: &[Mutation], eol: &str) -> String {
    let mut l: Vec<String> = lines(sdp).into_iter().map(str::to_owned).collect();
    for m in mutations {
        let n = l.len().max(1);
        match m {
            Mutation::InsertCandidate(i, c) => l.insert(i % n, c.clone()),
            Mutation::Connection(i, a) => l.insert(i % n, format!("c=IN {} {a}", family(a))),
            Mutation::Rtcp(i, p, a) => l.insert(i % n, format!("a=rtcp:{p} IN {} {a}", family(a))),
            Mutation::Origin(a) => {
                if let Some(o) = l.iter_mut().find(|x| x.starts_with("o=")) {
                    *o = format!("o=- 1 2 IN {} {a}", family(a));
                }
            }
            Mutation::RemoteCandidates(i, a) => {
                l.insert(i % n, format!("a=remote-candidates:1 {a} 9"));
            }
            Mutation::ReplaceCandidateAddress(i, a) => {
                let idx: Vec<usize> = (0..l.len()).filter(|k| is_candidate(&l[*k])).collect();
                if !idx.is_empty() {
                    let k = idx[i % idx.len()];
                    let mut t: Vec<String> =
                        l[k].split_ascii_whitespace().map(str::to_owned).collect();
                    if t.len() > 4 {
                        t[4] = a.clone();
                    }
                    l[k] = t.join(" ");
                }
            }
        }
    }
    let mut out = l.join(eol);
    out.push_str(eol);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn mutated_sdps_leak_no_address(
        base in 0..SDPS.len(),
        mutations in proptest::collection::vec(arb_mutation(), 1..12),
        eol in prop_oneof![Just("\r\n"), Just("\n"), Just("\r")],
    ) {
        let (name, sdp) = SDPS[base];
        let input = mutate(sdp, &mutations, eol);
        let out = sanitize_sdp(&input);
        check_sanitized(name, &input, &out);
    }

    #[test]
    fn random_candidates_leak_no_address(c in arb_candidate()) {
        let line = c.trim_start().trim_start_matches("a=").trim_start_matches("A=");
        if let Some(out) = sanitize_candidate(line) {
            assert_eq!(cand_type(&out).as_deref(), Some("relay"));
            assert_no_foreign_ip("candidate", &out);
            assert_eq!(sanitize_candidate(&out).as_deref(), Some(out.as_str()));
        }
        if let Some(out) = sanitize_candidate(&c) {
            assert_no_foreign_ip("candidate", &out);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
        let out = sanitize_sdp(&text);
        assert_eq!(sanitize_sdp(&out), out);
        let _ = sanitize_candidate(&text);
    }
}

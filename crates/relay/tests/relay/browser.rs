//! A real browser calls through the relay: headless Chromium runs two
//! RTCPeerConnections in one page (`browser_page.html`), relay candidates
//! only, with fake camera and microphone, over TURN/UDP, TURN/TCP and TURNS.
//!
//! One relay (UDP+TCP on one port, TLS on another) and one browser serve the
//! three calls; each call gets a fresh tab. The relay's self-signed
//! certificate is admitted by its SPKI hash only. Every wait is bounded.

use std::time::{Duration, Instant};

use testkit::chromium::{
    serde_json, spki_sha256_base64, Chromium, LaunchOptions, StaticServer, Value,
};

use crate::support::*;

const PAGE: &str = include_str!("browser_page.html");
/// The page gives up on `connectionState === 'connected'` after this.
const CONNECT_MS: u64 = 20_000;
/// Media flows this long before each of the two stats snapshots.
const FLOW_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The label of `onionrtc_allocations_total` and the `relayProtocol`
    /// Chromium reports for its local relay candidate.
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    fn url(self, relay: &TestRelay) -> String {
        let ip = relay.config.listen[0].addr.ip();
        match self {
            Transport::Udp => format!("turn:{ip}:{}?transport=udp", relay.port),
            Transport::Tcp => format!("turn:{ip}:{}?transport=tcp", relay.port),
            Transport::Tls => format!("turns:{ip}:{}?transport=tcp", relay.tls_port),
        }
    }
}

/// The value of one metric line, 0 when absent.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn allocations(m: &str, t: Transport) -> u64 {
    metric(
        m,
        &format!("onionrtc_allocations_total{{transport=\"{}\"}}", t.name()),
    )
}

fn to_client_bytes(m: &str) -> u64 {
    metric(m, "onionrtc_relayed_bytes_total{direction=\"to_client\"}")
}

/// Runs one call in a fresh tab; the page's result, or why there is none.
fn run_call(
    browser: &Chromium,
    server: &StaticServer,
    relay: &TestRelay,
    t: Transport,
) -> Result<Value, String> {
    let mut page = browser.new_page(&server.url())?;
    let cfg = serde_json::json!({
        "url": t.url(relay),
        "username": USER,
        "credential": PASSWORD,
        "connectTimeoutMs": CONNECT_MS,
        "flowMs": FLOW_MS,
    });
    page.evaluate(&format!("window.startCall({cfg})"))?;
    let limit = Duration::from_millis(CONNECT_MS + 2 * FLOW_MS + 10_000);
    let done = page.wait_for("window.callDone", limit);
    let result = page.evaluate("window.callResult").unwrap_or(Value::Null);
    let log = page.evaluate("window.callLog").unwrap_or(Value::Null);
    let console = page.console();
    let details = format!("\npage log: {log:#}\nconsole: {console:#?}");
    match done {
        Ok(_) if result["ok"] == true => Ok(result),
        Ok(_) => Err(format!("call failed: {result:#}{details}")),
        Err(e) => Err(format!(
            "page did not finish: {e}\nresult: {result:#}{details}"
        )),
    }
}

/// What must hold for one side (`a` or `b`) of a finished call.
fn check_side(t: Transport, side: &str, first: &Value, second: &Value, problems: &mut Vec<String>) {
    let mut need = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("{side}: {what}"));
        }
    };
    for end in ["local", "remote"] {
        let c = &second[end];
        need(
            c["candidateType"] == "relay",
            format!("{end} candidateType {} (want relay)", c["candidateType"]),
        );
        need(
            c["address"] == "127.0.0.1",
            format!(
                "{end} address {} (want the relay's 127.0.0.1)",
                c["address"]
            ),
        );
    }
    need(
        second["local"]["relayProtocol"] == t.name(),
        format!(
            "local relayProtocol {} (want {})",
            second["local"]["relayProtocol"],
            t.name()
        ),
    );
    let rtt = second["currentRoundTripTime"].as_f64();
    need(
        rtt.is_some_and(|r| (0.0..1.0).contains(&r)),
        format!("currentRoundTripTime {rtt:?} (want 0..1 s on loopback)"),
    );
    for kind in ["audio", "video"] {
        let b1 = first["inbound"][kind]["bytesReceived"]
            .as_u64()
            .unwrap_or(0);
        let b2 = second["inbound"][kind]["bytesReceived"]
            .as_u64()
            .unwrap_or(0);
        need(
            b1 > 0,
            format!("{kind} inbound-rtp bytesReceived {b1} after {FLOW_MS} ms"),
        );
        need(
            b2 > b1,
            format!("{kind} inbound-rtp bytesReceived not growing: {b1} -> {b2}"),
        );
    }
}

/// Checks one call: the page's view and the relay's counters.
fn check_call(relay: &TestRelay, t: Transport, before: &str, result: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for side in ["a", "b"] {
        check_side(
            t,
            side,
            &result["first"][side],
            &result["second"][side],
            &mut problems,
        );
    }
    // The event loop publishes its counters periodically: wait (bounded).
    let want_allocs = allocations(before, t) + 2;
    let want_bytes = to_client_bytes(before) + 1;
    let after = testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let m = relay.handle().metrics().render();
        (allocations(&m, t) >= want_allocs && to_client_bytes(&m) >= want_bytes).then_some(m)
    })
    .unwrap_or_else(|| relay.handle().metrics().render());
    let allocs = allocations(&after, t) - allocations(before, t);
    if allocs < 2 {
        problems.push(format!(
            "relay: {allocs} {} allocations (want >= 2)",
            t.name()
        ));
    }
    for other in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        let n = allocations(&after, other) - allocations(before, other);
        if other != t && n != 0 {
            problems.push(format!("relay: {n} {} allocations (want 0)", other.name()));
        }
    }
    let bytes = to_client_bytes(&after) - to_client_bytes(before);
    if bytes == 0 {
        problems.push("relay: no bytes relayed to clients".into());
    }
    let s = &result["second"];
    eprintln!(
        "browser {}: connected in {} ms; rtt a {} s, b {} s; inbound bytes a {}, b {}; \
         relay: {allocs} allocations, {bytes} bytes to clients; candidate errors: {}",
        t.name(),
        result["connectMs"],
        s["a"]["currentRoundTripTime"],
        s["b"]["currentRoundTripTime"],
        s["a"]["inboundBytes"],
        s["b"]["inboundBytes"],
        result["errors"],
    );
    if !problems.is_empty() {
        problems.push(format!("page result: {result:#}\nrelay metrics:\n{after}"));
    }
    problems
}

#[test]
fn chromium_calls_through_turn_udp_tcp_and_tls() {
    let binary = testkit::chromium::chromium_binary();
    if !testkit::require_tool(&binary.to_string_lossy(), &["--version"]) {
        return;
    }
    let started = Instant::now();
    let relay = TestRelay::start(|_| {});
    let cert = std::fs::read_to_string(relay._dir.path().join("cert.pem")).unwrap();
    let spki = spki_sha256_base64(&cert).unwrap();
    let browser = Chromium::launch(
        LaunchOptions::default().arg(format!("--ignore-certificate-errors-spki-list={spki}")),
    )
    .unwrap_or_else(|e| panic!("cannot launch Chromium: {e}"));
    eprintln!(
        "{} up after {:?}",
        browser.version()["Browser"],
        started.elapsed()
    );
    let server = StaticServer::start(PAGE).unwrap();

    let mut failures = Vec::new();
    for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        let before = relay.handle().metrics().render();
        let problems = match run_call(&browser, &server, &relay, t) {
            Ok(result) => check_call(&relay, t, &before, &result),
            Err(e) => vec![format!(
                "{e}\nrelay metrics:\n{}\nChromium stderr:\n{}",
                relay.handle().metrics().render(),
                browser.stderr_tail()
            )],
        };
        if !problems.is_empty() {
            failures.push(format!("== {}:\n{}", t.name(), problems.join("\n")));
        }
    }
    eprintln!("browser test took {:?}", started.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Maintenance: Chromium, given only a draining relay's URL, follows its
/// 300 ALTERNATE-SERVER to the alternate and the call connects there; the
/// draining relay allocates nothing. Chromium refuses redirects to loopback
/// addresses (crbug.com/649118), so both relays listen on addresses of a
/// veth pair inside this test's own network namespace.
#[test]
fn chromium_follows_alternate_server_from_a_draining_relay() {
    let binary = testkit::chromium::chromium_binary();
    if !testkit::require_tool(&binary.to_string_lossy(), &["--version"]) {
        return;
    }
    if !testkit::netns::run_isolated(
        "browser::chromium_follows_alternate_server_from_a_draining_relay",
    ) {
        return;
    }
    // Chromium gathers on real interfaces only: a veth pair inside this
    // namespace, the alternate on one end, the draining relay on the other.
    for args in [
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"][..],
        &["addr", "add", "10.9.0.1/24", "dev", "v0"],
        &["addr", "add", "10.9.0.2/24", "dev", "v1"],
        &["link", "set", "v0", "up"],
        &["link", "set", "v1", "up"],
    ] {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
    let on = |ip: &'static str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        move |c: &mut relay::config::RelayConfig| {
            for l in &mut c.listen {
                l.addr.set_ip(ip);
            }
            c.relay_ip = ip;
        }
    };
    let alternate = TestRelay::start(on("10.9.0.1"));
    let to = std::net::SocketAddr::from(([10, 9, 0, 1], alternate.port));
    let draining = TestRelay::start(|c| {
        on("10.9.0.2")(c);
        c.alternate_servers = vec![relay::config::Listen {
            proto: relay::config::ListenProto::Udp,
            addr: to,
        }];
    });
    draining.handle().set_draining(true);
    let browser = Chromium::launch(LaunchOptions::default())
        .unwrap_or_else(|e| panic!("cannot launch Chromium: {e}"));
    let server = StaticServer::start(PAGE).unwrap();
    let result = run_call(&browser, &server, &draining, Transport::Udp).unwrap_or_else(|e| {
        panic!(
            "{e}\ndraining relay:\n{}\nalternate:\n{}\nChromium stderr:\n{}",
            draining.handle().metrics().render(),
            alternate.handle().metrics().render(),
            browser.stderr_tail()
        )
    });
    for side in ["a", "b"] {
        let local = &result["second"][side]["local"];
        assert_eq!(local["candidateType"], "relay", "{result:#}");
        assert_eq!(
            local["address"], "10.9.0.1",
            "{side}'s relay candidate is not on the alternate: {result:#}"
        );
        let bytes = result["second"][side]["inbound"]["audio"]["bytesReceived"]
            .as_u64()
            .unwrap_or(0);
        assert!(bytes > 0, "{side} received no audio: {result:#}");
    }
    let m = testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let m = alternate.handle().metrics().render();
        (allocations(&m, Transport::Udp) >= 2).then_some(m)
    })
    .unwrap_or_else(|| panic!("the alternate made fewer than 2 allocations"));
    let d = draining.handle().metrics().render();
    assert_eq!(
        allocations(&d, Transport::Udp),
        0,
        "the draining relay allocated:\n{d}"
    );
    assert!(metric(&d, "onionrtc_redirected_total") >= 2, "{d}");
    eprintln!(
        "drain: connected in {} ms through the alternate ({} allocations there)",
        result["connectMs"],
        allocations(&m, Transport::Udp)
    );
}

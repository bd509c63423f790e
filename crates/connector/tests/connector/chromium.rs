//! Headless Chromium against the connector, as a web page would use it:
//! a page from another origin opens 100 peer connections to the
//! connector's port (as a STUN server, and as a TURN server with made-up
//! credentials) while the user's call runs through the connector, and the
//! call keeps working; a relay answering Allocate with 300 Try Alternate
//! cannot make Chromium send anything to the alternate address (nftables
//! counters in a network namespace), while the same relay reached without
//! the connector can. Every wait is bounded; Chromium is killed by PID.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::chromium::{serde_json, Chromium, LaunchOptions, Page, StaticServer, Value};

use crate::support::*;

const CALL_PAGE: &str = include_str!("chromium_call.html");
const ATTACK_PAGE: &str = include_str!("chromium_attack.html");
/// Peer connections the page opens.
const PAGE_PCS: u32 = 100;
/// How long the call is watched after the page opened them: past the
/// connector's 20 s deadline for unauthenticated flows.
const WATCH: Duration = Duration::from_secs(26);

fn launch() -> Option<Chromium> {
    let binary = testkit::chromium::chromium_binary();
    if !testkit::require_tool(&binary.to_string_lossy(), &["--version"]) {
        return None;
    }
    Some(
        Chromium::launch(LaunchOptions {
            kill_with_parent: true,
            ..LaunchOptions::default()
        })
        .unwrap_or_else(|e| panic!("cannot launch Chromium: {e}")),
    )
}

/// Starts the call page's call through `turn_url`; waits (bounded) until
/// its data channel is open.
fn start_call(browser: &Chromium, server: &StaticServer, turn_url: &str) -> Page {
    let mut page = browser.new_page(&server.url()).unwrap();
    let cfg = serde_json::json!({ "url": turn_url, "username": USER, "credential": PASSWORD });
    page.evaluate(&format!("window.startCall({cfg})")).unwrap();
    if let Err(e) = page.wait_for("window.call.state === 'open'", Duration::from_secs(30)) {
        let call = page.evaluate("window.call").unwrap_or(Value::Null);
        panic!(
            "the call did not start: {e}\n{call:#}\n{:#?}\n{}",
            page.console(),
            browser.stderr_tail()
        );
    }
    page
}

fn call_state(page: &mut Page) -> Value {
    page.evaluate("window.call").unwrap_or(Value::Null)
}

#[test]
fn page_with_100_peer_connections_does_not_break_the_call() {
    let Some(browser) = launch() else {
        return;
    };
    let relay = TestRelay::start();
    let rt = runtime();
    let h = start(&rt, config(relay.tcp_endpoint()));
    let port = h.turn_addr().port();
    let turn_url = format!("turn:127.0.0.1:{port}?transport=udp");
    let call_server = StaticServer::start(CALL_PAGE).unwrap();
    // Another origin (another port).
    let attack_server = StaticServer::start(ATTACK_PAGE).unwrap();

    let mut call = start_call(&browser, &call_server, &turn_url);
    assert!(eventually(Duration::from_secs(5), || h
        .stats()
        .flows_pending
        == 0));
    call.wait_for("window.call.got > 0", Duration::from_secs(10))
        .expect("the call echoes before the attack");
    let before = h.stats();
    let got_before = call_state(&mut call)["got"].as_u64().unwrap_or(0);

    let mut page = browser.new_page(&attack_server.url()).unwrap();
    let began = Instant::now();
    page.evaluate_within(
        &format!("window.startAttack({port}, {PAGE_PCS})"),
        Duration::from_secs(60),
    )
    .unwrap();
    // Watch the call: it must keep echoing in every window of the watch.
    let mut samples = Vec::new();
    let mut max_pending = 0;
    let mut max_relay_conns = 0;
    let mut last_got = got_before;
    let mut stalled_windows = Vec::new();
    let mut next = Instant::now();
    while began.elapsed() < WATCH {
        next += Duration::from_secs(2);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let c = call_state(&mut call);
        let got = c["got"].as_u64().unwrap_or(0);
        if got <= last_got {
            stalled_windows.push(format!("{:?}: {c}", began.elapsed()));
        }
        last_got = got;
        let s = h.stats();
        max_pending = max_pending.max(s.flows_pending);
        let conns = relay.handle().metrics().totals().1.connections_current[0];
        max_relay_conns = max_relay_conns.max(conns);
        samples.push((began.elapsed().as_secs(), got, s.flows_pending, conns));
    }
    let s = h.stats();
    let attack = page.evaluate("window.attack").unwrap_or(Value::Null);
    let c = call_state(&mut call);
    eprintln!(
        "page: {attack}\ncall: {c}\nsamples (s, echoes, pending flows, relay TCP \
         connections): {samples:?}\nconnector: {s}\nbefore: {before}"
    );
    assert!(
        stalled_windows.is_empty(),
        "the call stalled: {stalled_windows:?}"
    );
    assert_eq!(c["state"], "open", "{c}");
    assert_eq!(c["conn"], "connected", "{c}");
    assert_eq!(attack["opened"], PAGE_PCS, "{attack}");
    // The page got no STUN answer (no srflx candidate) ...
    assert_eq!(attack["answers"], 0, "{attack}");
    // ... its Bindings opened nothing, its Allocates were capped ...
    assert!(s.not_allocate > 0, "{s}");
    assert!(max_pending <= 64, "{max_pending} pending flows");
    assert!(
        max_relay_conns <= 64 + 2,
        "{max_relay_conns} relay connections"
    );
    // ... and its flows were closed after the deadline (Chromium keeps
    // retransmitting the refused Allocates, so a second wave takes the
    // freed places: the page's errors all say 401 in the end).
    assert!(s.unauthenticated_closed >= 64, "{s}");
    // A new call starts beside the second wave.
    let mut second = start_call(&browser, &call_server, &turn_url);
    assert_eq!(call_state(&mut second)["state"], "open");
    drop(page);
    stop(&rt, h);
}

/// One peer connection per `tryTurn(name, url)`, relay candidates only,
/// recording its icecandidateerror events and candidates.
const TRY_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><script>
window.tries = {};
window.tryTurn = (name, url, username, credential) => {
  const t = (window.tries[name] = { errors: [], candidates: [], state: "new" });
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: url, username, credential }],
    iceTransportPolicy: "relay",
  });
  (window.pcs = window.pcs || []).push(pc);
  pc.onicecandidateerror = (e) => t.errors.push(`${e.url} ${e.errorCode} ${e.errorText}`);
  pc.onicecandidate = (e) => e.candidate && t.candidates.push(e.candidate.candidate);
  pc.onicegatheringstatechange = () => (t.state = pc.iceGatheringState);
  pc.createDataChannel("x");
  pc.createOffer().then((o) => pc.setLocalDescription(o));
  return name;
};
</script>"#;

/// Alternate server the relay reached directly names (the control).
const ALT_DIRECT: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 77);
/// Alternate server the relay behind the connector names.
const ALT_CONNECTOR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 78);

fn nft(args: &[&str]) {
    let out = run_bounded(Command::new("nft").args(args), Duration::from_secs(10));
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Packets this namespace sent to `addr` (any protocol, any port), by the
/// nftables counter the test installed.
fn sent_to(addr: Ipv4Addr) -> u64 {
    let out = run_bounded(
        Command::new("nft").args(["-j", "list", "chain", "inet", "redirect_test", "out"]),
        Duration::from_secs(10),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = addr.to_string();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["rule"]["expr"].as_array())
        .filter(|expr| expr.iter().any(|e| e["match"]["right"] == want.as_str()))
        .flat_map(|expr| expr.iter().filter_map(|e| e["counter"]["packets"].as_u64()))
        .sum()
}

#[test]
fn relay_redirect_does_not_reach_chromium() {
    if !testkit::netns::run_isolated_with_limit(
        "chromium::relay_redirect_does_not_reach_chromium",
        Duration::from_secs(180),
    ) {
        return;
    }
    if !testkit::require_tool("nft", &["--version"]) {
        return;
    }
    // A network besides loopback, with a default route, so Chromium
    // gathers; the alternate addresses are on it (nobody answers there).
    let topo = testkit::topology::Topology::new(&Default::default()).unwrap();
    let via = topo.server_addr().to_string();
    let ip = run_bounded(
        Command::new("ip").args(["route", "add", "default", "via", &via]),
        Duration::from_secs(10),
    );
    assert!(ip.status.success());
    nft(&["add", "table", "inet", "redirect_test"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "redirect_test",
        "out",
        "{ type filter hook output priority 0; }",
    ]);
    for a in [ALT_DIRECT, ALT_CONNECTOR] {
        nft(&[
            "add",
            "rule",
            "inet",
            "redirect_test",
            "out",
            "ip",
            "daddr",
            &a.to_string(),
            "counter",
        ]);
    }
    let Some(browser) = launch() else {
        return;
    };
    let rt = runtime();
    let alt = |ip: Ipv4Addr| SocketAddr::from((ip, 3478));
    let direct = rt.block_on(FakeRelay::start(FakeMode::Redirect(alt(ALT_DIRECT))));
    let behind = rt.block_on(FakeRelay::start(FakeMode::Redirect(alt(ALT_CONNECTOR))));
    let h = start(&rt, config(behind.endpoint()));
    let server = StaticServer::start(TRY_PAGE).unwrap();
    let mut page = browser.new_page(&server.url()).unwrap();
    let try_turn = |page: &mut Page, name: &str, url: String| {
        page.evaluate(&format!(
            "window.tryTurn({}, {}, {}, {})",
            Value::from(name),
            Value::from(url),
            Value::from(USER),
            Value::from(PASSWORD)
        ))
        .unwrap();
    };

    // Control: straight to the redirecting relay, Chromium follows the
    // redirect and sends to the alternate address itself.
    try_turn(
        &mut page,
        "direct",
        format!("turn:127.0.0.1:{}?transport=udp", direct.addr.port()),
    );
    assert!(
        eventually(Duration::from_secs(20), || sent_to(ALT_DIRECT) > 0),
        "Chromium did not follow the redirect without the connector: the test \
         cannot tell; page: {}",
        page.evaluate("window.tries").unwrap_or(Value::Null)
    );

    // Through the connector (UDP and TCP to it): the redirect never
    // reaches Chromium, which gets the connector's 300 without an
    // alternate server instead, and gives up on that server.
    let port = h.turn_addr().port();
    try_turn(
        &mut page,
        "udp",
        format!("turn:127.0.0.1:{port}?transport=udp"),
    );
    try_turn(
        &mut page,
        "tcp",
        format!("turn:127.0.0.1:{port}?transport=tcp"),
    );
    let failed = |page: &mut Page, name: &str| {
        page.evaluate(&format!(
            "window.tries.{name}.errors.some((e) => / 300 /.test(e))"
        ))
        .unwrap_or(Value::Null)
            == Value::Bool(true)
    };
    assert!(
        eventually(Duration::from_secs(20), || failed(&mut page, "udp")
            && failed(&mut page, "tcp")),
        "page: {}\nconnector: {}",
        page.evaluate("window.tries").unwrap_or(Value::Null),
        h.stats()
    );
    // Give a follow-up (there must be none) time to show.
    std::thread::sleep(Duration::from_secs(3));
    let tries = page.evaluate("window.tries").unwrap_or(Value::Null);
    let s = h.stats();
    eprintln!(
        "page: {tries}\nconnector: {s}\npackets to {ALT_DIRECT} (direct): {}, to \
         {ALT_CONNECTOR} (behind the connector): {}",
        sent_to(ALT_DIRECT),
        sent_to(ALT_CONNECTOR)
    );
    assert_eq!(sent_to(ALT_CONNECTOR), 0, "{tries}");
    assert!(s.redirects_blocked >= 2, "{s}");
    assert!(behind.accepted() >= 2);
    drop(page);
    stop(&rt, h);
}

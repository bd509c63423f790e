//! Headless Chromium against the connector, as a web page would use it:
//! a page from another origin opens 100 peer connections to the
//! connector's port (as a STUN server, and as a TURN server with made-up
//! credentials) while the user's call runs through the connector, and the
//! call keeps working. Every wait is bounded; Chromium is killed by PID.

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
    let before = h.stats();
    let got_before = call_state(&mut call)["got"].as_u64().unwrap_or(0);
    assert!(got_before > 0, "the call echoes before the attack");

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

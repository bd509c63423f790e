//! `onionrtc call --via socks5` through the private Tor network (issue 11):
//! a caller without a browser and without a connector, in a client
//! namespace of its own, calls a direct `onionrtc call` on `serve`. The
//! WebSocket and TURN (over TLS, chosen by `call` itself) go through Tor;
//! the relay's log must show the exit, never the caller's address.
//!
//! Same topology as `tor_call`: the private caller's namespace keeps its
//! route to the server, so anything that bypassed Tor would show up in the
//! relay's log as 10.201.0.x.

use std::net::IpAddr;
use std::time::Duration;

use testkit::topology::{Topology, TopologyConfig};
use testkit::tor::{run_isolated_group, shared, TOPOLOGY_EXIT_ADDR};

use super::*;

const WEB_PORT: u16 = 8080;
const SOCKS_PORT: u16 = 9050;

#[test]
fn cli_caller_through_tor_shows_only_the_exit() {
    let Some(_pass) =
        run_isolated_group("tor_cli_call::cli_caller_through_tor_shows_only_the_exit")
    else {
        return;
    };
    let tor = shared().unwrap();
    let sc = Scene::new(&tor);
    let a_ip = sc.private.addr();
    let b_ip = sc.direct.addr();
    let a_masked = {
        let o = a_ip.octets();
        format!("{}.{}.{}.", o[0], o[1], o[2])
    };
    // Control: without Tor the caller's machine is seen as itself.
    assert_eq!(
        direct_source(&sc.private, sc.topo.server(), SERVER_IP),
        IpAddr::V4(a_ip)
    );
    let (private, direct, cert) = (&sc.private, &sc.direct, &sc.cert);
    let mut serve = sc.start_serve();
    // A (through Tor) stays on the call longer than B: the direct side may
    // finish its DTLS handshake seconds after the Tor side (a lost final
    // flight waits for the retransmission timer), and must not find A gone.
    let via = format!("socks5://127.0.0.1:{SOCKS_PORT}");
    let mut a = sc.call(
        private,
        "A (call via tor)",
        "20",
        &["--via", &via, "--relay-spki", &cert.spki, "--tone", "440"],
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut b = sc.call(direct, "B (call direct)", "6", &["--tone", "1000"]);
    both_connected(&mut a, &mut b, Duration::from_secs(150), "A via tor");
    let (log, all) = relay_saw_only_the_exit_and(&mut serve, b_ip);
    let leaked: Vec<&String> = log.iter().filter(|l| l.contains(&a_masked)).collect();
    assert!(leaked.is_empty(), "serve's log names A: {leaked:#?}");
    eprintln!(
        "relay log: {} lines, {} allocations; A's from the exit {TOPOLOGY_EXIT_ADDR} over TLS",
        log.len(),
        all
    );
}

/// The private Tor network's scene: the server's namespace, a private
/// caller's (its tor's SOCKS port bridged to 127.0.0.1:9050 inside) and a
/// direct caller's; `serve` with a relay certificate of its own; a room.
struct Scene {
    topo: Topology,
    private: testkit::topology::ClientNs,
    direct: testkit::topology::ClientNs,
    cert: Cert,
    dir: tempfile::TempDir,
    url: String,
    _bridge: LoopbackBridge,
}

impl Scene {
    fn new(tor: &testkit::tor::TorNetwork) -> Scene {
        let topo = Topology::new(&TopologyConfig::default()).unwrap();
        let private = topo.add_client().unwrap();
        let direct = topo.add_client().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = write_cert(dir.path(), SERVER_IP);
        let bridge = LoopbackBridge::start(&private, SOCKS_PORT, tor.socks_addr());
        let url = format!("http://{SERVER_IP}:{WEB_PORT}/?room={}", random_room());
        Scene {
            topo,
            private,
            direct,
            cert,
            dir,
            url,
            _bridge: bridge,
        }
    }

    fn start_serve(&self) -> Logged {
        let d = self.dir.path();
        let config = write_server_config(d, &self.cert, (SERVER_IP, WEB_PORT).into(), "");
        start_serve(self.topo.server(), &config, &d.join("data"))
    }

    /// `onionrtc call` of the room in `ns`, with a JSON summary.
    fn call(&self, ns: &Netns, name: &str, duration: &str, extra: &[&str]) -> Logged {
        let mut cmd = ns.command(onionrtc());
        cmd.args(["call", &self.url, "--duration", duration, "--json"])
            .args(["--timeout", "90", "--no-speaker"])
            .args(extra)
            .env("RUST_LOG", "info");
        Logged::spawn(name, ns, cmd)
    }
}

/// Waits for both `--json` summaries: both connected, A (through Tor) over
/// TLS with audio received, B (direct) over UDP.
fn both_connected(a: &mut Logged, b: &mut Logged, limit: Duration, label: &str) {
    let line_a = a.wait_line("{", limit);
    let line_b = b.wait_line("{", Duration::from_secs(30));
    let va: Value = serde_json::from_str(&line_a).unwrap();
    let vb: Value = serde_json::from_str(&line_b).unwrap();
    eprintln!("{label}: {va}\nB direct: {vb}");
    assert_eq!(va["state"], "connected", "{va}\n{}", a.stderr_tail(20));
    assert_eq!(vb["state"], "connected", "{vb}\n{}", b.stderr_tail(20));
    assert_eq!(va["relayProtocol"], "tls", "{va}");
    assert_eq!(vb["relayProtocol"], "udp", "{vb}");
    assert!(va["packetsReceived"].as_u64().unwrap_or(0) > 100, "{va}");
}

/// Stops serve and checks its relay's log: an allocation from the exit
/// over TLS, and none from anywhere but the exit and `b_ip`. Returns the
/// log and the number of allocations.
fn relay_saw_only_the_exit_and(
    serve: &mut Logged,
    b_ip: std::net::Ipv4Addr,
) -> (Vec<String>, usize) {
    let serve_status = serve.terminate(Duration::from_secs(15));
    assert!(
        serve_status.is_some_and(|s| s.success()),
        "serve: {serve_status:?}"
    );
    let log = serve.stderr();
    let all = allocations(&log);
    let exit = IpAddr::V4(TOPOLOGY_EXIT_ADDR);
    assert!(
        all.iter()
            .any(|al| al.client.ip() == exit && al.transport == "tls"),
        "no allocation from the exit over TLS: {all:#?}"
    );
    for al in &all {
        assert!(
            al.client.ip() == exit || al.client.ip() == IpAddr::V4(b_ip),
            "allocation from elsewhere: {}",
            al.line
        );
    }
    (log, all.len())
}

/// `onionrtc call --via tor --tor-binary tor`: the caller launches a tor of
/// its own (the connector's launcher, configured with `--tor-extra-config`
/// for the private network) and carries the WebSocket and TURN over TLS
/// through it.
#[test]
fn cli_caller_launches_its_own_tor() {
    let Some(_pass) = run_isolated_group("tor_cli_call::cli_caller_launches_its_own_tor") else {
        return;
    };
    let tor = shared().unwrap();
    let lines = tor.client_torrc_lines().join("\n");
    let _serialized = tor;
    caller_with_its_own_tor(
        "cli_caller_launches_its_own_tor",
        &lines,
        &["--tor-binary", "tor"],
    );
}

/// `onionrtc call --via tor`: embedded Tor (arti), configured for the
/// private network with arti TOML in `--tor-extra-config`, its state in
/// `--tor-data-dir`.
#[test]
fn cli_caller_uses_embedded_tor() {
    let Some(_pass) = run_isolated_group("tor_cli_call::cli_caller_uses_embedded_tor") else {
        return;
    };
    let tor = shared().unwrap();
    let arti = tor.arti_config().unwrap();
    let _serialized = tor;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tor");
    let data = data.to_str().unwrap();
    caller_with_its_own_tor(
        "cli_caller_uses_embedded_tor",
        &arti,
        &["--tor-data-dir", data],
    );
}

/// A call from `onionrtc call --via tor` (its own Tor, set up by
/// `tor_config` written to `--tor-extra-config` and `tor_args`) in this
/// test's namespace, to a direct `onionrtc call`. This namespace has a
/// route of its own to the server: anything that bypassed Tor would show
/// in the relay's log from that address, not from the exit.
fn caller_with_its_own_tor(label: &str, tor_config: &str, tor_args: &[&str]) {
    let t0 = std::time::Instant::now();
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    let direct = topo.add_client().unwrap();
    let b_ip = direct.addr();

    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), SERVER_IP);
    let config = write_server_config(dir.path(), &cert, (SERVER_IP, WEB_PORT).into(), "");
    let data = dir.path().join("data");
    let mut serve = start_serve(topo.server(), &config, &data);
    // Control: this namespace reaches the server directly, from an address
    // that is not the exit's, so a bypass would be seen.
    let probe = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::new(IpAddr::V4(SERVER_IP), WEB_PORT),
        Duration::from_secs(5),
    )
    .unwrap();
    let own = probe.local_addr().unwrap().ip();
    assert_ne!(own, IpAddr::V4(TOPOLOGY_EXIT_ADDR));
    drop(probe);
    let extra = dir.path().join("tor-extra.conf");
    std::fs::write(&extra, tor_config).unwrap();

    let room = random_room();
    let url = format!("http://{SERVER_IP}:{WEB_PORT}/?room={room}");
    let mut cmd = testkit::topology::tied_command(onionrtc());
    cmd.args([
        "call",
        &url,
        "--duration",
        "20",
        "--json",
        "--timeout",
        "150",
        "--no-speaker",
    ])
    .args(["--via", "tor", "--tor-extra-config"])
    .arg(&extra)
    .args(tor_args)
    .args(["--relay-spki", &cert.spki, "--tone", "440"])
    .env("RUST_LOG", "info");
    let mut a = Logged::spawn_here("A (call --via tor)", cmd);
    // B joins once A's tor has bootstrapped and A is in the room: B's
    // call would otherwise time out waiting.
    std::thread::sleep(Duration::from_secs(1));
    let mut b_cmd = direct.command(onionrtc());
    b_cmd
        .args([
            "call",
            &url,
            "--duration",
            "6",
            "--json",
            "--timeout",
            "150",
            "--no-speaker",
        ])
        .args(["--tone", "1000"])
        .env("RUST_LOG", "info");
    let mut b = Logged::spawn("B (call direct)", &direct, b_cmd);
    both_connected(&mut a, &mut b, Duration::from_secs(200), label);
    let boot: Vec<String> = a
        .stderr()
        .into_iter()
        .filter(|l| l.contains("bootstrapped in") || l.contains("Bootstrapped 100%"))
        .collect();
    eprintln!("{label}: A's Tor: {boot:?}");
    let (log, allocations) = relay_saw_only_the_exit_and(&mut serve, b_ip);
    let own_text = format!("{own}:");
    let leaked: Vec<&String> = log.iter().filter(|l| l.contains(&own_text)).collect();
    assert!(
        leaked.is_empty(),
        "serve's log names A's own address: {leaked:#?}"
    );
    eprintln!(
        "{label}: {:?}; {} allocations, A's from the exit over TLS \
         (this namespace's own address: {own})",
        t0.elapsed(),
        allocations
    );
}

/// Issue 15: TURN mobility (RFC 8016) keeps a call across a new circuit.
/// A (`call --via socks5`, TURN over TLS through Tor) calls B (direct);
/// A moves its allocation to a new connection, so a new circuit, once on
/// demand (`--hop-at`), then once more when the test closes the circuit
/// carrying A's TURN stream (tor's `CLOSECIRCUIT`: as if a relay on the
/// path died). The call must stay connected with audio flowing; the relay
/// logs both moves. The figures (time to hop, packets lost) are printed.
#[test]
fn cli_caller_moves_to_a_new_circuit_mid_call() {
    let Some(_pass) =
        run_isolated_group("tor_cli_call::cli_caller_moves_to_a_new_circuit_mid_call")
    else {
        return;
    };
    let tor = shared().unwrap();
    let sc = Scene::new(&tor);
    let mut serve = sc.start_serve();
    let (private, direct, cert) = (&sc.private, &sc.direct, &sc.cert);
    let via = format!("socks5://127.0.0.1:{SOCKS_PORT}");
    let mut a = sc.call(
        private,
        "A (call via tor)",
        "14",
        &[
            "--via",
            &via,
            "--relay-spki",
            &cert.spki,
            "--tone",
            "440",
            "--hop-at",
            "4",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut b = sc.call(direct, "B (call direct)", "12", &["--tone", "1000"]);
    let moved = |l: &Logged| {
        (l.stderr().iter())
            .filter(|l| l.contains("moved to a new relay connection"))
            .count()
    };
    // A's on-demand hop comes 4 s after the call connected.
    let first = testkit::wait_until(Duration::from_secs(150), Duration::from_millis(200), || {
        (moved(&a) >= 1).then_some(())
    });
    assert!(first.is_some(), "A never moved:\n{}", a.stderr_tail(40));
    // Now break the circuit under A's TURN stream (TLS to the relay, :443).
    let mut ctl = tor.control().unwrap();
    let streams = ctl.stream_status().unwrap();
    let turn: Vec<_> = (streams.iter())
        .filter(|s| s.target.ends_with(":443") && s.status == "SUCCEEDED")
        .collect();
    assert!(!turn.is_empty(), "A's TURN stream: {streams:?}");
    let killed_at = std::time::Instant::now();
    for s in turn {
        ctl.command(&format!("CLOSECIRCUIT {}", s.circuit)).unwrap();
    }
    let second = testkit::wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        (moved(&a) >= 2).then_some(())
    });
    assert!(
        second.is_some(),
        "A did not move after its circuit died:\n{}",
        a.stderr_tail(40)
    );
    eprintln!(
        "circuit closed → A moved in {:?} (as the test saw it)",
        killed_at.elapsed()
    );
    let line_a = a.wait_line("{", Duration::from_secs(60));
    let line_b = b.wait_line("{", Duration::from_secs(30));
    let va: Value = serde_json::from_str(&line_a).unwrap();
    let vb: Value = serde_json::from_str(&line_b).unwrap();
    eprintln!("A via tor: {va}\nB direct: {vb}");
    assert_eq!(va["state"], "connected", "{va}\n{}", a.stderr_tail(30));
    assert_eq!(vb["state"], "connected", "{vb}\n{}", b.stderr_tail(30));
    assert_eq!(va["relayProtocol"], "tls", "{va}");
    let hops = va["hops"].as_array().map_or(0, Vec::len);
    assert!(hops >= 2, "{va}");
    // Audio flowed through the whole call, hops included (50 packets/s).
    assert!(va["packetsReceived"].as_u64().unwrap_or(0) > 400, "{va}");
    assert!(vb["packetsReceived"].as_u64().unwrap_or(0) > 400, "{vb}");
    let serve_status = serve.terminate(Duration::from_secs(15));
    assert!(
        serve_status.is_some_and(|s| s.success()),
        "serve: {serve_status:?}"
    );
    let log = serve.stderr();
    let moves = log
        .iter()
        .filter(|l| l.contains("allocation moved"))
        .count();
    assert!(moves >= 2, "the relay logged {moves} moves");
    eprintln!(
        "hops (ms, hop start to the relay's answer): {}; A lost {} packets, B lost {} packets",
        va["hops"], va["packetsLost"], vb["packetsLost"]
    );
}

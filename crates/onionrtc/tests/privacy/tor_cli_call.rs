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
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    let private = topo.add_client().unwrap();
    let direct = topo.add_client().unwrap();
    let a_ip = private.addr();
    let b_ip = direct.addr();
    let a_masked = {
        let o = a_ip.octets();
        format!("{}.{}.{}.", o[0], o[1], o[2])
    };
    // Control: without Tor the caller's machine is seen as itself.
    assert_eq!(
        direct_source(&private, topo.server(), SERVER_IP),
        IpAddr::V4(a_ip)
    );

    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), SERVER_IP);
    let config = write_server_config(dir.path(), &cert, WEB_PORT, "");
    let data = dir.path().join("data");
    let mut serve = start_serve(topo.server(), &config, &data);

    let _bridge = LoopbackBridge::start(&private, SOCKS_PORT, tor.socks_addr());
    let room = random_room();
    let url = format!("http://{SERVER_IP}:{WEB_PORT}/?room={room}");
    let call = |ns: &Netns, name: &str, extra: &[&str]| {
        let mut cmd = ns.command(onionrtc());
        cmd.args(["call", &url, "--duration", "6", "--json", "--timeout", "90"])
            .args(extra)
            .env("RUST_LOG", "info");
        Logged::spawn(name, ns, cmd)
    };
    let via = format!("socks5://127.0.0.1:{SOCKS_PORT}");
    let mut a = call(
        &private,
        "A (call via tor)",
        &["--via", &via, "--relay-spki", &cert.spki, "--tone", "440"],
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut b = call(&direct, "B (call direct)", &["--tone", "1000"]);
    let line_a = a.wait_line("{", Duration::from_secs(150));
    let line_b = b.wait_line("{", Duration::from_secs(30));
    let va: Value = serde_json::from_str(&line_a).unwrap();
    let vb: Value = serde_json::from_str(&line_b).unwrap();
    eprintln!("A via tor: {va}\nB direct: {vb}");
    assert_eq!(va["state"], "connected", "{va}\n{}", a.stderr_tail(20));
    assert_eq!(vb["state"], "connected", "{vb}\n{}", b.stderr_tail(20));
    assert_eq!(va["relayProtocol"], "tls", "{va}");
    assert_eq!(vb["relayProtocol"], "udp", "{vb}");
    assert!(va["packetsReceived"].as_u64().unwrap_or(0) > 100, "{va}");

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
    let leaked: Vec<&String> = log.iter().filter(|l| l.contains(&a_masked)).collect();
    assert!(leaked.is_empty(), "serve's log names A: {leaked:#?}");
    eprintln!(
        "relay log: {} lines, {} allocations; A's from the exit {TOPOLOGY_EXIT_ADDR} over TLS",
        log.len(),
        all.len()
    );
}

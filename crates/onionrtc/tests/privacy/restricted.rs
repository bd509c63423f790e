//! A caller behind a firewall that lets only TCP to port 443 out (nftables
//! in its namespace: loopback accepted, `tcp dport 443` accepted, policy
//! drop) calls a caller on an open network, on `onionrtc serve`:
//!
//! ```text
//!  client ns 0 (firewalled), eth0 10.201.0.2
//!    Chromium R ─▶ http://127.0.0.1:8081, turn:127.0.0.1:3479 (UDP, on lo)
//!    onionrtc connect --via direct ─TLS─▶ 10.200.0.2:443 (relay)
//!                                  ─TCP─▶ 10.200.0.4:443 (web, http)
//!  client ns 1 (open), eth0 10.201.1.2
//!    Chromium O ─▶ http://10.200.0.4:443, turn:10.200.0.2:3478 (UDP/TCP)
//!  server ns: onionrtc serve — relay udp+tcp 10.200.0.2:3478, tls
//!    10.200.0.2:443; web 10.200.0.4:443 (a second address, since the
//!    relay's TLS listener holds 10.200.0.2:443)
//! ```
//!
//! Media must flow both ways, R's allocation must be TURN over TLS from
//! R's address, and a direct UDP attempt from R to the relay must fail
//! (while the same attempt from the open namespace is answered).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use testkit::topology::{Topology, TopologyConfig};

use super::*;

/// The web listener's address: a second address of the server namespace.
const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 4);

#[test]
fn chromium_behind_443_only_firewall() {
    if !testkit::require_tool("chromium", &["--version"])
        || !testkit::require_tool("nft", &["--version"])
    {
        return;
    }
    if !testkit::netns::run_isolated("restricted::chromium_behind_443_only_firewall") {
        return;
    }
    let t0 = Instant::now();
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    topo.server()
        .ip(&["addr", "add", &format!("{WEB_IP}/24"), "dev", "eth0"])
        .unwrap();
    let restricted = topo.add_client().unwrap();
    restricted.install_firewall(&[443]).unwrap();
    let open = topo.add_client().unwrap();
    let (r_ip, o_ip) = (restricted.addr(), open.addr());

    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), SERVER_IP);
    let config = write_server_config(
        dir.path(),
        &cert,
        (WEB_IP, 443).into(),
        &format!(
            "turn_urls = [\"turn:{SERVER_IP}:{TURN_PORT}?transport=udp\", \"turn:{SERVER_IP}:{TURN_PORT}?transport=tcp\"]"
        ),
    );
    let data = dir.path().join("data");
    let mut cmd = topo.server().command(onionrtc());
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env_remove("ONIONRTC_AUTH_SECRET")
        .env("RUST_LOG", "info");
    let mut serve = Logged::spawn("serve", topo.server(), cmd);
    serve.wait_line("Open http://", Duration::from_secs(20));

    // What the firewall lets through: TCP 443 only.
    let relay_udp = SocketAddr::from((SERVER_IP, TURN_PORT));
    let probe = Duration::from_secs(2);
    assert!(restricted.tcp_probe(SocketAddr::from((SERVER_IP, 443)), probe));
    assert!(restricted.tcp_probe(SocketAddr::from((WEB_IP, 443)), probe));
    assert!(!restricted.tcp_probe(SocketAddr::from((SERVER_IP, TURN_PORT)), probe));
    // Direct UDP to the relay: answered from the open network (the relay
    // sees the caller's address), refused behind the firewall (sendto:
    // EPERM from the output chain's drop).
    let seen = stun_binding(&open, relay_udp).expect("STUN Binding from the open network");
    assert_eq!(seen.ip(), IpAddr::V4(o_ip));
    let refused = stun_binding(&restricted, relay_udp);
    eprintln!("direct UDP to the relay behind the firewall: {refused:?}");
    let err = refused.expect_err("direct UDP got through the firewall");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");

    // The connector behind the firewall: TURN over TLS to 443, the site on
    // 443, both directly.
    let mut cmd = restricted.command(onionrtc());
    cmd.args([
        "connect",
        "--relay",
        &format!("tls://{SERVER_IP}:443"),
        "--relay-spki",
        &cert.spki,
        "--web",
        &format!("http://{WEB_IP}:443"),
        "--via",
        "direct",
    ])
    .env("RUST_LOG", "info");
    let mut connector = Logged::spawn("connect", &restricted, cmd);
    let proxy = connector.wait_line("Open http://", Duration::from_secs(20));
    assert_eq!(proxy, "Open http://127.0.0.1:8081/");

    let room = random_room();
    let site = format!("http://{WEB_IP}:443");
    let mut pages = open_call(
        (&restricted, "R (behind the firewall)"),
        (&open, "O (open network)"),
        &site,
        &room,
    );
    let procs = [&serve, &connector];
    wait_connected(&mut pages, &procs);
    let t_connected = t0.elapsed();
    let pair = check_all_media(&mut pages, &procs);
    let (pair_r, pair_o) = (pair[0].clone(), pair[1].clone());
    eprintln!("R's selected pair: {pair_r}\nO's selected pair: {pair_o}");
    let (mode_r, urls_r) = mode_and_urls(&mut pages[0]);
    assert!(mode_r, "R does not show private mode");
    assert_eq!(urls_r, ["turn:127.0.0.1:3479?transport=udp"]);
    // `--via direct` hides nothing: the server sees R's own address.
    let (who_r, _) = whoami(&mut pages[0]);
    assert_eq!(who_r, r_ip.to_string());

    drop(pages);
    let connector_status = connector.terminate(Duration::from_secs(10));
    let serve_status = serve.terminate(Duration::from_secs(15));
    assert!(
        serve_status.is_some_and(|s| s.success()),
        "{serve_status:?}"
    );
    assert!(
        connector_status.is_some_and(|s| s.success()),
        "{connector_status:?}"
    );

    // R's allocation is TURN over TLS from R; nothing else came from R.
    let all = allocations(&serve.stderr());
    let alloc_r = allocation_of(&all, relayed_addr(&pair_r))
        .unwrap_or_else(|| panic!("no allocation for R's pair {pair_r} in {all:#?}"));
    assert_eq!(alloc_r.client.ip(), IpAddr::V4(r_ip), "{alloc_r:?}");
    assert_eq!(alloc_r.transport, "tls", "{alloc_r:?}");
    let alloc_o = allocation_of(&all, relayed_addr(&pair_o))
        .unwrap_or_else(|| panic!("no allocation for O's pair {pair_o} in {all:#?}"));
    assert_eq!(alloc_o.client.ip(), IpAddr::V4(o_ip), "{alloc_o:?}");
    for al in all.iter().filter(|a| a.client.ip() == IpAddr::V4(r_ip)) {
        assert_eq!(al.transport, "tls", "{}", al.line);
    }
    eprintln!(
        "relay, R's allocation: {}\nrelay, O's allocation: {}\n\
         restricted: connected {t_connected:?}, total {:?}",
        alloc_r.line,
        alloc_o.line,
        t0.elapsed()
    );
}

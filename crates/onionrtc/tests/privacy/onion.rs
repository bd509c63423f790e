//! `serve --onion` on the private Tor network (five relays: onion-service
//! circuits need four distinct ones), with the tests of this module in one
//! network namespace sharing one network:
//!
//! ```text
//!  client ns 0 = the private caller's machine, eth0 10.201.0.2
//!    Chromium A ─▶ http://127.0.0.1:8081 ┐ onionrtc connect --via tor (embedded arti)
//!    Chromium A ─▶ turn:127.0.0.1:3479    ┘   --web http://X.onion --relay tls://X.onion:443
//!  group ns: the tor testnet on its 127.0.0.1 (ORPorts and DirPorts bridged onto
//!    the loopback of client ns 0 and of the server ns, where "the Internet's" relays are)
//!  server ns, eth0 10.200.0.2: onionrtc serve --onion (its tor: HiddenServiceDir in
//!    the data dir, HiddenServiceExportCircuitID haproxy → the onion fronts)
//!  client ns 1 = the direct caller's machine, eth0 10.201.1.2
//!    Chromium B ─▶ http://10.200.0.2:8080, turn:10.200.0.2:3478 ────────▶ serve
//! ```
//!
//! - `call_through_onion_service`: C tor reaches the site and TURN over TCP
//!   (a STUN Binding answers the circuit's identity); A calls B relay/relay
//!   (TURN over TLS to the onion address); the relay sees A
//!   only from circuit identities (127.128.0.0/9), its log and metrics
//!   name neither A's address nor the exits' (no exit is used); 25 onion
//!   callers join within a minute and none is refused, while 25 joins from
//!   B's one address are (the negative control: 20 a minute per address).
//! - `address_survives_restart`: the .onion address is the same after a
//!   restart; the key files are 0600 in a 0700 directory.
//!
//! Spike result (recorded in docs/deployment.md): arti 0.47 (as a client)
//! reaches a C tor onion service on this `TestingTorNetwork`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use testkit::topology::{Topology, TopologyConfig};
use testkit::tor::{run_isolated_group, shared_with, TorOptions, TOPOLOGY_EXIT_ADDR};

use super::*;

const WEB_PORT: u16 = 8080;
/// How long serve may take to bootstrap its tor and print the onion URL.
const PUBLISH: Duration = Duration::from_secs(120);

/// The ORPorts and DirPorts of the network's relays, from its
/// `DirAuthority` lines (`orport=N … 127.0.0.1:DIR`).
fn relay_ports(lines: &[String]) -> Vec<u16> {
    let mut ports = Vec::new();
    for l in lines.iter().filter(|l| l.starts_with("DirAuthority ")) {
        for f in l.split_whitespace() {
            if let Some(p) = f.strip_prefix("orport=") {
                ports.push(p.parse().unwrap());
            } else if let Some(p) = f.strip_prefix("127.0.0.1:") {
                ports.push(p.parse().unwrap());
            }
        }
    }
    assert!(ports.len() >= 10, "{lines:?}");
    ports
}

/// Bridges every relay port onto `ns`'s loopback (as if the relays were
/// reachable from there).
fn bridge_relays(ns: &Netns, ports: &[u16]) -> Vec<LoopbackBridge> {
    ports
        .iter()
        .map(|&p| LoopbackBridge::start(ns, p, SocketAddr::from((Ipv4Addr::LOCALHOST, p))))
        .collect()
}

/// The `.onion` host of serve's `Onion http://HOST/` line.
fn onion_host(line: &str) -> String {
    let host = line
        .strip_prefix("Onion http://")
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or_else(|| panic!("bad onion line {line:?}"));
    assert!(host.ends_with(".onion") && host.len() == 62, "{host}");
    host.to_owned()
}

/// serve printed its URLs only after its tor said an HSDir accepted the
/// descriptor: the "waiting" and "descriptor published" lines are on
/// stderr (written before the `Onion` line on stdout; read by another
/// thread, hence the short bounded wait).
fn assert_published_before_urls(serve: &Logged, host: &str) {
    let has = |what: &str| {
        serve
            .stderr()
            .iter()
            .any(|l| l.contains(host) && l.contains(what))
    };
    let seen = testkit::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        has("descriptor published").then_some(())
    });
    assert!(
        seen.is_some() && has("waiting for its descriptor"),
        "serve printed its onion URL without the descriptor being published:\n{}",
        serve.stderr_tail(30)
    );
    if let Some(l) = serve
        .stderr()
        .iter()
        .find(|l| l.contains("descriptor published"))
    {
        eprintln!("onion: serve: {}", l.split("onion: ").last().unwrap_or(l));
    }
}

/// Polls `GET /healthz` on `host:80` through a C tor's SOCKS port until it
/// answers 200 (bounded by [`PUBLISH`]); the duration of the last, good
/// request.
fn healthz_via_c_tor(socks: SocketAddr, host: &str) -> Result<Duration, String> {
    let deadline = Instant::now() + PUBLISH;
    let mut last = String::new();
    for i in 0u32.. {
        if Instant::now() >= deadline {
            break;
        }
        let t = Instant::now();
        let user = format!("probe{i}");
        let got = testkit::tor::socks5_connect_host(
            socks,
            host,
            80,
            Some((&user, "x")),
            Duration::from_secs(30),
        )
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            write!(s, "GET /healthz HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match got {
            Ok(text) if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") => {
                return Ok(t.elapsed())
            }
            Ok(text) => last = text.lines().next().unwrap_or_default().to_owned(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

/// A STUN Binding over TCP to `host:3478` through a C tor's SOCKS port:
/// the XOR-MAPPED-ADDRESS of the answer.
fn binding_over_tcp_via_c_tor(socks: SocketAddr, host: &str) -> SocketAddr {
    let limit = Duration::from_secs(30);
    let mut s =
        testkit::tor::socks5_connect_host(socks, host, TURN_PORT, Some(("stun", "x")), limit)
            .unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(b"onion-tcp-1!");
    s.write_all(&req).unwrap();
    let mut head = [0u8; 20];
    s.read_exact(&mut head).unwrap();
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut msg = head.to_vec();
    msg.resize(20 + len, 0);
    s.read_exact(&mut msg[20..]).unwrap();
    parse_xor_mapped(&msg, &req[8..20]).unwrap_or_else(|| panic!("no mapped address: {msg:?}"))
}

#[test]
fn call_through_onion_service() {
    if !testkit::require_tool("chromium", &["--version"]) {
        return;
    }
    let Some(_pass) = run_isolated_group("onion::call_through_onion_service") else {
        return;
    };
    let t0 = Instant::now();
    let options = TorOptions::onion();
    let tor = shared_with(options.clone()).unwrap();
    // Start early in an onion time period and end long before the next
    // (see `TorOptions::time_in_onion_period`): at most ~3 min of waiting.
    let (early, late) = (Duration::from_secs(20), Duration::from_secs(150));
    let into = options.time_in_onion_period(std::time::SystemTime::now());
    let period = options.onion_time_period();
    if into < early || into + late > period {
        let wait = Duration::from_secs(
            (period.as_secs() - into.as_secs().min(period.as_secs()) + early.as_secs())
                % period.as_secs().max(1),
        );
        eprintln!(
            "onion: {:.0} s into a {:.0} s onion time period: waiting {:.0} s for the next",
            into.as_secs_f64(),
            period.as_secs_f64(),
            wait.as_secs_f64()
        );
        std::thread::sleep(wait);
    }
    let lines = tor.client_torrc_lines();
    let arti = tor.arti_config().unwrap();
    let ports = relay_ports(&lines);
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    let private = topo.add_client().unwrap();
    let direct = topo.add_client().unwrap();
    let a_ip = private.addr();
    let b_ip = direct.addr();
    let _bridges_server = bridge_relays(topo.server(), &ports);
    let _bridges_a = bridge_relays(&private, &ports);

    // ---- serve --onion ----
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), SERVER_IP);
    let torrc = dir.path().join("serve-torrc");
    std::fs::write(&torrc, lines.join("\n")).unwrap();
    let config = write_server_config(
        dir.path(),
        &cert,
        (SERVER_IP, WEB_PORT).into(),
        &format!("onion = true\ntor_extra_config = \"{}\"", torrc.display()),
    );
    let data = dir.path().join("data");
    let t_serve = Instant::now();
    let mut serve = start_serve(topo.server(), &config, &data);
    let host = onion_host(&serve.wait_line("Onion http://", PUBLISH));
    let t_tor_ready = t_serve.elapsed();
    assert_published_before_urls(&serve, &host);
    // Spike (a): the network's C tor client reaches the service.
    let c_tor = healthz_via_c_tor(tor.socks_addr(), &host).unwrap_or_else(|e| {
        panic!(
            "C tor did not reach the onion site within {PUBLISH:?}: {e}\nserve:\n{}\n{}",
            serve.stderr_tail(30),
            tor.logs(10)
        )
    });
    let t_c_tor = t_serve.elapsed();
    eprintln!(
        "onion: C tor client reached the site {:.1} s after serve's start (that request took {:.1} s)",
        t_c_tor.as_secs_f64(),
        c_tor.as_secs_f64()
    );

    // The relay's TURN over TCP on the onion address: a STUN Binding over
    // C tor answers the circuit's identity as the caller's address.
    let mapped = binding_over_tcp_via_c_tor(tor.socks_addr(), &host);
    assert!(signal::onion::is_identity(mapped.ip()), "{mapped}");
    eprintln!("onion: TURN over TCP to the onion address answers {mapped} (a circuit identity)");

    // ---- the private caller: connector with embedded Tor to the .onion ----
    let arti_file = dir.path().join("arti.toml");
    std::fs::write(&arti_file, &arti).unwrap();
    let arti_state = dir.path().join("arti-state");
    let mut cmd = private.command(onionrtc());
    cmd.args([
        "connect",
        "--relay",
        &format!("tls://{host}:443"),
        "--relay-spki",
        &cert.spki,
        "--web",
        &format!("http://{host}"),
        "--via",
        "tor",
        "--tor-extra-config",
    ])
    .arg(&arti_file)
    .arg("--tor-data-dir")
    .arg(&arti_state)
    .env("RUST_LOG", "info");
    let mut connector = Logged::spawn("connect", &private, cmd);
    let proxy = connector.wait_line("Open http://", Duration::from_secs(90));
    assert_eq!(proxy, "Open http://127.0.0.1:8081/");
    let local_web = SocketAddr::from((Ipv4Addr::LOCALHOST, 8081));
    // The descriptor is published within seconds of tor's bootstrap:
    // poll (bounded) until the site answers through the onion service.
    let reached = private
        .run_in(|| {
            let deadline = Instant::now() + PUBLISH;
            let mut last = (0, String::new());
            while Instant::now() < deadline {
                last = http(local_web, "GET /healthz", &[]);
                if last.0 == 200 {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(last)
        })
        .unwrap();
    if let Err(last) = reached {
        panic!(
            "the onion site did not answer within {PUBLISH:?}: {last:?}\nconnector:\n{}\nserve:\n{}",
            connector.stderr_tail(40),
            serve.stderr_tail(40)
        );
    }
    let t_published = t_serve.elapsed();
    eprintln!(
        "onion: serve's tor ready after {:.1} s, site reached through the onion service after \
         {:.1} s (from serve's start)",
        t_tor_ready.as_secs_f64(),
        t_published.as_secs_f64()
    );

    // ---- call: A (onion) and B (direct) ----
    let room = random_room();
    let t_call = Instant::now();
    let mut pages = open_call(
        (&private, "A (onion)"),
        (&direct, "B (direct)"),
        &format!("http://{SERVER_IP}:{WEB_PORT}"),
        &room,
    );
    let procs = [&serve, &connector];
    wait_connected(&mut pages, &procs);
    let setup = t_call.elapsed();
    let pair = check_all_media(&mut pages, &procs);
    eprintln!(
        "onion: call connected {:.1} s after the pages opened; A's pair: {}",
        setup.as_secs_f64(),
        pair[0]
    );
    let (mode_a, urls_a) = mode_and_urls(&mut pages[0]);
    assert!(mode_a, "A does not show private mode");
    assert_eq!(urls_a, ["turn:127.0.0.1:3479?transport=udp"]);
    // The site sees A as a circuit identity, not as an address.
    let (who_a, raw_a) = whoami(&mut pages[0]);
    let who_a: IpAddr = who_a
        .parse()
        .unwrap_or_else(|_| panic!("whoami of A: {raw_a}"));
    assert!(
        signal::onion::is_identity(who_a),
        "A's /api/whoami: {raw_a}"
    );

    // ---- 25 onion callers join within a minute; none is refused ----
    let t_joins = Instant::now();
    let onion_joins: Vec<Value> = private
        .run_in(|| {
            let handles: Vec<_> = (0..25)
                .map(|i| {
                    std::thread::spawn(move || {
                        let mut ws = ws_connect_within(local_web, Duration::from_secs(45))?;
                        Ok::<Value, String>(ws_join(&mut ws, &format!("onion-join-{i}")))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap_or_else(Value::String))
                .collect()
        })
        .unwrap();
    let joins_took = t_joins.elapsed();
    let refused: Vec<&Value> = onion_joins
        .iter()
        .filter(|v| v["type"] != "joined")
        .collect();
    assert!(
        refused.is_empty(),
        "onion callers refused: {refused:?}\nserve:\n{}",
        serve.stderr_tail(30)
    );
    assert!(joins_took < Duration::from_secs(60), "{joins_took:?}");
    eprintln!(
        "onion: 25 onion callers joined in {:.1} s",
        joins_took.as_secs_f64()
    );
    // Negative control: 25 joins from one address (B's) hit the limit.
    let web = SocketAddr::from((SERVER_IP, WEB_PORT));
    let direct_joined = direct
        .run_in(|| {
            let mut ws = ws_connect(web, &[]).unwrap();
            let mut joined = 0;
            for i in 0..25 {
                if ws_join(&mut ws, &format!("direct-join-{i}"))["type"] != "joined" {
                    break;
                }
                joined += 1;
                ws_send(&mut ws, &serde_json::json!({"type": "bye"}));
            }
            joined
        })
        .unwrap();
    // B's page joined once already: 19 or 20 more, never 25.
    assert!(
        (19..=20).contains(&direct_joined),
        "joins from one address before the limit: {direct_joined}"
    );

    // ---- TURN round trips through the onion service ----
    let (first, median) = private
        .run_in(|| allocate_rtts(SocketAddr::from((Ipv4Addr::LOCALHOST, 3479)), 20))
        .unwrap();
    eprintln!(
        "onion: TURN through the connector and the onion service: first Allocate→401 {:.0} ms \
         (new circuit), then median round trip {:.1} ms",
        first.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3
    );

    // ---- what the relay and the site saw ----
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let (status, metrics) = direct
        .run_in(|| http(web, "GET /metrics", &[&bearer]))
        .unwrap();
    assert_eq!(status, 200, "{metrics}");
    let spliced: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("onionrtc_onion_connections_total{") && l.contains("outcome=\"spliced\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        spliced >= 27,
        "onion connections spliced: {spliced}\n{metrics}"
    );
    drop(pages);
    // What serve logged up to here: the onion part of the test.
    let log = serve.stderr();

    // ---- for comparison: TURN through an exit (a second connector) ----
    let mut cmd = private.command(onionrtc());
    cmd.args([
        "connect",
        "--relay",
        &format!("tls://{SERVER_IP}:443"),
        "--relay-spki",
        &cert.spki,
        "--listen",
        "127.0.0.1:3480",
        "--via",
        "tor",
        "--tor-extra-config",
    ])
    .arg(&arti_file)
    .arg("--tor-data-dir")
    .arg(dir.path().join("arti-state-exit"))
    .env("RUST_LOG", "info");
    let mut via_exit = Logged::spawn("connect (exit)", &private, cmd);
    via_exit.wait_line("TURN", Duration::from_secs(90));
    let (first, median) = private
        .run_in(|| allocate_rtts(SocketAddr::from((Ipv4Addr::LOCALHOST, 3480)), 20))
        .unwrap();
    eprintln!(
        "onion: TURN through the connector and an exit: first Allocate→401 {:.0} ms \
         (new circuit), then median round trip {:.1} ms",
        first.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3
    );
    assert!(serve.terminate(Duration::from_secs(20)).is_some());
    let all = allocations(&log);
    let a_allocs: Vec<&Allocation> = all
        .iter()
        .filter(|al| al.client.ip() != IpAddr::V4(b_ip))
        .collect();
    assert!(!a_allocs.is_empty(), "no allocation but B's: {all:?}");
    for al in &a_allocs {
        assert!(
            signal::onion::is_identity(al.client.ip()) && al.transport == "tls",
            "an allocation not from an onion circuit: {}",
            al.line
        );
    }
    let a_text = a_ip.to_string();
    let exit_text = TOPOLOGY_EXIT_ADDR.to_string();
    for (what, text) in [("log", log.join("\n")), ("metrics", metrics)] {
        assert!(!text.contains(&a_text), "serve's {what} names A's address");
        assert!(
            !text.contains(&exit_text),
            "serve's {what} names the exits' address"
        );
    }
    eprintln!(
        "onion: {} allocations from onion circuits ({} distinct identities); whole test {:.1} s",
        a_allocs.len(),
        a_allocs
            .iter()
            .map(|a| a.client.ip())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn address_survives_restart() {
    let Some(_pass) = run_isolated_group("onion::address_survives_restart") else {
        return;
    };
    let tor = shared_with(TorOptions::onion()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let torrc = dir.path().join("serve-torrc");
    std::fs::write(&torrc, tor.client_torrc_lines().join("\n")).unwrap();
    let data = dir.path().join("data");
    let start = || {
        let mut cmd = testkit::topology::tied_command(onionrtc());
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.2:0",
            "--onion",
            "--tor-binary",
            "tor",
            "--tor-extra-config",
        ])
        .arg(&torrc)
        .arg("--data-dir")
        .arg(&data)
        .env_remove("ONIONRTC_AUTH_SECRET")
        .env("RUST_LOG", "info");
        let mut serve = Logged::spawn_here("serve", cmd);
        let host = onion_host(&serve.wait_line("Onion http://", PUBLISH));
        assert_published_before_urls(&serve, &host);
        (serve, host)
    };
    let (mut first, host) = start();
    assert!(first.terminate(Duration::from_secs(20)).is_some());
    // tor was stopped with serve: nothing holds its lock any more.
    let (mut second, again) = start();
    assert_eq!(host, again, "the onion address changed across a restart");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let service = data.join("onion-service");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&service), 0o700);
        assert_eq!(mode(&data.join("tor")), 0o700);
        for f in ["hs_ed25519_secret_key", "hs_ed25519_public_key", "hostname"] {
            assert_eq!(mode(&service.join(f)), 0o600, "{f}");
        }
    }
    assert!(second.terminate(Duration::from_secs(20)).is_some());
}

//! A call on `onionrtc serve` between a private caller (connector through a
//! private Tor network) and a direct caller, each in a client namespace of
//! its own:
//!
//! ```text
//!  client ns 0 = the private caller's machine, eth0 10.201.0.2
//!    Chromium A ─▶ http://127.0.0.1:8081 (web proxy)  ┐ onionrtc connect --via socks5://127.0.0.1:9050
//!    Chromium A ─▶ turn:127.0.0.1:3479 (UDP)          ┘     │ (127.0.0.1:9050: the private Tor network's
//!                                                           ▼  SOCKS port, bridged onto this loopback)
//!  group ns (router): tor testnet on its 127.0.0.1, exits bind 10.200.0.9 ──▶ serve
//!  client ns 1 = the direct caller's machine, eth0 10.201.1.2
//!    Chromium B ─▶ http://10.200.0.2:8080, turn:10.200.0.2:3478 ─────────────▶ serve
//!  server ns, eth0 10.200.0.2: onionrtc serve (relay udp/tcp :3478, tls :443;
//!    web :8080; log_client_addresses = true; RUST_LOG=debug)
//! ```
//!
//! Design: the private caller's connector *and* browser run in its own
//! namespace, whose address 10.201.0.2 is "the private caller's address".
//! That namespace keeps its route to the server: anything that bypassed
//! the connector or Tor (the page opened directly, the server's TURN URLs
//! used instead of the connector's, a host candidate, an address in the
//! SDP) would reach the server from, or name, 10.201.0.2 — so its absence
//! from every artifact means something. Tor's client runs in the group
//! namespace (its relays are on that namespace's loopback); its SOCKS port
//! is bridged onto 127.0.0.1:9050 of the caller's namespace, where a local
//! tor would listen.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use testkit::topology::{Topology, TopologyConfig};
use testkit::tor::{run_isolated_group, shared, TOPOLOGY_EXIT_ADDR};

use super::*;

const WEB_PORT: u16 = 8080;
const TLS_PORT: u16 = 443;
/// Where the private caller's "local tor" listens (the system tor's port).
const SOCKS_PORT: u16 = 9050;

/// `onionrtc connect` in the private caller's namespace: the relay's TLS
/// listener (pinned), the site over HTTP, through the "local tor" on
/// 127.0.0.1:9050; `extra` flags; info logs.
fn socks_connector(private: &Netns, cert: &Cert, extra: &[&str]) -> Logged {
    let mut cmd = private.command(onionrtc());
    cmd.args([
        "connect",
        "--relay",
        &format!("tls://{SERVER_IP}:{TLS_PORT}"),
        "--relay-spki",
        &cert.spki,
        "--web",
        &format!("http://{SERVER_IP}:{WEB_PORT}"),
        "--via",
        &format!("socks5://127.0.0.1:{SOCKS_PORT}"),
    ])
    .args(extra)
    .env("RUST_LOG", "info");
    Logged::spawn("connect", private, cmd)
}

#[test]
fn private_caller_leaves_no_address() {
    if !testkit::require_tool("chromium", &["--version"]) {
        return;
    }
    let Some(_pass) = run_isolated_group("tor_call::private_caller_leaves_no_address") else {
        return;
    };
    let t0 = Instant::now();
    let tor = shared().unwrap();
    let t_tor = t0.elapsed();
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    assert_eq!(topo.server_addr(), SERVER_IP);
    let private = topo.add_client().unwrap();
    let direct = topo.add_client().unwrap();
    let a_ip = private.addr();
    let b_ip = direct.addr();
    // The private caller's address in clear, and as the relay would mask
    // it (`10.201.0.x`): neither may appear anywhere.
    let a_text = a_ip.to_string();
    let a_masked = {
        let o = a_ip.octets();
        format!("{}.{}.{}.", o[0], o[1], o[2])
    };
    assert!(!b_ip.to_string().starts_with(&a_masked));
    // Control: the private caller's machine does reach the server directly,
    // and would be seen there as itself. Only the connector and Tor keep
    // its address away.
    assert_eq!(
        direct_source(&private, topo.server(), SERVER_IP),
        IpAddr::V4(a_ip)
    );

    // ---- serve ----
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), SERVER_IP);
    let config = write_server_config(
        dir.path(),
        &cert,
        (SERVER_IP, WEB_PORT).into(),
        &format!(
            "turn_urls = [\"turn:{SERVER_IP}:{TURN_PORT}?transport=udp\", \
             \"turn:{SERVER_IP}:{TURN_PORT}?transport=tcp\"]"
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
        .env("RUST_LOG", "debug");
    let mut serve = Logged::spawn("serve", topo.server(), cmd);
    let open = serve.wait_line("Open http://", Duration::from_secs(20));
    assert_eq!(open, format!("Open http://{SERVER_IP}:{WEB_PORT}/"));

    // ---- the private caller: its "local tor", the connector, Chromium ----
    let _bridge = LoopbackBridge::start(&private, SOCKS_PORT, tor.socks_addr());
    let mut connector = socks_connector(&private, &cert, &[]);
    let proxy = connector.wait_line("Open http://", Duration::from_secs(60));
    assert_eq!(proxy, "Open http://127.0.0.1:8081/");
    let t_ready = t0.elapsed();

    let room = random_room();
    let site = format!("http://{SERVER_IP}:{WEB_PORT}");
    let mut pages = open_call(
        (&private, "A (private)"),
        (&direct, "B (direct)"),
        &site,
        &room,
    );
    let procs = [&serve, &connector];

    // ---- both connect, relay/relay, media both ways ----
    wait_connected(&mut pages, &procs);
    let t_connected = t0.elapsed();
    let pair = check_all_media(&mut pages, &procs);
    let (pair_a, pair_b) = (pair[0].clone(), pair[1].clone());
    eprintln!("A's selected pair: {pair_a}\nB's selected pair: {pair_b}");

    // A is in private mode with the connector's TURN URL; B is not.
    let (mode_a, urls_a) = mode_and_urls(&mut pages[0]);
    let (mode_b, urls_b) = mode_and_urls(&mut pages[1]);
    assert!(mode_a, "A does not show private mode");
    assert_eq!(urls_a, ["turn:127.0.0.1:3479?transport=udp"]);
    assert!(!mode_b, "B shows private mode");
    assert!(
        urls_b.iter().all(|u| u.contains(&SERVER_IP.to_string())),
        "{urls_b:?}"
    );
    assert_eq!(pair_a["relayProtocol"], "udp", "{pair_a}");
    // A's room link names the site, not the connector's loopback address
    // (which nobody else could open); B's is the site's as it is.
    for b in pages.iter_mut() {
        let link = b
            .page
            .evaluate("document.getElementById('room-link').href")
            .unwrap();
        assert_eq!(
            link.as_str(),
            Some(format!("{site}/#room={room}").as_str()),
            "room link"
        );
    }

    // What the server sees of each page: the exit, and B itself.
    let (who_a, raw_a) = whoami(&mut pages[0]);
    let (who_b, raw_b) = whoami(&mut pages[1]);
    eprintln!("/api/whoami from A: {raw_a}; from B: {raw_b}");
    assert_eq!(who_a, TOPOLOGY_EXIT_ADDR.to_string(), "A's /api/whoami");
    assert_eq!(who_b, b_ip.to_string(), "B's /api/whoami");

    // What each page received from the other: only the relay's address
    // (and 0.0.0.0 where the sanitizer wrote over an address).
    let mut received = Vec::new();
    for i in 0..pages.len() {
        let v = pages[i].page.evaluate("window.onionrtc.received").unwrap();
        match received_lines(&v) {
            Ok(lines) => received.push(lines),
            Err(e) => {
                let name = pages[i].name.clone();
                fail(&format!("{name}: {e}"), &mut pages, &procs);
            }
        }
    }
    let (received_a, received_b) = (received[0].clone(), received[1].clone());
    for (who, lines) in [("A", &received_a), ("B", &received_b)] {
        for l in lines {
            for ip in ipv4_literals(l) {
                assert!(
                    ip == "0.0.0.0" || ip == SERVER_IP.to_string(),
                    "{who} received address {ip}: {l}"
                );
            }
        }
    }
    let text_b = received_b.join("\n");
    assert!(
        !text_b.contains(&a_masked),
        "B received A's address:\n{text_b}"
    );
    assert!(
        !received_a.join("\n").contains(&b_ip.to_string()),
        "A received B's address"
    );

    // The statistics of the call are stored (before the server stops),
    // under the room's keyed hash.
    let db = data.join("signal.sqlite");
    let hash = room_hash(&data, &room);
    let stored = testkit::wait_until(Duration::from_secs(15), Duration::from_millis(500), || {
        let n = samples_of_room(&db, &hash);
        (n >= 4).then_some(n)
    });
    let Some(stored) = stored else {
        let n = samples_of_room(&db, &hash);
        fail(
            &format!("stored samples for {room} ({hash}): {n}"),
            &mut pages,
            &procs,
        );
    };

    // ---- stop everything, then read the artifacts ----
    drop(pages);
    let connector_status = connector.terminate(Duration::from_secs(10));
    let serve_status = serve.terminate(Duration::from_secs(15));
    assert!(
        serve_status.is_some_and(|s| s.success()),
        "serve: {serve_status:?}\n{}",
        serve.stderr_tail(40)
    );
    assert!(
        connector_status.is_some_and(|s| s.success()),
        "connector: {connector_status:?}\n{}",
        connector.stderr_tail(40)
    );
    let log = serve.stderr();

    // The relay's log: A's allocation came from the exit, over TLS; B's
    // from B's own address; nothing from anywhere else.
    let all = allocations(&log);
    let alloc_a = allocation_of(&all, relayed_addr(&pair_a))
        .unwrap_or_else(|| panic!("no allocation for A's pair {pair_a} in {all:#?}"));
    let alloc_b = allocation_of(&all, relayed_addr(&pair_b))
        .unwrap_or_else(|| panic!("no allocation for B's pair {pair_b} in {all:#?}"));
    assert_eq!(
        alloc_a.client.ip(),
        IpAddr::V4(TOPOLOGY_EXIT_ADDR),
        "{alloc_a:?}"
    );
    assert_eq!(alloc_a.transport, "tls", "{alloc_a:?}");
    assert_eq!(alloc_b.client.ip(), IpAddr::V4(b_ip), "{alloc_b:?}");
    for al in &all {
        let from_exit = al.client.ip() == IpAddr::V4(TOPOLOGY_EXIT_ADDR) && al.transport == "tls";
        let from_b = al.client.ip() == IpAddr::V4(b_ip);
        assert!(
            from_exit || from_b,
            "allocation from elsewhere: {}",
            al.line
        );
    }

    // No artifact names the private caller: not the relay's or the
    // signaling server's log (one stderr, at debug level), not the stored
    // rows, not any byte of the data directory.
    let leaked: Vec<&String> = log.iter().filter(|l| l.contains(&a_masked)).collect();
    assert!(leaked.is_empty(), "serve's log names A: {leaked:#?}");
    let rows = sqlite_rows(&db);
    assert!(
        rows.iter().any(|r| r.contains(&hash)),
        "no stored row for {room} ({hash}): {rows:#?}"
    );
    let leaked: Vec<&String> = rows.iter().filter(|r| r.contains(&a_masked)).collect();
    assert!(leaked.is_empty(), "stored rows name A: {leaked:#?}");
    for (path, bytes) in files_bytes(&data) {
        for needle in [a_masked.as_str(), room.as_str()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} contains {needle}",
                path.display()
            );
        }
    }
    // The exit appears in the relay's log; B's address in its log too.
    let exit_text = TOPOLOGY_EXIT_ADDR.to_string();
    assert!(log.iter().any(|l| l.contains(&exit_text)));
    assert!(log.iter().any(|l| l.contains(&b_ip.to_string())));

    eprintln!(
        "--- evidence (A = {a_text}, private; B = {b_ip}, direct; exit {exit_text})\n\
         relay, A's allocation: {}\nrelay, B's allocation: {}\n\
         serve log: {} lines, {} allocations, none naming {a_masked}x\n\
         stored rows: {}, samples {stored}, none naming {a_masked}x\n\
         B received {} SDP/candidate lines, addresses only {SERVER_IP} and 0.0.0.0\n\
         connector: {}",
        alloc_a.line,
        alloc_b.line,
        log.len(),
        all.len(),
        rows.len(),
        received_b.len(),
        connector.stderr_tail(1),
    );
    eprintln!("--- serve's log (relay and signaling, RUST_LOG=debug):");
    for l in &log {
        eprintln!("{l}");
    }
    eprintln!(
        "tor_call timing: tor {t_tor:?}, serve + connector ready {t_ready:?}, \
         connected {t_connected:?}, total {:?}",
        t0.elapsed()
    );
}

/// `onionrtc connect https://SITE` with nothing else but the site's CA
/// (issue 15): embedded Tor (no --via), the relay and its pins from the
/// site's `/.well-known/onionrtc.json` fetched through Tor. `serve` sits
/// behind nginx (HTTPS, a test CA's certificate for the server's address,
/// nginx a trusted proxy), so `/api/whoami` through the connector shows
/// the address the site sees: the exits', never this namespace's own.
#[test]
fn one_argument_connect_over_embedded_tor() {
    if !testkit::require_tool("nginx", &["-v"]) {
        return;
    }
    let Some(_pass) = run_isolated_group("tor_call::one_argument_connect_over_embedded_tor") else {
        return;
    };
    let tor = shared().unwrap();
    let arti = tor.arti_config().unwrap();
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), SERVER_IP);
    let web: SocketAddr = (Ipv4Addr::LOCALHOST, WEB_PORT).into();
    let config = write_server_config(
        dir.path(),
        &cert,
        web,
        "trusted_proxies = [\"127.0.0.1/32\"]",
    );
    let data = dir.path().join("data");
    let mut serve = start_serve(topo.server(), &config, &data);
    let ca = testkit::nginx::TestCa::new(dir.path(), &[&SERVER_IP.to_string()]);
    let https: SocketAddr = (SERVER_IP, 8443).into();
    let ngx = dir.path().join("nginx");
    std::fs::create_dir_all(&ngx).unwrap();
    let conf = testkit::nginx::proxy_config(&ngx, https, web, Some(&ca), "");
    let mut cmd = topo.server().command("nginx");
    cmd.args(testkit::nginx::args(&ngx, &conf));
    let _nginx = Logged::spawn("nginx", topo.server(), cmd);
    // Control: from this namespace directly, the site is reachable and
    // sees this namespace's own address.
    let own = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        TcpStream::connect_timeout(&https, Duration::from_secs(2))
            .ok()
            .and_then(|s| s.local_addr().ok())
    })
    .expect("nginx listens")
    .ip();
    assert_ne!(own, IpAddr::V4(TOPOLOGY_EXIT_ADDR));

    let extra = dir.path().join("arti.toml");
    std::fs::write(&extra, arti).unwrap();
    let state = dir.path().join("tor-state");
    let mut cmd = testkit::topology::tied_command(onionrtc());
    cmd.arg("connect")
        .arg(format!("https://{https}/?room=one-argument"))
        .arg("--ca")
        .arg(&ca.ca)
        .arg("--tor-extra-config")
        .arg(&extra)
        .arg("--tor-data-dir")
        .arg(&state)
        .args(["--listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"]);
    let t0 = Instant::now();
    let mut connect = Logged::spawn_here("connect URL", cmd);
    let open = connect.wait_line("Open http://", Duration::from_secs(120));
    let ready = t0.elapsed();
    let local = open.strip_prefix("Open ").unwrap();
    assert!(local.ends_with("/?room=one-argument"), "{open}");
    // stdout and stderr are read by separate threads: the stderr lines
    // printed before `Open` may arrive a little after it.
    let reachable = format!("relay tls://{SERVER_IP}:443 reachable via tor (embedded)");
    let err = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let err = connect.stderr().join("\n");
        err.contains(&reachable).then_some(err)
    })
    .unwrap_or_else(|| connect.stderr().join("\n"));
    assert!(err.contains("relay TLS pinned to 2 key(s)"), "{err}");
    assert!(err.contains(&reachable), "{err}");
    assert!(!err.contains("NOT ANONYMOUS"), "{err}");
    let addr: SocketAddr = local["http://".len()..local.rfind('/').unwrap()]
        .parse()
        .unwrap();
    // Each GET is bounded (5 s); a slow first circuit gets more tries.
    let get = |target: &str| {
        testkit::wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
            let (status, body) = http(addr, target, &[]);
            (status == 200).then_some(body)
        })
        .unwrap_or_else(|| panic!("{target} through the connector failed"))
    };
    let page = get("GET /?room=one-argument");
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    let whoami = get("GET /api/whoami");
    assert!(
        whoami.contains(&TOPOLOGY_EXIT_ADDR.to_string()) && !whoami.contains(&own.to_string()),
        "the site saw {whoami} (exit {TOPOLOGY_EXIT_ADDR}, this namespace {own})"
    );
    let boot: Vec<String> = connect
        .stderr()
        .into_iter()
        .filter(|l| l.contains("bootstrapped in"))
        .collect();
    eprintln!(
        "connect URL over embedded Tor: ready in {ready:?} (Tor: {boot:?}); the site saw {}",
        whoami.trim()
    );
    let status = connect.terminate(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let status = serve.terminate(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// What a page's selected pair and inbound media are now (for the hop test).
fn pair_and_inbound(b: &mut Browser) -> Option<(String, u64)> {
    let v = b.page.evaluate(PAGE_STATS).ok()?;
    let pair = format!(
        "{}:{}",
        v["localAddress"].as_str()?,
        v["localPort"].as_u64()?
    );
    Some((pair, v["inbound"].as_u64().unwrap_or(0)))
}

/// Polls the pages together until each one's inbound media, having
/// stopped, grows again between two polls on one selected pair (and, where
/// `old` names one, a pair other than that): per page, the time since
/// `since`, or `None` within `limit`.
fn media_back(
    pages: &mut [Browser],
    old: &[Option<String>],
    since: Instant,
    limit: Duration,
) -> Vec<Option<Duration>> {
    let deadline = Instant::now() + limit;
    let n = pages.len();
    let mut last: Vec<Option<(String, u64)>> = vec![None; n];
    let mut stopped = vec![false; n];
    let mut back: Vec<Option<Duration>> = vec![None; n];
    while Instant::now() < deadline && back.iter().any(Option::is_none) {
        for i in 0..n {
            if back[i].is_some() {
                continue;
            }
            let Some((pair, inbound)) = pair_and_inbound(&mut pages[i]) else {
                continue;
            };
            if let Some((lp, li)) = &last[i] {
                if inbound == *li {
                    stopped[i] = true;
                } else if stopped[i] && *lp == pair && old[i].as_ref().is_none_or(|o| *o != pair) {
                    back[i] = Some(since.elapsed());
                }
            }
            last[i] = Some((pair, inbound));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    back
}

/// Circuit hopping (issue 15): mid-call, the private caller's TURN circuit
/// stalls (its SOCKS connections to the relay's TLS port stop carrying
/// bytes at the caller's "local tor", as when a relay on the circuit stops
/// forwarding). The connector finds the stall, tells the page on
/// `/connector/events`, the page restarts ICE, and the new TURN flows (on
/// new circuits) carry the call: the same call, never ended. Then tor
/// closes the new circuit (as when a relay on it dies): the same again.
/// Negative control: with hopping off in both pages, the stall is not
/// recovered from.
#[test]
fn degraded_circuit_hops_without_dropping_the_call() {
    if !testkit::require_tool("chromium", &["--version"]) {
        return;
    }
    let Some(_pass) =
        run_isolated_group("tor_call::degraded_circuit_hops_without_dropping_the_call")
    else {
        return;
    };
    let tor = shared().unwrap();
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    let private = topo.add_client().unwrap();
    let direct = topo.add_client().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), SERVER_IP);
    let config = write_server_config(
        dir.path(),
        &cert,
        (SERVER_IP, WEB_PORT).into(),
        &format!("turn_urls = [\"turn:{SERVER_IP}:{TURN_PORT}?transport=udp\"]"),
    );
    let data = dir.path().join("data");
    let serve = start_serve(topo.server(), &config, &data);
    let bridge = LoopbackBridge::start(&private, SOCKS_PORT, tor.socks_addr());
    let mut connector = socks_connector(&private, &cert, &["--race", "3"]);
    connector.wait_line("Open http://", Duration::from_secs(60));
    let site = format!("http://{SERVER_IP}:{WEB_PORT}");
    let mut pages = open_call(
        (&private, "A (private)"),
        (&direct, "B (direct)"),
        &site,
        &random_room(),
    );
    let procs = [&serve, &connector];
    wait_connected(&mut pages, &procs);
    let pairs = check_all_media(&mut pages, &procs);
    let member_b = pages[0]
        .page
        .evaluate("Object.keys(window.onionrtc.peers)[0]")
        .unwrap();
    let flows = pages[0]
        .page
        .evaluate("fetch('/connector/flows').then((r) => r.json())")
        .unwrap();
    eprintln!("A's connector flows before the fault: {flows}");
    assert!(
        flows["flows"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["raced"] == 3 && f["allocated"] == true)),
        "{flows}"
    );

    // ---- the fault: A's TURN circuits stall ----
    let old_a = format!(
        "{}:{}",
        pairs[0]["localAddress"].as_str().unwrap(),
        pairs[0]["localPort"]
    );
    let t_fault = Instant::now();
    let stalled = bridge.stall(TLS_PORT);
    assert!(stalled >= 1, "no TURN connection through the bridge");
    // Media must come back, at A on a new pair, within a generous bound
    // (the figures are reported, not asserted).
    let back = media_back(
        &mut pages,
        &[Some(old_a), None],
        t_fault,
        Duration::from_secs(40),
    );
    let (back_a, back_b) = (back[0], back[1]);
    if back.iter().any(Option::is_none) {
        fail(
            &format!("media did not come back after the stall: {back:?}"),
            &mut pages,
            &procs,
        );
    }
    let hop_a = pages[0].page.evaluate("window.onionrtc.hop").unwrap();
    let hop_b = pages[1].page.evaluate("window.onionrtc.hop").unwrap();
    let flows = pages[0]
        .page
        .evaluate("fetch('/connector/flows').then((r) => r.json())")
        .unwrap();
    eprintln!(
        "hop: {stalled} TURN connection(s) stalled; media back at A after {back_a:?}, at B after \
         {back_b:?}; A: {hop_a}; B: {hop_b}\nA's connector flows after: {flows}"
    );
    assert!(hop_a["events"].as_u64().unwrap_or(0) >= 1, "{hop_a}");
    assert!(hop_a["restarts"].as_u64().unwrap_or(0) >= 1, "{hop_a}");
    // The same call: the same member, the page never left it.
    for b in pages.iter_mut() {
        let state = b.page.evaluate("window.onionrtc.state").unwrap();
        assert_eq!(state, "connected", "{}", b.name);
    }
    assert_eq!(
        pages[0]
            .page
            .evaluate("Object.keys(window.onionrtc.peers)[0]")
            .unwrap(),
        member_b
    );
    let log = connector.stderr().join("\n");
    assert!(log.contains("circuit degraded (stall)"), "{log}");

    // ---- the circuit dies: tor closes it (as when a relay on it goes) ----
    // A fault of its own, not part of the first one: the pages' hop
    // throttle (1 s) and the first hop's signaling are behind us.
    std::thread::sleep(Duration::from_secs(2));
    let (pair_now, _) = pair_and_inbound(&mut pages[0]).unwrap();
    let target = format!("{SERVER_IP}:{TLS_PORT}");
    let mut control = tor.control().unwrap();
    let mut circuits: Vec<String> = control
        .stream_status()
        .unwrap()
        .into_iter()
        .filter(|s| s.target == target && s.status == "SUCCEEDED")
        .map(|s| s.circuit)
        .collect();
    circuits.sort();
    circuits.dedup();
    assert!(
        !circuits.is_empty(),
        "no circuit carries a stream to {target}"
    );
    let t_fault = Instant::now();
    for c in &circuits {
        control.command(&format!("CLOSECIRCUIT {c}")).unwrap();
    }
    let back = media_back(
        &mut pages,
        &[Some(pair_now), None],
        t_fault,
        Duration::from_secs(40),
    );
    if back.iter().any(Option::is_none) {
        fail(
            &format!("media did not come back after the circuit closed: {back:?}"),
            &mut pages,
            &procs,
        );
    }
    let hop_a = pages[0].page.evaluate("window.onionrtc.hop").unwrap();
    eprintln!(
        "hop: {} circuit(s) to the relay closed by tor; media back at A after {:?}, at B after \
         {:?}; A: {hop_a}",
        circuits.len(),
        back[0],
        back[1]
    );
    assert!(hop_a["restarts"].as_u64().unwrap_or(0) >= 2, "{hop_a}");
    let log = connector.stderr().join("\n");
    for l in log.lines().filter(|l| l.contains("circuit degraded")) {
        eprintln!("connector: {l}");
    }
    assert!(log.contains("circuit degraded (closed)"), "{log}");
    for b in pages.iter_mut() {
        let state = b.page.evaluate("window.onionrtc.state").unwrap();
        assert_eq!(state, "connected", "{}", b.name);
    }

    // ---- negative control: hopping off in both pages, the same fault ----
    for b in pages.iter_mut() {
        b.page
            .evaluate("window.onionrtc.hop.enabled = false")
            .unwrap();
    }
    let (pair_now, _) = pair_and_inbound(&mut pages[0]).unwrap();
    let t_fault = Instant::now();
    let stalled = bridge.stall(TLS_PORT);
    assert!(stalled >= 1);
    // Within the bound the hop met above (and more), no recovery: the
    // inbound media of A stays flat.
    std::thread::sleep(Duration::from_secs(2));
    let (_, i0) = pair_and_inbound(&mut pages[0]).unwrap();
    let recovered = media_back(&mut pages[..1], &[None], t_fault, Duration::from_secs(8))[0];
    let (pair_after, i1) = pair_and_inbound(&mut pages[0]).unwrap();
    eprintln!(
        "negative control: hopping off, A's inbound {i0} -> {i1}, pair {pair_now} -> {pair_after}, \
         recovered: {recovered:?}"
    );
    assert!(
        recovered.is_none(),
        "recovered without hopping: {recovered:?}"
    );
    assert_eq!(i0, i1, "A's media flowed with its circuit stalled");
    drop(pages);
    let _ = connector.terminate(Duration::from_secs(10));
    eprintln!("connector at the end: {}", connector.stderr_tail(1));

    // ---- what racing buys: setup and RTT, --race 1 against --race 3 ----
    let mut figures = Vec::new();
    for race in ["1", "3"] {
        let mut c = socks_connector(
            &private,
            &cert,
            &["--race", race, "--web-listen", "127.0.0.1:0"],
        );
        c.wait_line("TURN: ", Duration::from_secs(60));
        let turn: SocketAddr = (Ipv4Addr::LOCALHOST, 3479).into();
        // One flow after the other: the first Allocate's answer (upstreams
        // raced, circuits built, TLS, the relay's 401), then one more on
        // the kept upstream (the circuit's RTT).
        let samples: Vec<(Duration, Duration)> = private
            .run_in(move || (0..RACE_FLOWS).map(|_| allocate_rtts(turn, 1)).collect())
            .unwrap();
        let _ = c.terminate(Duration::from_secs(10));
        assert_eq!(samples.len(), RACE_FLOWS, "--race {race}: {samples:?}");
        figures.push((race, samples));
    }
    for (race, samples) in &figures {
        let mut setup: Vec<Duration> = samples.iter().map(|s| s.0).collect();
        let mut rtt: Vec<Duration> = samples.iter().map(|s| s.1).collect();
        setup.sort();
        rtt.sort();
        eprintln!(
            "--race {race}, {RACE_FLOWS} flows: setup (first Allocate answered) median {:?}, max {:?}; \
             RTT on the kept upstream median {:?}, max {:?}",
            setup[RACE_FLOWS / 2],
            setup[RACE_FLOWS - 1],
            rtt[RACE_FLOWS / 2],
            rtt[RACE_FLOWS - 1]
        );
    }
}

/// Flows measured per race width.
const RACE_FLOWS: usize = 12;

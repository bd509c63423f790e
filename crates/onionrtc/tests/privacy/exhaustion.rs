//! One address tries to take down signaling and the relay by holding
//! connections: 20,000 WebSocket upgrades that never join and 1,000 HTTP
//! connections that send one byte, all from client ns 0. Meanwhile a
//! caller on client ns 1 must still join a room and exchange offer and
//! answer with a second member, the relay (same process) must still
//! allocate for coturn's `turnutils_uclient`, and `/metrics` must count
//! the refused connections.
//!
//! ```text
//!  client ns 0 (flood)   10.201.0.2 ─┐
//!  client ns 1 (caller)  10.201.1.2 ─┴─▶ server ns: serve web 10.200.0.2:8080,
//!                                        relay udp/tcp 10.200.0.2:3478
//! ```

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testkit::topology::{Topology, TopologyConfig};

use super::*;

const WEB_PORT: u16 = 8080;
/// The flood.
const WEBSOCKETS: usize = 20_000;
const ONE_BYTE: usize = 1_000;
/// The flood stops opening connections after this long, whatever it got.
const FLOOD_LIMIT: Duration = Duration::from_secs(40);
/// Closed connections are let go of this often.
const PRUNE_EVERY: usize = 500;

/// What the flooding client got.
#[derive(Debug, Default)]
struct Flood {
    opened: usize,
    failed: usize,
    elapsed: Duration,
    sockets: Vec<TcpStream>,
}

/// Opens `n` connections to `web`, sending `first` on each, and keeps
/// those the server keeps open. (The server closes refused ones at once;
/// their client ends are let go every [`PRUNE_EVERY`] connections, so the
/// flood fits in this process's open-file limit.)
fn flood(web: SocketAddr, n: usize, first: &[u8], deadline: Instant, into: &mut Flood) {
    let t0 = Instant::now();
    for i in 0..n {
        if Instant::now() > deadline {
            break;
        }
        match TcpStream::connect_timeout(&web, Duration::from_secs(2)) {
            Ok(mut s) => {
                // A refused connection may already be closed: ignore.
                let _ = s.write_all(first);
                into.opened += 1;
                into.sockets.push(s);
            }
            Err(_) => into.failed += 1,
        }
        if i % PRUNE_EVERY == PRUNE_EVERY - 1 {
            prune(&mut into.sockets);
        }
    }
    prune(&mut into.sockets);
    into.elapsed += t0.elapsed();
}

/// Lets go of the connections the server has closed.
fn prune(sockets: &mut Vec<TcpStream>) {
    sockets.retain(|s| {
        let _ = s.set_nonblocking(true);
        let mut b = [0u8; 1];
        match s.peek(&mut b) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    });
}

#[test]
fn one_address_cannot_exhaust_the_web_listener() {
    if !testkit::require_tool("turnutils_uclient", &[])
        || !testkit::require_tool("chromium", &["--version"])
    {
        return;
    }
    if !testkit::netns::run_isolated_with_limit(
        "exhaustion::one_address_cannot_exhaust_the_web_listener",
        Duration::from_secs(150),
    ) {
        return;
    }
    let t0 = Instant::now();
    // The flood's sockets live in this process; serve inherits the limit
    // (its relay raises its own soft limit to the hard one).
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(nofile >= 4096, "open-file limit {nofile} too low");
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    let (attacker, caller) = (topo.add_client().unwrap(), topo.add_client().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("onionrtc.toml");
    std::fs::write(
        &config,
        format!(
            r#"[relay]
listen = ["udp://{SERVER_IP}:{TURN_PORT}", "tcp://{SERVER_IP}:{TURN_PORT}"]
relay_ip = "{SERVER_IP}"

[serve]
listen = "{SERVER_IP}:{WEB_PORT}"
"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut serve = start_serve(topo.server(), &config, &data);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let web = SocketAddr::from((SERVER_IP, WEB_PORT));

    // The flood, from the attacker's namespace.
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {web}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let deadline = Instant::now() + FLOOD_LIMIT;
    let metrics_now = || {
        let (status, text) = caller
            .run_in(|| http(web, "GET /metrics", &[&bearer]))
            .unwrap();
        assert_eq!(status, 200, "{text}");
        text
    };
    let refused_of = |text: &str| {
        metric(
            text,
            "onionrtc_signal_web_refused_total{reason=\"per_address\"}",
        )
        .unwrap_or(0)
    };
    let (held, mid) = std::thread::scope(|scope| {
        let flooding = scope.spawn(|| {
            attacker
                .run_in(|| {
                    let mut f = Flood::default();
                    flood(web, WEBSOCKETS, upgrade.as_bytes(), deadline, &mut f);
                    flood(
                        web,
                        ONE_BYTE,
                        b"G",
                        deadline + Duration::from_secs(10),
                        &mut f,
                    );
                    f
                })
                .unwrap()
        });
        // Once the flood holds its cap and is being refused: the snapshot,
        // then a call from the other address, while the flood goes on.
        let mid = testkit::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            let m = metrics_now();
            (refused_of(&m) >= 1_000).then_some(m)
        })
        .expect("the flood is not being refused");
        let t_call = Instant::now();
        let (credentials, exchanged) = caller
            .run_in(|| {
                let room = random_room();
                let mut a = ws_connect(web, &[]).unwrap();
                let ja = ws_join(&mut a, &room);
                assert_eq!(ja["type"], "joined", "{ja}");
                let mut b = ws_connect(web, &[]).unwrap();
                let jb = ws_join(&mut b, &room);
                assert_eq!(jb["type"], "joined", "{jb}");
                assert_eq!(ws_recv(&mut a)["type"], "peer-joined");
                let sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
                ws_send(&mut a, &serde_json::json!({"type": "offer", "sdp": sdp}));
                let offer = ws_recv(&mut b);
                ws_send(&mut b, &serde_json::json!({"type": "answer", "sdp": sdp}));
                let answer = ws_recv(&mut a);
                (
                    ja["iceServers"][0].clone(),
                    offer["type"] == "offer" && answer["type"] == "answer",
                )
            })
            .unwrap();
        assert!(exchanged, "offer/answer not exchanged");
        eprintln!(
            "join + offer/answer during the flood: {:?}",
            t_call.elapsed()
        );

        // A real call: two Chromium pages of the caller, media through the
        // relay.
        let t_chromium = Instant::now();
        let room = random_room();
        let site = format!("http://{web}");
        let flags = [format!("--unsafely-treat-insecure-origin-as-secure={site}")];
        let url = format!("{site}/?room={room}");
        let mut pages = [
            Browser::open(&caller, "A", &flags, &url),
            Browser::open(&caller, "B", &flags, &url),
        ];
        wait_connected(&mut pages, &[&serve]);
        check_all_media(&mut pages, &[&serve]);
        eprintln!(
            "Chromium call during the flood: connected with media in {:?}",
            t_chromium.elapsed()
        );
        drop(pages);
        // The relay still allocates (coturn's client, client to client).
        let user = credentials["username"].as_str().unwrap().to_owned();
        let pass = credentials["credential"].as_str().unwrap().to_owned();
        let mut uclient = caller.command("turnutils_uclient");
        uclient
            .args(["-u", &user, "-w", &pass])
            .args(["-y", "-c", "-m", "2", "-n", "20", "-l", "120", "-z", "5"])
            .args(["-p", &TURN_PORT.to_string(), &SERVER_IP.to_string()]);
        let out = testkit::run_bounded(&mut uclient, Duration::from_secs(30));
        let report = testkit::coturn::parse_uclient(&out).unwrap_or_else(|| {
            panic!(
                "no uclient report\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        eprintln!("uclient during the flood: {report:?}");
        assert!(
            report.sent > 0 && report.received == report.sent,
            "{report:?}"
        );
        (flooding.join().unwrap(), mid)
    });
    eprintln!(
        "flood: {} connections opened ({} still open), {} failed, in {:?}; open-file limit {nofile}",
        held.opened,
        held.sockets.len(),
        held.failed,
        held.elapsed
    );
    assert!(
        held.opened >= 5_000,
        "the flood opened only {} connections ({} failed)",
        held.opened,
        held.failed
    );
    // Mid-flood, the attacker held its 64 slots and no more.
    let open_mid = metric(&mid, "onionrtc_signal_web_connections").unwrap_or(0);
    let ws_mid = metric(&mid, "onionrtc_signal_connections").unwrap_or(0);
    eprintln!(
        "mid-flood: {open_mid} web connections open ({ws_mid} WebSockets), {} refused",
        refused_of(&mid)
    );
    assert!((64..=64 + 4).contains(&open_mid), "{mid}");

    // Every refused connection is counted.
    let metrics = metrics_now();
    let refused = refused_of(&metrics);
    let max = metric(&metrics, "onionrtc_signal_web_connections_max").unwrap_or(0);
    eprintln!("refused per address: {refused}; web-connection cap {max}");
    // The cap is 64 at a time; slots come back as the server closes what
    // it accepted (unjoined WebSockets after 30 s, slow headers after 10 s).
    let rounds = 1 + held.elapsed.as_secs() as usize / 10;
    assert!(
        refused as usize >= held.opened.saturating_sub(64 * rounds),
        "refused {refused} of {} flood connections:\n{metrics}",
        held.opened
    );
    drop(held);
    assert!(serve.terminate(Duration::from_secs(15)).is_some());
    eprintln!("exhaustion test took {:?}", t0.elapsed());
}

//! The connector through a private Tor network (`testkit::tor`), with every
//! address inside network namespaces these tests make: nothing leaves the
//! machine.
//!
//! ```text
//!  group namespace (unshare --net)                 server namespace (veth eth0 10.200.0.2/24)
//!  tor testnet on 127.0.0.1:                       relay, in-process (setns):
//!    3 authorities = relays = exits,                 udp+tcp 10.200.0.2:3478,
//!    exits bind 10.200.0.9                           tls 10.200.0.2:5349 and :443
//!  uclient ─UDP─▶ connector ─SOCKS─▶ tor client    turnutils_peer 10.200.0.3:3480
//!  veth srv 10.200.0.1/24 + 10.200.0.9 ════════════ eth0
//! ```
//!
//! The relay logs each allocation's client address (`log_client_addresses
//! = true`): through Tor it must be 10.200.0.9 (the exits' bind address),
//! never 10.200.0.1 (this namespace's own address, i.e. a bypass) nor a
//! loopback address. `restricted` checks the port-443-only network.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use testkit::coturn::number_after;

use connector::{Connector, ConnectorConfig, Endpoint, RelayTrust, Via};
use testkit::topology::{Netns, Topology, TopologyConfig};
use testkit::tor::{run_isolated_group, shared, socks5_connect, TOPOLOGY_EXIT_ADDR};
use testkit::{run_bounded, wait_until, Proc};

use crate::support::{require_coturn, PASSWORD, USER};

mod restricted;

const STEP: Duration = Duration::from_secs(30);
/// The TURN peer's address, in the server namespace (not the relay's own
/// address, which the peer policy refuses).
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 3);
const PEER_PORT: u16 = 3480;
/// This namespace's own address on the server link: a bypass of Tor.
const BYPASS_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const TLS_PORT: u16 = 5349;
const TURN_PORT: u16 = 3478;

// ---- the relay's log ---------------------------------------------------

/// Every tracing event of this process, as text (the relay runs
/// in-process: its log lines land here).
fn log_lines() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let _ = tracing::subscriber::set_global_default(Capture(Arc::clone(&lines)));
        lines
    })
}

/// A tracing subscriber that keeps each INFO-or-above event's message.
struct Capture(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0.lock().unwrap().push(m.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The relay's `allocation created` lines logged since `from` (an index
/// into the log).
fn allocations_since(from: usize) -> Vec<String> {
    log_lines().lock().unwrap()[from..]
        .iter()
        .filter(|l| l.contains("allocation created"))
        .cloned()
        .collect()
}

/// The client address of an `allocation created client=IP:PORT …` line.
fn client_of(line: &str) -> SocketAddr {
    let v = line
        .split(' ')
        .find_map(|f| f.strip_prefix("client="))
        .unwrap_or_else(|| panic!("no client= in {line:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("client= is not IP:PORT (log_client_addresses?) in {line:?}"))
}

/// Every allocation came through Tor's exits: from 10.200.0.9, never from
/// this namespace's own address or a loopback address.
pub(super) fn assert_all_from(lines: &[String], expected: Ipv4Addr) {
    assert!(!lines.is_empty(), "no allocation was logged");
    for l in lines {
        let ip = client_of(l).ip();
        assert_eq!(ip, expected, "{l}");
        assert!(!ip.is_loopback(), "{l}");
    }
}

// ---- the server side ---------------------------------------------------

/// The relay (in-process, its sockets in the server namespace) and a
/// `turnutils_peer`, on a [`Topology`].
pub(super) struct ServerSide {
    pub(super) topo: Topology,
    relay: Option<relay::RelayHandle>,
    _peer: Proc,
    pub(super) spki: String,
    _dir: tempfile::TempDir,
}

impl ServerSide {
    /// A topology with the relay on 10.200.0.2 (UDP+TCP 3478, TLS 5349 and
    /// 443) and the peer on 10.200.0.3:3480.
    pub(super) fn start() -> ServerSide {
        log_lines();
        let topo = Topology::new(&TopologyConfig::default()).unwrap();
        let server = topo.server();
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["10.200.0.2".into()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let spki = testkit::chromium::spki_sha256_base64(&ck.cert.pem()).unwrap();
        let ip = topo.server_addr();
        let toml = format!(
            r#"[relay]
listen = ["udp://{ip}:{TURN_PORT}", "tcp://{ip}:{TURN_PORT}", "tls://{ip}:{TLS_PORT}", "tls://{ip}:443"]
realm = "test.onionrtc"
relay_ip = "{ip}"
relay_ports = "40000-49999"
tls_cert = "{}"
tls_key = "{}"
users = {{ {USER} = "{PASSWORD}" }}
allowed_peers = ["{}"]
log_client_addresses = true
"#,
            cert.display(),
            key.display(),
            topo.config().network()
        );
        let config = relay::config::RelayConfig::from_toml_str(&toml, dir.path()).unwrap();
        let handle = server
            .run_in(|| relay::start(&config))
            .unwrap()
            .unwrap_or_else(|e| panic!("relay in the server namespace: {e:#}"));
        server
            .ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", "eth0"])
            .unwrap();
        let mut peer = server.command("turnutils_peer");
        peer.args(["-L", &PEER_IP.to_string(), "-p", &PEER_PORT.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let peer = server.spawn(peer).unwrap();
        let bound = wait_until(STEP, Duration::from_millis(20), || {
            server
                .run_in(|| UdpSocket::bind((PEER_IP, PEER_PORT)).is_err())
                .unwrap()
                .then_some(())
        });
        assert!(bound.is_some(), "turnutils_peer did not bind");
        ServerSide {
            topo,
            relay: Some(handle),
            _peer: peer,
            spki,
            _dir: dir,
        }
    }

    /// The relay's TURN endpoint for the connector, e.g. `tls://10.200.0.2:5349`.
    pub(super) fn relay_url(&self, scheme: &str, port: u16) -> Endpoint {
        Endpoint::parse_relay(&format!("{scheme}://{}:{port}", self.topo.server_addr())).unwrap()
    }
}

impl Drop for ServerSide {
    fn drop(&mut self) {
        if let Some(h) = self.relay.take() {
            let _ = h.shutdown();
        }
    }
}

// ---- the connector and coturn's client -----------------------------------

/// A connector on its own tokio runtime, whose threads (and sockets) live
/// in the namespace where it was started. Shut down on drop.
pub(super) struct RunningConnector {
    rt: tokio::runtime::Runtime,
    handle: Option<connector::Handle>,
}

impl RunningConnector {
    /// Starts the connector here (`ns` = `None`) or inside `ns`.
    pub(super) fn start(ns: Option<&Netns>, config: ConnectorConfig) -> RunningConnector {
        let start = move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let handle = rt
                .block_on(Connector::start(config))
                .unwrap_or_else(|e| panic!("connector: {e}"));
            RunningConnector {
                rt,
                handle: Some(handle),
            }
        };
        match ns {
            Some(ns) => ns.run_in(start).unwrap(),
            None => start(),
        }
    }

    pub(super) fn turn_addr(&self) -> SocketAddr {
        self.handle.as_ref().unwrap().turn_addr()
    }

    fn handle(&self) -> &connector::Handle {
        self.handle.as_ref().unwrap()
    }
}

impl Drop for RunningConnector {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// A connector configuration for `relay`, pinned to the test certificate,
/// listening on a free loopback port.
pub(super) fn connector_config(relay: Endpoint, via: Via, spki: &str) -> ConnectorConfig {
    let mut c = ConnectorConfig::new(relay);
    c.via = via;
    c.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    c.relay_trust = RelayTrust::parse_spki(spki).unwrap();
    c
}

/// What `turnutils_uclient` reported.
#[derive(Debug, Clone, Copy)]
pub(super) struct Report {
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) lost: u64,
    /// "Average round trip delay", ms.
    pub(super) rtt_ms: f64,
}

fn after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let i = text.rfind(key)? + key.len();
    Some(text[i..].trim_start())
}

pub(super) fn parse_report(out: &Output) -> Option<Report> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rtt: String = after(&text, "Average round trip delay")?
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Some(Report {
        sent: number_after(&text, "tot_send_msgs=")?,
        received: number_after(&text, "tot_recv_msgs=")?,
        lost: number_after(&text, "Total lost packets")?,
        rtt_ms: rtt.parse().ok()?,
    })
}

/// `turnutils_uclient` arguments for `clients` UDP clients (one allocation
/// each) sending `n` 160-byte messages every 20 ms to the peer through
/// `turn` (a connector's address, or the relay itself).
pub(super) fn uclient_args(turn: SocketAddr, clients: u32, n: u32) -> Vec<String> {
    [
        "-u",
        USER,
        "-w",
        PASSWORD,
        "-e",
        &PEER_IP.to_string(),
        "-r",
        &PEER_PORT.to_string(),
        "-c",
        "-m",
        &clients.to_string(),
        "-n",
        &n.to_string(),
        "-l",
        "160",
        "-z",
        "20",
        "-p",
        &turn.port().to_string(),
        &turn.ip().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Runs `cmd` (a `turnutils_uclient`) and returns its report, panicking
/// with its output if it printed none.
pub(super) fn uclient_report(cmd: &mut Command, limit: Duration) -> Report {
    let out = run_bounded(cmd, limit);
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines().filter(|l| l.contains("Average")) {
        eprintln!("uclient: {}", l.trim());
    }
    parse_report(&out).unwrap_or_else(|| {
        panic!(
            "no report from {cmd:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

// ---- the tests -----------------------------------------------------------

/// A TCP server in `ns` that tells each client its address ("IP:PORT\n")
/// and then echoes what it receives.
fn whoami_server(ns: &Netns, addr: SocketAddr) -> SocketAddr {
    let listener = ns.run_in(|| TcpListener::bind(addr)).unwrap().unwrap();
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(peer) = conn.peer_addr() else { return };
                if conn.write_all(format!("{peer}\n").as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    local
}

/// The first line the whoami server sends: the address it sees.
fn seen_as(stream: &TcpStream) -> SocketAddr {
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("whoami said {line:?}"))
}

/// Median and 95th percentile of `n` echo round trips of `size` bytes, one
/// every `gap` (after the previous one returned).
fn echo_rtt(stream: &mut TcpStream, n: usize, size: usize, gap: Duration) -> (Duration, Duration) {
    let msg = vec![0x5a; size];
    let mut back = vec![0u8; size];
    let mut rtts: Vec<Duration> = (0..n)
        .map(|_| {
            std::thread::sleep(gap);
            let t = Instant::now();
            stream.write_all(&msg).unwrap();
            stream.read_exact(&mut back).unwrap();
            t.elapsed()
        })
        .collect();
    rtts.sort();
    (rtts[n / 2], rtts[n * 95 / 100])
}

#[test]
fn testnet_tells_tor_from_direct() {
    let Some(_pass) = run_isolated_group("tor_testnet::testnet_tells_tor_from_direct") else {
        return;
    };
    let t0 = Instant::now();
    let tor = shared().unwrap();
    eprintln!("tor testnet bootstrap: {:?}", tor.bootstrap_time());
    let topo = Topology::new(&TopologyConfig::default()).unwrap();
    let server = whoami_server(topo.server(), SocketAddr::from((topo.server_addr(), 7000)));

    let mut via_tor = socks5_connect(tor.socks_addr(), server, Some(("whoami", "1")), STEP)
        .unwrap_or_else(|e| panic!("SOCKS connect through tor: {e}\n{}", tor.logs(20)));
    assert_eq!(seen_as(&via_tor).ip(), TOPOLOGY_EXIT_ADDR);
    let direct = TcpStream::connect_timeout(&server, STEP).unwrap();
    assert_eq!(seen_as(&direct).ip(), BYPASS_IP);

    let streams = tor.control().unwrap().stream_status().unwrap();
    assert!(
        streams
            .iter()
            .any(|s| s.target == server.to_string() && s.status == "SUCCEEDED"),
        "{streams:?}"
    );
    // Round trips through 3 hops: back to back on this stream, then four
    // concurrent streams on four circuits sending 160 bytes every 20 ms
    // (a voice-like pattern). Without quickack on loopback the concurrent
    // ones wait for delayed ACKs (median ~21 ms): see
    // testkit::topology::loopback_quickack.
    let (median, p95) = echo_rtt(&mut via_tor, 200, 160, Duration::ZERO);
    eprintln!("160-byte echo through tor, back to back: median {median:?}, p95 {p95:?}");
    let socks = tor.socks_addr();
    let paced: Vec<(Duration, Duration)> = std::thread::scope(|s| {
        let flows: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    let auth = format!("flow{i}");
                    let mut st = socks5_connect(socks, server, Some((&auth, "x")), STEP).unwrap();
                    seen_as(&st);
                    echo_rtt(&mut st, 100, 160, Duration::from_millis(20))
                })
            })
            .collect();
        flows.into_iter().map(|f| f.join().unwrap()).collect()
    });
    eprintln!("160-byte echo through tor, 4 flows, every 20 ms: (median, p95) {paced:?}");
    let mut medians: Vec<Duration> = paced.iter().map(|p| p.0).collect();
    medians.sort();
    assert!(
        medians[2] < Duration::from_millis(15),
        "round trips through the private network are slow: {paced:?}"
    );
    eprintln!("testnet_tells_tor_from_direct: {:?}", t0.elapsed());
}

/// uclient → connector (UDP) → SOCKS → private Tor network → relay, over
/// `scheme` (tls or tcp): no loss, every allocation from the exits'
/// address, and each of the concurrent flows on its own circuit.
fn uclient_through_tor(scheme: &str, port: u16) {
    let t0 = Instant::now();
    let tor = shared().unwrap();
    let side = ServerSide::start();
    let log_from = log_lines().lock().unwrap().len();
    let socks = tor.socks_addr();
    let via = Via::Socks5 {
        host: socks.ip().to_string(),
        port: socks.port(),
    };
    let conn = RunningConnector::start(
        None,
        connector_config(side.relay_url(scheme, port), via, &side.spki),
    );
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(uclient_args(conn.turn_addr(), 2, 100));
    let r = uclient_report(&mut cmd, Duration::from_secs(90));
    eprintln!(
        "uclient via tor over {scheme}: {r:?}, average RTT {:.2} ms",
        r.rtt_ms
    );
    assert_eq!((r.sent, r.received, r.lost), (200, 200, 0), "{r:?}");

    // uclient makes two allocations per client, each from its own UDP
    // socket: four flows through the connector.
    let allocations = allocations_since(log_from);
    eprintln!("relay: {allocations:#?}");
    assert_eq!(allocations.len(), 4, "{allocations:#?}");
    assert_all_from(&allocations, TOPOLOGY_EXIT_ADDR);
    assert!(
        allocations
            .iter()
            .all(|l| l.contains(&format!("transport={scheme}"))),
        "{allocations:#?}"
    );

    // The connector's upstream streams are still open (its flows idle out
    // after 120 s): one circuit each, with different SOCKS credentials.
    let target = format!("{}:{port}", side.topo.server_addr());
    let mut control = tor.control().unwrap();
    let streams: Vec<_> = control
        .stream_status()
        .unwrap()
        .into_iter()
        .filter(|s| s.target == target)
        .collect();
    let circuits = control.circuit_status().unwrap();
    eprintln!("streams to {target}: {streams:?}\ncircuits: {circuits:#?}");
    assert_eq!(streams.len(), allocations.len(), "{streams:?}");
    let mut users = Vec::new();
    for s in &streams {
        let c = circuits
            .iter()
            .find(|c| c.id == s.circuit)
            .unwrap_or_else(|| panic!("circuit {} of {s:?} not listed", s.circuit));
        assert_eq!(c.status, "BUILT", "{c:?}");
        users.push(c.socks_username.clone().expect("an isolated circuit"));
    }
    let mut ids: Vec<_> = streams.iter().map(|s| &s.circuit).collect();
    ids.sort();
    ids.dedup();
    users.sort();
    users.dedup();
    assert_eq!(
        ids.len(),
        streams.len(),
        "flows share a circuit: {streams:?}"
    );
    assert_eq!(users.len(), streams.len(), "flows share SOCKS credentials");
    drop(conn);
    eprintln!("uclient_through_tor over {scheme}: {:?}", t0.elapsed());
}

#[test]
fn connector_over_tls_through_tor() {
    let Some(_pass) = run_isolated_group("tor_testnet::connector_over_tls_through_tor") else {
        return;
    };
    if !require_coturn() {
        return;
    }
    uclient_through_tor("tls", TLS_PORT);
}

#[test]
fn connector_over_tcp_through_tor() {
    let Some(_pass) = run_isolated_group("tor_testnet::connector_over_tcp_through_tor") else {
        return;
    };
    if !require_coturn() {
        return;
    }
    uclient_through_tor("tcp", TURN_PORT);
}

/// `--via tor`: the connector launches its own tor, configured for the
/// private network; the relay sees the exits' address.
#[test]
fn connector_launches_tor_on_the_testnet() {
    let Some(_pass) = run_isolated_group("tor_testnet::connector_launches_tor_on_the_testnet")
    else {
        return;
    };
    if !require_coturn() {
        return;
    }
    let t0 = Instant::now();
    let tor = shared().unwrap();
    let side = ServerSide::start();
    let log_from = log_lines().lock().unwrap().len();
    let options = connector::TorOptions {
        binary: Some("tor".into()),
        extra_config: tor.client_torrc_lines(),
        bootstrap_timeout: Duration::from_secs(60),
        ..connector::TorOptions::default()
    };
    let t_tor = Instant::now();
    let conn = RunningConnector::start(
        None,
        connector_config(
            side.relay_url("tls", TLS_PORT),
            Via::Tor(options),
            &side.spki,
        ),
    );
    eprintln!("connector's own tor bootstrapped in {:?}", t_tor.elapsed());
    if let Some(pid) = conn.handle().tor_pid() {
        eprintln!(
            "launched tor's memory: {}",
            rss_of(&format!("/proc/{pid}/status"))
        );
    }
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(uclient_args(conn.turn_addr(), 1, 50));
    let r = uclient_report(&mut cmd, Duration::from_secs(90));
    eprintln!("uclient via the connector's tor: {r:?}");
    assert_eq!((r.sent, r.received, r.lost), (50, 50, 0), "{r:?}");
    assert_all_from(&allocations_since(log_from), TOPOLOGY_EXIT_ADDR);
    drop(conn);
    eprintln!("connector_launches_tor_on_the_testnet: {:?}", t0.elapsed());
}

/// `VmRSS` (and `VmHWM`, the peak) of a `/proc/…/status` file.
fn rss_of(status: &str) -> String {
    let text = std::fs::read_to_string(status).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An HTTP/1.1 server in `ns` answering every request with the client's
/// address (the body) and closing: what a site sees of its visitor.
fn http_whoami_server(ns: &Netns, addr: SocketAddr) -> SocketAddr {
    let listener = ns.run_in(|| TcpListener::bind(addr)).unwrap().unwrap();
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(peer) = conn.peer_addr() else { return };
                let _ = conn.set_read_timeout(Some(STEP));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = peer.ip().to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    local
}

/// GET / from `proxy` (the connector's web proxy, or a site directly): the
/// body.
fn http_get(proxy: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&proxy, STEP).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.take(1 << 20).read_to_string(&mut text);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.trim().to_owned()
}

/// `--via tor` without a tor binary: embedded Tor (arti) bootstraps on the
/// private network from the arti configuration testkit writes, in a data
/// directory it keeps private, and carries both TURN allocations and the
/// site; the relay and the site see only the exits' address.
#[test]
fn connector_embedded_tor_on_the_testnet() {
    let Some(_pass) = run_isolated_group("tor_testnet::connector_embedded_tor_on_the_testnet")
    else {
        return;
    };
    if !require_coturn() {
        return;
    }
    let t0 = Instant::now();
    let tor = shared().unwrap();
    let side = ServerSide::start();
    let site = http_whoami_server(
        side.topo.server(),
        SocketAddr::from((side.topo.server_addr(), 8080)),
    );
    // Control: from this namespace directly, the site sees the bypass
    // address; only the route makes it the exit's.
    assert_eq!(http_get(site), BYPASS_IP.to_string());
    let log_from = log_lines().lock().unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tor");
    let options = connector::TorOptions {
        data_dir: Some(data.clone()),
        extra_config: tor
            .arti_config()
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
        bootstrap_timeout: Duration::from_secs(90),
        ..connector::TorOptions::default()
    };
    assert!(options.embedded());
    let mut config = connector_config(
        side.relay_url("tls", TLS_PORT),
        Via::Tor(options),
        &side.spki,
    );
    config.web = Some(Endpoint::parse_web(&format!("http://{site}")).unwrap());
    config.web_listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let rss_before = rss_of("/proc/self/status");
    let t_tor = Instant::now();
    let conn = RunningConnector::start(None, config);
    eprintln!(
        "embedded Tor (arti) bootstrapped in {:?}; this process's memory before: {rss_before}, \
         after: {}",
        t_tor.elapsed(),
        rss_of("/proc/self/status")
    );
    // Its state and cache: private, and written.
    {
        use std::os::unix::fs::PermissionsExt as _;
        for d in [&data, &data.join("state"), &data.join("cache")] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        assert!(std::fs::read_dir(data.join("cache")).unwrap().count() > 0);
    }

    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(uclient_args(conn.turn_addr(), 2, 50));
    let r = uclient_report(&mut cmd, Duration::from_secs(90));
    eprintln!(
        "uclient via embedded Tor: {r:?}, average RTT {:.2} ms",
        r.rtt_ms
    );
    assert_eq!((r.sent, r.received, r.lost), (100, 100, 0), "{r:?}");
    let allocations = allocations_since(log_from);
    assert_eq!(allocations.len(), 4, "{allocations:#?}");
    assert_all_from(&allocations, TOPOLOGY_EXIT_ADDR);

    let web = conn.handle().web_addr().unwrap();
    assert_eq!(http_get(web), TOPOLOGY_EXIT_ADDR.to_string());
    eprintln!(
        "after the flows, this process's memory: {}",
        rss_of("/proc/self/status")
    );
    drop(conn);
    eprintln!("connector_embedded_tor_on_the_testnet: {:?}", t0.elapsed());
}

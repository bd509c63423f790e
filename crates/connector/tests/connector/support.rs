//! Test support: a relay on free loopback ports (UDP+TCP on one port, TLS
//! on another, self-signed certificate), a connector on a runtime of its
//! own, coturn's tools, SOCKS5 servers, a cuttable TCP proxy, and a UDP
//! STUN prober. Every wait is bounded; children are killed by PID.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector::{ConnectorConfig, Endpoint, Handle, RelayTrust};
use relay::config::{Listen, ListenProto, RelayConfig, Secret, TlsFiles};
use relay::RelayHandle;
use stun::{Class, Message, MessageEncoder, MessageType, Method, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

pub use testkit::{free_port, run_bounded};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "alice-secret-pw";
pub const REALM: &str = "test.onionrtc";

/// A tokio runtime for the connector (and test servers), so tests can run
/// blocking tools on their own thread meanwhile.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A relay with UDP and TCP on one port and TLS on another.
pub struct TestRelay {
    pub handle: Option<RelayHandle>,
    pub port: u16,
    pub tls_port: u16,
    pub cert: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl TestRelay {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_cert(dir.path(), "relay");
        for _ in 0..5 {
            let port = free_port();
            let tls_port = free_port();
            let mut c = RelayConfig::defaults();
            let at = |p| SocketAddr::from(([127, 0, 0, 1], p));
            c.listen = vec![
                Listen {
                    proto: ListenProto::Udp,
                    addr: at(port),
                },
                Listen {
                    proto: ListenProto::Tcp,
                    addr: at(port),
                },
                Listen {
                    proto: ListenProto::Tls,
                    addr: at(tls_port),
                },
            ];
            c.realm = REALM.into();
            c.relay_ip = "127.0.0.1".parse().unwrap();
            c.tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
            c.users = vec![(USER.into(), Secret::new(PASSWORD))];
            c.dangerous_allow_loopback_peers = true;
            c.relay_ports = 40000..=59999;
            c.max_allocations_per_user = 1000;
            c.max_allocations_per_ip = 1000;
            // Every flow through the connector comes from 127.0.0.1, as
            // every flow from one Tor exit comes from its address.
            c.max_connections_per_ip = 1000;
            match relay::start(&c) {
                Ok(handle) => {
                    return TestRelay {
                        handle: Some(handle),
                        port,
                        tls_port,
                        cert,
                        _dir: dir,
                    }
                }
                Err(e) => eprintln!("relay start failed, retrying: {e:#}"),
            }
        }
        panic!("could not start the relay");
    }

    pub fn handle(&self) -> &RelayHandle {
        self.handle.as_ref().unwrap()
    }

    /// `tls://127.0.0.1:TLS_PORT`.
    pub fn tls_endpoint(&self) -> Endpoint {
        Endpoint::parse_relay(&format!("tls://127.0.0.1:{}", self.tls_port)).unwrap()
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn tcp_endpoint(&self) -> Endpoint {
        Endpoint::parse_relay(&format!("tcp://127.0.0.1:{}", self.port)).unwrap()
    }

    /// The base64 SPKI SHA-256 of the relay's certificate.
    pub fn spki(&self) -> String {
        testkit::chromium::spki_sha256_base64(&std::fs::read_to_string(&self.cert).unwrap())
            .unwrap()
    }

    /// The relay's Prometheus text, once the shards have published.
    pub fn metrics(&self) -> String {
        std::thread::sleep(Duration::from_millis(600));
        self.handle().metrics().render()
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

/// The value of one metric line, e.g. `onionrtc_allocations_total{transport="tls"}`.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// Allocations the relay made, by client transport.
pub fn allocations(relay: &TestRelay) -> [u64; 3] {
    let m = relay.metrics();
    ["udp", "tcp", "tls"].map(|t| {
        metric(
            &m,
            &format!("onionrtc_allocations_total{{transport=\"{t}\"}}"),
        )
    })
}

/// A self-signed certificate for 127.0.0.1 and localhost.
pub fn write_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// A connector configuration for `relay` on a free loopback port.
pub fn config(relay: Endpoint) -> ConnectorConfig {
    let mut c = ConnectorConfig::new(relay);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.web_listen = "127.0.0.1:0".parse().unwrap();
    c.limits.dial_timeout = Duration::from_secs(10);
    c
}

/// A connector to the relay's TLS port, trusting its certificate as CA.
pub fn tls_config(relay: &TestRelay) -> ConnectorConfig {
    let mut c = config(relay.tls_endpoint());
    c.relay_trust = RelayTrust::CaFile(relay.cert.clone());
    c
}

/// Starts a connector on `rt`.
pub fn start(rt: &Runtime, config: ConnectorConfig) -> Handle {
    rt.block_on(connector::Connector::start(config)).unwrap()
}

/// Stops a connector (bounded).
pub fn stop(rt: &Runtime, handle: Handle) {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), handle.shutdown())
            .await
            .expect("shutdown within 10 s")
    });
}

/// coturn's tools are installed (required in CI).
pub fn require_coturn() -> bool {
    testkit::require_tool("turnutils_uclient", &[])
}

pub use testkit::coturn::{parse_uclient, start_peer, UclientReport};

/// Runs `turnutils_uclient` against `port` on 127.0.0.1 (the connector),
/// to the echo peer.
pub fn uclient(port: u16, peer_port: u16, extra: &[&str]) -> UclientReport {
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-u", USER, "-w", PASSWORD])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(extra)
        .args(["-p", &port.to_string(), "127.0.0.1"]);
    let out = run_bounded(&mut cmd, Duration::from_secs(90));
    let report = parse_uclient(&out).unwrap_or_else(|| {
        panic!(
            "no report from {cmd:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("uclient {extra:?}: {report:?}");
    report
}

pub fn assert_clean(r: UclientReport, expected: u64) {
    assert_eq!(r.sent, expected, "{r:?}");
    assert_eq!(r.received, expected, "{r:?}");
    assert_eq!(r.lost, 0, "{r:?}");
}

/// A tool's path: PATH, then /usr/sbin and /usr/bin (tor is in /usr/sbin).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

static APT: Mutex<()> = Mutex::new(());

/// `name` from Debian `packages`, installed with apt-get when missing and
/// running as root. Missing afterwards: a failure in CI (`CI` set), else
/// the test is skipped (None) with a note.
pub fn ensure_tool(name: &str, packages: &[&str]) -> Option<PathBuf> {
    ensure(name, || find_tool(name), packages)
}

/// `what` (found by `find`) from Debian `packages`, as [`ensure_tool`].
pub fn ensure(
    what: &str,
    find: impl Fn() -> Option<PathBuf>,
    packages: &[&str],
) -> Option<PathBuf> {
    let _one_at_a_time = APT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = find() {
        return Some(p);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let install = |update: bool| {
            if update {
                let _ = run_bounded(
                    Command::new("apt-get")
                        .args(["-o", "DPkg::Lock::Timeout=300", "update"])
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    Duration::from_secs(300),
                );
            }
            let out = run_bounded(
                Command::new("apt-get")
                    .args(["-o", "DPkg::Lock::Timeout=300", "install", "-y"])
                    .args(packages)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                Duration::from_secs(600),
            );
            out.status.success()
        };
        if !install(false) {
            install(true);
        }
    }
    if let Some(p) = find() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is required in CI (apt-get install {})",
        packages.join(" ")
    );
    eprintln!("skipping: {what} is not installed");
    None
}
pub use testkit::start_microsocks;

/// What the recording SOCKS5 server saw per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksRequest {
    pub username: String,
    pub password: String,
    /// `name:port` for a domain request (remote DNS), `ip:port` otherwise.
    pub target: String,
    pub domain: bool,
}

/// A SOCKS5 server on loopback that requires username/password (any
/// value), records each request and connects to the target.
pub async fn recording_socks() -> (SocketAddr, Arc<Mutex<Vec<SocksRequest>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        // Ends with the runtime.
        while let Ok((conn, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(120), socks_session(conn, log)).await;
            });
        }
    });
    (addr, seen)
}

async fn socks_session(
    mut c: tokio::net::TcpStream,
    log: Arc<Mutex<Vec<SocksRequest>>>,
) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    c.read_exact(&mut head).await?;
    let mut methods = vec![0u8; usize::from(head[1])];
    c.read_exact(&mut methods).await?;
    if !methods.contains(&2) {
        c.write_all(&[5, 0xff]).await?;
        return Ok(());
    }
    c.write_all(&[5, 2]).await?;
    let mut v = [0u8; 2];
    c.read_exact(&mut v).await?;
    let mut user = vec![0u8; usize::from(v[1])];
    c.read_exact(&mut user).await?;
    let mut plen = [0u8; 1];
    c.read_exact(&mut plen).await?;
    let mut pass = vec![0u8; usize::from(plen[0])];
    c.read_exact(&mut pass).await?;
    c.write_all(&[1, 0]).await?;
    let mut req = [0u8; 4];
    c.read_exact(&mut req).await?;
    let (host, domain) = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a).await?;
            (std::net::Ipv4Addr::from(a).to_string(), false)
        }
        3 => {
            let mut l = [0u8; 1];
            c.read_exact(&mut l).await?;
            let mut n = vec![0u8; usize::from(l[0])];
            c.read_exact(&mut n).await?;
            (String::from_utf8_lossy(&n).into_owned(), true)
        }
        _ => {
            let mut a = [0u8; 16];
            c.read_exact(&mut a).await?;
            (std::net::Ipv6Addr::from(a).to_string(), false)
        }
    };
    let mut p = [0u8; 2];
    c.read_exact(&mut p).await?;
    let port = u16::from_be_bytes(p);
    log.lock().unwrap().push(SocksRequest {
        username: String::from_utf8_lossy(&user).into_owned(),
        password: String::from_utf8_lossy(&pass).into_owned(),
        target: format!("{host}:{port}"),
        domain,
    });
    // Only loopback targets.
    let target = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    let ip: std::net::IpAddr = target.parse().map_err(std::io::Error::other)?;
    assert!(ip.is_loopback(), "test SOCKS server only reaches loopback");
    let mut up = tokio::net::TcpStream::connect((ip, port)).await?;
    c.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut c, &mut up).await?;
    Ok(())
}

/// The proxy's connections: a stall flag and the task to abort.
type Conns = Arc<Mutex<Vec<(Arc<AtomicBool>, tokio::task::AbortHandle)>>>;

/// A TCP proxy on loopback whose current connections can be stalled
/// (bytes are read and discarded, nothing is closed) or cut (closed).
pub struct CutProxy {
    pub addr: SocketAddr,
    conns: Conns,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Conns = Arc::default();
        let list = Arc::clone(&conns);
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let stalled = Arc::new(AtomicBool::new(false));
                let flag = Arc::clone(&stalled);
                let task = tokio::spawn(async move {
                    let Ok(up) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(pump(dr, uw, &flag), pump(ur, dw, &flag));
                });
                list.lock().unwrap().push((stalled, task.abort_handle()));
            }
        });
        CutProxy { addr, conns }
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Current connections stop passing bytes (stay open).
    pub fn stall(&self) {
        for (s, _) in self.conns.lock().unwrap().iter() {
            s.store(true, Ordering::SeqCst);
        }
    }

    /// Current connections are closed.
    pub fn cut(&self) {
        for (_, t) in self.conns.lock().unwrap().iter() {
            t.abort();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !stalled.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A STUN request of `method` with a random transaction ID (an Allocate
/// asks for UDP and carries no credentials: the relay answers 401).
pub fn stun_request(method: Method) -> (Vec<u8>, TransactionId) {
    let id = TransactionId(rand::random());
    let mut buf = [0u8; 64];
    let mut enc =
        MessageEncoder::new(&mut buf, MessageType::new(method, Class::Request), id).unwrap();
    if method == Method::ALLOCATE {
        enc.push(&stun::attr::Attribute::RequestedTransport(17))
            .unwrap();
    }
    enc.fingerprint().unwrap();
    let n = enc.finish();
    (buf[..n].to_vec(), id)
}

/// Sends `req` from `sock` to `to` and waits up to `wait` for a response
/// (success or error) to transaction `id`.
pub fn answered(
    sock: &UdpSocket,
    to: SocketAddr,
    req: &[u8],
    id: TransactionId,
    wait: Duration,
) -> bool {
    sock.send_to(req, to).unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Ok(m) = Message::parse(&buf[..n]) {
            if m.transaction_id() == id && m.class().is_response() {
                return true;
            }
        }
    }
    false
}

/// Sends a STUN Binding request and waits `wait` for an answer: true if
/// one came.
pub fn binding_answered(sock: &UdpSocket, to: SocketAddr, wait: Duration) -> bool {
    let (req, id) = stun_request(Method::BINDING);
    answered(sock, to, &req, id, wait)
}

/// Sends an Allocate request without credentials (which opens a flow;
/// the relay answers 401) from `sock` to `to` and waits up to `wait` for
/// the answer.
pub fn probe(sock: &UdpSocket, to: SocketAddr, wait: Duration) -> bool {
    let (req, id) = stun_request(Method::ALLOCATE);
    answered(sock, to, &req, id, wait)
}

/// Polls `f` until true (bounded).
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    testkit::wait_until(limit, Duration::from_millis(20), || f().then_some(())).is_some()
}

/// An authenticated TURN allocation (long-term credentials) from `sock`
/// to `to` with our `turn::client`; true once the relay granted it within
/// `wait`.
pub fn allocate(sock: &UdpSocket, to: SocketAddr, wait: Duration) -> bool {
    use turn::client::{Client, ClientConfig, Event};
    let start = Instant::now();
    let mut client = Client::new(
        ClientConfig::new(to, turn::Transport::Udp, USER, PASSWORD),
        start,
    );
    if client.allocate(start).is_err() {
        return false;
    }
    let deadline = start + wait;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        while let Some(t) = client.poll_transmit() {
            sock.send_to(&t.payload, t.destination).unwrap();
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                Event::Allocated { .. } => return true,
                Event::AllocationFailed { .. } => return false,
                _ => {}
            }
        }
        let mut wake = deadline;
        if let Some(t) = client.poll_timeout() {
            wake = wake.min(t);
        }
        let now = Instant::now();
        sock.set_read_timeout(Some(
            wake.saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => client.handle_datagram(Instant::now(), from, &buf[..n]),
            Err(_) => client.handle_timeout(Instant::now()),
        }
    }
    false
}

/// What a [`FakeRelay`] does with a connection.
#[derive(Debug, Clone, Copy)]
pub enum FakeMode {
    /// Accepts and closes at once.
    Close,
    /// Answers every STUN request (over TCP, and over UDP on the same
    /// port) with 300 (Try Alternate) and ALTERNATE-SERVER = this address.
    Redirect(SocketAddr),
}

/// A hostile or broken "relay" on 127.0.0.1 (a TCP listener), counting
/// the connections it accepted.
pub struct FakeRelay {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeRelay {
    pub async fn start(mode: FakeMode) -> FakeRelay {
        FakeRelay::start_on("127.0.0.1:0".parse().unwrap(), mode).await
    }

    pub async fn start_on(bind: SocketAddr, mode: FakeMode) -> FakeRelay {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        if let FakeMode::Redirect(to) = mode {
            // The same redirects over UDP, on the same port.
            let udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                    if let Some(r) = redirect_reply(&buf[..n], to) {
                        let _ = udp.send_to(&r, from).await;
                    }
                }
            });
        }
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                match mode {
                    FakeMode::Close => drop(conn),
                    FakeMode::Redirect(to) => {
                        tokio::spawn(redirect_all(conn, to));
                    }
                }
            }
        });
        FakeRelay { addr, accepted }
    }

    /// `tcp://ADDR`.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::parse_relay(&format!("tcp://{}", self.addr)).unwrap()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Answers every STUN request on `conn` with 300 and ALTERNATE-SERVER.
async fn redirect_all(mut conn: tokio::net::TcpStream, to: SocketAddr) {
    let mut decoder = stun::StreamDecoder::new(70_000);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if decoder.push(&buf[..n]).is_err() {
            return;
        }
        let mut out = Vec::new();
        while let Ok(Some((_, frame))) = decoder.next_frame() {
            if let Some(r) = redirect_reply(frame, to) {
                out.extend_from_slice(&r);
            }
        }
        if conn.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// 300 (Try Alternate) with ALTERNATE-SERVER `to` for a STUN request.
fn redirect_reply(frame: &[u8], to: SocketAddr) -> Option<Vec<u8>> {
    let m = Message::parse(frame).ok()?;
    if m.class() != Class::Request {
        return None;
    }
    let mut b = [0u8; 256];
    let mut enc = MessageEncoder::new(
        &mut b,
        MessageType::new(m.method(), Class::Error),
        m.transaction_id(),
    )
    .ok()?;
    enc.push(&stun::attr::Attribute::ErrorCode(stun::attr::ErrorCode {
        code: 300,
        reason: "Try Alternate",
    }))
    .ok()?;
    enc.push(&stun::attr::Attribute::AlternateServer(to)).ok()?;
    let n = enc.finish();
    Some(b[..n].to_vec())
}

/// Reads one STUN message from `sock` within `wait`.
pub fn recv_stun(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

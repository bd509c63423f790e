//! `onionrtc bench echo`: how many echo-test sessions (`/api/echo`, issue
//! 11) one core of `serve` holds at 50 packets a second each.
//!
//! For each step N of `--sessions`, a fresh `serve` is started pinned to
//! one core (`taskset -c CORE`), with `echo_max_sessions` and the relay's
//! per-address allocation limit raised (every client is on 127.0.0.1), and
//! the hidden `onionrtc bench echo-client` (another process, so serve's
//! `/proc/PID/stat` counts only serve) opens N real WebRTC sessions with
//! our media endpoint (crate `media`: TURN UDP allocation, ICE, DTLS-SRTP)
//! through serve's relay to serve's echo. Once all are connected, every
//! session sends `--pps` SRTP audio packets a second for `--secs` seconds
//! (sessions spread evenly over the 20 ms); the echo sends each one back
//! through the relay. Per step: sessions connected, packets sent, echoes
//! received, loss, and serve's CPU (user + system) over the sending window
//! as a share of one core, and serve's peak RSS. The path per packet is
//! client → relay → echo → relay → client, all inside the pinned serve:
//! the relay's two passes are in the figure too.
//!
//! The figures are printed, never asserted (the CI smoke test only checks
//! that a small run connects and echoes).

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use media::ice_servers::parse_turn_url;
use media::{Endpoint, EndpointConfig, EndpointEvent, RelayProtocol};
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

use crate::orchestrate::children::{free_port, tail, ChildGuard};
use crate::orchestrate::BenchError;

/// Flags of `onionrtc bench echo`.
#[derive(clap::Args, Debug, Clone)]
pub struct EchoArgs {
    /// Concurrent sessions per step (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [50usize, 100, 200, 300, 400, 500])]
    pub sessions: Vec<usize>,
    /// Seconds of sending per step (after all sessions connected).
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Packets a second per session.
    #[arg(long, default_value_t = 50)]
    pub pps: u32,
    /// The core serve is pinned to (taskset -c).
    #[arg(long, default_value_t = 0)]
    pub core: usize,
    /// Print the rows as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of the hidden `onionrtc bench echo-client`.
#[derive(clap::Args, Debug, Clone)]
pub struct EchoClientArgs {
    /// The site, http://127.0.0.1:PORT/.
    #[arg(long)]
    pub url: String,
    /// Sessions.
    #[arg(long)]
    pub sessions: usize,
    /// Seconds of sending.
    #[arg(long)]
    pub secs: u64,
    /// Packets a second per session.
    #[arg(long, default_value_t = 50)]
    pub pps: u32,
}

/// All sessions must be connected within this (serve ends an echo session
/// 60 s after it began: setup and sending must fit).
const SETUP_LIMIT: Duration = Duration::from_secs(40);
/// Echoes still in flight are counted for this long after sending stops.
const DRAIN: Duration = Duration::from_secs(1);
/// Sessions being set up at once.
const SETUP_WINDOW: usize = 50;
/// HTTP requests to serve at once during setup.
const HTTP_WORKERS: usize = 4;
/// Payload of a test packet (an Opus frame at 32 kbit/s is 80 bytes).
const PAYLOAD: usize = 80;
/// First payload byte of a packet sent in the measured window.
const MARK: u8 = 0xEC;

/// One HTTP/1.1 request to 127.0.0.1 (`Connection: close`): status, body.
fn http(
    site: SocketAddr,
    method: &str,
    path: &str,
    sdp: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&site, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = sdp.unwrap_or("");
    let ctype = if sdp.is_some() {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {site}\r\nConnection: close\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = Vec::new();
    s.take(1 << 20).read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// The relay (UDP) and credentials of a `GET /api/echo`.
fn relay_of(body: &str) -> Option<(SocketAddr, String, String)> {
    let v: Value = serde_json::from_str(body).ok()?;
    for s in v["iceServers"].as_array()? {
        let urls: Vec<&str> = match &s["urls"] {
            Value::String(u) => vec![u.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        for u in urls {
            let Some(t) = parse_turn_url(u) else { continue };
            let Ok(ip) = t.host.parse() else { continue };
            if t.protocol == RelayProtocol::Udp {
                return Some((
                    SocketAddr::new(ip, t.port),
                    s["username"].as_str()?.to_owned(),
                    s["credential"].as_str()?.to_owned(),
                ));
            }
        }
    }
    None
}

enum Job {
    Credentials(usize),
    Offer(usize, String),
}

enum Done {
    Credentials(usize, Result<(SocketAddr, String, String), String>),
    Answer(usize, Result<String, String>),
}

fn worker(
    site: SocketAddr,
    jobs: &std::sync::Mutex<mpsc::Receiver<Job>>,
    done: &mpsc::Sender<Done>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let out = match job {
            Job::Credentials(i) => Done::Credentials(
                i,
                match http(site, "GET", "/api/echo", None) {
                    Ok((200, body)) => {
                        relay_of(&body).ok_or_else(|| format!("no UDP relay in {body}"))
                    }
                    Ok((status, body)) => Err(format!("GET /api/echo: {status} {}", body.trim())),
                    Err(e) => Err(format!("GET /api/echo: {e}")),
                },
            ),
            Job::Offer(i, sdp) => Done::Answer(
                i,
                match http(site, "POST", "/api/echo", Some(&sdp)) {
                    Ok((201, body)) => Ok(body),
                    Ok((status, body)) => Err(format!("POST /api/echo: {status} {}", body.trim())),
                    Err(e) => Err(format!("POST /api/echo: {e}")),
                },
            ),
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

/// One echo session of the client.
struct Session {
    ep: Endpoint,
    sock: mio::net::UdpSocket,
    server: SocketAddr,
    connected: bool,
    failed: Option<String>,
    rtp_time: u32,
    sent: u64,
    echoed: u64,
}

impl Session {
    fn flush(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            // A full socket buffer drops the datagram, as the network would.
            let _ = self.sock.send(&t.payload);
        }
    }
}

/// The client: prints `start` and `end` around the sending window, then one
/// JSON line with the counts.
pub fn client_main(args: &EchoClientArgs) -> Result<(), BenchError> {
    let site: SocketAddr = args
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .map_err(|_| {
            BenchError::Timeout(format!("--url {}: expected http://IP:PORT/", args.url))
        })?;
    let n = args.sessions;
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
    for _ in 0..HTTP_WORKERS {
        let (jobs, done) = (job_rx.clone(), done_tx.clone());
        std::thread::spawn(move || worker(site, &jobs, &done));
    }
    // Sessions are started at most SETUP_WINDOW at a time (a burst of
    // hundreds of allocations at once measures the burst, not the load).
    let mut started = 0usize;
    let mut poll = Poll::new().map_err(|e| BenchError::io("epoll", e))?;
    let mut events = Events::with_capacity(1024);
    let mut sessions: Vec<Option<Session>> = (0..n).map(|_| None).collect();
    let mut buf = vec![0u8; 2048];
    let setup_start = Instant::now();
    let mut window: Option<(Instant, Instant)> = None;
    let mut ticks_done: u64 = 0;
    let mut last_timers = Instant::now();
    let mut errors: VecDeque<String> = VecDeque::new();
    let payload_base = [0u8; PAYLOAD];
    loop {
        let now = Instant::now();
        // Setup: HTTP results.
        while let Ok(d) = done_rx.try_recv() {
            match d {
                Done::Credentials(i, Ok((server, user, cred))) => {
                    let session = (|| -> Result<Session, String> {
                        let std_sock =
                            std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
                        std_sock.connect(server).map_err(|e| e.to_string())?;
                        std_sock.set_nonblocking(true).map_err(|e| e.to_string())?;
                        let local = std_sock.local_addr().map_err(|e| e.to_string())?;
                        let mut sock = mio::net::UdpSocket::from_std(std_sock);
                        poll.registry()
                            .register(&mut sock, Token(i), Interest::READABLE)
                            .map_err(|e| e.to_string())?;
                        let turn = turn::client::ClientConfig::new(
                            server,
                            turn::Transport::Udp,
                            &user,
                            &cred,
                        );
                        let mut ep = Endpoint::new(EndpointConfig::new(turn, local), now)
                            .map_err(|e| e.to_string())?;
                        ep.start(now).map_err(|e| e.to_string())?;
                        Ok(Session {
                            ep,
                            sock,
                            server,
                            connected: false,
                            failed: None,
                            rtp_time: 0,
                            sent: 0,
                            echoed: 0,
                        })
                    })();
                    match session {
                        Ok(mut s) => {
                            s.flush();
                            sessions[i] = Some(s);
                        }
                        Err(e) => errors.push_back(e),
                    }
                }
                Done::Credentials(_, Err(e)) => errors.push_back(e),
                Done::Answer(i, r) => {
                    if let Some(s) = sessions[i].as_mut() {
                        match r.map(|a| s.ep.accept_answer(now, &a).map_err(|e| e.to_string())) {
                            Ok(Ok(())) => s.flush(),
                            Ok(Err(e)) | Err(e) => s.failed = Some(e),
                        }
                    }
                }
            }
        }
        // Received datagrams.
        let timeout = if window.is_some() {
            Duration::from_micros(500)
        } else {
            Duration::from_millis(2)
        };
        poll.poll(&mut events, Some(timeout))
            .map_err(|e| BenchError::io("epoll", e))?;
        let now = Instant::now();
        for ev in &events {
            let i = ev.token().0;
            let Some(s) = sessions.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            while let Ok(len) = s.sock.recv(&mut buf) {
                s.ep.handle_turn_datagram(now, s.server, &buf[..len]);
            }
        }
        // Timers (every 5 ms), events and transmits.
        let timers = now.duration_since(last_timers) >= Duration::from_millis(5);
        if timers {
            last_timers = now;
        }
        for (i, slot) in sessions.iter_mut().enumerate() {
            let Some(s) = slot.as_mut() else { continue };
            if timers && s.ep.poll_timeout().is_some_and(|t| t <= now) {
                s.ep.handle_timeout(now);
            }
            while let Some(ev) = s.ep.poll_event() {
                match ev {
                    EndpointEvent::Allocated { .. } => match s.ep.create_offer(now) {
                        Ok(offer) => {
                            let _ = job_tx.send(Job::Offer(i, offer));
                        }
                        Err(e) => s.failed = Some(e.to_string()),
                    },
                    EndpointEvent::AllocationFailed { code, reason } => {
                        s.failed = Some(format!("allocation refused: {code} {reason}"));
                    }
                    EndpointEvent::Connected => s.connected = true,
                    EndpointEvent::Failed(e) => s.failed = Some(e),
                    EndpointEvent::Disconnected => {}
                    EndpointEvent::Audio(p) => {
                        if p.payload.first() == Some(&MARK) {
                            s.echoed += 1;
                        }
                    }
                }
            }
            s.flush();
        }
        let ready = sessions
            .iter()
            .filter(|s| {
                s.as_ref()
                    .is_some_and(|s| s.connected || s.failed.is_some())
            })
            .count();
        while started < n && started < ready + errors.len() + SETUP_WINDOW {
            let _ = job_tx.send(Job::Credentials(started));
            started += 1;
        }
        let settled = ready + errors.len() >= n;
        match window {
            None if settled || setup_start.elapsed() >= SETUP_LIMIT => {
                let start = Instant::now();
                window = Some((start, start + Duration::from_secs(args.secs)));
                println!("start");
                let _ = std::io::stdout().flush();
            }
            None => {}
            Some((start, end)) => {
                let now = Instant::now();
                if now >= end + DRAIN {
                    break;
                }
                if now < end {
                    // 1 ms ticks; a session sends on every (1000/pps)th tick,
                    // sessions spread over the interval.
                    let period = u64::from(1000 / args.pps.max(1)).max(1);
                    let due = now.duration_since(start).as_millis() as u64;
                    while ticks_done <= due {
                        let slot = ticks_done % period;
                        for (i, s) in sessions.iter_mut().enumerate() {
                            if i as u64 % period != slot {
                                continue;
                            }
                            let Some(s) = s.as_mut().filter(|s| s.connected) else {
                                continue;
                            };
                            let mut p = payload_base;
                            p[0] = MARK;
                            p[1..9].copy_from_slice(&s.sent.to_be_bytes());
                            if s.ep.send_audio(now, s.rtp_time, &p) {
                                s.sent += 1;
                            }
                            s.rtp_time = s.rtp_time.wrapping_add(960);
                            s.flush();
                        }
                        ticks_done += 1;
                    }
                } else if ticks_done != u64::MAX {
                    ticks_done = u64::MAX;
                    println!("end");
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }
    let live: Vec<&Session> = sessions.iter().flatten().collect();
    let sent: u64 = live.iter().map(|s| s.sent).sum();
    let echoed: u64 = live.iter().map(|s| s.echoed).sum();
    let failures: Vec<&str> = live
        .iter()
        .filter_map(|s| s.failed.as_deref())
        .chain(errors.iter().map(String::as_str))
        .take(3)
        .collect();
    let v = json!({
        "sessions": n,
        "connected": live.iter().filter(|s| s.connected).count(),
        "sent": sent,
        "echoed": echoed,
        "loss": if sent > 0 { Some(1.0 - echoed as f64 / sent as f64) } else { None },
        "setup_s": window.map(|(s, _)| s.duration_since(setup_start).as_secs_f64()),
        "errors": failures,
    });
    println!("{v}");
    Ok(())
}

/// The child's stdout lines, each with when it arrived, from a thread.
fn stdout_lines(child: &mut ChildGuard) -> Result<mpsc::Receiver<(String, Instant)>, BenchError> {
    let out = child
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| BenchError::Timeout("a child without stdout".into()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((line, Instant::now())).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Starts `serve` (pinned to `core` with taskset when given) with
/// `config` and `data_dir`, stderr to `log`, and waits (≤ 30 s) for its
/// `Open http://…/` line.
pub(crate) fn spawn_serve(
    exe: &Path,
    core: Option<usize>,
    config: &Path,
    data_dir: &Path,
    log: &Path,
) -> Result<ChildGuard, BenchError> {
    let mut cmd = match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(log)
                .map_err(|e| BenchError::io("cannot create the serve log", e))?,
        );
    let mut serve = ChildGuard::spawn("serve", &mut cmd)?;
    let rx = stdout_lines(&mut serve)?;
    let (first, _) = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| BenchError::Timeout(format!("serve did not start: {}", tail(log, 10))))?;
    if !first.starts_with("Open http://") {
        return Err(BenchError::Timeout(format!("serve printed {first:?}")));
    }
    Ok(serve)
}

/// One step's row.
fn step(exe: &Path, work: &Path, args: &EchoArgs, n: usize) -> Result<Value, BenchError> {
    let turn = free_port()?;
    let web = loop {
        let p = free_port()?;
        if p != turn {
            break p;
        }
    };
    let dir = work.join(format!("echo-{n}"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BenchError::io("cannot create the work directory", e))?;
    let config = dir.join("onionrtc.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nlisten = [\"udp://127.0.0.1:{turn}\"]\nmax_allocations_per_ip = 10000\n\
             [serve]\nlisten = \"127.0.0.1:{web}\"\necho_max_sessions = {}\n\
             echo_sessions_per_minute = 1000\n",
            n + 10
        ),
    )
    .map_err(|e| BenchError::io("cannot write the serve configuration", e))?;
    let log = dir.join("serve.log");
    let serve = spawn_serve(exe, Some(args.core), &config, &dir.join("data"), &log)?;
    let mut client_cmd = Command::new(exe);
    client_cmd
        .args(["bench", "echo-client", "--url"])
        .arg(format!("http://127.0.0.1:{web}/"))
        .args([
            "--sessions",
            &n.to_string(),
            "--secs",
            &args.secs.to_string(),
        ])
        .args(["--pps", &args.pps.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut client = ChildGuard::spawn("echo client", &mut client_cmd)?;
    let crx = stdout_lines(&mut client)?;
    let limit = SETUP_LIMIT + Duration::from_secs(args.secs) + DRAIN + Duration::from_secs(20);
    let deadline = Instant::now() + limit;
    let cpu = |pid| {
        crate::procfs::cpu_seconds(pid).map_err(|e| BenchError::io("reading serve's CPU time", e))
    };
    let (mut at_start, mut at_end) = (None, None);
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((line, at)) = crx.recv_timeout(left) else {
            let mut err = String::new();
            if let Some(mut e) = client.child_mut().stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(BenchError::Loadgen {
                status: "no result".into(),
                stderr: err,
            });
        };
        match line.as_str() {
            "start" => at_start = Some((cpu(serve.pid())?, at)),
            "end" => at_end = Some((cpu(serve.pid())?, at)),
            _ => break serde_json::from_str::<Value>(&line).unwrap_or(Value::Null),
        }
    };
    let peak_rss_kb = crate::procfs::status_kb(serve.pid(), "VmHWM").ok();
    let core_share = match (at_start, at_end) {
        (Some((c0, t0)), Some((c1, t1))) => {
            Some((c1 - c0) / t1.duration_since(t0).as_secs_f64().max(0.001))
        }
        _ => None,
    };
    drop(client);
    drop(serve);
    let mut row = result;
    row["serve_core_share"] = json!(core_share);
    row["serve_peak_rss_kb"] = json!(peak_rss_kb);
    row["pps"] = json!(args.pps);
    row["secs"] = json!(args.secs);
    Ok(row)
}

/// Runs every step; prints a table (or JSON lines). Returns the rows.
pub fn main(args: &EchoArgs, exe: &Path) -> Result<Vec<Value>, BenchError> {
    crate::raise_fd_limit();
    let work = tempfile::Builder::new()
        .prefix("onionrtc-bench-echo")
        .tempdir()
        .map_err(|e| BenchError::io("cannot create a temporary directory", e))?;
    if !args.json {
        println!(
            "echo capacity: serve pinned to core {}, {} packets/s per session, {} s per step",
            args.core, args.pps, args.secs
        );
        println!(
            "{:>8} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10}",
            "sessions", "connected", "sent", "echoed", "loss %", "serve CPU", "peak RSS"
        );
    }
    let mut rows = Vec::new();
    for &n in &args.sessions {
        let row = step(exe, work.path(), args, n)?;
        if args.json {
            println!("{row}");
        } else {
            println!(
                "{:>8} {:>9} {:>9} {:>9} {:>7} {:>8}% {:>7} MB{}",
                n,
                row["connected"],
                row["sent"],
                row["echoed"],
                row["loss"]
                    .as_f64()
                    .map_or("-".into(), |l| format!("{:.2}", l * 100.0)),
                row["serve_core_share"]
                    .as_f64()
                    .map_or("-".into(), |c| format!("{:.0}", c * 100.0)),
                row["serve_peak_rss_kb"]
                    .as_u64()
                    .map_or("-".into(), |k| format!("{}", k / 1024)),
                row["errors"]
                    .as_array()
                    .filter(|e| !e.is_empty())
                    .map_or(String::new(), |e| format!("  errors: {e:?}")),
            );
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_of_picks_the_udp_url() {
        let body = r#"{"iceServers":[{"urls":["turn:127.0.0.1:3478?transport=tcp","turn:127.0.0.1:3478?transport=udp"],"username":"u","credential":"c"}],"iceTransportPolicy":"relay"}"#;
        let (addr, u, c) = relay_of(body).unwrap();
        assert_eq!(addr, "127.0.0.1:3478".parse().unwrap());
        assert_eq!((u.as_str(), c.as_str()), ("u", "c"));
        assert!(relay_of(r#"{"iceServers":[{"urls":"turns:h:443"}]}"#).is_none());
        assert!(relay_of("not json").is_none());
    }
}

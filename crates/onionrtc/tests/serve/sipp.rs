//! SIP over UDP and TCP for phones (`[sip] listen`, docs/sip.md) against
//! Debian's SIPp (`sip-tester`), a client we did not write: REGISTERs with
//! digest over UDP and TCP (and a wrong password that must fail), calls
//! between two SIPp UAs through the B2BUA while malformed, truncated and
//! oversized SIP hits the UDP and TCP listeners, and the privacy check:
//! nothing the callee received names the caller's address (127.0.0.2; the
//! caller's own trace must contain it, so the grep can fail), nor does the
//! server's log. The `/sip` WebSocket's bad input is covered by
//! `sip_over_websocket_accounts_auth_and_bad_input`. Sizes: 1,000
//! registrations per transport and 100 concurrent calls (a few seconds);
//! `onionrtc bench sip` runs 10,000 and measures.

use std::net::UdpSocket;

use bench::sip::{add_users, caller_csv, register_csv, run_sipp, spawn_sipp, PASSWORD};

use super::sip_ws::{sip_config, DOMAIN};
use super::*;

/// Registrations per transport (issue 14's 1,000, each with digest).
const REGISTRATIONS: usize = 1000;
/// Concurrent calls (all up at once for 3 s).
const CALLS: usize = 100;
/// The caller's and the callee's loopback addresses.
const CALLER_IP: &str = "127.0.0.2";
const CALLEE_IP: &str = "127.0.0.3";

fn arg(v: impl ToString) -> String {
    v.to_string()
}

/// SIPp's arguments for `register.xml` with `csv`: `m` registrations,
/// at most 10 at once.
fn register_args(
    dir: &Path,
    target: &str,
    csv: &Path,
    m: usize,
    transport: &str,
    ip: &str,
    port: u16,
) -> Vec<String> {
    bench::sip::register_args(DOMAIN, dir, target, csv, m, 10, transport, ip, port)
}

/// A UDP exchange: sends `data`, returns the answer if one comes within `wait`.
fn udp_ask(sock: &UdpSocket, to: SocketAddr, data: &[u8], wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(data, to).unwrap();
    let mut buf = vec![0u8; 70_000];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Everything the server sends on `stream` until it closes (at most 10 s).
fn tcp_read_to_close(stream: &mut TcpStream) -> (String, bool) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn options(branch: &str, extra: &str) -> String {
    format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.4:5999;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@{DOMAIN}>;tag=p1\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: probe-{branch}\r\n\
CSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Malformed, truncated and oversized SIP on UDP and TCP: answered 400/413
/// or dropped, the listeners still answer afterwards.
pub(crate) fn bad_input(sip: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.4:0").unwrap();
    let quiet = Duration::from_millis(500);
    let answer = Duration::from_secs(10);
    // Garbage and a truncated request: dropped silently.
    assert_eq!(udp_ask(&sock, sip, b"\x00\xffnot sip at all", quiet), None);
    let truncated = options("trunc", "");
    let truncated = &truncated.as_bytes()[..truncated.len() / 2];
    assert_eq!(udp_ask(&sock, sip, truncated, quiet), None);
    // A broken header line in a request whose mandatory headers read: 400.
    let broken = options("broken", "this line has no colon\r\n");
    let r = udp_ask(&sock, sip, broken.as_bytes(), answer).expect("no answer to a bad request");
    assert!(r.starts_with("SIP/2.0 400 "), "{r}");
    // A body shorter than its Content-Length (a cut datagram): 400.
    let short = options("short", "Content-Type: text/plain\r\n").replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 60000\r\n\r\nshort",
    );
    let r = udp_ask(&sock, sip, short.as_bytes(), answer).expect("no answer to a short body");
    assert!(r.starts_with("SIP/2.0 400 "), "{r}");
    // Still serving UDP: OPTIONS gets 200 (with rport filled in).
    let r = udp_ask(&sock, sip, options("alive", "").as_bytes(), answer).expect("UDP died");
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    let port = sock.local_addr().unwrap().port();
    assert!(
        r.contains(&format!(";rport={port};received=127.0.0.4")),
        "{r}"
    );

    // TCP: a Content-Length over the limit gets 413, then the connection closes.
    let mut s = TcpStream::connect(sip).unwrap();
    let big = options("big", "").replace("Content-Length: 0", "Content-Length: 70000");
    s.write_all(big.as_bytes()).unwrap();
    let (got, closed) = tcp_read_to_close(&mut s);
    assert!(
        got.starts_with("SIP/2.0 413 ") && closed,
        "{got:?} closed={closed}"
    );
    // A header section that never ends: closed without an answer.
    let mut s = TcpStream::connect(sip).unwrap();
    let endless = format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nX-Long: {}",
        "a".repeat(70_000)
    );
    let _ = s.write_all(endless.as_bytes());
    let (got, closed) = tcp_read_to_close(&mut s);
    assert!(got.is_empty() && closed, "{got:?} closed={closed}");
    // Keep-alive (RFC 5626): CRLF CRLF gets CRLF; then a request works on
    // the same connection, split across writes.
    let mut s = TcpStream::connect(sip).unwrap();
    s.set_read_timeout(Some(answer)).unwrap();
    s.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    let req = options("tcp", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let (a, b) = req.as_bytes().split_at(40);
    s.write_all(a).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap();
    let r = String::from_utf8_lossy(&buf[..n]);
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    // A truncated message and a hang-up: nothing to answer, no harm.
    let mut s = TcpStream::connect(sip).unwrap();
    s.write_all(&req.as_bytes()[..req.len() / 2]).unwrap();
    drop(s);
}

#[test]
fn sipp_phones_register_and_call_over_udp_and_tcp() {
    if !testkit::require_tool("sipp", &["-v"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let sip_port = testkit::free_port();
    // SIPp 3.6 answers only the first challenge and knows only MD5.
    let (config, _) = sip_config(
        work,
        &format!(
            "listen = [\"udp://127.0.0.1:{sip_port}\", \"tcp://127.0.0.1:{sip_port}\"]\n\
             digest_algorithms = [\"MD5\"]\nmessages_per_sec = 1000\n"
        ),
    );
    let data = work.join("data");
    let names: Vec<String> = (0..REGISTRATIONS).map(|i| format!("phone{i}")).collect();
    let mut all = names.clone();
    all.extend(["caller".to_string(), "callee".to_string()]);
    add_users(&data, DOMAIN, &all).unwrap();
    bench::sip::write_scenarios(work).unwrap();
    let log = work.join("serve.log");
    let server = Server::start_logged(&config, &data, "info", Some(&log));
    let sip = SocketAddr::from(([127, 0, 0, 1], sip_port));
    let target = sip.to_string();
    let limit = Duration::from_secs(90);
    let fail = |what: &str, run: &bench::sip::SippRun| -> String {
        format!("{what}: {run:?}\nserve:\n{}", server.stderr_tail())
    };

    // (1) REGISTER with digest: UDP (a socket per phone), then TCP (a connection per phone).
    let csv = work.join("reg.csv");
    std::fs::write(&csv, register_csv(DOMAIN, &names, PASSWORD, 600)).unwrap();
    for (transport, name) in [("un", "udp"), ("tn", "tcp")] {
        let args = register_args(
            work,
            &target,
            &csv,
            REGISTRATIONS,
            transport,
            CALLER_IP,
            testkit::free_port(),
        );
        let run = run_sipp(name, &args, limit, &work.join(format!("reg-{name}.log"))).unwrap();
        assert!(
            run.code == Some(0) && run.successful == REGISTRATIONS as u64,
            "{}",
            fail(&format!("REGISTER over {name}"), &run)
        );
    }
    // Negative control: a wrong password must fail the scenario (403).
    let bad = work.join("bad.csv");
    std::fs::write(
        &bad,
        register_csv(DOMAIN, &names[..1], "wrong-password", 600),
    )
    .unwrap();
    let args = register_args(
        work,
        &target,
        &bad,
        1,
        "u1",
        CALLER_IP,
        testkit::free_port(),
    );
    let run = run_sipp("bad password", &args, limit, &work.join("reg-bad.log")).unwrap();
    assert!(
        run.code != Some(0) && run.successful == 0,
        "{}",
        fail("wrong password", &run)
    );

    // (2) Calls: the callee registers from the address its UAS then listens on.
    let callee_port = testkit::free_port();
    let csv = work.join("callee.csv");
    std::fs::write(
        &csv,
        register_csv(DOMAIN, &["callee".to_string()], PASSWORD, 600),
    )
    .unwrap();
    let args = register_args(work, &target, &csv, 1, "u1", CALLEE_IP, callee_port);
    let run = run_sipp(
        "callee register",
        &args,
        limit,
        &work.join("callee-reg.log"),
    )
    .unwrap();
    assert!(run.code == Some(0), "{}", fail("callee REGISTER", &run));
    let uas_trace = work.join("uas-messages.log");
    let uas_log = work.join("uas.log");
    let uas_args = vec![
        arg("-sf"),
        work.join("uas.xml").display().to_string(),
        arg("-t"),
        arg("u1"),
        arg("-i"),
        arg(CALLEE_IP),
        arg("-p"),
        arg(callee_port),
        arg("-m"),
        arg(CALLS),
        arg("-trace_msg"),
        arg("-message_file"),
        uas_trace.display().to_string(),
    ];
    let uas_start = Instant::now();
    let mut uas = spawn_sipp("sipp callee", &uas_args, &uas_log).unwrap();
    let csv = work.join("caller.csv");
    std::fs::write(&csv, caller_csv(DOMAIN, "caller", PASSWORD, "callee")).unwrap();
    let uac_trace = work.join("uac-messages.log");
    let mut uac_args = register_args(
        work,
        &target,
        &csv,
        CALLS,
        "un",
        CALLER_IP,
        testkit::free_port(),
    );
    uac_args[2] = work.join("uac.xml").display().to_string();
    // All the calls at once (the registrations above go 10 at a time).
    let l = uac_args.iter().position(|a| a == "-l").unwrap();
    uac_args[l + 1] = arg(CALLS);
    let i = uac_args.iter().position(|a| a == "-auth_uri").unwrap();
    uac_args[i + 1] = format!("callee@{DOMAIN}");
    // Calls stay up 3 s: the bad input below arrives while they are.
    uac_args.extend([
        arg("-d"),
        arg(3000),
        arg("-trace_msg"),
        arg("-message_file"),
        uac_trace.display().to_string(),
    ]);
    let uac_log = work.join("uac.log");
    let uac_start = Instant::now();
    let mut uac = spawn_sipp("sipp caller", &uac_args, &uac_log).unwrap();

    // (3) Bad input on UDP and TCP while the calls are up.
    let (_, before) = server.get_as_operator("/metrics", &data);
    bad_input(sip);
    let (_, after) = server.get_as_operator("/metrics", &data);
    for (name, rise) in [
        ("onionrtc_sip_malformed_total", 2),
        ("onionrtc_sip_too_large_total", 2),
    ] {
        let (b, a) = (metric_sum(&before, name), metric_sum(&after, name));
        assert!(a >= b + rise, "{name}: {b} → {a}");
    }

    let run = bench::sip::finish_sipp("sipp caller", &mut uac, uac_start, limit, &uac_log).unwrap();
    assert!(
        run.code == Some(0) && run.successful == CALLS as u64,
        "{}",
        fail("calls (caller side)", &run)
    );
    let run = bench::sip::finish_sipp("sipp callee", &mut uas, uas_start, limit, &uas_log).unwrap();
    assert!(
        run.code == Some(0) && run.successful == CALLS as u64,
        "{}",
        fail("calls (callee side)", &run)
    );
    let (_, m) = server.get_as_operator("/metrics", &data);
    assert!(
        metric_sum(&m, "onionrtc_sip_calls_answered_total") >= CALLS as u64,
        "{m}"
    );
    assert!(
        metric_sum(&m, "onionrtc_sip_register_total") >= 2 * REGISTRATIONS as u64,
        "{m}"
    );

    // (4) Privacy: every message the callee received, grepped for the
    // caller's address and identity; the caller's own trace has them (the
    // grep can fail).
    let callee_got = std::fs::read_to_string(&uas_trace).unwrap();
    let caller_sent = std::fs::read_to_string(&uac_trace).unwrap();
    assert!(callee_got.contains("INVITE sip:callee@"), "{callee_got}");
    assert!(
        caller_sent.contains(CALLER_IP),
        "the caller's trace lacks its address"
    );
    assert!(caller_sent.contains("Caller Secret") && caller_sent.contains("sipp-caller"));
    for secret in [CALLER_IP, "Caller Secret", "sipp-caller", "caller@127"] {
        assert!(
            !callee_got.contains(secret),
            "the callee received {secret:?}:\n{callee_got}"
        );
    }
    // The plain-audio SDP without ICE passes the sanitizer with its
    // address masked (no media bridge yet: nothing flows).
    assert!(callee_got.contains("c=IN IP4 0.0.0.0"), "{callee_got}");
    assert!(!callee_got.contains("a=candidate"), "{callee_got}");
    // Nor does the server's log name a phone.
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
    let server_log = std::fs::read_to_string(&log).unwrap();
    for ip in [CALLER_IP, CALLEE_IP, "127.0.0.4"] {
        assert!(
            !server_log.contains(ip),
            "the log names {ip}:\n{server_log}"
        );
    }
    let status = server.terminate().unwrap();
    assert!(status.success(), "serve exited with {status}");
}

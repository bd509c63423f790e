//! Bad input is never a panic (STYLE §4): garbage, truncated and oversized
//! datagrams, STUN with bad MESSAGE-INTEGRITY or FINGERPRINT, ChannelData
//! without allocation, TCP and TLS streams that announce a 64 KiB frame and
//! never send it, and ~2000 idle TCP connections — all thrown at the live
//! relay while `turnutils_uclient` sessions (UDP and TCP) run through it.
//! The sessions must lose nothing, the relay thread must keep running, its
//! memory must stay bounded, the handshake timeout must close every stalled
//! stream (the peer sees EOF), and each kind of refusal must be counted.
//! The connection limits are tested on their own: refused, counted, and
//! the slots given back.
//!
//! The garbage comes from 127.0.0.2-127.0.0.4 so that the per-source rate
//! limit of unauthenticated answers does not throttle the sessions, which
//! come from 127.0.0.1.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stun::attr::Attribute;
use stun::Method;
use turn::client::ClientConfig;
use turn::Transport;

use crate::auth::{
    auth_failures, encode_request, long_term_key, metric, metric_now, realm_nonce, txid,
    wait_metric, Driver, Signer,
};
use crate::support::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Resident memory of this process, in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The soft and hard RLIMIT_NOFILE of this process.
fn nofile() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/self/limits");
    let num = |s: &str| s.parse().unwrap_or(u64::MAX); // "unlimited"
    let mut cols = line["Max open files".len()..].split_whitespace();
    (num(cols.next().unwrap()), num(cols.next().unwrap()))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the soft
/// limit in force. `prlimit` (util-linux) does it from outside, since the
/// workspace forbids `unsafe` and so a direct `setrlimit` call.
fn raise_nofile_limit() -> u64 {
    let (soft, hard) = nofile();
    if soft < hard {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:"));
        let out = run_bounded(&mut cmd, Duration::from_secs(10));
        if !out.status.success() {
            eprintln!("prlimit failed: {out:?}");
        }
    }
    nofile().0
}

/// A TCP connection from `from` (any port) to `to`.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    s.into()
}

/// Reads until EOF, the deadline, or an error; `Some(when)` for a clean EOF.
fn wait_eof(s: &mut TcpStream, deadline: Instant) -> Result<Instant, String> {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("still open at the deadline".into());
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok(Instant::now()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("{e}")),
        }
    }
}

/// Whether `s` is still open after `wait` (no EOF, no error).
fn still_open(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// Runs `turnutils_uclient` against the relay with a `turnutils_peer` on
/// `peer_port`.
fn uclient(relay_port: u16, peer_port: u16, extra: &[&str]) -> UclientReport {
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-u", USER, "-w", PASSWORD])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(extra)
        .args(["-p", &relay_port.to_string(), "127.0.0.1"]);
    let out = run_bounded(&mut cmd, Duration::from_secs(120));
    parse_uclient(&out).unwrap_or_else(|| {
        panic!(
            "no report from {cmd:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// What the garbage senders sent that the relay must count.
#[derive(Debug, Default)]
struct Sent {
    /// Datagrams that cannot be STUN or ChannelData (empty, or first two
    /// bits 0b10/0b11) or whose FINGERPRINT is wrong: each is `malformed`.
    malformed: u64,
    /// Requests whose MESSAGE-INTEGRITY does not verify.
    bad_integrity: u64,
    /// Well-formed ChannelData from a source without allocation.
    no_allocation: u64,
    /// Every datagram.
    total: u64,
}

/// Random, truncated and oversized datagrams from 127.0.0.2.
fn udp_garbage(server: SocketAddr, seed: u64) -> Sent {
    let sock = UdpSocket::bind((ip(2), 0)).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = Sent::default();
    let send = |bytes: &[u8], sent: &mut Sent| {
        sock.send_to(bytes, server).unwrap();
        sent.total += 1;
        if bytes.first().is_none_or(|b| b >> 6 >= 2) {
            sent.malformed += 1;
        }
        if sent.total.is_multiple_of(64) {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // Random bytes in all three demultiplexing classes (STUN-like,
    // ChannelData-like, neither), 0 to 1400 bytes.
    for i in 0..3000u32 {
        let len = rng.gen_range(0..=1400usize);
        let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if let Some(first) = b.first_mut() {
            *first = match i % 3 {
                0 => *first & 0x3f,
                1 => 0x40 | (*first & 0x3f),
                _ => 0x80 | *first,
            };
        }
        send(&b, &mut sent);
    }
    // Every prefix of a valid signed Allocate, and of a Binding request.
    let key = long_term_key(USER, REALM, PASSWORD);
    let signer = Signer {
        username: USER,
        realm: REALM,
        nonce: "obMatJos2AAABnot-a-real-nonce",
        key: &key,
    };
    let attrs = [Attribute::RequestedTransport(17), Attribute::Lifetime(600)];
    let full = encode_request(Method::ALLOCATE, txid(), &attrs, Some(&signer));
    let binding = encode_request(Method::BINDING, txid(), &[], None);
    for msg in [&full, &binding] {
        for n in 0..msg.len() {
            send(&msg[..n], &mut sent);
        }
    }
    // Oversized: STUN headers announcing what follows, ChannelData claiming
    // 64 KiB, and plain junk, up to the largest UDP payload over IPv4.
    for (k, len) in [1501usize, 4096, 9000, 16_384, 32_768, 65_000, 65_507]
        .into_iter()
        .enumerate()
    {
        let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let body = ((len - 20) & !3).min(0xfffc) as u16;
        b[..2].copy_from_slice(&[0x00, 0x01]);
        b[2..4].copy_from_slice(&body.to_be_bytes());
        b[4..8].copy_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
        send(&b, &mut sent);
        b[..4].copy_from_slice(&[0x40, (k % 4) as u8, 0xff, 0xff]);
        send(&b, &mut sent);
        b[0] = 0xff;
        send(&b, &mut sent);
        std::thread::sleep(Duration::from_millis(2));
    }
    sent
}

/// STUN with a wrong MESSAGE-INTEGRITY (a real nonce, the wrong password)
/// and with a wrong FINGERPRINT, from 127.0.0.3.
fn stun_bad_checks(server: SocketAddr) -> Sent {
    let sock = UdpSocket::bind((ip(3), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let attrs = [Attribute::RequestedTransport(17)];
    let probe = encode_request(Method::ALLOCATE, txid(), &attrs, None);
    sock.send_to(&probe, server).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).expect("a 401 challenge");
    let (realm, nonce) = realm_nonce(&buf[..n]);
    let wrong = long_term_key(USER, &realm, "wrong-password");
    let signer = Signer {
        username: USER,
        realm: &realm,
        nonce: &nonce,
        key: &wrong,
    };
    let mut sent = Sent::default();
    for i in 0..300 {
        let req = encode_request(Method::ALLOCATE, txid(), &attrs, Some(&signer));
        sock.send_to(&req, server).unwrap();
        sent.bad_integrity += 1;
        sent.total += 1;
        if i % 32 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for i in 0..300 {
        let method = if i % 2 == 0 {
            Method::BINDING
        } else {
            Method::ALLOCATE
        };
        let mut req = encode_request(method, txid(), &attrs, None);
        let last = req.len() - 1;
        req[last] ^= 0x5a;
        sock.send_to(&req, server).unwrap();
        sent.malformed += 1;
        sent.total += 1;
        if i % 32 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sent
}

/// Well-formed ChannelData on channels nobody bound, from 127.0.0.4.
fn channel_data_unbound(server: SocketAddr, seed: u64) -> Sent {
    let sock = UdpSocket::bind((ip(4), 0)).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = Sent::default();
    for i in 0..1000u16 {
        let len = rng.gen_range(0..=200usize);
        let mut b = vec![0u8; 4 + len];
        b[..2].copy_from_slice(&(0x4000 + (i % 0x3fff)).to_be_bytes());
        b[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        rng.fill(&mut b[4..]);
        sock.send_to(&b, server).unwrap();
        sent.no_allocation += 1;
        sent.total += 1;
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sent
}

/// A TLS client trusting the relay's self-signed certificate.
fn tls_config(relay: &TestRelay) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let cert = rustls_pki_types::CertificateDer::from_pem_file(relay._dir.path().join("cert.pem"))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection that completed its handshake and then announced a
/// 64 KiB ChannelData frame.
struct TlsStall {
    sock: TcpStream,
    tls: rustls::ClientConnection,
    opened: Instant,
}

impl TlsStall {
    fn open(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Self {
        let opened = Instant::now();
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(config.clone(), name).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut sock).unwrap();
        }
        tls.writer().write_all(&[0x40, 0x00, 0xff, 0xff]).unwrap();
        while tls.wants_write() {
            tls.write_tls(&mut sock).unwrap();
        }
        TlsStall { sock, tls, opened }
    }

    fn wait_eof(&mut self, deadline: Instant) -> Result<Instant, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("still open at the deadline".into());
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => return Ok(Instant::now()),
                Ok(_) => {
                    let _ = self.tls.process_new_packets();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("{e}")),
            }
        }
    }
}

/// A STUN header announcing 65532 bytes of attributes.
fn stun_header_64k() -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..2].copy_from_slice(&[0x00, 0x03]);
    h[2..4].copy_from_slice(&0xfffcu16.to_be_bytes());
    h[4..8].copy_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
    h[8..].copy_from_slice(&rand::random::<[u8; 12]>());
    h
}

#[test]
fn bad_input_while_uclient_sessions_run() {
    if !require_coturn() || !testkit::require_tool("turnutils_peer", &["-h"]) {
        return;
    }
    let fd_limit = raise_nofile_limit();
    // Each idle connection costs two descriptors here (both ends are in
    // this process); keep 1000 spare.
    let idle = 2000usize.min((fd_limit.saturating_sub(1000) / 2) as usize);
    assert!(
        idle >= 200,
        "RLIMIT_NOFILE {fd_limit} is too low for this test"
    );
    let rss_before = vm_rss_kib();
    let handshake = Duration::from_secs(2);
    let relay = TestRelay::start(|c| {
        c.handshake_timeout = handshake;
        c.max_frame = relay::config::MAX_MAX_FRAME;
        c.max_connections = 10_000;
        c.max_connections_per_ip = 10_000;
    });
    let (_peer, peer_port) = start_peer();
    let port = relay.port;
    let server = SocketAddr::new(ip(1), port);
    let tls_addr = SocketAddr::new(ip(1), relay.tls_port);
    let m0 = relay.handle().metrics().render();

    let udp_session = std::thread::spawn(move || {
        uclient(
            port,
            peer_port,
            &["-c", "-n", "600", "-l", "120", "-z", "10"],
        )
    });
    let tcp_session = std::thread::spawn(move || {
        uclient(
            port,
            peer_port,
            &["-t", "-c", "-n", "300", "-l", "120", "-z", "10"],
        )
    });
    std::thread::sleep(Duration::from_millis(500));

    let garbage = std::thread::spawn(move || udp_garbage(server, 0x0bad_1dea));
    let bad_checks = std::thread::spawn(move || stun_bad_checks(server));
    let unbound = std::thread::spawn(move || channel_data_unbound(server, 7));

    // Streams that never complete a frame: announcers first (their close
    // time is measured), then the idle crowd.
    let started = Instant::now();
    let mut stalls: Vec<(TcpStream, Instant)> = Vec::new();
    for i in 0..40 {
        let opened = Instant::now();
        let mut s = TcpStream::connect(server).unwrap();
        if i % 2 == 0 {
            s.write_all(&[0x40, 0x00, 0xff, 0xff]).unwrap();
        } else {
            s.write_all(&stun_header_64k()).unwrap();
        }
        stalls.push((s, opened));
    }
    for _ in 0..10 {
        // A TLS record header announcing 16 KiB of handshake, then nothing.
        let opened = Instant::now();
        let mut s = TcpStream::connect(tls_addr).unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00]).unwrap();
        stalls.push((s, opened));
    }
    let config = tls_config(&relay);
    let mut tls_stalls: Vec<TlsStall> =
        (0..10).map(|_| TlsStall::open(&config, tls_addr)).collect();
    let mut idle_conns: Vec<TcpStream> = (0..idle)
        .map(|_| TcpStream::connect(server).unwrap())
        .collect();
    let opened_all = Instant::now();
    // All of them are held at once (plus the uclient session's TCP
    // connections): the first closes 2 s after it opened, so this needs the
    // opening to have been quick (it takes ~0.2 s here).
    let want = ((idle + 40) as u64, 20);
    let held = || {
        let m = relay.handle().metrics().render();
        (
            metric(&m, r#"onionrtc_connections_current{transport="tcp"}"#),
            metric(&m, r#"onionrtc_connections_current{transport="tls"}"#),
        )
    };
    let limit = Duration::from_secs(3);
    let step = Duration::from_millis(50);
    let all_held = testkit::wait_until(limit, step, || {
        let (tcp, tls) = held();
        (tcp >= want.0 && tls >= want.1).then_some(())
    });
    let opening = opened_all - started;
    if opening < Duration::from_secs(1) {
        assert!(
            all_held.is_some(),
            "held (tcp, tls) {:?}, opened {want:?}",
            held()
        );
    } else {
        eprintln!("opening took {opening:?}: not checking that all were held at once");
    }

    // Every stalled stream is closed by the handshake timeout: EOF, not
    // before the timeout and not long after.
    let deadline = opened_all + handshake + Duration::from_secs(8);
    let slack = Duration::from_millis(100);
    for (i, (s, opened)) in stalls.iter_mut().enumerate() {
        let at = wait_eof(s, deadline).unwrap_or_else(|e| panic!("stalled stream {i}: {e}"));
        let after = at - *opened;
        assert!(
            after + slack >= handshake,
            "stream {i} closed after {after:?}"
        );
    }
    for (i, t) in tls_stalls.iter_mut().enumerate() {
        let at = t
            .wait_eof(deadline)
            .unwrap_or_else(|e| panic!("TLS stream {i}: {e}"));
        let after = at - t.opened;
        assert!(
            after + slack >= handshake,
            "TLS stream {i} closed after {after:?}"
        );
    }
    for (i, s) in idle_conns.iter_mut().enumerate() {
        if let Err(e) = wait_eof(s, deadline) {
            panic!("idle connection {i}: {e}");
        }
    }
    let closed_in = opened_all.elapsed();
    drop((stalls, tls_stalls, idle_conns));

    let sent: Vec<Sent> = [garbage, bad_checks, unbound]
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let udp = udp_session.join().unwrap();
    let tcp = tcp_session.join().unwrap();
    eprintln!("uclient over UDP: {udp:?}; over TCP: {tcp:?}; stalled streams closed {closed_in:?} after the last was opened");
    eprintln!("sent: {sent:?}");

    // Still serving: the sessions lost nothing, a new client allocates.
    assert!(relay.handle().is_running(), "the relay thread stopped");
    assert_eq!((udp.sent, udp.received, udp.lost), (600, 600, 0), "{udp:?}");
    assert_eq!((tcp.sent, tcp.received, tcp.lost), (300, 300, 0), "{tcp:?}");
    let config = ClientConfig::new(server, Transport::Udp, USER, PASSWORD);
    Driver::new(config, ip(9))
        .allocate()
        .expect("a new client is served");

    // Every kind of bad input was counted.
    let total = |f: fn(&Sent) -> u64| sent.iter().map(f).sum::<u64>();
    let delta = |m: &str, name: &str| metric(m, name) - metric(&m0, name);
    let want_malformed = total(|s| s.malformed);
    let want_integrity = total(|s| s.bad_integrity);
    let want_no_alloc = total(|s| s.no_allocation);
    let want_timeouts = (idle + 60) as u64;
    let ok = |m: &str| {
        delta(m, "onionrtc_malformed_total") >= want_malformed
            && delta(m, &auth_failures("bad_integrity")) >= want_integrity
            && delta(m, "onionrtc_dropped_no_allocation_total") >= want_no_alloc
            && delta(m, "onionrtc_connections_timed_out_total") >= want_timeouts
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut m = relay.handle().metrics().render();
    while !ok(&m) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        m = relay.handle().metrics().render();
    }
    for (name, want) in [
        ("onionrtc_malformed_total", want_malformed),
        (&auth_failures("bad_integrity") as &str, want_integrity),
        ("onionrtc_dropped_no_allocation_total", want_no_alloc),
        ("onionrtc_connections_timed_out_total", want_timeouts),
    ] {
        let d = delta(&m, name);
        eprintln!("{name}: +{d} (at least {want})");
        assert!(d >= want, "{name} grew by {d}, expected at least {want}");
    }
    assert!(
        delta(&m, "onionrtc_rate_limited_total") > 0,
        "401s to 127.0.0.3 were limited"
    );
    assert_eq!(delta(&m, "onionrtc_connections_refused_total"), 0);

    // Memory stays bounded.
    let rss_after = vm_rss_kib();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!("VmRSS {rss_before} KiB -> {rss_after} KiB");
    assert!(growth < 50 * 1024, "VmRSS grew by {growth} KiB");
}

/// A low per-IP limit refuses (the peer sees EOF at once) and counts; other
/// addresses still get in up to the total limit; closing gives the slots
/// back. With the default `max_frame` a 64 KiB announcement is refused at
/// once rather than waiting for the handshake timeout.
#[test]
fn connection_limits_refuse_and_count() {
    let relay = TestRelay::start(|c| {
        c.max_connections_per_ip = 5;
        c.max_connections = 8;
    });
    let server = SocketAddr::new(ip(1), relay.port);
    let current = r#"onionrtc_connections_current{transport="tcp"}"#;
    let refused = "onionrtc_connections_refused_total";
    let soon = || Instant::now() + Duration::from_secs(3);

    let mut kept: Vec<TcpStream> = (0..5).map(|_| connect_from(ip(1), server)).collect();
    assert_eq!(wait_metric(&relay, current, |v| v == 5), 5);
    for i in 0..20 {
        let mut s = connect_from(ip(1), server);
        wait_eof(&mut s, soon()).unwrap_or_else(|e| panic!("6th+{i} from 127.0.0.1: {e}"));
    }
    assert_eq!(wait_metric(&relay, refused, |v| v == 20), 20);

    // Another address gets in, up to the total of 8.
    let mut others: Vec<TcpStream> = (0..3).map(|_| connect_from(ip(2), server)).collect();
    assert_eq!(wait_metric(&relay, current, |v| v == 8), 8);
    for i in 0..2 {
        let mut s = connect_from(ip(3), server);
        wait_eof(&mut s, soon()).unwrap_or_else(|e| panic!("9th+{i} connection: {e}"));
    }
    assert_eq!(wait_metric(&relay, refused, |v| v == 22), 22);
    for s in others.iter_mut().chain(kept.iter_mut()) {
        assert!(still_open(s, Duration::from_millis(50)));
    }

    // An accepted connection is served.
    let id = txid();
    kept[0]
        .write_all(&encode_request(Method::BINDING, id, &[], None))
        .unwrap();
    kept[0]
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = kept[0].read(&mut buf).unwrap();
    let msg = stun::Message::parse(&buf[..n]).unwrap();
    assert_eq!(msg.transaction_id(), id);

    // Closing gives the slots back.
    drop(kept);
    assert_eq!(wait_metric(&relay, current, |v| v == 3), 3);
    let mut again = connect_from(ip(1), server);
    assert!(still_open(&mut again, Duration::from_millis(300)));

    // max_frame 4096: 64 KiB announced → closed at once (handshake timeout
    // is 10 s).
    let opened = Instant::now();
    let mut big = connect_from(ip(1), server);
    big.write_all(&[0x40, 0x00, 0xff, 0xff]).unwrap();
    let at = wait_eof(&mut big, soon()).expect("64 KiB frame refused");
    assert!(at - opened < Duration::from_secs(2), "{:?}", at - opened);
    assert_eq!(metric_now(&relay, refused), 22);
    assert_eq!(
        metric_now(&relay, "onionrtc_connections_timed_out_total"),
        0
    );
    assert!(relay.handle().is_running());
}

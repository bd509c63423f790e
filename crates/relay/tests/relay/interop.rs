//! coturn's client tools against our relay.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn uclient(relay: &TestRelay, extra: &[&str], peer_port: Option<u16>) -> UclientReport {
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-u", USER, "-w", PASSWORD]);
    if let Some(p) = peer_port {
        cmd.args(["-e", "127.0.0.1", "-r", &p.to_string()]);
    }
    let secure = extra.contains(&"-S");
    let port = if secure { relay.tls_port } else { relay.port };
    cmd.args(extra).args(["-p", &port.to_string(), "127.0.0.1"]);
    let out = run_bounded(&mut cmd, Duration::from_secs(90));
    let report = parse_uclient(&out).unwrap_or_else(|| {
        panic!(
            "no report from {cmd:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("{extra:?}: {report:?}");
    report
}

fn assert_clean(r: UclientReport, expected: u64) {
    assert_eq!(r.sent, expected, "{r:?}");
    assert_eq!(r.received, expected, "{r:?}");
    assert_eq!(r.lost, 0, "{r:?}");
}

/// The value of one metric line, e.g. `onionrtc_allocations_total{transport="tcp"}`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// The relay's counters, once the event loop has published them.
fn metrics_after(relay: &TestRelay) -> String {
    std::thread::sleep(Duration::from_millis(600));
    relay.handle().metrics().render()
}

#[test]
fn uclient_udp_rtp_and_rtcp() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|_| {});
    let (_peer, pport) = start_peer();
    // Without -c each client runs an RTP and an RTCP allocation (EVEN-PORT
    // with a RESERVATION-TOKEN for the second).
    let r = uclient(&relay, &["-n", "100", "-l", "120", "-z", "5"], Some(pport));
    assert_clean(r, 200);
    let m = metrics_after(&relay);
    assert_eq!(
        metric(&m, "onionrtc_relayed_packets_total{direction=\"to_peer\"}"),
        200
    );
    assert_eq!(
        metric(
            &m,
            "onionrtc_relayed_packets_total{direction=\"to_client\"}"
        ),
        200
    );
}

#[test]
fn uclient_udp_100_clients() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|_| {});
    let (_peer, pport) = start_peer();
    let r = uclient(
        &relay,
        &["-c", "-m", "100", "-n", "20", "-l", "120", "-z", "10"],
        Some(pport),
    );
    assert_clean(r, 2000);
    let r = uclient(
        &relay,
        &["-c", "-m", "10", "-n", "40", "-l", "1200", "-z", "10"],
        Some(pport),
    );
    assert_clean(r, 400);
}

/// One static user shared by every caller (the usual coturn setup) with the
/// relay's default quotas: twenty uclient sessions of two allocations each
/// (RTP and RTCP) all get through (a per-user cap of 10 used to refuse the eleventh).
#[test]
fn uclient_shared_static_user_with_default_quotas() {
    if !require_coturn() {
        return;
    }
    let defaults = relay::config::RelayConfig::defaults();
    let relay = TestRelay::start(|c| {
        c.max_allocations_per_user = defaults.max_allocations_per_user;
        c.max_allocations_per_static_user = defaults.max_allocations_per_static_user;
        c.max_allocations_per_ip = defaults.max_allocations_per_ip;
    });
    let (_peer, pport) = start_peer();
    let r = uclient(
        &relay,
        &["-m", "20", "-n", "20", "-l", "120", "-z", "10"],
        Some(pport),
    );
    assert_clean(r, 400);
    let m = metrics_after(&relay);
    assert_eq!(metric(&m, "onionrtc_quota_refused_total"), 0);
    // An RTP and an RTCP allocation per client, all for the one user.
    let made = metric(&m, "onionrtc_allocations_total{transport=\"udp\"}");
    assert!(made >= 20, "{made} allocations");
}

#[test]
fn uclient_udp_send_indications() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|_| {});
    let (_peer, pport) = start_peer();
    let r = uclient(
        &relay,
        &["-c", "-s", "-n", "100", "-l", "120", "-z", "5"],
        Some(pport),
    );
    assert_clean(r, 100);
}

#[test]
fn uclient_tcp() {
    if !require_coturn() {
        return;
    }
    // 100 clients, each with two or more connections.
    let relay = TestRelay::start(|c| c.max_connections_per_ip = 1000);
    let (_peer, pport) = start_peer();
    let r = uclient(
        &relay,
        &["-t", "-c", "-m", "100", "-n", "10", "-l", "120", "-z", "5"],
        Some(pport),
    );
    assert_clean(r, 1000);
    let m = metrics_after(&relay);
    // uclient runs two allocations per client over TCP.
    assert!(
        metric(&m, "onionrtc_allocations_total{transport=\"tcp\"}") >= 10,
        "{m}"
    );
    assert_eq!(
        metric(&m, "onionrtc_allocations_total{transport=\"udp\"}"),
        0
    );
}

#[test]
fn uclient_tls() {
    if !require_coturn() {
        return;
    }
    // 100 clients, each with two or more connections.
    let relay = TestRelay::start(|c| c.max_connections_per_ip = 1000);
    let (_peer, pport) = start_peer();
    let r = uclient(
        &relay,
        &[
            "-t", "-S", "-c", "-m", "100", "-n", "5", "-l", "120", "-z", "5",
        ],
        Some(pport),
    );
    assert_clean(r, 500);
    let m = metrics_after(&relay);
    assert!(
        metric(&m, "onionrtc_allocations_total{transport=\"tls\"}") >= 10,
        "{m}"
    );
}

#[test]
fn uclient_client_to_client() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|_| {});
    let r = uclient(
        &relay,
        &["-y", "-c", "-m", "10", "-n", "50", "-l", "120", "-z", "5"],
        None,
    );
    assert_clean(r, 500);
}

#[test]
fn uclient_client_to_client_without_loopback_switch() {
    // Client to client works with the default peer policy: the peer is a
    // live allocation on this relay, even on a loopback relay address.
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|c| c.dangerous_allow_loopback_peers = false);
    let r = uclient(
        &relay,
        &["-y", "-c", "-m", "4", "-n", "50", "-l", "120", "-z", "5"],
        None,
    );
    assert_clean(r, 200);
}

#[test]
fn uclient_tcp_relay_rfc6062() {
    if !require_coturn() {
        return;
    }
    // 20 clients, spread over both shards: data connections are handed
    // over. `uclient -T -m N` connects every client to every other one: N
    // control and N × (N − 1) data connections, all from 127.0.0.1 (20:
    // 400). With 50 (2 500 connections) the per-IP limit below refuses
    // the 1 001st and uclient reports the resets; with the limit raised,
    // 50 pass on one and on two shards, as against coturn (no per-IP limit).
    let relay = TestRelay::start(|c| c.max_connections_per_ip = 1000);
    let r = uclient(
        &relay,
        &["-T", "-m", "20", "-n", "5", "-l", "120", "-z", "5"],
        None,
    );
    assert_clean(r, 100);
}

#[test]
fn uclient_tls_tcp_relay_rfc6062() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|_| {});
    let r = uclient(
        &relay,
        &["-T", "-S", "-m", "2", "-n", "50", "-l", "120", "-z", "5"],
        None,
    );
    assert_clean(r, 100);
}

#[test]
fn stunclient_reflexive_address_ipv4_and_ipv6() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|c| {
        let port = c.listen[0].addr.port();
        c.listen.push(relay::config::Listen {
            proto: relay::config::ListenProto::Udp,
            addr: std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        });
    });
    for host in ["127.0.0.1", "::1"] {
        let mut cmd = Command::new("turnutils_stunclient");
        cmd.args(["-p", &relay.port.to_string(), host]);
        let out = run_bounded(&mut cmd, Duration::from_secs(20));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        eprintln!("{text}");
        let want = if host == "::1" {
            "UDP reflexive addr: ::1:"
        } else {
            "UDP reflexive addr: 127.0.0.1:"
        };
        assert!(text.contains(want), "{host}: {text}");
    }
}

/// A UDP echo peer that records when each datagram arrived and its size:
/// the relayed rate measured on the peer side.
struct TimedPeer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(std::time::Instant, usize)>>>,
}

impl TimedPeer {
    fn start() -> Self {
        use std::sync::atomic::Ordering;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Bounded: at most 10 minutes, or until stopped.
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    seen.push((std::time::Instant::now(), n));
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
            seen
        });
        TimedPeer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the peer and returns what arrived.
    fn arrivals(mut self) -> Vec<(std::time::Instant, usize)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Bandwidth limits (coturn's `max-bps`): 20 kB/s per allocation. uclient
/// under the cap loses nothing; above it (1200-byte messages every 5 ms,
/// 240 kB/s) the relayed rate stays under the cap and every dropped message
/// is counted; reloaded without the cap, the same run loses nothing.
#[test]
fn uclient_above_and_under_the_bandwidth_cap() {
    if !require_coturn() {
        return;
    }
    const CAP: u64 = 20_000;
    let relay = TestRelay::start(|c| c.max_bytes_per_sec_per_allocation = CAP);
    let (_peer, pport) = start_peer();
    let timed = TimedPeer::start();
    let to_peer = |m: &str| {
        (
            metric(m, "onionrtc_relayed_packets_total{direction=\"to_peer\"}"),
            metric(m, "onionrtc_relayed_bytes_total{direction=\"to_peer\"}"),
            metric(
                m,
                "onionrtc_bandwidth_dropped_packets_total{direction=\"to_peer\",limit=\"allocation\"}",
            ),
        )
    };

    // Under the cap: 1200 bytes every 100 ms (12 kB/s).
    let r = uclient(
        &relay,
        &["-c", "-n", "30", "-l", "1200", "-z", "100"],
        Some(pport),
    );
    assert_clean(r, 30);
    let m = metrics_after(&relay);
    assert_eq!(
        metric(
            &m,
            "onionrtc_bandwidth_dropped_bytes_total{direction=\"to_peer\"}"
        ),
        0
    );
    assert_eq!(
        metric(
            &m,
            "onionrtc_bandwidth_dropped_bytes_total{direction=\"to_client\"}"
        ),
        0
    );
    let (pkts0, bytes0, dropped0) = to_peer(&m);

    // Above the cap: 240 kB/s offered for 5 s, to the timed peer.
    let r = uclient(
        &relay,
        &["-c", "-n", "1000", "-l", "1200", "-z", "5"],
        Some(timed.port),
    );
    let arrivals = timed.arrivals();
    let m = metrics_after(&relay);
    let (pkts, bytes, dropped) = to_peer(&m);
    let (relayed, relayed_bytes, dropped) = (pkts - pkts0, bytes - bytes0, dropped - dropped0);
    // The peer saw what the relay counted, at a rate under the cap: between
    // the first and the last arrival at most the 100 ms burst, one message
    // of debt and CAP bytes a second passed.
    let got: u64 = arrivals.iter().map(|&(_, n)| n as u64).sum();
    assert_eq!(got, relayed_bytes);
    let (first, last) = (arrivals[0].0, arrivals[arrivals.len() - 1].0);
    let secs = last.duration_since(first).as_secs_f64();
    let rate = (got - arrivals[0].1 as u64) as f64 / secs;
    eprintln!(
        "above the cap: {relayed} relayed ({got} bytes over {secs:.2} s: {rate:.0} B/s), \
         {dropped} dropped, uclient {r:?}"
    );
    assert!(
        (got as f64) <= CAP as f64 * secs + CAP as f64 / 10.0 + 2.0 * 1200.0,
        "{got} bytes in {secs:.2} s"
    );
    // And the cap is not much stricter than asked (the run lasts ~5 s).
    assert!(rate > CAP as f64 * 0.8, "{rate:.0} B/s");
    assert_eq!(r.sent, 1000, "{r:?}");
    assert_eq!(
        relayed + dropped,
        r.sent,
        "every message relayed or counted"
    );
    assert!(dropped > 0 && r.lost > 0, "{r:?}");

    // Reloaded without the cap (what SIGHUP does): nothing is lost.
    let mut c = relay.config.clone();
    c.max_bytes_per_sec_per_allocation = 0;
    assert!(relay.handle().reload(&c).unwrap().is_empty());
    let r = uclient(
        &relay,
        &["-c", "-n", "600", "-l", "1200", "-z", "5"],
        Some(pport),
    );
    assert_clean(r, 600);
    let m = metrics_after(&relay);
    assert_eq!(to_peer(&m).2 - dropped0, dropped);
}

/// Bandwidth limits on RFC 6062 TCP allocations: the byte stream is paced
/// (read from the kernel no faster than the cap, so TCP pushes back), not
/// dropped. uclient's two clients send each other 240 kB/s through RFC 6062
/// allocations capped at 20 kB/s each way; the relayed bytes are sampled
/// from the relay's counters while it runs.
#[test]
fn uclient_rfc6062_paced_by_the_bandwidth_cap() {
    if !require_coturn() {
        return;
    }
    const CAP: u64 = 20_000;
    let relay = TestRelay::start(|c| c.max_bytes_per_sec_per_allocation = CAP);
    let metrics = relay.handle().metrics();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    // (time, bytes to peers) every 50 ms while uclient runs (bounded).
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        for _ in 0..2400 {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            samples.push((std::time::Instant::now(), metrics.totals().0.bytes_to_peer));
            std::thread::sleep(Duration::from_millis(50));
        }
        samples
    });
    let r = uclient(&relay, &["-T", "-n", "500", "-l", "1200", "-z", "5"], None);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    // From the first sample that saw bytes to the last change.
    let start = samples
        .iter()
        .position(|s| s.1 > 0)
        .expect("no bytes relayed");
    let last_change = (start..samples.len())
        .rev()
        .find(|&i| i == start || samples[i].1 != samples[i - 1].1)
        .unwrap();
    let (t0, b0) = samples[start];
    let (t1, b1) = samples[last_change];
    let secs = t1.duration_since(t0).as_secs_f64();
    let moved = b1 - b0;
    eprintln!(
        "RFC 6062 above the cap: {moved} bytes to peers over {secs:.2} s ({:.0} B/s for 2 allocations); uclient {r:?}",
        moved as f64 / secs
    );
    // Two allocations send, each at most CAP bytes a second plus its 100 ms
    // burst; the counters are published every 250 ms, so each end of the
    // window may be off by that much. Without the limit all 1.2 MB would
    // pass in about 2.5 s.
    let bound = 2.0 * CAP as f64 * (secs + 0.5 + 0.1) + 2.0 * 1200.0;
    assert!(
        (moved as f64) <= bound,
        "{moved} bytes in {secs:.2} s > {bound:.0}"
    );
    assert!(secs >= 5.0, "paced over {secs:.2} s only: {moved} bytes");
    assert!(r.sent == 1000 && r.received > 0, "{r:?}");
}

/// Maintenance: a draining relay sends new allocations to its alternate
/// (300 ALTERNATE-SERVER, RFC 8489) and coturn's uclient follows it, over
/// UDP and TCP; once resumed, the relay allocates again itself.
#[test]
fn uclient_follows_alternate_server_from_a_draining_relay() {
    if !require_coturn() {
        return;
    }
    let b = TestRelay::start(|_| {});
    let b_addr = std::net::SocketAddr::from(([127, 0, 0, 1], b.port));
    let a = TestRelay::start(|c| {
        c.alternate_servers = vec![
            relay::config::Listen {
                proto: relay::config::ListenProto::Udp,
                addr: b_addr,
            },
            relay::config::Listen {
                proto: relay::config::ListenProto::Tcp,
                addr: b_addr,
            },
        ];
    });
    a.handle().set_draining(true);
    assert!(a.handle().status().contains("draining: yes"));
    let (_peer, pport) = start_peer();
    let r = uclient(&a, &["-c", "-n", "20", "-l", "120", "-z", "5"], Some(pport));
    assert_clean(r, 20);
    let r = uclient(
        &a,
        &["-t", "-c", "-n", "20", "-l", "120", "-z", "5"],
        Some(pport),
    );
    assert_clean(r, 20);
    let (ma, mb) = (metrics_after(&a), metrics_after(&b));
    for t in ["udp", "tcp"] {
        let name = format!("onionrtc_allocations_total{{transport=\"{t}\"}}");
        assert_eq!(metric(&ma, &name), 0, "the draining relay allocated: {ma}");
        assert!(metric(&mb, &name) >= 1, "the alternate did not: {mb}");
    }
    assert!(metric(&ma, "onionrtc_redirected_total") >= 2, "{ma}");

    // Resumed: the relay serves new allocations itself again.
    a.handle().set_draining(false);
    let r = uclient(&a, &["-c", "-n", "20", "-l", "120", "-z", "5"], Some(pport));
    assert_clean(r, 20);
    let ma = metrics_after(&a);
    assert!(
        metric(&ma, "onionrtc_allocations_total{transport=\"udp\"}") >= 1,
        "{ma}"
    );
}

/// RFC 8016: coturn's uclient with `-M` asks for a MOBILITY-TICKET in every
/// Allocate (coturn 4.6 does not move allocations itself: it keeps the
/// ticket as a C string and sends it back in its Refreshes, hence our
/// text tickets); over UDP and TCP, on two shards, every allocation gets
/// one and the data flows. Negative control: with `mobility = false` the
/// same Allocate is refused 405 and counted, and nothing flows.
#[test]
fn uclient_mobility_udp_tcp_and_refused_when_off() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|c| c.max_connections_per_ip = 1000);
    let (_peer, pport) = start_peer();
    for transport in [&[][..], &["-t"][..]] {
        let mut args = vec!["-M", "-c", "-m", "10", "-n", "20", "-l", "120", "-z", "5"];
        args.extend_from_slice(transport);
        assert_clean(uclient(&relay, &args, Some(pport)), 200);
    }
    let m = metrics_after(&relay);
    assert_eq!(metric(&m, "onionrtc_mobility_refused_total"), 0, "{m}");
    // uclient -c runs two allocations per client.
    assert!(metric(&m, "onionrtc_allocations_total{transport=\"udp\"}") >= 10);
    assert!(metric(&m, "onionrtc_allocations_total{transport=\"tcp\"}") >= 10);
    drop(relay);

    let off = TestRelay::start(|c| c.mobility = false);
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args([
        "-u", USER, "-w", PASSWORD, "-M", "-c", "-n", "5", "-l", "120",
    ])
    .args(["-e", "127.0.0.1", "-r", &pport.to_string()])
    .args(["-p", &off.port.to_string(), "127.0.0.1"]);
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        parse_uclient(&out).is_none_or(|r| r.received == 0),
        "{text}"
    );
    let m = metrics_after(&off);
    assert!(
        metric(&m, "onionrtc_mobility_refused_total") >= 1,
        "{m}\n{text}"
    );
}

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
fn uclient_udp_50_clients() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|_| {});
    let (_peer, pport) = start_peer();
    let r = uclient(
        &relay,
        &["-c", "-m", "50", "-n", "40", "-l", "120", "-z", "10"],
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
    let relay = TestRelay::start(|_| {});
    let (_peer, pport) = start_peer();
    let r = uclient(
        &relay,
        &["-t", "-c", "-m", "10", "-n", "50", "-l", "120", "-z", "5"],
        Some(pport),
    );
    assert_clean(r, 500);
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
    let relay = TestRelay::start(|_| {});
    let (_peer, pport) = start_peer();
    let r = uclient(
        &relay,
        &[
            "-t", "-S", "-c", "-m", "10", "-n", "50", "-l", "120", "-z", "5",
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
    let relay = TestRelay::start(|_| {});
    let r = uclient(
        &relay,
        &["-T", "-m", "4", "-n", "50", "-l", "120", "-z", "5"],
        None,
    );
    assert_clean(r, 200);
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

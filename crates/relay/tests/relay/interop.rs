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

#[test]
fn uclient_udp() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start(|_| {});
    let (_peer, pport) = start_peer();
    let r = uclient(&relay, &["-v", "-n", "100", "-l", "120", "-z", "5"], Some(pport));
    // Without -c each client runs an RTP and an RTCP allocation.
    std::thread::sleep(Duration::from_millis(300));
    eprintln!("{}", relay.handle().metrics().render());
    assert_clean(r, 200);
}

//! `turn-tor` end to end through a private Tor network (`testkit::tor`:
//! three authorities that are relays and exits, one client), inside a
//! network namespace this test binary makes (`run_isolated_group`): the
//! exits (`ExitPolicy accept *:*`) can reach nothing but that namespace's
//! loopback. The lab's relay binds 127.0.0.2 (a destination on the Tor
//! nodes' own 127.0.0.1 would force that node as exit); the lab starts
//! `onionrtc connect --via socks5://<tor client>` for the `turn-tor` path.
//! With the `webrtc` feature, one more call on the same network is a
//! webrtc call (two `media` endpoints, Opus, jitter buffer) whose caller
//! takes the `turn-tor` path. Skipped outside CI without tor, network
//! namespaces or the onionrtc binary.

use std::path::PathBuf;

use rusqlite::Connection;
use serde_json::Value;
use testkit::tor::{run_isolated_group, TorNetwork, TorOptions, GROUP_DIR_ENV};

use crate::support::{lab_run, onionrtc_bin, write_plan};

#[test]
fn turn_tor_through_a_private_tor_network() {
    let Some(bin) = onionrtc_bin() else { return };
    let Some(_pass) = run_isolated_group("tor::turn_tor_through_a_private_tor_network") else {
        return; // ran (and passed) in the group's namespace, or skipped
    };
    let dir = tempfile::tempdir().unwrap();
    let tor_dir = std::env::var_os(GROUP_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().to_owned())
        .join("lab-tor");
    let net = TorNetwork::start(&tor_dir, &TorOptions::default()).unwrap();
    // The webrtc agent over the same Tor path (a build with `webrtc`).
    let webrtc = if cfg!(feature = "webrtc") {
        "[[scenarios]]\nname = \"Tor–Norm webrtc\"\ncaller = \"tor\"\ncallee = \"turn-udp\"\n\
         repetitions = 1\nmode = \"webrtc\"\n"
    } else {
        ""
    };
    let plan = write_plan(
        dir.path(),
        &format!(
            r#"
name = "tor e2e"
[relay]
mode = "start"
bind = "127.0.0.2"
[profile]
duration_s = 2
[call]
setup_timeout_s = 20
drain_ms = 300
[paths.tor]
kind = "turn-tor"
tor_socks = "{}"
[[scenarios]]
name = "Norm–Norm"
caller = "turn-udp"
callee = "turn-udp"
repetitions = 1
[[scenarios]]
name = "Tor–Norm"
caller = "tor"
callee = "turn-udp"
repetitions = 2
{webrtc}"#,
            net.socks_addr()
        ),
    );
    let out = dir.path().join("out");
    if let Err(e) = lab_run(&plan, &out, &bin) {
        panic!("lab run failed: {e:?}\ntor logs:\n{}", net.logs(20));
    }
    let db = Connection::open(out.join("lab.sqlite")).unwrap();
    let calls: Vec<(String, String, Option<String>)> = db
        .prepare(
            "SELECT s.name, c.outcome, c.failure FROM calls c
             JOIN scenarios s ON s.id = c.scenario_id ORDER BY c.id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(calls.len(), if webrtc.is_empty() { 3 } else { 4 });
    for (name, outcome, failure) in &calls {
        assert_eq!(outcome, "success", "{name}: {failure:?}\n{}", net.logs(20));
    }
    // The connector's streams went through the Tor client.
    let streams = net.control().unwrap().getinfo("stream-status").unwrap();
    let circuits = net.control().unwrap().circuit_status().unwrap();
    assert!(!circuits.is_empty(), "no circuits: {streams}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let setup = |i: usize| {
        summary["scenarios"][i]["setup_ms"]["median"]
            .as_f64()
            .unwrap()
    };
    assert!(
        setup(1) > setup(0),
        "tor {} ms, udp {} ms",
        setup(1),
        setup(0)
    );
    if !webrtc.is_empty() {
        let w = &summary["scenarios"][2];
        assert_eq!(w["mode"], "webrtc", "{w}");
        assert!(w["concealed_pct"].is_number(), "{w}");
        eprintln!(
            "tor e2e webrtc: setup {} ms, rtt {} ms, mos {}, concealed {} %",
            w["setup_ms"]["median"], w["rtt_ms"]["median"], w["mos"]["median"], w["concealed_pct"]
        );
    }
    eprintln!(
        "tor e2e: setup udp {:.1} ms, tor {:.1} ms; rtt tor {} ms",
        setup(0),
        setup(1),
        summary["scenarios"][1]["rtt_ms"]["median"]
    );
}

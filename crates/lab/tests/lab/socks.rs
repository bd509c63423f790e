//! `turn-socks` end to end: the lab starts microsocks and `onionrtc
//! connect --via socks5://…` towards its own relay (TLS, SPKI-pinned), the
//! agent allocates through the connector's UDP port, and the calls are
//! compared with plain TURN over UDP. Skipped outside CI without
//! microsocks or the onionrtc binary.

use lab::env::Environment;
use lab::plan::Plan;
use rusqlite::Connection;
use serde_json::Value;

use crate::support::{gone, lab_run, onionrtc_bin, write_plan};

const PLAN: &str = r#"
name = "socks e2e"
relay = "start"
[profile]
duration_s = 2
[call]
drain_ms = 200
[paths.socks]
kind = "turn-socks"
socks = "microsocks"
[[scenarios]]
name = "UDP–UDP"
caller = "turn-udp"
callee = "turn-udp"
repetitions = 2
[[scenarios]]
name = "SOCKS–UDP"
caller = "socks"
callee = "turn-udp"
repetitions = 2
"#;

fn available() -> Option<std::path::PathBuf> {
    if !testkit::require_tool("microsocks", &["-h"]) {
        return None;
    }
    onionrtc_bin()
}

#[test]
fn turn_udp_and_turn_socks_via_microsocks_end_to_end() {
    let Some(bin) = available() else { return };
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), PLAN);
    let out = dir.path().join("out");
    lab_run(&plan, &out, &bin).unwrap();

    let db = Connection::open(out.join("lab.sqlite")).unwrap();
    let failures: Vec<(String, String, Option<String>)> = db
        .prepare(
            "SELECT s.name, c.outcome, c.failure FROM calls c
             JOIN scenarios s ON s.id = c.scenario_id WHERE c.outcome != 'success'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let scenario = |name: &str| {
        summary["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    };
    let (udp, socks) = (scenario("UDP–UDP"), scenario("SOCKS–UDP"));
    for s in [&udp, &socks] {
        assert_eq!(s["outcomes"]["success"], 2, "{s}");
        assert_eq!(s["loss_pct"]["median"], 0.0, "{s}");
    }
    assert_eq!(socks["caller_kind"], "turn-socks");
    // The connector dials the relay through the proxy and does a TLS
    // handshake per flow: setup takes longer than a plain UDP allocation.
    let setup = |s: &Value| s["setup_ms"]["median"].as_f64().unwrap();
    assert!(
        setup(&socks) > setup(&udp),
        "socks setup {} ms, udp {} ms",
        setup(&socks),
        setup(&udp)
    );
    // Every call has per-second samples both ways.
    let samples: i64 = db
        .query_row("SELECT count(DISTINCT call_id) FROM samples", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(samples, 4);
    eprintln!(
        "socks e2e: setup udp {:.1} ms, socks {:.1} ms; rtt udp {} ms, socks {} ms",
        setup(&udp),
        setup(&socks),
        udp["rtt_ms"]["median"],
        socks["rtt_ms"]["median"]
    );
}

#[test]
fn launched_connector_and_proxy_are_stopped_by_pid() {
    let Some(bin) = available() else { return };
    let plan = Plan::from_toml(PLAN, std::path::Path::new(".")).unwrap();
    let env = Environment::prepare(&plan, Some(&bin)).unwrap();
    let c = env.connector("socks").unwrap();
    let pids = c.pids();
    assert_eq!(pids.len(), 2, "connector and microsocks: {pids:?}");
    assert!(c.turn_addr().ip().is_loopback());
    assert!(c.proxy_addr().ip().is_loopback());
    assert!(pids.iter().all(|p| !gone(*p)));
    assert!(env.connector("turn-udp").is_none());
    drop(env);
    for p in pids {
        assert!(gone(p), "process {p} still runs");
    }
}

//! Browser mode end to end: the lab starts `onionrtc serve` and headless
//! Chromium, two pages call each other per call (TURN over UDP, and TCP →
//! TLS), their `getStats()` summaries land in SQLite and the report shows
//! the scenario with its one-way delay marked as an estimate. Chromium and
//! serve are stopped by PID. Skipped outside CI without chromium or the
//! onionrtc binary.

use std::time::{Duration, Instant};

use lab::browser::BrowserEnv;
use lab::plan::BrowserSpec;
use rusqlite::Connection;
use serde_json::Value;

use crate::support::{gone, lab_run, onionrtc_bin, write_plan};

const PLAN: &str = r#"
name = "browser e2e"
relay = "start"
[profile]
duration_s = 5
[call]
setup_timeout_s = 20
[[scenarios]]
name = "Browser UDP"
caller = "turn-udp"
callee = "turn-udp"
mode = "browser"
repetitions = 2
[[scenarios]]
name = "Browser TCP–TLS"
caller = "turn-tcp"
callee = "turn-tls"
mode = "browser"
repetitions = 1
"#;

fn available() -> Option<std::path::PathBuf> {
    if !testkit::require_tool(&cdp::chromium_binary().to_string_lossy(), &["--version"]) {
        return None;
    }
    onionrtc_bin()
}

#[test]
fn browser_scenario_lands_in_sqlite_and_the_report() {
    let Some(bin) = available() else { return };
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), PLAN);
    let out = dir.path().join("out");
    let started = Instant::now();
    lab_run(&plan, &out, &bin).unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?}");

    let db = Connection::open(out.join("lab.sqlite")).unwrap();
    type Row = (
        String,
        String,
        String,
        Option<String>,
        i64,
        Option<f64>,
        Option<f64>,
    );
    let rows: Vec<Row> = db
        .prepare(
            "SELECT s.name, s.mode, c.outcome, c.failure, c.owd_estimated, c.setup_ms, c.rtt_ms
             FROM calls c JOIN scenarios s ON s.id = c.scenario_id ORDER BY c.id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (name, mode, outcome, failure, estimated, setup, rtt) in &rows {
        assert_eq!(outcome, "success", "{name}: {failure:?}");
        assert_eq!(mode, "browser");
        assert_eq!(*estimated, 1);
        assert!(setup.is_some_and(|s| s > 0.0 && s < 20_000.0), "{setup:?}");
        // Loopback through the relay: a few ms at most.
        assert!(rtt.is_some_and(|r| r < 50.0), "{name}: rtt {rtt:?}");
    }
    // Both directions of every call, with media, no loss on loopback, and
    // the estimate's parts: RTT/2 + jitter buffer + 20 ms.
    let dirs: Vec<(i64, i64, f64, f64, f64, i64)> = db
        .prepare(
            "SELECT sent, received, loss_pct, owd_median_ms, rtt_median_ms, rx_bytes
             FROM call_directions",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(dirs.len(), 6);
    for (sent, received, loss, owd, rtt, rx_bytes) in &dirs {
        // Audio only (profile.media = "audio"): 50 packets/s for ~5 s.
        assert!((150..=400).contains(received), "{dirs:?}");
        assert!(sent >= received && *loss < 2.0, "{dirs:?}");
        assert!(*owd >= rtt / 2.0 + 20.0 && *owd < 500.0, "{dirs:?}");
        assert!(*rx_bytes > 10_000, "{dirs:?}");
    }
    // Per-second samples with the browser's RTT.
    let (samples, with_rtt): (i64, i64) = db
        .query_row("SELECT count(*), count(rtt_ms) FROM samples", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(samples >= 3 * 2 * 4, "{samples}");
    assert!(with_rtt >= samples / 2, "{with_rtt} of {samples}");
    // Each page's selected pair: relay candidates, the path's transport.
    let sides: Vec<(String, String, Option<String>, Option<String>)> = db
        .prepare(
            "SELECT s.name, d.side, d.local_candidate, d.relay_protocol FROM call_sides d
             JOIN calls c ON c.id = d.call_id JOIN scenarios s ON s.id = c.scenario_id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sides.len(), 6, "{sides:?}");
    for (name, side, local, protocol) in &sides {
        assert_eq!(local.as_deref(), Some("relay"), "{sides:?}");
        let want = match (name.as_str(), side.as_str()) {
            ("Browser UDP", _) => "udp",
            (_, "caller") => "tcp",
            _ => "tls",
        };
        assert_eq!(protocol.as_deref(), Some(want), "{sides:?}");
    }

    // summary.json and report.html show the scenario, the estimate marked.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let s = &summary["scenarios"][0];
    assert_eq!(s["name"], "Browser UDP");
    assert_eq!(s["mode"], "browser");
    assert_eq!(s["owd_estimated"], true);
    assert_eq!(s["outcomes"]["success"], 2);
    assert_eq!(s["relay_protocols"]["udp"], 4);
    assert!(s["mos"]["median"].as_f64().unwrap() > 4.0, "{s}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Browser UDP"));
    assert!(html.contains("Browser TCP–TLS"));
    assert!(html.contains("estimated"));
    eprintln!("browser e2e: 3 calls in {took:?}");
}

#[test]
fn browser_env_stops_chromium_and_serve_by_pid() {
    let Some(bin) = available() else { return };
    let env = BrowserEnv::start(&BrowserSpec::default(), Some(&bin)).unwrap();
    let pids = env.pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(env.base_url().starts_with("http://127.0.0.1:"));
    assert!(pids.iter().all(|p| !gone(*p)));
    drop(env);
    for p in pids {
        assert!(gone(p), "process {p} still runs");
    }
}

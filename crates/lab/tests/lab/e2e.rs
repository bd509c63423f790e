//! `onionrtc lab run` end to end on a small plan (TURN over UDP, TCP and
//! TLS through the lab's own relay), then the report's numbers are checked
//! against the database rows, and `lab report` rewrites the same files.

use std::collections::BTreeMap;

use lab::metrics::percentile;
use rusqlite::Connection;
use serde_json::Value;

use crate::support::{onionrtc, write_plan};

const PLAN: &str = r#"
name = "e2e <small> & \"quoted\""
seed = 7
[relay]
mode = "start"
[profile]
duration_s = 2
[call]
drain_ms = 200
[impairments.wan]
delay_ms = 20
jitter_ms = 4
loss_pct = 3
[[scenarios]]
name = "Norm–Norm <udp>"
caller = "turn-udp"
callee = "turn-udp"
[[scenarios]]
name = "TCP–UDP"
caller = "turn-tcp"
callee = "turn-udp"
[[scenarios]]
name = "TLS–TLS"
caller = "turn-tls"
callee = "turn-tls"
[[scenarios]]
name = "UDP wan"
caller = "turn-udp"
callee = "turn-udp"
impairment = "wan"
"#;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

/// Median and p95 of a column over a scenario's successful calls.
fn spread(db: &Connection, scenario: &str, column: &str) -> Option<(f64, f64)> {
    let sql = format!(
        "SELECT c.{column} FROM calls c JOIN scenarios s ON s.id = c.scenario_id
         WHERE s.name = ?1 AND c.outcome = 'success' AND c.{column} IS NOT NULL"
    );
    let mut stmt = db.prepare(&sql).unwrap();
    let v: Vec<f64> = stmt
        .query_map([scenario], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    Some((percentile(&v, 50.0)?, percentile(&v, 95.0)?))
}

#[test]
fn lab_run_produces_a_report_that_matches_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), PLAN);
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    onionrtc(&[
        "lab",
        "run",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ])
    .unwrap();
    assert!(started.elapsed().as_secs() < 40, "{:?}", started.elapsed());
    for f in ["lab.sqlite", "report.html", "summary.json", "calls.csv"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    let db = Connection::open(out.join("lab.sqlite")).unwrap();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let scenarios = summary["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 4);

    // Every call succeeded; loopback TURN loses nothing without impairment.
    let outcomes: Vec<(String, String)> = db
        .prepare("SELECT s.name, c.outcome FROM calls c JOIN scenarios s ON s.id = c.scenario_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(outcomes.len(), 4);
    for (name, outcome) in &outcomes {
        assert_eq!(outcome, "success", "{name}");
    }
    let unimpaired_loss: f64 = db
        .query_row(
            "SELECT max(d.loss_pct) FROM call_directions d JOIN calls c ON c.id = d.call_id
             JOIN scenarios s ON s.id = c.scenario_id WHERE s.name != 'UDP wan'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unimpaired_loss, 0.0);
    let sent: Vec<i64> = db
        .prepare("SELECT sent FROM call_directions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sent.len(), 8);
    assert!(sent.iter().all(|s| *s == 100), "{sent:?}");

    // summary.json against the rows.
    for s in scenarios {
        let name = s["name"].as_str().unwrap();
        let count: i64 = db
            .query_row(
                "SELECT count(*) FROM calls c JOIN scenarios s ON s.id = c.scenario_id WHERE s.name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(s["calls"].as_i64(), Some(count), "{name}");
        assert_eq!(s["outcomes"]["success"].as_i64(), Some(count), "{name}");
        for (key, column) in [
            ("rtt_ms", "rtt_ms"),
            ("owd_ms", "owd_ms"),
            ("jitter_ms", "jitter_ms"),
            ("loss_pct", "loss_pct"),
            ("mos", "mos"),
            ("r", "r"),
            ("setup_ms", "setup_ms"),
            ("rx_kbps", "rx_kbps"),
        ] {
            let (median, p95) = spread(&db, name, column).unwrap();
            let got = &s[key];
            assert!(
                close(got["median"].as_f64().unwrap(), median),
                "{name} {key}"
            );
            assert!(close(got["p95"].as_f64().unwrap(), p95), "{name} {key}");
        }
        let acceptable: i64 = db
            .query_row(
                "SELECT count(*) FROM calls c JOIN scenarios s ON s.id = c.scenario_id
                 WHERE s.name = ?1 AND c.acceptable",
                [name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(s["acceptable"].as_i64(), Some(acceptable));
    }
    // The impaired scenario reads its impairment: 20 ms ± 4 each way, ~3 % loss.
    let wan = scenarios.iter().find(|s| s["name"] == "UDP wan").unwrap();
    let owd = wan["owd_ms"]["median"].as_f64().unwrap();
    assert!((18.0..=26.0).contains(&owd), "{owd}");
    let rtt = wan["rtt_ms"]["median"].as_f64().unwrap();
    assert!((36.0..=50.0).contains(&rtt), "{rtt}");
    assert!(wan["jitter_ms"]["median"].as_f64().unwrap() > 0.3);
    // Unimpaired loopback: sub-10 ms, MOS at the G.711 ceiling.
    let udp = scenarios
        .iter()
        .find(|s| s["name"] == "Norm–Norm <udp>")
        .unwrap();
    assert!(udp["rtt_ms"]["median"].as_f64().unwrap() < 10.0);
    assert!((udp["mos"]["median"].as_f64().unwrap() - 4.41).abs() < 0.01);

    // calls.csv: a header and one line per call.
    let csv = std::fs::read_to_string(out.join("calls.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("call_id,scenario,"));
    assert_eq!(lines.len(), 5);
    let rtt_col = lines[0].split(',').position(|c| c == "rtt_ms").unwrap();
    let db_rtt: BTreeMap<i64, f64> = db
        .prepare("SELECT id, rtt_ms FROM calls")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for line in &lines[1..] {
        let cols: Vec<&str> = line.split(',').collect();
        let id: i64 = cols[0].parse().unwrap();
        let rtt: f64 = cols[rtt_col].parse().unwrap();
        assert!(close(rtt, db_rtt[&id]));
    }

    // report.html: self-contained, escaped, with every chart.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("Norm–Norm &lt;udp&gt;"));
    assert!(!html.contains("<udp>"));
    assert!(html.contains("e2e &lt;small&gt; &amp; &quot;quoted&quot;"));
    assert!(!html.contains("<script"));
    assert!(!html.contains("src=\"http"));
    for title in [
        "Calls per scenario by outcome",
        "Success rate over time",
        "Round-trip time",
        "One-way delay",
        "RFC 3550 jitter",
        "Packet loss",
        "E-model MOS",
        "Throughput per second",
    ] {
        assert!(html.contains(title), "{title} chart missing");
    }
    assert!(html.matches("<svg").count() >= 8);

    // `lab report` from the database writes the same summary.
    let again = dir.path().join("again");
    onionrtc(&[
        "lab",
        "report",
        "--db",
        out.join("lab.sqlite").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(again.join("summary.json")).unwrap(),
        std::fs::read_to_string(out.join("summary.json")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(again.join("calls.csv")).unwrap(),
        csv
    );
}

#[test]
fn lab_check_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), PLAN);
    onionrtc(&["lab", "check", "--plan", plan.to_str().unwrap()]).unwrap();
    let bad = write_plan(dir.path(), "[relay]\nmode = \"start\"\nbogus = 1\n");
    match onionrtc(&["lab", "check", "--plan", bad.to_str().unwrap()]) {
        Err(lab::Failure::Config(e)) => assert!(e.to_string().contains("bogus"), "{e}"),
        other => panic!("{other:?}"),
    }
    let out = dir.path().join("o");
    match onionrtc(&[
        "lab",
        "run",
        "--plan",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]) {
        Err(lab::Failure::Config(_)) => {}
        other => panic!("{other:?}"),
    }
    match onionrtc(&[
        "lab",
        "report",
        "--db",
        dir.path().join("none.sqlite").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]) {
        Err(lab::Failure::Runtime(e)) => assert!(e.to_string().contains("no database"), "{e}"),
        other => panic!("{other:?}"),
    }
}

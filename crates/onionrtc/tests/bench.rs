//! `onionrtc bench relay --quick` as CI runs it, so the benchmark cannot
//! rot: it must run every scenario against coturn and our relay, exit 0,
//! and write JSON with a row per scenario, non-zero messages and every
//! field present. No timing and no target is asserted: the figures are read
//! from the benchmark's output (docs/performance.md), never tested.

// Helpers outside `#[test]` fns unwrap too: a panic in a test is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// Every field of a row, present (maybe null) in each.
const ROW_FIELDS: [&str; 30] = [
    "scenario",
    "kind",
    "transport",
    "size",
    "pps",
    "server",
    "threads",
    "ok",
    "error",
    "sent",
    "received",
    "lost",
    "relayed",
    "cpu_s",
    "msgs_per_cpu_s",
    "peak_rss_kb",
    "rtt_us",
    "to_peer_us",
    "from_peer_us",
    "rtt_avg_ms",
    "added_us",
    "allocations",
    "rss_kb",
    "alloc_per_s",
    "achieved_pps",
    "generator_cpu_s",
    "seconds",
    "background_cpu_s",
    "udp_rcvbuf_errors",
    "note",
];

/// Scenario keys of a quick run and the servers each must have.
const SCENARIOS: [(&str, &[&str]); 13] = [
    ("uclient-udp-120", &["coturn", "onionrtc"]),
    ("uclient-tcp-120", &["coturn", "onionrtc"]),
    ("uclient-tls-120", &["coturn", "onionrtc"]),
    ("loadgen-udp-120-5000pps", &["direct", "coturn", "onionrtc"]),
    (
        "loadgen-udp-1200-5000pps",
        &["direct", "coturn", "onionrtc"],
    ),
    ("memory-0", &["coturn", "onionrtc"]),
    ("memory-100", &["coturn", "onionrtc"]),
    ("memory-500", &["coturn", "onionrtc"]),
    ("memory-1000", &["coturn", "onionrtc"]),
    ("alloc-rate-udp", &["coturn", "onionrtc"]),
    ("c2c-udp-120-5000pps", &["onionrtc"]),
    ("scaling-udp-120-1t-2000pps", &["coturn", "onionrtc"]),
    ("scaling-udp-120-2t-2000pps", &["coturn", "onionrtc"]),
];

fn num(row: &Value, field: &str) -> f64 {
    row[field].as_f64().unwrap_or(0.0)
}

#[test]
fn quick_benchmark_reports_every_scenario() {
    let tools = [
        ("turnserver", &["--version"][..]),
        ("turnutils_uclient", &[][..]),
        ("turnutils_peer", &["-h"][..]),
    ];
    if !tools.iter().all(|(t, a)| testkit::require_tool(t, a)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onionrtc"));
    cmd.args(["bench", "relay", "--quick", "--json"])
        .arg(&json)
        .env_remove("RUST_LOG");
    let out = testkit::run_bounded(&mut cmd, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("== summary"), "{stdout}");

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in [
        "machine",
        "coturn_command",
        "onionrtc_command",
        "onionrtc_config",
    ] {
        assert!(!doc[key].is_null(), "{key} missing in {doc}");
    }
    let rows = doc["rows"].as_array().unwrap();
    for row in rows {
        for field in ROW_FIELDS {
            assert!(row.get(field).is_some(), "{field} missing in {row}");
        }
        assert_eq!(row["ok"], Value::Bool(true), "{row}");
    }
    for (scenario, servers) in SCENARIOS {
        for server in servers {
            let row = rows
                .iter()
                .find(|r| r["scenario"] == scenario && r["server"] == *server)
                .unwrap_or_else(|| panic!("no row {scenario} {server}\n{stdout}"));
            match row["kind"].as_str().unwrap() {
                "uclient" | "loadgen" | "c2c" | "scaling" => {
                    assert!(num(row, "sent") > 0.0, "{row}");
                    assert!(num(row, "received") > 0.0, "{row}");
                    if *server != "direct" {
                        assert!(num(row, "relayed") > 0.0, "{row}");
                        assert!(row["cpu_s"].is_number(), "{row}");
                        assert!(num(row, "peak_rss_kb") > 0.0, "{row}");
                    }
                    if row["kind"] != "uclient" {
                        assert!(row["rtt_us"]["p50"].is_number(), "{row}");
                    }
                }
                "memory" => assert!(num(row, "rss_kb") > 0.0, "{row}"),
                "alloc-rate" => {
                    assert!(num(row, "allocations") > 0.0, "{row}");
                    assert!(num(row, "alloc_per_s") > 0.0, "{row}");
                }
                other => panic!("unknown kind {other}"),
            }
        }
    }
    let targets = doc["targets"].as_array().unwrap();
    assert!(!targets.is_empty());
    for t in targets {
        for field in ["name", "goal", "value", "pass"] {
            assert!(t.get(field).is_some(), "{field} missing in {t}");
        }
    }
}

/// `onionrtc bench echo` on a handful of sessions, so the echo benchmark
/// cannot rot: every session connects through serve's relay to its echo
/// and gets echoes back; serve's CPU share is measured. No figure is
/// asserted beyond "it ran" (loss is read, not tested).
#[test]
fn echo_bench_smoke() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onionrtc"));
    cmd.args(["bench", "echo", "--sessions", "3", "--secs", "2", "--json"]);
    let out = testkit::run_bounded(&mut cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(row["sessions"], 3, "{row}");
    assert_eq!(row["connected"], 3, "{row}");
    assert!(row["sent"].as_u64().unwrap() > 0, "{row}");
    assert!(row["echoed"].as_u64().unwrap() > 0, "{row}");
    assert!(row["serve_core_share"].is_number(), "{row}");
}

/// `onionrtc bench sip` at a smoke size (CI): SIPp registers over UDP and
/// TCP and calls through the B2BUA against a fresh serve; every attempt
/// must succeed. The figures themselves are not asserted.
#[test]
fn sip_bench_smoke() {
    if !testkit::require_tool("sipp", &["-v"]) {
        return;
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onionrtc"));
    cmd.args([
        "bench",
        "sip",
        "--registrations",
        "50",
        "--calls",
        "10",
        "--concurrent",
        "10",
        "--json",
    ]);
    let out = testkit::run_bounded(&mut cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |test: &str, transport: &str| {
        rows.iter()
            .find(|r| r["server"] == "onionrtc" && r["test"] == test && r["transport"] == transport)
            .unwrap_or_else(|| panic!("no {test} {transport} row: {stdout}"))
    };
    for (test, transport, n) in [
        ("register", "udp", 50),
        ("register", "tcp", 50),
        ("calls", "udp", 10),
    ] {
        let r = find(test, transport);
        assert_eq!(r["successful"], n, "{r}");
        assert!(r["per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["server_cpu_s"].is_number(), "{r}");
    }
    assert_eq!(find("calls", "udp")["callee_successful"], 10);
    assert!(find("memory", "udp")["bytes_per_registration"].is_number());
}

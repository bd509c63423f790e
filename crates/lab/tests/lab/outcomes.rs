//! Failed calls are classed and stored: a setup that never completes is
//! retried and recorded as `failed_setup`; media that stops mid-call is
//! `failed_during_call`.

use lab::runner::{RunOptions, Runner, DB_FILE};
use lab::store::{SqliteStore, Store};

use crate::support::write_plan;

#[test]
fn setup_failures_are_retried_then_recorded() {
    // Nothing listens on the "relay" port: allocation times out.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plan = format!(
        r#"
        setup_retries = 2
        [relay]
        mode = "external"
        udp = "127.0.0.1:{port}"
        username = "u"
        password = "p"
        [profile]
        duration_s = 0.5
        [call]
        setup_timeout_s = 0.3
        stall_timeout_s = 0.2
        [[scenarios]]
        name = "nowhere"
        caller = "turn-udp"
        callee = "turn-udp"
        [[scenarios]]
        name = "stalls"
        caller = "direct"
        callee = "direct"
        impairment = "cut"
        [impairments.cut]
        # Once in the bad state, never back: media stops after a few packets.
        gilbert_elliott = {{ p = 0.05, r = 0.0 }}
        "#
    );
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &plan);
    let out = dir.path().join("out");
    let mut opts = RunOptions::new(&plan, &out);
    opts.quiet = true;
    let mut runner = Runner::new(&opts).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(runner.run(None).unwrap(), 2);
    assert!(started.elapsed().as_secs() < 10);
    runner.finish().unwrap();

    let db = SqliteStore::open(&out.join(DB_FILE)).unwrap();
    let data = db.load_run(db.latest_run().unwrap().unwrap()).unwrap();
    let by_name = |n: &str| {
        let s = data.scenarios.iter().find(|s| s.name == n).unwrap();
        data.calls
            .iter()
            .find(|c| c.scenario_id == s.id)
            .unwrap()
            .clone()
    };
    let nowhere = by_name("nowhere");
    assert_eq!(nowhere.outcome, lab::call::Outcome::FailedSetup);
    assert_eq!(nowhere.attempts, 3);
    assert!(nowhere.failure.unwrap().contains("allocation"));
    assert!(!nowhere.acceptable);
    assert_eq!(nowhere.rtt_ms, None);
    let stalls = by_name("stalls");
    assert_eq!(stalls.outcome, lab::call::Outcome::FailedDuringCall);
    assert!(stalls.failure.unwrap().contains("stalled"));
    assert!(!stalls.acceptable);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let s0 = &summary["scenarios"][0];
    assert_eq!(s0["outcomes"]["failed_setup"], 1);
    assert_eq!(s0["success_rate"], 0.0);
    assert!(s0["rtt_ms"].is_null());
    assert_eq!(summary["scenarios"][1]["outcomes"]["failed_during_call"], 1);
}

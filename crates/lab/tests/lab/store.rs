//! The store suite, run against every backend: SQLite always, PostgreSQL
//! on a real server the test binary starts (testkit::postgres; skipped
//! with a note where PostgreSQL is not installed, a failure in CI).
//!
//! Each backend gets: a run's life (create, scenarios, calls with
//! directions, samples and sides, done calls, finish, load back equal);
//! a call whose write fails half-way leaves nothing behind (one
//! transaction); the schema is migrated once and a newer one refused.

use lab::call::{CallReport, DirectionReport, Outcome, Sample, SideReport};
use lab::store::{self, NewRun, ScenarioRow, StoreError, BACKWARD, FORWARD};

/// The backends under test: `(name, db)` as `lab run --db` takes it.
pub fn backends(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut v = vec![("sqlite", dir.join("suite.sqlite").display().to_string())];
    if let Some(pg) = testkit::postgres::shared() {
        v.push(("postgres", pg.database().unwrap()));
    }
    v
}

fn direction(sent: u64, seconds: u32, rtt: Option<f64>) -> DirectionReport {
    DirectionReport {
        sent,
        received: sent - 1,
        lost: 1,
        loss_pct: 100.0 / sent as f64,
        owd_median_ms: Some(20.5),
        jitter_ms: 1.25,
        rtt_samples: 3,
        burst_r: 1.0,
        r: Some(90.0),
        mos: Some(4.3),
        tx_bytes: sent * 160,
        rx_bytes: (sent - 1) * 160,
        seconds: (0..seconds)
            .map(|t| Sample {
                t_s: t,
                tx_bytes: 8000 + u64::from(t),
                rx_bytes: 7840,
                rx_packets: 49,
                jitter_ms: 0.5 * f64::from(t),
                rtt_ms: rtt,
            })
            .collect(),
        ..DirectionReport::default()
    }
}

fn call(seconds: u32) -> CallReport {
    let mut c = CallReport::failed_setup(1, String::new(), 3000.0);
    c.outcome = Outcome::Success;
    c.failure = None;
    c.setup_ms = Some(12.5);
    c.forward = direction(150, seconds, None);
    c.backward = direction(140, seconds, Some(40.0));
    c.rtt_ms = Some(41.0);
    c.rtt_p95_ms = Some(45.0);
    c.sides = vec![SideReport {
        side: "caller".into(),
        local_candidate: Some("relay".into()),
        relay_protocol: Some("udp".into()),
        jitter_buffer_ms: Some(30.0),
        concealed_samples: Some(u64::MAX),
        ..SideReport::default()
    }];
    c
}

fn scenario(idx: u32, name: &str) -> ScenarioRow {
    ScenarioRow {
        id: 0,
        idx,
        name: name.into(),
        caller_path: "a".into(),
        caller_kind: "turn-udp".into(),
        callee_path: "b".into(),
        callee_kind: "direct".into(),
        impairment: r#"{"loss":0.01}"#.into(),
        repetitions: 2,
        mode: "synthetic".into(),
    }
}

fn life_of_a_run(name: &str, db: &str) {
    let mut s = store::open(db).unwrap();
    assert_eq!(s.latest_run().unwrap(), None, "{name}");
    let run = NewRun {
        plan_name: "plan ✓",
        plan_hash: "h1",
        plan_text: "name = 'plan'\n",
        started_ms: 1_700_000_000_000,
    };
    let run_id = s.create_run(&run).unwrap();
    assert_eq!(s.resumable_run("h1").unwrap(), Some(run_id), "{name}");
    assert_eq!(s.resumable_run("other").unwrap(), None, "{name}");
    let a = s.ensure_scenario(run_id, &scenario(0, "a")).unwrap();
    // Idempotent: the same name gives the same id.
    assert_eq!(s.ensure_scenario(run_id, &scenario(0, "a")).unwrap(), a);
    let b = s.ensure_scenario(run_id, &scenario(1, "b")).unwrap();
    assert_ne!(a, b);

    let c0 = s.record_call(a, 0, 1_700_000_000_100, &call(3)).unwrap();
    let failed = CallReport::failed_setup(3, "no allocation".into(), 3000.0);
    let c1 = s.record_call(a, 1, 1_700_000_000_200, &failed).unwrap();
    assert_ne!(c0, c1);
    let done = s.done_calls(run_id).unwrap();
    assert_eq!(done.len(), 2, "{name}");
    assert!(done.contains(&(a, 0)) && done.contains(&(a, 1)), "{name}");
    // The same (scenario, repetition) twice is refused.
    assert!(s.record_call(a, 0, 0, &call(1)).is_err(), "{name}");

    let data = s.load_run(run_id).unwrap();
    assert_eq!(data.run.plan_name, "plan ✓");
    assert_eq!(data.run.finished_ms, None);
    assert_eq!(
        data.scenarios.iter().map(|x| x.id).collect::<Vec<_>>(),
        [a, b]
    );
    assert_eq!(data.scenarios[0].impairment, r#"{"loss":0.01}"#);
    assert_eq!(data.calls.len(), 2, "{name}");
    let first = &data.calls[0];
    assert_eq!((first.id, first.outcome), (c0, Outcome::Success));
    assert_eq!(first.setup_ms, Some(12.5));
    assert_eq!(first.rtt_ms, Some(41.0));
    assert_eq!(first.owd_ms, call(3).owd_ms());
    assert!(first.acceptable, "{name}");
    assert_eq!(first.g114.as_deref(), call(3).g114());
    let second = &data.calls[1];
    assert_eq!(second.outcome, Outcome::FailedSetup);
    assert_eq!(second.failure.as_deref(), Some("no allocation"));
    assert_eq!(second.attempts, 3);
    assert!(!second.acceptable);
    // 3 seconds each way, ordered by call, direction, second.
    assert_eq!(data.samples.len(), 6, "{name}");
    assert_eq!(data.samples[0].direction, BACKWARD);
    assert_eq!(data.samples[3].direction, FORWARD);
    assert_eq!(data.samples[2].t_s, 2);
    assert_eq!(data.samples[2].tx_bytes, 8002);
    assert_eq!(data.samples[2].rtt_ms, Some(40.0));
    assert_eq!(data.samples[5].rtt_ms, None);
    assert_eq!(data.samples[5].jitter_ms, 1.0);
    assert_eq!(data.sides.len(), 1);
    assert_eq!(data.sides[0].call_id, c0);
    assert_eq!(data.sides[0].relay_protocol.as_deref(), Some("udp"));
    // u64 beyond i64 is stored saturated, as in SQLite.
    assert_eq!(data.sides[0].concealed_samples, Some(i64::MAX as u64));

    s.finish_run(run_id, 1_700_000_009_000).unwrap();
    assert_eq!(s.resumable_run("h1").unwrap(), None, "{name}");
    let second_run = s.create_run(&run).unwrap();
    assert_eq!(s.latest_run().unwrap(), Some(second_run));
    assert!(matches!(s.load_run(9999), Err(StoreError::NoRun(9999))));
    drop(s);
    // Reopened, everything is still there.
    let s = store::open(db).unwrap();
    let again = s.load_run(run_id).unwrap();
    assert_eq!(again.run.finished_ms, Some(1_700_000_009_000));
    assert_eq!(again.calls, data.calls);
    assert_eq!(again.samples, data.samples);
    assert_eq!(again.sides, data.sides);
}

/// A call whose samples cannot be written (two samples of the same
/// second violate the key) is not stored at all: no call row, no
/// direction, no sample; the run goes on.
fn a_failed_call_leaves_nothing(name: &str, db: &str) {
    let mut s = store::open(db).unwrap();
    let run_id = s
        .create_run(&NewRun {
            plan_name: "p",
            plan_hash: "h",
            plan_text: "",
            started_ms: 0,
        })
        .unwrap();
    let sc = s.ensure_scenario(run_id, &scenario(0, "a")).unwrap();
    let mut bad = call(2);
    bad.backward.seconds[1].t_s = 0;
    assert!(s.record_call(sc, 0, 1, &bad).is_err(), "{name}");
    let data = s.load_run(run_id).unwrap();
    assert!(data.calls.is_empty(), "{name}: {:?}", data.calls);
    assert!(data.samples.is_empty(), "{name}");
    assert!(data.sides.is_empty(), "{name}");
    assert!(s.done_calls(run_id).unwrap().is_empty(), "{name}");
    // The control: the same call, well formed, is stored whole.
    let id = s.record_call(sc, 0, 1, &call(2)).unwrap();
    let data = s.load_run(run_id).unwrap();
    assert_eq!(data.calls.len(), 1, "{name}");
    assert_eq!(data.calls[0].id, id);
    assert_eq!(data.samples.len(), 4, "{name}");
}

#[test]
fn store_suite_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (name, db) in backends(dir.path()) {
        life_of_a_run(name, &db);
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, db) in backends(dir.path()) {
        a_failed_call_leaves_nothing(name, &db);
    }
}

#[test]
fn postgres_schema_is_migrated_once_and_a_newer_one_refused() {
    let Some(pg) = testkit::postgres::shared() else {
        return;
    };
    let url = pg.database().unwrap();
    // Two processes' worth of first opens at once: the advisory lock
    // makes one migrate and the other find it done.
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || store::PgStore::open(&url).map(drop))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let s = store::PgStore::open(&url).unwrap();
    let known = store::PG_MIGRATIONS.len() as i64;
    assert_eq!(s.schema_version().unwrap(), known);
    drop(s);
    let db = url.rsplit('/').next().unwrap();
    let version = pg
        .psql(db, "SELECT version FROM onionrtc_lab.schema_version")
        .unwrap();
    assert_eq!(version.trim(), known.to_string());
    pg.psql(db, "UPDATE onionrtc_lab.schema_version SET version = 99")
        .unwrap();
    let e = store::PgStore::open(&url).unwrap_err().to_string();
    assert!(e.contains("99") && e.contains("newer"), "{e}");
    // A URL naming another machine is refused before any connection, and
    // the message does not repeat the password.
    let e = store::open("postgres://lab:s3cret@192.0.2.7/lab")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a loopback"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
}

//! Store resume: a run interrupted after half its calls (the runner is
//! dropped, as if killed) keeps them, and `--resume` runs only the rest.

use lab::runner::{RunOptions, Runner, DB_FILE};
use lab::store::Store;

use crate::support::write_plan;

const PLAN: &str = r#"
name = "resume"
repetitions = 2
[relay]
mode = "start"
[profile]
duration_s = 0.3
[call]
drain_ms = 50
[[scenarios]]
name = "one"
caller = "direct"
callee = "direct"
[[scenarios]]
name = "two"
caller = "direct"
callee = "direct"
"#;

/// (scenario name, repetition) of every call of the run, in plan order.
fn calls(db: &dyn Store, run_id: i64) -> Vec<(String, u32)> {
    let data = db.load_run(run_id).unwrap();
    let mut v: Vec<(u32, String, u32)> = data
        .calls
        .iter()
        .map(|c| {
            let s = data
                .scenarios
                .iter()
                .find(|s| s.id == c.scenario_id)
                .unwrap();
            (s.idx, s.name.clone(), c.repetition)
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n, r)| (n, r)).collect()
}

#[test]
fn interrupted_run_resumes_without_repeating_calls() {
    let dir = tempfile::tempdir().unwrap();
    for (name, db) in crate::store::backends(dir.path()) {
        let dir = tempfile::tempdir().unwrap();
        let db = (name != "sqlite").then_some(db);
        resume_on(dir.path(), db);
    }
}

/// The resume test on one backend (`db`: `None` = OUT/lab.sqlite).
fn resume_on(dir: &std::path::Path, db: Option<String>) {
    let plan = write_plan(dir, PLAN);
    let out = dir.join("out");
    let mut opts = RunOptions::new(&plan, &out);
    opts.quiet = true;
    opts.db = db;
    let db = opts.db();
    if opts.db.is_none() {
        assert_eq!(db, out.join(DB_FILE).display().to_string());
    }

    // Nothing to resume yet.
    let mut resume = opts.clone();
    resume.resume = true;
    let e = Runner::new(&resume).unwrap_err().to_string();
    assert!(e.contains("no unfinished run"), "{e}");

    let mut runner = Runner::new(&opts).unwrap();
    let run_id = runner.run_id();
    assert_eq!(runner.remaining(), 4);
    assert_eq!(runner.run(Some(2)).unwrap(), 2);
    drop(runner); // "killed": no finish, no report

    let store = lab::store::open(&db).unwrap();
    assert_eq!(
        calls(&*store, run_id),
        vec![("one".into(), 0), ("one".into(), 1)]
    );
    let data = store.load_run(run_id).unwrap();
    assert_eq!(data.run.finished_ms, None);
    drop(store);

    let mut runner = Runner::new(&resume).unwrap();
    assert_eq!(runner.run_id(), run_id);
    assert_eq!(runner.remaining(), 2);
    assert_eq!(runner.run(None).unwrap(), 2);
    let written = runner.finish().unwrap();
    assert!(written.html.is_file());

    let store = lab::store::open(&db).unwrap();
    assert_eq!(
        calls(&*store, run_id),
        vec![
            ("one".into(), 0),
            ("one".into(), 1),
            ("two".into(), 0),
            ("two".into(), 1)
        ]
    );
    let data = store.load_run(run_id).unwrap();
    assert!(data.run.finished_ms.is_some());
    // One run only: the resumed run is the latest.
    assert_eq!(store.latest_run().unwrap(), Some(run_id));
    // Every call has both directions' per-second samples.
    for c in &data.calls {
        let dirs: std::collections::HashSet<_> = data
            .samples
            .iter()
            .filter(|s| s.call_id == c.id)
            .map(|s| s.direction.as_str())
            .collect();
        assert_eq!(dirs.len(), 2, "call {}", c.id);
    }
    drop(store);

    // A finished run is not resumed again.
    let e = Runner::new(&resume).unwrap_err().to_string();
    assert!(e.contains("no unfinished run"), "{e}");

    // The report reads the same store back.
    let report = dir.join("report");
    lab::runner::report_from_db(&db, &report, None).unwrap();
    assert!(report.join("report.html").is_file());
}

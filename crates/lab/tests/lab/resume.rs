//! Store resume: a run interrupted after half its calls (the runner is
//! dropped, as if killed) keeps them, and `--resume` runs only the rest.

use lab::runner::{RunOptions, Runner, DB_FILE};
use lab::store::{SqliteStore, Store};

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

fn calls(db: &SqliteStore) -> Vec<(String, u32)> {
    let mut stmt = db
        .connection()
        .prepare(
            "SELECT s.name, c.repetition FROM calls c JOIN scenarios s ON s.id = c.scenario_id
             ORDER BY s.idx, c.repetition",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn interrupted_run_resumes_without_repeating_calls() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), PLAN);
    let out = dir.path().join("out");
    let mut opts = RunOptions::new(&plan, &out);
    opts.quiet = true;

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

    let db = SqliteStore::open(&out.join(DB_FILE)).unwrap();
    assert_eq!(calls(&db), vec![("one".into(), 0), ("one".into(), 1)]);
    let data = db.load_run(run_id).unwrap();
    assert_eq!(data.run.finished_ms, None);
    drop(db);

    let mut runner = Runner::new(&resume).unwrap();
    assert_eq!(runner.run_id(), run_id);
    assert_eq!(runner.remaining(), 2);
    assert_eq!(runner.run(None).unwrap(), 2);
    let written = runner.finish().unwrap();
    assert!(written.html.is_file());

    let db = SqliteStore::open(&out.join(DB_FILE)).unwrap();
    assert_eq!(
        calls(&db),
        vec![
            ("one".into(), 0),
            ("one".into(), 1),
            ("two".into(), 0),
            ("two".into(), 1)
        ]
    );
    assert!(db.load_run(run_id).unwrap().run.finished_ms.is_some());
    let runs: i64 = db
        .connection()
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 1);
    // Every call has both directions and per-second samples.
    let dirs: i64 = db
        .connection()
        .query_row("SELECT count(*) FROM call_directions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dirs, 8);
    drop(db);

    // A finished run is not resumed again.
    let e = Runner::new(&resume).unwrap_err().to_string();
    assert!(e.contains("no unfinished run"), "{e}");
}

//! Lab store insert rate, SQLite vs PostgreSQL: `cargo run --release -p lab
//! --example store_bench [CALLS] [SECONDS]` (default 200 calls of 30 s).
//!
//! Each call is written as `lab run` writes it: one transaction with the
//! call row, both directions and their per-second samples
//! ([`Store::record_call`]). SQLite: a file in a temporary directory (the
//! store's defaults). PostgreSQL: a server started here on 127.0.0.1 by
//! testkit::postgres (Debian's package, default settings, fsync on),
//! reached over TCP. Prints calls/s and samples/s; no assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use lab::call::{CallReport, DirectionReport, Outcome, Sample};
use lab::store::{self, NewRun, ScenarioRow};

fn direction(seconds: u32) -> DirectionReport {
    DirectionReport {
        sent: 50 * u64::from(seconds),
        received: 50 * u64::from(seconds),
        jitter_ms: 1.0,
        burst_r: 1.0,
        seconds: (0..seconds)
            .map(|t| Sample {
                t_s: t,
                tx_bytes: 8000,
                rx_bytes: 8000,
                rx_packets: 50,
                jitter_ms: 1.0,
                rtt_ms: None,
            })
            .collect(),
        ..DirectionReport::default()
    }
}

fn bench(name: &str, db: &str, calls: u32, seconds: u32) {
    let mut s = store::open(db).unwrap();
    let run = s
        .create_run(&NewRun {
            plan_name: "bench",
            plan_hash: "h",
            plan_text: "",
            started_ms: 0,
        })
        .unwrap();
    let scenario = s
        .ensure_scenario(
            run,
            &ScenarioRow {
                id: 0,
                idx: 0,
                name: "s".into(),
                caller_path: "a".into(),
                caller_kind: "direct".into(),
                callee_path: "b".into(),
                callee_kind: "direct".into(),
                impairment: "{}".into(),
                repetitions: calls,
                mode: "synthetic".into(),
            },
        )
        .unwrap();
    let mut call = CallReport::failed_setup(1, String::new(), f64::from(seconds) * 1000.0);
    call.outcome = Outcome::Success;
    call.failure = None;
    call.forward = direction(seconds);
    call.backward = direction(seconds);
    let t = Instant::now();
    for rep in 0..calls {
        s.record_call(scenario, rep, i64::from(rep), &call).unwrap();
    }
    let el = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let data = s.load_run(run).unwrap();
    let load = t.elapsed().as_secs_f64();
    assert_eq!(data.calls.len(), calls as usize);
    let samples = f64::from(calls) * 2.0 * f64::from(seconds);
    println!(
        "{name:>10}: {calls} calls in {el:.3} s = {:.0} calls/s, {:.0} samples/s; load_run {load:.3} s",
        f64::from(calls) / el,
        samples / el
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let seconds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    bench(
        "sqlite",
        &dir.path().join("lab.sqlite").display().to_string(),
        calls,
        seconds,
    );
    let pg =
        testkit::postgres::Postgres::start(&[]).expect("PostgreSQL (apt-get install postgresql)");
    bench("postgres", &pg.database().unwrap(), calls, seconds);
}

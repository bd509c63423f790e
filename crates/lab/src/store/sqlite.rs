//! The SQLite backend: one file, schema migrations by `PRAGMA user_version`.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension as _};

use super::{
    CallRow, NewRun, RunData, RunRow, SampleRow, ScenarioRow, SideRow, Store, StoreError, BACKWARD,
    FORWARD,
};
use crate::call::{CallReport, DirectionReport, Outcome};

/// The schema, one entry per version: `MIGRATIONS[i]` takes a database
/// from version `i` to `i + 1`. Append only; never edit a shipped entry.
pub const MIGRATIONS: &[&str] = &[
    // 1: runs, scenarios, calls, directions, per-second samples.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        plan_name TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        plan_text TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER
    );
    CREATE TABLE scenarios (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        caller_path TEXT NOT NULL,
        caller_kind TEXT NOT NULL,
        callee_path TEXT NOT NULL,
        callee_kind TEXT NOT NULL,
        impairment TEXT NOT NULL,
        repetitions INTEGER NOT NULL,
        UNIQUE (run_id, name)
    );
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        scenario_id INTEGER NOT NULL REFERENCES scenarios(id),
        repetition INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        failure TEXT,
        acceptable INTEGER NOT NULL,
        g114 TEXT,
        started_ms INTEGER NOT NULL,
        setup_ms REAL,
        duration_ms REAL NOT NULL,
        rtt_ms REAL,
        rtt_p95_ms REAL,
        owd_ms REAL,
        jitter_ms REAL,
        loss_pct REAL,
        r REAL,
        mos REAL,
        rx_kbps REAL,
        UNIQUE (scenario_id, repetition)
    );
    CREATE TABLE call_directions (
        call_id INTEGER NOT NULL REFERENCES calls(id),
        direction TEXT NOT NULL,
        sent INTEGER NOT NULL,
        received INTEGER NOT NULL,
        lost INTEGER NOT NULL,
        duplicates INTEGER NOT NULL,
        reordered INTEGER NOT NULL,
        loss_pct REAL NOT NULL,
        owd_median_ms REAL,
        owd_p95_ms REAL,
        jitter_ms REAL NOT NULL,
        rtt_median_ms REAL,
        rtt_p95_ms REAL,
        rtt_samples INTEGER NOT NULL,
        burst_r REAL NOT NULL,
        r REAL,
        mos REAL,
        tx_bytes INTEGER NOT NULL,
        rx_bytes INTEGER NOT NULL,
        PRIMARY KEY (call_id, direction)
    );
    CREATE TABLE samples (
        call_id INTEGER NOT NULL REFERENCES calls(id),
        direction TEXT NOT NULL,
        t_s INTEGER NOT NULL,
        tx_bytes INTEGER NOT NULL,
        rx_bytes INTEGER NOT NULL,
        rx_packets INTEGER NOT NULL,
        jitter_ms REAL NOT NULL,
        PRIMARY KEY (call_id, direction, t_s)
    );",
    // 2: browser mode: the scenario's mode, estimated one-way delays, the
    // per-second RTT of browser calls, and each page's connection.
    "ALTER TABLE scenarios ADD COLUMN mode TEXT NOT NULL DEFAULT 'synthetic';
    ALTER TABLE calls ADD COLUMN owd_estimated INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE samples ADD COLUMN rtt_ms REAL;
    CREATE TABLE call_sides (
        call_id INTEGER NOT NULL REFERENCES calls(id),
        side TEXT NOT NULL,
        local_candidate TEXT,
        remote_candidate TEXT,
        relay_protocol TEXT,
        jitter_buffer_ms REAL,
        PRIMARY KEY (call_id, side)
    );",
    // 3: webrtc mode: what each side's decoder concealed.
    "ALTER TABLE call_sides ADD COLUMN concealed_samples INTEGER;
    ALTER TABLE call_sides ADD COLUMN concealed_pct REAL;",
];

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::migrate(Connection::open(path)?)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::migrate(Connection::open_in_memory()?)
    }

    fn migrate(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteStore { conn })
    }

    /// The schema version.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// The connection, for ad-hoc queries (tests, tools).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn insert_direction(
        tx: &rusqlite::Transaction<'_>,
        call_id: i64,
        name: &str,
        d: &DirectionReport,
    ) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO call_directions (call_id, direction, sent, received, lost, duplicates,
                reordered, loss_pct, owd_median_ms, owd_p95_ms, jitter_ms, rtt_median_ms,
                rtt_p95_ms, rtt_samples, burst_r, r, mos, tx_bytes, rx_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19)",
            params![
                call_id,
                name,
                to_i64(d.sent),
                to_i64(d.received),
                to_i64(d.lost),
                to_i64(d.duplicates),
                to_i64(d.reordered),
                d.loss_pct,
                d.owd_median_ms,
                d.owd_p95_ms,
                d.jitter_ms,
                d.rtt_median_ms,
                d.rtt_p95_ms,
                to_i64(d.rtt_samples),
                d.burst_r,
                d.r,
                d.mos,
                to_i64(d.tx_bytes),
                to_i64(d.rx_bytes),
            ],
        )?;
        let mut stmt = tx.prepare_cached(
            "INSERT INTO samples (call_id, direction, t_s, tx_bytes, rx_bytes, rx_packets, jitter_ms,
                rtt_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for s in &d.seconds {
            stmt.execute(params![
                call_id,
                name,
                s.t_s,
                to_i64(s.tx_bytes),
                to_i64(s.rx_bytes),
                to_i64(s.rx_packets),
                s.jitter_ms,
                s.rtt_ms
            ])?;
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn create_run(&mut self, run: &NewRun<'_>) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO runs (plan_name, plan_hash, plan_text, started_ms) VALUES (?1, ?2, ?3, ?4)",
            params![run.plan_name, run.plan_hash, run.plan_text, run.started_ms],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn resumable_run(&self, plan_hash: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM runs WHERE plan_hash = ?1 AND finished_ms IS NULL
                 ORDER BY id DESC LIMIT 1",
                [plan_hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn latest_run(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT max(id) FROM runs", [], |r| r.get(0))?)
    }

    fn ensure_scenario(&mut self, run_id: i64, s: &ScenarioRow) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO scenarios (run_id, idx, name, caller_path, caller_kind, callee_path,
                callee_kind, impairment, repetitions, mode)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (run_id, name) DO NOTHING",
            params![
                run_id,
                s.idx,
                s.name,
                s.caller_path,
                s.caller_kind,
                s.callee_path,
                s.callee_kind,
                s.impairment,
                s.repetitions,
                s.mode
            ],
        )?;
        Ok(self.conn.query_row(
            "SELECT id FROM scenarios WHERE run_id = ?1 AND name = ?2",
            params![run_id, s.name],
            |r| r.get(0),
        )?)
    }

    fn done_calls(&self, run_id: i64) -> Result<HashSet<(i64, u32)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT c.scenario_id, c.repetition FROM calls c
             JOIN scenarios s ON s.id = c.scenario_id WHERE s.run_id = ?1",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u32>(1)?)))?;
        let mut done = HashSet::new();
        for row in rows {
            done.insert(row?);
        }
        Ok(done)
    }

    fn record_call(
        &mut self,
        scenario_id: i64,
        repetition: u32,
        started_ms: i64,
        c: &CallReport,
    ) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO calls (scenario_id, repetition, attempts, outcome, failure, acceptable,
                g114, started_ms, setup_ms, duration_ms, rtt_ms, rtt_p95_ms, owd_ms, jitter_ms,
                loss_pct, r, mos, rx_kbps, owd_estimated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19)",
            params![
                scenario_id,
                repetition,
                c.attempts,
                c.outcome.as_str(),
                c.failure,
                c.acceptable(),
                c.g114(),
                started_ms,
                c.setup_ms,
                c.duration_ms,
                c.rtt_ms,
                c.rtt_p95_ms,
                c.owd_ms(),
                c.jitter_ms(),
                c.loss_pct(),
                c.r(),
                c.mos(),
                c.rx_kbps(),
                c.owd_estimated,
            ],
        )?;
        let call_id = tx.last_insert_rowid();
        if c.measured() {
            Self::insert_direction(&tx, call_id, FORWARD, &c.forward)?;
            Self::insert_direction(&tx, call_id, BACKWARD, &c.backward)?;
        }
        for side in &c.sides {
            tx.execute(
                "INSERT INTO call_sides (call_id, side, local_candidate, remote_candidate,
                    relay_protocol, jitter_buffer_ms, concealed_samples, concealed_pct)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (call_id, side) DO NOTHING",
                params![
                    call_id,
                    side.side,
                    side.local_candidate,
                    side.remote_candidate,
                    side.relay_protocol,
                    side.jitter_buffer_ms,
                    side.concealed_samples.map(to_i64),
                    side.concealed_pct
                ],
            )?;
        }
        tx.commit()?;
        Ok(call_id)
    }

    fn finish_run(&mut self, run_id: i64, finished_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE runs SET finished_ms = ?2 WHERE id = ?1",
            params![run_id, finished_ms],
        )?;
        Ok(())
    }

    fn load_run(&self, run_id: i64) -> Result<RunData, StoreError> {
        let run = self
            .conn
            .query_row(
                "SELECT id, plan_name, plan_hash, started_ms, finished_ms FROM runs WHERE id = ?1",
                [run_id],
                |r| {
                    Ok(RunRow {
                        id: r.get(0)?,
                        plan_name: r.get(1)?,
                        plan_hash: r.get(2)?,
                        started_ms: r.get(3)?,
                        finished_ms: r.get(4)?,
                    })
                },
            )
            .optional()?
            .ok_or(StoreError::NoRun(run_id))?;
        let mut stmt = self.conn.prepare(
            "SELECT id, idx, name, caller_path, caller_kind, callee_path, callee_kind, impairment,
                repetitions, mode FROM scenarios WHERE run_id = ?1 ORDER BY idx, id",
        )?;
        let scenarios = stmt
            .query_map([run_id], |r| {
                Ok(ScenarioRow {
                    id: r.get(0)?,
                    idx: r.get(1)?,
                    name: r.get(2)?,
                    caller_path: r.get(3)?,
                    caller_kind: r.get(4)?,
                    callee_path: r.get(5)?,
                    callee_kind: r.get(6)?,
                    impairment: r.get(7)?,
                    repetitions: r.get(8)?,
                    mode: r.get(9)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT c.id, c.scenario_id, c.repetition, c.attempts, c.outcome, c.failure,
                c.acceptable, c.g114, c.started_ms, c.setup_ms, c.duration_ms, c.rtt_ms,
                c.rtt_p95_ms, c.owd_ms, c.jitter_ms, c.loss_pct, c.r, c.mos, c.rx_kbps,
                c.owd_estimated
             FROM calls c JOIN scenarios s ON s.id = c.scenario_id
             WHERE s.run_id = ?1 ORDER BY c.started_ms, c.id",
        )?;
        let raw = stmt
            .query_map([run_id], |r| {
                Ok((
                    r.get::<_, String>(4)?,
                    CallRow {
                        id: r.get(0)?,
                        scenario_id: r.get(1)?,
                        repetition: r.get(2)?,
                        attempts: r.get(3)?,
                        outcome: Outcome::Success,
                        failure: r.get(5)?,
                        acceptable: r.get(6)?,
                        g114: r.get(7)?,
                        started_ms: r.get(8)?,
                        setup_ms: r.get(9)?,
                        duration_ms: r.get(10)?,
                        rtt_ms: r.get(11)?,
                        rtt_p95_ms: r.get(12)?,
                        owd_ms: r.get(13)?,
                        jitter_ms: r.get(14)?,
                        loss_pct: r.get(15)?,
                        r: r.get(16)?,
                        mos: r.get(17)?,
                        rx_kbps: r.get(18)?,
                        owd_estimated: r.get(19)?,
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut calls = Vec::with_capacity(raw.len());
        for (outcome, mut row) in raw {
            row.outcome = Outcome::parse(&outcome)
                .ok_or_else(|| StoreError::Corrupt(format!("outcome {outcome:?}")))?;
            calls.push(row);
        }
        let mut stmt = self.conn.prepare(
            "SELECT m.call_id, m.direction, m.t_s, m.tx_bytes, m.rx_bytes, m.rx_packets, m.jitter_ms,
                m.rtt_ms
             FROM samples m JOIN calls c ON c.id = m.call_id
             JOIN scenarios s ON s.id = c.scenario_id
             WHERE s.run_id = ?1 ORDER BY m.call_id, m.direction, m.t_s",
        )?;
        let samples = stmt
            .query_map([run_id], |r| {
                Ok(SampleRow {
                    call_id: r.get(0)?,
                    direction: r.get(1)?,
                    t_s: r.get(2)?,
                    tx_bytes: from_i64(r.get(3)?),
                    rx_bytes: from_i64(r.get(4)?),
                    rx_packets: from_i64(r.get(5)?),
                    jitter_ms: r.get(6)?,
                    rtt_ms: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT d.call_id, d.side, d.local_candidate, d.remote_candidate, d.relay_protocol,
                d.jitter_buffer_ms, d.concealed_samples, d.concealed_pct
             FROM call_sides d JOIN calls c ON c.id = d.call_id
             JOIN scenarios s ON s.id = c.scenario_id
             WHERE s.run_id = ?1 ORDER BY d.call_id, d.side",
        )?;
        let sides = stmt
            .query_map([run_id], |r| {
                Ok(SideRow {
                    call_id: r.get(0)?,
                    side: r.get(1)?,
                    local_candidate: r.get(2)?,
                    remote_candidate: r.get(3)?,
                    relay_protocol: r.get(4)?,
                    jitter_buffer_ms: r.get(5)?,
                    concealed_samples: r.get::<_, Option<i64>>(6)?.map(from_i64),
                    concealed_pct: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RunData {
            run,
            scenarios,
            calls,
            samples,
            sides,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO runs (id, plan_name, plan_hash, plan_text, started_ms)
                     VALUES (1, 'p', 'h', 't', 0);
                 INSERT INTO scenarios (id, run_id, idx, name, caller_path, caller_kind,
                     callee_path, callee_kind, impairment, repetitions)
                     VALUES (1, 1, 0, 's', 'a', 'turn-udp', 'b', 'turn-udp', '{}', 1);
                 INSERT INTO calls (id, scenario_id, repetition, attempts, outcome, acceptable,
                     started_ms, duration_ms) VALUES (1, 1, 0, 1, 'success', 1, 0, 1000.0);
                 INSERT INTO samples (call_id, direction, t_s, tx_bytes, rx_bytes, rx_packets,
                     jitter_ms) VALUES (1, 'caller->callee', 0, 1, 1, 1, 0.5);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let data = s.load_run(1).unwrap();
        assert_eq!(data.scenarios[0].mode, "synthetic");
        assert!(!data.calls[0].owd_estimated);
        assert_eq!(data.samples[0].rtt_ms, None);
        assert!(data.sides.is_empty());
    }

    #[test]
    fn migrates_once_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.sqlite");
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.connection()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(s);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}

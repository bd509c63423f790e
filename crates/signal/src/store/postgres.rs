//! The PostgreSQL backend of the statistics store (`[serve] database_url`):
//! the tables of the SQLite file at schema 2 (room names as keyed hashes,
//! per-call aggregates, per-sample rows only when kept), in the schema
//! `onionrtc_signal`; connection rules and migrations in [`pgconn`].
//!
//! The writer thread keeps a client of its own and writes each batch in
//! one transaction (a sample's aggregate update and its row together, or
//! neither); after a failed batch it reconnects at the next one. Readers
//! share one client behind a mutex, reconnecting the same way. A
//! `postgres::Client` owns a small Tokio runtime, which must not be dropped
//! on an async task: the readers' client is dropped on a thread of its own.

use std::sync::Mutex;

use pgconn::postgres::{Client, Row};
use pgconn::{PgError, Target};

use super::{
    build_sample_row, build_summary, CallDetail, CallSummary, SampleRecord, StoreError, Writer,
    SUMMARY_COLUMNS,
};

/// The schema the store's tables live in.
pub const SCHEMA: &str = "onionrtc_signal";

/// PostgreSQL schema versions (`PG_MIGRATIONS[i]` takes version `i` to
/// `i + 1`); version 1 has the semantics of the SQLite file's schema 2.
/// Append only.
pub const PG_MIGRATIONS: &[&str] = &["
CREATE TABLE calls(
    id TEXT PRIMARY KEY, room_hash TEXT, started BIGINT, last BIGINT,
    samples BIGINT NOT NULL DEFAULT 0,
    rtt_sum DOUBLE PRECISION NOT NULL DEFAULT 0, rtt_count BIGINT NOT NULL DEFAULT 0,
    rtt_max DOUBLE PRECISION,
    jitter_sum DOUBLE PRECISION NOT NULL DEFAULT 0, jitter_count BIGINT NOT NULL DEFAULT 0,
    jitter_max DOUBLE PRECISION,
    packets_lost BIGINT NOT NULL DEFAULT 0, packets_received BIGINT NOT NULL DEFAULT 0,
    jitter_buffer_delay DOUBLE PRECISION NOT NULL DEFAULT 0,
    jitter_buffer_emitted BIGINT NOT NULL DEFAULT 0,
    bytes_sent BIGINT NOT NULL DEFAULT 0, bytes_received BIGINT NOT NULL DEFAULT 0,
    relay_protocols BIGINT NOT NULL DEFAULT 0, candidate_types BIGINT NOT NULL DEFAULT 0,
    states BIGINT NOT NULL DEFAULT 0);
CREATE TABLE samples(call_id TEXT, side BIGINT, ts BIGINT, state TEXT,
    rtt DOUBLE PRECISION, jitter DOUBLE PRECISION, packets_lost BIGINT,
    packets_received BIGINT, jitter_buffer_delay DOUBLE PRECISION,
    jitter_buffer_emitted BIGINT, bytes_sent BIGINT, bytes_received BIGINT,
    bitrate_in DOUBLE PRECISION, bitrate_out DOUBLE PRECISION,
    local_type TEXT, remote_type TEXT, relay_protocol TEXT);
CREATE INDEX samples_call_ts ON samples(call_id, ts);
CREATE INDEX samples_ts ON samples(ts);
CREATE INDEX calls_last ON calls(last);
CREATE INDEX calls_room_hash ON calls(room_hash);
"];

/// [`super::UPSERT_CALL`] in PostgreSQL's words.
const UPSERT_CALL: &str = "
INSERT INTO calls AS c(id, room_hash, started, last, samples, rtt_sum, rtt_count, rtt_max,
    jitter_sum, jitter_count, jitter_max, packets_lost, packets_received,
    jitter_buffer_delay, jitter_buffer_emitted, bytes_sent, bytes_received,
    relay_protocols, candidate_types, states)
VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT(id) DO UPDATE SET
    last = GREATEST(c.last, excluded.last),
    samples = c.samples + 1,
    rtt_sum = c.rtt_sum + excluded.rtt_sum,
    rtt_count = c.rtt_count + excluded.rtt_count,
    rtt_max = CASE WHEN c.rtt_max IS NULL OR excluded.rtt_max > c.rtt_max
                   THEN excluded.rtt_max ELSE c.rtt_max END,
    jitter_sum = c.jitter_sum + excluded.jitter_sum,
    jitter_count = c.jitter_count + excluded.jitter_count,
    jitter_max = CASE WHEN c.jitter_max IS NULL OR excluded.jitter_max > c.jitter_max
                      THEN excluded.jitter_max ELSE c.jitter_max END,
    packets_lost = c.packets_lost + excluded.packets_lost,
    packets_received = c.packets_received + excluded.packets_received,
    jitter_buffer_delay = c.jitter_buffer_delay + excluded.jitter_buffer_delay,
    jitter_buffer_emitted = c.jitter_buffer_emitted + excluded.jitter_buffer_emitted,
    bytes_sent = c.bytes_sent + excluded.bytes_sent,
    bytes_received = c.bytes_received + excluded.bytes_received,
    relay_protocols = c.relay_protocols | excluded.relay_protocols,
    candidate_types = c.candidate_types | excluded.candidate_types,
    states = c.states | excluded.states
";

const INSERT_SAMPLE: &str = "
INSERT INTO samples(call_id, side, ts, state, rtt, jitter, packets_lost,
    packets_received, jitter_buffer_delay, jitter_buffer_emitted, bytes_sent,
    bytes_received, bitrate_in, bitrate_out, local_type, remote_type, relay_protocol)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
";

const SAMPLE_COLUMNS: &str = "side, ts, state, rtt, jitter, packets_lost, packets_received,
    jitter_buffer_delay, jitter_buffer_emitted, bytes_sent, bytes_received,
    bitrate_in, bitrate_out, local_type, remote_type, relay_protocol";

impl From<pgconn::postgres::Error> for StoreError {
    fn from(e: pgconn::postgres::Error) -> Self {
        StoreError::Pg(PgError::Db(e))
    }
}

/// Connects, migrates, and deletes stored samples unless they are kept.
pub(super) fn open(target: &Target, keep_samples: bool) -> Result<Client, StoreError> {
    let mut client = target.connect(SCHEMA)?;
    pgconn::migrate(&mut client, SCHEMA, PG_MIGRATIONS)?;
    if !keep_samples {
        let n = client.execute("DELETE FROM samples", &[])?;
        if n > 0 {
            tracing::info!(
                rows = n,
                "stats store: deleted stored samples (store_stats_samples is off)"
            );
        }
    }
    Ok(client)
}

/// The writer thread's side.
pub(super) struct PgWriter {
    target: Target,
    client: Option<Client>,
    /// A connection failure was logged; the next is not, until one works.
    down_logged: bool,
}

impl PgWriter {
    pub(super) fn new(target: Target, client: Client) -> PgWriter {
        PgWriter {
            target,
            client: Some(client),
            down_logged: false,
        }
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            match self.target.connect(SCHEMA) {
                Ok(c) => {
                    if self.down_logged {
                        tracing::info!("stats store: reconnected to PostgreSQL");
                    }
                    self.down_logged = false;
                    self.client = Some(c);
                }
                Err(e) => {
                    if !self.down_logged {
                        tracing::warn!(error = %e, "stats store: PostgreSQL unreachable");
                        self.down_logged = true;
                    }
                    return Err(e.into());
                }
            }
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Pg(PgError::Url))
    }
}

impl Writer for PgWriter {
    fn write_batch(
        &mut self,
        samples: &[Box<SampleRecord>],
        keep_samples: bool,
    ) -> Result<(), StoreError> {
        let client = self.client()?;
        let mut tx = client.transaction()?;
        let upsert = tx.prepare(UPSERT_CALL)?;
        let insert = tx.prepare(INSERT_SAMPLE)?;
        for r in samples {
            let s = &r.sample;
            let v = super::UpsertValues::new(&r.room_hash, r.call_started_ms, r.ts_ms, s);
            tx.execute(
                &upsert,
                &[
                    &r.call_id,
                    &v.room_hash,
                    &v.started_ms,
                    &v.ts_ms,
                    &v.rtt_sum,
                    &v.rtt_count,
                    &s.rtt,
                    &v.jitter_sum,
                    &v.jitter_count,
                    &s.jitter,
                    &r.increment.packets_lost,
                    &r.increment.packets_received,
                    &r.increment.jitter_buffer_delay,
                    &r.increment.jitter_buffer_emitted_count,
                    &r.increment.bytes_sent,
                    &r.increment.bytes_received,
                    &v.relay_protocols,
                    &v.candidate_types,
                    &v.states,
                ],
            )?;
            if !(keep_samples && r.keep_sample) {
                continue;
            }
            tx.execute(
                &insert,
                &[
                    &r.call_id,
                    &i64::from(r.side),
                    &r.ts_ms,
                    &s.state,
                    &s.rtt,
                    &s.jitter,
                    &s.packets_lost,
                    &s.packets_received,
                    &s.jitter_buffer_delay,
                    &s.jitter_buffer_emitted_count,
                    &s.bytes_sent,
                    &s.bytes_received,
                    &s.bitrate_in,
                    &s.bitrate_out,
                    &s.local_candidate_type,
                    &s.remote_candidate_type,
                    &s.relay_protocol,
                ],
            )?;
        }
        let done = tx.commit();
        if done.is_err() {
            // Whatever went wrong, start the next batch on a fresh client.
            self.client = None;
        }
        Ok(done?)
    }
}

/// The readers' client (queries and the retention sweep).
pub(super) struct PgReader {
    target: Target,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReader")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for PgReader {
    fn drop(&mut self) {
        let client = self.client.get_mut().ok().and_then(Option::take);
        if let Some(client) = client {
            // Its runtime must not be dropped on an async task.
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

impl PgReader {
    pub(super) fn new(target: Target, client: Client) -> PgReader {
        PgReader {
            target,
            client: Mutex::new(Some(client)),
        }
    }

    /// The target, password redacted when shown.
    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.target.connect(SCHEMA)?);
        }
        let Some(client) = guard.as_mut() else {
            return Err(StoreError::Pg(PgError::Url));
        };
        let r = f(client);
        if r.is_err() && client.is_closed() {
            *guard = None;
        }
        r
    }

    pub(super) fn sweep(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let mut n = tx.execute("DELETE FROM samples WHERE ts < $1", &[&cutoff])?;
            n += tx.execute(
                "DELETE FROM samples WHERE call_id IN (SELECT id FROM calls WHERE last < $1)",
                &[&cutoff],
            )?;
            n += tx.execute("DELETE FROM calls WHERE last < $1", &[&cutoff])?;
            tx.commit()?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    pub(super) fn calls(
        &self,
        limit: i64,
        room_hash: Option<&str>,
    ) -> Result<Vec<CallSummary>, StoreError> {
        self.with(|c| {
            let rows = match room_hash {
                None => c.query(
                    &format!("SELECT {SUMMARY_COLUMNS} FROM calls ORDER BY last DESC LIMIT $1"),
                    &[&limit],
                )?,
                Some(hash) => c.query(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS} FROM calls WHERE room_hash = $2
                         ORDER BY last DESC LIMIT $1"
                    ),
                    &[&limit, &hash],
                )?,
            };
            rows.iter().map(summary).collect()
        })
    }

    pub(super) fn call(&self, id: &str) -> Result<Option<CallDetail>, StoreError> {
        self.with(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(pgconn::postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let Some(row) = tx.query_opt(
                &format!("SELECT {SUMMARY_COLUMNS} FROM calls WHERE id = $1"),
                &[&id],
            )?
            else {
                return Ok(None);
            };
            let call = summary(&row)?;
            let series = tx
                .query(
                    &format!(
                        "SELECT {SAMPLE_COLUMNS} FROM samples WHERE call_id = $1 ORDER BY ts, side"
                    ),
                    &[&id],
                )?
                .iter()
                .map(|r| {
                    Ok(build_sample_row(
                        |i| r.try_get(i),
                        |i| r.try_get(i),
                        |i| r.try_get(i),
                    )?)
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            tx.commit()?;
            Ok(Some(CallDetail { call, series }))
        })
    }
}

fn summary(r: &Row) -> Result<CallSummary, StoreError> {
    Ok(build_summary(
        |i| r.try_get(i),
        |i| r.try_get(i),
        |i| r.try_get(i),
    )?)
}

//! The statistics store: `data_dir/signal.sqlite`.
//!
//! ```text
//! WebSocket tasks ──try_send──▶ bounded channel ──▶ writer thread (batched transactions)
//!                    (full: drop + count)
//! HTTP handlers ──spawn_blocking──▶ reader connection (queries, retention sweep)
//! ```
//!
//! Design decisions:
//! - Writes never block a WebSocket task: a full queue drops the sample and
//!   counts it ([`Store::dropped`]).
//! - Schema versions live in `PRAGMA user_version`; each migration runs in
//!   one transaction. WAL mode, `secure_delete` (expired rows are overwritten,
//!   not left in free pages), a busy timeout for the two connections.
//! - All times are milliseconds since the Unix epoch, from the server's
//!   clock (a sample's `ts` is when the server received it, so both members
//!   of a call share one clock).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::stats::StatsSample;

/// The database file name inside `data_dir`.
pub const DB_FILE: &str = "signal.sqlite";
/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 1;
/// Samples waiting for the writer at most.
const QUEUE: usize = 8192;
/// Samples written per transaction at most.
const BATCH: usize = 512;
/// Calls listed by [`Store::calls`] at most.
pub const MAX_LISTED_CALLS: usize = 200;

const MIGRATION_V1: &str = "
CREATE TABLE calls(id TEXT PRIMARY KEY, room TEXT, started INTEGER, last INTEGER);
CREATE TABLE samples(call_id, side INTEGER, ts INTEGER, state, rtt REAL, jitter REAL,
    packets_lost INTEGER, packets_received INTEGER, jitter_buffer_delay REAL,
    jitter_buffer_emitted INTEGER, bytes_sent INTEGER, bytes_received INTEGER,
    bitrate_in REAL, bitrate_out REAL, local_type TEXT, remote_type TEXT, relay_protocol TEXT);
CREATE INDEX samples_call_ts ON samples(call_id, ts);
CREATE INDEX samples_ts ON samples(ts);
CREATE INDEX calls_last ON calls(last);
";

/// Store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Creating the data directory failed.
    #[error("data directory {0}: {1}")]
    Dir(PathBuf, #[source] std::io::Error),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer version of this program.
    #[error("database schema version {0} is newer than this program's ({SCHEMA_VERSION})")]
    NewerSchema(i64),
    /// The writer thread could not be started.
    #[error("writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// One sample to store, with the call it belongs to.
#[derive(Debug, Clone)]
pub struct SampleRecord {
    /// The call's id (128-bit hex).
    pub call_id: String,
    /// The room name.
    pub room: String,
    /// When the call started (ms since the epoch).
    pub call_started_ms: i64,
    /// 0 = first member, 1 = second.
    pub side: u8,
    /// When the server received the sample (ms since the epoch).
    pub ts_ms: i64,
    /// The validated values.
    pub sample: StatsSample,
}

/// One row of `GET /api/calls`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallSummary {
    /// Call id.
    pub id: String,
    /// Room name.
    pub room: String,
    /// Start, ms since the epoch.
    pub started: i64,
    /// Last sample, ms since the epoch.
    pub last: i64,
    /// Samples stored.
    pub samples: i64,
    /// Median RTT over all samples, s.
    pub rtt_median: Option<f64>,
    /// Median jitter over all samples, s.
    pub jitter_median: Option<f64>,
    /// Packets lost / (lost + received), percent, from each side's latest
    /// cumulative counters.
    pub loss_pct: Option<f64>,
    /// Relay protocols seen (`udp`, `tcp`, `tls`), sorted.
    pub relay_protocols: Vec<String>,
}

/// One sample of `GET /api/calls/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRow {
    /// 0 = first member, 1 = second.
    pub side: u8,
    /// Server receive time, ms since the epoch.
    pub ts: i64,
    /// The values.
    #[serde(flatten)]
    pub stats: StatsSample,
}

/// `GET /api/calls/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallDetail {
    /// Call id.
    pub id: String,
    /// Room name.
    pub room: String,
    /// Samples in time order.
    pub samples: Vec<SampleRow>,
}

enum WriteOp {
    Sample(Box<SampleRecord>),
    Flush(mpsc::Sender<()>),
}

/// The statistics store. Cheap to share behind an `Arc`; the writer thread
/// ends when the store is dropped.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    reader: Mutex<Connection>,
    tx: SyncSender<WriteOp>,
    dropped: AtomicU64,
}

impl Store {
    /// Opens (or creates) `data_dir/signal.sqlite`, creating `data_dir` with
    /// mode 0700 if missing, migrates the schema and starts the writer.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(data_dir).map_err(|e| StoreError::Dir(data_dir.to_owned(), e))?;
        let path = data_dir.join(DB_FILE);
        let mut conn = open_conn(&path)?;
        migrate(&mut conn)?;
        let writer = open_conn(&path)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("signal-store".into())
            .spawn(move || write_loop(writer, rx))
            .map_err(StoreError::Thread)?;
        Ok(Store {
            path,
            reader: Mutex::new(conn),
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a sample; never blocks. False (and counted) if the queue is
    /// full or the writer is gone.
    pub fn record(&self, record: SampleRecord) -> bool {
        match self.tx.try_send(WriteOp::Sample(Box::new(record))) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Samples dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Blocks until every sample queued before the call is written, or
    /// `timeout` passes; true if written.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        if self.tx.send(WriteOp::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deletes samples and calls older than `retention_days` before
    /// `now_ms`; returns the number of rows deleted. Blocking.
    pub fn sweep(&self, retention_days: u32, now_ms: i64) -> Result<usize, StoreError> {
        let cutoff = now_ms.saturating_sub(i64::from(retention_days) * 86_400_000);
        let mut conn = self.reader();
        let tx = conn.transaction()?;
        let mut n = tx.execute("DELETE FROM samples WHERE ts < ?1", params![cutoff])?;
        n += tx.execute(
            "DELETE FROM samples WHERE call_id IN (SELECT id FROM calls WHERE last < ?1)",
            params![cutoff],
        )?;
        n += tx.execute("DELETE FROM calls WHERE last < ?1", params![cutoff])?;
        tx.commit()?;
        Ok(n)
    }

    /// The most recent calls (by last sample), at most `limit`
    /// (capped at [`MAX_LISTED_CALLS`]). Blocking.
    pub fn calls(&self, limit: usize) -> Result<Vec<CallSummary>, StoreError> {
        let limit = i64::try_from(limit.min(MAX_LISTED_CALLS)).unwrap_or(0);
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT c.id, c.room, c.started, c.last,
                    (SELECT count(*) FROM samples s WHERE s.call_id = c.id)
             FROM calls c ORDER BY c.last DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![limit], |r| {
                Ok(CallSummary {
                    id: r.get(0)?,
                    room: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    started: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                    last: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                    samples: r.get(4)?,
                    rtt_median: None,
                    jitter_median: None,
                    loss_pct: None,
                    relay_protocols: Vec::new(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        let mut out = Vec::with_capacity(rows.len());
        for mut c in rows {
            summarize(&conn, &mut c)?;
            out.push(c);
        }
        Ok(out)
    }

    /// One call with all its samples; `None` if unknown. Blocking.
    pub fn call(&self, id: &str) -> Result<Option<CallDetail>, StoreError> {
        let conn = self.reader();
        let room: Option<Option<String>> = conn
            .query_row("SELECT room FROM calls WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(room) = room else {
            return Ok(None);
        };
        let mut stmt = conn.prepare_cached(
            "SELECT side, ts, state, rtt, jitter, packets_lost, packets_received,
                    jitter_buffer_delay, jitter_buffer_emitted, bytes_sent, bytes_received,
                    bitrate_in, bitrate_out, local_type, remote_type, relay_protocol
             FROM samples WHERE call_id = ?1 ORDER BY ts, side",
        )?;
        let samples = stmt
            .query_map(params![id], |r| {
                Ok(SampleRow {
                    side: r.get::<_, Option<u8>>(0)?.unwrap_or(0),
                    ts: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                    stats: StatsSample {
                        state: intern(r.get(2)?, crate::stats::STATES),
                        rtt: r.get(3)?,
                        jitter: r.get(4)?,
                        packets_lost: r.get(5)?,
                        packets_received: r.get(6)?,
                        jitter_buffer_delay: r.get(7)?,
                        jitter_buffer_emitted_count: r.get(8)?,
                        bytes_sent: r.get(9)?,
                        bytes_received: r.get(10)?,
                        bitrate_in: r.get(11)?,
                        bitrate_out: r.get(12)?,
                        local_candidate_type: intern(r.get(13)?, crate::stats::CANDIDATE_TYPES),
                        remote_candidate_type: intern(r.get(14)?, crate::stats::CANDIDATE_TYPES),
                        relay_protocol: intern(r.get(15)?, crate::stats::RELAY_PROTOCOLS),
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(CallDetail {
            id: id.to_owned(),
            room: room.unwrap_or_default(),
            samples,
        }))
    }
}

fn intern(s: Option<String>, allowed: &[&'static str]) -> Option<&'static str> {
    let s = s?;
    allowed.iter().copied().find(|a| *a == s)
}

fn summarize(conn: &Connection, c: &mut CallSummary) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("SELECT rtt, jitter FROM samples WHERE call_id = ?1")?;
    let mut rtts = Vec::new();
    let mut jitters = Vec::new();
    let mut rows = stmt.query(params![c.id])?;
    while let Some(r) = rows.next()? {
        if let Some(v) = r.get::<_, Option<f64>>(0)? {
            rtts.push(v);
        }
        if let Some(v) = r.get::<_, Option<f64>>(1)? {
            jitters.push(v);
        }
    }
    drop(rows);
    c.rtt_median = median(&mut rtts);
    c.jitter_median = median(&mut jitters);

    let mut stmt = conn.prepare_cached(
        "SELECT max(packets_lost), max(packets_received) FROM samples
         WHERE call_id = ?1 GROUP BY side",
    )?;
    let (mut lost, mut received) = (0i64, 0i64);
    let mut rows = stmt.query(params![c.id])?;
    while let Some(r) = rows.next()? {
        lost = lost.saturating_add(r.get::<_, Option<i64>>(0)?.unwrap_or(0));
        received = received.saturating_add(r.get::<_, Option<i64>>(1)?.unwrap_or(0));
    }
    drop(rows);
    let total = lost.saturating_add(received);
    c.loss_pct = (total > 0).then(|| 100.0 * lost as f64 / total as f64);

    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT relay_protocol FROM samples
         WHERE call_id = ?1 AND relay_protocol IS NOT NULL ORDER BY 1",
    )?;
    c.relay_protocols = stmt
        .query_map(params![c.id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(())
}

/// The median (mean of the middle two for an even count).
fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema(version));
    }
    if version < 1 {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATION_V1)?;
        tx.pragma_update(None, "user_version", 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn write_loop(mut conn: Connection, rx: Receiver<WriteOp>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        let samples: Vec<Box<SampleRecord>> = batch
            .into_iter()
            .filter_map(|op| match op {
                WriteOp::Sample(s) => Some(s),
                WriteOp::Flush(ack) => {
                    acks.push(ack);
                    None
                }
            })
            .collect();
        if !samples.is_empty() {
            if let Err(e) = write_batch(&mut conn, &samples) {
                tracing::warn!(error = %e, count = samples.len(), "stats store: write failed");
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

fn write_batch(conn: &mut Connection, samples: &[Box<SampleRecord>]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut call = tx.prepare_cached(
            "INSERT INTO calls(id, room, started, last) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET last = max(last, excluded.last)",
        )?;
        let mut sample = tx.prepare_cached(
            "INSERT INTO samples(call_id, side, ts, state, rtt, jitter, packets_lost,
                packets_received, jitter_buffer_delay, jitter_buffer_emitted, bytes_sent,
                bytes_received, bitrate_in, bitrate_out, local_type, remote_type, relay_protocol)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        for r in samples {
            let s = &r.sample;
            call.execute(params![r.call_id, r.room, r.call_started_ms, r.ts_ms])?;
            sample.execute(params![
                r.call_id,
                r.side,
                r.ts_ms,
                s.state,
                s.rtt,
                s.jitter,
                s.packets_lost,
                s.packets_received,
                s.jitter_buffer_delay,
                s.jitter_buffer_emitted_count,
                s.bytes_sent,
                s.bytes_received,
                s.bitrate_in,
                s.bitrate_out,
                s.local_candidate_type,
                s.remote_candidate_type,
                s.relay_protocol,
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(call: &str, side: u8, ts: i64, rtt: f64) -> SampleRecord {
        SampleRecord {
            call_id: call.into(),
            room: "r".into(),
            call_started_ms: ts,
            side,
            ts_ms: ts,
            sample: StatsSample {
                rtt: Some(rtt),
                packets_lost: Some(i64::from(side)),
                packets_received: Some(99),
                relay_protocol: Some("udp"),
                ..StatsSample::default()
            },
        }
    }

    #[test]
    fn write_query_sweep() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(StoreError::Thread)?;
        let data = dir.path().join("d");
        let store = Store::open(&data)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&data).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o700));
        }
        let now = 10 * 86_400_000;
        for (i, rtt) in [0.01, 0.03, 0.02].into_iter().enumerate() {
            assert!(store.record(record("a", (i % 2) as u8, now + i as i64, rtt)));
        }
        assert!(store.record(record("old", 0, 1000, 0.5)));
        assert!(store.flush(Duration::from_secs(5)));
        let calls = store.calls(10)?;
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "a");
        assert_eq!(calls[0].samples, 3);
        assert_eq!(calls[0].rtt_median, Some(0.02));
        assert_eq!(calls[0].relay_protocols, vec!["udp".to_owned()]);
        let loss = calls[0].loss_pct.unwrap_or(0.0);
        assert!((loss - 100.0 / 199.0).abs() < 1e-9, "{loss}");
        let detail = store.call("a")?.map(|d| d.samples.len());
        assert_eq!(detail, Some(3));
        assert_eq!(store.call("nope")?, None);
        assert_eq!(store.sweep(7, now)?, 2);
        assert_eq!(store.calls(10)?.len(), 1);
        drop(store);
        // Reopening keeps the data and the schema version.
        let store = Store::open(&data)?;
        assert_eq!(store.calls(10)?.len(), 1);
        Ok(())
    }

    #[test]
    fn median_values() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0]), Some(2.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
    }
}

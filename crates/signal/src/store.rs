//! The statistics store: `data_dir/signal.sqlite`, or PostgreSQL with
//! `[serve] database_url` ([`Store::open_postgres`]: the same tables and
//! rules in the schema `onionrtc_signal`, module `postgres`; the file-level
//! measures below — WAL truncation, vacuum, file modes — are SQLite's).
//!
//! ```text
//! WebSocket tasks ──try_send──▶ bounded channel ──▶ writer thread (batched transactions)
//!                    (full: drop + count)
//! HTTP handlers ──spawn_blocking──▶ reader connection (queries, retention sweep)
//! ```
//!
//! What is kept (docs/privacy.md, "Stored"): per call its random id, a keyed
//! hash of the room name, start and last time, and aggregates updated with
//! every sample (count, RTT and jitter sum/count/max, loss, bytes and
//! jitter-buffer totals, the relay protocols, candidate types and states
//! seen). Per-sample rows — per-second byte counts and bit rates, which show
//! when each person talks — are written only when the operator opts in
//! ([`StoreOptions::keep_samples`], `[serve] store_stats_samples`).
//!
//! Design decisions:
//! - Room names never reach the file: the room column holds
//!   `HMAC-SHA256(room key, name)`, first 16 bytes in hex ([`RoomKey`]); an
//!   operator finds a room's calls by hashing its name the same way.
//! - Writes never block a WebSocket task: a full queue drops the sample and
//!   counts it ([`Store::dropped`]).
//! - Schema versions live in `PRAGMA user_version`; each migration runs in
//!   one transaction. Version 2 hashes the room names of version 1 and
//!   replays its samples into the aggregates; then (and whenever samples are
//!   not kept but some are in the file) the file is vacuumed and the WAL
//!   truncated, so no old text survives in free pages or the WAL. The WAL is
//!   also truncated within [`TRUNCATE_EVERY`] (1 s) of every batch the
//!   writer commits: it would otherwise keep every earlier version of the
//!   pages a batch changed — the history of each call's running totals,
//!   i.e. the per-second values. (Once per batch instead costs a checkpoint
//!   with an fsync per sample at low load: ~3 ms instead of ~30 µs.) WAL mode,
//!   `secure_delete` (deleted rows are overwritten), `temp_store = MEMORY`
//!   (VACUUM's copy does not go to a temporary file), a busy timeout for the
//!   two connections.
//! - File modes: the data directory is 0700 and every file in it 0600,
//!   whatever they were ([`secure_data_dir`] fixes and warns). The database
//!   file is created 0600 before SQLite opens it; SQLite creates `-wal` and
//!   `-shm` with the database file's mode.
//! - All times are milliseconds since the Unix epoch, from the server's
//!   clock (a sample's `ts` is when the server received it, so both members
//!   of a call share one clock).

use std::fmt;
use std::fs::{OpenOptions, Permissions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::stats::{self, Cumulative, Increment, StatsSample};

mod postgres;

pub use postgres::{PG_MIGRATIONS, SCHEMA as PG_SCHEMA};

/// The database file name inside `data_dir`.
pub const DB_FILE: &str = "signal.sqlite";
/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 2;
/// Samples waiting for the writer at most.
const QUEUE: usize = 8192;
/// Samples written per transaction at most.
const BATCH: usize = 512;
/// Calls listed by [`Store::calls`] at most.
pub const MAX_LISTED_CALLS: usize = 200;
/// The WAL, which keeps the earlier versions of the pages each batch
/// changes, is truncated at most this long after a batch is written.
pub const TRUNCATE_EVERY: Duration = Duration::from_secs(1);
/// Files of the data directory whose modes are checked at most.
const MAX_DIR_ENTRIES: usize = 10_000;

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

/// Version 2: the room column holds a keyed hash; per-call aggregates.
const MIGRATION_V2: &str = "
ALTER TABLE calls RENAME COLUMN room TO room_hash;
ALTER TABLE calls ADD COLUMN samples INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN rtt_sum REAL NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN rtt_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN rtt_max REAL;
ALTER TABLE calls ADD COLUMN jitter_sum REAL NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN jitter_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN jitter_max REAL;
ALTER TABLE calls ADD COLUMN packets_lost INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN packets_received INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN jitter_buffer_delay REAL NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN jitter_buffer_emitted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN bytes_sent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN bytes_received INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN relay_protocols INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN candidate_types INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN states INTEGER NOT NULL DEFAULT 0;
CREATE INDEX calls_room_hash ON calls(room_hash);
";

/// Adds one sample to its call's aggregates (creating the call).
const UPSERT_CALL: &str = "
INSERT INTO calls(id, room_hash, started, last, samples, rtt_sum, rtt_count, rtt_max,
    jitter_sum, jitter_count, jitter_max, packets_lost, packets_received,
    jitter_buffer_delay, jitter_buffer_emitted, bytes_sent, bytes_received,
    relay_protocols, candidate_types, states)
VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
ON CONFLICT(id) DO UPDATE SET
    last = max(last, excluded.last),
    samples = samples + 1,
    rtt_sum = rtt_sum + excluded.rtt_sum,
    rtt_count = rtt_count + excluded.rtt_count,
    rtt_max = CASE WHEN rtt_max IS NULL OR excluded.rtt_max > rtt_max
                   THEN excluded.rtt_max ELSE rtt_max END,
    jitter_sum = jitter_sum + excluded.jitter_sum,
    jitter_count = jitter_count + excluded.jitter_count,
    jitter_max = CASE WHEN jitter_max IS NULL OR excluded.jitter_max > jitter_max
                      THEN excluded.jitter_max ELSE jitter_max END,
    packets_lost = packets_lost + excluded.packets_lost,
    packets_received = packets_received + excluded.packets_received,
    jitter_buffer_delay = jitter_buffer_delay + excluded.jitter_buffer_delay,
    jitter_buffer_emitted = jitter_buffer_emitted + excluded.jitter_buffer_emitted,
    bytes_sent = bytes_sent + excluded.bytes_sent,
    bytes_received = bytes_received + excluded.bytes_received,
    relay_protocols = relay_protocols | excluded.relay_protocols,
    candidate_types = candidate_types | excluded.candidate_types,
    states = states | excluded.states
";

const INSERT_SAMPLE: &str = "
INSERT INTO samples(call_id, side, ts, state, rtt, jitter, packets_lost,
    packets_received, jitter_buffer_delay, jitter_buffer_emitted, bytes_sent,
    bytes_received, bitrate_in, bitrate_out, local_type, remote_type, relay_protocol)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
";

const SUMMARY_COLUMNS: &str = "id, room_hash, started, last, samples, rtt_sum, rtt_count,
    rtt_max, jitter_sum, jitter_count, jitter_max, packets_lost, packets_received,
    jitter_buffer_delay, jitter_buffer_emitted, bytes_sent, bytes_received,
    relay_protocols, candidate_types, states";

/// Store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Creating the data directory, or fixing its modes, failed.
    #[error("data directory {0}: {1}")]
    Dir(PathBuf, #[source] std::io::Error),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed, or its URL was refused.
    #[error("{0}")]
    Pg(#[from] pgconn::PgError),
    /// The file was written by a newer version of this program.
    #[error("database schema version {0} is newer than this program's ({SCHEMA_VERSION})")]
    NewerSchema(i64),
    /// The writer thread could not be started.
    #[error("writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A setting the state needs is refused (e.g. `redis_url`).
    #[error("{0}")]
    Config(String),
}

/// The key of the room-name hash: under `serve`, the content of
/// `DATA_DIR/room-key`. Its `Debug` shows no key material.
#[derive(Clone)]
pub struct RoomKey(Hmac<Sha256>);

impl RoomKey {
    /// A key from secret bytes (any length; at least 32 random bytes).
    pub fn new(secret: &[u8]) -> RoomKey {
        // HMAC's own key rule (RFC 2104): a key longer than the block is
        // hashed, a shorter one zero-padded; so this cannot fail.
        let mut block = [0u8; 64];
        if secret.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        RoomKey(<Hmac<Sha256> as KeyInit>::new(&block.into()))
    }

    /// A random key, for a server whose hashes need not survive a restart.
    pub fn random() -> RoomKey {
        RoomKey::new(&rand::random::<[u8; 32]>())
    }

    /// `HMAC-SHA256(key, room)`, first 16 bytes, lowercase hex.
    pub fn hash(&self, room: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(room.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomKey(<redacted>)")
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The key of the room-name hash.
    pub room_key: RoomKey,
    /// Keep every sample (per-second byte counts and bit rates, which show
    /// when each person talks) besides the per-call aggregates. When false,
    /// samples already in the file are deleted at open.
    pub keep_samples: bool,
}

/// One sample to store, with the call it belongs to.
#[derive(Debug, Clone)]
pub struct SampleRecord {
    /// The call's id (128-bit hex).
    pub call_id: String,
    /// The room name's hash ([`Store::room_hash`]).
    pub room_hash: String,
    /// When the call started (ms since the epoch).
    pub call_started_ms: i64,
    /// 0 = first member, 1 = second.
    pub side: u8,
    /// When the server received the sample (ms since the epoch).
    pub ts_ms: i64,
    /// The validated values.
    pub sample: StatsSample,
    /// What the sample's cumulative counters add to the call's totals.
    pub increment: Increment,
    /// Write the sample itself too (when the store keeps samples and the
    /// member is under its cap).
    pub keep_sample: bool,
}

/// One call as stored: `GET /api/calls` lists these.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallSummary {
    /// Call id.
    pub id: String,
    /// The room name's keyed hash (32 hex digits).
    pub room_hash: String,
    /// Start, ms since the epoch.
    pub started: i64,
    /// Last sample, ms since the epoch.
    pub last: i64,
    /// Samples received (both members).
    pub samples: i64,
    /// Mean RTT over the samples that had one, s.
    pub rtt_mean: Option<f64>,
    /// Largest RTT, s.
    pub rtt_max: Option<f64>,
    /// Mean jitter, s.
    pub jitter_mean: Option<f64>,
    /// Largest jitter, s.
    pub jitter_max: Option<f64>,
    /// Packets lost, both members' inbound streams.
    pub packets_lost: i64,
    /// Packets received, both members' inbound streams.
    pub packets_received: i64,
    /// `packets_lost / (packets_lost + packets_received)`, percent.
    pub loss_pct: Option<f64>,
    /// Mean jitter-buffer delay (total delay / emitted), s.
    pub jitter_buffer_mean: Option<f64>,
    /// Bytes sent, both members, whole call.
    pub bytes_sent: i64,
    /// Bytes received, both members, whole call.
    pub bytes_received: i64,
    /// Relay protocols seen (`udp`, `tcp`, `tls`).
    pub relay_protocols: Vec<&'static str>,
    /// Candidate types of the selected pairs seen (local and remote).
    pub candidate_types: Vec<&'static str>,
    /// Connection states reported.
    pub states: Vec<&'static str>,
}

/// One stored sample of `GET /api/calls/{id}` (only with
/// `keep_samples`).
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

/// `GET /api/calls/{id}`: the call's aggregates and its stored samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallDetail {
    /// The aggregates.
    #[serde(flatten)]
    pub call: CallSummary,
    /// Samples in time order; empty unless samples are kept.
    pub series: Vec<SampleRow>,
}

enum WriteOp {
    Sample(Box<SampleRecord>),
    Flush(mpsc::Sender<()>),
}

/// The statistics store. Cheap to share behind an `Arc`; the writer thread
/// ends when the store is dropped.
#[derive(Debug)]
pub struct Store {
    room_key: RoomKey,
    keep_samples: bool,
    reader: Reader,
    tx: SyncSender<WriteOp>,
    dropped: AtomicU64,
}

/// Where queries go.
#[derive(Debug)]
enum Reader {
    /// The file and a connection of its own.
    Sqlite(PathBuf, Mutex<Connection>),
    /// A PostgreSQL client.
    Postgres(Box<postgres::PgReader>),
}

/// What the writer thread writes with.
trait Writer: Send + 'static {
    /// Writes one batch in one transaction.
    fn write_batch(
        &mut self,
        samples: &[Box<SampleRecord>],
        keep_samples: bool,
    ) -> Result<(), StoreError>;
    /// Called at most [`TRUNCATE_EVERY`] after a batch, before a flush is
    /// acknowledged and at the end (SQLite truncates its WAL).
    fn checkpoint(&mut self) {}
}

impl Writer for Connection {
    fn write_batch(
        &mut self,
        samples: &[Box<SampleRecord>],
        keep_samples: bool,
    ) -> Result<(), StoreError> {
        Ok(write_batch(self, samples, keep_samples)?)
    }

    fn checkpoint(&mut self) {
        truncate_wal(self);
    }
}

/// Starts the writer thread.
fn start_writer<W: Writer>(writer: W, keep: bool) -> Result<SyncSender<WriteOp>, StoreError> {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("signal-store".into())
        .spawn(move || write_loop(writer, rx, keep))
        .map_err(StoreError::Thread)?;
    Ok(tx)
}

impl Store {
    /// Opens (or creates) `data_dir/signal.sqlite`: makes `data_dir` 0700
    /// and its files 0600 ([`secure_data_dir`]), migrates the schema,
    /// deletes stored samples unless they are kept, and starts the writer.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let dir_err = |e| StoreError::Dir(data_dir.to_owned(), e);
        secure_data_dir(data_dir).map_err(dir_err)?;
        let path = data_dir.join(DB_FILE);
        create_private_file(&path).map_err(dir_err)?;
        let mut conn = open_conn(&path)?;
        let mut scrub = migrate(&mut conn, &options.room_key)?;
        if !options.keep_samples {
            let n = conn.execute("DELETE FROM samples", [])?;
            if n > 0 {
                tracing::info!(
                    rows = n,
                    "stats store: deleted stored samples (store_stats_samples is off)"
                );
                scrub = true;
            }
        }
        if scrub {
            conn.execute_batch("VACUUM")?;
        }
        truncate_wal(&conn);
        let tx = start_writer(open_conn(&path)?, options.keep_samples)?;
        Ok(Store {
            room_key: options.room_key,
            keep_samples: options.keep_samples,
            reader: Reader::Sqlite(path, Mutex::new(conn)),
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Opens the store in PostgreSQL (`[serve] database_url`): the URL
    /// must name this machine ([`pgconn::Target`]); migrates the schema
    /// `onionrtc_signal`, deletes stored samples unless they are kept, and
    /// starts the writer. Blocking; not on an async task (the client runs
    /// a small runtime of its own).
    pub fn open_postgres(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let target = pgconn::Target::parse(url)?;
        let reader = postgres::open(&target, options.keep_samples)?;
        let writer = target.connect(PG_SCHEMA)?;
        let tx = start_writer(
            postgres::PgWriter::new(target.clone(), writer),
            options.keep_samples,
        )?;
        tracing::info!(database = %target, "stats store: PostgreSQL");
        Ok(Store {
            room_key: options.room_key,
            keep_samples: options.keep_samples,
            reader: Reader::Postgres(Box::new(postgres::PgReader::new(target, reader))),
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// The database file (SQLite); `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.reader {
            Reader::Sqlite(path, _) => Some(path),
            Reader::Postgres(_) => None,
        }
    }

    /// Where the store is: the file, or the URL with its password
    /// redacted.
    pub fn location(&self) -> String {
        match &self.reader {
            Reader::Sqlite(path, _) => path.display().to_string(),
            Reader::Postgres(r) => r.target().to_string(),
        }
    }

    /// The stored form of a room name.
    pub fn room_hash(&self, room: &str) -> String {
        self.room_key.hash(room)
    }

    /// Whether samples are stored besides the aggregates.
    pub fn keeps_samples(&self) -> bool {
        self.keep_samples
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

    /// Blocks until every sample queued before the call is written (and
    /// the WAL truncated), or `timeout` passes; true if written.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        if self.tx.send(WriteOp::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }

    /// The SQLite connection, or the PostgreSQL reader.
    fn reader(&self) -> Result<std::sync::MutexGuard<'_, Connection>, &postgres::PgReader> {
        match &self.reader {
            Reader::Sqlite(_, conn) => Ok(conn.lock().unwrap_or_else(|e| e.into_inner())),
            Reader::Postgres(r) => Err(r),
        }
    }

    /// Deletes samples and calls older than `retention_days` before
    /// `now_ms`; returns the number of rows deleted. Blocking.
    pub fn sweep(&self, retention_days: u32, now_ms: i64) -> Result<usize, StoreError> {
        let cutoff = now_ms.saturating_sub(i64::from(retention_days) * 86_400_000);
        let mut conn = match self.reader() {
            Ok(conn) => conn,
            Err(pg) => return pg.sweep(cutoff),
        };
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

    /// The most recent calls (by last sample), at most `limit` (capped at
    /// [`MAX_LISTED_CALLS`]); only the room's with `room_hash`. Blocking.
    pub fn calls(
        &self,
        limit: usize,
        room_hash: Option<&str>,
    ) -> Result<Vec<CallSummary>, StoreError> {
        let limit = i64::try_from(limit.min(MAX_LISTED_CALLS)).unwrap_or(0);
        let conn = match self.reader() {
            Ok(conn) => conn,
            Err(pg) => return pg.calls(limit, room_hash),
        };
        let rows = match room_hash {
            None => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM calls ORDER BY last DESC LIMIT ?1"
                ))?;
                let rows = stmt.query_map(params![limit], summary)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
            Some(hash) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM calls WHERE room_hash = ?2
                     ORDER BY last DESC LIMIT ?1"
                ))?;
                let rows = stmt.query_map(params![limit, hash], summary)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// One call with its stored samples; `None` if unknown. Blocking.
    pub fn call(&self, id: &str) -> Result<Option<CallDetail>, StoreError> {
        let conn = match self.reader() {
            Ok(conn) => conn,
            Err(pg) => return pg.call(id),
        };
        let call = conn
            .prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM calls WHERE id = ?1"
            ))?
            .query_row(params![id], summary)
            .optional()?;
        let Some(call) = call else {
            return Ok(None);
        };
        let mut stmt = conn.prepare_cached(
            "SELECT side, ts, state, rtt, jitter, packets_lost, packets_received,
                    jitter_buffer_delay, jitter_buffer_emitted, bytes_sent, bytes_received,
                    bitrate_in, bitrate_out, local_type, remote_type, relay_protocol
             FROM samples WHERE call_id = ?1 ORDER BY ts, side",
        )?;
        let series = stmt
            .query_map(params![id], sample_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(CallDetail { call, series }))
    }
}

/// A `samples` row as [`SampleRow`] (columns as in [`Store::call`]).
fn sample_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SampleRow> {
    build_sample_row(|i| r.get(i), |i| r.get(i), |i| r.get(i))
}

/// A `calls` row ([`SUMMARY_COLUMNS`]) as [`CallSummary`].
fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallSummary> {
    build_summary(|i| r.get(i), |i| r.get(i), |i| r.get(i))
}

/// A [`SampleRow`] from the columns of [`Store::call`]'s sample query,
/// read by index as text, integer or real (either backend).
fn build_sample_row<E>(
    text: impl Fn(usize) -> Result<Option<String>, E>,
    int: impl Fn(usize) -> Result<Option<i64>, E>,
    real: impl Fn(usize) -> Result<Option<f64>, E>,
) -> Result<SampleRow, E> {
    Ok(SampleRow {
        side: int(0)?.and_then(|v| u8::try_from(v).ok()).unwrap_or(0),
        ts: int(1)?.unwrap_or(0),
        stats: StatsSample {
            state: intern(text(2)?, stats::STATES),
            rtt: real(3)?,
            jitter: real(4)?,
            packets_lost: int(5)?,
            packets_received: int(6)?,
            jitter_buffer_delay: real(7)?,
            jitter_buffer_emitted_count: int(8)?,
            bytes_sent: int(9)?,
            bytes_received: int(10)?,
            bitrate_in: real(11)?,
            bitrate_out: real(12)?,
            local_candidate_type: intern(text(13)?, stats::CANDIDATE_TYPES),
            remote_candidate_type: intern(text(14)?, stats::CANDIDATE_TYPES),
            relay_protocol: intern(text(15)?, stats::RELAY_PROTOCOLS),
        },
    })
}

/// A [`CallSummary`] from the [`SUMMARY_COLUMNS`], read by index (either
/// backend).
fn build_summary<E>(
    text: impl Fn(usize) -> Result<Option<String>, E>,
    int: impl Fn(usize) -> Result<Option<i64>, E>,
    real: impl Fn(usize) -> Result<Option<f64>, E>,
) -> Result<CallSummary, E> {
    let mean = |sum: f64, n: i64| (n > 0).then(|| sum / n as f64);
    let int0 = |i: usize| -> Result<i64, E> { Ok(int(i)?.unwrap_or(0)) };
    let real0 = |i: usize| -> Result<f64, E> { Ok(real(i)?.unwrap_or(0.0)) };
    let packets_lost = int0(11)?;
    let packets_received = int0(12)?;
    let packets = packets_lost.saturating_add(packets_received);
    Ok(CallSummary {
        id: text(0)?.unwrap_or_default(),
        room_hash: text(1)?.unwrap_or_default(),
        started: int0(2)?,
        last: int0(3)?,
        samples: int0(4)?,
        rtt_mean: mean(real0(5)?, int0(6)?),
        rtt_max: real(7)?,
        jitter_mean: mean(real0(8)?, int0(9)?),
        jitter_max: real(10)?,
        packets_lost,
        packets_received,
        loss_pct: (packets > 0).then(|| 100.0 * packets_lost as f64 / packets as f64),
        jitter_buffer_mean: mean(real0(13)?, int0(14)?),
        bytes_sent: int0(15)?,
        bytes_received: int0(16)?,
        relay_protocols: stats::names_in(int0(17)?, stats::RELAY_PROTOCOLS),
        candidate_types: stats::names_in(int0(18)?, stats::CANDIDATE_TYPES),
        states: stats::names_in(int0(19)?, stats::STATES),
    })
}

fn intern(s: Option<String>, allowed: &[&'static str]) -> Option<&'static str> {
    let s = s?;
    allowed.iter().copied().find(|a| *a == s)
}

/// Makes `dir` a private directory: created with mode 0700 if missing;
/// an existing one set to 0700 and each regular file in it to 0600 if
/// other users had any access (with a warning naming the old mode).
/// Symbolic links and subdirectories are left alone.
pub fn secure_data_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, Permissions::from_mode(0o700))?;
        tracing::warn!(
            "the data directory {} had mode {mode:o}; set it to 0700",
            dir.display()
        );
    }
    for entry in std::fs::read_dir(dir)?.take(MAX_DIR_ENTRIES) {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            std::fs::set_permissions(&path, Permissions::from_mode(0o600))?;
            tracing::warn!(
                "{} was accessible to other users (mode {mode:o}); set it to 0600",
                path.display()
            );
        }
    }
    Ok(())
}

/// Creates `path` empty with mode 0600 if it does not exist.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
}

pub(crate) fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`]; true if existing data was
/// rewritten (the caller vacuums).
fn migrate(conn: &mut Connection, key: &RoomKey) -> Result<bool, StoreError> {
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
    let mut rewritten = false;
    if version < 2 {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATION_V2)?;
        let calls = hash_room_names(&tx, key)?;
        let samples = replay_samples(&tx)?;
        tx.pragma_update(None, "user_version", 2)?;
        tx.commit()?;
        if version == 1 {
            tracing::info!(
                calls,
                samples,
                "stats store: migrated to schema 2 (room names hashed, per-call aggregates)"
            );
            rewritten = true;
        }
    }
    Ok(rewritten)
}

/// Replaces every clear room name (schema 1) by its hash.
fn hash_room_names(tx: &rusqlite::Transaction<'_>, key: &RoomKey) -> rusqlite::Result<usize> {
    let rooms: Vec<(String, Option<String>)> = tx
        .prepare("SELECT id, room_hash FROM calls")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare("UPDATE calls SET room_hash = ?2 WHERE id = ?1")?;
    for (id, room) in &rooms {
        update.execute(params![id, room.as_deref().map(|r| key.hash(r))])?;
    }
    Ok(rooms.len())
}

/// Adds every stored sample (schema 1) to its call's aggregates, as if it
/// had just arrived.
fn replay_samples(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<usize> {
    let mut select = tx.prepare(
        "SELECT side, ts, state, rtt, jitter, packets_lost, packets_received,
                jitter_buffer_delay, jitter_buffer_emitted, bytes_sent, bytes_received,
                bitrate_in, bitrate_out, local_type, remote_type, relay_protocol, call_id
         FROM samples ORDER BY call_id, side, ts",
    )?;
    let mut upsert = tx.prepare(UPSERT_CALL)?;
    let mut rows = select.query([])?;
    let mut current: Option<(String, u8)> = None;
    let mut counters = Cumulative::default();
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let row = sample_row(r)?;
        let call_id: String = r.get(16)?;
        if current.as_ref() != Some(&(call_id.clone(), row.side)) {
            current = Some((call_id.clone(), row.side));
            counters = Cumulative::default();
        }
        let increment = counters.advance(&row.stats);
        // The call exists (schema 1 wrote it with its first sample): only
        // its aggregates change; room and start are not used on conflict.
        upsert_call(
            &mut upsert,
            &call_id,
            "",
            row.ts,
            row.ts,
            &row.stats,
            &increment,
        )?;
        n += 1;
    }
    Ok(n)
}

/// The values [`UPSERT_CALL`] derives from a sample (both backends).
struct UpsertValues<'a> {
    room_hash: &'a str,
    started_ms: i64,
    ts_ms: i64,
    rtt_sum: f64,
    rtt_count: i64,
    jitter_sum: f64,
    jitter_count: i64,
    relay_protocols: i64,
    candidate_types: i64,
    states: i64,
}

impl<'a> UpsertValues<'a> {
    fn new(room_hash: &'a str, started_ms: i64, ts_ms: i64, s: &StatsSample) -> Self {
        UpsertValues {
            room_hash,
            started_ms,
            ts_ms,
            rtt_sum: s.rtt.unwrap_or(0.0),
            rtt_count: i64::from(s.rtt.is_some()),
            jitter_sum: s.jitter.unwrap_or(0.0),
            jitter_count: i64::from(s.jitter.is_some()),
            relay_protocols: stats::bit(s.relay_protocol, stats::RELAY_PROTOCOLS),
            candidate_types: stats::bit(s.local_candidate_type, stats::CANDIDATE_TYPES)
                | stats::bit(s.remote_candidate_type, stats::CANDIDATE_TYPES),
            states: stats::bit(s.state, stats::STATES),
        }
    }
}

/// Runs [`UPSERT_CALL`] for one sample.
fn upsert_call(
    stmt: &mut rusqlite::Statement<'_>,
    call_id: &str,
    room_hash: &str,
    started_ms: i64,
    ts_ms: i64,
    s: &StatsSample,
    inc: &Increment,
) -> rusqlite::Result<usize> {
    let v = UpsertValues::new(room_hash, started_ms, ts_ms, s);
    stmt.execute(params![
        call_id,
        v.room_hash,
        v.started_ms,
        v.ts_ms,
        v.rtt_sum,
        v.rtt_count,
        s.rtt,
        v.jitter_sum,
        v.jitter_count,
        s.jitter,
        inc.packets_lost,
        inc.packets_received,
        inc.jitter_buffer_delay,
        inc.jitter_buffer_emitted_count,
        inc.bytes_sent,
        inc.bytes_received,
        v.relay_protocols,
        v.candidate_types,
        v.states,
    ])
}

/// Copies the WAL into the database and empties it. Every committed batch
/// leaves a copy of the pages it changed in the WAL, so without this the
/// WAL would hold the history of each call's running totals (their
/// per-second values); the database file itself holds only the latest.
fn truncate_wal(conn: &Connection) {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => tracing::debug!("stats store: WAL checkpoint incomplete (readers); next batch"),
        Err(e) => tracing::warn!(error = %e, "stats store: WAL checkpoint failed"),
    }
}

/// The writer thread; samples themselves are written only if `keep_samples`
/// and their record asks for it. The WAL is truncated at most
/// [`TRUNCATE_EVERY`] after the first batch written since the last
/// truncation, before a flush is acknowledged, and when the store closes.
fn write_loop<W: Writer>(mut writer: W, rx: Receiver<WriteOp>, keep_samples: bool) {
    // When the first batch not yet truncated from the WAL was written.
    let mut dirty_since: Option<Instant> = None;
    loop {
        let first = match dirty_since {
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => break,
            },
            Some(t) => match rx.recv_timeout(TRUNCATE_EVERY.saturating_sub(t.elapsed())) {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    writer.checkpoint();
                    dirty_since = None;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
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
            if let Err(e) = writer.write_batch(&samples, keep_samples) {
                tracing::warn!(error = %e, count = samples.len(), "stats store: write failed");
            }
            dirty_since.get_or_insert_with(Instant::now);
        }
        if dirty_since.is_some_and(|t| !acks.is_empty() || t.elapsed() >= TRUNCATE_EVERY) {
            writer.checkpoint();
            dirty_since = None;
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
    if dirty_since.is_some() {
        writer.checkpoint();
    }
}

fn write_batch(
    conn: &mut Connection,
    samples: &[Box<SampleRecord>],
    keep_samples: bool,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut call = tx.prepare_cached(UPSERT_CALL)?;
        let mut sample = tx.prepare_cached(INSERT_SAMPLE)?;
        for r in samples {
            let s = &r.sample;
            upsert_call(
                &mut call,
                &r.call_id,
                &r.room_hash,
                r.call_started_ms,
                r.ts_ms,
                s,
                &r.increment,
            )?;
            if !(keep_samples && r.keep_sample) {
                continue;
            }
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
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn options(keep_samples: bool) -> StoreOptions {
        StoreOptions {
            room_key: RoomKey::new(b"test room key, 32 bytes or more!"),
            keep_samples,
        }
    }

    fn record(call: &str, side: u8, ts: i64, rtt: f64, counters: &mut Cumulative) -> SampleRecord {
        let sample = StatsSample {
            rtt: Some(rtt),
            packets_lost: Some(i64::from(side)),
            packets_received: Some(99),
            bytes_sent: Some(1000 * ts),
            relay_protocol: Some("udp"),
            local_candidate_type: Some("relay"),
            state: Some("connected"),
            ..StatsSample::default()
        };
        SampleRecord {
            call_id: call.into(),
            room_hash: "h".into(),
            call_started_ms: ts,
            side,
            ts_ms: ts,
            increment: counters.advance(&sample),
            sample,
            keep_sample: true,
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Every byte of every file in `dir`.
    fn dir_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// A backend of the store suite.
    enum Backend {
        /// The SQLite file in this data directory.
        Sqlite(PathBuf),
        /// A fresh PostgreSQL database (testkit::postgres).
        Postgres(String),
    }

    impl Backend {
        fn open(&self, keep_samples: bool) -> Result<Store, StoreError> {
            match self {
                Backend::Sqlite(dir) => Store::open(dir, options(keep_samples)),
                Backend::Postgres(url) => Store::open_postgres(url, options(keep_samples)),
            }
        }
    }

    /// SQLite always; PostgreSQL on a real server this test binary starts
    /// (skipped with a note where it is not installed; a failure in CI).
    fn backends(dir: &Path) -> Vec<Backend> {
        let mut v = vec![Backend::Sqlite(dir.join("d"))];
        if let Some(pg) = testkit::postgres::shared() {
            v.push(Backend::Postgres(pg.database().unwrap()));
        }
        v
    }

    #[test]
    fn aggregates_query_sweep() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(StoreError::Thread)?;
        for backend in backends(dir.path()) {
            aggregates_query_sweep_on(&backend)?;
        }
        Ok(())
    }

    fn aggregates_query_sweep_on(backend: &Backend) -> Result<(), StoreError> {
        let store = backend.open(false)?;
        if let Backend::Sqlite(data) = backend {
            assert_eq!(mode(data), 0o700);
            assert_eq!(mode(store.path().unwrap()), 0o600);
        }
        let now = 10 * 86_400_000;
        let mut sides = [Cumulative::default(), Cumulative::default()];
        for (i, rtt) in [0.01, 0.03, 0.02].into_iter().enumerate() {
            let side = (i % 2) as u8;
            let r = record(
                "a",
                side,
                now + i as i64,
                rtt,
                &mut sides[usize::from(side)],
            );
            assert!(store.record(r));
        }
        assert!(store.record(record("old", 0, 1000, 0.5, &mut Cumulative::default())));
        assert!(store.flush(Duration::from_secs(5)));
        let calls = store.calls(10, None)?;
        assert_eq!(calls.len(), 2);
        let a = &calls[0];
        assert_eq!((a.id.as_str(), a.room_hash.as_str()), ("a", "h"));
        assert_eq!((a.started, a.last, a.samples), (now, now + 2, 3));
        assert!((a.rtt_mean.unwrap_or(0.0) - 0.02).abs() < 1e-12);
        assert_eq!(a.rtt_max, Some(0.03));
        assert_eq!(a.jitter_mean, None);
        // Side 0: 99 received, then 99 again (+0); side 1: 99 and 1 lost.
        assert_eq!((a.packets_lost, a.packets_received), (1, 198));
        let loss = a.loss_pct.unwrap_or(0.0);
        assert!((loss - 100.0 / 199.0).abs() < 1e-9, "{loss}");
        // Side 0 sent 1000·now, then 1000·(now+2); side 1 1000·(now+1).
        assert_eq!(a.bytes_sent, 1000 * (now + 2) + 1000 * (now + 1));
        assert_eq!(a.relay_protocols, ["udp"]);
        assert_eq!(a.candidate_types, ["relay"]);
        assert_eq!(a.states, ["connected"]);
        assert_eq!(store.calls(10, Some("h"))?.len(), 2);
        assert_eq!(store.calls(10, Some("x"))?.len(), 0);
        assert_eq!(store.calls(1, None)?.len(), 1);

        // Samples were not kept.
        let detail = store.call("a")?.unwrap();
        assert_eq!(detail.call, calls[0]);
        assert!(detail.series.is_empty());
        assert_eq!(store.call("nope")?, None);

        assert_eq!(store.sweep(7, now)?, 1);
        assert_eq!(store.calls(10, None)?.len(), 1);
        drop(store);
        // Reopening keeps the data and the schema version.
        let store = backend.open(false)?;
        assert_eq!(store.calls(10, None)?.len(), 1);
        Ok(())
    }

    #[test]
    fn samples_only_when_kept() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(StoreError::Thread)?;
        for backend in backends(dir.path()) {
            samples_only_when_kept_on(&backend)?;
        }
        Ok(())
    }

    fn samples_only_when_kept_on(backend: &Backend) -> Result<(), StoreError> {
        let store = backend.open(true)?;
        assert!(store.keeps_samples());
        let mut c = Cumulative::default();
        assert!(store.record(record("a", 0, 5000, 0.01, &mut c)));
        let mut skipped = record("a", 0, 6000, 0.01, &mut c);
        skipped.keep_sample = false;
        assert!(store.record(skipped));
        assert!(store.flush(Duration::from_secs(5)));
        let detail = store.call("a")?.unwrap();
        assert_eq!(detail.call.samples, 2);
        assert_eq!(detail.series.len(), 1);
        assert_eq!(detail.series[0].stats.bytes_sent, Some(5_000_000));
        assert_eq!(detail.series[0].stats.relay_protocol, Some("udp"));
        assert_eq!(detail.series[0].stats.state, Some("connected"));
        assert_eq!(detail.call.bytes_sent, 6_000_000);
        drop(store);
        // Opened without keeping samples: the kept ones are deleted (the
        // SQLite file vacuumed); the aggregates stay.
        let store = backend.open(false)?;
        let detail = store.call("a")?.unwrap();
        assert!(detail.series.is_empty());
        assert_eq!(detail.call.bytes_sent, 6_000_000);
        Ok(())
    }

    /// A batch is one transaction: when a sample's row cannot be written,
    /// its call's aggregates are not updated either. Shown on PostgreSQL,
    /// where a trigger makes the failure; SQLite's batches use the same
    /// transaction structure.
    #[test]
    fn a_failed_batch_stores_nothing_in_postgres() -> Result<(), StoreError> {
        let Some(pg) = testkit::postgres::shared() else {
            return Ok(());
        };
        let url = pg.database().unwrap();
        let store = Store::open_postgres(&url, options(true))?;
        let db = url.rsplit('/').next().unwrap();
        pg.psql(
            db,
            "CREATE FUNCTION onionrtc_signal.refuse() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN IF NEW.ts = 666 THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON onionrtc_signal.samples
               FOR EACH ROW EXECUTE FUNCTION onionrtc_signal.refuse();",
        )
        .unwrap();
        // The call's aggregate row is upserted first, then its sample is
        // refused: the transaction takes the aggregates back with it.
        assert!(store.record(record("z", 0, 666, 0.01, &mut Cumulative::default())));
        assert!(store.flush(Duration::from_secs(10)));
        assert_eq!(store.call("z")?, None);
        // The control: the writer goes on after a failed batch.
        assert!(store.record(record("y", 0, 700, 0.01, &mut Cumulative::default())));
        assert!(store.flush(Duration::from_secs(10)));
        assert_eq!(store.call("y")?.map(|d| d.call.samples), Some(1));
        Ok(())
    }

    #[test]
    fn wal_is_emptied_soon_after_a_write() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(StoreError::Thread)?;
        let store = Store::open(dir.path(), options(false))?;
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        let mut c = Cumulative::default();
        // Two running totals of one call: the first must not stay in the
        // WAL once the second is written.
        assert!(store.record(record("a", 0, 123_456_789, 0.1, &mut c)));
        assert!(store.record(record("a", 0, 123_456_790, 0.1, &mut c)));
        // SQLite keeps these as 6-byte big-endian integers.
        let six = |v: i64| v.to_be_bytes()[2..].to_vec();
        let first = six(1000 * 123_456_789);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut wrote = false;
        loop {
            let bytes = std::fs::read(&wal).unwrap_or_default();
            wrote |= !bytes.is_empty();
            if wrote && bytes.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "WAL never emptied");
            std::thread::sleep(Duration::from_millis(20));
        }
        let all: Vec<u8> = dir_bytes(dir.path())
            .into_iter()
            .flat_map(|(_, b)| b)
            .collect();
        assert!(!contains(&all, &first));
        assert!(contains(&all, &six(1000 * 123_456_790)));
        Ok(())
    }

    #[test]
    fn room_hash() {
        let k = RoomKey::new(b"k1");
        let h = k.hash("alice-meets-bob");
        assert_eq!(h.len(), 32);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(h, RoomKey::new(b"k1").hash("alice-meets-bob"));
        assert_ne!(h, RoomKey::new(b"k2").hash("alice-meets-bob"));
        assert_ne!(h, k.hash("alice-meets-bo"));
        // RFC 4231 test case 2 (key "Jefe"), first 16 bytes.
        assert_eq!(
            RoomKey::new(b"Jefe").hash("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c7"
        );
        // A key longer than the block is hashed first (RFC 4231 case 6).
        assert_eq!(
            RoomKey::new(&[0xaa; 131])
                .hash("Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f"
        );
        assert_eq!(format!("{k:?}"), "RoomKey(<redacted>)");
    }

    /// A schema-1 database with clear room names and per-second samples,
    /// as the previous version wrote it.
    fn write_v1(path: &Path, room: &str) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(MIGRATION_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO calls(id, room, started, last) VALUES ('c1', ?1, 1000, 3000)",
            [room],
        )
        .unwrap();
        for (side, ts, sent, lost, rtt) in [
            (0, 1000, 123_456_789i64, 1, 0.01),
            (1, 1500, 200_000_000, 2, 0.03),
            (0, 2000, 223_456_789, 4, 0.02),
        ] {
            conn.execute(
                "INSERT INTO samples(call_id, side, ts, state, rtt, packets_lost,
                    packets_received, bytes_sent, bitrate_out, relay_protocol)
                 VALUES ('c1', ?1, ?2, 'connected', ?3, ?4, 100, ?5, 876543.0, 'tcp')",
                params![side, ts, rtt, lost, sent],
            )
            .unwrap();
        }
    }

    #[test]
    fn schema_1_is_migrated_and_scrubbed() -> Result<(), StoreError> {
        let room = "alice-meets-bob-at-clinic";
        let dir = tempfile::tempdir().map_err(StoreError::Thread)?;
        let db = dir.path().join(DB_FILE);
        write_v1(&db, room);
        // The control: the name and a per-second value are in the file.
        let before = std::fs::read(&db).unwrap();
        assert!(contains(&before, room.as_bytes()));
        assert!(contains(&before, &123_456_789i32.to_be_bytes()));

        let store = Store::open(dir.path(), options(false))?;
        let hash = options(false).room_key.hash(room);
        let calls = store.calls(10, Some(&hash))?;
        assert_eq!(calls.len(), 1, "{calls:?}");
        let c = &calls[0];
        assert_eq!(
            (c.id.as_str(), c.started, c.last, c.samples),
            ("c1", 1000, 3000, 3)
        );
        assert_eq!(c.room_hash, hash);
        assert_eq!(c.bytes_sent, 223_456_789 + 200_000_000);
        assert_eq!((c.packets_lost, c.packets_received), (4 + 2, 200));
        assert_eq!(c.rtt_max, Some(0.03));
        assert_eq!(c.relay_protocols, ["tcp"]);
        assert!(store.call("c1")?.unwrap().series.is_empty());
        drop(store);

        for (path, bytes) in dir_bytes(dir.path()) {
            assert!(
                !contains(&bytes, room.as_bytes()),
                "{} has the room",
                path.display()
            );
            assert!(!contains(&bytes, b"alice"), "{}", path.display());
            for v in [123_456_789i32, 200_000_000, 223_456_789] {
                assert!(
                    !contains(&bytes, &v.to_be_bytes()),
                    "{} has {v}",
                    path.display()
                );
            }
            assert!(
                !contains(&bytes, &876_543.0f64.to_be_bytes()),
                "{}",
                path.display()
            );
        }
        // Opening again changes nothing.
        let store = Store::open(dir.path(), options(false))?;
        assert_eq!(store.calls(10, Some(&hash))?, calls);
        Ok(())
    }

    #[test]
    fn schema_1_samples_survive_when_kept() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(StoreError::Thread)?;
        write_v1(&dir.path().join(DB_FILE), "r");
        let store = Store::open(dir.path(), options(true))?;
        let d = store.call("c1")?.unwrap();
        assert_eq!(d.series.len(), 3);
        assert_eq!(d.call.samples, 3);
        Ok(())
    }

    #[test]
    fn modes_are_fixed() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(StoreError::Thread)?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        for f in [DB_FILE, "turn-secret", "room-key"] {
            std::fs::write(data.join(f), "").unwrap();
            std::fs::set_permissions(data.join(f), Permissions::from_mode(0o644)).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", data.join("link")).unwrap();
        let store = Store::open(&data, options(false))?;
        let mut c = Cumulative::default();
        assert!(store.record(record("a", 0, 1, 0.1, &mut c)));
        assert!(store.flush(Duration::from_secs(5)));
        assert_eq!(mode(&data), 0o700);
        let mut files = 0;
        for (path, _) in dir_bytes(&data) {
            if path.ends_with("link") {
                continue;
            }
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
        // The database, its WAL and shared-memory files, the two secrets.
        assert_eq!(files, 5);
        // A fresh directory under a permissive umask comes out private too.
        let fresh = dir.path().join("a/b");
        let store = Store::open(&fresh, options(false))?;
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(store.path().unwrap()), 0o600);
        Ok(())
    }
}

//! Where runs, scenarios, calls and per-second samples are kept.
//!
//! [`Store`] is the interface the runner and the report use; [`SqliteStore`]
//! is the embedded backend (one file, `lab.sqlite`), [`PgStore`] the
//! PostgreSQL one (`--db postgres://…`, the same tables in the schema
//! `onionrtc_lab`); [`open`] picks by the `--db` value.
//!
//! Each finished call is written in one transaction with its directions and
//! samples ([`Store::record_call`]), so killing the lab loses at most the
//! call in progress, and `lab run --resume` asks [`Store::done_calls`]
//! which calls to skip.

mod postgres;
mod sqlite;

use std::collections::HashSet;
use std::path::Path;

pub use postgres::{PgStore, PG_MIGRATIONS, SCHEMA as PG_SCHEMA};
pub use sqlite::{SqliteStore, MIGRATIONS};

use crate::call::{CallReport, Outcome};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL failed, or its URL was refused.
    #[error("{0}")]
    Pg(pgconn::PgError),
    /// The database was written by a newer lab.
    #[error("the database has schema version {found}; this lab knows up to {known}")]
    TooNew {
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// No such run.
    #[error("no run {0} in the database")]
    NoRun(i64),
    /// A stored value cannot be read back.
    #[error("bad stored value: {0}")]
    Corrupt(String),
}

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Plan name.
    pub plan_name: &'a str,
    /// SHA-256 of the plan text.
    pub plan_hash: &'a str,
    /// The plan text.
    pub plan_text: &'a str,
    /// Start, Unix ms.
    pub started_ms: i64,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Plan name.
    pub plan_name: String,
    /// Plan hash.
    pub plan_hash: String,
    /// Start, Unix ms.
    pub started_ms: i64,
    /// End, Unix ms, once finished.
    pub finished_ms: Option<i64>,
}

/// A scenario of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioRow {
    /// Id (assigned by the store; ignored on insert).
    pub id: i64,
    /// Position in the plan.
    pub idx: u32,
    /// Name.
    pub name: String,
    /// Caller's path name and kind.
    pub caller_path: String,
    /// Caller's path kind.
    pub caller_kind: String,
    /// Callee's path name.
    pub callee_path: String,
    /// Callee's path kind.
    pub callee_kind: String,
    /// Impairment as JSON.
    pub impairment: String,
    /// Calls planned.
    pub repetitions: u32,
    /// `synthetic` or `browser`.
    pub mode: String,
}

/// A stored call (call-level figures; see [`crate::call`] for how they
/// are derived from the two directions).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// Call id.
    pub id: i64,
    /// Scenario id.
    pub scenario_id: i64,
    /// Repetition number within the scenario, from 0.
    pub repetition: u32,
    /// Setup attempts.
    pub attempts: u32,
    /// Outcome.
    pub outcome: Outcome,
    /// Failure reason.
    pub failure: Option<String>,
    /// Acceptable against the published thresholds.
    pub acceptable: bool,
    /// G.114 class.
    pub g114: Option<String>,
    /// Start, Unix ms.
    pub started_ms: i64,
    /// Setup time, ms.
    pub setup_ms: Option<f64>,
    /// Media duration, ms.
    pub duration_ms: f64,
    /// Median RTT, ms.
    pub rtt_ms: Option<f64>,
    /// 95th percentile RTT, ms.
    pub rtt_p95_ms: Option<f64>,
    /// Worse direction's median one-way delay, ms.
    pub owd_ms: Option<f64>,
    /// Worse direction's jitter, ms.
    pub jitter_ms: Option<f64>,
    /// Worse direction's loss, percent.
    pub loss_pct: Option<f64>,
    /// Worse direction's R.
    pub r: Option<f64>,
    /// Worse direction's MOS.
    pub mos: Option<f64>,
    /// Received media throughput, both directions, kbit/s.
    pub rx_kbps: Option<f64>,
    /// The one-way delay is an estimate (browser calls), not a measurement.
    pub owd_estimated: bool,
}

/// A stored per-second sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// Call id.
    pub call_id: i64,
    /// `caller->callee` or `callee->caller`.
    pub direction: String,
    /// Second since the media start.
    pub t_s: u32,
    /// Bytes sent in that second.
    pub tx_bytes: u64,
    /// Bytes received in that second.
    pub rx_bytes: u64,
    /// Packets received in that second.
    pub rx_packets: u64,
    /// Jitter at the end of that second, ms.
    pub jitter_ms: f64,
    /// The sender's RTT in that second, ms (browser calls).
    pub rtt_ms: Option<f64>,
}

/// What one page of a browser call reported about its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct SideRow {
    /// Call id.
    pub call_id: i64,
    /// `caller` or `callee`.
    pub side: String,
    /// Local candidate type of the selected pair.
    pub local_candidate: Option<String>,
    /// Remote candidate type of the selected pair.
    pub remote_candidate: Option<String>,
    /// Relay protocol of the local candidate (`udp`, `tcp`, `tls`).
    pub relay_protocol: Option<String>,
    /// Mean jitter-buffer delay of what the page received, ms.
    pub jitter_buffer_ms: Option<f64>,
    /// Webrtc calls: samples concealed by the decoder.
    pub concealed_samples: Option<u64>,
    /// Webrtc calls: concealed samples, percent of those played.
    pub concealed_pct: Option<f64>,
}

/// Everything a report needs about one run.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The run.
    pub run: RunRow,
    /// Its scenarios, in plan order.
    pub scenarios: Vec<ScenarioRow>,
    /// Its calls, by start time.
    pub calls: Vec<CallRow>,
    /// Per-second samples of its calls.
    pub samples: Vec<SampleRow>,
    /// Browser calls: each page's connection.
    pub sides: Vec<SideRow>,
}

/// Direction names as stored.
pub const FORWARD: &str = "caller->callee";
/// Direction names as stored.
pub const BACKWARD: &str = "callee->caller";

/// A lab store backend.
pub trait Store: std::fmt::Debug {
    /// Records a new run and returns its id.
    fn create_run(&mut self, run: &NewRun<'_>) -> Result<i64, StoreError>;
    /// The latest unfinished run of the plan with this hash.
    fn resumable_run(&self, plan_hash: &str) -> Result<Option<i64>, StoreError>;
    /// The latest run.
    fn latest_run(&self) -> Result<Option<i64>, StoreError>;
    /// Inserts the scenario if the run does not have one of that name, and
    /// returns its id.
    fn ensure_scenario(&mut self, run_id: i64, s: &ScenarioRow) -> Result<i64, StoreError>;
    /// (scenario id, repetition) of every call already recorded for the run.
    fn done_calls(&self, run_id: i64) -> Result<HashSet<(i64, u32)>, StoreError>;
    /// Records a finished call, its directions and samples, in one
    /// transaction; returns the call id.
    fn record_call(
        &mut self,
        scenario_id: i64,
        repetition: u32,
        started_ms: i64,
        report: &CallReport,
    ) -> Result<i64, StoreError>;
    /// Marks the run finished.
    fn finish_run(&mut self, run_id: i64, finished_ms: i64) -> Result<(), StoreError>;
    /// Loads a run for reporting.
    fn load_run(&self, run_id: i64) -> Result<RunData, StoreError>;
}

/// A store and what to call it in messages.
pub type BoxedStore = Box<dyn Store + Send>;

/// Opens the store `db` names: a `postgres://` URL (which must name this
/// machine: [`pgconn::Target`]) or a SQLite file path (created if missing).
pub fn open(db: &str) -> Result<BoxedStore, StoreError> {
    if pgconn::is_url(db) {
        Ok(Box::new(PgStore::open(db)?))
    } else {
        Ok(Box::new(SqliteStore::open(Path::new(db))?))
    }
}

/// `db` as it may be printed (a URL's password redacted).
pub fn shown(db: &str) -> String {
    if pgconn::is_url(db) {
        pgconn::redact(db)
    } else {
        db.to_owned()
    }
}

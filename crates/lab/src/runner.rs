//! Runs a plan: every scenario's calls in order, each recorded in the store
//! as soon as it ends, then the report.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use lab::runner::{RunOptions, Runner};
//! let opts = RunOptions::new("examples/lab-plan.toml", "lab-out");
//! let mut runner = Runner::new(&opts)?;
//! runner.run(None)?; // Some(n): stop after n calls (the run stays resumable)
//! let written = runner.finish()?;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::agent::StreamKind;
use crate::browser::{self, BrowserEnv};
use crate::env::Environment;
use crate::plan::{Plan, ScenarioMode};
use crate::realtime::{self, CallSpec, LabClock};
use crate::report;
use crate::store::{self as store_mod, BoxedStore, NewRun, ScenarioRow};

/// The database file in the output directory.
pub const DB_FILE: &str = "lab.sqlite";

/// What `lab run` was asked.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The plan file.
    pub plan: PathBuf,
    /// The output directory (database and report).
    pub out: PathBuf,
    /// The store: a SQLite file path or a `postgres://` URL; `None`:
    /// `out/lab.sqlite`.
    pub db: Option<String>,
    /// Continue the latest unfinished run of the same plan.
    pub resume: bool,
    /// No progress bar.
    pub quiet: bool,
    /// The `onionrtc` executable for `serve` (browser scenarios) and
    /// `connect` (lab-launched connectors); `None`: `$ONIONRTC_BIN`, else
    /// this executable.
    pub onionrtc_bin: Option<PathBuf>,
}

impl RunOptions {
    /// The store to use: `db`, or `out/lab.sqlite`.
    pub fn db(&self) -> String {
        self.db
            .clone()
            .unwrap_or_else(|| self.out.join(DB_FILE).display().to_string())
    }

    /// A fresh, quiet-less run of `plan` into `out`.
    pub fn new(plan: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        RunOptions {
            plan: plan.into(),
            out: out.into(),
            db: None,
            resume: false,
            quiet: false,
            onionrtc_bin: None,
        }
    }
}

/// Unix time in ms.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The seed of one call: the plan seed mixed with the scenario index and
/// the repetition (SplitMix64 finaliser), so every call has its own
/// deterministic impairment stream.
pub fn call_seed(plan_seed: u64, scenario: usize, repetition: u32) -> u64 {
    let mut z = plan_seed
        ^ (scenario as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(repetition).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A plan being run.
#[derive(Debug)]
pub struct Runner {
    plan: Plan,
    store: BoxedStore,
    env: Environment,
    run_id: i64,
    scenario_ids: Vec<i64>,
    done: HashSet<(i64, u32)>,
    out: PathBuf,
    progress: ProgressBar,
    clock: LabClock,
    onionrtc_bin: Option<PathBuf>,
    // Dropped last among the children: pages and Chromium, then serve.
    browser: Option<BrowserEnv>,
}

impl Runner {
    /// Loads the plan, opens the store, picks the run (new, or with
    /// `resume` the latest unfinished run of this plan) and prepares the
    /// relay and paths.
    pub fn new(opts: &RunOptions) -> anyhow::Result<Runner> {
        let plan = Plan::load(&opts.plan)?;
        std::fs::create_dir_all(&opts.out)
            .with_context(|| format!("cannot create {}", opts.out.display()))?;
        let db = opts.db();
        let mut store = store_mod::open(&db).with_context(|| store_mod::shown(&db))?;
        let run_id = if opts.resume {
            match store.resumable_run(&plan.hash)? {
                Some(id) => id,
                None => bail!(
                    "--resume: {} has no unfinished run of this plan (same file content); \
                     run without --resume to start one",
                    store_mod::shown(&db)
                ),
            }
        } else {
            store.create_run(&NewRun {
                plan_name: &plan.name,
                plan_hash: &plan.hash,
                plan_text: &plan.text,
                started_ms: unix_ms(),
            })?
        };
        let mut scenario_ids = Vec::new();
        for (i, s) in plan.scenarios.iter().enumerate() {
            let kind = |n: &str| plan.path(n).map_or("?", |p| p.kind.name()).to_owned();
            let row = ScenarioRow {
                id: 0,
                idx: i as u32,
                name: s.name.clone(),
                caller_path: s.caller.clone(),
                caller_kind: kind(&s.caller),
                callee_path: s.callee.clone(),
                callee_kind: kind(&s.callee),
                impairment: serde_json::to_string(&s.impairment)?,
                repetitions: s.repetitions,
                mode: s.mode.name().to_owned(),
            };
            scenario_ids.push(store.ensure_scenario(run_id, &row)?);
        }
        let done = store.done_calls(run_id)?;
        let env = Environment::prepare(&plan, opts.onionrtc_bin.as_deref())?;
        let progress = if opts.quiet {
            ProgressBar::hidden()
        } else {
            let pb = ProgressBar::with_draw_target(
                Some(plan.total_calls()),
                ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} calls (eta {eta}) {msg}",
            ) {
                pb.set_style(style);
            }
            pb
        };
        progress.set_position(done.len() as u64);
        Ok(Runner {
            plan,
            store,
            env,
            run_id,
            scenario_ids,
            done,
            out: opts.out.clone(),
            progress,
            clock: LabClock::new(),
            onionrtc_bin: opts.onionrtc_bin.clone(),
            browser: None,
        })
    }

    /// The run's id in the store.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Calls of the plan not yet recorded.
    pub fn remaining(&self) -> u64 {
        self.plan
            .total_calls()
            .saturating_sub(self.done.len() as u64)
    }

    /// Runs the calls not yet recorded, at most `limit` of them; returns
    /// how many ran. Each call is committed when it ends.
    pub fn run(&mut self, limit: Option<u64>) -> anyhow::Result<u64> {
        let mut ran = 0u64;
        for (si, s) in self.plan.scenarios.iter().enumerate() {
            let sid = self.scenario_ids[si];
            let openers = (self.env.opener(&s.caller), self.env.opener(&s.callee));
            for rep in 0..s.repetitions {
                if self.done.contains(&(sid, rep)) {
                    continue;
                }
                if limit.is_some_and(|l| ran >= l) {
                    return Ok(ran);
                }
                self.progress
                    .set_message(format!("{} #{}", s.name, rep + 1));
                let spec = CallSpec {
                    profile: self.plan.profile.clone(),
                    impairment: s.impairment,
                    seed: call_seed(self.plan.seed, si, rep),
                    timing: self.plan.timing,
                    rating: self.plan.rating,
                    setup_retries: self.plan.setup_retries,
                };
                let started = unix_ms();
                let report = match s.mode {
                    ScenarioMode::Synthetic => {
                        let (Some(caller), Some(callee)) = &openers else {
                            bail!("scenario {}: path not prepared", s.name);
                        };
                        realtime::run_call(caller.as_ref(), callee.as_ref(), &spec, self.clock)
                    }
                    #[cfg(feature = "webrtc")]
                    ScenarioMode::Webrtc => {
                        let (Some(caller), Some(callee)) = &openers else {
                            bail!("scenario {}: path not prepared", s.name);
                        };
                        crate::webrtc::run_call(caller.as_ref(), callee.as_ref(), &spec, self.clock)
                    }
                    #[cfg(not(feature = "webrtc"))]
                    ScenarioMode::Webrtc => {
                        bail!("scenario {}: the webrtc agent is not in this build", s.name)
                    }
                    ScenarioMode::Browser => {
                        if self.browser.is_none() {
                            self.browser = Some(
                                BrowserEnv::start(&self.plan.browser, self.onionrtc_bin.as_deref())
                                    .context("browser mode")?,
                            );
                        }
                        let Some(env) = self.browser.as_ref() else {
                            bail!("browser mode: not started");
                        };
                        let kind = |n: &str| self.plan.path(n).map(|p| p.kind);
                        let (Some(ck), Some(ek)) = (kind(&s.caller), kind(&s.callee)) else {
                            bail!("scenario {}: path not prepared", s.name);
                        };
                        let audio_only = !self
                            .plan
                            .profile
                            .streams
                            .iter()
                            .any(|st| st.kind == StreamKind::Video);
                        browser::run_call(env, ck, ek, &spec, audio_only)
                    }
                };
                self.store.record_call(sid, rep, started, &report)?;
                self.done.insert((sid, rep));
                self.progress.inc(1);
                ran += 1;
                if self.plan.timing.pause_ms > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(self.plan.timing.pause_ms / 1000.0));
                }
            }
        }
        Ok(ran)
    }

    /// Marks the run finished (if every call is recorded) and writes the
    /// report into the output directory.
    pub fn finish(mut self) -> anyhow::Result<report::Written> {
        self.progress.finish_and_clear();
        if self.remaining() == 0 {
            self.store.finish_run(self.run_id, unix_ms())?;
        }
        let data = self.store.load_run(self.run_id)?;
        Ok(report::write(&data, &self.out)?)
    }
}

/// `lab report`: writes the report of run `run` (default: the latest) of
/// the database `db` into `out`.
pub fn report_from_db(db: &str, out: &Path, run: Option<i64>) -> anyhow::Result<report::Written> {
    if !pgconn::is_url(db) && !Path::new(db).is_file() {
        bail!("no database at {db}");
    }
    let store = store_mod::open(db).with_context(|| store_mod::shown(db))?;
    let run_id = match run {
        Some(r) => r,
        None => store
            .latest_run()?
            .with_context(|| format!("{} holds no run", store_mod::shown(db)))?,
    };
    let data = store.load_run(run_id)?;
    Ok(report::write(&data, out)?)
}

//! The `onionrtc lab` command line: `run`, `report` and `check`. The
//! binary flattens [`LabCommand`] and calls [`execute`]; tests do the same.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::plan::Plan;
use crate::report;
use crate::runner::{self, RunOptions, Runner};

/// Call-quality lab commands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Run the calls of a plan, store them in OUT/lab.sqlite and write
    /// OUT/report.html, OUT/summary.json and OUT/calls.csv.
    ///
    /// Each finished call is committed at once: after an interruption,
    /// `--resume` continues the same plan's unfinished run and skips the
    /// calls already recorded. A progress bar shows on a terminal.
    Run(RunArgs),
    /// Write the report of a stored run: report.html, summary.json and
    /// calls.csv in OUT.
    Report(ReportArgs),
    /// Validate a plan file and print what it would run.
    Check {
        /// The plan (TOML).
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
    },
}

/// `lab run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan (TOML); see docs/lab.md and examples/lab-plan.toml.
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Continue the latest unfinished run of this plan in the store.
    #[arg(long)]
    pub resume: bool,
    /// The store: a SQLite file, or a PostgreSQL URL
    /// (`postgres://user:password@127.0.0.1:5432/db`; loopback or a Unix
    /// socket only). Default: OUT/lab.sqlite.
    #[arg(long, value_name = "FILE|URL")]
    pub db: Option<String>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The onionrtc executable started for `serve` (browser scenarios) and
    /// `connect` (connectors the lab starts). Default: $ONIONRTC_BIN, else
    /// this executable.
    #[arg(long, value_name = "PATH")]
    pub onionrtc_bin: Option<PathBuf>,
}

/// `lab report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The lab database: a SQLite file (lab.sqlite) or a PostgreSQL URL.
    #[arg(long, value_name = "FILE|URL")]
    pub db: String,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Run id (default: the latest run).
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
}

/// Whether an error is the plan's (exit 2) or the run's (exit 1).
#[derive(Debug)]
pub enum Failure {
    /// The plan or the arguments are wrong.
    Config(anyhow::Error),
    /// Something failed while running.
    Runtime(anyhow::Error),
}

/// Runs a lab command; prints the summary table (run) or the written
/// files (report) on stdout.
pub fn execute(cmd: LabCommand) -> Result<(), Failure> {
    match cmd {
        LabCommand::Check { plan } => {
            let p = Plan::load(&plan).map_err(|e| Failure::Config(e.into()))?;
            println!(
                "plan {:?}: {} scenarios, {} calls of {:.1} s, relay {}",
                p.name,
                p.scenarios.len(),
                p.total_calls(),
                p.profile.duration_ns as f64 / 1e9,
                match p.relay {
                    crate::plan::RelaySpec::Start => "started by the lab",
                    _ => "external",
                }
            );
            for s in &p.scenarios {
                println!(
                    "  {}: {} → {}, {} calls, {}impairment {}",
                    s.name,
                    s.caller,
                    s.callee,
                    s.repetitions,
                    match s.mode {
                        crate::plan::ScenarioMode::Browser => "browser pages, ",
                        crate::plan::ScenarioMode::Webrtc => "webrtc endpoints (Opus), ",
                        crate::plan::ScenarioMode::Synthetic => "",
                    },
                    s.impairment_name.as_deref().unwrap_or("none")
                );
            }
            for path in p.paths.values() {
                match (&path.launch, path.connector) {
                    (Some(l), _) => println!(
                        "  path {}: {} via a connector the lab starts ({} to the relay, through {})",
                        path.name,
                        path.kind.name(),
                        l.relay_transport.name(),
                        match &l.proxy {
                            crate::plan::Proxy::Microsocks => "microsocks".to_owned(),
                            crate::plan::Proxy::Socks(a) => format!("socks5://{a}"),
                        }
                    ),
                    (None, Some(c)) => println!(
                        "  path {}: {} via the running connector {c}",
                        path.name,
                        path.kind.name()
                    ),
                    (None, None) => {}
                }
            }
            Ok(())
        }
        LabCommand::Run(a) => {
            let opts = RunOptions {
                plan: a.plan,
                out: a.out,
                db: a.db,
                resume: a.resume,
                quiet: a.quiet,
                onionrtc_bin: a.onionrtc_bin,
            };
            let mut runner = Runner::new(&opts).map_err(|e| {
                if e.downcast_ref::<crate::plan::PlanError>().is_some() {
                    Failure::Config(e)
                } else {
                    Failure::Runtime(e)
                }
            })?;
            runner.run(None).map_err(Failure::Runtime)?;
            let run_id = runner.run_id();
            let written = runner.finish().map_err(Failure::Runtime)?;
            let db = opts.db();
            let store = crate::store::open(&db).map_err(|e| Failure::Runtime(e.into()))?;
            let data = store
                .load_run(run_id)
                .map_err(|e| Failure::Runtime(e.into()))?;
            print!("{}", report::text_table(&report::summarize(&data)));
            println!(
                "run {run_id}: {} · {} · {} · {}",
                crate::store::shown(&db),
                written.html.display(),
                written.summary.display(),
                written.csv.display()
            );
            Ok(())
        }
        LabCommand::Report(a) => {
            let written = runner::report_from_db(&a.db, &a.out, a.run).map_err(Failure::Runtime)?;
            println!(
                "{} · {} · {}",
                written.html.display(),
                written.summary.display(),
                written.csv.display()
            );
            Ok(())
        }
    }
}

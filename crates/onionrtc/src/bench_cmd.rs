//! `onionrtc bench`: our relay against coturn, side by side.
//!
//! `bench relay` runs the whole benchmark (see docs/performance.md);
//! `bench loadgen` is the load generator it starts as a child process,
//! hidden from the help but usable on its own.

use std::process::ExitCode;

use clap::Subcommand;

/// The `bench` subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Run coturn and our relay side by side on loopback under the same
    /// load and print messages, loss, CPU-seconds, messages per CPU-second,
    /// peak RSS, latency and the ratio ours/coturn, with PASS/FAIL per
    /// target. Needs coturn (turnserver, turnutils_uclient, turnutils_peer)
    /// for the comparison. Exits 0 when every scenario produced a result.
    Relay(bench::orchestrate::RelayArgs),
    /// The load generator (one JSON line on stdout).
    #[command(hide = true)]
    Loadgen(bench::loadgen::LoadgenArgs),
}

/// Runs a `bench` subcommand.
pub fn run(command: BenchCommand) -> ExitCode {
    match command {
        BenchCommand::Relay(args) => {
            let exe = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: cannot find the onionrtc executable: {e}");
                    return ExitCode::from(crate::EXIT_RUNTIME);
                }
            };
            match bench::orchestrate::main(&args, &exe) {
                Ok(outcome) => ExitCode::from(outcome.exit_code()),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(crate::EXIT_RUNTIME)
                }
            }
        }
        BenchCommand::Loadgen(args) => match bench::loadgen::main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ bench::loadgen::LoadgenError::Usage(_)) => {
                eprintln!("error: {e}");
                ExitCode::from(crate::EXIT_CONFIG)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(crate::EXIT_RUNTIME)
            }
        },
    }
}

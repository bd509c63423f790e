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
    /// How many echo-test sessions (/api/echo) one core of `serve` holds:
    /// steps of N real WebRTC sessions at 50 packets/s each against a
    /// fresh serve pinned to one core (taskset); prints loss and serve's
    /// CPU per step. See docs/performance.md.
    Echo(bench::echo::EchoArgs),
    /// SIP over UDP and TCP with Debian's SIPp (sip-tester): REGISTERs
    /// with digest per second, memory per registration, INVITE → 200 call
    /// setups per second through the B2BUA, against a fresh serve pinned
    /// to one core. See docs/performance.md.
    Sip(bench::sip::SipArgs),
    /// The echo benchmark's client (`start`, `end`, one JSON line on stdout).
    #[command(hide = true)]
    EchoClient(bench::echo::EchoClientArgs),
}

/// This executable (the benchmarks start it as servers and clients).
fn current_exe() -> Result<std::path::PathBuf, ExitCode> {
    std::env::current_exe().map_err(|e| {
        eprintln!("error: cannot find the onionrtc executable: {e}");
        ExitCode::from(crate::EXIT_RUNTIME)
    })
}

/// Runs a `bench` subcommand.
pub fn run(command: BenchCommand) -> ExitCode {
    match command {
        BenchCommand::Relay(args) => {
            let exe = match current_exe() {
                Ok(p) => p,
                Err(code) => return code,
            };
            match bench::orchestrate::main(&args, &exe) {
                Ok(outcome) => ExitCode::from(outcome.exit_code()),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(crate::EXIT_RUNTIME)
                }
            }
        }
        BenchCommand::Echo(args) => {
            let exe = match current_exe() {
                Ok(p) => p,
                Err(code) => return code,
            };
            match bench::echo::main(&args, &exe) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(crate::EXIT_RUNTIME)
                }
            }
        }
        BenchCommand::Sip(args) => {
            let exe = match current_exe() {
                Ok(p) => p,
                Err(code) => return code,
            };
            match bench::sip::main(&args, &exe) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(crate::EXIT_RUNTIME)
                }
            }
        }
        BenchCommand::EchoClient(args) => match bench::echo::client_main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(crate::EXIT_RUNTIME)
            }
        },
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

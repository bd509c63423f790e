//! `onionrtc lab run|report|check`: the call-quality lab (crate `lab`).

use std::process::ExitCode;

pub use lab::LabCommand;

/// Runs a lab command; plan and argument errors exit 2, run failures 1.
pub fn run(cmd: LabCommand) -> ExitCode {
    match lab::execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(lab::Failure::Config(e)) => crate::fail(crate::EXIT_CONFIG, &e),
        Err(lab::Failure::Runtime(e)) => crate::fail(crate::EXIT_RUNTIME, &e),
    }
}

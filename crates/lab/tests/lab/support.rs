//! Shared helpers: plan files in temporary directories, the `onionrtc lab`
//! command line as the binary parses it.

use std::path::{Path, PathBuf};

use clap::Parser;

/// `onionrtc lab …`, parsed by the same clap definitions the binary flattens.
#[derive(Debug, Parser)]
#[command(name = "onionrtc")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, clap::Subcommand)]
enum Top {
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
}

/// Runs `onionrtc <args>` (a `lab` command) in-process.
pub fn onionrtc(args: &[&str]) -> Result<(), lab::Failure> {
    let cli = Cli::try_parse_from(std::iter::once("onionrtc").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("bad command line {args:?}: {e}"));
    let Top::Lab { command } = cli.command;
    lab::execute(command)
}

/// Writes `text` as `plan.toml` in `dir`.
pub fn write_plan(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("plan.toml");
    std::fs::write(&p, text).unwrap();
    p
}

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

/// The `onionrtc` executable next to this test binary
/// (`target/<profile>/onionrtc`; `cargo test --workspace` builds it, as
/// `cargo build -p onionrtc` does). Browser scenarios start its `serve`,
/// socks/tor paths its `connect`. Missing: the test is skipped with a note,
/// or fails in CI.
pub fn onionrtc_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("onionrtc");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is required in CI (cargo test --workspace builds it)",
        bin.display()
    );
    eprintln!(
        "skipping: {} is missing (run `cargo build -p onionrtc` first)",
        bin.display()
    );
    None
}

/// Whether process `pid` is gone (no /proc entry, or a zombie).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// `onionrtc lab run --plan PLAN --out OUT --quiet --onionrtc-bin BIN`.
pub fn lab_run(plan: &Path, out: &Path, bin: &Path) -> Result<(), lab::Failure> {
    onionrtc(&[
        "lab",
        "run",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--onionrtc-bin",
        bin.to_str().unwrap(),
    ])
}

//! Network namespaces for tests: run one test inside a fresh network
//! namespace whose only interface is `lo` (127.0.0.1/8 and ::1), so whatever
//! the code under test sends can never leave the machine.
//!
//! # How it works
//! The test binary re-executes *itself* for exactly one test:
//!
//! ```text
//! unshare --net -- sh -c 'ip link set lo up && exec "$0" "$@"' \
//!     /proc/<PID>/exe <test path> --exact --include-ignored --nocapture --test-threads 1
//! ```
//!
//! with [`MARKER_ENV`] set to the test's path (`/proc/<PID>/exe` is the
//! running binary itself, even if a concurrent build replaced its file).
//! [`run_isolated`] is the first call of such a test:
//!
//! - **outside** (marker not set) it starts that child, waits for it with a
//!   deadline (killing it by PID past it), prints its output, asserts that it
//!   exited 0 *and* that libtest reported exactly one passed test (so a
//!   misspelt test path cannot pass by running nothing), and returns `false`:
//!   the caller returns at once, its body ran in the child;
//! - **inside** (marker equal to the test path) it checks the namespace — a
//!   different network namespace from PID 1's, `lo` the only link, `lo` up
//!   with `::1` — and returns `true`: the caller runs its body.
//!
//! ```no_run
//! #[test]
//! fn peer_policy_in_netns() {
//!     if !testkit::netns::run_isolated("policy::peer_policy_in_netns") {
//!         return; // the body ran (and passed) in a namespace, or was skipped
//!     }
//!     // Only `lo` exists here.
//! }
//! ```
//!
//! The path is the test's path inside its test binary (`module::function`,
//! as `cargo test -- --list` prints it).
//!
//! # Requirements
//! Creating a network namespace needs root (CAP_SYS_ADMIN), `unshare`
//! (util-linux) and `ip` (iproute2); `scripts/test.sh` installs both. When
//! they are missing or `unshare --net` is not permitted, the test is skipped
//! with a note outside CI and fails in CI (`CI` set), like
//! [`require_tool`](crate::require_tool).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::process::run_bounded;

/// Environment variable telling a re-executed test binary that it runs
/// inside the namespace made for the test named by its value.
pub const MARKER_ENV: &str = "ONIONRTC_NETNS_TEST";

/// How long [`run_isolated`] lets the child run before killing it.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(240);

/// Whether this process is a test binary re-executed inside a namespace.
pub fn inside() -> bool {
    std::env::var_os(MARKER_ENV).is_some()
}

/// [`run_isolated_with_limit`] with [`DEFAULT_LIMIT`].
pub fn run_isolated(test: &str) -> bool {
    run_isolated_with_limit(test, DEFAULT_LIMIT)
}

/// Runs the test `test` (its path in this test binary) inside a fresh
/// network namespace with only `lo` up. Returns `true` when the caller is
/// inside that namespace and must run the test body; `false` when the body
/// already ran and passed in a child process (or the test is skipped, outside
/// CI, because namespaces are unavailable). Panics when the child fails,
/// times out after `limit`, or did not run exactly one test.
pub fn run_isolated_with_limit(test: &str, limit: Duration) -> bool {
    match std::env::var(MARKER_ENV) {
        Ok(marker) => {
            assert_eq!(
                marker, test,
                "{MARKER_ENV}={marker:?} but run_isolated was called with {test:?}: \
                 pass the test's own path"
            );
            check_namespace();
            true
        }
        Err(_) => {
            if let Err(why) = available() {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "network namespaces are required in CI (run as root with unshare and ip \
                     installed; scripts/test.sh installs them): {why}"
                );
                eprintln!("skipping {test}: no network namespace ({why})");
                return false;
            }
            run_child(test, limit);
            false
        }
    }
}

/// Whether `unshare --net` works here (root, tools installed, not forbidden
/// by a seccomp profile or user namespace settings).
pub fn available() -> Result<(), String> {
    for (tool, arg) in [("unshare", "--version"), ("ip", "-V")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            return Err(format!("{tool} is not installed"));
        }
    }
    let mut probe = Command::new("unshare");
    probe.args(["--net", "--", "ip", "link", "set", "lo", "up"]);
    let out = run_bounded(&mut probe, Duration::from_secs(20));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`unshare --net ip link set lo up` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// This process's executable as a path the child can exec: `/proc/PID/exe`
/// keeps naming the running binary even when a concurrent build has
/// replaced (deleted) the file at its original path.
fn current_exe() -> PathBuf {
    let proc_exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    if proc_exe.exists() {
        proc_exe
    } else {
        std::env::current_exe().expect("path of the running test binary")
    }
}

fn run_child(test: &str, limit: Duration) {
    let exe = current_exe();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--net",
        "--",
        "sh",
        "-c",
        r#"ip link set lo up && exec "$0" "$@""#,
    ])
    .arg(&exe)
    .args([
        test,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(MARKER_ENV, test);
    eprintln!("running {test} in a new network namespace: {cmd:?}");
    let out = run_bounded(&mut cmd, limit);
    report(test, &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test} failed in its network namespace ({}); its output is above",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed;"),
        "{test} did not run exactly one test in its network namespace \
         (is {test:?} the test's exact path?); its output is above"
    );
}

fn report(test: &str, out: &Output) {
    eprintln!(
        "---- {test} in its network namespace: {} ----\n{}{}---- end of {test} ----",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text_of(cmd: &mut Command) -> String {
    let out = run_bounded(cmd, Duration::from_secs(20));
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Inside: a namespace of our own, with `lo` the only link, up, with ::1.
fn check_namespace() {
    let ours = std::fs::read_link("/proc/self/ns/net").expect("read /proc/self/ns/net");
    if let Ok(init) = std::fs::read_link("/proc/1/ns/net") {
        assert_ne!(
            ours, init,
            "{MARKER_ENV} is set but this process shares PID 1's network namespace"
        );
    }
    let links = text_of(Command::new("ip").args(["-o", "link", "show"]));
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .collect();
    assert_eq!(names, ["lo"], "links in the namespace:\n{links}");
    assert!(
        links.contains("UP"),
        "lo is not up in the namespace:\n{links}"
    );
    let v6 = text_of(Command::new("ip").args(["-6", "addr", "show", "dev", "lo"]));
    assert!(
        v6.contains("inet6 ::1/128"),
        "::1 is missing on lo in the namespace:\n{v6}"
    );
    let v4 = text_of(Command::new("ip").args(["-4", "addr", "show", "dev", "lo"]));
    assert!(
        v4.contains("inet 127.0.0.1/8"),
        "127.0.0.1/8 is missing on lo in the namespace:\n{v4}"
    );
}

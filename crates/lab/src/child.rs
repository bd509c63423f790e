//! Child processes the lab starts — `onionrtc serve`, `onionrtc connect`,
//! `microsocks` — always stopped by PID: SIGTERM, a bounded wait, then
//! SIGKILL, when the [`Child`] is dropped (also on errors and panics).
//!
//! A child's stdout lines arrive on a channel (the lab waits for a
//! readiness line such as `Open http://…/` or `TURN: …`); the last lines
//! of its stderr are kept for error messages.
//!
//! Children run under `setpriv --pdeathsig KILL` when util-linux's
//! `setpriv` exists, so they die with the thread that started them even
//! when the lab itself is killed (SIGKILL, or SIGTERM: the lab installs no
//! signal handler) before it can stop them by PID. `setpriv` execs the
//! program, so the PID is the program's.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Environment variable naming the `onionrtc` executable the lab starts
/// for `serve` and `connect` (when `--onionrtc-bin` is not given).
pub const ONIONRTC_BIN_ENV: &str = "ONIONRTC_BIN";
/// Lines of a child's stderr kept.
const STDERR_LINES: usize = 40;
/// How long a child may take to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// Polling step while waiting for a child.
const POLL: Duration = Duration::from_millis(20);

/// A child process stopped by PID when dropped.
#[derive(Debug)]
pub struct Child {
    name: String,
    child: std::process::Child,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stdout: Option<Receiver<String>>,
    stopped: bool,
}

impl Child {
    /// Starts `cmd` (stdin closed, stdout and stderr piped); `name` names it
    /// in messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Child> {
        let mut tied = tied(cmd);
        let cmd = tied.as_mut().unwrap_or(cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let tail = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let Ok(mut t) = tail.lock() else { break };
                    if t.len() == STDERR_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        let stdout = child.stdout.take().map(|pipe| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    // The receiver may be gone: keep draining the pipe.
                    let _ = tx.send(line);
                }
            });
            rx
        });
        Ok(Child {
            name: name.to_owned(),
            child,
            stderr,
            stdout,
            stopped: false,
        })
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last lines of its stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (bounded by `limit`) for a stdout line for which `pick`
    /// returns `Some`; fails when the child exits first or the time is up.
    pub fn wait_line<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + limit;
        let Some(rx) = self.stdout.as_ref() else {
            bail!("{}: stdout is not captured", self.name);
        };
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(v) = pick(&line) {
                        return Ok(v);
                    }
                    if seen.len() < 20 {
                        seen.push(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Give the stderr reader a moment to catch the reason.
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
            if let Some(status) = self.child.try_wait().ok().flatten() {
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "{} exited during startup ({status}); stderr:\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
        }
        let status = match self.exited() {
            Some(s) => format!("exited ({s})"),
            None => format!("not ready within {limit:?}"),
        };
        bail!(
            "{} {status}; stdout: {seen:?}; stderr:\n{}",
            self.name,
            self.stderr_tail()
        )
    }

    /// SIGTERM, up to 5 s for it to exit, then SIGKILL; reaps it.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline {
                if self.exited().is_some() {
                    return;
                }
                std::thread::sleep(POLL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cmd` under `setpriv --pdeathsig KILL`, if `setpriv` exists.
fn tied(cmd: &Command) -> Option<Command> {
    // A program that cannot be found is started directly, so the error is
    // the spawn's own ("No such file or directory"), not setpriv's exit.
    if !cdp::has_setpriv() || !findable(Path::new(cmd.get_program())) {
        return None;
    }
    let mut t = Command::new("setpriv");
    t.args(["--pdeathsig", "KILL", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => {
                t.env(k, v);
            }
            None => {
                t.env_remove(k);
            }
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        t.current_dir(dir);
    }
    Some(t)
}

/// Whether `program` names a file (a path, or a name found in `$PATH`).
fn findable(program: &Path) -> bool {
    if program.components().count() > 1 {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// A port free on `ip` for both UDP and TCP at the time of the call.
pub fn free_port(ip: Ipv4Addr) -> std::io::Result<u16> {
    for _ in 0..100 {
        let Ok(u) = UdpSocket::bind((ip, 0)) else {
            continue;
        };
        let Ok(port) = u.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(format!("no free port on {ip}")))
}

/// Waits (bounded) until something accepts TCP connections on `addr`;
/// `false` when `child` exits first or the time is up.
pub fn wait_tcp(child: &mut Child, addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return child.exited().is_none();
        }
        if Instant::now() >= deadline || child.exited().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `onionrtc` executable to start `serve` and `connect` with:
/// `explicit` (`--onionrtc-bin`), else `$ONIONRTC_BIN`, else this process
/// when it is `onionrtc` (the lab runs inside the `onionrtc` binary).
pub fn onionrtc_exe(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os(ONIONRTC_BIN_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let is_onionrtc = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("onionrtc"));
    if !is_onionrtc {
        bail!(
            "this plan starts `onionrtc serve` or `onionrtc connect`, but {} is not the onionrtc \
             executable: pass --onionrtc-bin PATH or set {ONIONRTC_BIN_ENV}",
            exe.display()
        );
    }
    Ok(exe)
}

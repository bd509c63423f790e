//! Child processes that are always killed by PID, bounded waits, free ports.

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::BenchError;

/// A child process killed (SIGKILL, by PID) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to
    /// `log` (both).
    pub fn spawn_logged(name: &str, cmd: &mut Command, log: &Path) -> Result<Self, BenchError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| BenchError::io(format!("cannot open {}", log.display()), e))?;
        let err = file
            .try_clone()
            .map_err(|e| BenchError::io("cannot duplicate a log file handle", e))?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
        Self::spawn(name, cmd)
    }

    /// Starts `cmd` as configured by the caller.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self, BenchError> {
        match cmd.spawn() {
            Ok(child) => Ok(ChildGuard {
                child,
                name: name.into(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BenchError::MissingTool(
                cmd.get_program().to_string_lossy().into_owned(),
            )),
            Err(e) => Err(BenchError::io(format!("cannot start {name}"), e)),
        }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the child to exit, at most `limit`; kills it on timeout or
    /// when `stop` is set.
    pub fn wait(&mut self, limit: Duration, stop: &AtomicBool) -> Result<ExitStatus, BenchError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(e) => return Err(BenchError::io(format!("waiting for {}", self.name), e)),
            }
            if stop.load(Ordering::Relaxed) {
                self.kill();
                return Err(BenchError::Interrupted);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(BenchError::Timeout(format!(
                    "{} did not finish within {} s",
                    self.name,
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child by PID and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `tool` can be started (probed with `args`, output discarded).
pub fn tool_exists(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A port free on 127.0.0.1 for both UDP and TCP at the time of the call.
pub fn free_port() -> Result<u16, BenchError> {
    for _ in 0..100 {
        let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = u.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(BenchError::io(
        "no free port on 127.0.0.1",
        io::ErrorKind::AddrInUse.into(),
    ))
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

//! A real Redis for tests: Debian's `redis-server` on 127.0.0.1 with a free
//! port, its own directory, a random password, no persistence; started
//! under `setpriv --pdeathsig KILL` from testkit's spawner thread (so it dies
//! with the test binary) and killed by PID on drop. [`Redis::restart`] kills
//! it and starts it again on the same port (the "Redis restarts mid-call"
//! tests).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, random_u64, run_bounded, wait_for_tcp, Proc};
use crate::topology::{spawn_tied, tied_command};

const LIMIT: Duration = Duration::from_secs(30);

/// A running `redis-server`.
#[derive(Debug)]
pub struct Redis {
    proc: Option<Proc>,
    port: u16,
    password: String,
    dir: tempfile::TempDir,
    /// Certificate and key (PEM files) when it listens with TLS only.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Redis {
    /// Starts a server; `None` (with a note) where redis-server is not
    /// installed, except in CI (`CI` set), where that is a failure.
    pub fn start() -> io::Result<Option<Redis>> {
        Self::start_with(None)
    }

    /// [`Redis::start`] listening with TLS only (`--port 0 --tls-port`),
    /// with this certificate and key (PEM files); clients are not asked
    /// for certificates. [`Redis::url`] is then `rediss://…@localhost:…`.
    pub fn start_tls(cert: PathBuf, key: PathBuf) -> io::Result<Option<Redis>> {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> io::Result<Option<Redis>> {
        if !crate::require_tool("redis-server", &["--version"]) {
            return Ok(None);
        }
        let mut r = Redis {
            proc: None,
            port: 0,
            password: format!("rd-{:016x}", random_u64()),
            dir: tempfile::Builder::new()
                .prefix("onionrtc-redis-")
                .tempdir()?,
            tls,
        };
        let mut last = String::new();
        for _ in 0..5 {
            r.port = free_port();
            match r.spawn() {
                Ok(()) => return Ok(Some(r)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(io::Error::other(last))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut cmd = tied_command("redis-server");
        cmd.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some((cert, key)) => {
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        cmd.args(["--requirepass", &self.password])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut proc = spawn_tied(cmd)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        if !wait_for_tcp(&mut proc, addr, LIMIT) {
            return Err(io::Error::other(format!(
                "redis-server on port {} did not start",
                self.port
            )));
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// Kills the server (by PID) and starts it again on the same port;
    /// its data is gone (no persistence), as after a crash.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Kills the server (by PID): an outage until [`Redis::resume`].
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts the server again on the same port after [`Redis::stop`]
    /// (empty, as after a crash); a no-op while it runs.
    pub fn resume(&mut self) -> io::Result<()> {
        if self.proc.is_some() {
            return Ok(());
        }
        self.spawn()
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/`, or with TLS
    /// `rediss://:PASSWORD@localhost:PORT/`.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://:{}@127.0.0.1:{}/", self.password, self.port),
            Some(_) => format!("rediss://:{}@localhost:{}/", self.password, self.port),
        }
    }

    /// Runs `redis-cli` with `args`; its output.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let out = run_bounded(
            Command::new("redis-cli")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "--no-auth-warning",
                ])
                .args(["-a", &self.password])
                .args(self.tls_args())
                .args(args),
            LIMIT,
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }

    /// `redis-cli`'s TLS options (the server's certificate as the CA).
    fn tls_args(&self) -> Vec<std::ffi::OsString> {
        match &self.tls {
            None => Vec::new(),
            Some((cert, _)) => vec!["--tls".into(), "--cacert".into(), cert.into()],
        }
    }

    /// The data directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::wait_until;

    #[test]
    fn starts_authenticates_restarts_and_dies_by_pid() {
        let Some(mut r) = Redis::start().unwrap() else {
            return;
        };
        assert_eq!(r.cli(&["PING"]).unwrap().trim(), "PONG");
        r.cli(&["SET", "k", "v"]).unwrap();
        // Without the password: refused (the negative control).
        let out = run_bounded(
            Command::new("redis-cli").args(["-p", &r.port().to_string(), "GET", "k"]),
            LIMIT,
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("NOAUTH"));
        let port = r.port();
        r.restart().unwrap();
        assert_eq!(r.port(), port);
        assert_eq!(r.cli(&["GET", "k"]).unwrap().trim(), "");
        let pid = r.proc.as_ref().unwrap().pid();
        drop(r);
        let gone = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            (s.is_empty() || s.contains("zombie")).then_some(())
        });
        assert!(gone.is_some());
    }
}

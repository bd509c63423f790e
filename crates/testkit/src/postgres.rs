//! A real PostgreSQL server for tests: Debian's `postgresql` package,
//! `initdb` in a private temporary directory, `postgres` on 127.0.0.1 with a
//! free port, password authentication (SCRAM) for one superuser.
//!
//! One server per test binary ([`shared`]); each test takes a database of
//! its own ([`Postgres::database`]). The server is started under
//! `setpriv --pdeathsig KILL` from testkit's long-lived spawner thread
//! ([`crate::topology::spawn_tied`]), so it dies with the test binary even
//! though the shared server is never dropped; a [`Postgres`] that is dropped
//! kills it by PID. Data directories left by earlier test binaries (whose
//! process is gone) are removed at the next start.
//!
//! PostgreSQL refuses to run as root: as root (CI), `initdb` and `postgres`
//! run as the `postgres` user the package creates (`setpriv --reuid`), with
//! the directory chowned to it; otherwise they run as the current user.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{free_port, random_u64, run_bounded, wait_for_tcp, wait_until, Proc};
use crate::topology::spawn_tied;

/// The superuser the tests connect as.
pub const USER: &str = "onionrtc";
/// Prefix of the temporary directories (`onionrtc-pg-<pid>-<n>`).
const DIR_PREFIX: &str = "onionrtc-pg-";
/// How long `initdb`, `createdb` and the server start may take.
const LIMIT: Duration = Duration::from_secs(60);

/// A running server. Killed by PID on drop; its directory removed.
#[derive(Debug)]
pub struct Postgres {
    proc: Proc,
    port: u16,
    password: String,
    bin: PathBuf,
    dir: PathBuf,
    next_db: AtomicU32,
}

/// The directory of the newest installed PostgreSQL's programs
/// (`/usr/lib/postgresql/<version>/bin`), if any.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The server shared by the tests of this binary, started on first use.
/// `None` (with a note) where PostgreSQL is not installed, except in CI
/// (`CI` set), where that is a failure: scripts/test.sh installs it.
pub fn shared() -> Option<&'static Postgres> {
    static SERVER: OnceLock<Option<Postgres>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if bin_dir().is_none() {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL is required in CI (scripts/test.sh installs postgresql)"
                );
                eprintln!("skipping: PostgreSQL is not installed (apt-get install postgresql)");
                return None;
            }
            Some(Postgres::start(&[]).unwrap_or_else(|e| panic!("starting PostgreSQL: {e}")))
        })
        .as_ref()
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// A command running `program` as the `postgres` user when we are root,
/// as ourselves otherwise; `tied` adds the parent-death signal.
fn as_server_user(program: &Path, tied: bool) -> Command {
    let root = is_root();
    if !root && !tied {
        return Command::new(program);
    }
    let mut cmd = Command::new("setpriv");
    if tied {
        cmd.args(["--pdeathsig", "KILL"]);
    }
    if root {
        cmd.args([
            "--reuid",
            "postgres",
            "--regid",
            "postgres",
            "--clear-groups",
        ]);
    }
    cmd.arg("--").arg(program);
    cmd
}

fn checked(cmd: &mut Command) -> io::Result<()> {
    let out = run_bounded(cmd, LIMIT);
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Removes the directories of earlier test binaries whose process is gone.
fn remove_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten().take(10_000) {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Postgres {
    /// Starts a server with extra `-c name=value` settings (the tests add
    /// none; `fsync=off` and the like are for benchmarks that say so).
    pub fn start(settings: &[(&str, &str)]) -> io::Result<Postgres> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        static N: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir().ok_or_else(|| io::Error::other("PostgreSQL is not installed"))?;
        let tmp = std::env::temp_dir();
        remove_stale_dirs(&tmp);
        let dir = tmp.join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let password = format!("pw-{:016x}", random_u64());
        let pwfile = dir.join("pwfile");
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)?;
            writeln!(f, "{password}")?;
        }
        if is_root() {
            let (uid, gid) = postgres_ids()?;
            for p in [&dir, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
        }
        let data = dir.join("data");
        checked(
            as_server_user(&bin.join("initdb"), false)
                .arg("-D")
                .arg(&data)
                .args(["-U", USER, "-A", "scram-sha-256", "-E", "UTF8"])
                .args(["--locale=C", "--no-sync", "--no-instructions"])
                .arg(format!("--pwfile={}", pwfile.display())),
        )?;
        let _ = std::fs::remove_file(&pwfile);
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = as_server_user(&bin.join("postgres"), true);
            cmd.arg("-D")
                .arg(&data)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k", ""])
                .args(["-c", "max_connections=50", "-c", "shared_buffers=16MB"]);
            for (k, v) in settings {
                cmd.arg("-c").arg(format!("{k}={v}"));
            }
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            let mut proc = spawn_tied(cmd)?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if wait_for_tcp(&mut proc, addr, LIMIT) {
                let pg = Postgres {
                    proc,
                    port,
                    password,
                    bin,
                    dir,
                    next_db: AtomicU32::new(0),
                };
                // Accepting TCP is not yet accepting logins: wait for one.
                let ready = wait_until(LIMIT, Duration::from_millis(100), || {
                    pg.psql("postgres", "SELECT 1").ok()
                });
                if ready.is_none() {
                    return Err(io::Error::other("PostgreSQL accepts no login"));
                }
                return Ok(pg);
            }
            last = Some(format!("postgres on port {port} did not start"));
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(io::Error::other(last.unwrap_or_default()))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL of database `db` (with the password).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn database(&self) -> io::Result<String> {
        let name = format!("t{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        checked(
            Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                .arg(&name)
                .env("PGPASSWORD", &self.password),
        )?;
        Ok(self.url(&name))
    }

    /// Runs one SQL command with `psql` in database `db`; its output
    /// (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> io::Result<String> {
        let out = run_bounded(
            Command::new(self.bin.join("psql"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                .args(["-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .env("PGPASSWORD", &self.password),
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
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> io::Result<(u32, u32)> {
    let id = |flag: &str| -> io::Result<u32> {
        let out = run_bounded(Command::new("id").args([flag, "postgres"]), LIMIT);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| io::Error::other("no user postgres (the postgresql package makes it)"))
    };
    Ok((id("-u")?, id("-g")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_takes_logins_and_dies_by_pid() {
        if bin_dir().is_none() {
            assert!(std::env::var_os("CI").is_none(), "PostgreSQL missing in CI");
            return;
        }
        let pg = Postgres::start(&[]).unwrap();
        let url = pg.database().unwrap();
        assert!(url.starts_with("postgres://onionrtc:pw-"), "{url}");
        assert_eq!(pg.psql("t0", "SELECT 40 + 2").unwrap().trim(), "42");
        // A wrong password is refused (the negative control of the login).
        let out = run_bounded(
            Command::new(pg.bin.join("psql"))
                .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", USER])
                .args(["-d", "t0", "-c", "SELECT 1"])
                .env("PGPASSWORD", "wrong"),
            LIMIT,
        );
        assert!(!out.status.success());
        let (pid, dir) = (pg.pid(), pg.dir.clone());
        drop(pg);
        assert!(
            !Path::new("/proc").join(pid.to_string()).exists() || {
                // A zombie until reaped by its (our) thread; the status says so.
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .map(|s| s.contains("zombie"))
                    .unwrap_or(true)
            }
        );
        assert!(!dir.exists());
    }
}

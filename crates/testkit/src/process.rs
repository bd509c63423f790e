//! Child processes with deadlines, bounded waits and free ports.

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process killed by PID when dropped (also when a test panics).
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// Starts `cmd` with stdin closed.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        cmd.stdin(Stdio::null()).spawn().map(Proc)
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to completion within `limit`, killing it by PID otherwise, and
/// returns what it printed.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let s = child.wait().expect("wait");
            eprintln!("killed after {limit:?}: {cmd:?}");
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Polls `f` every `step` until it returns `Some`, at most until `limit`.
pub fn wait_until<T>(
    limit: Duration,
    step: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(step);
    }
}

/// 64 random bits from the kernel (passwords of test servers).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u64::from_ne_bytes(b)
}

/// Waits until `addr` accepts TCP connections (true), `proc` exits or
/// `limit` passes (false): a server child that is up.
pub fn wait_for_tcp(proc: &mut Proc, addr: std::net::SocketAddr, limit: Duration) -> bool {
    let up = wait_until(limit, Duration::from_millis(20), || {
        if matches!(proc.0.try_wait(), Ok(Some(_))) {
            return Some(false);
        }
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(|_| true)
    });
    up == Some(true)
}

/// A port free on 127.0.0.1 for both UDP and TCP (at the time of the call).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = u.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// Whether `tool` can be started. In CI (`CI` set) a missing tool is a
/// failure, since the test command installs it; elsewhere the test is
/// skipped with a note.
pub fn require_tool(tool: &str, probe_args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is required in CI (scripts/test.sh installs it)"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    ok
}

/// `microsocks` on a free loopback port (no authentication).
pub fn start_microsocks(bin: &std::path::Path) -> (Proc, u16) {
    for _ in 0..5 {
        let port = free_port();
        let proc = Proc::spawn(
            std::process::Command::new(bin)
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        )
        .expect("microsocks");
        let up = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        if up.is_some() {
            return (proc, port);
        }
    }
    panic!("microsocks did not start");
}

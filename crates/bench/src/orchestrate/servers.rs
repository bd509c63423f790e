//! The two servers under test, started fresh for each scenario with
//! equivalent settings: coturn's `turnserver` and `onionrtc relay`.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::children::{free_port, tail, ChildGuard};
use super::{BenchError, Ctx};
use crate::loadgen::{LinkKind, ServerUrl};

/// Realm, user and password of both servers.
pub const REALM: &str = "bench";
/// Static long-term user.
pub const USER: &str = "bench";
/// Its password.
pub const PASSWORD: &str = "benchpw";
/// TURN REST shared secret (alloc-rate scenario).
pub const REST_SECRET: &str = "bench-rest-secret";
/// Relay port range of both servers: 16 384 ports, below Linux's ephemeral
/// range (32768-60999) so the load generator's sockets never take them.
pub const RELAY_PORTS: (u16, u16) = (16384, 32767);
/// How long a server may take to answer its first Binding request.
const STARTUP: Duration = Duration::from_secs(15);

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// Debian's coturn.
    Coturn,
    /// `onionrtc relay`.
    Ours,
}

impl ServerKind {
    /// `coturn` or `onionrtc`.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Coturn => "coturn",
            ServerKind::Ours => "onionrtc",
        }
    }
}

/// Credentials the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The static user only.
    Static,
    /// TURN REST credentials (coturn: --use-auth-secret, which replaces the
    /// static user; ours: both).
    Rest,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Which server.
    pub kind: ServerKind,
    child: ChildGuard,
    /// UDP and TCP listener.
    pub plain: SocketAddr,
    /// TLS listener.
    pub tls: SocketAddr,
    /// The command line, as a shell would show it.
    pub command: String,
    /// Our relay's configuration file, when it is ours.
    pub config: Option<String>,
    log: PathBuf,
}

/// `program args…` quoted for display.
fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.contains('"') {
            parts.push(format!("'{a}'"));
        } else {
            parts.push(a.into_owned());
        }
    }
    parts.join(" ")
}

/// coturn's flags, each matching a setting of ours (docs/performance.md).
/// `onionrtc import-coturn`'s translation (`relay::coturn`) of these flags
/// gives [`our_config`]'s settings; a test below keeps the two in step.
pub fn coturn_command(work: &Path, plain: u16, tls: u16, auth: Auth, serial: u32) -> Command {
    let w = |name: &str| work.join(name).display().to_string();
    let mut c = Command::new("turnserver");
    c.args(["-n", "--no-cli"])
        .arg(format!("--log-file={}", w(&format!("coturn-{serial}.log"))))
        .args(["--simple-log", "--no-stdout-log"])
        .arg(format!("--pidfile={}", w("coturn.pid")))
        .arg(format!("--userdb={}", w("coturn-turndb")))
        .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
        .arg(format!("--listening-port={plain}"))
        .arg(format!("--tls-listening-port={tls}"))
        .arg(format!("--min-port={}", RELAY_PORTS.0))
        .arg(format!("--max-port={}", RELAY_PORTS.1))
        .arg(format!("--realm={REALM}"));
    match auth {
        Auth::Static => {
            c.arg("--lt-cred-mech")
                .arg(format!("--user={USER}:{PASSWORD}"));
        }
        Auth::Rest => {
            c.arg("--use-auth-secret")
                .arg(format!("--static-auth-secret={REST_SECRET}"));
        }
    }
    c.arg(format!("--cert={}", w("cert.pem")))
        .arg(format!("--pkey={}", w("key.pem")))
        .args([
            "--no-dtls",
            "--allow-loopback-peers",
            "--no-software-attribute",
            "--no-rfc5780",
            "--no-stun-backward-compatibility",
        ]);
    c
}

/// Our relay's configuration, equivalent to [`coturn_command`], with
/// `threads` shards (the scenarios but `scaling` run one: the figures per
/// message are those of one event loop).
pub fn our_config(work: &Path, plain: u16, tls: u16, auth: Auth, threads: u32) -> String {
    let secrets = match auth {
        Auth::Static => String::new(),
        Auth::Rest => format!("auth_secrets = [\"{REST_SECRET}\"]\n"),
    };
    format!(
        r#"[relay]
listen = ["udp://127.0.0.1:{plain}", "tcp://127.0.0.1:{plain}", "tls://127.0.0.1:{tls}"]
realm = "{REALM}"
relay_ip = "127.0.0.1"
relay_ports = "{lo}-{hi}"
tls_cert = "{cert}"
tls_key = "{key}"
users = {{ {USER} = "{PASSWORD}" }}
{secrets}max_allocations_per_user = 1000000
max_allocations_per_ip = 1000000
max_allocations_total = 1000000
max_connections = 1000000
max_connections_per_ip = 1000000
unauthenticated_rate = 1000000
unauthenticated_burst = 1000000
dangerous_allow_loopback_peers = true
threads = {threads}
"#,
        lo = RELAY_PORTS.0,
        hi = RELAY_PORTS.1,
        cert = work.join("cert.pem").display(),
        key = work.join("key.pem").display(),
    )
}

impl Server {
    /// Starts a fresh `kind` server on new free ports and waits until it
    /// answers a Binding request and accepts TLS connections: ours with one
    /// shard, coturn with its default relay threads (one per CPU).
    pub fn start(ctx: &mut Ctx, kind: ServerKind, auth: Auth) -> Result<Server, BenchError> {
        Self::start_threads(ctx, kind, auth, None)
    }

    /// [`Server::start`] with `threads` relay threads (ours: `threads`,
    /// coturn: `--relay-threads`).
    pub fn start_threads(
        ctx: &mut Ctx,
        kind: ServerKind,
        auth: Auth,
        threads: Option<u32>,
    ) -> Result<Server, BenchError> {
        ctx.serial += 1;
        let serial = ctx.serial;
        let plain = free_port()?;
        let mut tls = free_port()?;
        while tls == plain {
            tls = free_port()?;
        }
        let work = ctx.work.clone();
        let (mut cmd, config, log) = match kind {
            ServerKind::Coturn => {
                let log = work.join(format!("coturn-{serial}.log"));
                let mut c = coturn_command(&work, plain, tls, auth, serial);
                if let Some(n) = threads {
                    c.arg(format!("--relay-threads={n}"));
                }
                (c, None, log)
            }
            ServerKind::Ours => {
                let mut config = our_config(&work, plain, tls, auth, threads.unwrap_or(1));
                if ctx.relay_busy_poll_us > 0 {
                    config.push_str(&format!("busy_poll_us = {}\n", ctx.relay_busy_poll_us));
                }
                let path = work.join(format!("onionrtc-{serial}.toml"));
                std::fs::write(&path, &config)
                    .map_err(|e| BenchError::io(format!("cannot write {}", path.display()), e))?;
                let mut c = Command::new(&ctx.exe);
                c.arg("relay").arg("--config").arg(&path);
                c.env("RUST_LOG", "warn");
                // Its log is what it prints (RUST_LOG=warn).
                let log = work.join(format!("onionrtc-{serial}.log"));
                (c, Some(config), log)
            }
        };
        let command = display(&cmd);
        // coturn prints nothing here (--no-stdout-log) unless it fails early.
        let console = match kind {
            ServerKind::Coturn => work.join(format!("coturn-{serial}.console")),
            ServerKind::Ours => log.clone(),
        };
        let child = ChildGuard::spawn_logged(kind.name(), &mut cmd, &console)?;
        let mut server = Server {
            kind,
            child,
            plain: SocketAddr::from(([127, 0, 0, 1], plain)),
            tls: SocketAddr::from(([127, 0, 0, 1], tls)),
            command,
            config,
            log,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Where clients of `transport` connect.
    pub fn url(&self, transport: LinkKind) -> ServerUrl {
        ServerUrl {
            kind: transport,
            addr: match transport {
                LinkKind::Tls => self.tls,
                _ => self.plain,
            },
        }
    }

    /// The port clients of `transport` connect to.
    pub fn port(&self, transport: LinkKind) -> u16 {
        self.url(transport).addr.port()
    }

    /// User + system CPU-seconds so far.
    pub fn cpu_s(&self) -> Result<f64, BenchError> {
        crate::procfs::cpu_seconds(self.pid()).map_err(|e| self.gone(e))
    }

    /// Peak resident set (VmHWM) in kB.
    pub fn peak_rss_kb(&self) -> Result<u64, BenchError> {
        crate::procfs::status_kb(self.pid(), "VmHWM").map_err(|e| self.gone(e))
    }

    /// Resident set now (VmRSS) in kB.
    pub fn rss_kb(&self) -> Result<u64, BenchError> {
        crate::procfs::status_kb(self.pid(), "VmRSS").map_err(|e| self.gone(e))
    }

    /// An error if the server has exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.exited() {
            Some(status) => Err(BenchError::ServerDied {
                server: self.kind.name().into(),
                status: status.to_string(),
                log: tail(&self.log, 15),
            }),
            None => Ok(()),
        }
    }

    fn gone(&self, e: std::io::Error) -> BenchError {
        BenchError::io(
            format!("cannot read /proc/{} ({})", self.pid(), self.kind.name()),
            e,
        )
    }

    fn wait_ready(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + STARTUP;
        let sock = UdpSocket::bind("127.0.0.1:0")
            .map_err(|e| BenchError::io("cannot bind a probe socket", e))?;
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        let request = binding_request();
        let mut buf = [0u8; 1500];
        loop {
            self.check_alive()?;
            if Instant::now() >= deadline {
                return Err(BenchError::Timeout(format!(
                    "{} did not answer a Binding request within {} s; its log ends with:\n{}",
                    self.kind.name(),
                    STARTUP.as_secs(),
                    tail(&self.log, 15)
                )));
            }
            let _ = sock.send_to(&request, self.plain);
            let answered = matches!(
                sock.recv_from(&mut buf),
                Ok((n, _)) if n >= 20 && buf[0..2] == [0x01, 0x01] && buf[8..20] == request[8..20]
            );
            let tls_up = TcpStream::connect_timeout(&self.tls, Duration::from_millis(200)).is_ok();
            if answered && tls_up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A STUN Binding request (RFC 8489) with a fixed transaction ID.
fn binding_request() -> [u8; 20] {
    let mut m = [0u8; 20];
    m[1] = 0x01;
    m[4..8].copy_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(b"onionrtcbnch");
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay::config::RelayConfig;
    use relay::coturn::{import, parse_args, Outcome};

    /// The flags coturn runs with here, translated by `onionrtc
    /// import-coturn`, give our relay the settings it runs with here: the
    /// two mappings agree (and a new coturn flag here must be known there).
    #[test]
    fn coturn_flags_import_as_our_config() {
        let work = Path::new("/bench-work");
        for auth in [Auth::Static, Auth::Rest] {
            let cmd = coturn_command(work, 3478, 5349, auth, 0);
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let imported = import(&parse_args(&args), "bench");
            let unsupported: Vec<String> = imported
                .with(Outcome::Unsupported)
                .map(ToString::to_string)
                .collect();
            // Only coturn's user database path, which the benchmark sets to
            // keep coturn off the system's.
            assert_eq!(unsupported.len(), 1, "{unsupported:?}");
            assert!(unsupported[0].starts_with("--userdb="), "{unsupported:?}");
            assert!(imported.missing.is_empty(), "{:?}", imported.missing);

            let theirs = RelayConfig::from_toml_str(&imported.toml, Path::new("")).unwrap();
            let ours =
                RelayConfig::from_toml_str(&our_config(work, 3478, 5349, auth, 1), Path::new(""))
                    .unwrap();
            assert_eq!(theirs.listen, ours.listen);
            assert_eq!(theirs.realm, ours.realm);
            assert_eq!(theirs.relay_ip, ours.relay_ip);
            assert_eq!(theirs.relay_ports, ours.relay_ports);
            assert_eq!(theirs.tls, ours.tls);
            assert_eq!(
                theirs.dangerous_allow_loopback_peers,
                ours.dangerous_allow_loopback_peers
            );
            assert_eq!(theirs.software, ours.software);
            match auth {
                Auth::Static => {
                    assert_eq!(theirs.users, ours.users);
                    assert!(theirs.auth_secrets.is_empty());
                }
                // coturn uses no static user with --use-auth-secret; ours
                // keeps the bench user next to the secret.
                Auth::Rest => {
                    assert_eq!(theirs.auth_secrets, ours.auth_secrets);
                    assert!(theirs.users.is_empty());
                }
            }
        }
    }
}

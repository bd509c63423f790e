//! `--via tor`: embedded Tor (arti, crate `arti`, with the `arti`
//! feature) unless a tor binary is named; with one, a torrc written by
//! [`torrc`], a `tor` child process started by [`TorProcess::launch`] and
//! stopped by PID, and its SOCKS port.
//!
//! The SOCKS port has `IsolateSOCKSAuth`, so the fresh random SOCKS
//! credentials the dialer uses for every flow give every flow its own
//! circuit. Node presets restrict entry, middle and exit relays to a set of
//! countries with `StrictNodes 1` (country codes need the GeoIP files of
//! Debian's `tor-geoipdb` package).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::ConfigError;

/// The GeoIP files tor needs for country codes (Debian: `tor-geoipdb`).
pub const GEOIP: &str = "/usr/share/tor/geoip";
/// The IPv6 GeoIP file.
pub const GEOIP6: &str = "/usr/share/tor/geoip6";

/// The Europe preset's countries.
pub const EUROPE: &[&str] = &[
    "dk", "se", "no", "fi", "de", "fr", "be", "nl", "pl", "cz", "lu", "lv", "ee", "ch", "gb",
];
/// The Scandinavia preset's countries.
pub const SCANDINAVIA: &[&str] = &["dk", "se", "no", "fi"];

/// Which relays circuits may use (`--tor-nodes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TorNodes {
    /// Tor's own choice.
    #[default]
    Any,
    /// Entry, middle and exit in [`EUROPE`].
    Europe,
    /// Entry, middle and exit in [`SCANDINAVIA`].
    Scandinavia,
}

impl TorNodes {
    /// The preset's country codes (empty for `Any`).
    pub fn countries(self) -> &'static [&'static str] {
        match self {
            TorNodes::Any => &[],
            TorNodes::Europe => EUROPE,
            TorNodes::Scandinavia => SCANDINAVIA,
        }
    }
}

impl FromStr for TorNodes {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(TorNodes::Any),
            "europe" => Ok(TorNodes::Europe),
            "scandinavia" => Ok(TorNodes::Scandinavia),
            other => Err(ConfigError::BadNodes(other.to_owned())),
        }
    }
}

impl fmt::Display for TorNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TorNodes::Any => "any",
            TorNodes::Europe => "europe",
            TorNodes::Scandinavia => "scandinavia",
        })
    }
}

/// How the connector runs tor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorOptions {
    /// Node preset.
    pub nodes: TorNodes,
    /// The tor binary to launch. `None` (default): embedded Tor when the
    /// connector is built with the `arti` feature, otherwise `tor` from
    /// `PATH`.
    pub binary: Option<PathBuf>,
    /// tor's DataDirectory (embedded: its `state/` and `cache/`, 0700);
    /// `None` uses a fresh temporary directory (a full bootstrap every
    /// start). A kept directory makes restarts fast.
    pub data_dir: Option<PathBuf>,
    /// Launched tor: lines appended to the generated torrc (e.g. a private
    /// test network's `DirAuthority` and `TestingTorNetwork` lines).
    /// Embedded: arti configuration (TOML) lines.
    pub extra_config: Vec<String>,
    /// Bridge lines (`obfs4 IP:PORT FP cert=… iat-mode=0`); embedded Tor
    /// only.
    pub bridges: Vec<String>,
    /// The pluggable-transport binary for the bridges (default:
    /// `obfs4proxy` or `lyrebird` from `PATH`).
    pub bridge_transport: Option<PathBuf>,
    /// How long to wait for "Bootstrapped 100%". Default 180 s.
    pub bootstrap_timeout: Duration,
}

impl Default for TorOptions {
    fn default() -> Self {
        TorOptions {
            nodes: TorNodes::Any,
            binary: None,
            data_dir: None,
            extra_config: Vec::new(),
            bridges: Vec::new(),
            bridge_transport: None,
            bootstrap_timeout: Duration::from_secs(180),
        }
    }
}

/// The torrc for a client-only tor with a SOCKS port on
/// `127.0.0.1:socks_port` (isolating circuits by SOCKS credentials), its
/// data in `data_dir` and the node preset.
pub fn torrc(preset: TorNodes, socks_port: u16, data_dir: &Path) -> String {
    let mut c = String::new();
    c.push_str("# Written by onionrtc connect.\n");
    c.push_str(&format!(
        "SocksPort 127.0.0.1:{socks_port} IsolateSOCKSAuth\n"
    ));
    c.push_str(&format!("DataDirectory {}\n", data_dir.display()));
    c.push_str("ClientOnly 1\n");
    c.push_str("AvoidDiskWrites 1\n");
    c.push_str("Log notice stdout\n");
    let countries = preset.countries();
    if !countries.is_empty() {
        c.push_str(&format!("GeoIPFile {GEOIP}\nGeoIPv6File {GEOIP6}\n"));
        let set = countries
            .iter()
            .map(|cc| format!("{{{cc}}}"))
            .collect::<Vec<_>>()
            .join(",");
        for key in ["EntryNodes", "MiddleNodes", "ExitNodes"] {
            c.push_str(&format!("{key} {set}\n"));
        }
        c.push_str("StrictNodes 1\n");
    }
    c
}

/// Why tor could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorError {
    /// A file or directory could not be prepared.
    #[error("cannot prepare tor's files: {0}")]
    Files(#[source] std::io::Error),
    /// The GeoIP file a node preset needs is missing.
    #[error("--tor-nodes {nodes} needs {GEOIP} (install the tor-geoipdb package)")]
    NoGeoIp {
        /// The preset.
        nodes: TorNodes,
    },
    /// The binary could not be started.
    #[error("cannot start {}: {source} (install tor, or set the tor binary)", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// tor exited before bootstrapping.
    #[error("tor exited before bootstrapping; its last lines:\n{0}")]
    Exited(String),
    /// tor bootstrapped but its SOCKS port does not accept connections.
    #[error("tor's SOCKS port {0} does not accept connections")]
    NoSocks(SocketAddr),
    /// tor did not bootstrap in time.
    #[error("tor did not finish bootstrapping within {timeout:?}; its last lines:\n{tail}")]
    Timeout {
        /// The limit.
        timeout: Duration,
        /// tor's last log lines.
        tail: String,
    },
    /// A setting only one kind of tor has.
    #[error("{0}")]
    Unsupported(String),
    /// Embedded Tor failed.
    #[cfg(feature = "arti")]
    #[error(transparent)]
    Embedded(#[from] arti::Error),
}

impl TorOptions {
    /// Whether these options mean embedded Tor in this build.
    pub fn embedded(&self) -> bool {
        cfg!(feature = "arti") && self.binary.is_none()
    }

    /// The binary a launched tor runs.
    pub fn launched_binary(&self) -> PathBuf {
        self.binary.clone().unwrap_or_else(|| PathBuf::from("tor"))
    }

    /// Refuses settings the chosen tor cannot honour.
    pub fn check(&self) -> Result<(), TorError> {
        if self.embedded() {
            if self.nodes != TorNodes::Any {
                return Err(TorError::Unsupported(format!(
                    "--tor-nodes {} needs a launched tor (add --tor-binary tor): embedded Tor \
                     (arti) cannot restrict relays by country",
                    self.nodes
                )));
            }
        } else if !self.bridges.is_empty() {
            return Err(TorError::Unsupported(
                "--bridge is for embedded Tor; for a launched tor put Bridge and \
                 ClientTransportPlugin lines in --tor-extra-config"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A bootstrapped embedded Tor (and its temporary directory, if it has
/// one): the route of `--via tor` without a tor binary. Clones share it.
#[cfg(feature = "arti")]
#[derive(Debug, Clone)]
pub struct Embedded {
    tor: arti::EmbeddedTor,
    _temp: Option<std::sync::Arc<tempfile::TempDir>>,
}

#[cfg(feature = "arti")]
impl PartialEq for Embedded {
    fn eq(&self, other: &Self) -> bool {
        self.tor == other.tor
    }
}
#[cfg(feature = "arti")]
impl Eq for Embedded {}

#[cfg(feature = "arti")]
impl Embedded {
    /// The client.
    pub fn tor(&self) -> &arti::EmbeddedTor {
        &self.tor
    }
}

/// Embedded Tor: bootstraps arti in `options.data_dir` (or a temporary
/// directory), logging progress at info (warn when stuck).
#[cfg(feature = "arti")]
pub async fn bootstrap_embedded(options: &TorOptions) -> Result<Embedded, TorError> {
    let (dir, temp) = match &options.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("onionrtc-arti-")
                .tempdir()
                .map_err(TorError::Files)?;
            (t.path().join("tor"), Some(t))
        }
    };
    let mut o = arti::EmbeddedOptions::new(dir);
    if !options.extra_config.is_empty() {
        o.extra_config = Some(options.extra_config.join("\n"));
    }
    o.bridges.clone_from(&options.bridges);
    o.transport_binary.clone_from(&options.bridge_transport);
    o.bootstrap_timeout = options.bootstrap_timeout;
    let tor = arti::EmbeddedTor::bootstrap(&o, |p| {
        if p.stuck {
            tracing::warn!(target: "connector::tor", "Tor bootstrap {p}");
        } else {
            tracing::info!(target: "connector::tor", "Tor bootstrap {p}");
        }
    })
    .await?;
    tracing::info!(
        target: "connector::tor",
        "Tor (embedded arti) bootstrapped in {:.1} s",
        tor.bootstrap_time().as_secs_f64()
    );
    Ok(Embedded {
        tor,
        _temp: temp.map(std::sync::Arc::new),
    })
}

/// A running tor, killed by PID on [`TorProcess::stop`] (or on drop).
#[derive(Debug)]
pub struct TorProcess {
    child: Child,
    socks: SocketAddr,
    _temp: Option<tempfile::TempDir>,
}

/// tor's log lines kept for an error message.
const TAIL_LINES: usize = 20;
/// Log lines read while waiting for bootstrap, at most.
const MAX_BOOT_LINES: usize = 100_000;

impl TorProcess {
    /// Writes the torrc, starts tor and waits (bounded) until it has
    /// bootstrapped; tor also exits by itself if this process dies
    /// (`__OwningControllerProcess`).
    pub async fn launch(options: &TorOptions) -> Result<TorProcess, TorError> {
        if options.nodes != TorNodes::Any && !Path::new(GEOIP).exists() {
            return Err(TorError::NoGeoIp {
                nodes: options.nodes,
            });
        }
        let temp = tempfile::Builder::new()
            .prefix("onionrtc-tor-")
            .tempdir()
            .map_err(TorError::Files)?;
        let data_dir = match &options.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(TorError::Files)?;
                set_private(d).map_err(TorError::Files)?;
                d.clone()
            }
            None => {
                let d = temp.path().join("data");
                std::fs::create_dir(&d).map_err(TorError::Files)?;
                set_private(&d).map_err(TorError::Files)?;
                d
            }
        };
        let port = free_tcp_port().map_err(TorError::Files)?;
        let mut text = torrc(options.nodes, port, &data_dir);
        text.push_str(&format!(
            "__OwningControllerProcess {}\n",
            std::process::id()
        ));
        for line in &options.extra_config {
            text.push_str(line);
            text.push('\n');
        }
        let torrc_path = temp.path().join("torrc");
        std::fs::write(&torrc_path, text).map_err(TorError::Files)?;
        let binary = options.launched_binary();
        let mut child = Command::new(&binary)
            .arg("-f")
            .arg(&torrc_path)
            .arg("--defaults-torrc")
            .arg(temp.path().join("no-defaults"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TorError::Spawn { binary, source })?;
        let Some(stdout) = child.stdout.take() else {
            return Err(TorError::Exited("no stdout".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let mut tail: Vec<String> = Vec::new();
        let boot = async {
            for _ in 0..MAX_BOOT_LINES {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        tracing::debug!(target: "connector::tor", "{line}");
                        let done = line.contains("Bootstrapped 100%");
                        if tail.len() == TAIL_LINES {
                            tail.remove(0);
                        }
                        tail.push(line);
                        if done {
                            return true;
                        }
                    }
                    Ok(None) | Err(_) => return false,
                }
            }
            false
        };
        let booted = tokio::time::timeout(options.bootstrap_timeout, boot).await;
        match booted {
            Ok(true) => {}
            Ok(false) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(TorError::Exited(tail.join("\n")));
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(TorError::Timeout {
                    timeout: options.bootstrap_timeout,
                    tail: tail.join("\n"),
                });
            }
        }
        let socks = SocketAddr::from(([127, 0, 0, 1], port));
        if !port_open(socks).await {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(TorError::NoSocks(socks));
        }
        // Keep reading tor's log so it never blocks on a full pipe; the
        // task ends when tor exits.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "connector::tor", "{line}");
            }
        });
        Ok(TorProcess {
            child,
            socks,
            _temp: Some(temp),
        })
    }

    /// tor's SOCKS port.
    pub fn socks_addr(&self) -> SocketAddr {
        self.socks
    }

    /// tor's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills tor by PID and waits for it (at most 5 s).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Whether `addr` accepts a TCP connection within 5 s (polled).
async fn port_open(addr: SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[cfg(unix)]
fn set_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn set_private(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// A TCP port free on 127.0.0.1 at the time of the call.
fn free_tcp_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        let any = torrc(TorNodes::Any, 9999, Path::new("/d"));
        assert!(any.contains("SocksPort 127.0.0.1:9999 IsolateSOCKSAuth\n"));
        assert!(any.contains("DataDirectory /d\n"));
        assert!(!any.contains("ExitNodes"));
        assert!(!any.contains("StrictNodes"));
        let eu = torrc(TorNodes::Europe, 9999, Path::new("/d"));
        let set = "{dk},{se},{no},{fi},{de},{fr},{be},{nl},{pl},{cz},{lu},{lv},{ee},{ch},{gb}";
        for key in ["EntryNodes", "MiddleNodes", "ExitNodes"] {
            assert!(eu.contains(&format!("{key} {set}\n")), "{eu}");
        }
        assert!(eu.contains("StrictNodes 1\n"));
        assert!(eu.contains("GeoIPFile /usr/share/tor/geoip\n"));
        let sc = torrc(TorNodes::Scandinavia, 1, Path::new("/d"));
        assert!(sc.contains("ExitNodes {dk},{se},{no},{fi}\n"));
        assert_eq!("europe".parse::<TorNodes>().unwrap(), TorNodes::Europe);
        assert!("asia".parse::<TorNodes>().is_err());
    }
}

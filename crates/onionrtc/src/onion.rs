//! `serve --onion`: the site and the relay's TURN over TCP/TLS as one v3
//! onion service, published by a C tor that `serve` launches (the launcher
//! of `connect --via tor --tor-binary`, [`connector::tor::TorProcess`]).
//!
//! ```text
//! DATA_DIR/onion-service/  (0700; tor's HiddenServiceDir: hs_ed25519_*_key, hostname; 0600)
//! DATA_DIR/tor/            (0700; tor's DataDirectory)
//! torrc: HiddenServicePort 80 → web front, PORT → TURN TCP/TLS front (the relay's own ports)
//!        HiddenServiceExportCircuitID haproxy
//! fronts (signal::onion): 127.0.0.1:EPHEMERAL, PROXY header → per-circuit identity → listener
//! ```
//!
//! Design decisions:
//! - C tor, not arti, publishes: arti's onion-service support is marked
//!   experimental by its authors (no `HiddenServiceExportCircuitID`
//!   equivalent, key storage format still changing), while C tor's is what
//!   the onion services of the Tor network run. Callers may use either.
//! - One service, one address, several virtual ports: web on 80 (plain
//!   HTTP: the onion service itself authenticates the site and encrypts end
//!   to end), TURN on the relay's own TCP and TLS ports.
//! - The keys live in the data directory, so the address survives restarts
//!   and backups of the data directory carry it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use connector::tor::{TorOptions, TorProcess};
use signal::onion::Front;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The HiddenServiceDir's name in the data directory.
pub const SERVICE_DIR: &str = "onion-service";
/// tor's DataDirectory's name in the data directory.
pub const TOR_DIR: &str = "tor";
/// The onion service's virtual port of the web site.
pub const WEB_PORT: u16 = 80;
/// Connections through the fronts at once (all fronts together).
pub const MAX_FRONT_CONNECTIONS: usize = 4096;
/// How long tor may take to bootstrap.
const BOOTSTRAP: Duration = Duration::from_secs(180);

/// `[serve] onion` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnionSettings {
    /// The tor to launch (`None`: `tor` from PATH).
    pub tor_binary: Option<PathBuf>,
    /// A file of torrc lines to add.
    pub extra_config: Option<PathBuf>,
}

/// What the onion service publishes: a name for metrics, the virtual port,
/// the listener connections go to.
#[derive(Debug, Clone)]
pub struct Target {
    /// `web`, `turn_tcp`, `turn_tls`.
    pub name: String,
    /// The onion service's port.
    pub virtual_port: u16,
    /// The listener of this process.
    pub listener: SocketAddr,
}

/// A published onion service: tor (stopped by PID on [`OnionService::stop`]
/// or drop) and the fronts.
#[derive(Debug)]
pub struct OnionService {
    tor: TorProcess,
    hostname: String,
    fronts: Vec<Front>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ports: Vec<(String, u16)>,
}

impl OnionService {
    /// Opens the fronts, launches tor and waits until it has bootstrapped
    /// (publishing the descriptor follows within seconds).
    pub async fn start(
        settings: &OnionSettings,
        data_dir: &Path,
        targets: &[Target],
    ) -> anyhow::Result<OnionService> {
        let service_dir = data_dir.join(SERVICE_DIR);
        make_private_dir(&service_dir)?;
        let cap = Arc::new(Semaphore::new(MAX_FRONT_CONNECTIONS));
        let mut fronts = Vec::new();
        let mut tasks = Vec::new();
        let mut lines = vec![
            format!("HiddenServiceDir {}", service_dir.display()),
            "HiddenServiceVersion 3".to_owned(),
            "HiddenServiceExportCircuitID haproxy".to_owned(),
        ];
        for t in targets {
            let front = Front::new(&t.name, t.listener)
                .with_context(|| format!("onion service for {}", t.name))?;
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .context("cannot open a loopback listener for tor")?;
            let at = l.local_addr()?;
            lines.push(format!("HiddenServicePort {} {at}", t.virtual_port));
            fronts.push(front.clone());
            tasks.push(tokio::spawn(front.run(l, cap.clone())));
        }
        if let Some(file) = &settings.extra_config {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read tor_extra_config {}", file.display()))?;
            lines.extend(text.lines().map(str::to_owned));
        }
        let options = TorOptions {
            binary: settings.tor_binary.clone(),
            data_dir: Some(data_dir.join(TOR_DIR)),
            extra_config: lines,
            bootstrap_timeout: BOOTSTRAP,
            ..TorOptions::default()
        };
        let tor = TorProcess::launch(&options)
            .await
            .context("cannot start tor for the onion service")?;
        // tor wrote its keys and hostname before bootstrapping.
        let hostname = std::fs::read_to_string(service_dir.join("hostname"))
            .context("tor wrote no onion hostname")?
            .trim()
            .to_owned();
        if !valid_onion(&hostname) {
            anyhow::bail!("tor wrote an unexpected onion hostname {hostname:?}");
        }
        restrict_key_files(&service_dir)?;
        Ok(OnionService {
            tor,
            hostname,
            fronts,
            tasks,
            ports: targets
                .iter()
                .map(|t| (t.name.clone(), t.virtual_port))
                .collect(),
        })
    }

    /// The service's address, `NAME.onion`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The fronts (for `/metrics`).
    pub fn fronts(&self) -> &[Front] {
        &self.fronts
    }

    /// (target name, virtual port) of each published port.
    pub fn ports(&self) -> &[(String, u16)] {
        &self.ports
    }

    /// tor's PID while it runs.
    pub fn tor_pid(&self) -> Option<u32> {
        self.tor.pid()
    }

    /// Stops tor by PID (waiting at most 5 s) and the fronts.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.tor.stop().await;
    }
}

/// `[a-z2-7]{56}.onion` (a v3 address).
pub fn valid_onion(h: &str) -> bool {
    h.strip_suffix(".onion").is_some_and(|n| {
        n.len() == 56
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    Ok(())
}

/// Makes every file tor keeps in the service directory 0600 (tor creates
/// them so; this also repairs a directory restored from a backup).
fn restrict_key_files(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for e in entries.flatten() {
            let path = e.path();
            if path.is_file() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot make {} private", path.display()))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onion_names() {
        let ok = format!("{}.onion", "a".repeat(56));
        assert!(valid_onion(&ok));
        assert!(!valid_onion(&format!("{}.onion", "a".repeat(16))));
        assert!(!valid_onion(&format!("{}.onion", "A".repeat(56))));
        assert!(!valid_onion(&format!("{}.onion", "1".repeat(56))));
        assert!(!valid_onion(&"a".repeat(56)));
    }
}

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
//! control port: 127.0.0.1:auto, cookie auth (DATA_DIR/tor/control_auth_cookie), used only to
//!        wait for `650 HS_DESC UPLOADED` before serve prints its URLs
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
/// How long, after bootstrapping, tor may take to publish the descriptor.
const PUBLISH: Duration = Duration::from_secs(120);
/// Once one HSDir has the descriptor, how long to wait at most for the
/// other uploads of the same round to finish.
const PUBLISH_ROUND: Duration = Duration::from_secs(10);
/// Where tor writes its control port (`ControlPortWriteToFile`), in its
/// DataDirectory.
const CONTROL_PORT_FILE: &str = "control-port";
/// tor's control cookie (`CookieAuthFile`), in its DataDirectory.
const COOKIE_FILE: &str = "control_auth_cookie";
/// The length of tor's control cookie.
const COOKIE_LEN: usize = 32;
/// A control-port line longer than this is an error (tor's are short).
const MAX_CONTROL_LINE: u64 = 16 * 1024;
/// Control-port lines read while waiting for the upload, at most.
const MAX_CONTROL_LINES: usize = 100_000;

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
    /// Opens the fronts, launches tor, waits until it has bootstrapped and
    /// until an HSDir has accepted the service's descriptor (seen on tor's
    /// control port), so that the address works when `serve` prints it.
    /// A descriptor not published within [`PUBLISH`] is a warning, not an
    /// error (the public listeners work without it).
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
        let tor_dir = data_dir.join(TOR_DIR);
        make_private_dir(&tor_dir)?;
        let port_file = tor_dir.join(CONTROL_PORT_FILE);
        let cookie_file = tor_dir.join(COOKIE_FILE);
        // Files of an earlier run name a closed port (or another's) and an
        // old cookie: tor writes both anew, in no fixed order.
        let _ = std::fs::remove_file(&port_file);
        let _ = std::fs::remove_file(&cookie_file);
        lines.extend([
            "ControlPort 127.0.0.1:auto".to_owned(),
            format!("ControlPortWriteToFile {}", port_file.display()),
            "CookieAuthentication 1".to_owned(),
            format!("CookieAuthFile {}", cookie_file.display()),
        ]);
        let options = TorOptions {
            binary: settings.tor_binary.clone(),
            data_dir: Some(tor_dir),
            extra_config: lines,
            bootstrap_timeout: BOOTSTRAP,
            ..TorOptions::default()
        };
        tracing::info!(
            "onion service: starting tor and publishing the service; this usually takes under a \
             minute (at most {} s to connect to Tor, then {} s to publish)",
            BOOTSTRAP.as_secs(),
            PUBLISH.as_secs()
        );
        // Subscribed before tor bootstraps, so no upload event is missed.
        let published = tokio::spawn(tokio::time::timeout(
            BOOTSTRAP + PUBLISH,
            wait_published(port_file, cookie_file),
        ));
        let tor = match TorProcess::launch(&options).await {
            Ok(t) => t,
            Err(e) => {
                published.abort();
                return Err(anyhow::Error::new(e).context("cannot start tor for the onion service"));
            }
        };
        // tor wrote its keys and hostname before bootstrapping.
        let hostname = std::fs::read_to_string(service_dir.join("hostname"))
            .context("tor wrote no onion hostname")?
            .trim()
            .to_owned();
        if !valid_onion(&hostname) {
            anyhow::bail!("tor wrote an unexpected onion hostname {hostname:?}");
        }
        restrict_key_files(&service_dir)?;
        let waited = std::time::Instant::now();
        tracing::info!(
            "onion service {hostname}: tor is connected; waiting for its descriptor to be \
             published (at most {} s)",
            PUBLISH.as_secs()
        );
        let mut published = published;
        let outcome = match tokio::time::timeout(PUBLISH, &mut published).await {
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(_))) | Err(_) => Err(ControlError::Timeout),
            Ok(Err(e)) => Err(ControlError::Protocol(format!(
                "the waiting task failed: {e}"
            ))),
        };
        published.abort();
        match outcome {
            Ok(n) => tracing::info!(
                "onion service {hostname}: descriptor published ({n} HSDir(s) accepted it, \
                 {:.1} s after tor connected)",
                waited.elapsed().as_secs_f64()
            ),
            Err(e) => tracing::warn!(
                "onion service {hostname}: its descriptor is not known to be published ({e}); \
                 onion callers may not reach it until tor publishes it"
            ),
        }
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

/// Why waiting for the descriptor upload ended without one.
#[derive(Debug)]
enum ControlError {
    Io(std::io::Error),
    Protocol(String),
    Timeout,
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::Io(e) => write!(f, "tor's control port: {e}"),
            ControlError::Protocol(a) => write!(f, "tor's control port answered {a:?}"),
            ControlError::Timeout => write!(f, "no upload within the time limit"),
        }
    }
}

impl From<std::io::Error> for ControlError {
    fn from(e: std::io::Error) -> Self {
        ControlError::Io(e)
    }
}

/// Waits for tor's control port (tor writes `PORT=127.0.0.1:N` to
/// `port_file` when it opens it, early in its start), authenticates with
/// the cookie and waits for the first round of descriptor uploads; the
/// number of HSDirs that accepted it.
async fn wait_published(port_file: PathBuf, cookie_file: PathBuf) -> Result<usize, ControlError> {
    let (addr, cookie) = loop {
        let text = std::fs::read_to_string(&port_file).unwrap_or_default();
        let addr = text
            .trim()
            .strip_prefix("PORT=")
            .and_then(|a| a.parse::<SocketAddr>().ok());
        // tor's cookie is 32 bytes; a shorter file is still being written.
        let cookie = std::fs::read(&cookie_file)
            .ok()
            .filter(|c| c.len() == COOKIE_LEN);
        if let (Some(a), Some(c)) = (addr, cookie) {
            break (a, c);
        }
        // Bounded by the caller's timeout.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stream = tokio::net::TcpStream::connect::<SocketAddr>(addr).await?;
    await_upload(stream, &cookie, PUBLISH_ROUND).await
}

/// The control-port dialogue: `AUTHENTICATE` with the cookie, `SETEVENTS
/// HS_DESC`, then `650 HS_DESC` events until at least one upload succeeded
/// (`UPLOADED`) and every upload begun (`UPLOAD`) has ended (`UPLOADED` or
/// `FAILED`), or `round` after the first success.
async fn await_upload<S>(stream: S, cookie: &[u8], round: Duration) -> Result<usize, ControlError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let (read, mut write) = tokio::io::split(stream);
    let mut read = tokio::io::BufReader::new(read);
    async fn line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<String, ControlError> {
        let mut buf = Vec::new();
        let n = r.take(MAX_CONTROL_LINE).read_until(b'\n', &mut buf).await?;
        if n == 0 {
            return Err(ControlError::Protocol("end of stream".into()));
        }
        if buf.last() != Some(&b'\n') {
            return Err(ControlError::Protocol("an overlong line".into()));
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
    }
    let hex: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
    for command in [
        format!("AUTHENTICATE {hex}"),
        "SETEVENTS HS_DESC".to_owned(),
    ] {
        write.write_all(format!("{command}\r\n").as_bytes()).await?;
        let answer = line(&mut read).await?;
        if answer != "250 OK" {
            return Err(ControlError::Protocol(answer));
        }
    }
    let (mut begun, mut ended, mut uploaded) = (0usize, 0usize, 0usize);
    let mut first_success: Option<tokio::time::Instant> = None;
    for _ in 0..MAX_CONTROL_LINES {
        let next = match first_success {
            Some(t) => match tokio::time::timeout_at(t + round, line(&mut read)).await {
                Ok(l) => l?,
                Err(_) => return Ok(uploaded),
            },
            None => line(&mut read).await?,
        };
        let mut words = next.split_whitespace();
        if words.next() != Some("650") || words.next() != Some("HS_DESC") {
            continue;
        }
        match words.next() {
            Some("UPLOAD") => begun += 1,
            Some("UPLOADED") => {
                ended += 1;
                uploaded += 1;
                first_success.get_or_insert_with(tokio::time::Instant::now);
            }
            Some("FAILED") => ended += 1,
            _ => {}
        }
        if uploaded > 0 && ended >= begun {
            return Ok(uploaded);
        }
    }
    Err(ControlError::Protocol("too many lines".into()))
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

    /// Plays tor's side of the control port on `peer`: checks the two
    /// commands, then sends `events` one by one, reporting after each
    /// whether the waiter has returned.
    async fn control_dialogue(events: &[&str], answer_auth: &str) -> (Vec<bool>, Option<String>) {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let (ours, peer) = tokio::io::duplex(4096);
        let waiter = tokio::spawn(await_upload(ours, &[0xab, 0x01], Duration::from_secs(30)));
        let (r, mut w) = tokio::io::split(peer);
        let mut r = tokio::io::BufReader::new(r);
        let mut l = String::new();
        r.read_line(&mut l).await.unwrap();
        assert_eq!(l, "AUTHENTICATE ab01\r\n");
        w.write_all(answer_auth.as_bytes()).await.unwrap();
        if answer_auth == "250 OK\r\n" {
            l.clear();
            r.read_line(&mut l).await.unwrap();
            assert_eq!(l, "SETEVENTS HS_DESC\r\n");
            w.write_all(b"250 OK\r\n").await.unwrap();
        }
        let mut done = Vec::new();
        for e in events {
            // Fails once the waiter has returned and closed its side.
            let _ = w.write_all(format!("{e}\r\n").as_bytes()).await;
            // Let the waiter read it (it returns at once if it is done).
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            done.push(waiter.is_finished());
        }
        drop((r, w));
        let end = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        (done, end.err().map(|e| e.to_string()))
    }

    const HSDIR: &str = "$AAAA~relay1 ZZZZ HSDIR_INDEX=00";

    #[tokio::test]
    async fn publication_waits_for_an_accepted_upload() {
        let name = "a".repeat(56);
        let events = [
            format!("650 HS_DESC UPLOAD {name} UNKNOWN {HSDIR}"),
            format!("650 HS_DESC UPLOAD {name} UNKNOWN {HSDIR}"),
            "650 CIRC 5 BUILT".to_owned(),
            format!("650 HS_DESC FAILED {name} UNKNOWN $AAAA REASON=UPLOAD_REJECTED"),
            format!("650 HS_DESC UPLOADED {name} UNKNOWN $BBBB"),
            format!("650 HS_DESC UPLOADED {name} UNKNOWN $CCCC"),
        ];
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        let (done, err) = control_dialogue(&refs, "250 OK\r\n").await;
        // Not after the UPLOADs, another event or a failure; done when an
        // HSDir accepted it and both begun uploads have ended.
        assert_eq!(done, [false, false, false, false, true, true], "{err:?}");
        assert_eq!(err, None);
    }

    #[tokio::test]
    async fn publication_is_not_claimed_without_an_upload() {
        let name = "a".repeat(56);
        let events = [
            format!("650 HS_DESC UPLOAD {name} UNKNOWN {HSDIR}"),
            format!("650 HS_DESC FAILED {name} UNKNOWN $AAAA REASON=UPLOAD_REJECTED"),
        ];
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        let (done, err) = control_dialogue(&refs, "250 OK\r\n").await;
        assert_eq!(done, [false, false]);
        // The stream ended without a success: an error, not a publication.
        assert!(err.unwrap().contains("end of stream"));
        // A refused cookie is an error too.
        let (_, err) = control_dialogue(&[], "515 Authentication failed\r\n").await;
        assert!(err.unwrap().contains("515"));
    }

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

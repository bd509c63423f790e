//! Embedded Tor for OnionRTC: [`arti-client`](arti_client) behind the
//! small interface the connector's route dialers use — bootstrap once
//! ([`EmbeddedTor::bootstrap`]), then open one isolated stream per dial
//! ([`EmbeddedTor::connect`]).
//!
//! ```text
//! EmbeddedTor::bootstrap(options, progress)
//!   ├─ DIR (0700, checked)  ├─ DIR/state  (guards, …)
//!   │                       └─ DIR/cache  (consensus, microdescriptors)
//!   ├─ config: defaults ← options.extra_config (arti TOML, e.g. a private
//!   │          network's authorities) ← --bridge lines + transport
//!   └─ bootstrap under options.bootstrap_timeout, progress reported
//!      as it changes; a stuck bootstrap names arti's reason and bridges
//! EmbeddedTor::connect(host, port): its own isolation group = its own
//!   circuit (as IsolateSOCKSAuth with fresh credentials gives a C tor);
//!   the host name goes to the exit, never to a local resolver
//! ```
//!
//! This crate holds the heavy dependency (~330 crates); only binaries that
//! want embedded Tor link it (`connector`'s `arti` feature, on by default
//! in `onionrtc`).

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::{StreamPrefs, TorClient};
use futures_util::StreamExt as _;
use tor_rtcompat::PreferredRuntime;

pub use arti_client::DataStream;

/// How long bootstrapping may take by default.
pub const DEFAULT_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(180);

/// Where bridge lines come from, for error messages.
pub const BRIDGES_URL: &str = "https://bridges.torproject.org/";

/// How the embedded Tor client is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Its directory: `state/` and `cache/` inside, all 0700. Kept between
    /// runs, so later starts reuse the directory (seconds, not a minute).
    pub dir: PathBuf,
    /// arti configuration (TOML) applied over the defaults, e.g. a private
    /// network's `[tor_network]` authorities and fallback caches.
    pub extra_config: Option<String>,
    /// Bridge lines (`obfs4 IP:PORT FINGERPRINT cert=… iat-mode=0`, or
    /// `IP:PORT FINGERPRINT` for a plain bridge); none = direct to the
    /// Tor network.
    pub bridges: Vec<String>,
    /// The pluggable transport binary for bridges with a transport
    /// (`obfs4proxy` or `lyrebird`, looked up in `PATH` when not given).
    pub transport_binary: Option<PathBuf>,
    /// Limit for bootstrapping.
    pub bootstrap_timeout: Duration,
}

impl EmbeddedOptions {
    /// Options with `dir` and defaults for the rest.
    pub fn new(dir: PathBuf) -> EmbeddedOptions {
        EmbeddedOptions {
            dir,
            extra_config: None,
            bridges: Vec::new(),
            transport_binary: None,
            bootstrap_timeout: DEFAULT_BOOTSTRAP_TIMEOUT,
        }
    }
}

/// Why embedded Tor could not start or connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory could not be made or is open to others.
    #[error("Tor's directory {}: {reason}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The configuration (extra config, bridge lines) is invalid.
    #[error("invalid Tor configuration: {0}")]
    Config(String),
    /// Bridge lines need a pluggable transport that is not installed.
    #[error(
        "the bridge lines use the {transport} transport, but no {transport} client was found: \
         install obfs4proxy (Debian: apt install obfs4proxy) or lyrebird, or name its binary \
         with --bridge-transport PATH"
    )]
    NoTransport {
        /// The transport (e.g. obfs4).
        transport: String,
    },
    /// arti refused to start (e.g. its state is locked or unreadable).
    #[error("cannot start Tor: {0}")]
    Start(String),
    /// Bootstrapping failed or was not done in time.
    #[error(
        "Tor could not bootstrap within {timeout:?} (last status: {status}). If this network \
         blocks Tor, use a bridge: get obfs4 bridge lines from {BRIDGES_URL} (or by mail from \
         bridges@torproject.org) and pass each with --bridge 'obfs4 IP:PORT FINGERPRINT cert=… \
         iat-mode=0' (needs obfs4proxy installed){detail}"
    )]
    Bootstrap {
        /// The limit.
        timeout: Duration,
        /// arti's last bootstrap status (with its reason when stuck).
        status: String,
        /// arti's error, when it gave up before the limit.
        detail: String,
    },
    /// A stream could not be opened.
    #[error("Tor could not connect to {target}: {reason}")]
    Connect {
        /// `HOST:PORT`.
        target: String,
        /// arti's error.
        reason: String,
    },
}

/// A bootstrap progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u32,
    /// arti's description (with the reason when it is stuck).
    pub text: String,
    /// Whether arti says it is stuck.
    pub stuck: bool,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A bootstrapped embedded Tor client. Cheap to clone (shared).
#[derive(Clone)]
pub struct EmbeddedTor {
    client: Arc<TorClient<PreferredRuntime>>,
    bootstrap_time: Duration,
}

impl fmt::Debug for EmbeddedTor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedTor")
            .field("bootstrap_time", &self.bootstrap_time)
            .finish_non_exhaustive()
    }
}

impl PartialEq for EmbeddedTor {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.client, &other.client)
    }
}
impl Eq for EmbeddedTor {}

impl EmbeddedTor {
    /// Prepares the directory, builds the configuration and bootstraps,
    /// calling `progress` whenever the percentage or the text changes.
    /// Must run inside a tokio runtime.
    pub async fn bootstrap(
        options: &EmbeddedOptions,
        mut progress: impl FnMut(&Progress) + Send,
    ) -> Result<EmbeddedTor, Error> {
        let started = Instant::now();
        let config = build_config(options)?;
        // Fails harmlessly when a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = PreferredRuntime::current().map_err(|e| Error::Start(e.to_string()))?;
        let client = TorClient::with_runtime(runtime)
            .config(config)
            .create_unbootstrapped()
            .map_err(|e| Error::Start(chain(&e)))?;
        let mut events = client.bootstrap_events();
        let mut last: Option<Progress> = None;
        let booting = Arc::clone(&client);
        let boot = booting.bootstrap();
        tokio::pin!(boot);
        let deadline = tokio::time::sleep(options.bootstrap_timeout);
        tokio::pin!(deadline);
        let outcome = loop {
            tokio::select! {
                r = &mut boot => break r.map_err(|e| chain(&e)),
                Some(status) = events.next() => {
                    let p = Progress {
                        percent: (status.as_frac().clamp(0.0, 1.0) * 100.0).round() as u32,
                        text: status.to_string(),
                        stuck: status.blocked().is_some(),
                    };
                    if last.as_ref() != Some(&p) {
                        progress(&p);
                        last = Some(p);
                    }
                }
                () = &mut deadline => break Err(String::new()),
            }
        };
        let status = last.map(|p| p.text).unwrap_or_else(|| "none".into());
        match outcome {
            Ok(()) => Ok(EmbeddedTor {
                client,
                bootstrap_time: started.elapsed(),
            }),
            Err(detail) => Err(Error::Bootstrap {
                timeout: options.bootstrap_timeout,
                status,
                detail: if detail.is_empty() {
                    String::new()
                } else {
                    format!(". arti: {detail}")
                },
            }),
        }
    }

    /// How long [`EmbeddedTor::bootstrap`] took.
    pub fn bootstrap_time(&self) -> Duration {
        self.bootstrap_time
    }

    /// A stream to `host:port` on a circuit of its own (a new isolation
    /// group per call). `host` is resolved by the exit.
    pub async fn connect(&self, host: &str, port: u16) -> Result<DataStream, Error> {
        let mut prefs = StreamPrefs::new();
        prefs.new_isolation_group();
        self.client
            .connect_with_prefs((host, port), &prefs)
            .await
            .map_err(|e| Error::Connect {
                target: authority(host, port),
                reason: chain(&e),
            })
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An error with its sources, in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    for _ in 0..8 {
        let Some(inner) = next else { break };
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        next = inner.source();
    }
    s
}

/// Creates `dir` (and parents) with mode 0700 when missing; refuses an
/// existing directory that others can read or write.
pub fn prepare_dir(dir: &Path) -> Result<(), Error> {
    let fail = |reason: String| Error::Dir {
        dir: dir.to_owned(),
        reason,
    };
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            b.mode(0o700);
        }
        b.create(dir).map_err(|e| fail(e.to_string()))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "mode {mode:03o} lets other users read Tor's state; run chmod 700 {}",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The first word of a bridge line when it names a transport (`obfs4`),
/// `None` for a plain `IP:PORT FINGERPRINT` bridge.
pub fn bridge_transport(line: &str) -> Option<&str> {
    let first = line.split_whitespace().next()?;
    let plain = first.contains(':') || first.starts_with('[') || first == "Bridge";
    (!plain).then_some(first)
}

/// A binary named `name` in `PATH`.
fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The arti configuration: defaults, then `extra_config`, then bridges,
/// then the state and cache directories inside `options.dir` (prepared
/// here).
pub fn build_config(options: &EmbeddedOptions) -> Result<arti_client::TorClientConfig, Error> {
    let mut table: toml::Table = match &options.extra_config {
        Some(text) => toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?,
        None => toml::Table::new(),
    };
    if !options.bridges.is_empty() {
        let mut transports = Vec::new();
        for line in &options.bridges {
            if let Some(t) = bridge_transport(line) {
                if !transports.iter().any(|x: &String| x == t) {
                    transports.push(t.to_owned());
                }
            }
        }
        let mut bridges = toml::Table::new();
        bridges.insert("enabled".into(), toml::Value::Boolean(true));
        bridges.insert(
            "bridges".into(),
            toml::Value::Array(
                options
                    .bridges
                    .iter()
                    .map(|l| toml::Value::String(l.trim().to_owned()))
                    .collect(),
            ),
        );
        if !transports.is_empty() {
            let binary = options
                .transport_binary
                .clone()
                .or_else(|| in_path("obfs4proxy"))
                .or_else(|| in_path("lyrebird"))
                .ok_or_else(|| Error::NoTransport {
                    transport: transports.join(", "),
                })?;
            let mut t = toml::Table::new();
            t.insert(
                "protocols".into(),
                toml::Value::Array(transports.into_iter().map(toml::Value::String).collect()),
            );
            t.insert(
                "path".into(),
                toml::Value::String(binary.to_string_lossy().into_owned()),
            );
            t.insert("run_on_startup".into(), toml::Value::Boolean(true));
            bridges.insert(
                "transports".into(),
                toml::Value::Array(vec![toml::Value::Table(t)]),
            );
        }
        table.insert("bridges".into(), toml::Value::Table(bridges));
    }
    let mut builder: TorClientConfigBuilder = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
    prepare_dir(&options.dir)?;
    let state = options.dir.join("state");
    let cache = options.dir.join("cache");
    prepare_dir(&state)?;
    prepare_dir(&cache)?;
    builder
        .storage()
        .state_dir(CfgPath::new_literal(state))
        .cache_dir(CfgPath::new_literal(cache));
    builder.build().map_err(|e| Error::Config(chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> EmbeddedOptions {
        EmbeddedOptions::new(dir.join("tor"))
    }

    #[test]
    fn directories_are_private() {
        let t = tempfile::tempdir().unwrap();
        let o = options(t.path());
        build_config(&o).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        for d in ["tor", "tor/state", "tor/cache"] {
            let mode = std::fs::metadata(t.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
        // Open to others: refused, with the fix in the message.
        std::fs::set_permissions(t.path().join("tor"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let e = build_config(&o).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
    }

    #[test]
    fn extra_config_is_applied_and_checked() {
        let t = tempfile::tempdir().unwrap();
        let mut o = options(t.path());
        o.extra_config = Some("[address_filter]\nallow_local_addrs = true\n".into());
        assert_ne!(
            build_config(&o).unwrap(),
            build_config(&options(t.path())).unwrap()
        );
        o.extra_config = Some("[address_filter]\nno_such_key = [".into());
        assert!(matches!(build_config(&o), Err(Error::Config(_))));
    }

    #[test]
    fn bridges() {
        assert_eq!(
            bridge_transport(
                "obfs4 192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567 cert=x iat-mode=0"
            ),
            Some("obfs4")
        );
        assert_eq!(
            bridge_transport("192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567"),
            None
        );
        let t = tempfile::tempdir().unwrap();
        let mut o = options(t.path());
        // A plain bridge needs no transport.
        o.bridges = vec!["192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567".into()];
        build_config(&o).unwrap();
        // obfs4 with a named transport binary.
        o.bridges = vec![
            "obfs4 192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567 cert=AAAA iat-mode=0"
                .into(),
        ];
        o.transport_binary = Some("/usr/bin/obfs4proxy".into());
        build_config(&o).unwrap();
        // A malformed line is a configuration error, not a panic.
        o.bridges = vec!["obfs4 not-an-address".into()];
        assert!(matches!(build_config(&o), Err(Error::Config(_))));
    }

    /// A network whose only directory cache is a closed loopback port:
    /// bootstrap gives up at the limit with an error that names arti's
    /// last status and suggests bridges (no traffic leaves loopback).
    #[test]
    fn unreachable_network_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let mut o = options(t.path());
        let dead = "127.0.0.1:9";
        o.extra_config = Some(format!(
            "[tor_network]\n\
             fallback_caches = [{{ rsa_identity = \"{}\", ed_identity = \"{}\", orports = [\"{dead}\"] }}]\n\
             [tor_network.authorities]\n\
             v3idents = [\"{}\"]\n\
             uploads = [[\"{dead}\"]]\n\
             downloads = [[\"{dead}\"]]\n\
             votes = [[\"{dead}\"]]\n",
            "A".repeat(40),
            "A".repeat(43),
            "C".repeat(40),
        ));
        o.bootstrap_timeout = Duration::from_secs(3);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut seen = Vec::new();
        let r = rt.block_on(EmbeddedTor::bootstrap(&o, |p| seen.push(p.clone())));
        let e = r.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::Bootstrap { .. }), "{text}");
        assert!(
            text.contains("--bridge") && text.contains(BRIDGES_URL),
            "{text}"
        );
        assert!(text.contains("last status"), "{text}");
        assert!(seen.iter().all(|p| p.percent < 100), "{seen:?}");
    }
}

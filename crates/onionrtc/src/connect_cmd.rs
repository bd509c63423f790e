//! `onionrtc connect`: the local connector (crate `connector`) from command
//! line flags, run until SIGINT or SIGTERM.
//!
//! With a site URL (`onionrtc connect https://call.example.org`), the
//! route is opened first, the site's `/.well-known/onionrtc.json` fetched
//! through it (`connector::wellknown`: https:// with a valid certificate
//! or an onion address, never plain http:// to another host), and the
//! relay, its TLS pins and the web site come from it unless a flag says
//! otherwise; then the connector starts on that same route.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use connector::wellknown::{self, Document};
use connector::{ConnectorConfig, Endpoint, RelayTrust, TorNodes, Via};

/// Flags of `onionrtc connect`. The names are a contract with tests and
/// docs/connector.md.
#[derive(Args)]
pub struct ConnectFlags {
    /// The site to call through: https://HOST[:PORT] (its certificate must
    /// be valid: built-in roots or --ca) or http://ADDRESS.onion. Its
    /// /.well-known/onionrtc.json, fetched through the same route, gives
    /// the relay, the relay's TLS pins and the onion addresses; a path and
    /// query (e.g. /?room=NAME) are kept for the local URL printed.
    #[arg(value_name = "URL", required_unless_present = "relay")]
    pub url: Option<String>,

    /// The relay's TURN-over-TLS (tls://HOST:PORT) or TURN-over-TCP
    /// (tcp://HOST:PORT) listener, instead of the site's document's.
    /// tcp:// lets a Tor exit read TURN usernames and peer addresses.
    #[arg(long, value_name = "URL")]
    pub relay: Option<String>,

    /// The signaling site to proxy on --web-listen: https://HOST[:PORT] or
    /// http://HOST[:PORT] (default with URL: that site, or its onion
    /// address through Tor).
    #[arg(long, value_name = "URL")]
    pub web: Option<String>,

    /// CA certificates (PEM) to trust for the site's HTTPS besides the
    /// built-in roots (a private CA).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Once ready, start a browser (chromium or firefox from PATH, or
    /// --browser) on the local URL with a fresh temporary profile, removed
    /// when it closes; the connector stops with it.
    #[arg(long)]
    pub open: bool,

    /// With --open: the browser to start (Chromium-like or Firefox-like,
    /// told apart by its name).
    #[arg(long, value_name = "PATH", requires = "open")]
    pub browser: Option<PathBuf>,

    /// How upstream connections leave this machine: tor (default: embedded
    /// Tor; with --tor-binary, launch tor), socks5://HOST:PORT (e.g. a
    /// tor's SocksPort; host names are resolved by the proxy) or direct
    /// (NOT anonymous: the relay and the site see your address).
    #[arg(long, value_name = "MODE", default_value = "tor")]
    pub via: String,

    /// Loopback address for TURN clients, UDP and TCP.
    #[arg(long, value_name = "ADDR", default_value = connector::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Loopback address of the web proxy (with --web).
    #[arg(long, value_name = "ADDR", default_value = connector::config::DEFAULT_WEB_LISTEN)]
    pub web_listen: SocketAddr,

    /// Trust only the CA certificates in FILE (PEM) for the relay (and
    /// also for the --web site, besides the built-in roots).
    #[arg(long, value_name = "FILE", conflicts_with = "relay_spki")]
    pub relay_ca: Option<PathBuf>,

    /// Accept the relay's certificate only if the SHA-256 of its
    /// SubjectPublicKeyInfo is BASE64 (as for Chromium's
    /// --ignore-certificate-errors-spki-list).
    #[arg(long, value_name = "BASE64-SHA256")]
    pub relay_spki: Option<String>,

    /// How Tor runs with --via tor.
    #[command(flatten)]
    pub tor: TorFlags,

    /// Close a TURN flow after this many seconds without a datagram from
    /// its client.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub idle_timeout: u64,

    /// TURN flows at once (UDP 5-tuples plus TCP connections).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_flows: usize,

    /// TURN flows at once that have no authenticated allocation yet (a web
    /// page can make the browser send Allocates to the connector; these
    /// are capped here and closed after 20 s).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_pending_flows: usize,

    /// Race K upstreams (each its own Tor circuit) at every TURN flow's
    /// start and keep the one that answers first; 1 turns racing off.
    /// Default 3 through Tor or SOCKS, 1 with --via direct.
    #[arg(long, value_name = "K")]
    pub race: Option<usize>,
}

/// The flags of `--via tor` (`onionrtc connect` and `onionrtc call`):
/// embedded Tor (arti) unless --tor-binary names a tor to launch.
#[derive(Args, Debug)]
pub struct TorFlags {
    /// With --via tor and --tor-binary: the countries of entry, middle and
    /// exit relays (europe: DK SE NO FI DE FR BE NL PL CZ LU LV EE CH GB;
    /// scandinavia: DK SE NO FI), enforced with StrictNodes.
    #[arg(long, value_name = "PRESET", default_value = "any")]
    pub tor_nodes: String,

    /// With --via tor: launch this tor binary (e.g. `tor`) instead of the
    /// embedded Tor.
    #[arg(long, value_name = "PATH")]
    pub tor_binary: Option<PathBuf>,

    /// With --via tor: keep Tor's state in DIR (0700). Embedded Tor
    /// default: $XDG_DATA_HOME/onionrtc/tor (~/.local/share/onionrtc/tor),
    /// so later starts are fast; a launched tor: a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub tor_data_dir: Option<PathBuf>,

    /// With --via tor: more configuration — arti TOML for the embedded Tor,
    /// torrc lines for a launched tor.
    #[arg(long, value_name = "FILE")]
    pub tor_extra_config: Option<PathBuf>,

    /// With --via tor (embedded): reach Tor through this bridge, e.g.
    /// 'obfs4 IP:PORT FINGERPRINT cert=… iat-mode=0' from
    /// https://bridges.torproject.org (obfs4 needs obfs4proxy or lyrebird
    /// installed). Repeat for more bridges.
    #[arg(long = "bridge", value_name = "LINE")]
    pub bridges: Vec<String>,

    /// With --bridge: the pluggable-transport binary (default: obfs4proxy
    /// or lyrebird from PATH).
    #[arg(long, value_name = "PATH")]
    pub bridge_transport: Option<PathBuf>,
}

impl TorFlags {
    /// Puts these settings into `via` when it is `tor`; refuses tor
    /// settings with another `via`, and settings the chosen tor cannot
    /// honour.
    pub fn apply(&self, via: &mut Via) -> anyhow::Result<()> {
        let nodes: TorNodes = self.tor_nodes.parse()?;
        if let Via::Tor(options) = via {
            options.nodes = nodes;
            options.binary.clone_from(&self.tor_binary);
            options.data_dir.clone_from(&self.tor_data_dir);
            if options.data_dir.is_none() && options.embedded() {
                options.data_dir = default_tor_dir();
            }
            if let Some(file) = &self.tor_extra_config {
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("cannot read --tor-extra-config {}", file.display())
                })?;
                options.extra_config = text.lines().map(str::to_owned).collect();
            }
            options.bridges.clone_from(&self.bridges);
            options.bridge_transport.clone_from(&self.bridge_transport);
            options.check()?;
        } else if nodes != TorNodes::Any {
            anyhow::bail!("--tor-nodes needs --via tor");
        } else if !self.bridges.is_empty() {
            anyhow::bail!("--bridge needs --via tor");
        }
        Ok(())
    }
}

/// Embedded Tor's default directory: `$XDG_DATA_HOME/onionrtc/tor`, else
/// `$HOME/.local/share/onionrtc/tor`; `None` (a temporary directory)
/// without either.
fn default_tor_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?)
            .join(".local")
            .join("share"),
    };
    Some(base.join("onionrtc").join("tor"))
}

/// What `--via direct` prints first.
pub const NOT_ANONYMOUS: &str = "NOT ANONYMOUS: --via direct connects straight to the relay and \
     the site, which see your IP address. Leave out --via (or use --via tor) to go through Tor.";

/// The line printed before Tor starts.
pub fn starting_tor(options: &connector::TorOptions) -> String {
    if options.embedded() {
        format!(
            "starting embedded Tor in {} (the first bootstrap can take a minute)...",
            options.data_dir.as_deref().map_or_else(
                || "a temporary directory".into(),
                |d| d.display().to_string()
            )
        )
    } else {
        format!(
            "starting {} (bootstrapping can take a minute)...",
            options.launched_binary().display()
        )
    }
}

/// The site of `onionrtc connect URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Scheme, host and port.
    pub endpoint: Endpoint,
    /// The path and query to open locally (`/` when none).
    pub path: String,
}

impl Site {
    /// Parses `https://HOST[:PORT][/PATH][?QUERY]` (or http://…); refuses
    /// plain http:// to a host that is not an onion address.
    pub fn parse(url: &str) -> anyhow::Result<Site> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("invalid URL {url:?}: expected https://HOST[:PORT]"))?;
        let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(cut);
        let endpoint = Endpoint::parse_web(&format!("{scheme}://{authority}"))?;
        wellknown::check_site(&endpoint)?;
        let tail = tail.split('#').next().unwrap_or_default();
        let path = if tail.is_empty() {
            "/".to_owned()
        } else if tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_owned()
        };
        Ok(Site { endpoint, path })
    }
}

/// What `onionrtc connect` runs: the configuration from the flags, and
/// with a URL what the site's document must still fill in.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration; with a URL, its relay is a placeholder until the
    /// document is read (unless --relay was given).
    pub config: ConnectorConfig,
    /// The site of the URL.
    pub site: Option<Site>,
    relay_given: bool,
    web_given: bool,
    trust_given: bool,
    ca: Option<PathBuf>,
    open: Option<Option<PathBuf>>,
}

/// Builds the connector's configuration from the flags.
pub fn load(flags: &ConnectFlags) -> anyhow::Result<Loaded> {
    let site = flags.url.as_deref().map(Site::parse).transpose()?;
    let relay = match (&flags.relay, &site) {
        (Some(r), _) => Endpoint::parse_relay(r)?,
        // Replaced by the document's relay.
        (None, Some(s)) => s.endpoint.clone(),
        (None, None) => anyhow::bail!("give the site's URL (or --relay)"),
    };
    let mut config = ConnectorConfig::new(relay);
    config.web = flags.web.as_deref().map(Endpoint::parse_web).transpose()?;
    if config.web.is_none() {
        config.web = site.as_ref().map(|s| s.endpoint.clone());
    }
    config.via = Via::parse(&flags.via)?;
    flags.tor.apply(&mut config.via)?;
    let onion = site.as_ref().is_some_and(|s| s.endpoint.is_onion())
        || (flags.relay.is_some() && config.relay.is_onion());
    if onion && config.via == Via::Direct {
        anyhow::bail!(
            "a .onion address is reached only through Tor: leave out --via direct \
             (or use --via tor or --via socks5://HOST:PORT)"
        );
    }
    config.listen = flags.listen;
    config.web_listen = flags.web_listen;
    config.web_ca.clone_from(&flags.ca);
    config.relay_trust = match (&flags.relay_ca, &flags.relay_spki) {
        (Some(ca), _) => RelayTrust::CaFile(ca.clone()),
        (None, Some(pin)) => RelayTrust::parse_spki(pin)?,
        (None, None) => RelayTrust::WebPki,
    };
    if flags.relay.is_some() && !config.relay.tls && config.relay_trust != RelayTrust::WebPki {
        anyhow::bail!("--relay-ca and --relay-spki need a tls:// relay");
    }
    config.limits.idle_timeout = Duration::from_secs(flags.idle_timeout);
    config.limits.max_flows = flags.max_flows;
    config.limits.max_pending_flows = flags.max_pending_flows;
    config.circuits.race = flags.race;
    config.validate()?;
    Ok(Loaded {
        config,
        site,
        relay_given: flags.relay.is_some(),
        web_given: flags.web.is_some(),
        trust_given: flags.relay_ca.is_some() || flags.relay_spki.is_some(),
        ca: flags.ca.clone(),
        open: flags.open.then(|| flags.browser.clone()),
    })
}

/// Fills what the flags left open from the site's document: the relay
/// (an onion relay first through Tor), its TLS pins, and through Tor the
/// site's onion address. Returns what was taken, for the terminal.
fn apply_document(loaded: &mut Loaded, doc: &Document) -> anyhow::Result<Vec<String>> {
    let tor = matches!(loaded.config.via, Via::Tor(_));
    let mut notes = Vec::new();
    let config = &mut loaded.config;
    if !loaded.relay_given {
        config.relay = doc.relay(tor).context(
            "the site's document lists no TURN relay over TLS or TCP (turns: or \
             turn:…?transport=tcp); give --relay",
        )?;
        notes.push(format!("relay {}", config.relay));
    }
    if !loaded.trust_given && config.relay.tls {
        if !doc.pins.is_empty()
            && (!loaded.relay_given || doc.relay(tor) == Some(config.relay.clone()))
        {
            config.relay_trust = RelayTrust::SpkiPins(doc.pins.clone());
            notes.push(format!("relay TLS pinned to {} key(s)", doc.pins.len()));
        } else if let Some(ca) = &loaded.ca {
            config.relay_trust = RelayTrust::CaFile(ca.clone());
        }
    }
    if !loaded.web_given && tor {
        if let Some(onion) = doc.onion_web() {
            notes.push(format!("site {}", onion.origin()));
            config.web = Some(onion);
        }
    }
    config.validate()?;
    Ok(notes)
}

/// Runs the connector until SIGINT or SIGTERM (or, with --open, until the
/// browser closes). Prints the TURN URLs and, with a site, `Open
/// http://ADDR/PATH` once everything listens; the final counters go to
/// stderr.
pub fn run(loaded: Loaded) -> anyhow::Result<()> {
    let _ = crate::relay_cmd::init_tracing();
    if loaded.config.via == Via::Direct {
        eprintln!("{NOT_ANONYMOUS}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(loaded))
}

async fn serve(mut loaded: Loaded) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let started = Instant::now();
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let via = loaded.config.via.to_string();
    if let Via::Tor(options) = &loaded.config.via {
        eprintln!("{}", crate::connect_cmd::starting_tor(options));
    }
    let (route, tor) = connector::open_route(&loaded.config.via)
        .await
        .context("cannot start Tor")?;
    if let Some(site) = loaded.site.clone() {
        let dialer = connector::dial::Dialer::new(route.clone(), loaded.config.limits.dial_timeout);
        let tls = match site.endpoint.tls {
            true => Some(connector::tls::site_config(loaded.ca.as_deref())?),
            false => None,
        };
        let doc = match wellknown::fetch(&dialer, &site.endpoint, tls.as_ref()).await {
            Ok(d) => d,
            Err(e) if e.is_certificate() => {
                return Err(anyhow::Error::new(e).context(
                    "the site's certificate was refused (a private CA? give it with --ca)",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let notes = apply_document(&mut loaded, &doc)?;
        eprintln!(
            "{}{} via {via}: {}",
            site.endpoint.origin(),
            wellknown::PATH,
            notes.join(", ")
        );
    }
    for w in loaded.config.warnings() {
        eprintln!("warning: {w}");
    }
    let relay = loaded.config.relay.clone();
    let handle = connector::Connector::start_with_route(loaded.config, route, tor)
        .await
        .context("cannot start the connector")?;
    match handle.probe_relay().await {
        Ok(()) => eprintln!("relay {relay} reachable via {via}"),
        Err(e) if e.is_certificate() => {
            handle.shutdown().await;
            return Err(anyhow::Error::new(e).context("the relay's certificate was refused"));
        }
        Err(e) => eprintln!("warning: relay {relay} not reachable yet via {via}: {e}"),
    }
    let turn = handle.turn_addr();
    println!("TURN: turn:{turn}?transport=udp turn:{turn}?transport=tcp");
    let local = handle.web_addr().map(|web| {
        let path = loaded.site.as_ref().map_or("/", |s| s.path.as_str());
        format!("http://{web}{path}")
    });
    if let Some(url) = &local {
        println!("Open {url}");
        eprintln!("ready in {:.1} s", started.elapsed().as_secs_f64());
    }
    {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
    let mut browser = match (&loaded.open, &local) {
        (Some(choice), Some(url)) => match Browser::start(choice.as_deref(), url) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("warning: cannot start a browser: {e:#}; open {url} yourself");
                None
            }
        },
        _ => None,
    };
    let closed = async {
        match &mut browser {
            Some(b) => b.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        () = closed => eprintln!("the browser closed"),
    }
    if let Some(b) = browser {
        b.stop().await;
    }
    let stats = handle.stats();
    handle.shutdown().await;
    eprintln!("connector stopped: {stats}");
    Ok(())
}

/// A browser started by `--open`, with a fresh profile in a temporary
/// directory (never the user's own: it identifies them), killed by PID and
/// its profile removed on [`Browser::stop`].
struct Browser {
    child: tokio::process::Child,
    /// The browser's PID, also the id of its process group (kept: the
    /// child forgets it once it has exited).
    group: Option<i32>,
    profile: tempfile::TempDir,
}

/// A signal for the browser's process group.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

/// Sends `signal` to the process group `group` (the browser's PID, which
/// leads the group it was started in); nothing if it is gone.
fn signal_group(group: Option<i32>, signal: Signal) {
    #[cfg(unix)]
    if let Some(g) = group.filter(|&g| g > 1) {
        use nix::sys::signal::Signal as S;
        let s = match signal {
            Signal::Term => S::SIGTERM,
            Signal::Kill => S::SIGKILL,
        };
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(g), s);
    }
    #[cfg(not(unix))]
    let _ = (group, signal);
}

/// Browsers `--open` looks for on PATH, in this order.
const BROWSERS: [&str; 6] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "firefox",
    "firefox-esr",
    "librewolf",
];

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The arguments that give `binary` the fresh profile in `profile` and
/// open `url`: Firefox-like (by name) or Chromium-like.
fn browser_args(binary: &Path, profile: &Path, url: &str) -> Vec<std::ffi::OsString> {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if name.contains("firefox") || name.contains("librewolf") {
        args.extend([
            "-no-remote".into(),
            "-new-instance".into(),
            "-profile".into(),
        ]);
        args.push(profile.into());
    } else {
        let mut dir = std::ffi::OsString::from("--user-data-dir=");
        dir.push(profile);
        args.push(dir);
        args.extend([
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-sync".into(),
        ]);
    }
    args.push(url.into());
    args
}

impl Browser {
    fn start(binary: Option<&Path>, url: &str) -> anyhow::Result<Browser> {
        let binary = match binary {
            Some(b) => b.to_owned(),
            None => BROWSERS
                .iter()
                .find_map(|n| on_path(n))
                .context("no chromium or firefox on PATH (give one with --browser PATH)")?,
        };
        let profile = tempfile::Builder::new()
            .prefix("onionrtc-browser-")
            .tempdir()
            .context("cannot make a temporary browser profile")?;
        let mut command = tokio::process::Command::new(&binary);
        command
            .args(browser_args(&binary, profile.path(), url))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        // Its own process group (id = its PID), with its helper processes:
        // stopped together by that id.
        #[cfg(unix)]
        command.process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        eprintln!(
            "started {} with a fresh profile in {} (removed when it closes)",
            binary.display(),
            profile.path().display()
        );
        let group = child.id().and_then(|p| i32::try_from(p).ok());
        Ok(Browser {
            child,
            group,
            profile,
        })
    }

    async fn wait(&mut self) {
        let _ = self.child.wait().await;
    }

    /// Stops the browser (SIGTERM to its process group, so it shuts down
    /// with its helper processes; SIGKILL to the browser after 5 s and to
    /// the group's stragglers), then removes its profile. Helper processes
    /// may still write to it for a moment after the browser exits (a real
    /// Chromium killed outright leaves files behind): removal is retried
    /// for a few seconds.
    async fn stop(mut self) {
        let group = self.group;
        signal_group(group, Signal::Term);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        }
        // Helper processes that outlive the browser would keep writing.
        signal_group(group, Signal::Kill);
        let path = self.profile.path().to_owned();
        // The TempDir is not dropped: removal is done (and reported) here.
        let _ = self.profile.keep();
        let mut last = None;
        for _ in 0..50 {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(e) = last {
            eprintln!(
                "warning: cannot remove the browser profile {}: {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_urls() {
        let s = Site::parse("https://Call.Example.org/?room=abc#x").unwrap();
        assert_eq!(s.endpoint.origin(), "https://call.example.org");
        assert_eq!(s.path, "/?room=abc");
        assert_eq!(Site::parse("https://h:8443").unwrap().path, "/");
        let onion = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion";
        assert!(Site::parse(&format!("http://{onion}/")).is_ok());
        let e = Site::parse("http://call.example.org").unwrap_err();
        assert!(
            format!("{e:#}").contains("refusing http://call.example.org"),
            "{e:#}"
        );
        assert!(Site::parse("call.example.org").is_err());
        assert!(Site::parse("ftp://h").is_err());
    }

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        flags: ConnectFlags,
    }

    fn flags(args: &[&str]) -> ConnectFlags {
        use clap::Parser as _;
        Wrap::parse_from(std::iter::once("connect").chain(args.iter().copied())).flags
    }

    const ONION: &str = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion";
    const PIN: &str = "aMTOpr5xZaUPJoGENzQNUFEotpNEVuJM8OWABnP/SXo=";

    #[test]
    fn load_and_the_document() {
        let e = load(&flags(&[&format!("http://{ONION}"), "--via", "direct"])).unwrap_err();
        assert!(e.to_string().contains("only through Tor"), "{e}");
        assert!(load(&flags(&["http://call.example.org", "--via", "direct"])).is_err());
        let direct = ["https://call.example.org/?room=x", "--via", "direct"];
        let mut l = load(&flags(&direct)).unwrap();
        assert_eq!(
            l.config.web.as_ref().unwrap().origin(),
            "https://call.example.org"
        );
        assert!(!l.relay_given && !l.trust_given);
        let doc = Document::parse(
            Document::render(
                &["turns:relay.example.org:443?transport=tcp".into()],
                &[[1; 32], [2; 32]],
                &[],
            )
            .as_bytes(),
        )
        .unwrap();
        apply_document(&mut l, &doc).unwrap();
        assert_eq!(l.config.relay.to_string(), "tls://relay.example.org:443");
        assert_eq!(
            l.config.relay_trust,
            RelayTrust::SpkiPins(vec![[1; 32], [2; 32]])
        );
        // Explicit flags win over the document.
        let mut args = direct.to_vec();
        args.extend([
            "--relay",
            "tls://other.example.org:5349",
            "--relay-spki",
            PIN,
        ]);
        let mut l = load(&flags(&args)).unwrap();
        apply_document(&mut l, &doc).unwrap();
        assert_eq!(l.config.relay.to_string(), "tls://other.example.org:5349");
        assert!(matches!(l.config.relay_trust, RelayTrust::SpkiSha256(_)));
        // Another relay named by --relay is not held to the document's pins.
        let mut args = direct.to_vec();
        args.extend(["--relay", "tls://other.example.org:5349"]);
        let mut l = load(&flags(&args)).unwrap();
        apply_document(&mut l, &doc).unwrap();
        assert_eq!(l.config.relay_trust, RelayTrust::WebPki);
        // A document without a stream relay is an error naming --relay.
        let udp_only = Document::parse(
            Document::render(&["turn:relay.example.org:3478".into()], &[], &[]).as_bytes(),
        )
        .unwrap();
        let mut l = load(&flags(&direct)).unwrap();
        let e = apply_document(&mut l, &udp_only).unwrap_err();
        assert!(e.to_string().contains("--relay"), "{e}");
    }

    #[test]
    fn browser_profiles() {
        let p = Path::new("/tmp/p");
        let a = browser_args(Path::new("/usr/bin/firefox-esr"), p, "http://127.0.0.1:1/");
        assert_eq!(
            a[..4],
            ["-no-remote", "-new-instance", "-profile", "/tmp/p"]
        );
        let a = browser_args(Path::new("chromium"), p, "http://127.0.0.1:1/");
        assert_eq!(a[0], "--user-data-dir=/tmp/p");
        assert_eq!(a.last().unwrap(), "http://127.0.0.1:1/");
    }
}

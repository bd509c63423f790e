//! `onionrtc connect`: the local connector (crate `connector`) from command
//! line flags, run until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use connector::{ConnectorConfig, Endpoint, RelayTrust, TorNodes, Via};

/// Flags of `onionrtc connect`. The names are a contract with tests and
/// docs/connector.md.
#[derive(Args)]
pub struct ConnectFlags {
    /// The relay's TURN-over-TLS (tls://HOST:PORT) or TURN-over-TCP
    /// (tcp://HOST:PORT) listener. tcp:// lets a Tor exit read TURN
    /// usernames and peer addresses.
    #[arg(long, value_name = "URL")]
    pub relay: String,

    /// The signaling site to proxy on --web-listen: https://HOST[:PORT] or
    /// http://HOST[:PORT].
    #[arg(long, value_name = "URL")]
    pub web: Option<String>,

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

/// Builds the connector's configuration from the flags.
pub fn load(flags: &ConnectFlags) -> anyhow::Result<ConnectorConfig> {
    let mut config = ConnectorConfig::new(Endpoint::parse_relay(&flags.relay)?);
    config.web = flags.web.as_deref().map(Endpoint::parse_web).transpose()?;
    config.via = Via::parse(&flags.via)?;
    flags.tor.apply(&mut config.via)?;
    config.listen = flags.listen;
    config.web_listen = flags.web_listen;
    config.relay_trust = match (&flags.relay_ca, &flags.relay_spki) {
        (Some(ca), _) => RelayTrust::CaFile(ca.clone()),
        (None, Some(pin)) => RelayTrust::parse_spki(pin)?,
        (None, None) => RelayTrust::WebPki,
    };
    if !config.relay.tls && config.relay_trust != RelayTrust::WebPki {
        anyhow::bail!("--relay-ca and --relay-spki need a tls:// relay");
    }
    config.limits.idle_timeout = Duration::from_secs(flags.idle_timeout);
    config.limits.max_flows = flags.max_flows;
    config.limits.max_pending_flows = flags.max_pending_flows;
    config.validate()?;
    Ok(config)
}

/// Runs the connector until SIGINT or SIGTERM. Prints the TURN URLs and,
/// with --web, `Open http://ADDR/` once everything listens; the final
/// counters go to stderr.
pub fn run(config: ConnectorConfig) -> anyhow::Result<()> {
    let _ = crate::relay_cmd::init_tracing();
    if config.via == Via::Direct {
        eprintln!("{NOT_ANONYMOUS}");
    }
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: ConnectorConfig) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let relay = config.relay.clone();
    let via = config.via.to_string();
    if let Via::Tor(options) = &config.via {
        eprintln!("{}", crate::connect_cmd::starting_tor(options));
    }
    let handle = connector::Connector::start(config)
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
    if let Some(web) = handle.web_addr() {
        println!("Open http://{web}/");
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    let stats = handle.stats();
    handle.shutdown().await;
    eprintln!("connector stopped: {stats}");
    Ok(())
}

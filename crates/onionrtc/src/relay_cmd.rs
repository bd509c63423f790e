//! `onionrtc relay` and `onionrtc check-config`: the relay's configuration
//! from a file, command line flags and `ONIONRTC_AUTH_SECRET`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use relay::config::{env_auth_secret, Overrides, RelayConfig};

/// Flags that override the `[relay]` table of the configuration file.
#[derive(Args)]
#[command(next_help_heading = "Configuration overrides")]
pub struct OverrideFlags {
    /// Listen on URL: udp://IP:PORT, tcp://IP:PORT or tls://IP:PORT, e.g.
    /// udp://0.0.0.0:3478 (IPv6 addresses in square brackets; no host
    /// names). Repeat for several listeners; replaces the file's `listen`.
    #[arg(long = "listen", value_name = "URL")]
    pub listen: Vec<String>,

    /// Static long-term user NAME:PASSWORD (split at the first colon).
    /// Repeat for several users; replaces the file's `users`. WARNING: a
    /// command line is visible to other local users (ps, /proc): prefer the
    /// configuration file or ONIONRTC_AUTH_SECRET.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,

    /// REALM of the long-term credentials (default: onionrtc).
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,

    /// IPv4 address the relay sockets bind (default: the first specific IPv4
    /// listen address).
    #[arg(long, value_name = "IPV4")]
    pub relay_ip: Option<String>,

    /// IPv6 address the relay sockets bind, for dual-stack allocations.
    #[arg(long, value_name = "IPV6")]
    pub relay_ip6: Option<String>,

    /// IPv4 address advertised to clients instead of --relay-ip (relay
    /// behind NAT).
    #[arg(long, value_name = "IPV4")]
    pub external_ip: Option<String>,

    /// IPv6 address advertised to clients instead of --relay-ip6.
    #[arg(long, value_name = "IPV6")]
    pub external_ip6: Option<String>,

    /// Port range of the relay sockets, e.g. 49152-65535.
    #[arg(long, value_name = "A-B")]
    pub relay_ports: Option<String>,

    /// Serve Prometheus metrics on ADDR (IP:PORT), e.g. 127.0.0.1:9641.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// TLS certificate chain (PEM) for tls:// listeners, relative to the
    /// working directory.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) for tls:// listeners,
    /// relative to the working directory.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// DANGEROUS, for tests only: let clients relay to loopback addresses of
    /// this machine, including other ports of a loopback relay address.
    #[arg(long)]
    pub dangerous_allow_loopback_peers: bool,

    /// Log client IP addresses in clear. By default they are masked in logs
    /// to protect users' privacy.
    #[arg(long)]
    pub log_client_addresses: bool,
}

impl OverrideFlags {
    fn to_overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            users: self.users.clone(),
            realm: self.realm.clone(),
            relay_ip: self.relay_ip.clone(),
            relay_ip6: self.relay_ip6.clone(),
            external_ip: self.external_ip.clone(),
            external_ip6: self.external_ip6.clone(),
            relay_ports: self.relay_ports.clone(),
            metrics: self.metrics.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            dangerous_allow_loopback_peers: self.dangerous_allow_loopback_peers,
            log_client_addresses: self.log_client_addresses,
        }
    }
}

/// The configuration file (or the defaults), the flags and the environment,
/// validated (including the TLS files).
pub fn load(file: Option<&Path>, flags: &OverrideFlags) -> anyhow::Result<RelayConfig> {
    let env = env_auth_secret()?;
    let config = RelayConfig::load(file, &flags.to_overrides(), env.as_deref())?;
    Ok(config)
}

/// `onionrtc check-config`: prints the resolved configuration, secrets
/// redacted.
pub fn check_config(file: &Path, flags: &OverrideFlags) -> anyhow::Result<()> {
    let config = load(Some(file), flags)?;
    print!("{}", config.redacted_toml());
    Ok(())
}

/// `onionrtc import-coturn`: coturn's configuration file and/or
/// turnserver's command line (`args`, after the file's options, as
/// turnserver reads them) as our TOML on stdout, the summary on stderr
/// (never a secret).
pub fn import_coturn(file: Option<&Path>, args: &[String]) -> anyhow::Result<()> {
    let mut options = Vec::new();
    let mut origin = Vec::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read coturn configuration {}", file.display()))?;
        options = relay::coturn::parse_conf(&text);
        origin.push(file.display().to_string());
    }
    if !args.is_empty() {
        options.extend(relay::coturn::parse_args(args));
        origin.push("turnserver's command line".to_owned());
    }
    let import = relay::coturn::import(&options, &origin.join(" and "));
    print!("{}", import.toml);
    eprint!("{}", import.summary());
    eprintln!("Check the result with: onionrtc check-config FILE");
    Ok(())
}

/// Starts logging to stderr: `info` unless RUST_LOG says otherwise.
/// Returns what changes the filter later (the control socket's
/// `log-level`).
pub fn init_tracing() -> relay::SetLogLevel {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};

    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .compact()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    Box::new(move |directives: &str| {
        let filter = EnvFilter::builder()
            .parse(directives)
            .with_context(|| format!("not a log filter: {directives:?}"))?;
        handle
            .reload(filter)
            .context("cannot change the log filter")
    })
}

/// `onionrtc relay`: runs the relay until SIGINT or SIGTERM; SIGHUP
/// reloads the configuration from what `reload` returns.
pub fn run(
    config: RelayConfig,
    reload: impl Fn() -> anyhow::Result<RelayConfig>,
) -> anyhow::Result<()> {
    let set_log_level = init_tracing();
    tracing::info!(
        "onionrtc {} relay starting (realm {:?})",
        env!("CARGO_PKG_VERSION"),
        config.realm
    );
    relay::run(config, reload, Some(set_log_level)).context("the relay stopped with an error")
}

/// `onionrtc ctl`: sends `request` to the relay's control socket (given, or
/// read from the configuration file) and prints the answer.
pub fn ctl(socket: Option<PathBuf>, config: Option<PathBuf>, request: &str) -> ExitCode {
    let path = match (socket, config) {
        (Some(p), _) => p,
        (None, Some(file)) => match RelayConfig::from_file(&file) {
            Ok(c) => match c.control_socket {
                Some(p) => p,
                None => {
                    eprintln!(
                        "error: {} sets no control_socket in its [relay] table",
                        file.display()
                    );
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!(
                "error: give the control socket with --socket PATH or the relay's --config FILE"
            );
            return ExitCode::from(2);
        }
    };
    if !path.exists() {
        eprintln!(
            "error: no control socket at {} (is the relay running with control_socket set?)",
            path.display()
        );
        return ExitCode::from(2);
    }
    match relay::control::call(&path, request) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e @ relay::control::CallError::Unreachable { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

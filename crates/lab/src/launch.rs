//! Connectors the lab starts for `turn-socks` and `turn-tor` paths:
//!
//! ```text
//! microsocks -i 127.0.0.1 -p P                    (socks = "microsocks")
//! onionrtc connect --relay tls://RELAY | tcp://RELAY --via socks5://PROXY
//!                  --listen 127.0.0.1:L [--relay-spki B64 | --relay-ca FILE]
//! agent ─ TURN/UDP ─► 127.0.0.1:L ─ connector ─ TLS/TCP ─► SOCKS5 ─► relay
//! ```
//!
//! Both are children of the lab, ready when microsocks accepts TCP and
//! the connector prints its `TURN: …` line, and stopped by PID when the
//! [`LaunchedConnector`] drops.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::child::{free_port, wait_tcp, Child};
use crate::plan::Proxy;

/// How long the connector may take to print its `TURN:` line (it first
/// probes the relay through the proxy; through Tor that builds a circuit).
const CONNECTOR_STARTUP: Duration = Duration::from_secs(60);
/// How long microsocks may take to accept connections.
const SOCKS_STARTUP: Duration = Duration::from_secs(5);
/// Launch attempts (a free port may be taken between choosing and binding).
const ATTEMPTS: usize = 3;

/// How the connector checks the relay's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayTrust {
    /// `--relay-spki`: the base64 SHA-256 of its SubjectPublicKeyInfo.
    Spki(String),
    /// `--relay-ca`: a PEM file.
    CaFile(PathBuf),
    /// TCP relay: nothing to check.
    None,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ConnectorArgs<'a> {
    /// The `onionrtc` executable.
    pub exe: &'a Path,
    /// `tls://HOST:PORT` or `tcp://HOST:PORT`.
    pub relay_url: String,
    /// Certificate check.
    pub trust: RelayTrust,
    /// The SOCKS5 proxy.
    pub proxy: &'a Proxy,
}

/// A running connector (and the microsocks it goes through, if the lab
/// started one).
#[derive(Debug)]
pub struct LaunchedConnector {
    // Declared first: the connector stops before its proxy.
    connector: Child,
    proxy: Option<Child>,
    turn: SocketAddr,
    via: SocketAddr,
}

impl LaunchedConnector {
    /// Starts the proxy (for `microsocks`) and the connector, waiting
    /// (bounded) for both.
    pub fn start(args: &ConnectorArgs<'_>) -> anyhow::Result<LaunchedConnector> {
        let (proxy, via) = match args.proxy {
            Proxy::Socks(addr) => (None, *addr),
            Proxy::Microsocks => {
                let (child, addr) = start_microsocks()?;
                (Some(child), addr)
            }
        };
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match start_connector(args, via) {
                Ok((connector, turn)) => {
                    return Ok(LaunchedConnector {
                        connector,
                        proxy,
                        turn,
                        via,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("the connector did not start")))
    }

    /// The connector's local TURN address (UDP and TCP).
    pub fn turn_addr(&self) -> SocketAddr {
        self.turn
    }

    /// The SOCKS5 proxy it goes through.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.via
    }

    /// PIDs of the connector and of the proxy the lab started.
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.connector.pid())
            .chain(self.proxy.as_ref().map(Child::pid))
            .collect()
    }
}

impl Drop for LaunchedConnector {
    fn drop(&mut self) {
        self.connector.stop();
        if let Some(p) = self.proxy.as_mut() {
            p.stop();
        }
    }
}

/// `microsocks -i 127.0.0.1 -p PORT`, ready when it accepts TCP.
fn start_microsocks() -> anyhow::Result<(Child, SocketAddr)> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let port = free_port(Ipv4Addr::LOCALHOST).context("a port for microsocks")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = Command::new("microsocks");
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        let mut child = Child::spawn("microsocks", &mut cmd).map_err(|e| {
            e.context(
                "microsocks is needed for socks = \"microsocks\" (apt-get install microsocks)",
            )
        })?;
        if wait_tcp(&mut child, addr, SOCKS_STARTUP) {
            return Ok((child, addr));
        }
        last = Some(anyhow::anyhow!(
            "microsocks on {addr} did not start; stderr:\n{}",
            child.stderr_tail()
        ));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("microsocks did not start")))
}

fn start_connector(
    args: &ConnectorArgs<'_>,
    via: SocketAddr,
) -> anyhow::Result<(Child, SocketAddr)> {
    let port = free_port(Ipv4Addr::LOCALHOST).context("a port for the connector")?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut cmd = Command::new(args.exe);
    cmd.arg("connect")
        .arg("--relay")
        .arg(&args.relay_url)
        .arg("--via")
        .arg(format!("socks5://{via}"))
        .arg("--listen")
        .arg(listen.to_string());
    match &args.trust {
        RelayTrust::Spki(pin) => {
            cmd.arg("--relay-spki").arg(pin);
        }
        RelayTrust::CaFile(f) => {
            cmd.arg("--relay-ca").arg(f);
        }
        RelayTrust::None => {}
    }
    cmd.env("RUST_LOG", "warn");
    let mut child = Child::spawn("onionrtc connect", &mut cmd)?;
    child.wait_line(CONNECTOR_STARTUP, |l| l.starts_with("TURN: ").then_some(()))?;
    if child.exited().is_some() {
        bail!(
            "onionrtc connect exited after starting; stderr:\n{}",
            child.stderr_tail()
        );
    }
    Ok((child, listen))
}

//! The plan's environment: the relay (started in this process, or an
//! external one), the connectors the lab starts for `turn-socks` and
//! `turn-tor` paths ([`crate::launch`]), and one [`PathOpener`] per path
//! that a synthetic scenario uses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use relay::config::{Listen, ListenProto, RelayConfig, Secret, TlsFiles};
use relay::RelayHandle;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use turn::Transport;

use base64::Engine as _;
use rcgen::PublicKeyData as _;
use sha2::{Digest as _, Sha256};

use crate::launch::{ConnectorArgs, LaunchedConnector, RelayTrust};
use crate::path::wire::TlsSettings;
use crate::path::{DirectOpener, PathOpener, TurnCredentials, TurnOpener};
use crate::plan::{
    ConnectorLaunch, Credentials, PathKind, PathSpec, Plan, RelaySpec, RelayTransport, ScenarioMode,
};

/// Realm of the lab's own relay.
pub const LAB_REALM: &str = "lab.onionrtc";
/// User of the lab's own relay.
pub const LAB_USER: &str = "lab";

/// Addresses and credentials of the relay the calls use.
#[derive(Debug, Clone)]
struct Endpoints {
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    tls_settings: Option<TlsSettings>,
    credentials: TurnCredentials,
    /// How a lab-launched connector reaches the relay over TLS: the
    /// `HOST:PORT` to dial and the certificate check.
    connector_tls: Option<(String, RelayTrust)>,
    /// Likewise over TCP.
    connector_tcp: Option<String>,
}

/// The relay and the path openers of a plan. Dropping it stops a relay the
/// lab started.
#[derive(Debug)]
pub struct Environment {
    // Declared first: connectors stop before the relay.
    connectors: BTreeMap<String, LaunchedConnector>,
    relay: Option<RelayHandle>,
    _dir: Option<tempfile::TempDir>,
    openers: BTreeMap<String, Arc<dyn PathOpener>>,
}

fn tls_client(roots: Vec<CertificateDer<'static>>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c).context("cannot use the TLS certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Starts a relay on loopback address `bind`: UDP, TCP and TLS on free
/// ports, a self-signed certificate for `localhost`, one static user with a
/// random password, loopback peers allowed (both agents are on this
/// machine).
fn start_relay(bind: Ipv4Addr) -> anyhow::Result<(RelayHandle, tempfile::TempDir, Endpoints)> {
    let dir = tempfile::tempdir().context("temporary directory for the relay's certificate")?;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .context("cannot make a certificate")?;
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).context("write certificate")?;
    std::fs::write(&key, ck.signing_key.serialize_pem()).context("write key")?;
    let password = format!("{:032x}", rand::random::<u128>());
    let mut c = RelayConfig::defaults();
    let lo = |proto| Listen {
        proto,
        addr: SocketAddr::from((bind, 0)),
    };
    c.listen = vec![
        lo(ListenProto::Udp),
        lo(ListenProto::Tcp),
        lo(ListenProto::Tls),
    ];
    c.realm = LAB_REALM.into();
    c.relay_ip = IpAddr::V4(bind);
    c.tls = Some(TlsFiles {
        cert,
        key: key.clone(),
    });
    c.users = vec![(LAB_USER.into(), Secret::new(password.clone()))];
    c.dangerous_allow_loopback_peers = true;
    c.max_allocations_per_user = 1000;
    c.max_allocations_per_ip = 1000;
    c.max_connections_per_ip = 1000;
    c.unauthenticated_rate = 10_000;
    c.unauthenticated_burst = 10_000;
    let handle = relay::start(&c).context("cannot start the lab's relay")?;
    let tls_settings = TlsSettings {
        config: tls_client(vec![ck.cert.der().clone()])?,
        server_name: ServerName::try_from("localhost")?.to_owned(),
    };
    let spki = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(ck.signing_key.subject_public_key_info()));
    let tls = handle.tls_addrs().first().copied();
    let tcp = handle.tcp_addrs().first().copied();
    let endpoints = Endpoints {
        udp: handle.udp_addrs().first().copied(),
        tcp,
        tls,
        tls_settings: Some(tls_settings),
        credentials: TurnCredentials::LongTerm {
            username: LAB_USER.into(),
            password,
        },
        connector_tls: tls.map(|a| (a.to_string(), RelayTrust::Spki(spki))),
        connector_tcp: tcp.map(|a| a.to_string()),
    };
    Ok((handle, dir, endpoints))
}

fn external(spec: &RelaySpec) -> anyhow::Result<Endpoints> {
    let RelaySpec::External {
        udp,
        tcp,
        tls,
        tcp_text,
        tls_text,
        tls_ca,
        tls_server_name,
        credentials,
    } = spec
    else {
        bail!("not an external relay");
    };
    let tls_settings = match (tls, tls_ca) {
        (Some(_), Some(ca)) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read relay.tls_ca {}", ca.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("relay.tls_ca {} is not PEM", ca.display()))?;
            if certs.is_empty() {
                bail!("relay.tls_ca {} holds no certificate", ca.display());
            }
            let name = tls_server_name
                .clone()
                .unwrap_or_else(|| "localhost".into());
            Some(TlsSettings {
                config: tls_client(certs)?,
                server_name: ServerName::try_from(name.clone())
                    .with_context(|| format!("relay.tls_server_name {name:?}"))?,
            })
        }
        _ => None,
    };
    let credentials = match credentials {
        Credentials::LongTerm { username, password } => TurnCredentials::LongTerm {
            username: username.clone(),
            password: password.clone(),
        },
        Credentials::Rest { secret } => TurnCredentials::Rest {
            secret: secret.clone(),
        },
    };
    Ok(Endpoints {
        udp: *udp,
        tcp: *tcp,
        tls: *tls,
        tls_settings,
        credentials,
        connector_tls: match (tls_text, tls_ca) {
            (Some(t), Some(ca)) => Some((t.clone(), RelayTrust::CaFile(ca.clone()))),
            _ => None,
        },
        connector_tcp: tcp_text.clone(),
    })
}

impl Environment {
    /// Starts or reaches the relay, starts the connectors the plan asks
    /// for (with the `onionrtc` executable `exe`, see
    /// [`crate::child::onionrtc_exe`]) and builds the openers of every path
    /// a synthetic or webrtc scenario uses (browser scenarios use serve's
    /// relay).
    pub fn prepare(plan: &Plan, exe: Option<&Path>) -> anyhow::Result<Environment> {
        let used: BTreeSet<&str> = plan
            .scenarios
            .iter()
            .filter(|s| s.mode != ScenarioMode::Browser)
            .flat_map(|s| [s.caller.as_str(), s.callee.as_str()])
            .collect();
        let paths: Vec<&PathSpec> = plan
            .paths
            .values()
            .filter(|p| used.contains(p.name.as_str()))
            .collect();
        let needs_relay = paths.iter().any(|p| p.kind != PathKind::Direct);
        let (relay, dir, endpoints) = if !needs_relay {
            (None, None, None)
        } else {
            match &plan.relay {
                RelaySpec::Start => {
                    let (h, d, e) = start_relay(plan.relay_bind)?;
                    (Some(h), Some(d), Some(e))
                }
                spec => (None, None, Some(external(spec)?)),
            }
        };
        let mut env = Environment {
            connectors: BTreeMap::new(),
            relay,
            _dir: dir,
            openers: BTreeMap::new(),
        };
        for p in paths {
            let name = &p.name;
            let opener: Arc<dyn PathOpener> = match (p.kind, &endpoints) {
                (PathKind::Direct, _) => Arc::new(DirectOpener::default()),
                (_, None) => bail!("path {name} needs a relay"),
                (kind, Some(e)) => {
                    let missing = || {
                        format!(
                            "path {name} ({}): the relay has no such listener",
                            kind.name()
                        )
                    };
                    let (server, transport, tls) = match kind {
                        PathKind::TurnUdp => (e.udp.with_context(missing)?, Transport::Udp, None),
                        PathKind::TurnTcp => (e.tcp.with_context(missing)?, Transport::Tcp, None),
                        PathKind::TurnTls => (
                            e.tls.with_context(missing)?,
                            Transport::Tls,
                            Some(e.tls_settings.clone().with_context(missing)?),
                        ),
                        PathKind::TurnSocks | PathKind::TurnTor => {
                            let server = match (&p.launch, p.connector) {
                                (Some(launch), _) => {
                                    let c = launch_connector(name, launch, e, exe)?;
                                    let addr = c.turn_addr();
                                    env.connectors.insert(name.clone(), c);
                                    addr
                                }
                                (None, Some(addr)) => addr,
                                (None, None) => bail!("path {name} has no connector"),
                            };
                            (server, Transport::Udp, None)
                        }
                        PathKind::Direct => unreachable_direct()?,
                    };
                    Arc::new(TurnOpener::new(
                        kind.name(),
                        server,
                        transport,
                        e.credentials.clone(),
                        tls,
                    ))
                }
            };
            env.openers.insert(name.clone(), opener);
        }
        Ok(env)
    }

    /// The connector the lab started for the path named `name`, if any.
    pub fn connector(&self, name: &str) -> Option<&LaunchedConnector> {
        self.connectors.get(name)
    }

    /// The opener of the path named `name`.
    pub fn opener(&self, name: &str) -> Option<Arc<dyn PathOpener>> {
        self.openers.get(name).cloned()
    }

    /// The relay the lab started, if any.
    pub fn relay(&self) -> Option<&RelayHandle> {
        self.relay.as_ref()
    }
}

fn unreachable_direct() -> anyhow::Result<(SocketAddr, Transport, Option<TlsSettings>)> {
    bail!("direct paths use no relay")
}

/// `tls://`/`tcp://` URL of a relay address as written (`HOST:PORT`).
fn relay_url(scheme: &str, host_port: &str) -> String {
    format!("{scheme}://{host_port}")
}

/// Starts the connector of path `name` towards the relay of `e`.
fn launch_connector(
    name: &str,
    launch: &ConnectorLaunch,
    e: &Endpoints,
    exe: Option<&Path>,
) -> anyhow::Result<LaunchedConnector> {
    let exe = crate::child::onionrtc_exe(exe)?;
    let (relay_url, trust) = match launch.relay_transport {
        RelayTransport::Tls => {
            let (addr, trust) = e
                .connector_tls
                .clone()
                .with_context(|| format!("path {name}: the relay has no TLS listener"))?;
            (relay_url("tls", &addr), trust)
        }
        RelayTransport::Tcp => {
            let addr = e
                .connector_tcp
                .clone()
                .with_context(|| format!("path {name}: the relay has no TCP listener"))?;
            (relay_url("tcp", &addr), RelayTrust::None)
        }
    };
    LaunchedConnector::start(&ConnectorArgs {
        exe: &exe,
        relay_url,
        trust,
        proxy: &launch.proxy,
    })
    .with_context(|| format!("path {name}: cannot start its connector"))
}

impl Drop for Environment {
    fn drop(&mut self) {
        // Connectors (by PID) before the relay they are connected to.
        self.connectors.clear();
        if let Some(h) = self.relay.take() {
            let _ = h.shutdown();
        }
    }
}

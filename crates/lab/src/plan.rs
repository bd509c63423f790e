//! The plan file (TOML): relay, paths, impairments, call profile and the
//! scenario matrix. Unknown keys are errors; every value is checked when
//! the plan loads, and each error names the key. `docs/lab.md` documents
//! the format; `examples/lab-plan.toml` is a complete example.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::agent::{MediaProfile, StreamKind, StreamSpec};
use crate::call::RatingInputs;
use crate::emodel::Codec;
use crate::impair::Impairment;

/// Most setup retries a plan may ask for (the DTU experiment's four).
pub const MAX_SETUP_RETRIES: u32 = 4;
/// Most repetitions per scenario.
pub const MAX_REPETITIONS: u32 = 100_000;
/// Most scenarios per plan.
pub const MAX_SCENARIOS: usize = 1000;

/// Why a plan cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The file cannot be read.
    #[error("cannot read plan {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a wrong type (the message names the key).
    #[error("invalid plan: {0}")]
    Parse(Box<toml::de::Error>),
    /// A value is wrong.
    #[error("invalid plan: {key}: {reason}")]
    Invalid {
        /// The key, e.g. `scenarios[2].caller`.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// How a path reaches the other agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// UDP between the agents, no relay (the baseline).
    Direct,
    /// TURN over UDP.
    TurnUdp,
    /// TURN over TCP.
    TurnTcp,
    /// TURN over TLS.
    TurnTls,
    /// TURN over UDP to a connector that forwards through a SOCKS5 proxy.
    TurnSocks,
    /// TURN over UDP to a connector that forwards through Tor.
    TurnTor,
}

impl PathKind {
    /// Every kind.
    pub const ALL: [PathKind; 6] = [
        PathKind::Direct,
        PathKind::TurnUdp,
        PathKind::TurnTcp,
        PathKind::TurnTls,
        PathKind::TurnSocks,
        PathKind::TurnTor,
    ];

    /// The plan name.
    pub const fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::TurnUdp => "turn-udp",
            PathKind::TurnTcp => "turn-tcp",
            PathKind::TurnTls => "turn-tls",
            PathKind::TurnSocks => "turn-socks",
            PathKind::TurnTor => "turn-tor",
        }
    }

    /// Parses a plan name.
    pub fn parse(s: &str) -> Option<PathKind> {
        PathKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the path goes through a connector.
    pub const fn via_connector(self) -> bool {
        matches!(self, PathKind::TurnSocks | PathKind::TurnTor)
    }
}

/// The SOCKS5 proxy a lab-launched connector goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// A running proxy (`socks = "HOST:PORT"`, or a Tor `SocksPort` with
    /// `tor_socks`).
    Socks(SocketAddr),
    /// The lab starts Debian's `microsocks` on a free loopback port.
    Microsocks,
}

/// How a lab-launched connector reaches the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTransport {
    /// TURN over TLS (`--relay tls://…`), the default.
    Tls,
    /// TURN over TCP (`--relay tcp://…`): a proxy or a Tor exit can read
    /// the TURN messages.
    Tcp,
}

impl RelayTransport {
    /// The plan name (`tls`, `tcp`).
    pub const fn name(self) -> &'static str {
        match self {
            RelayTransport::Tls => "tls",
            RelayTransport::Tcp => "tcp",
        }
    }
}

/// A connector the lab starts for a `turn-socks`/`turn-tor` path:
/// `onionrtc connect --relay tls://…|tcp://… --via socks5://PROXY --listen 127.0.0.1:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorLaunch {
    /// The proxy.
    pub proxy: Proxy,
    /// TLS or TCP to the relay.
    pub relay_transport: RelayTransport,
}

/// A named path of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSpec {
    /// The name scenarios use.
    pub name: String,
    /// The kind.
    pub kind: PathKind,
    /// For `turn-socks` and `turn-tor`: the local TURN (UDP) address of a
    /// running `onionrtc connect`.
    pub connector: Option<SocketAddr>,
    /// For `turn-socks` and `turn-tor`: the connector the lab starts
    /// (instead of `connector`).
    pub launch: Option<ConnectorLaunch>,
}

/// Credentials for an external relay.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Long-term user and password.
    LongTerm {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// TURN REST shared secret.
    Rest {
        /// The secret.
        secret: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::LongTerm { username, .. } => {
                write!(
                    f,
                    "LongTerm {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::Rest { .. } => f.write_str("Rest { secret: <redacted> }"),
        }
    }
}

/// Which relay the calls use.
#[derive(Debug, Clone, PartialEq, Eq)]
// One per plan: the size of the external variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum RelaySpec {
    /// Start one in this process on loopback (UDP, TCP and TLS with a
    /// self-signed certificate).
    Start,
    /// An existing relay.
    External {
        /// TURN over UDP address.
        udp: Option<SocketAddr>,
        /// TURN over TCP address.
        tcp: Option<SocketAddr>,
        /// TURN over TLS address.
        tls: Option<SocketAddr>,
        /// `tcp` as written (`HOST:PORT`), for a lab-launched connector.
        tcp_text: Option<String>,
        /// `tls` as written, with the host replaced by `tls_server_name`,
        /// for a lab-launched connector (it verifies the name it dials).
        tls_text: Option<String>,
        /// PEM file of the CA (or self-signed certificate) to trust for TLS.
        tls_ca: Option<PathBuf>,
        /// Name to verify in the TLS certificate.
        tls_server_name: Option<String>,
        /// Credentials.
        credentials: Credentials,
    },
}

/// Timing of each call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallTiming {
    /// Longest setup: allocation, channel binding and first media packet
    /// both ways, seconds.
    pub setup_timeout_s: f64,
    /// A call whose media stops for this long fails, seconds.
    pub stall_timeout_s: f64,
    /// Time after the media ends for packets in flight, ms (the impairment's
    /// delay and jitter are added).
    pub drain_ms: f64,
    /// Pause between calls, ms.
    pub pause_ms: f64,
}

/// How a scenario's calls are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioMode {
    /// The lab's own agents exchange RTP-like packets (measured exactly).
    Synthetic,
    /// Two headless Chromium pages call each other on `onionrtc serve`;
    /// figures come from the pages' `getStats()` (one-way delay estimated).
    Browser,
    /// Two `media` endpoints (ICE, DTLS-SRTP, Opus, jitter buffer) call each
    /// other through the relay ([`crate::webrtc`]); needs the `webrtc` feature.
    Webrtc,
}

impl ScenarioMode {
    /// The plan and store name.
    pub const fn name(self) -> &'static str {
        match self {
            ScenarioMode::Synthetic => "synthetic",
            ScenarioMode::Browser => "browser",
            ScenarioMode::Webrtc => "webrtc",
        }
    }
}

/// Where browser scenarios find `onionrtc serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeSpec {
    /// The lab starts `onionrtc serve` on free loopback ports (TURN over
    /// UDP, TCP and TLS, the web app over HTTP).
    Start,
    /// A running serve: its base URL (`http://HOST:PORT`, no trailing `/`).
    External(String),
}

/// The `[browser]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserSpec {
    /// The serve the pages open.
    pub serve: ServeSpec,
    /// The Chromium executable (`None`: `$CHROMIUM`, else `/usr/bin/chromium`).
    pub chromium: Option<PathBuf>,
    /// Flags added after the standard ones.
    pub chromium_args: Vec<String>,
}

impl Default for BrowserSpec {
    fn default() -> Self {
        BrowserSpec {
            serve: ServeSpec::Start,
            chromium: None,
            chromium_args: Vec::new(),
        }
    }
}

/// One scenario: a caller path, a callee path, an impairment.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name (unique in the plan).
    pub name: String,
    /// Caller's path name.
    pub caller: String,
    /// Callee's path name.
    pub callee: String,
    /// The impairment's name, if any.
    pub impairment_name: Option<String>,
    /// The impairment (each direction).
    pub impairment: Impairment,
    /// Calls in this scenario.
    pub repetitions: u32,
    /// Synthetic agents or browser pages.
    pub mode: ScenarioMode,
}

/// A validated plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Name.
    pub name: String,
    /// Seed of every impairment stage.
    pub seed: u64,
    /// Setup retries per call (0–4).
    pub setup_retries: u32,
    /// The relay.
    pub relay: RelaySpec,
    /// The address the lab's own relay binds (`relay.bind`, a loopback
    /// address; default 127.0.0.1).
    pub relay_bind: Ipv4Addr,
    /// Browser mode settings.
    pub browser: BrowserSpec,
    /// Media of every call.
    pub profile: MediaProfile,
    /// The media as written, for the store (`audio`, `video`, `audio+video`).
    pub media: String,
    /// E-model inputs.
    pub rating: RatingInputs,
    /// Call timing.
    pub timing: CallTiming,
    /// Paths by name.
    pub paths: BTreeMap<String, PathSpec>,
    /// Scenarios, in plan order.
    pub scenarios: Vec<Scenario>,
    /// SHA-256 of the plan text (hex): `--resume` continues only the same plan.
    pub hash: String,
    /// The plan text.
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Option<String>,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_repetitions")]
    repetitions: u32,
    #[serde(default = "default_retries")]
    setup_retries: u32,
    /// `"start"`, or a table (`mode = "start" | "external"`, …).
    relay: toml::Value,
    #[serde(default)]
    profile: RawProfile,
    #[serde(default)]
    call: RawCall,
    #[serde(default)]
    emodel: RawEmodel,
    #[serde(default)]
    paths: BTreeMap<String, RawPath>,
    #[serde(default)]
    impairments: BTreeMap<String, toml::Table>,
    #[serde(default)]
    scenarios: Vec<RawScenario>,
    browser: Option<RawBrowser>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBrowser {
    serve: Option<String>,
    chromium: Option<PathBuf>,
    chromium_args: Vec<String>,
}

fn default_repetitions() -> u32 {
    1
}

fn default_retries() -> u32 {
    MAX_SETUP_RETRIES
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    mode: String,
    bind: Option<String>,
    udp: Option<String>,
    tcp: Option<String>,
    tls: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_server_name: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    auth_secret: Option<String>,
    auth_secret_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProfile {
    media: String,
    duration_s: f64,
    audio_frame_ms: f64,
    audio_kbps: f64,
    video_kbps: f64,
    video_packet_bytes: usize,
    echo_interval_ms: f64,
}

impl Default for RawProfile {
    fn default() -> Self {
        RawProfile {
            media: "audio".into(),
            duration_s: 10.0,
            audio_frame_ms: 20.0,
            audio_kbps: 64.0,
            video_kbps: 500.0,
            video_packet_bytes: 1200,
            echo_interval_ms: 100.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCall {
    setup_timeout_s: f64,
    stall_timeout_s: f64,
    drain_ms: f64,
    pause_ms: f64,
}

impl Default for RawCall {
    fn default() -> Self {
        RawCall {
            setup_timeout_s: 10.0,
            stall_timeout_s: 5.0,
            drain_ms: 500.0,
            pause_ms: 0.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEmodel {
    codec: Codec,
    extra_delay_ms: f64,
    burst: String,
}

impl Default for RawEmodel {
    fn default() -> Self {
        RawEmodel {
            codec: Codec::G711,
            extra_delay_ms: 0.0,
            burst: "measured".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    kind: String,
    connector: Option<String>,
    socks: Option<String>,
    tor_socks: Option<String>,
    relay_transport: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    caller: String,
    callee: String,
    impairment: Option<String>,
    /// The agent; `agent` is accepted as its other name.
    #[serde(alias = "agent")]
    mode: Option<String>,
    repetitions: Option<u32>,
}

fn check_range(key: &str, v: f64, lo: f64, hi: f64) -> Result<f64, PlanError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(invalid(
            key,
            format!("{v} is out of range: expected {lo} to {hi}"),
        ))
    }
}

fn resolve(key: &str, s: &str) -> Result<SocketAddr, PlanError> {
    let mut addrs = s.to_socket_addrs().map_err(|e| {
        invalid(
            key,
            format!("{s:?} is not HOST:PORT or does not resolve: {e}"),
        )
    })?;
    addrs
        .next()
        .ok_or_else(|| invalid(key, format!("{s:?} resolves to no address")))
}

fn secret(
    key: &str,
    value: Option<String>,
    env_key: &str,
    env: Option<String>,
) -> Result<Option<String>, PlanError> {
    match (value, env) {
        (Some(_), Some(_)) => Err(invalid(key, format!("give {key} or {env_key}, not both"))),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(var)) => match std::env::var(&var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(invalid(
                env_key,
                format!("environment variable {var} is not set"),
            )),
        },
        (None, None) => Ok(None),
    }
}

impl Plan {
    /// Reads and validates a plan file; relative paths in it (`tls_ca`)
    /// resolve against the file's directory.
    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Plan::from_toml(&text, base)
    }

    /// Parses and validates plan text.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Plan, PlanError> {
        let raw: RawPlan = toml::from_str(text).map_err(|e| PlanError::Parse(Box::new(e)))?;
        let hash = {
            let d = Sha256::digest(text.as_bytes());
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let name = raw.name.clone().unwrap_or_else(|| "lab".into());
        if raw.setup_retries > MAX_SETUP_RETRIES {
            return Err(invalid(
                "setup_retries",
                format!(
                    "{} is above the maximum of {MAX_SETUP_RETRIES}",
                    raw.setup_retries
                ),
            ));
        }
        if raw.repetitions == 0 || raw.repetitions > MAX_REPETITIONS {
            return Err(invalid(
                "repetitions",
                format!(
                    "{} is out of range: expected 1 to {MAX_REPETITIONS}",
                    raw.repetitions
                ),
            ));
        }
        let (relay, relay_bind) = match raw.relay {
            toml::Value::String(mode) if mode == "start" => (RelaySpec::Start, Ipv4Addr::LOCALHOST),
            toml::Value::String(mode) => {
                return Err(invalid(
                    "relay",
                    format!("{mode:?}: expected \"start\" or a [relay] table"),
                ))
            }
            table @ toml::Value::Table(_) => {
                let mut r = RawRelay::deserialize(table)
                    .map_err(|e| invalid("relay", e.to_string().trim().to_owned()))?;
                let bind = match r.bind.take() {
                    None => Ipv4Addr::LOCALHOST,
                    Some(_) if r.mode != "start" => {
                        return Err(invalid(
                            "relay.bind",
                            "only for mode = \"start\" (the address of the lab's own relay)",
                        ))
                    }
                    Some(b) => match b.parse::<Ipv4Addr>() {
                        Ok(a) if a.is_loopback() => a,
                        _ => {
                            return Err(invalid(
                                "relay.bind",
                                format!(
                                    "{b:?}: expected a loopback IPv4 address such as 127.0.0.2 \
                                     (the lab's relay listens on loopback only)"
                                ),
                            ))
                        }
                    },
                };
                (Self::relay(r, base_dir)?, bind)
            }
            other => {
                return Err(invalid(
                    "relay",
                    format!("{other}: expected \"start\" or a [relay] table"),
                ))
            }
        };
        let (profile, media) = Self::profile(&raw.profile)?;
        let rating = RatingInputs {
            codec: raw.emodel.codec,
            extra_delay_ms: check_range(
                "emodel.extra_delay_ms",
                raw.emodel.extra_delay_ms,
                0.0,
                10_000.0,
            )?,
            measured_burst: match raw.emodel.burst.as_str() {
                "measured" => true,
                "random" => false,
                other => {
                    return Err(invalid(
                        "emodel.burst",
                        format!("{other:?}: expected \"measured\" or \"random\""),
                    ))
                }
            },
        };
        let timing = CallTiming {
            setup_timeout_s: check_range(
                "call.setup_timeout_s",
                raw.call.setup_timeout_s,
                0.1,
                600.0,
            )?,
            stall_timeout_s: check_range(
                "call.stall_timeout_s",
                raw.call.stall_timeout_s,
                0.1,
                600.0,
            )?,
            drain_ms: check_range("call.drain_ms", raw.call.drain_ms, 0.0, 60_000.0)?,
            pause_ms: check_range("call.pause_ms", raw.call.pause_ms, 0.0, 600_000.0)?,
        };
        let mut paths = BTreeMap::new();
        for (pname, p) in raw.paths {
            let key = format!("paths.{pname}");
            let kind = PathKind::parse(&p.kind).ok_or_else(|| {
                invalid(
                    format!("{key}.kind"),
                    format!(
                        "unknown path kind {:?}: expected one of {}",
                        p.kind,
                        PathKind::ALL.map(PathKind::name).join(", ")
                    ),
                )
            })?;
            let (connector, launch) = Self::connector(&key, kind, &p, &relay)?;
            paths.insert(
                pname.clone(),
                PathSpec {
                    name: pname,
                    kind,
                    connector,
                    launch,
                },
            );
        }
        let mut impairments = BTreeMap::new();
        for (iname, mut table) in raw.impairments {
            let key = format!("impairments.{iname}");
            match table.remove("backend") {
                None => {}
                Some(toml::Value::String(b)) if b == "lab" => {}
                Some(toml::Value::String(b)) if b == "netem" => {
                    return Err(invalid(
                        format!("{key}.backend"),
                        "\"netem\" (tc netem in network namespaces) is not implemented: this \
                         machine's kernel has no sch_netem, and the lab's own seeded stage \
                         (backend = \"lab\", the default) needs no root",
                    ))
                }
                Some(other) => {
                    return Err(invalid(
                        format!("{key}.backend"),
                        format!("{other}: expected \"lab\""),
                    ))
                }
            }
            let imp = Impairment::deserialize(toml::Value::Table(table))
                .map_err(|e| invalid(&key, e.to_string().trim().to_owned()))?;
            imp.validate().map_err(|e| {
                invalid(
                    format!("{key}.{}", e.field),
                    format!("{} {}", e.value, e.reason),
                )
            })?;
            impairments.insert(iname, imp);
        }
        if raw.scenarios.is_empty() {
            return Err(invalid("scenarios", "the plan has no [[scenarios]]"));
        }
        if raw.scenarios.len() > MAX_SCENARIOS {
            return Err(invalid("scenarios", format!("more than {MAX_SCENARIOS}")));
        }
        let mut scenarios: Vec<Scenario> = Vec::new();
        for (i, s) in raw.scenarios.into_iter().enumerate() {
            let key = format!("scenarios[{i}]");
            let sname = s.name.trim().to_owned();
            if sname.is_empty()
                || sname.chars().count() > 100
                || sname.chars().any(char::is_control)
            {
                return Err(invalid(
                    format!("{key}.name"),
                    "expected 1 to 100 printable characters",
                ));
            }
            if scenarios.iter().any(|o| o.name == sname) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{sname:?} is used twice"),
                ));
            }
            let mode = match s.mode.as_deref() {
                None | Some("synthetic") => ScenarioMode::Synthetic,
                Some("browser") => ScenarioMode::Browser,
                Some("webrtc") if cfg!(feature = "webrtc") => ScenarioMode::Webrtc,
                Some("webrtc") => {
                    return Err(invalid(
                        format!("{key}.mode"),
                        "\"webrtc\" needs a build with Opus: build onionrtc with \
                         `--features call` (or the lab crate with `--features webrtc`)",
                    ))
                }
                Some(m) => {
                    return Err(invalid(
                        format!("{key}.mode"),
                        format!("{m:?}: expected \"synthetic\", \"browser\" or \"webrtc\""),
                    ))
                }
            };
            let mut kinds = Vec::new();
            for (side, pname) in [("caller", &s.caller), ("callee", &s.callee)] {
                if !paths.contains_key(pname) {
                    match PathKind::parse(pname) {
                        Some(kind) if !kind.via_connector() => {
                            paths.insert(
                                pname.clone(),
                                PathSpec {
                                    name: pname.clone(),
                                    kind,
                                    connector: None,
                                    launch: None,
                                },
                            );
                        }
                        Some(kind) => {
                            return Err(invalid(
                                format!("{key}.{side}"),
                                format!(
                                    "{} needs a [paths.NAME] table (socks, tor_socks or connector)",
                                    kind.name()
                                ),
                            ))
                        }
                        None => {
                            return Err(invalid(
                                format!("{key}.{side}"),
                                format!(
                                    "unknown path {pname:?}: define [paths.{pname}] or use one of \
                                     direct, turn-udp, turn-tcp, turn-tls"
                                ),
                            ))
                        }
                    }
                }
                if let Some(p) = paths.get(pname) {
                    kinds.push(p.kind);
                }
            }
            if mode == ScenarioMode::Webrtc && kinds.contains(&PathKind::Direct) {
                return Err(invalid(
                    key,
                    "the webrtc agent is relay-only (like the web app): caller and callee \
                     must be TURN paths, not direct",
                ));
            }
            if mode == ScenarioMode::Browser {
                if let Some(k) = kinds.iter().find(|k| {
                    !matches!(k, PathKind::TurnUdp | PathKind::TurnTcp | PathKind::TurnTls)
                }) {
                    return Err(invalid(
                        key,
                        format!(
                            "browser pages reach each other through serve's relay: caller and \
                             callee must be turn-udp, turn-tcp or turn-tls paths, not {}",
                            k.name()
                        ),
                    ));
                }
                if s.impairment.is_some() {
                    return Err(invalid(
                        format!("{key}.impairment"),
                        "browser calls cannot be impaired: the lab's impairment stage sits in \
                         its synthetic agents",
                    ));
                }
                if profile.duration_ns < 3_000_000_000 {
                    return Err(invalid(
                        "profile.duration_s",
                        format!(
                            "{key} is a browser scenario: pages summarise getStats() once a \
                             second, so calls need at least 3 s"
                        ),
                    ));
                }
                if media == "video" {
                    return Err(invalid(
                        "profile.media",
                        format!(
                            "{key} is a browser scenario: the web app always sends audio; use \
                             \"audio\" or \"audio+video\""
                        ),
                    ));
                }
            }
            let direct = kinds.iter().filter(|k| **k == PathKind::Direct).count();
            if direct == 1 {
                return Err(invalid(
                    key,
                    "direct is peer to peer: caller and callee must both use it (or neither)",
                ));
            }
            if let (RelaySpec::External { udp, tcp, tls, .. }, ScenarioMode::Synthetic) =
                (&relay, mode)
            {
                for k in &kinds {
                    let (ok, what) = match k {
                        PathKind::TurnUdp => (udp.is_some(), "relay.udp"),
                        PathKind::TurnTcp => (tcp.is_some(), "relay.tcp"),
                        PathKind::TurnTls => (tls.is_some(), "relay.tls"),
                        _ => (true, ""),
                    };
                    if !ok {
                        return Err(invalid(
                            key,
                            format!("uses {} but {what} is not set", k.name()),
                        ));
                    }
                }
            }
            let impairment = match &s.impairment {
                None => Impairment::none(),
                Some(n) => *impairments.get(n).ok_or_else(|| {
                    invalid(
                        format!("{key}.impairment"),
                        format!("no [impairments.{n}] in the plan"),
                    )
                })?,
            };
            let repetitions = s.repetitions.unwrap_or(raw.repetitions);
            if repetitions == 0 || repetitions > MAX_REPETITIONS {
                return Err(invalid(
                    format!("{key}.repetitions"),
                    format!("{repetitions} is out of range: expected 1 to {MAX_REPETITIONS}"),
                ));
            }
            scenarios.push(Scenario {
                name: sname,
                caller: s.caller,
                callee: s.callee,
                impairment_name: s.impairment,
                impairment,
                repetitions,
                mode,
            });
        }
        let browser = Self::browser(raw.browser.unwrap_or_default())?;
        Ok(Plan {
            name,
            seed: raw.seed,
            setup_retries: raw.setup_retries,
            relay,
            relay_bind,
            browser,
            profile,
            media,
            rating,
            timing,
            paths,
            scenarios,
            hash,
            text: text.to_owned(),
        })
    }

    fn relay(r: RawRelay, base_dir: &Path) -> Result<RelaySpec, PlanError> {
        match r.mode.as_str() {
            "start" => {
                let extra = [
                    ("udp", r.udp.is_some()),
                    ("tcp", r.tcp.is_some()),
                    ("tls", r.tls.is_some()),
                    ("tls_ca", r.tls_ca.is_some()),
                    ("tls_server_name", r.tls_server_name.is_some()),
                    ("username", r.username.is_some()),
                    ("password", r.password.is_some()),
                    ("password_env", r.password_env.is_some()),
                    ("auth_secret", r.auth_secret.is_some()),
                    ("auth_secret_env", r.auth_secret_env.is_some()),
                ];
                if let Some((k, _)) = extra.iter().find(|(_, set)| *set) {
                    return Err(invalid(
                        format!("relay.{k}"),
                        "only for mode = \"external\" (the lab's own relay picks its ports and credentials)",
                    ));
                }
                Ok(RelaySpec::Start)
            }
            "external" => {
                let udp = r
                    .udp
                    .as_deref()
                    .map(|s| resolve("relay.udp", s))
                    .transpose()?;
                let tcp = r
                    .tcp
                    .as_deref()
                    .map(|s| resolve("relay.tcp", s))
                    .transpose()?;
                let tls = r
                    .tls
                    .as_deref()
                    .map(|s| resolve("relay.tls", s))
                    .transpose()?;
                let tls_server_name = r.tls_server_name.or_else(|| {
                    r.tls.as_deref().and_then(|s| {
                        s.rsplit_once(':')
                            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
                    })
                });
                let tls_text = match (&r.tls, &tls_server_name) {
                    (Some(t), Some(name)) => t.rsplit_once(':').map(|(_, port)| {
                        if name.contains(':') {
                            format!("[{name}]:{port}")
                        } else {
                            format!("{name}:{port}")
                        }
                    }),
                    (t, _) => t.clone(),
                };
                if tls.is_some() && r.tls_ca.is_none() {
                    return Err(invalid(
                        "relay.tls_ca",
                        "relay.tls needs tls_ca, the PEM certificate (or CA) to trust",
                    ));
                }
                let password = secret(
                    "relay.password",
                    r.password,
                    "relay.password_env",
                    r.password_env,
                )?;
                let auth = secret(
                    "relay.auth_secret",
                    r.auth_secret,
                    "relay.auth_secret_env",
                    r.auth_secret_env,
                )?;
                let credentials = match (r.username, password, auth) {
                    (Some(username), Some(password), None) => {
                        Credentials::LongTerm { username, password }
                    }
                    (None, None, Some(secret)) => Credentials::Rest { secret },
                    _ => {
                        return Err(invalid(
                            "relay",
                            "external relays need username and password (or password_env), or \
                             auth_secret (or auth_secret_env), not both",
                        ))
                    }
                };
                Ok(RelaySpec::External {
                    udp,
                    tcp,
                    tls,
                    tcp_text: r.tcp.clone(),
                    tls_text,
                    tls_ca: r.tls_ca.map(|p| base_dir.join(p)),
                    tls_server_name,
                    credentials,
                })
            }
            other => Err(invalid(
                "relay.mode",
                format!("{other:?}: expected \"start\" or \"external\""),
            )),
        }
    }

    /// The connector of a path: a running one (`connector`) or one the lab
    /// starts (`socks` for turn-socks, `tor_socks` for turn-tor).
    fn connector(
        key: &str,
        kind: PathKind,
        p: &RawPath,
        relay: &RelaySpec,
    ) -> Result<(Option<SocketAddr>, Option<ConnectorLaunch>), PlanError> {
        if !kind.via_connector() {
            for (k, set) in [
                ("connector", p.connector.is_some()),
                ("socks", p.socks.is_some()),
                ("tor_socks", p.tor_socks.is_some()),
                ("relay_transport", p.relay_transport.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        format!("{key}.{k}"),
                        format!(
                            "only turn-socks and turn-tor paths take {k}, not {}",
                            kind.name()
                        ),
                    ));
                }
            }
            return Ok((None, None));
        }
        let (proxy_key, wrong_key) = match kind {
            PathKind::TurnTor => ("tor_socks", "socks"),
            _ => ("socks", "tor_socks"),
        };
        let wrong = match kind {
            PathKind::TurnTor => p.socks.is_some(),
            _ => p.tor_socks.is_some(),
        };
        if wrong {
            return Err(invalid(
                format!("{key}.{wrong_key}"),
                format!("a {} path takes {proxy_key}, not {wrong_key}", kind.name()),
            ));
        }
        let proxy = match kind {
            PathKind::TurnTor => p.tor_socks.as_deref(),
            _ => p.socks.as_deref(),
        };
        match (&p.connector, proxy) {
            (Some(_), Some(_)) => Err(invalid(
                format!("{key}.connector"),
                format!(
                    "give connector (a running `onionrtc connect`) or {proxy_key} (the lab starts \
                     the connector), not both"
                ),
            )),
            (Some(c), None) => {
                if p.relay_transport.is_some() {
                    return Err(invalid(
                        format!("{key}.relay_transport"),
                        format!("only with {proxy_key}: a running connector has its own --relay"),
                    ));
                }
                if *relay == RelaySpec::Start {
                    return Err(invalid(
                        key,
                        format!(
                            "{} with connector = … needs relay.mode = \"external\": a running \
                             connector forwards to a fixed relay address; give {proxy_key} instead \
                             and the lab starts a connector for its own relay",
                            kind.name()
                        ),
                    ));
                }
                Ok((Some(resolve(&format!("{key}.connector"), c)?), None))
            }
            (None, None) => Err(invalid(
                format!("{key}.{proxy_key}"),
                match kind {
                    PathKind::TurnTor => format!(
                        "{} needs tor_socks = \"127.0.0.1:9050\" (a Tor SocksPort; the lab starts \
                         `onionrtc connect` through it) or connector = \"127.0.0.1:PORT\" (the \
                         local TURN port of a running `onionrtc connect`)",
                        kind.name()
                    ),
                    _ => format!(
                        "{} needs socks = \"HOST:PORT\" or \"microsocks\" (the lab starts \
                         `onionrtc connect` through that SOCKS5 proxy) or connector = \
                         \"127.0.0.1:PORT\" (the local TURN port of a running `onionrtc connect`)",
                        kind.name()
                    ),
                },
            )),
            (None, Some(proxy)) => {
                let proxy = if proxy == "microsocks" && kind == PathKind::TurnSocks {
                    Proxy::Microsocks
                } else {
                    Proxy::Socks(resolve(&format!("{key}.{proxy_key}"), proxy)?)
                };
                let relay_transport = match p.relay_transport.as_deref() {
                    None | Some("tls") => RelayTransport::Tls,
                    Some("tcp") => RelayTransport::Tcp,
                    Some(other) => {
                        return Err(invalid(
                            format!("{key}.relay_transport"),
                            format!("{other:?}: expected \"tls\" or \"tcp\""),
                        ))
                    }
                };
                if let RelaySpec::External {
                    tls_text,
                    tcp_text,
                    tls_ca,
                    ..
                } = relay
                {
                    let ok = match relay_transport {
                        RelayTransport::Tls => tls_text.is_some() && tls_ca.is_some(),
                        RelayTransport::Tcp => tcp_text.is_some(),
                    };
                    if !ok {
                        return Err(invalid(
                            key,
                            format!(
                                "the connector reaches the relay over {} but relay.{} is not set",
                                relay_transport.name(),
                                relay_transport.name()
                            ),
                        ));
                    }
                }
                Ok((
                    None,
                    Some(ConnectorLaunch {
                        proxy,
                        relay_transport,
                    }),
                ))
            }
        }
    }

    fn browser(b: RawBrowser) -> Result<BrowserSpec, PlanError> {
        let serve = match b.serve.as_deref() {
            None | Some("start") => ServeSpec::Start,
            Some(url) => {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                match rest {
                    Some(r)
                        if !r.is_empty()
                            && !r.contains(['?', '#', ' ', '@'])
                            && !r.trim_end_matches('/').contains('/') =>
                    {
                        ServeSpec::External(url.trim_end_matches('/').to_owned())
                    }
                    _ => {
                        return Err(invalid(
                            "browser.serve",
                            format!(
                                "{url:?}: expected \"start\" or the base URL of a running \
                                 `onionrtc serve` (http://HOST:PORT)"
                            ),
                        ))
                    }
                }
            }
        };
        for a in &b.chromium_args {
            if !a.starts_with("--") || a.chars().any(char::is_control) {
                return Err(invalid(
                    "browser.chromium_args",
                    format!("{a:?}: expected a --flag"),
                ));
            }
        }
        Ok(BrowserSpec {
            serve,
            chromium: b.chromium,
            chromium_args: b.chromium_args,
        })
    }

    /// Whether any scenario runs in `mode`.
    pub fn has_mode(&self, mode: ScenarioMode) -> bool {
        self.scenarios.iter().any(|s| s.mode == mode)
    }

    fn profile(p: &RawProfile) -> Result<(MediaProfile, String), PlanError> {
        let duration = check_range("profile.duration_s", p.duration_s, 0.1, 86_400.0)?;
        let frame = check_range("profile.audio_frame_ms", p.audio_frame_ms, 2.5, 120.0)?;
        let akbps = check_range("profile.audio_kbps", p.audio_kbps, 1.0, 1000.0)?;
        let vkbps = check_range("profile.video_kbps", p.video_kbps, 1.0, 20_000.0)?;
        let vbytes = check_range(
            "profile.video_packet_bytes",
            p.video_packet_bytes as f64,
            100.0,
            crate::agent::MAX_PACKET as f64,
        )? as usize;
        let echo = check_range(
            "profile.echo_interval_ms",
            p.echo_interval_ms,
            10.0,
            10_000.0,
        )?;
        let audio = StreamSpec::audio(frame, akbps);
        let video = StreamSpec::at_rate(StreamKind::Video, vkbps, vbytes);
        let streams = match p.media.as_str() {
            "audio" => vec![audio],
            "video" => vec![video],
            "audio+video" => vec![audio, video],
            other => {
                return Err(invalid(
                    "profile.media",
                    format!("{other:?}: expected \"audio\", \"video\" or \"audio+video\""),
                ))
            }
        };
        Ok((
            MediaProfile {
                streams,
                duration_ns: (duration * 1e9).round() as u64,
                echo_interval_ns: (echo * 1e6).round() as u64,
            },
            p.media.clone(),
        ))
    }

    /// Calls in the whole plan.
    pub fn total_calls(&self) -> u64 {
        self.scenarios
            .iter()
            .map(|s| u64::from(s.repetitions))
            .sum()
    }

    /// The path named `name` (every scenario's paths exist after validation).
    pub fn path(&self, name: &str) -> Option<&PathSpec> {
        self.paths.get(name)
    }
}

//! Importing a coturn configuration: `turnserver.conf` (or turnserver's
//! command line) translated into our `[relay]` table.
//!
//! [`parse_conf`] reads coturn's file format (`key=value`, `key value` or a
//! bare flag per line, `#` comments), [`parse_args`] its command line
//! (`--key=value`, `--key value`, `--flag`, the short forms); [`import`]
//! translates the options into TOML that [`RelayConfig`](crate::config::RelayConfig)
//! loads, and says for every option what became of it ([`Note`]): translated
//! (to which key), not needed here (with why), or unsupported (with why).
//!
//! Secrets (passwords, shared secrets) are the operator's own and are
//! translated into the TOML; a [`Note`] never shows them.
//!
//! The translation is static: nothing is read from the machine. What cannot
//! be derived from the file (a relay address when coturn listens on every
//! address, credentials when coturn ran without authentication) is listed
//! in [`Import::missing`] and in a comment at the top of the TOML.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use turn::policy::Cidr;

use crate::config::{quote, string_list, toml_key, DEFAULT_RELAY_PORTS};

/// coturn's default `listening-port`.
pub const COTURN_PORT: u16 = 3478;
/// coturn's default `tls-listening-port`.
pub const COTURN_TLS_PORT: u16 = 5349;
/// coturn's default Prometheus port.
pub const COTURN_PROMETHEUS_PORT: u16 = 9641;

/// One option as coturn read it.
#[derive(Clone, PartialEq, Eq)]
pub struct CoturnOption {
    /// The line of the file (1-based); `None` on a command line.
    pub line: Option<usize>,
    /// The long option name without dashes, e.g. `listening-port`.
    pub name: String,
    /// The value, if any (surrounding double quotes removed).
    pub value: Option<String>,
}

impl fmt::Debug for CoturnOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Shown(self))
    }
}

/// An option as notes show it: the value unless it is secret.
struct Shown<'a>(&'a CoturnOption);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        match (&o.value, is_secret(&o.name)) {
            (None, _) => f.write_str(&o.name),
            (Some(v), false) => write!(f, "{}={v}", o.name),
            (Some(v), true) if o.name == "user" => {
                let name = v.split_once(':').map_or("?", |(n, _)| n);
                write!(f, "user={name}:<redacted>")
            }
            (Some(_), true) => write!(f, "{}=<redacted>", o.name),
        }
    }
}

/// Options whose value is (or may contain) a secret.
fn is_secret(name: &str) -> bool {
    matches!(
        name,
        "user"
            | "static-auth-secret"
            | "cli-password"
            | "pkey-pwd"
            | "psql-userdb"
            | "sql-userdb"
            | "mysql-userdb"
            | "mongo-userdb"
            | "redis-userdb"
            | "redis-statsdb"
    )
}

/// Long options that take a value (for `--key value` on a command line).
const VALUE_OPTIONS: &[&str] = &[
    "listening-device",
    "listening-port",
    "tls-listening-port",
    "alt-listening-port",
    "alt-tls-listening-port",
    "tcp-proxy-port",
    "listening-ip",
    "aux-server",
    "relay-device",
    "relay-ip",
    "external-ip",
    "relay-threads",
    "min-port",
    "max-port",
    "user",
    "realm",
    "user-quota",
    "total-quota",
    "max-bps",
    "bps-capacity",
    "userdb",
    "psql-userdb",
    "sql-userdb",
    "mysql-userdb",
    "mongo-userdb",
    "redis-userdb",
    "redis-statsdb",
    "secret-key-file",
    "static-auth-secret",
    "server-name",
    "cert",
    "pkey",
    "pkey-pwd",
    "cipher-list",
    "ec-curve-name",
    "dh-file",
    "log-file",
    "syslog-facility",
    "new-log-timestamp-format",
    "max-allocate-lifetime",
    "channel-lifetime",
    "permission-lifetime",
    "alternate-server",
    "tls-alternate-server",
    "rest-api-separator",
    "max-allocate-timeout",
    "allowed-peer-ip",
    "denied-peer-ip",
    "pidfile",
    "acme-redirect",
    "proc-user",
    "proc-group",
    "cli-ip",
    "cli-port",
    "cli-password",
    "web-admin-ip",
    "web-admin-port",
    "cli-max-output-sessions",
    "ne",
    "prometheus-port",
    "allocation-default-address-family",
    "config",
];

/// turnserver's short options: (letter, long name).
const SHORT_OPTIONS: &[(char, &str)] = &[
    ('d', "listening-device"),
    ('p', "listening-port"),
    ('L', "listening-ip"),
    ('i', "relay-device"),
    ('E', "relay-ip"),
    ('X', "external-ip"),
    ('m', "relay-threads"),
    ('v', "verbose"),
    ('V', "Verbose"),
    ('o', "daemon"),
    ('f', "fingerprint"),
    ('a', "lt-cred-mech"),
    ('z', "no-auth"),
    ('u', "user"),
    ('r', "realm"),
    ('q', "user-quota"),
    ('Q', "total-quota"),
    ('s', "max-bps"),
    ('B', "bps-capacity"),
    ('b', "userdb"),
    ('e', "psql-userdb"),
    ('M', "mysql-userdb"),
    ('J', "mongo-userdb"),
    ('N', "redis-userdb"),
    ('O', "redis-statsdb"),
    ('S', "stun-only"),
    ('C', "rest-api-separator"),
    ('K', "keep-address-family"),
    ('l', "log-file"),
    ('c', "config"),
    ('n', "no-config"),
];

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// Reads coturn's configuration file format: one option per line as
/// `key=value`, `key value` or a bare `key`; lines starting with `#` are
/// comments. Never fails: what is not an option is skipped.
pub fn parse_conf(text: &str) -> Vec<CoturnOption> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.trim_start_matches('-');
        let (name, value) = match line.find(['=', ' ', '\t']) {
            Some(at) => {
                let v = unquote(&line[at + 1..]);
                (line[..at].trim(), (!v.is_empty()).then(|| v.to_owned()))
            }
            None => (line, None),
        };
        if name.is_empty() {
            continue;
        }
        out.push(CoturnOption {
            line: Some(i + 1),
            name: name.to_owned(),
            value,
        });
    }
    out
}

/// Reads turnserver's command line (without the program name): `--key=value`,
/// `--key value` (for options that take a value), `--flag`, `-X value`.
/// An argument that is not an option is kept as an option named after it
/// (and reported as unknown).
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Vec<CoturnOption> {
    let mut out = Vec::new();
    let mut it = args.iter().map(AsRef::as_ref).peekable();
    while let Some(arg) = it.next() {
        let (name, inline) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (long.to_owned(), None),
            }
        } else if let Some(short) = arg.strip_prefix('-') {
            let mut chars = short.chars();
            let letter = chars.next();
            let rest: String = chars.collect();
            match SHORT_OPTIONS.iter().find(|(c, _)| Some(*c) == letter) {
                Some((_, long)) => ((*long).to_owned(), (!rest.is_empty()).then_some(rest)),
                None => (arg.to_owned(), None),
            }
        } else {
            (arg.to_owned(), None)
        };
        let value = match inline {
            Some(v) => Some(v),
            None if VALUE_OPTIONS.contains(&name.as_str()) => it.next().map(str::to_owned),
            None => None,
        };
        out.push(CoturnOption {
            line: None,
            value: value.map(|v| unquote(&v).to_owned()),
            name,
        });
    }
    out
}

/// What became of one coturn option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Translated into a key of ours.
    Translated,
    /// Nothing to translate: what it asks for is how this relay works
    /// anyway, or it is about coturn's process (logs, PID file, CLI).
    NotNeeded,
    /// This relay cannot do what it asks; the configuration runs without it.
    Unsupported,
}

impl Outcome {
    /// Lower-case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Translated => "translated",
            Outcome::NotNeeded => "not needed",
            Outcome::Unsupported => "unsupported",
        }
    }
}

/// One option and what became of it. Its `Display` never shows a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The option (secret values redacted), e.g. `line 12: max-bps=20000`.
    pub option: String,
    /// What became of it.
    pub outcome: Outcome,
    /// The key it became, or why it was not translated.
    pub detail: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            Outcome::Translated => write!(f, "{} -> {}", self.option, self.detail),
            _ => write!(f, "{}: {}", self.option, self.detail),
        }
    }
}

/// The result of [`import`].
#[derive(Debug, Clone)]
pub struct Import {
    /// The TOML (`[relay]` table), secrets included.
    pub toml: String,
    /// Every option, in input order, and what became of it.
    pub notes: Vec<Note>,
    /// What the configuration still needs before the relay starts (also at
    /// the top of the TOML as comments).
    pub missing: Vec<String>,
}

impl Import {
    /// The notes with this outcome.
    pub fn with(&self, outcome: Outcome) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(move |n| n.outcome == outcome)
    }

    /// A summary for stderr: counts, then every option not translated with
    /// its reason, then what is missing. Never shows a secret.
    pub fn summary(&self) -> String {
        let count = |o| self.with(o).count();
        let mut s = format!(
            "{} coturn options: {} translated, {} not needed, {} unsupported\n",
            self.notes.len(),
            count(Outcome::Translated),
            count(Outcome::NotNeeded),
            count(Outcome::Unsupported)
        );
        for outcome in [Outcome::Unsupported, Outcome::NotNeeded] {
            for n in self.with(outcome) {
                let _ = writeln!(s, "  {}: {n}", outcome.as_str());
            }
        }
        for m in &self.missing {
            let _ = writeln!(s, "  needed before use: {m}");
        }
        s
    }
}

/// What the options say, gathered before the TOML is written.
#[derive(Default)]
struct State {
    port: Option<u16>,
    tls_port: Option<u16>,
    listen_ips: Vec<IpAddr>,
    relay_ips: Vec<IpAddr>,
    /// (public, private) per family.
    external: Vec<(IpAddr, Option<IpAddr>)>,
    min_port: Option<u16>,
    max_port: Option<u16>,
    realm: Option<String>,
    users: Vec<(String, String)>,
    user_lines: Vec<String>,
    auth_secret: bool,
    secrets: Vec<String>,
    secret_lines: Vec<String>,
    lt_cred_mech: bool,
    no_auth: bool,
    cert: Option<String>,
    pkey: Option<String>,
    total_quota: Option<u32>,
    user_quota: Option<u32>,
    max_bps: Option<u64>,
    bps_capacity: Option<u64>,
    allowed: Vec<Cidr>,
    denied: Vec<Cidr>,
    allow_loopback: bool,
    no_tcp_relay: bool,
    mobility: bool,
    no_udp: bool,
    no_tcp: bool,
    no_tls: bool,
    prometheus: bool,
    prometheus_port: Option<u16>,
    threads: Option<usize>,
    max_lifetime: Option<u64>,
    alternates: Vec<String>,
}

/// Notes as they are made.
struct Notes<'a> {
    opt: &'a CoturnOption,
    out: &'a mut Vec<Note>,
}

impl Notes<'_> {
    fn push(&mut self, outcome: Outcome, detail: impl Into<String>) {
        let option = match self.opt.line {
            Some(l) => format!("line {l}: {}", Shown(self.opt)),
            None => format!("--{}", Shown(self.opt)),
        };
        self.out.push(Note {
            option,
            outcome,
            detail: detail.into(),
        });
    }
    fn done(&mut self, key: impl Into<String>) {
        self.push(Outcome::Translated, key);
    }
    fn skip(&mut self, why: impl Into<String>) {
        self.push(Outcome::NotNeeded, why);
    }
    fn no(&mut self, why: impl Into<String>) {
        self.push(Outcome::Unsupported, why);
    }
}

fn parse_num<T: std::str::FromStr>(v: Option<&str>) -> Option<T> {
    v.and_then(|v| v.trim().parse().ok())
}

/// The smallest list of CIDRs covering `first..=last` (same family).
fn range_to_cidrs(first: IpAddr, last: IpAddr) -> Option<Vec<Cidr>> {
    let (lo, hi, bits) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return None,
    };
    if lo > hi {
        return None;
    }
    let ip = |n: u128| match bits {
        32 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        _ => IpAddr::V6(Ipv6Addr::from(n)),
    };
    let mask = |s: u32| {
        if s >= 128 {
            u128::MAX
        } else {
            (1u128 << s) - 1
        }
    };
    let mut out = Vec::new();
    let mut cur = lo;
    // At most two blocks per prefix length.
    for _ in 0..2 * bits + 2 {
        let mut s = cur.trailing_zeros().min(bits);
        while s > 0 && (cur | mask(s)) > hi {
            s -= 1;
        }
        out.push(Cidr::new(ip(cur), (bits - s) as u8).ok()?);
        let last_of_block = cur | mask(s);
        if last_of_block >= hi {
            return Some(out);
        }
        cur = last_of_block + 1;
    }
    None
}

/// coturn's `allowed-peer-ip`/`denied-peer-ip` value: an IP, `IP-IP`, or a CIDR.
fn peer_range(v: &str) -> Option<Vec<Cidr>> {
    let v = v.trim();
    if let Some((a, b)) = v.split_once('-') {
        return range_to_cidrs(a.trim().parse().ok()?, b.trim().parse().ok()?);
    }
    v.parse::<Cidr>().ok().map(|c| vec![c])
}

fn ip_value(v: Option<&str>) -> Option<IpAddr> {
    v.and_then(|v| v.trim().trim_matches(['[', ']']).parse().ok())
}

/// Translates coturn options (from [`parse_conf`] or [`parse_args`]);
/// `origin` names the input in the TOML's header.
pub fn import(options: &[CoturnOption], origin: &str) -> Import {
    let mut st = State::default();
    let mut notes = Vec::new();
    for opt in options {
        let mut n = Notes {
            opt,
            out: &mut notes,
        };
        translate(&mut st, opt, &mut n);
    }
    let (toml, missing) = write_toml(&st, origin, &notes);
    Import {
        toml,
        notes,
        missing,
    }
}

const LOGS: &str =
    "logs go to stderr (journald under systemd); RUST_LOG sets the level (docs/deployment.md)";
const RFC5780: &str = "RFC 5780 NAT behaviour discovery is not offered by this relay";
const TLS_LIB: &str =
    "TLS is rustls: TLS 1.2 and 1.3 only, with its own safe cipher suites and key exchange";
const DB: &str =
    "users and secrets come from the configuration file (users, auth_secrets) or ONIONRTC_AUTH_SECRET; no database";

fn translate(st: &mut State, opt: &CoturnOption, n: &mut Notes<'_>) {
    let v = opt.value.as_deref();
    let bad =
        |n: &mut Notes<'_>, what: &str| n.no(format!("cannot read the value: expected {what}"));
    match opt.name.as_str() {
        "listening-port" => match parse_num::<u16>(v) {
            Some(p) => {
                st.port = Some(p);
                n.done("listen (udp://, tcp:// port)");
            }
            None => bad(n, "a port"),
        },
        "tls-listening-port" => match parse_num::<u16>(v) {
            Some(p) => {
                st.tls_port = Some(p);
                n.done("listen (tls:// port)");
            }
            None => bad(n, "a port"),
        },
        "listening-ip" => match ip_value(v) {
            Some(ip) => {
                st.listen_ips.push(ip);
                n.done("listen (addresses)");
            }
            None => bad(n, "an IP address (host names are not resolved)"),
        },
        "relay-ip" => match ip_value(v) {
            Some(ip) if st.relay_ips.iter().any(|r| r.is_ipv4() == ip.is_ipv4()) => n.no(
                "one relay address per family: the first relay-ip of this family is used",
            ),
            Some(ip) => {
                st.relay_ips.push(ip);
                n.done(if ip.is_ipv4() { "relay_ip" } else { "relay_ip6" });
            }
            None => bad(n, "an IP address"),
        },
        "external-ip" => {
            let parsed = v.and_then(|v| match v.split_once('/') {
                Some((p, q)) => Some((ip_value(Some(p))?, Some(ip_value(Some(q))?))),
                None => Some((ip_value(Some(v))?, None)),
            });
            match parsed {
                Some((public, _)) if st.external.iter().any(|(e, _)| e.is_ipv4() == public.is_ipv4()) => {
                    n.no("one external address per family: the first external-ip of this family is used")
                }
                Some((public, private)) => {
                    st.external.push((public, private));
                    let key = if public.is_ipv4() { "external_ip" } else { "external_ip6" };
                    match private {
                        Some(_) => n.done(format!("{key} (and the private address as the relay address unless relay-ip is set)")),
                        None => n.done(key),
                    }
                }
                None => bad(n, "PUBLIC-IP or PUBLIC-IP/PRIVATE-IP (host names are not resolved)"),
            }
        }
        "min-port" | "max-port" => match parse_num::<u16>(v).filter(|&p| p != 0) {
            Some(p) => {
                if opt.name == "min-port" {
                    st.min_port = Some(p);
                } else {
                    st.max_port = Some(p);
                }
                n.done("relay_ports");
            }
            None => bad(n, "a port 1-65535"),
        },
        "realm" => match v {
            Some(r) => {
                st.realm = Some(r.to_owned());
                n.done("realm");
            }
            None => bad(n, "a realm"),
        },
        "user" => match v.and_then(|v| v.split_once(':')) {
            Some((_, key)) if key.len() == 34 && (key.starts_with("0x") || key.starts_with("0X")) && key[2..].bytes().all(|b| b.is_ascii_hexdigit()) => {
                n.no("a hashed key (0x…) instead of a password: this relay's users table holds passwords; give this user a password (the clients need it too) or move to TURN REST credentials (auth_secrets)")
            }
            Some((name, pass)) if !name.is_empty() && !pass.is_empty() => {
                st.users.push((name.to_owned(), pass.to_owned()));
                st.user_lines.push(n_option_label(opt));
                n.done("users");
            }
            _ => bad(n, "NAME:PASSWORD"),
        },
        "lt-cred-mech" => {
            st.lt_cred_mech = true;
            n.done("long-term credentials are always on (users, auth_secrets)");
        }
        "use-auth-secret" => {
            st.auth_secret = true;
            n.done("auth_secrets (TURN REST credentials)");
        }
        "static-auth-secret" => match v {
            Some(s) => {
                st.secrets.push(s.to_owned());
                st.secret_lines.push(n_option_label(opt));
                n.done("auth_secrets");
            }
            None => bad(n, "a secret"),
        },
        "no-auth" => {
            st.no_auth = true;
            n.no("this relay always authenticates TURN requests: set users or auth_secrets (STUN Binding stays open)");
        }
        "cert" => {
            st.cert = v.map(str::to_owned);
            n.done("tls_cert");
        }
        "pkey" => {
            st.pkey = v.map(str::to_owned);
            n.done("tls_key");
        }
        "pkey-pwd" => n.no("encrypted private keys are not read: decrypt the key file (openssl pkey -in KEY -out KEY.plain) and keep it readable by the relay only"),
        "total-quota" => match parse_num::<u32>(v) {
            Some(q) => {
                st.total_quota = Some(q);
                n.done(if q == 0 { "0 (no quota): max_allocations_total keeps its default, 10000" } else { "max_allocations_total" });
            }
            None => bad(n, "a number"),
        },
        "user-quota" => match parse_num::<u32>(v) {
            Some(q) => {
                st.user_quota = Some(q);
                n.done(if q == 0 { "0 (no quota): max_allocations_per_static_user = 0; REST usernames keep max_allocations_per_user's default, 64" } else { "max_allocations_per_user, max_allocations_per_static_user" });
            }
            None => bad(n, "a number"),
        },
        "max-bps" => match parse_num::<u64>(v).filter(|&b| b <= turn::bandwidth::MAX_RATE) {
            Some(b) => {
                st.max_bps = Some(b);
                n.done("max_bytes_per_sec_per_allocation");
            }
            None => bad(n, "bytes per second, at most 12500000000"),
        },
        "bps-capacity" => match parse_num::<u64>(v).filter(|&b| b <= turn::bandwidth::MAX_RATE) {
            Some(b) => {
                st.bps_capacity = Some(b);
                n.done("max_bytes_per_sec_total");
            }
            None => bad(n, "bytes per second, at most 12500000000"),
        },
        "allowed-peer-ip" | "denied-peer-ip" => match v.and_then(peer_range) {
            Some(cidrs) => {
                let allowed = opt.name == "allowed-peer-ip";
                let key = if allowed { "allowed_peers" } else { "denied_peers" };
                let list: Vec<String> = cidrs.iter().map(Cidr::to_string).collect();
                if allowed {
                    st.allowed.extend(cidrs);
                } else {
                    st.denied.extend(cidrs);
                }
                n.done(format!("{key} {}", list.join(", ")));
            }
            None => bad(n, "IP, IP-IP or a CIDR"),
        },
        "no-loopback-peers" => n.skip("loopback peers are refused by default"),
        "allow-loopback-peers" => {
            st.allow_loopback = true;
            n.done("dangerous_allow_loopback_peers = true (clients may reach services on this machine: tests only)");
        }
        "no-multicast-peers" => n.skip("multicast and broadcast peers are always refused"),
        "no-tcp-relay" => {
            st.no_tcp_relay = true;
            n.done("tcp_relay = false");
        }
        "no-udp-relay" => n.no("UDP relaying is always on (RFC 8656); only RFC 6062 TCP relaying can be turned off (tcp_relay)"),
        "no-udp" => {
            st.no_udp = true;
            n.done("listen (no udp://)");
        }
        "no-tcp" => {
            st.no_tcp = true;
            n.done("listen (no tcp://)");
        }
        "no-tls" => {
            st.no_tls = true;
            n.done("listen (no tls://)");
        }
        "no-dtls" => n.skip("this relay has no DTLS listener"),
        "prometheus" => {
            st.prometheus = true;
            n.done("metrics (on loopback; the metric names are onionrtc_*)");
        }
        "prometheus-port" => match parse_num::<u16>(v) {
            Some(p) => {
                st.prometheus_port = Some(p);
                n.done("metrics (port)");
            }
            None => bad(n, "a port"),
        },
        "fingerprint" => n.skip("FINGERPRINT is checked when present and responses carry it when the request did (RFC 8489 §14.7)"),
        "no-software-attribute" | "prod" => n.done("software = false (the default: no SOFTWARE attribute)"),
        "server-name" => n.no("the SOFTWARE text is fixed (OnionRTC and its version) and only sent with software = true; the realm names the server to clients"),
        "relay-threads" => match parse_num::<usize>(v) {
            Some(t) => {
                st.threads = Some(t.clamp(1, crate::config::MAX_THREADS));
                n.done("threads");
            }
            None => bad(n, "a number"),
        },
        "max-allocate-lifetime" => match parse_num::<u64>(v).filter(|&s| s > 0) {
            Some(s) => {
                st.max_lifetime = Some(s);
                n.done("max_lifetime_secs");
            }
            None => bad(n, "seconds"),
        },
        "channel-lifetime" | "permission-lifetime" => n.no("fixed by RFC 8656: channels live 600 s, permissions 300 s"),
        "stale-nonce" => n.skip("nonces expire after 600 s (what stale-nonce does by default)"),
        "max-allocate-timeout" => n.skip("relay sockets are bound at once; there is no allocation timeout to set"),
        "verbose" | "Verbose" | "log-file" | "simple-log" | "syslog" | "syslog-facility" | "no-stdout-log" | "new-log-timestamp" | "new-log-timestamp-format" | "log-binding" => n.skip(LOGS),
        "pidfile" | "proc-user" | "proc-group" | "daemon" => n.skip("systemd runs the relay in the foreground as its own user (docs/deployment.md)"),
        "no-cli" => n.skip("there is no telnet CLI"),
        "cli-ip" | "cli-port" | "cli-password" | "cli-max-output-sessions" => n.no("there is no telnet CLI; the metrics endpoint and the logs show the state"),
        "web-admin" | "web-admin-ip" | "web-admin-port" | "web-admin-listen-on-workers" => n.no("there is no web admin; see the metrics endpoint"),
        "userdb" | "psql-userdb" | "sql-userdb" | "mysql-userdb" | "mongo-userdb" | "redis-userdb" | "redis-statsdb" | "secret-key-file" | "no-dynamic-ip-list" | "no-dynamic-realms" | "no-auth-pings" => n.no(DB),
        "no-rfc5780" | "response-origin-only-with-rfc5780" => n.skip(RFC5780),
        "rfc5780" | "alt-listening-port" | "alt-tls-listening-port" => n.no(RFC5780),
        "no-stun-backward-compatibility" => n.skip("classic STUN (RFC 3489, no magic cookie) is never answered"),
        "no-tlsv1" | "no-tlsv1_1" => n.skip(TLS_LIB),
        "no-tlsv1_2" => n.no("TLS 1.2 stays on next to TLS 1.3 (rustls); browsers use 1.3 anyway"),
        "cipher-list" | "ec-curve-name" | "dh566" | "dh1066" | "dh-file" => n.skip(TLS_LIB),
        "stun-only" => n.no("the relay always serves TURN; STUN Binding needs no credentials"),
        "no-stun" => n.no("STUN Binding is always answered (rate-limited per source)"),
        "secure-stun" => n.no("STUN Binding requests are answered without authentication (rate-limited per source)"),
        "mobility" => {
            st.mobility = true;
            n.done("mobility = true");
        }
        "oauth" => n.no("third-party (OAuth) authorization is not implemented; use TURN REST credentials"),
        "server-relay" => n.no("not implemented (non-standard)"),
        "check-origin-consistency" => n.no("ORIGIN is not checked"),
        "listening-device" | "relay-device" => n.no("binding to a network device is not supported: give the addresses (listen, relay_ip)"),
        "alternate-server" | "tls-alternate-server" => match v.and_then(|v| v.parse::<std::net::SocketAddr>().ok()) {
            Some(a) => {
                let schemes: &[&str] = if opt.name == "alternate-server" { &["udp", "tcp"] } else { &["tls"] };
                for s in schemes {
                    st.alternates.push(format!("{s}://{a}"));
                }
                n.done("alternate_servers (used while draining: onionrtc ctl drain, or above redirect_above_allocations; coturn redirects always)");
            }
            None => bad(n, "IP:PORT (host names are not resolved)"),
        },
        "aux-server" | "udp-self-balance" => n.no("auxiliary servers are not implemented"),
        "tcp-proxy-port" => n.no("the PROXY protocol is not read; a TLS-passthrough proxy works (docs/deployment.md)"),
        "acme-redirect" => n.no("no HTTP listener on the TURN ports; renew certificates elsewhere and reload"),
        "rest-api-separator" => n.no("the TURN REST username separator is always ':'"),
        "keep-address-family" | "allocation-default-address-family" => n.no("allocations follow RFC 8656 (REQUESTED-ADDRESS-FAMILY, default IPv4)"),
        "ne" => n.skip("network engine choice is coturn's own"),
        "no-config" | "config" => n.skip("command line only"),
        _ => n.no("unknown coturn option"),
    }
}

fn n_option_label(opt: &CoturnOption) -> String {
    match opt.line {
        Some(l) => format!("line {l}"),
        None => "command line".to_owned(),
    }
}

/// The lines of the `[relay]` table.
#[derive(Default)]
struct Body(String);

impl Body {
    /// `key = value  # from`.
    fn kv(&mut self, key: &str, value: String, from: &str) {
        let _ = writeln!(self.0, "{key} = {value}  # {from}");
    }

    fn comment(&mut self, line: String) {
        self.0.push_str(&line);
        self.0.push('\n');
    }
}

/// Builds the TOML text and the list of what is missing.
fn write_toml(st: &State, origin: &str, notes: &[Note]) -> (String, Vec<String>) {
    let mut missing = Vec::new();
    let mut b = Body::default();

    // Listeners.
    let port = st.port.unwrap_or(COTURN_PORT);
    let tls_port = st.tls_port.unwrap_or(COTURN_TLS_PORT);
    let ips: Vec<IpAddr> = match st.listen_ips.is_empty() {
        true => vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()],
        false => st.listen_ips.clone(),
    };
    let tls_files = st.cert.is_some() && st.pkey.is_some();
    let mut listen = Vec::new();
    for ip in &ips {
        if !st.no_udp {
            listen.push(format!("udp://{}", SocketAddr::new(*ip, port)));
        }
        if !st.no_tcp {
            listen.push(format!("tcp://{}", SocketAddr::new(*ip, port)));
        }
        if !st.no_tls && tls_files {
            listen.push(format!("tls://{}", SocketAddr::new(*ip, tls_port)));
        }
    }
    let mut tls_note = None;
    if !st.no_tls && !tls_files && (st.tls_port.is_some() || st.cert.is_some() || st.pkey.is_some())
    {
        tls_note = Some("no tls:// listener: the coturn file does not give both cert and pkey (coturn then looks for turn_server_cert.pem and turn_server_pkey.pem); set tls_cert and tls_key and add tls:// listeners");
    }
    if listen.is_empty() {
        missing.push("listen: no-udp, no-tcp and no-tls leave no listener; add one".to_owned());
        b.comment("# listen = []  # no-udp, no-tcp, no-tls".to_owned());
    } else {
        b.kv(
            "listen",
            string_list(&listen),
            "listening-ip, listening-port, tls-listening-port, no-udp/no-tcp/no-tls",
        );
    }
    if let Some(r) = &st.realm {
        b.kv("realm", quote(r), "realm");
    }

    // Relay addresses: relay-ip, else the private side of external-ip, else
    // the listening addresses (what coturn does).
    let private = |v4: bool| {
        st.external
            .iter()
            .find(|(p, _)| p.is_ipv4() == v4)
            .and_then(|(_, q)| *q)
            .filter(|q| q.is_ipv4() == v4)
    };
    let specific = |v4: bool| {
        st.listen_ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == v4 && !ip.is_unspecified() && !ip.is_multicast())
    };
    let relay = |v4: bool| -> Option<(IpAddr, &str)> {
        if let Some(ip) = st.relay_ips.iter().copied().find(|ip| ip.is_ipv4() == v4) {
            return Some((ip, "relay-ip"));
        }
        if let Some(ip) = private(v4) {
            return Some((ip, "external-ip (private part)"));
        }
        specific(v4).map(|ip| (ip, "listening-ip"))
    };
    match relay(true) {
        Some((ip, from)) => b.kv("relay_ip", quote(&ip.to_string()), from),
        None => missing.push(
            "relay_ip: coturn listens on every address and relays from all of them; this relay \
             binds one IPv4 address for relay sockets: set relay_ip (or --relay-ip) to this host's address"
                .to_owned(),
        ),
    }
    let relay6 = relay(false);
    if let Some((ip, from)) = relay6 {
        b.kv("relay_ip6", quote(&ip.to_string()), from);
    }
    for (public, _) in &st.external {
        if public.is_ipv4() {
            b.kv("external_ip", quote(&public.to_string()), "external-ip");
        } else if relay6.is_some() {
            b.kv("external_ip6", quote(&public.to_string()), "external-ip");
        } else {
            missing.push(format!(
                "relay_ip6: external-ip {public} is IPv6 but no IPv6 relay address is known; set relay_ip6 (and external_ip6)"
            ));
        }
    }
    let lo = st.min_port.unwrap_or(*DEFAULT_RELAY_PORTS.start());
    let hi = st.max_port.unwrap_or(*DEFAULT_RELAY_PORTS.end());
    b.kv(
        "relay_ports",
        quote(&format!("{lo}-{hi}")),
        "min-port, max-port",
    );
    if let (Some(c), Some(k)) = (&st.cert, &st.pkey) {
        b.kv("tls_cert", quote(c), "cert");
        b.kv("tls_key", quote(k), "pkey");
    }

    // Credentials.
    let users: Vec<String> = (st.users.iter())
        .map(|(n, p)| format!("{} = {}", toml_key(n), quote(p)))
        .collect();
    let users = format!("{{ {} }}", users.join(", "));
    let have_users = !st.users.is_empty() && !st.auth_secret;
    if st.auth_secret && !st.users.is_empty() {
        b.comment(format!(
            "# users = {users}  # {}: not used, as coturn does not use static users with use-auth-secret",
            st.user_lines.join(", ")
        ));
    } else if have_users {
        b.kv(
            "users",
            users,
            &format!("user ({})", st.user_lines.join(", ")),
        );
    }
    let have_secrets = st.auth_secret && !st.secrets.is_empty();
    if have_secrets {
        b.kv(
            "auth_secrets",
            string_list(&st.secrets),
            &format!(
                "use-auth-secret, static-auth-secret ({})",
                st.secret_lines.join(", ")
            ),
        );
    } else if !st.secrets.is_empty() {
        b.comment(format!(
            "# auth_secrets: static-auth-secret ({}) is not used by coturn without use-auth-secret; left out",
            st.secret_lines.join(", ")
        ));
    }
    if !have_users && !have_secrets {
        let why = match (st.no_auth, st.lt_cred_mech, st.auth_secret) {
            (true, _, _) => "coturn ran with no-auth (anyone could relay)",
            (_, _, true) => "use-auth-secret without static-auth-secret (coturn reads the secrets from its database)",
            (_, true, _) => "lt-cred-mech without users in the file (coturn reads them from its database)",
            _ => "the coturn file has no users and no secret (coturn then runs without authentication)",
        };
        missing.push(format!(
            "credentials: {why}; this relay always authenticates: set users or auth_secrets, or ONIONRTC_AUTH_SECRET"
        ));
    }

    // Quotas and bandwidth.
    match st.user_quota {
        Some(0) => b.kv(
            "max_allocations_per_static_user",
            "0".into(),
            "user-quota = 0 (no quota)",
        ),
        Some(q) => {
            b.kv("max_allocations_per_user", q.to_string(), "user-quota");
            b.kv(
                "max_allocations_per_static_user",
                q.to_string(),
                "user-quota",
            );
        }
        None => {}
    }
    if let Some(q) = st.total_quota.filter(|&q| q > 0) {
        b.kv("max_allocations_total", q.to_string(), "total-quota");
    }
    if let Some(rate) = st.max_bps {
        b.kv(
            "max_bytes_per_sec_per_allocation",
            rate.to_string(),
            "max-bps",
        );
    }
    if let Some(rate) = st.bps_capacity {
        b.kv("max_bytes_per_sec_total", rate.to_string(), "bps-capacity");
    }

    // Peers.
    if !st.allowed.is_empty() {
        b.kv("allowed_peers", string_list(&st.allowed), "allowed-peer-ip");
    }
    if !st.denied.is_empty() {
        b.kv("denied_peers", string_list(&st.denied), "denied-peer-ip");
    }
    if st.allow_loopback {
        b.kv(
            "dangerous_allow_loopback_peers",
            "true".into(),
            "allow-loopback-peers",
        );
    }

    // The rest.
    if st.no_tcp_relay {
        b.kv("tcp_relay", "false".into(), "no-tcp-relay");
    }
    if st.mobility {
        b.kv("mobility", "true".into(), "mobility");
    }
    if let Some(t) = st.threads {
        b.kv("threads", t.to_string(), "relay-threads");
    }
    if !st.alternates.is_empty() {
        b.kv(
            "alternate_servers",
            crate::config::string_list(&st.alternates),
            "alternate-server / tls-alternate-server",
        );
    }
    if let Some(s) = st.max_lifetime {
        let s = s.min(365 * 24 * 3600);
        b.kv("max_lifetime_secs", s.to_string(), "max-allocate-lifetime");
        if s < turn::server::DEFAULT_LIFETIME.as_secs() {
            b.kv(
                "default_lifetime_secs",
                s.to_string(),
                "max-allocate-lifetime (the default lifetime may not exceed it)",
            );
        }
    }
    if st.prometheus || st.prometheus_port.is_some() {
        let port = st.prometheus_port.unwrap_or(COTURN_PROMETHEUS_PORT);
        b.kv(
            "metrics",
            quote(&format!("127.0.0.1:{port}")),
            "prometheus (coturn serves every address; keep metrics on loopback or a private network)",
        );
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# OnionRTC relay configuration imported from {origin} by `onionrtc import-coturn`.\n\
         # It holds the passwords and secrets of the coturn file: keep it readable by the relay only.\n\
         # Check it with `onionrtc check-config FILE`; every key is described in docs/configuration.md.\n\
         # Differences from coturn worth knowing: peers in private networks (10/8, 172.16/12, 192.168/16,\n\
         # fc00::/7 ...) are refused unless allowed_peers lists them; no SOFTWARE attribute is sent."
    );
    for m in &missing {
        let _ = writeln!(out, "# NEEDED BEFORE USE: {m}");
    }
    if let Some(t) = tls_note {
        let _ = writeln!(out, "# NOTE: {t}");
    }
    let _ = writeln!(out, "\n[relay]");
    out.push_str(&b.0);
    let not: Vec<&Note> = notes
        .iter()
        .filter(|n| n.outcome != Outcome::Translated)
        .collect();
    if !not.is_empty() {
        let _ = writeln!(out, "\n# coturn options not translated:");
        for n in not {
            let _ = writeln!(out, "# {}: {n}", n.outcome.as_str());
        }
    }
    (out, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(a: &str, b: &str) -> Vec<String> {
        range_to_cidrs(a.parse().unwrap(), b.parse().unwrap())
            .unwrap()
            .iter()
            .map(Cidr::to_string)
            .collect()
    }

    #[test]
    fn ranges_become_the_fewest_cidrs() {
        // The example of coturn's own file.
        assert_eq!(cidrs("83.166.64.0", "83.166.95.255"), ["83.166.64.0/19"]);
        assert_eq!(cidrs("10.0.0.1", "10.0.0.1"), ["10.0.0.1/32"]);
        assert_eq!(
            cidrs("10.0.0.1", "10.0.0.6"),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(cidrs("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(
            cidrs("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ["::/0"]
        );
        assert_eq!(cidrs("fd00::", "fd00::ff"), ["fd00::/120"]);
        assert!(range_to_cidrs("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()).is_none());
        assert!(range_to_cidrs("10.0.0.1".parse().unwrap(), "::1".parse().unwrap()).is_none());
        assert_eq!(
            peer_range("172.17.0.0/16").unwrap()[0].to_string(),
            "172.17.0.0/16"
        );
        assert!(peer_range("example.org").is_none());
    }

    #[test]
    fn conf_lines_in_every_form() {
        let o = parse_conf(
            "# comment\n\n  listening-port=3479\nrealm example.org\nfingerprint\n\
             pidfile=\"/var/run/turnserver.pid\"\nuser=alice:pa=ss word\n--no-cli\n",
        );
        let got: Vec<(Option<usize>, &str, Option<&str>)> = o
            .iter()
            .map(|o| (o.line, o.name.as_str(), o.value.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (Some(3), "listening-port", Some("3479")),
                (Some(4), "realm", Some("example.org")),
                (Some(5), "fingerprint", None),
                (Some(6), "pidfile", Some("/var/run/turnserver.pid")),
                (Some(7), "user", Some("alice:pa=ss word")),
                (Some(8), "no-cli", None),
            ]
        );
    }

    #[test]
    fn command_line_in_every_form() {
        let o = parse_args(&[
            "-n",
            "--realm=r",
            "--min-port",
            "5000",
            "-L",
            "127.0.0.1",
            "-p3479",
            "--no-dtls",
            "stray",
        ]);
        let got: Vec<(&str, Option<&str>)> = o
            .iter()
            .map(|o| (o.name.as_str(), o.value.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("no-config", None),
                ("realm", Some("r")),
                ("min-port", Some("5000")),
                ("listening-ip", Some("127.0.0.1")),
                ("listening-port", Some("3479")),
                ("no-dtls", None),
                ("stray", None),
            ]
        );
    }

    #[test]
    fn alternate_servers_are_translated_and_the_result_loads() {
        let i = import(
            &parse_conf(
                "static-auth-secret=s\nrelay-ip=192.0.2.1\nlistening-ip=192.0.2.1\n\
                 alternate-server=192.0.2.7:3478\ntls-alternate-server=[2001:db8::7]:5349\n\
                 alternate-server=not-an-address\n",
            ),
            "test",
        );
        assert!(
            i.toml.contains(
                "alternate_servers = [\"udp://192.0.2.7:3478\", \"tcp://192.0.2.7:3478\", \"tls://[2001:db8::7]:5349\"]"
            ),
            "{}",
            i.toml
        );
        assert!(i.summary().contains("not-an-address"), "{}", i.summary());
        let c =
            crate::config::RelayConfig::from_toml_str(&i.toml, std::path::Path::new("/")).unwrap();
        assert_eq!(c.alternate_servers.len(), 3);
    }

    #[test]
    fn secrets_are_translated_but_never_noted() {
        let i = import(
            &parse_conf(
                "lt-cred-mech\nuser=alice:hunter2-pw\nuser=bob:0x0123456789abcdef0123456789abcdef\n\
                 static-auth-secret=rest-s3cret\ncli-password=clipw\npkey-pwd=keypw\n\
                 psql-userdb=\"host=x password=dbpw\"\nrelay-ip=192.0.2.1\n",
            ),
            "test",
        );
        assert!(i.toml.contains("alice = \"hunter2-pw\""), "{}", i.toml);
        let shown = format!("{}{:?}", i.summary(), i.notes);
        for secret in [
            "hunter2",
            "0123456789abcdef",
            "rest-s3cret",
            "clipw",
            "keypw",
            "dbpw",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // The hashed key is unsupported, and bob is not in the users table.
        assert!(
            shown.contains("user=bob:<redacted>: a hashed key"),
            "{shown}"
        );
        assert!(!i.toml.contains("bob ="), "{}", i.toml);
        // A secret without use-auth-secret is left out, as coturn ignores it.
        assert!(!i.toml.contains("rest-s3cret"), "{}", i.toml);
    }
}

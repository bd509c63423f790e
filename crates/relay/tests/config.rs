//! The relay configuration through its public API: every key, the defaults,
//! each error, overrides, the environment secret and redaction.

// Helpers outside `#[test]` fns unwrap too: a panic in a test is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use relay::config::{
    ConfigError, Listen, ListenProto, Overrides, RelayConfig, Secret, TlsFiles, REDACTED,
};

const PASSWORD: &str = "pa55-word-alice";
const SECRET: &str = "rest-shared-s3cret";

fn parse(text: &str) -> Result<RelayConfig, ConfigError> {
    RelayConfig::from_toml_str(text, Path::new("/etc/onionrtc"))
}

/// Parses and validates (no TLS files involved).
fn load(text: &str) -> Result<RelayConfig, ConfigError> {
    let c = parse(text)?;
    c.validate()?;
    Ok(c)
}

fn err(text: &str) -> String {
    match load(text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(text: &str, needles: &[&str]) {
    let e = err(text);
    for n in needles {
        assert!(e.contains(n), "{e:?} lacks {n:?}");
    }
}

fn with_secret(body: &str) -> String {
    format!("[relay]\nauth_secrets = [\"{SECRET}\"]\n{body}\n")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const FULL: &str = r#"
[relay]
listen = ["udp://127.0.0.1:3478", "tcp://[::1]:3478", "udp://0.0.0.0:3479", "tcp://[::]:3480"]
realm = "example.org"
relay_ip = "192.0.2.10"
relay_ip6 = "2001:db8::10"
external_ip = "203.0.113.7"
external_ip6 = "2001:db8::7"
relay_ports = "50000-50999"
users = { alice = "pa55-word-alice", "bob smith" = "x" }
auth_secrets = ["rest-shared-s3cret", "older"]
max_allocations_per_user = 3
max_allocations_per_static_user = 2
max_allocations_per_ip = 4
max_allocations_total = 5
max_bytes_per_sec_per_allocation = 20000
max_bytes_per_sec_total = 1250000
allowed_peers = ["10.1.0.0/16", "fd00::/8"]
denied_peers = ["198.51.100.0/24"]
dangerous_allow_loopback_peers = true
metrics = "127.0.0.1:9641"
log_client_addresses = true
software = true
max_connections = 6
max_connections_per_ip = 7
handshake_timeout_secs = 8
idle_timeout_secs = 9
max_frame = 1500
tcp_relay = false
threads = 3
busy_poll_us = 40
unauthenticated_rate = 11
unauthenticated_burst = 12
default_lifetime_secs = 300
max_lifetime_secs = 900

[serve]
anything = "opaque for now"
"#;

#[test]
fn every_key_parses() {
    let c = load(FULL).unwrap();
    let l = |proto, a: &str| Listen { proto, addr: sa(a) };
    assert_eq!(
        c.listen,
        [
            l(ListenProto::Udp, "127.0.0.1:3478"),
            l(ListenProto::Tcp, "[::1]:3478"),
            l(ListenProto::Udp, "0.0.0.0:3479"),
            l(ListenProto::Tcp, "[::]:3480"),
        ]
    );
    assert_eq!(c.realm, "example.org");
    assert_eq!(c.relay_ip, ip("192.0.2.10"));
    assert_eq!(c.relay_ip6, Some(ip("2001:db8::10")));
    assert_eq!(c.external_ip, Some(ip("203.0.113.7")));
    assert_eq!(c.external_ip6, Some(ip("2001:db8::7")));
    assert_eq!(c.relay_ports, 50000..=50999);
    assert_eq!(c.tls, None);
    let users: Vec<(&str, &str)> = c
        .users
        .iter()
        .map(|(n, p)| (n.as_str(), p.expose()))
        .collect();
    assert_eq!(users, [("alice", PASSWORD), ("bob smith", "x")]);
    let secrets: Vec<&str> = c.auth_secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, [SECRET, "older"]);
    assert_eq!(
        (
            c.max_allocations_per_user,
            c.max_allocations_per_ip,
            c.max_allocations_total
        ),
        (3, 4, 5)
    );
    assert_eq!(c.max_allocations_per_static_user, 2);
    assert_eq!(
        (
            c.max_bytes_per_sec_per_allocation,
            c.max_bytes_per_sec_total
        ),
        (20_000, 1_250_000)
    );
    let l = c.to_server_config().unwrap().limits;
    assert_eq!(
        (l.bytes_per_sec_per_allocation, l.bytes_per_sec_total),
        (20_000, 1_250_000)
    );
    let cidrs = |v: &[turn::policy::Cidr]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(cidrs(&c.allowed_peers), ["10.1.0.0/16", "fd00::/8"]);
    assert_eq!(cidrs(&c.denied_peers), ["198.51.100.0/24"]);
    assert!(c.dangerous_allow_loopback_peers);
    assert_eq!(c.metrics, Some(sa("127.0.0.1:9641")));
    assert!(c.log_client_addresses);
    assert!(c.software);
    assert_eq!((c.max_connections, c.max_connections_per_ip), (6, 7));
    assert_eq!(c.handshake_timeout, Duration::from_secs(8));
    assert_eq!(c.idle_timeout, Duration::from_secs(9));
    assert_eq!(c.max_frame, 1500);
    assert!(!c.tcp_relay);
    assert_eq!(c.threads, 3);
    assert_eq!(c.busy_poll_us, 40);
    assert_eq!((c.unauthenticated_rate, c.unauthenticated_burst), (11, 12));
    assert_eq!(c.default_lifetime, Duration::from_secs(300));
    assert_eq!(c.max_lifetime, Duration::from_secs(900));
}

#[test]
fn defaults_for_absent_keys() {
    for text in ["", "[relay]\n"] {
        let c = parse(text).unwrap();
        assert_eq!(c, RelayConfig::defaults());
        let listen: Vec<String> = c.listen.iter().map(Listen::to_string).collect();
        assert_eq!(listen, ["udp://127.0.0.1:3478", "tcp://127.0.0.1:3478"]);
        assert_eq!(c.realm, "onionrtc");
        assert_eq!(c.relay_ip, ip("127.0.0.1"));
        assert_eq!(c.relay_ports, 49152..=65535);
        assert_eq!(
            (c.relay_ip6, c.external_ip, c.external_ip6),
            (None, None, None)
        );
        assert!(c.users.is_empty() && c.auth_secrets.is_empty() && c.tls.is_none());
        assert_eq!(
            (
                c.max_allocations_per_user,
                c.max_allocations_per_ip,
                c.max_allocations_total
            ),
            (64, 100, 10_000)
        );
        assert_eq!(c.max_allocations_per_static_user, 0);
        assert_eq!(
            (
                c.max_bytes_per_sec_per_allocation,
                c.max_bytes_per_sec_total
            ),
            (0, 0)
        );
        assert!(c.allowed_peers.is_empty() && c.denied_peers.is_empty());
        assert!(!c.dangerous_allow_loopback_peers && !c.log_client_addresses && !c.software);
        assert_eq!(c.metrics, None);
        assert_eq!((c.max_connections, c.max_connections_per_ip), (10_000, 100));
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.max_frame, 4096);
        assert!(c.tcp_relay);
        assert!(c.threads >= 1);
        assert_eq!(c.busy_poll_us, 0, "busy polling is opt-in");
        assert_eq!((c.unauthenticated_rate, c.unauthenticated_burst), (50, 100));
        assert_eq!(c.default_lifetime, Duration::from_secs(600));
        assert_eq!(c.max_lifetime, Duration::from_secs(3600));
    }
}

#[test]
fn relay_ip_comes_from_the_first_specific_ipv4_listener() {
    let c = load(&with_secret(
        r#"listen = ["tcp://[::1]:3478", "udp://0.0.0.0:3478", "udp://192.0.2.1:3478"]"#,
    ))
    .unwrap();
    assert_eq!(c.relay_ip, ip("192.0.2.1"));
}

#[test]
fn relay_ip_is_required_without_a_specific_ipv4_listener() {
    assert_err(
        &with_secret(r#"listen = ["udp://0.0.0.0:3478", "tcp://[::1]:3478"]"#),
        &["relay_ip is not set", "udp://0.0.0.0:3478", "--relay-ip"],
    );
    load(&with_secret(
        "listen = [\"udp://0.0.0.0:3478\"]\nrelay_ip = \"192.0.2.1\"",
    ))
    .unwrap();
}

#[test]
fn threads_zero_means_cores() {
    let c = parse("[relay]\nthreads = 0").unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(c.threads, cores);
}

#[test]
fn unknown_keys_are_errors() {
    assert_err("[relay]\nlisen = []", &["unknown field", "lisen"]);
    assert_err("[relai]\n", &["unknown field", "relai"]);
    assert_err("relay_ip = \"1.2.3.4\"", &["relay_ip", "unknown field"]);
}

#[test]
fn wrong_types_name_the_key() {
    assert_err("[relay]\nmax_frame = \"big\"", &["max_frame"]);
    assert_err(
        "[relay]\nmax_allocations_total = -1",
        &["max_allocations_total"],
    );
    assert_err("[relay]\nlisten = \"udp://127.0.0.1:3478\"", &["listen"]);
}

#[test]
fn bad_listen_urls() {
    let cases = [
        ("http://127.0.0.1:80", "the scheme must be udp, tcp or tls"),
        ("127.0.0.1:3478", "expected udp://IP:PORT"),
        ("udp://localhost:3478", "host names are not resolved"),
        ("udp://127.0.0.1", "IP:PORT"),
        ("tcp://::1:3478", "IP:PORT"),
    ];
    for (url, reason) in cases {
        assert_err(
            &with_secret(&format!("listen = [\"{url}\"]")),
            &["invalid listen", url, reason],
        );
    }
    assert_err(
        &with_secret("listen = []"),
        &["invalid listen", "at least one"],
    );
    assert_err(
        &with_secret(r#"listen = ["tcp://127.0.0.1:3478", "tls://127.0.0.1:3478"]"#),
        &["tls://127.0.0.1:3478", "tcp://127.0.0.1:3478 already uses"],
    );
    // UDP and TCP may share a port number; port 0 never clashes.
    load(&with_secret(
        r#"listen = ["tcp://127.0.0.1:0", "tls://127.0.0.1:0", "udp://127.0.0.1:0"]
tls_cert = "c.pem"
tls_key = "k.pem""#,
    ))
    .map(|_| ())
    .or_else(|e| match e {
        ConfigError::Tls(_) => Ok(()),
        e => Err(e),
    })
    .unwrap();
    load(&with_secret(
        r#"listen = ["udp://127.0.0.1:3478", "tcp://127.0.0.1:3478"]"#,
    ))
    .unwrap();
}

#[test]
fn bad_ip_addresses() {
    let cases = [
        ("relay_ip", "relay.example.org", "not an IP address"),
        ("relay_ip", "::1", "not an IPv4 address"),
        ("relay_ip", "0.0.0.0", "specific unicast address"),
        ("relay_ip6", "192.0.2.1", "not an IPv6 address"),
        ("relay_ip6", "::ffff:192.0.2.1", "IPv4-mapped"),
        ("external_ip", "2001:db8::1", "not an IPv4 address"),
        ("external_ip6", "nope", "not an IP address"),
    ];
    for (key, value, reason) in cases {
        assert_err(
            &with_secret(&format!("{key} = \"{value}\"")),
            &[&format!("invalid {key} \"{value}\""), reason],
        );
    }
    assert_err(
        &with_secret("external_ip6 = \"2001:db8::7\""),
        &["external_ip6 is set but relay_ip6 is not"],
    );
}

#[test]
fn bad_port_ranges() {
    let cases = [
        ("9-1", "the start port 9 is above the end port 1"),
        ("0-10", "ports 1..=65535"),
        ("abc", "expected START-END"),
        ("50000", "expected START-END"),
        ("70000-70001", "ports 1..=65535"),
    ];
    for (value, reason) in cases {
        assert_err(
            &with_secret(&format!("relay_ports = \"{value}\"")),
            &[&format!("invalid relay_ports \"{value}\""), reason],
        );
    }
    let c = load(&with_secret("relay_ports = \"3478-3478\"")).unwrap();
    assert_eq!(c.relay_ports, 3478..=3478);
}

#[test]
fn bad_cidrs() {
    assert_err(
        &with_secret("allowed_peers = [\"10.0.0.1/8\"]"),
        &[
            "invalid allowed_peers entry",
            "10.0.0.1/8",
            "did you mean 10.0.0.0/8",
        ],
    );
    assert_err(
        &with_secret("denied_peers = [\"example.org/24\"]"),
        &["invalid denied_peers entry", "example.org/24"],
    );
    assert_err(
        &with_secret("denied_peers = [\"10.0.0.0/33\"]"),
        &["denied_peers", "at most 32"],
    );
}

#[test]
fn numbers_out_of_range() {
    let cases = [
        ("max_frame", "1499", "between 1500 and 65555"),
        ("max_frame", "65556", "between 1500 and 65555"),
        ("threads", "100000", "between 0 and 1024"),
        ("busy_poll_us", "1001", "between 0 and 1000"),
        ("max_allocations_total", "0", "between 1 and"),
        ("max_connections_per_ip", "0", "between 1 and"),
        ("unauthenticated_burst", "0", "between 1 and"),
        ("handshake_timeout_secs", "0", "between 1 and"),
        ("idle_timeout_secs", "0", "between 1 and"),
        ("default_lifetime_secs", "0", "between 1 and"),
        (
            "max_bytes_per_sec_total",
            "12500000001",
            "between 0 and 12500000000",
        ),
        (
            "max_bytes_per_sec_per_allocation",
            "99999999999999",
            "between 0 and 12500000000",
        ),
    ];
    for (key, value, reason) in cases {
        assert_err(
            &with_secret(&format!("{key} = {value}")),
            &[&format!("invalid {key} \"{value}\""), reason],
        );
    }
    assert_err(
        &with_secret("default_lifetime_secs = 601\nmax_lifetime_secs = 600"),
        &[
            "default_lifetime_secs",
            "must not exceed max_lifetime_secs (600)",
        ],
    );
}

#[test]
fn bad_realm() {
    assert_err(
        &with_secret("realm = \"\""),
        &["invalid realm", "1 to 127 characters"],
    );
    let long = "r".repeat(128);
    assert_err(
        &with_secret(&format!("realm = \"{long}\"")),
        &["invalid realm"],
    );
}

#[test]
fn no_credentials() {
    assert_eq!(
        err("[relay]\n"),
        "no credentials: set users or auth_secrets (or ONIONRTC_AUTH_SECRET)"
    );
    assert_eq!(
        err("[relay]\nusers = {}\nauth_secrets = []"),
        "no credentials: set users or auth_secrets (or ONIONRTC_AUTH_SECRET)"
    );
    load("[relay]\nusers = { alice = \"pw\" }").unwrap();
}

#[test]
fn credentials_are_checked() {
    assert_err(
        "[relay]\nauth_secrets = [\"ok\", \"\"]",
        &["invalid credentials", "shared secret #1 is empty"],
    );
    assert_err(
        "[relay]\nusers = { \"\" = \"pw\" }",
        &["invalid credentials"],
    );
}

#[test]
fn tls_listener_needs_files() {
    assert_err(
        &with_secret(r#"listen = ["udp://127.0.0.1:3478", "tls://127.0.0.1:5349"]"#),
        &["listener tls://127.0.0.1:5349 needs tls_cert and tls_key"],
    );
    assert_err(
        &with_secret("tls_cert = \"cert.pem\""),
        &["tls_cert is set but tls_key is not"],
    );
    assert_err(
        &with_secret("tls_key = \"key.pem\""),
        &["tls_key is set but tls_cert is not"],
    );
}

/// A folder with a self-signed `cert.pem` and `key.pem`.
fn tls_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    dir
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("onionrtc.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn tls_paths_resolve_against_the_file_and_load() {
    let dir = tls_dir();
    let path = write_config(
        dir.path(),
        &with_secret(
            "listen = [\"tls://127.0.0.1:5349\"]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"",
        ),
    );
    let c = RelayConfig::from_file(&path).unwrap();
    assert_eq!(
        c.tls,
        Some(TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        })
    );
    c.validate().unwrap();
    assert!(c.tls_server_config().unwrap().is_some());
    let plain = parse(&with_secret("")).unwrap();
    assert!(plain.tls_server_config().unwrap().is_none());
}

#[test]
fn unusable_tls_files_are_named() {
    let dir = tls_dir();
    std::fs::write(dir.path().join("garbage.pem"), "garbage").unwrap();
    for (cert, key, needle) in [
        ("missing.pem", "key.pem", "cannot read TLS certificate file"),
        ("garbage.pem", "key.pem", "holds no certificate"),
        ("cert.pem", "garbage.pem", "holds no private key"),
    ] {
        let text = with_secret(&format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\""));
        let path = write_config(dir.path(), &text);
        let e = RelayConfig::from_file(&path)
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        let bad = if needle.contains("key") { key } else { cert };
        assert!(e.contains(needle) && e.contains(bad), "{e}");
    }
}

#[test]
fn missing_file_is_named() {
    let e = RelayConfig::from_file(Path::new("/nonexistent/onionrtc.toml")).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(text.contains("/nonexistent/onionrtc.toml"), "{text}");
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn overrides_replace_values() {
    let mut c = parse(FULL).unwrap();
    let o = Overrides {
        listen: strings(&["udp://[::1]:4000", "tcp://192.0.2.5:4001"]),
        users: strings(&["carol:c:with:colons"]),
        realm: Some("flags.example".into()),
        relay_ip: Some("192.0.2.99".into()),
        relay_ip6: Some("2001:db8::99".into()),
        external_ip: Some("203.0.113.99".into()),
        external_ip6: Some("2001:db8::98".into()),
        relay_ports: Some("40000-40010".into()),
        metrics: Some("[::1]:9000".into()),
        tls_cert: Some("c.pem".into()),
        tls_key: Some("k.pem".into()),
        dangerous_allow_loopback_peers: false,
        log_client_addresses: false,
    };
    c.apply_overrides(&o).unwrap();
    let listen: Vec<String> = c.listen.iter().map(Listen::to_string).collect();
    assert_eq!(listen, ["udp://[::1]:4000", "tcp://192.0.2.5:4001"]);
    assert_eq!(c.users.len(), 1);
    assert_eq!(
        (c.users[0].0.as_str(), c.users[0].1.expose()),
        ("carol", "c:with:colons")
    );
    assert_eq!(c.realm, "flags.example");
    assert_eq!(c.relay_ip, ip("192.0.2.99"));
    assert_eq!(c.relay_ip6, Some(ip("2001:db8::99")));
    assert_eq!(c.external_ip, Some(ip("203.0.113.99")));
    assert_eq!(c.external_ip6, Some(ip("2001:db8::98")));
    assert_eq!(c.relay_ports, 40000..=40010);
    assert_eq!(c.metrics, Some(sa("[::1]:9000")));
    assert_eq!(
        c.tls,
        Some(TlsFiles {
            cert: "c.pem".into(),
            key: "k.pem".into()
        })
    );
    // Switches given as false leave the file's true values alone.
    assert!(c.dangerous_allow_loopback_peers && c.log_client_addresses);
    // The secrets of the file stay.
    assert_eq!(c.auth_secrets.len(), 2);
}

#[test]
fn empty_overrides_change_nothing() {
    let mut c = parse(FULL).unwrap();
    c.apply_overrides(&Overrides::default()).unwrap();
    assert_eq!(c, parse(FULL).unwrap());
}

#[test]
fn switch_overrides_turn_settings_on() {
    let mut c = RelayConfig::defaults();
    c.apply_overrides(&Overrides {
        dangerous_allow_loopback_peers: true,
        log_client_addresses: true,
        ..Overrides::default()
    })
    .unwrap();
    assert!(c.dangerous_allow_loopback_peers && c.log_client_addresses);
}

#[test]
fn derived_relay_ip_follows_listen_overrides() {
    let mut c = RelayConfig::defaults().with_auth_secret(SECRET);
    c.apply_overrides(&Overrides {
        listen: strings(&["udp://192.0.2.7:3478"]),
        ..Overrides::default()
    })
    .unwrap();
    assert_eq!(c.relay_ip, ip("192.0.2.7"));
    c.apply_overrides(&Overrides {
        listen: strings(&["udp://0.0.0.0:3478"]),
        ..Overrides::default()
    })
    .unwrap();
    assert!(matches!(
        c.validate(),
        Err(ConfigError::MissingRelayIp { .. })
    ));
    // An explicit relay_ip in the file is kept.
    let mut c = parse(&with_secret("relay_ip = \"192.0.2.1\"")).unwrap();
    c.apply_overrides(&Overrides {
        listen: strings(&["udp://198.51.100.1:3478"]),
        ..Overrides::default()
    })
    .unwrap();
    assert_eq!(c.relay_ip, ip("192.0.2.1"));
}

#[test]
fn tls_overrides_complete_the_file() {
    let mut c = parse(&with_secret("tls_cert = \"a.pem\"\ntls_key = \"b.pem\"")).unwrap();
    c.apply_overrides(&Overrides {
        tls_key: Some("other.pem".into()),
        ..Overrides::default()
    })
    .unwrap();
    let tls = c.tls.clone().unwrap();
    assert_eq!(tls.cert, Path::new("/etc/onionrtc/a.pem"));
    assert_eq!(tls.key, Path::new("other.pem"));
    let mut c = RelayConfig::defaults();
    let e = c
        .apply_overrides(&Overrides {
            tls_cert: Some("a.pem".into()),
            ..Overrides::default()
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--tls-cert is set but --tls-key is not: give both or neither"
    );
}

#[test]
fn bad_override_values_name_the_flag() {
    let cases: [(Overrides, &str); 6] = [
        (
            Overrides {
                listen: strings(&["udp://host:1"]),
                ..Overrides::default()
            },
            "invalid --listen \"udp://host:1\"",
        ),
        (
            Overrides {
                relay_ip: Some("::1".into()),
                ..Overrides::default()
            },
            "invalid --relay-ip \"::1\": not an IPv4 address",
        ),
        (
            Overrides {
                relay_ip6: Some("1.2.3.4".into()),
                ..Overrides::default()
            },
            "invalid --relay-ip6 \"1.2.3.4\"",
        ),
        (
            Overrides {
                relay_ports: Some("9-1".into()),
                ..Overrides::default()
            },
            "invalid --relay-ports \"9-1\"",
        ),
        (
            Overrides {
                metrics: Some("localhost:9641".into()),
                ..Overrides::default()
            },
            "invalid --metrics \"localhost:9641\"",
        ),
        (
            Overrides {
                realm: Some(String::new()),
                ..Overrides::default()
            },
            "invalid --realm \"\"",
        ),
    ];
    for (o, needle) in cases {
        let e = RelayConfig::defaults()
            .apply_overrides(&o)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
}

#[test]
fn bad_user_flags_do_not_echo_the_password() {
    for (flag, needle) in [
        ("alice-pa55-word", "no colon"),
        (":pa55-word", "the name is empty"),
        ("alice:", "the password is empty"),
    ] {
        let e = RelayConfig::defaults()
            .apply_overrides(&Overrides {
                users: vec![flag.to_owned()],
                ..Overrides::default()
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid --user") && e.contains(needle), "{e}");
        assert!(!e.contains("pa55"), "{e}");
    }
    let e = RelayConfig::defaults()
        .apply_overrides(&Overrides {
            users: strings(&["alice:pa55-1", "alice:pa55-2"]),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"alice\" is listed twice") && !e.contains("pa55"),
        "{e}"
    );
}

#[test]
fn env_secret_goes_first() {
    let mut c = parse(&with_secret("")).unwrap();
    c.apply_env_secret(Some("from-env"));
    let secrets: Vec<&str> = c.auth_secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["from-env", SECRET]);
    // The same secret again moves to the front, without a duplicate.
    c.apply_env_secret(Some(SECRET));
    let secrets: Vec<&str> = c.auth_secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, [SECRET, "from-env"]);
    // Unset or empty: nothing changes.
    let before = c.clone();
    c.apply_env_secret(None);
    c.apply_env_secret(Some(""));
    assert_eq!(c, before);
}

#[test]
fn load_validates_after_overrides_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[relay]\nrealm = \"example.org\"\n");
    let file = Some(path.as_path());
    let e = RelayConfig::load(file, &Overrides::default(), None).unwrap_err();
    assert!(matches!(e, ConfigError::NoCredentials), "{e}");
    let users = Overrides {
        users: strings(&["alice:pw"]),
        ..Overrides::default()
    };
    let c = RelayConfig::load(file, &users, None).unwrap();
    assert_eq!(c.realm, "example.org");
    let c = RelayConfig::load(file, &Overrides::default(), Some("env-secret")).unwrap();
    assert_eq!(c.auth_secrets[0].expose(), "env-secret");
    // No file: the defaults.
    let c = RelayConfig::load(None, &Overrides::default(), Some("env-secret")).unwrap();
    assert_eq!(c.realm, "onionrtc");
}

#[test]
fn server_config_carries_every_setting() {
    let mut c = load(FULL).unwrap();
    let s = c.to_server_config().unwrap();
    assert_eq!(s.credentials.realm(), "example.org");
    assert_eq!(s.relay.ipv4, Some(ip("192.0.2.10")));
    assert_eq!(s.relay.ipv6, Some(ip("2001:db8::10")));
    assert_eq!(s.relay.external_ipv4, Some(ip("203.0.113.7")));
    assert_eq!(s.relay.external_ipv6, Some(ip("2001:db8::7")));
    assert_eq!(s.ports, 50000..=50999);
    assert_eq!(s.default_lifetime, Duration::from_secs(300));
    assert_eq!(s.max_lifetime, Duration::from_secs(900));
    assert_eq!(
        s.software,
        Some(format!("OnionRTC {}", env!("CARGO_PKG_VERSION")))
    );
    assert!(!s.tcp_relay);
    assert_eq!(s.limits.allocations_per_user, 3);
    assert_eq!(s.limits.allocations_per_static_user, 2);
    assert_eq!(s.limits.allocations_per_ip, 4);
    assert_eq!(s.limits.allocations_total, 5);
    assert_eq!(s.limits.unauthenticated_rate, 11);
    assert_eq!(s.limits.unauthenticated_burst, 12);
    // Allowed overrides the default deny list; denied refuses; loopback on.
    assert!(s.policy.check(sa("10.1.2.3:5000")).is_ok());
    assert!(s.policy.check(sa("10.2.0.1:5000")).is_err());
    assert!(s.policy.check(sa("198.51.100.9:5000")).is_err());
    assert!(s.policy.check(sa("127.0.0.1:5000")).is_ok());
    assert!(s
        .credentials
        .keys("alice", stun::PasswordAlgorithm::Md5, 0)
        .is_ok());

    c.software = false;
    c.dangerous_allow_loopback_peers = false;
    let s = c.to_server_config().unwrap();
    assert_eq!(s.software, None);
    assert!(s.policy.check(sa("127.0.0.1:5000")).is_err());
}

#[test]
fn redacted_toml_hides_secrets_and_round_trips() {
    let c = load(FULL).unwrap();
    let text = c.redacted_toml();
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.contains(SECRET) && !text.contains("older"), "{text}");
    assert!(text.contains("users = { alice = \"<redacted>\", \"bob smith\" = \"<redacted>\" }"));
    assert!(text.contains("auth_secrets = [\"<redacted>\", \"<redacted>\"]"));
    for key in [
        "listen",
        "realm",
        "relay_ip",
        "relay_ip6",
        "external_ip",
        "external_ip6",
        "relay_ports",
        "users",
        "auth_secrets",
        "max_allocations_per_user",
        "max_allocations_per_static_user",
        "max_allocations_per_ip",
        "max_allocations_total",
        "max_bytes_per_sec_per_allocation",
        "max_bytes_per_sec_total",
        "allowed_peers",
        "denied_peers",
        "dangerous_allow_loopback_peers",
        "metrics",
        "log_client_addresses",
        "software",
        "max_connections",
        "max_connections_per_ip",
        "handshake_timeout_secs",
        "idle_timeout_secs",
        "max_frame",
        "tcp_relay",
        "threads",
        "busy_poll_us",
        "unauthenticated_rate",
        "unauthenticated_burst",
        "default_lifetime_secs",
        "max_lifetime_secs",
    ] {
        assert!(
            text.contains(&format!("\n{key} = ")),
            "{key} missing from\n{text}"
        );
    }
    // It is valid TOML that reads back as the same configuration, secrets aside.
    let mut back = parse(&text).unwrap();
    assert!(back.users.iter().all(|(_, p)| p.expose() == REDACTED));
    back.users = c.users.clone();
    back.auth_secrets = c.auth_secrets.clone();
    assert_eq!(back, c);
}

#[test]
fn redacted_toml_shows_absent_keys_as_comments() {
    let c = RelayConfig::defaults().with_auth_secret(SECRET);
    let text = c.redacted_toml();
    assert!(!text.contains(SECRET));
    for key in [
        "relay_ip6",
        "external_ip",
        "external_ip6",
        "tls_cert",
        "tls_key",
        "metrics",
    ] {
        assert!(
            text.contains(&format!("# {key}: not set")),
            "{key}:\n{text}"
        );
    }
    assert!(text.contains("users = {}"));
    assert_eq!(parse(&text).unwrap().auth_secrets.len(), 1);
}

#[test]
fn debug_output_hides_secrets() {
    let c = load(FULL).unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains(PASSWORD) && !debug.contains(SECRET),
        "{debug}"
    );
    assert_eq!(format!("{}", Secret::new(SECRET)), REDACTED);
    let o = Overrides {
        users: strings(&["alice:pa55-word-alice"]),
        ..Overrides::default()
    };
    let debug = format!("{o:?}");
    assert!(
        debug.contains("alice") && !debug.contains(PASSWORD),
        "{debug}"
    );
}

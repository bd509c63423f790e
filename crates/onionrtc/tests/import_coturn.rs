//! `onionrtc import-coturn`: coturn's configuration translated into ours,
//! checked by `check-config`, and a round trip: coturn's `turnserver` and
//! then our relay started from the same `turnserver.conf`, with coturn's
//! `turnutils_uclient` getting through both with the same credentials.

// Helpers outside `#[test]` fns unwrap too: a panic in a test is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use relay::config::RelayConfig;
use testkit::coturn::{parse_uclient, start_peer, UclientReport};
use testkit::{free_port, require_tool, run_bounded, wait_until, Proc};

/// Debian's example configuration, from the `coturn` package.
const DEBIAN_CONF: &str = "/etc/turnserver.conf";
const ENV: &str = "ONIONRTC_AUTH_SECRET";
const PASSWORD: &str = "Alice-import-pw-1";
const SECRET_A: &str = "rest-secret-aaaa-1111";
const SECRET_B: &str = "rest-secret-bbbb-2222";

fn onionrtc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_onionrtc"));
    c.env_remove(ENV).env_remove("RUST_LOG");
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `import-coturn FILE`: exit code, stdout, stderr.
fn import(conf: &Path) -> (i32, String, String) {
    let out = onionrtc().arg("import-coturn").arg(conf).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Imports `coturn` (written to DIR/turnserver.conf) into DIR/onionrtc.toml;
/// returns its path, the TOML and the summary.
fn import_text(dir: &Path, coturn: &str) -> (PathBuf, String, String) {
    let conf = dir.join("turnserver.conf");
    std::fs::write(&conf, coturn).unwrap();
    let (code, toml, summary) = import(&conf);
    assert_eq!(code, 0, "{summary}");
    let path = dir.join("onionrtc.toml");
    std::fs::write(&path, &toml).unwrap();
    (path, toml, summary)
}

/// `check-config FILE EXTRA…` with an optional environment secret.
fn check_config(file: &Path, extra: &[&str], secret: Option<&str>) -> (i32, String, String) {
    let mut c = onionrtc();
    c.arg("check-config").arg(file).args(extra);
    if let Some(s) = secret {
        c.env(ENV, s);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// The imported TOML as our relay loads it (validated).
fn load(path: &Path) -> RelayConfig {
    let c = RelayConfig::from_file(path).unwrap();
    c.validate().unwrap();
    c
}

fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// The lines of a coturn file that are options (not comments or blanks).
fn active_options(conf: &str) -> usize {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[test]
fn debian_turnserver_conf_as_shipped() {
    if !require_tool("turnserver", &["--version"]) {
        return;
    }
    let shipped = std::fs::read_to_string(DEBIAN_CONF).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, toml, summary) = import_text(dir.path(), &shipped);
    eprintln!("{summary}");
    // Every active option of the file is accounted for, none unknown.
    let n = active_options(&shipped);
    assert!(
        summary.starts_with(&format!("{n} coturn options: ")),
        "{summary}"
    );
    assert!(!summary.contains("unknown coturn option"), "{summary}");
    assert!(toml.contains("\n[relay]\n"), "{toml}");
    // coturn listens on every address on 3478 by default.
    let c = RelayConfig::from_file(&path).unwrap();
    let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
    assert_eq!(
        listen,
        [
            "udp://0.0.0.0:3478",
            "tcp://0.0.0.0:3478",
            "udp://[::]:3478",
            "tcp://[::]:3478"
        ]
    );
    // What a file without relay address and credentials lacks is said, and
    // check-config refuses it as it is (negative control)...
    assert!(summary.contains("needed before use: relay_ip"), "{summary}");
    assert!(
        summary.contains("needed before use: credentials"),
        "{summary}"
    );
    assert!(toml.contains("# NEEDED BEFORE USE: relay_ip"), "{toml}");
    let (code, _, err) = check_config(&path, &[], None);
    assert_eq!(code, 2, "{err}");
    // ...and accepts it once the relay address and a secret are given the
    // documented ways.
    let (code, out, err) = check_config(&path, &["--relay-ip", "127.0.0.1"], Some(SECRET_A));
    assert_eq!(code, 0, "{out}\n{err}");
}

/// Debian's file with every example option uncommented: every option coturn
/// documents there is known (translated, not needed, or unsupported with a
/// reason), and each value that is translated is valid for our relay.
#[test]
fn debian_turnserver_conf_every_option_uncommented() {
    if !require_tool("turnserver", &["--version"]) {
        return;
    }
    let shipped = std::fs::read_to_string(DEBIAN_CONF).unwrap();
    let mut all = String::new();
    for line in shipped.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        // `#key=value`, `#flag`, or `# key=value` (as the file writes some).
        let (body, spaced) = match rest.strip_prefix(' ') {
            Some(b) => (b, true),
            None => (rest, false),
        };
        let key = body.split('=').next().unwrap_or("");
        let is_key = key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if is_key && (body.contains('=') || (!spaced && key == body)) {
            all.push_str(body);
            all.push('\n');
        }
    }
    let n = active_options(&all);
    assert!(n >= 100, "only {n} options found in {DEBIAN_CONF}:\n{all}");
    let dir = tempfile::tempdir().unwrap();
    let (path, toml, summary) = import_text(dir.path(), &all);
    eprintln!("{summary}");
    assert!(
        summary.starts_with(&format!("{n} coturn options: ")),
        "{summary}"
    );
    assert!(!summary.contains("unknown coturn option"), "{summary}");
    // Every translated value is valid on its own (the file as a whole asks
    // for no listener at all, so only the parse is checked).
    let c = RelayConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(c.realm, "mycompany.org");
    assert_eq!(c.denied_peers[0].to_string(), "83.166.64.0/19");
    // The example's secrets are in the TOML, never in the summary.
    assert!(toml.contains("\"north\""), "{toml}");
    assert!(!summary.contains("north") && !summary.contains("youhavetoberealistic"));
    assert!(!summary.contains("bc807ee29df3c9ffa736523fb2c4e8ee"));
}

#[test]
fn every_translated_option() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let coturn = format!(
        "# a coturn file with every option the importer translates\n\
         listening-port=3479\n\
         tls-listening-port=5350\n\
         listening-ip=127.0.0.1\n\
         listening-ip=::1\n\
         relay-ip=127.0.0.1\n\
         external-ip=203.0.113.7\n\
         min-port=40000\n\
         max-port=40999\n\
         realm=example.org\n\
         lt-cred-mech\n\
         user=alice:{PASSWORD}\n\
         user=bob:0x0123456789abcdef0123456789abcdef\n\
         cert={cert}\n\
         pkey={key}\n\
         total-quota=500\n\
         user-quota=20\n\
         max-bps=125000\n\
         bps-capacity=12500000\n\
         denied-peer-ip=83.166.64.0-83.166.95.255\n\
         allowed-peer-ip=10.20.0.0-10.20.255.255\n\
         allowed-peer-ip 192.168.1.5\n\
         no-loopback-peers\n\
         no-multicast-peers\n\
         no-tcp-relay\n\
         no-dtls\n\
         prometheus\n\
         fingerprint\n\
         no-software-attribute\n\
         server-name=turn.example.org\n\
         cli-password=cli-pw-9\n",
        cert = cert.display(),
        key = key.display()
    );
    let (path, toml, summary) = import_text(dir.path(), &coturn);
    eprintln!("{toml}\n{summary}");
    let (code, out, err) = check_config(&path, &[], None);
    assert_eq!(code, 0, "{out}\n{err}");
    let c = load(&path);
    let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
    assert_eq!(
        listen,
        [
            "udp://127.0.0.1:3479",
            "tcp://127.0.0.1:3479",
            "tls://127.0.0.1:5350",
            "udp://[::1]:3479",
            "tcp://[::1]:3479",
            "tls://[::1]:5350"
        ]
    );
    assert_eq!(c.realm, "example.org");
    assert_eq!(c.relay_ip.to_string(), "127.0.0.1");
    assert_eq!(c.relay_ip6.map(|i| i.to_string()).as_deref(), Some("::1"));
    assert_eq!(
        c.external_ip.map(|i| i.to_string()).as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(c.relay_ports, 40000..=40999);
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(
        (tls.cert.as_path(), tls.key.as_path()),
        (cert.as_path(), key.as_path())
    );
    let users: Vec<(&str, &str)> = c
        .users
        .iter()
        .map(|(n, p)| (n.as_str(), p.expose()))
        .collect();
    assert_eq!(users, [("alice", PASSWORD)]);
    assert!(c.auth_secrets.is_empty());
    assert_eq!(c.max_allocations_total, 500);
    assert_eq!(
        (
            c.max_allocations_per_user,
            c.max_allocations_per_static_user
        ),
        (20, 20)
    );
    assert_eq!(
        (
            c.max_bytes_per_sec_per_allocation,
            c.max_bytes_per_sec_total
        ),
        (125_000, 12_500_000)
    );
    let cidrs = |v: &[turn::policy::Cidr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(cidrs(&c.denied_peers), ["83.166.64.0/19"]);
    assert_eq!(cidrs(&c.allowed_peers), ["10.20.0.0/16", "192.168.1.5/32"]);
    assert!(!c.dangerous_allow_loopback_peers && !c.tcp_relay && !c.software);
    assert_eq!(
        c.metrics.map(|m| m.to_string()).as_deref(),
        Some("127.0.0.1:9641")
    );
    // The summary: the unsupported options with their reasons, no secret.
    assert!(summary.starts_with("30 coturn options: "), "{summary}");
    assert!(
        summary.contains("user=bob:<redacted>: a hashed key"),
        "{summary}"
    );
    assert!(summary.contains("server-name=turn.example.org: the SOFTWARE text is fixed"));
    assert!(summary.contains("3 unsupported"), "{summary}");
    assert!(
        !summary.contains(PASSWORD) && !summary.contains("cli-pw-9"),
        "{summary}"
    );
    assert!(!summary.contains("0123456789abcdef"), "{summary}");
    // The TOML lists them too, as comments.
    assert!(
        toml.contains("# unsupported: line 13: user=bob:<redacted>"),
        "{toml}"
    );
    assert!(!toml.contains("cli-pw-9"), "{toml}");
}

/// TURN REST secrets, a NAT mapping in coturn's PUBLIC/PRIVATE form, and
/// listeners turned off.
#[test]
fn rest_secrets_nat_mapping_and_listeners_off() {
    let dir = tempfile::tempdir().unwrap();
    let coturn = format!(
        "external-ip=203.0.113.7/10.0.0.5\n\
         listening-ip=10.0.0.5\n\
         no-udp\n\
         no-tls\n\
         use-auth-secret\n\
         static-auth-secret={SECRET_A}\n\
         static-auth-secret={SECRET_B}\n\
         user=alice:{PASSWORD}\n\
         allow-loopback-peers\n\
         relay-threads=4\n\
         max-allocate-lifetime=300\n"
    );
    let (path, toml, summary) = import_text(dir.path(), &coturn);
    eprintln!("{toml}\n{summary}");
    let (code, out, err) = check_config(&path, &[], None);
    assert_eq!(code, 0, "{out}\n{err}");
    let c = load(&path);
    let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
    assert_eq!(listen, ["tcp://10.0.0.5:3478"]);
    assert_eq!(c.relay_ip.to_string(), "10.0.0.5");
    assert_eq!(
        c.external_ip.map(|i| i.to_string()).as_deref(),
        Some("203.0.113.7")
    );
    let secrets: Vec<&str> = c.auth_secrets.iter().map(|s| s.expose()).collect();
    assert_eq!(secrets, [SECRET_A, SECRET_B]);
    // coturn does not use static users with use-auth-secret: neither do we.
    assert!(c.users.is_empty());
    assert!(toml.contains("# users = "), "{toml}");
    assert!(c.dangerous_allow_loopback_peers);
    assert_eq!(c.threads, 4);
    assert_eq!(c.max_lifetime, Duration::from_secs(300));
    assert_eq!(c.default_lifetime, Duration::from_secs(300));
    for s in [SECRET_A, SECRET_B, PASSWORD] {
        assert!(!summary.contains(s), "{summary}");
    }
}

#[test]
fn unreadable_file_exits_2() {
    let (code, out, err) = import(Path::new("/nonexistent/turnserver.conf"));
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("cannot read coturn configuration /nonexistent/turnserver.conf"));
}

// ---- round trip -------------------------------------------------------------

/// Waits until something accepts TCP on 127.0.0.1:`port` (bounded).
fn wait_listening(port: u16, who: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let up = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
    assert!(up.is_some(), "{who} does not listen on {addr}");
}

/// Waits until UDP 127.0.0.1:`port` is free again (bounded).
fn wait_free(port: u16) {
    let free = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        UdpSocket::bind(("127.0.0.1", port)).ok()
    });
    assert!(free.is_some(), "port {port} stays busy");
}

fn uclient(port: u16, tls_port: u16, peer: u16, extra: &[&str]) -> UclientReport {
    let secure = extra.contains(&"-S");
    let port = if secure { tls_port } else { port };
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-u", "alice", "-w", PASSWORD])
        .args(["-e", "127.0.0.1", "-r", &peer.to_string()])
        .args(extra)
        .args(["-p", &port.to_string(), "127.0.0.1"]);
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    parse_uclient(&out).unwrap_or_else(|| {
        panic!(
            "no report from {cmd:?}\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// The same uclient runs (UDP, TCP, TLS) must get through clean.
fn uclient_runs(who: &str, port: u16, tls_port: u16, peer: u16) {
    for extra in [
        &["-c", "-n", "50", "-l", "120", "-z", "5"][..],
        &["-t", "-c", "-n", "50", "-l", "120", "-z", "5"][..],
        &["-t", "-S", "-c", "-n", "50", "-l", "120", "-z", "5"][..],
    ] {
        let r = uclient(port, tls_port, peer, extra);
        eprintln!("{who} {extra:?}: {r:?}");
        assert_eq!((r.sent, r.received, r.lost), (50, 50, 0), "{who} {extra:?}");
    }
}

/// One turnserver.conf: coturn's `turnserver -c` serves uclient with it,
/// then our relay started from its import serves the same uclient runs with
/// the same credentials (UDP, TCP, TLS).
#[test]
fn round_trip_coturn_then_onionrtc_from_the_same_file() {
    if !require_tool("turnutils_uclient", &[]) || !require_tool("turnserver", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = write_cert(d);
    let (port, tls_port) = (free_port(), free_port());
    let coturn = format!(
        "listening-ip=127.0.0.1\n\
         listening-port={port}\n\
         tls-listening-port={tls_port}\n\
         relay-ip=127.0.0.1\n\
         min-port=41000\n\
         max-port=41999\n\
         realm=roundtrip.test\n\
         lt-cred-mech\n\
         user=alice:{PASSWORD}\n\
         cert={cert}\n\
         pkey={key}\n\
         allow-loopback-peers\n\
         fingerprint\n\
         no-dtls\n\
         no-cli\n\
         no-rfc5780\n\
         no-stun-backward-compatibility\n\
         no-software-attribute\n\
         userdb={db}\n\
         pidfile={pid}\n\
         log-file={log}\n\
         simple-log\n\
         no-stdout-log\n",
        cert = cert.display(),
        key = key.display(),
        db = d.join("turndb").display(),
        pid = d.join("turnserver.pid").display(),
        log = d.join("turnserver.log").display(),
    );
    let conf = d.join("turnserver.conf");
    std::fs::write(&conf, &coturn).unwrap();
    let (_peer, peer) = start_peer();

    // coturn itself, with the file.
    let mut cmd = Command::new("turnserver");
    cmd.arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let coturn_proc = Proc::spawn(&mut cmd).unwrap();
    wait_listening(port, "turnserver");
    uclient_runs("coturn", port, tls_port, peer);
    drop(coturn_proc); // killed by PID
    wait_free(port);

    // Ours, from the import of the same file.
    let (path, toml, summary) = import_text(d, &coturn);
    eprintln!("{toml}\n{summary}");
    assert!(!summary.contains("unknown coturn option"), "{summary}");
    let (code, out, err) = check_config(&path, &[], None);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut cmd = onionrtc();
    cmd.args(["relay", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ours = Proc::spawn(&mut cmd).unwrap();
    wait_listening(port, "onionrtc relay");
    wait_listening(tls_port, "onionrtc relay (TLS)");
    uclient_runs("onionrtc", port, tls_port, peer);
}

/// turnserver's command line after `--` (as in a Docker command), alone and
/// after a file whose options it follows.
#[test]
fn turnserver_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let secret_flag = format!("--static-auth-secret={SECRET_A}");
    let out = onionrtc()
        .args([
            "import-coturn",
            "--",
            "-n",
            "--listening-ip=127.0.0.1",
            "-p",
            "3479",
        ])
        .args(["--use-auth-secret", &secret_flag, "--realm", "docker.test"])
        .output()
        .unwrap();
    let (toml, summary) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{summary}");
    assert!(
        summary.starts_with("6 coturn options: 5 translated, 1 not needed"),
        "{summary}"
    );
    assert!(!summary.contains(SECRET_A), "{summary}");
    let path = dir.path().join("onionrtc.toml");
    std::fs::write(&path, &toml).unwrap();
    let c = load(&path);
    let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
    assert_eq!(listen, ["udp://127.0.0.1:3479", "tcp://127.0.0.1:3479"]);
    assert_eq!(c.realm, "docker.test");
    assert_eq!(c.auth_secrets[0].expose(), SECRET_A);

    // The command line comes after the file, as for turnserver.
    let conf = dir.path().join("turnserver.conf");
    std::fs::write(
        &conf,
        "listening-ip=127.0.0.1\nrealm=file.test\nlt-cred-mech\n",
    )
    .unwrap();
    let out = onionrtc()
        .arg("import-coturn")
        .arg(&conf)
        .args([
            "--",
            "--realm=flag.test",
            &format!("--user=alice:{PASSWORD}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&path, &out.stdout).unwrap();
    let c = load(&path);
    assert_eq!(c.realm, "flag.test");
    assert_eq!(c.users[0].0, "alice");
    assert!(!text(&out.stderr).contains(PASSWORD));
}

//! The `onionrtc` binary as an operator runs it: exit codes, messages, and
//! that secrets never reach its output.

// Helpers outside `#[test]` fns unwrap too: a panic in a test is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PASSWORD: &str = "alice-pa55word";
const SECRET: &str = "rest-s3cret-value";
const ENV: &str = "ONIONRTC_AUTH_SECRET";

fn onionrtc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_onionrtc"));
    c.env_remove(ENV).env_remove("RUST_LOG");
    c
}

fn run(args: &[&str]) -> Output {
    onionrtc().args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

/// Runs `check-config FILE` on `body`; exit code, stdout, stderr.
fn check(body: &str, extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "onionrtc.toml", body);
    let mut args = vec!["check-config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn assert_config_error(body: &str, needles: &[&str]) {
    let (code, stdout, stderr) = check(body, &[]);
    assert_eq!(code, 2, "stdout {stdout}\nstderr {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    // The message is not repeated by its error chain.
    assert_eq!(stderr.matches(needles[0]).count(), 1, "repeated: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{stderr:?} lacks {n:?}");
    }
}

#[test]
fn help_and_version() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("relay") && help.contains("check-config") && help.contains("import-coturn"),
        "{help}"
    );

    let out = run(&["--version"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    for sub in ["relay", "check-config"] {
        let out = run(&[sub, "--help"]);
        assert!(out.status.success(), "{sub}");
        let help = text(&out.stdout);
        for flag in [
            "--listen",
            "--user",
            "--realm",
            "--relay-ip ",
            "--relay-ip6",
            "--external-ip ",
            "--external-ip6",
            "--relay-ports",
            "--metrics",
            "--tls-cert",
            "--tls-key",
            "--dangerous-allow-loopback-peers",
            "--log-client-addresses",
        ] {
            assert!(help.contains(flag), "{sub} --help lacks {flag}");
        }
        assert!(help.contains("visible to other local users"), "{help}");
    }
}

#[test]
fn check_config_prints_the_resolved_config_without_secrets() {
    let body = format!(
        "[relay]\nrealm = \"example.org\"\nusers = {{ alice = \"{PASSWORD}\" }}\n\
         auth_secrets = [\"{SECRET}\"]\nrelay_ports = \"50000-50100\"\n"
    );
    let (code, stdout, stderr) = check(&body, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("[relay]"), "{stdout}");
    assert!(stdout.contains("realm = \"example.org\""), "{stdout}");
    assert!(stdout.contains("relay_ports = \"50000-50100\""), "{stdout}");
    assert!(stdout.contains("listen = [\"udp://127.0.0.1:3478\", \"tcp://127.0.0.1:3478\"]"));
    assert!(
        stdout.contains("users = { alice = \"<redacted>\" }"),
        "{stdout}"
    );
    assert!(stdout.contains("max_frame = 4096"), "{stdout}");
    for out in [&stdout, &stderr] {
        assert!(!out.contains(PASSWORD) && !out.contains(SECRET), "{out}");
    }
}

#[test]
fn flags_override_the_file() {
    let (code, stdout, stderr) = check(
        "[relay]\n",
        &[
            "--user",
            &format!("bob:{PASSWORD}"),
            "--listen",
            "udp://192.0.2.1:3478",
            "--realm",
            "flags.example",
            "--log-client-addresses",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("users = { bob = \"<redacted>\" }"),
        "{stdout}"
    );
    assert!(stdout.contains("relay_ip = \"192.0.2.1\""), "{stdout}");
    assert!(stdout.contains("realm = \"flags.example\""), "{stdout}");
    assert!(stdout.contains("log_client_addresses = true"), "{stdout}");
    assert!(!stdout.contains(PASSWORD));

    let (code, _, stderr) = check(
        &format!("[relay]\nauth_secrets = [\"{SECRET}\"]\n"),
        &["--relay-ports", "9-1"],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid --relay-ports \"9-1\""), "{stderr}");
}

#[test]
fn unknown_key_exits_2_naming_it() {
    assert_config_error(
        &format!("[relay]\nauth_secrets = [\"{SECRET}\"]\nrelay_prots = \"1-2\"\n"),
        &["unknown field", "relay_prots"],
    );
}

#[test]
fn bad_value_exits_2() {
    assert_config_error(
        &format!("[relay]\nauth_secrets = [\"{SECRET}\"]\nrelay_ports = \"9-1\"\n"),
        &["relay_ports", "9-1", "start port 9 is above the end port 1"],
    );
    assert_config_error(
        "[relay]\n",
        &["no credentials: set users or auth_secrets (or ONIONRTC_AUTH_SECRET)"],
    );
}

#[test]
fn unreadable_tls_cert_exits_2_naming_the_file() {
    assert_config_error(
        &format!(
            "[relay]\nauth_secrets = [\"{SECRET}\"]\n\
             listen = [\"tls://127.0.0.1:5349\"]\n\
             tls_cert = \"no-such-cert.pem\"\ntls_key = \"no-such-key.pem\"\n"
        ),
        &["no-such-cert.pem", "cannot read TLS certificate file"],
    );
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let out = run(&["check-config", "/nonexistent/onionrtc.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot read configuration file /nonexistent/onionrtc.toml"),
        "{stderr}"
    );
}

#[test]
fn env_secret_makes_a_file_without_credentials_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "onionrtc.toml",
        "[relay]\nrealm = \"example.org\"\n",
    );
    let out = onionrtc()
        .args(["check-config", path.to_str().unwrap()])
        .env(ENV, SECRET)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("auth_secrets = [\"<redacted>\"]"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
}

#[test]
fn relay_without_credentials_exits_2() {
    let out = run(&["relay", "--listen", "udp://127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("error: no credentials"));
}

/// A STUN Binding request (RFC 8489 §6) with a fixed transaction ID.
const BINDING: [u8; 20] = [
    0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
];

#[test]
fn relay_serves_binding_and_stops_on_sigterm() {
    let mut child = onionrtc()
        .args(["relay", "--listen", "udp://127.0.0.1:0"])
        .env(ENV, SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            if let Some((_, addr)) = line.split_once("listening on udp://") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
        all
    });
    let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a.parse().unwrap(),
        Err(e) => {
            let _ = child.kill();
            panic!("no listening line: {e}");
        }
    };

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut answer = None;
    for _ in 0..10 {
        socket.send_to(&BINDING, addr).unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            answer = Some(buf[..n].to_vec());
            break;
        }
    }

    let pid = child.id().to_string();
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the relay did not stop on SIGTERM");
    };
    let log = reader.join().unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!log.contains(SECRET), "{log}");

    let answer = answer.unwrap_or_else(|| panic!("no Binding response\n{log}"));
    assert_eq!(
        &answer[..2],
        &[0x01, 0x01],
        "not a Binding success response"
    );
    assert_eq!(&answer[8..20], &BINDING[8..20], "transaction ID");
}

#[test]
fn check_config_shows_database_url_without_its_password() {
    let body = format!(
        "[relay]\nrealm = \"example.org\"\nauth_secrets = [\"{SECRET}\"]\n[serve]\n\
         database_url = \"postgres://stats:pg-s3cret@127.0.0.1:5432/onionrtc\"\n"
    );
    let (code, stdout, stderr) = check(&body, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("database_url = \"postgres://stats:<redacted>@127.0.0.1:5432/onionrtc\""),
        "{stdout}"
    );
    assert!(!stdout.contains("pg-s3cret") && !stderr.contains("pg-s3cret"));
    // A database on another machine is refused (no TLS: nothing in clear
    // over a network), without repeating the password either.
    let remote = body.replace("127.0.0.1", "db.example");
    let (code, stdout, stderr) = check(&remote, &[]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stderr.contains("database_url") && stderr.contains("not a loopback"),
        "{stderr}"
    );
    assert!(!stdout.contains("pg-s3cret") && !stderr.contains("pg-s3cret"));
}

/// `onionrtc connect` without --via means Tor (embedded): a country preset,
/// which only a launched tor honours, is refused before anything starts,
/// naming the fix.
#[test]
fn connect_defaults_to_tor() {
    let out = run(&[
        "connect",
        "--relay",
        "tls://127.0.0.1:9",
        "--tor-nodes",
        "europe",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    if cfg!(feature = "arti") {
        assert!(err.contains("--tor-binary"), "{err}");
    }
}

/// `onionrtc connect --via direct` says first that it is not anonymous
/// (the relay here is a closed loopback port: the connector warns and runs
/// on; it is killed by PID).
#[test]
fn connect_direct_says_not_anonymous() {
    let mut child = onionrtc()
        .args([
            "connect",
            "--relay",
            "tcp://127.0.0.1:9",
            "--via",
            "direct",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .take(1000)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let first = first.unwrap();
    assert!(first.starts_with("NOT ANONYMOUS: "), "{first}");
    assert!(first.contains("see your IP address"), "{first}");
}

/// `[serve] tls_next_key` (the next TLS key pinned in
/// `/.well-known/onionrtc.json`): printed by `check-config`, and a file
/// that is not a key is a configuration error naming it.
#[test]
fn check_config_checks_the_next_tls_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    write(dir.path(), "next.pem", &key.serialize_pem());
    write(dir.path(), "garbage.pem", "not a key\n");
    let body = |file: &str| {
        format!(
            "[relay]\nusers = {{ alice = \"{PASSWORD}\" }}\n[serve]\ntls_next_key = \"{}\"\n",
            dir.path().join(file).display()
        )
    };
    let (code, stdout, stderr) = check(&body("next.pem"), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("tls_next_key = "), "{stdout}");
    assert_config_error(&body("garbage.pem"), &["garbage.pem", "tls_next_key"]);
    assert_config_error(&body("missing.pem"), &["missing.pem"]);
}

//! `--via tor` plumbing without the Tor network: a stand-in "tor" script
//! reads the torrc the connector wrote, says "Bootstrapped 100%" and runs
//! `microsocks` on the torrc's SocksPort. (Real tor against a private test
//! network: crates/testkit/src/tor.rs.)

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use connector::tor::{TorError, TorOptions, TorProcess};
use connector::Via;

use crate::support::*;

/// Writes an executable script and returns its path.
fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A "tor" that serves SOCKS5 with microsocks on the torrc's port.
fn fake_tor(dir: &Path, microsocks: &Path) -> std::path::PathBuf {
    script(
        dir,
        "fake-tor",
        &format!(
            "torrc=\"$2\"\n\
             port=$(sed -n 's/^SocksPort 127.0.0.1:\\([0-9]*\\).*/\\1/p' \"$torrc\")\n\
             grep -q '^IsolateSOCKSAuth\\|IsolateSOCKSAuth' \"$torrc\" || exit 3\n\
             echo \"[notice] Bootstrapped 100% (done): Done\"\n\
             exec {} -i 127.0.0.1 -p \"$port\"",
            microsocks.display()
        ),
    )
}

fn pid_alive(pid: u32) -> bool {
    // A zombie is as good as dead: the child was killed and is being reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn via_tor_launches_uses_and_kills_tor() {
    let Some(microsocks) = ensure_tool("microsocks", &["microsocks"]) else {
        return;
    };
    let relay = TestRelay::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut c = tls_config(&relay);
    c.via = Via::Tor(TorOptions {
        binary: Some(fake_tor(dir.path(), &microsocks)),
        bootstrap_timeout: Duration::from_secs(10),
        ..TorOptions::default()
    });
    c.web = Some(connector::Endpoint::parse_web("http://127.0.0.1:9").unwrap());
    let h = start(&rt, c);
    let pid = h.tor_pid().unwrap();
    assert!(pid_alive(pid));
    assert!(h.tor_socks_addr().unwrap().ip().is_loopback());
    rt.block_on(h.probe_relay()).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(probe(&sock, h.turn_addr(), Duration::from_secs(10)));
    // /connector.json says "tor".
    let web = h.web_addr().unwrap();
    let body = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(web).await.unwrap();
        let req =
            format!("GET /connector.json HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });
    assert!(body.contains("\"mode\":\"tor\""), "{body}");
    stop(&rt, h);
    assert!(
        eventually(Duration::from_secs(5), || !pid_alive(pid)),
        "tor ({pid}) killed on shutdown"
    );
}

#[test]
fn tor_that_exits_or_hangs_is_reported() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let exits = TorOptions {
        binary: Some(script(
            dir.path(),
            "exits",
            "echo '[err] Reading config failed'; exit 1",
        )),
        bootstrap_timeout: Duration::from_secs(10),
        ..TorOptions::default()
    };
    match rt.block_on(TorProcess::launch(&exits)) {
        Err(TorError::Exited(tail)) => assert!(tail.contains("Reading config failed"), "{tail}"),
        other => panic!("{other:?}"),
    }
    let hangs = TorOptions {
        binary: Some(script(
            dir.path(),
            "hangs",
            "echo '[notice] Bootstrapped 5%'; exec sleep 30",
        )),
        bootstrap_timeout: Duration::from_millis(500),
        ..TorOptions::default()
    };
    match rt.block_on(TorProcess::launch(&hangs)) {
        Err(TorError::Timeout { tail, .. }) => assert!(tail.contains("Bootstrapped 5%"), "{tail}"),
        other => panic!("{other:?}"),
    }
    let missing = TorOptions {
        binary: Some(dir.path().join("no-such-tor")),
        ..TorOptions::default()
    };
    assert!(matches!(
        rt.block_on(TorProcess::launch(&missing)),
        Err(TorError::Spawn { .. })
    ));
}

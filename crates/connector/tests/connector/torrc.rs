//! The generated torrc is one tor accepts (`tor --verify-config` reads it
//! and checks the node sets against the GeoIP files; it contacts no one).

use std::process::Command;
use std::time::Duration;

use connector::tor::{torrc, TorNodes};

use crate::support::*;

#[test]
fn tor_accepts_generated_torrc() {
    let Some(tor) = ensure_tool("tor", &["tor", "tor-geoipdb"]) else {
        return;
    };
    let geoip = || {
        let p = std::path::PathBuf::from(connector::tor::GEOIP);
        p.is_file().then_some(p)
    };
    if ensure("tor's GeoIP file", geoip, &["tor-geoipdb"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for preset in [TorNodes::Europe, TorNodes::Scandinavia, TorNodes::Any] {
        let data = dir.path().join(format!("data-{preset}"));
        std::fs::create_dir(&data).unwrap();
        let file = dir.path().join(format!("torrc-{preset}"));
        std::fs::write(&file, torrc(preset, free_port(), &data)).unwrap();
        let out = run_bounded(
            Command::new(&tor)
                .arg("--verify-config")
                .arg("-f")
                .arg(&file)
                .arg("--defaults-torrc")
                .arg(dir.path().join("none")),
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Configuration was valid"),
            "{preset}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_broken_torrc_is_refused() {
    // The check above means something: tor refuses a bad value.
    let Some(tor) = ensure_tool("tor", &["tor", "tor-geoipdb"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("torrc");
    let text = torrc(TorNodes::Europe, free_port(), dir.path())
        .replace("StrictNodes 1", "StrictNodes maybe");
    std::fs::write(&file, text).unwrap();
    let out = run_bounded(
        Command::new(&tor)
            .arg("--verify-config")
            .arg("-f")
            .arg(&file),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
}

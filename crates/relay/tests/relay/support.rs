//! Test support: a relay on free loopback ports, child processes with
//! deadlines, coturn output parsing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use testkit::{free_port, run_bounded};

use relay::config::{Listen, ListenProto, RelayConfig, Secret, TlsFiles};
use relay::RelayHandle;

/// Whether coturn's tools are installed (required in CI).
pub fn require_coturn() -> bool {
    testkit::require_tool("turnutils_uclient", &[])
}

pub const USER: &str = "alice";
pub const PASSWORD: &str = "alice-secret-pw";
pub const REALM: &str = "test.onionrtc";

/// A relay with UDP and TCP on one port and TLS on another.
pub struct TestRelay {
    pub handle: Option<RelayHandle>,
    pub port: u16,
    pub tls_port: u16,
    /// The configuration it started with (for reloads).
    pub config: RelayConfig,
    pub _dir: tempfile::TempDir,
}

impl TestRelay {
    pub fn start(edit: impl Fn(&mut RelayConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_cert(dir.path());
        for _ in 0..5 {
            let port = free_port();
            let tls_port = free_port();
            let mut c = RelayConfig::defaults();
            c.listen = vec![
                Listen {
                    proto: ListenProto::Udp,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                },
                Listen {
                    proto: ListenProto::Tcp,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                },
                Listen {
                    proto: ListenProto::Tls,
                    addr: SocketAddr::from(([127, 0, 0, 1], tls_port)),
                },
            ];
            c.realm = REALM.into();
            c.relay_ip = "127.0.0.1".parse().unwrap();
            c.tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
            c.users = vec![(USER.into(), Secret::new(PASSWORD))];
            c.auth_secrets = vec![Secret::new("rest-secret")];
            c.dangerous_allow_loopback_peers = true;
            c.relay_ports = 40000..=59999;
            c.max_allocations_per_user = 1000;
            c.max_allocations_per_ip = 1000;
            // Two shards whatever the machine: every test crosses shards.
            c.threads = 2;
            edit(&mut c);
            match relay::start(&c) {
                Ok(handle) => {
                    return TestRelay {
                        handle: Some(handle),
                        port,
                        tls_port,
                        config: c,
                        _dir: dir,
                    }
                }
                Err(e) => eprintln!("relay start failed, retrying: {e:#}"),
            }
        }
        panic!("could not start the relay");
    }

    pub fn handle(&self) -> &RelayHandle {
        self.handle.as_ref().unwrap()
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost.
pub fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

pub use testkit::coturn::{parse_uclient, start_peer, UclientReport};

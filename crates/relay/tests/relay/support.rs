//! Test support: a relay on free loopback ports, child processes with
//! deadlines, coturn output parsing.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub use testkit::{free_port, run_bounded, Proc};

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
            edit(&mut c);
            match relay::start(&c) {
                Ok(handle) => {
                    return TestRelay {
                        handle: Some(handle),
                        port,
                        tls_port,
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

/// coturn's `turnutils_peer` on 127.0.0.1.
pub fn start_peer() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer");
    // Wait until it is bound (bounded).
    for _ in 0..100 {
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), port)
}

/// Messages sent, received and lost, as `turnutils_uclient` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UclientReport {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let i = text.rfind(key)? + key.len();
    let digits: String = text[i..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

pub fn parse_uclient(out: &Output) -> Option<UclientReport> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(UclientReport {
        sent: number_after(&text, "tot_send_msgs=")?,
        received: number_after(&text, "tot_recv_msgs=")?,
        lost: number_after(&text, "Total lost packets")?,
    })
}

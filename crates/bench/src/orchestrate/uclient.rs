//! coturn's `turnutils_uclient` as a load generator, with
//! `turnutils_peer` as the external echo peer.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::children::{free_port, ChildGuard};
use super::servers::{PASSWORD, USER};
use super::BenchError;
use crate::loadgen::LinkKind;

/// What `turnutils_uclient` reports at its end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UclientReport {
    /// `tot_send_msgs`.
    pub sent: u64,
    /// `tot_recv_msgs`.
    pub received: u64,
    /// `Total lost packets`.
    pub lost: u64,
    /// `Average round trip delay`, in milliseconds (coturn's resolution).
    pub rtt_avg_ms: Option<f64>,
}

/// The number after the last occurrence of `key`.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let i = text.rfind(key)? + key.len();
    let digits: String = text[i..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().ok()
}

/// Reads the totals from uclient's output.
pub fn parse(text: &str) -> Option<UclientReport> {
    Some(UclientReport {
        sent: number_after(text, "tot_send_msgs=")? as u64,
        received: number_after(text, "tot_recv_msgs=")? as u64,
        lost: number_after(text, "Total lost packets")? as u64,
        rtt_avg_ms: number_after(text, "Average round trip delay"),
    })
}

/// uclient's flags for one run, after the credentials and the peer.
pub fn load_flags(transport: LinkKind, size: u32, quick: bool) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    match transport {
        LinkKind::Udp => {}
        LinkKind::Tcp => f.push("-t".into()),
        LinkKind::Tls => f.extend(["-t".into(), "-S".into()]),
    }
    let load: &[&str] = if quick {
        &["-c", "-m", "10", "-n", "200", "-z", "5"]
    } else {
        &["-c", "-m", "100", "-n", "5000", "-z", "1"]
    };
    f.extend(load.iter().map(|s| s.to_string()));
    f.extend(["-l".into(), size.to_string()]);
    f
}

/// `turnutils_uclient` against `port` with the echo peer on `peer_port`.
pub fn command(port: u16, peer_port: u16, flags: &[String]) -> Command {
    let mut c = Command::new("turnutils_uclient");
    c.args(["-u", USER, "-w", PASSWORD, "-e", "127.0.0.1", "-r"])
        .arg(peer_port.to_string())
        .args(flags)
        .arg("-p")
        .arg(port.to_string())
        .arg("127.0.0.1");
    c
}

/// `turnutils_peer` on 127.0.0.1.
#[derive(Debug)]
pub struct UclientPeer {
    child: ChildGuard,
    /// Its UDP port.
    pub port: u16,
}

impl UclientPeer {
    /// Starts it and waits (bounded) until its port is taken.
    pub fn start(log: &Path) -> Result<UclientPeer, BenchError> {
        let port = free_port()?;
        let mut cmd = Command::new("turnutils_peer");
        cmd.args(["-L", "127.0.0.1", "-p", &port.to_string()]);
        let child = ChildGuard::spawn_logged("turnutils_peer", &mut cmd, log)?;
        for _ in 0..100 {
            if UdpSocket::bind(("127.0.0.1", port)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(UclientPeer { child, port })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.child.exited().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uclient_totals() {
        let out = "2: : start_mclient: msz=10, tot_send_msgs=361, tot_recv_msgs=358\n\
                   6: : start_mclient: tot_send_msgs=2000, tot_recv_msgs=1990\n\
                   6: : Total lost packets 10 (0.5%), total send dropped 0 (0.000000%)\n\
                   6: : Average round trip delay 0.250000 ms; min = 0 ms, max = 1 ms\n";
        let r = parse(out).unwrap();
        assert_eq!((r.sent, r.received, r.lost), (2000, 1990, 10));
        assert_eq!(r.rtt_avg_ms, Some(0.25));
        assert_eq!(parse("no totals"), None);
    }

    #[test]
    fn flags_per_transport() {
        let f = load_flags(LinkKind::Tls, 1200, true);
        assert_eq!(&f[..2], ["-t", "-S"]);
        assert!(f.ends_with(&["-l".to_string(), "1200".to_string()]));
        assert!(load_flags(LinkKind::Udp, 120, false).contains(&"5000".to_string()));
    }
}

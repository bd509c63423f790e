//! coturn's client tools as independent peers: `turnutils_peer` and the
//! report `turnutils_uclient` prints.

use std::net::UdpSocket;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::process::{free_port, Proc};

/// coturn's `turnutils_peer` (a UDP echo peer) on 127.0.0.1, once bound.
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
    /// Messages the clients sent.
    pub sent: u64,
    /// Messages the clients received back.
    pub received: u64,
    /// Messages lost.
    pub lost: u64,
}

/// The number after the last occurrence of `key` in `text`.
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let i = text.rfind(key)? + key.len();
    let digits: String = text[i..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The final report of a `turnutils_uclient` run, from its stdout and stderr.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_report() {
        let text = "1: start_mclient: tot_send_msgs=10, tot_recv_msgs=9\n\
                    2: start_mclient: tot_send_msgs=200, tot_recv_msgs=199\n\
                    2: Total lost packets 1 (0.5%)\n";
        assert_eq!(number_after(text, "tot_send_msgs="), Some(200));
        assert_eq!(number_after(text, "Total lost packets"), Some(1));
        assert_eq!(number_after(text, "missing="), None);
    }
}

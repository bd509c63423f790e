//! Privacy-preserving formatting of client addresses for logs.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A client address as it appears in logs: masked unless the operator set
/// `log_client_addresses = true`.
///
/// Masked IPv4 keeps the first three octets (`203.0.113.x`), masked IPv6 the
/// first 32 bits (`2001:db8:x`); ports are never shown when masked.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr {
    addr: SocketAddr,
    reveal: bool,
}

impl ClientAddr {
    /// Wraps an address.
    pub fn new(addr: SocketAddr, reveal: bool) -> Self {
        ClientAddr { addr, reveal }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reveal {
            return write!(f, "{}", self.addr);
        }
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                let o = ip.octets();
                write!(f, "{}.{}.{}.x", o[0], o[1], o[2])
            }
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => {
                    let o = v4.octets();
                    write!(f, "{}.{}.{}.x", o[0], o[1], o[2])
                }
                None => {
                    let s = ip.segments();
                    write!(f, "{:x}:{:x}:x", s[0], s[1])
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_by_default() {
        let a: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        assert_eq!(ClientAddr::new(a, false).to_string(), "203.0.113.x");
        assert_eq!(ClientAddr::new(a, true).to_string(), "203.0.113.7:40000");
        let b: SocketAddr = "[2001:db8:1234::5]:1".parse().unwrap();
        assert_eq!(ClientAddr::new(b, false).to_string(), "2001:db8:x");
        let c: SocketAddr = "[::ffff:10.1.2.3]:1".parse().unwrap();
        assert_eq!(ClientAddr::new(c, false).to_string(), "10.1.2.x");
    }
}

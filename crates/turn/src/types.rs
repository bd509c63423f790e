//! Types shared by server and client.

use std::net::SocketAddr;

/// The transport between a TURN client and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Lower-case name, as used in logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Whether the transport is a byte stream (framing needed).
    pub const fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The 5-tuple that identifies a client's flow to the server
/// (RFC 8656 §2: client address, server address, transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    /// The client's address as the server sees it.
    pub client: SocketAddr,
    /// The server address the client reached.
    pub server: SocketAddr,
    /// The transport.
    pub transport: Transport,
}

//! What the client asks the server for.

use std::net::SocketAddr;
use std::time::Duration;

use stun::AddressFamily;

use crate::Transport;

/// The transport of the relayed address (REQUESTED-TRANSPORT, RFC 8656 §18.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestedTransport {
    /// UDP relaying (protocol number 17), the usual TURN allocation.
    Udp,
    /// TCP relaying (protocol number 6, RFC 6062); needs a TCP or TLS
    /// connection to the server and uses Connect/ConnectionBind for data.
    Tcp,
}

impl RequestedTransport {
    /// The IP protocol number carried in REQUESTED-TRANSPORT.
    pub const fn protocol_number(self) -> u8 {
        match self {
            RequestedTransport::Udp => 17,
            RequestedTransport::Tcp => 6,
        }
    }
}

/// The lifetime the client asks for unless told otherwise (RFC 8656 §3.5 default).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// Configuration of a [`Client`](super::Client).
///
/// Build it with [`ClientConfig::new`] and adjust the public fields.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The TURN server's address: every transmit goes there.
    pub server: SocketAddr,
    /// The transport between the client and the server.
    pub transport: Transport,
    /// Long-term credential user name.
    pub username: String,
    /// Long-term credential password (prepared with OpaqueString).
    pub password: String,
    /// Transport of the relayed address.
    pub requested_transport: RequestedTransport,
    /// Lifetime asked for in Allocate and Refresh (the server may grant less).
    pub lifetime: Duration,
    /// REQUESTED-ADDRESS-FAMILY: `None` lets the server pick (IPv4).
    /// Ignored when [`ClientConfig::additional_ipv6`] is set, since RFC 8656
    /// §7.2 forbids sending both attributes.
    pub address_family: Option<AddressFamily>,
    /// Ask for an IPv4 and an IPv6 relayed address (ADDITIONAL-ADDRESS-FAMILY).
    pub additional_ipv6: bool,
    /// SOFTWARE attribute to send, if any.
    pub software: Option<String>,
    /// RFC 8016: ask for a MOBILITY-TICKET, so that the allocation can
    /// follow the client to a new 5-tuple ([`Client::move_to`](super::Client::move_to)).
    pub mobility: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("requested_transport", &self.requested_transport)
            .field("lifetime", &self.lifetime)
            .field("address_family", &self.address_family)
            .field("additional_ipv6", &self.additional_ipv6)
            .field("software", &self.software)
            .field("mobility", &self.mobility)
            .finish()
    }
}

impl ClientConfig {
    /// A UDP-relaying configuration with the default lifetime (600 s), no
    /// address-family preference and no SOFTWARE.
    pub fn new(
        server: SocketAddr,
        transport: Transport,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        ClientConfig {
            server,
            transport,
            username: username.into(),
            password: password.into(),
            requested_transport: RequestedTransport::Udp,
            lifetime: DEFAULT_LIFETIME,
            address_family: None,
            additional_ipv6: false,
            software: None,
            mobility: false,
        }
    }

    /// The lifetime in whole seconds as sent in LIFETIME (saturating).
    pub(super) fn lifetime_secs(&self) -> u32 {
        u32::try_from(self.lifetime.as_secs()).unwrap_or(u32::MAX)
    }
}

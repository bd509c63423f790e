//! The client side of TURN-TCP (RFC 6062): Connect and ConnectionBind.
//!
//! The control connection carries Connect, ConnectionAttempt and the usual
//! TURN requests. For each peer connection the driver opens a new TCP/TLS
//! connection to the server, sends [`Client::connection_bind_request`] on
//! it, reads one STUN message (use [`stun::framing::frame_len`] on the
//! first bytes to know its length; what follows it is peer data) and checks
//! it with [`Client::parse_connection_bind_response`]. After a success the
//! connection carries raw bytes to and from the peer.

use std::net::SocketAddr;
use std::time::Instant;

use stun::attr::{self, Attribute};
use stun::{Class, Message, Method};

use super::credentials::{encode_request, is_authentic, Credentials};
use super::transaction::{RequestKind, Retries};
use super::{Client, ClientError, RequestedTransport};

/// ConnectionBind requests remembered for their responses.
const MAX_CONNECTION_BINDS: usize = 64;

impl Client {
    /// Asks the server to open a TCP connection to `peer` (Connect). The
    /// result is [`Event::ConnectionCreated`](super::Event::ConnectionCreated)
    /// or [`Event::ConnectFailed`](super::Event::ConnectFailed). The server
    /// requires a permission for the peer's IP.
    ///
    /// # Errors
    /// [`ClientError::NotAllocated`]; [`ClientError::WrongTransport`] unless
    /// the allocation relays TCP; [`ClientError::TooManyTransactions`].
    pub fn connect(&mut self, now: Instant, peer: SocketAddr) -> Result<(), ClientError> {
        self.require_allocated()?;
        if self.config.requested_transport != RequestedTransport::Tcp {
            return Err(ClientError::WrongTransport);
        }
        self.send_request(now, RequestKind::Connect { peer }, Retries::default())?;
        Ok(())
    }

    /// The authenticated ConnectionBind request (CONNECTION-ID, USERNAME,
    /// REALM, NONCE, MESSAGE-INTEGRITY, FINGERPRINT) to send first on a new
    /// data connection. The client remembers the last 64 for
    /// [`Client::parse_connection_bind_response`].
    ///
    /// # Errors
    /// [`ClientError::NotAllocated`] without an allocation;
    /// [`ClientError::Encode`] if it cannot be encoded.
    pub fn connection_bind_request(&mut self, connection_id: u32) -> Result<Vec<u8>, ClientError> {
        self.require_allocated()?;
        let id = self.fresh_transaction_id();
        let bytes = encode_request(
            Method::CONNECTION_BIND,
            id,
            &[Attribute::ConnectionId(connection_id)],
            self.config.software.as_deref(),
            &self.config.username,
            self.creds.as_ref(),
        )
        .map_err(ClientError::Encode)?;
        if self.connection_binds.len() >= MAX_CONNECTION_BINDS {
            self.connection_binds.pop_front();
        }
        let key = self.creds.as_ref().map(|c| c.key.clone());
        self.connection_binds.push_back((id, key));
        Ok(bytes)
    }

    /// Checks the response to a ConnectionBind request (exactly one STUN
    /// message). `Ok` means the data connection is bound to the peer.
    ///
    /// # Errors
    /// [`ClientError::Malformed`] if the bytes are not a STUN message;
    /// [`ClientError::NotAuthentic`] if it answers none of our recent
    /// requests or its integrity does not verify;
    /// [`ClientError::ConnectionBindFailed`] with the server's error code.
    /// On 438 (or 401) the client takes the new nonce, so a new request
    /// from [`Client::connection_bind_request`] may succeed.
    pub fn parse_connection_bind_response(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let msg = Message::parse(bytes).map_err(ClientError::Malformed)?;
        let id = msg.transaction_id();
        let pos = self
            .connection_binds
            .iter()
            .position(|(t, _)| *t == id)
            .ok_or(ClientError::NotAuthentic)?;
        if msg.method() != Method::CONNECTION_BIND
            || !msg.class().is_response()
            || (msg.has_fingerprint() && msg.verify_fingerprint().is_err())
        {
            return Err(ClientError::NotAuthentic);
        }
        let key = self.connection_binds.get(pos).and_then(|(_, k)| k.clone());
        let code = if msg.class() == Class::Success {
            None
        } else {
            match msg.get(attr::ERROR_CODE) {
                Some(Ok(Attribute::ErrorCode(e))) => Some(e.code),
                _ => {
                    let e = stun::Error::InvalidAttribute(attr::ERROR_CODE);
                    return Err(ClientError::Malformed(e));
                }
            }
        };
        let challenge = matches!(code, Some(401 | 438));
        if !challenge && !is_authentic(&msg, key.as_ref()) {
            return Err(ClientError::NotAuthentic);
        }
        self.connection_binds.remove(pos);
        match code {
            None => Ok(()),
            Some(code) => {
                if challenge {
                    let (user, pass) = (&self.config.username, &self.config.password);
                    if let Ok(c) =
                        Credentials::from_challenge(&msg, self.creds.as_ref(), user, pass)
                    {
                        self.creds = Some(c);
                    }
                }
                Err(ClientError::ConnectionBindFailed(code))
            }
        }
    }
}

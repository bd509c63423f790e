//! TURN legs: [`turn::client::Client`] driven over a [`Wire`].

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use turn::client::{Client, ClientConfig, ClientState, Event};
use turn::Transport;

use super::wire::{Recv, TlsSettings, Wire};
use super::{Leg, PathError, PathOpener};

/// Longest single wait while setting up, so the deadline is checked often.
const SETUP_POLL: Duration = Duration::from_millis(50);
/// Data packets buffered between `recv` calls at most.
const MAX_INBOX: usize = 4096;
/// Lifetime of TURN REST usernames the lab makes.
const REST_LIFETIME_S: u64 = 24 * 3600;

/// How a leg authenticates.
#[derive(Clone)]
pub enum TurnCredentials {
    /// A long-term user and password.
    LongTerm {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A TURN REST shared secret: each leg gets `expiry:lab` and its HMAC.
    Rest {
        /// The shared secret.
        secret: String,
    },
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnCredentials::LongTerm { username, .. } => f
                .debug_struct("LongTerm")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            TurnCredentials::Rest { .. } => f
                .debug_struct("Rest")
                .field("secret", &"<redacted>")
                .finish(),
        }
    }
}

impl TurnCredentials {
    fn user_pass(&self) -> (String, String) {
        match self {
            TurnCredentials::LongTerm { username, password } => {
                (username.clone(), password.clone())
            }
            TurnCredentials::Rest { secret } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let user = turn::auth::rest_username(now + REST_LIFETIME_S, Some("lab"));
                let pass = turn::auth::rest_password(secret.as_bytes(), &user);
                (user, pass)
            }
        }
    }
}

/// Opens TURN allocations on one server over one transport.
#[derive(Debug, Clone)]
pub struct TurnOpener {
    kind: &'static str,
    server: SocketAddr,
    transport: Transport,
    credentials: TurnCredentials,
    tls: Option<TlsSettings>,
}

impl TurnOpener {
    /// An opener of `kind` (the plan's name) for `server`; TLS needs `tls`.
    pub fn new(
        kind: &'static str,
        server: SocketAddr,
        transport: Transport,
        credentials: TurnCredentials,
        tls: Option<TlsSettings>,
    ) -> Self {
        TurnOpener {
            kind,
            server,
            transport,
            credentials,
            tls,
        }
    }
}

impl PathOpener for TurnOpener {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn turn_target(&self) -> Option<super::TurnTarget> {
        let (username, password) = self.credentials.user_pass();
        Some(super::TurnTarget {
            server: self.server,
            transport: self.transport,
            username,
            password,
            tls: self.tls.clone(),
        })
    }

    fn open(&self, deadline: Instant) -> Result<Box<dyn Leg>, PathError> {
        let wire = match self.transport {
            Transport::Udp => Wire::udp(self.server).map_err(PathError::io("bind UDP"))?,
            Transport::Tcp => {
                Wire::tcp(self.server, deadline).map_err(PathError::io("connect TCP"))?
            }
            Transport::Tls => {
                let Some(tls) = &self.tls else {
                    return Err(PathError::Turn("turn-tls without TLS settings".into()));
                };
                Wire::tls(self.server, tls, deadline).map_err(PathError::io("connect TLS"))?
            }
        };
        let (user, pass) = self.credentials.user_pass();
        let mut config = ClientConfig::new(self.server, self.transport, user, pass);
        config.software = Some("onionrtc-lab".into());
        let now = Instant::now();
        let mut leg = TurnLeg {
            client: Client::new(config, now),
            wire,
            server: self.server,
            peer: None,
            inbox: Vec::new(),
            fatal: None,
            buf: vec![0u8; 65_536],
            dropped: 0,
        };
        leg.client
            .allocate(now)
            .map_err(|e| PathError::Turn(e.to_string()))?;
        // Bounded by the deadline.
        while leg.client.state() != ClientState::Allocated {
            if Instant::now() >= deadline {
                return Err(PathError::Timeout("allocation"));
            }
            leg.pump(SETUP_POLL)?;
        }
        Ok(Box::new(leg))
    }
}

#[derive(Debug)]
struct TurnLeg {
    client: Client,
    wire: Wire,
    server: SocketAddr,
    peer: Option<SocketAddr>,
    inbox: Vec<Vec<u8>>,
    fatal: Option<String>,
    buf: Vec<u8>,
    dropped: u64,
}

impl TurnLeg {
    fn flush(&mut self) -> Result<(), PathError> {
        while let Some(t) = self.client.poll_transmit() {
            self.wire
                .send(t.destination, &t.payload)
                .map_err(PathError::io("send to the TURN server"))?;
        }
        Ok(())
    }

    fn on_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Data { peer, data } => {
                    if Some(peer) == self.peer && self.inbox.len() < MAX_INBOX {
                        self.inbox.push(data);
                    } else {
                        self.dropped += 1;
                    }
                }
                Event::AllocationFailed { code, reason } => {
                    self.fatal = Some(format!("Allocate failed: {code} {reason}"));
                }
                Event::ChannelBindFailed { code, .. } => {
                    self.fatal = Some(format!("ChannelBind failed: {code}"));
                }
                Event::PermissionFailed { code, .. } => {
                    self.fatal = Some(format!("CreatePermission failed: {code}"));
                }
                Event::RefreshFailed { code: 437 } => {
                    self.fatal = Some("the server lost the allocation (437)".into());
                }
                Event::AllocationExpired => {
                    self.fatal = Some("the allocation expired".into());
                }
                Event::TransactionTimedOut { method, .. } => {
                    self.fatal = Some(format!("{} timed out", method.name()));
                }
                _ => {}
            }
        }
    }

    /// One round: send what is queued, wait up to `timeout` (or the next
    /// client timer) for bytes, feed them, run timers, collect events.
    fn pump(&mut self, timeout: Duration) -> Result<(), PathError> {
        self.flush()?;
        let now = Instant::now();
        let wait = self
            .client
            .poll_timeout()
            .map_or(timeout, |t| t.saturating_duration_since(now).min(timeout));
        let got = self
            .wire
            .recv(wait, &mut self.buf)
            .map_err(PathError::io("receive from the TURN server"))?;
        let now = Instant::now();
        match got {
            Recv::Datagram(from, n) => self.client.handle_datagram(now, from, &self.buf[..n]),
            Recv::Stream(n) => self
                .client
                .handle_stream_bytes(now, &self.buf[..n])
                .map_err(|e| PathError::Turn(e.to_string()))?,
            Recv::Timeout => {}
        }
        self.client.handle_timeout(now);
        self.flush()?;
        self.on_events();
        match &self.fatal {
            Some(f) => Err(PathError::Turn(f.clone())),
            None => Ok(()),
        }
    }
}

impl Leg for TurnLeg {
    fn address(&self) -> SocketAddr {
        self.client
            .relayed_addresses()
            .first()
            .copied()
            .unwrap_or(self.server)
    }

    fn connect_peer(&mut self, peer: SocketAddr, deadline: Instant) -> Result<(), PathError> {
        self.peer = Some(peer);
        self.client
            .bind_channel(Instant::now(), peer)
            .map_err(|e| PathError::Turn(e.to_string()))?;
        while self.client.channel(peer).is_none() {
            if Instant::now() >= deadline {
                return Err(PathError::Timeout("channel binding"));
            }
            self.pump(SETUP_POLL)?;
        }
        Ok(())
    }

    fn send(&mut self, now: Instant, data: &[u8]) -> Result<(), PathError> {
        let Some(peer) = self.peer else {
            return Err(PathError::Turn("no peer".into()));
        };
        match self.client.send_to(now, peer, data) {
            Ok(()) => {}
            Err(turn::client::ClientError::QueueFull) => {
                // Unreachable while every send is flushed; drop, as a full
                // network queue would.
                self.dropped += 1;
            }
            Err(e) => return Err(PathError::Turn(e.to_string())),
        }
        self.flush()
    }

    fn recv(&mut self, timeout: Duration, out: &mut Vec<Vec<u8>>) -> Result<(), PathError> {
        if self.inbox.is_empty() {
            self.pump(timeout)?;
        }
        out.append(&mut self.inbox);
        Ok(())
    }

    fn housekeeping(&mut self, now: Instant) -> Result<(), PathError> {
        self.client.handle_timeout(now);
        self.flush()?;
        self.on_events();
        match &self.fatal {
            Some(f) => Err(PathError::Turn(f.clone())),
            None => Ok(()),
        }
    }

    fn close(&mut self, deadline: Instant) {
        if self.client.deallocate(Instant::now()).is_err() {
            return;
        }
        // Over a stream, closing the connection ends the allocation anyway.
        for _ in 0..10 {
            if self.client.state() != ClientState::Deallocating || Instant::now() >= deadline {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.pump(left.min(SETUP_POLL)).is_err() {
                break;
            }
        }
    }
}

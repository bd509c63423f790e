//! The echo peers: plain UDP sockets on the generator's side that stamp the
//! arrival time into each probe and send it back to where it came from (the
//! relayed address, or the client itself in direct mode).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use super::probe::{Clock, Probe};

/// Socket buffer asked for on each peer socket (the kernel may cap it).
const PEER_BUFFER: usize = 4 << 20;

/// One echo socket.
#[derive(Debug)]
pub struct Peer {
    sock: UdpSocket,
    addr: SocketAddr,
    /// Datagrams received.
    pub received: u64,
    /// Echoes the socket refused (buffer full).
    pub dropped: u64,
}

impl Peer {
    /// An echo socket on `ip`, on an ephemeral port.
    pub fn bind(ip: std::net::IpAddr) -> io::Result<Peer> {
        let s = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let sock2 = socket2::SockRef::from(&s);
        let _ = sock2.set_recv_buffer_size(PEER_BUFFER);
        let _ = sock2.set_send_buffer_size(PEER_BUFFER);
        s.set_nonblocking(true)?;
        let addr = s.local_addr()?;
        Ok(Peer {
            sock: UdpSocket::from_std(s),
            addr,
            received: 0,
            dropped: 0,
        })
    }

    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers the socket.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.sock, token, Interest::READABLE)
    }

    /// Echoes everything waiting, each probe stamped with its arrival time.
    pub fn echo_all(&mut self, clock: &Clock, buf: &mut [u8]) -> io::Result<()> {
        loop {
            let (n, from) = match self.sock.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            self.received += 1;
            Probe::stamp_peer(&mut buf[..n], clock.ns(Instant::now()));
            match self.sock.send_to(&buf[..n], from) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.dropped += 1,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.dropped += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

//! The load generator's connection to a server (or, in direct mode, to its
//! peer): a connected UDP socket, a TCP stream or a TLS stream.
//!
//! [`Link::recv`] returns one datagram or one STUN/ChannelData frame at a
//! time, copied into the caller's buffer, so the caller may send on the same
//! link while it handles what it read.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;
use rustls_pki_types::ServerName;
use stun::StreamDecoder;

/// Largest frame accepted on a stream (a STUN message or padded ChannelData).
pub const MAX_FRAME: usize = 65 * 1024;
/// Bytes a stream link queues before it drops further sends.
const OUT_LIMIT: usize = 1 << 20;
/// Plaintext handed to rustls per call.
const TLS_CHUNK: usize = 16 * 1024;
/// TCP connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The transport of a [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// UDP datagrams.
    Udp,
    /// A TCP stream.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl LinkKind {
    /// The TURN transport between client and server.
    pub fn transport(self) -> turn::Transport {
        match self {
            LinkKind::Udp => turn::Transport::Udp,
            LinkKind::Tcp => turn::Transport::Tcp,
            LinkKind::Tls => turn::Transport::Tls,
        }
    }

    /// `udp`, `tcp` or `tls`.
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Udp => "udp",
            LinkKind::Tcp => "tcp",
            LinkKind::Tls => "tls",
        }
    }
}

/// A connection to one address.
#[derive(Debug)]
pub enum Link {
    /// A UDP socket connected to the address.
    Udp(UdpSocket),
    /// A TCP or TLS stream.
    Stream(Box<StreamLink>),
}

/// A TCP or TLS stream with its frame decoder and output queue.
#[derive(Debug)]
pub struct StreamLink {
    sock: TcpStream,
    tls: Option<ClientConnection>,
    decoder: StreamDecoder,
    out: Vec<u8>,
    out_pos: usize,
    closed: bool,
}

fn local_for(to: SocketAddr) -> SocketAddr {
    let ip = match to.ip() {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Link {
    /// A non-blocking UDP socket on `port` (0: an ephemeral port),
    /// connected to `to`.
    pub fn udp(to: SocketAddr, port: u16) -> io::Result<Link> {
        let mut local = local_for(to);
        local.set_port(port);
        let s = std::net::UdpSocket::bind(local)?;
        s.connect(to)?;
        s.set_nonblocking(true)?;
        Ok(Link::Udp(UdpSocket::from_std(s)))
    }

    /// A TCP connection to `to` (blocking connect, then non-blocking), with
    /// TLS on top when `tls` is given.
    pub fn stream(to: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> io::Result<Link> {
        let s = std::net::TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let tls = match tls {
            Some(config) => {
                let name = ServerName::IpAddress(to.ip().into());
                let mut conn = ClientConnection::new(config.clone(), name).map_err(invalid)?;
                // Our own queue bounds the output; rustls must never take
                // half a frame.
                conn.set_buffer_limit(None);
                Some(conn)
            }
            None => None,
        };
        let mut link = StreamLink {
            sock: TcpStream::from_std(s),
            tls,
            decoder: StreamDecoder::new(MAX_FRAME),
            out: Vec::new(),
            out_pos: 0,
            closed: false,
        };
        link.flush()?;
        Ok(Link::Stream(Box::new(link)))
    }

    /// Registers the socket with `registry` under `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            Link::Udp(s) => registry.register(s, token, Interest::READABLE),
            Link::Stream(s) => {
                registry.register(&mut s.sock, token, Interest::READABLE | Interest::WRITABLE)
            }
        }
    }

    /// Deregisters the socket before it is dropped.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Link::Udp(s) => registry.deregister(s),
            Link::Stream(s) => registry.deregister(&mut s.sock),
        }
    }

    /// Sends a datagram, or queues a whole frame on a stream and writes what
    /// the socket takes. `Ok(false)` when the bytes were dropped (the socket
    /// buffer or the queue is full).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<bool> {
        match self {
            Link::Udp(s) => match s.send(bytes) {
                Ok(_) => Ok(true),
                Err(e) if is_transient(&e) => Ok(false),
                Err(e) => Err(e),
            },
            Link::Stream(s) => s.send(bytes),
        }
    }

    /// The next datagram or frame, copied into `buf`; `Ok(None)` when
    /// nothing more can be read now. A datagram longer than `buf` is cut.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Link::Udp(s) => loop {
                match s.recv(buf) {
                    Ok(n) => return Ok(Some(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    // An ICMP error from an earlier send: nothing to read.
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => return Err(e),
                }
            },
            Link::Stream(s) => s.recv(buf),
        }
    }

    /// Writes queued stream bytes (call when the socket is writable).
    pub fn on_writable(&mut self) -> io::Result<()> {
        match self {
            Link::Udp(_) => Ok(()),
            Link::Stream(s) => s.flush(),
        }
    }
}

/// Errors after which the socket is still usable.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::OutOfMemory
    ) || e.raw_os_error() == Some(nix::libc::ENOBUFS)
}

impl StreamLink {
    fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<bool> {
        if self.closed {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        if self.queued() + bytes.len() > OUT_LIMIT {
            return Ok(false);
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(bytes);
        self.flush()?;
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_mut() {
            None => {
                while self.out_pos < self.out.len() {
                    match self.sock.write(&self.out[self.out_pos..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => self.out_pos += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(tls) => loop {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if tls.wants_write() || self.out_pos == self.out.len() {
                    break;
                }
                let end = self.out.len().min(self.out_pos + TLS_CHUNK);
                let n = tls.writer().write(&self.out[self.out_pos..end])?;
                self.out_pos += n;
                if n == 0 {
                    break;
                }
            },
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > OUT_LIMIT / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            if let Some((_, frame)) = self.decoder.next_frame().map_err(invalid)? {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                return Ok(Some(n));
            }
            if self.closed {
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads what the socket has into the decoder; false when nothing came.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        match self.tls.as_mut() {
            None => match self.sock.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    Ok(true)
                }
                Ok(n) => {
                    self.decoder.push(&chunk[..n]).map_err(invalid)?;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
                Err(e) => Err(e),
            },
            Some(tls) => {
                let got = match tls.read_tls(&mut self.sock) {
                    Ok(0) => {
                        self.closed = true;
                        true
                    }
                    Ok(_) => true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                    Err(e) => return Err(e),
                };
                tls.process_new_packets().map_err(invalid)?;
                let mut plain = false;
                loop {
                    match tls.reader().read(&mut chunk) {
                        Ok(0) => {
                            self.closed = true;
                            break;
                        }
                        Ok(n) => {
                            plain = true;
                            self.decoder.push(&chunk[..n]).map_err(invalid)?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                // The handshake may want to answer; queued plaintext may now go.
                self.flush()?;
                Ok(got || plain)
            }
        }
    }
}

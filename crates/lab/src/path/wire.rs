//! The socket under a TURN client: UDP, TCP or TLS (rustls), blocking with
//! per-call timeouts.

use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shortest socket wait (a zero timeout is an error for std sockets).
const MIN_WAIT: Duration = Duration::from_micros(50);
/// Read timeout of sockets once readiness was seen: a guard against a
/// spurious wake-up, never the timer the lab relies on.
const READ_GUARD: Duration = Duration::from_millis(5);

/// Waits until `fd` is readable or `timeout` has passed, to the
/// microsecond: `ppoll` runs on high-resolution timers, while socket read
/// timeouts count in scheduler ticks and wake up to 10 ms late, which
/// would show as one-way delay.
pub fn wait_readable(fd: &impl AsFd, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{ppoll, PollFd, PollFlags};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ts = nix::sys::time::TimeSpec::from_duration(timeout);
    match ppoll(&mut fds, Some(ts), None) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}
/// Longest blocking write on a stream.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a receive returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// A datagram of this length from this address.
    Datagram(SocketAddr, usize),
    /// This many stream bytes.
    Stream(usize),
    /// Nothing before the timeout.
    Timeout,
}

/// TLS settings for `turn-tls`.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// rustls client configuration (roots the lab trusts).
    pub config: Arc<rustls::ClientConfig>,
    /// Name to verify in the server's certificate.
    pub server_name: rustls_pki_types::ServerName<'static>,
}

/// A connected transport to one server (or, for UDP, an unconnected socket).
#[derive(Debug)]
pub enum Wire {
    /// UDP.
    Udp(UdpSocket),
    /// TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsWire>),
}

/// A rustls client connection over a blocking TCP stream.
#[derive(Debug)]
pub struct TlsWire {
    sock: TcpStream,
    conn: rustls::ClientConnection,
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn wait(timeout: Duration) -> Option<Duration> {
    Some(timeout.max(MIN_WAIT))
}

fn tcp_connect(server: SocketAddr, deadline: Instant) -> io::Result<TcpStream> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(ErrorKind::TimedOut, "setup deadline passed"));
    }
    let s = TcpStream::connect_timeout(&server, left)?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    Ok(s)
}

impl Wire {
    /// A UDP socket on the loopback or unspecified address of `server`'s family.
    pub fn udp(server: SocketAddr) -> io::Result<Wire> {
        let bind: SocketAddr = if server.ip().is_loopback() {
            SocketAddr::new(server.ip(), 0)
        } else if server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        Ok(Wire::Udp(UdpSocket::bind(bind)?))
    }

    /// A TCP connection to `server`.
    pub fn tcp(server: SocketAddr, deadline: Instant) -> io::Result<Wire> {
        Ok(Wire::Tcp(tcp_connect(server, deadline)?))
    }

    /// A TLS connection to `server`, handshake done.
    pub fn tls(server: SocketAddr, tls: &TlsSettings, deadline: Instant) -> io::Result<Wire> {
        let mut sock = tcp_connect(server, deadline)?;
        let mut conn = rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .map_err(io::Error::other)?;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            sock.set_read_timeout(wait(left))?;
            match conn.complete_io(&mut sock) {
                Ok((0, 0)) if conn.is_handshaking() => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "connection closed during the TLS handshake",
                    ))
                }
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Wire::Tls(Box::new(TlsWire { sock, conn })))
    }

    /// Sends `bytes` (a datagram to `to`, or stream bytes).
    pub fn send(&mut self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        match self {
            Wire::Udp(s) => match s.send_to(bytes, to) {
                Ok(_) => Ok(()),
                // A full socket buffer loses the datagram, as a network would.
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            },
            Wire::Tcp(s) => s.write_all(bytes),
            Wire::Tls(t) => {
                t.conn.writer().write_all(bytes)?;
                t.flush()
            }
        }
    }

    /// Waits up to `timeout` for bytes into `buf`.
    ///
    /// # Errors
    /// A stream closed by the server is `UnexpectedEof`.
    pub fn recv(&mut self, timeout: Duration, buf: &mut [u8]) -> io::Result<Recv> {
        match self {
            Wire::Udp(s) => {
                if !wait_readable(s, timeout)? {
                    return Ok(Recv::Timeout);
                }
                s.set_read_timeout(Some(READ_GUARD))?;
                match s.recv_from(buf) {
                    Ok((n, from)) => Ok(Recv::Datagram(from, n)),
                    Err(e) if timed_out(&e) => Ok(Recv::Timeout),
                    // ICMP port unreachable from an earlier send.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Recv::Timeout),
                    Err(e) => Err(e),
                }
            }
            Wire::Tcp(s) => {
                if !wait_readable(s, timeout)? {
                    return Ok(Recv::Timeout);
                }
                s.set_read_timeout(Some(READ_GUARD))?;
                match s.read(buf) {
                    Ok(0) => Err(closed()),
                    Ok(n) => Ok(Recv::Stream(n)),
                    Err(e) if timed_out(&e) => Ok(Recv::Timeout),
                    Err(e) => Err(e),
                }
            }
            Wire::Tls(t) => t.recv(timeout, buf),
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(ErrorKind::UnexpectedEof, "the server closed the connection")
}

impl TlsWire {
    fn flush(&mut self) -> io::Result<()> {
        // Bounded: each round writes at least one byte or fails (the
        // socket has a write timeout).
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.conn.reader().read(buf) {
            Ok(0) => Err(closed()),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn recv(&mut self, timeout: Duration, buf: &mut [u8]) -> io::Result<Recv> {
        if let Some(n) = self.read_plain(buf)? {
            return Ok(Recv::Stream(n));
        }
        if !wait_readable(&self.sock, timeout)? {
            return Ok(Recv::Timeout);
        }
        self.sock.set_read_timeout(Some(READ_GUARD))?;
        match self.conn.read_tls(&mut self.sock) {
            Ok(0) => return Err(closed()),
            Ok(_) => {}
            Err(e) if timed_out(&e) => return Ok(Recv::Timeout),
            Err(e) => return Err(e),
        }
        self.conn
            .process_new_packets()
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        self.flush()?;
        Ok(match self.read_plain(buf)? {
            Some(n) => Recv::Stream(n),
            None => Recv::Timeout,
        })
    }
}

//! Socket creation with the options the relay needs (socket2).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size asked for on listener sockets (the kernel may cap it).
const LISTENER_BUFFER: usize = 4 << 20;
/// Receive buffer asked for on relay sockets: bursts from a peer must not
/// overflow the default 208 KiB while the event loop is busy elsewhere.
/// Memory is only used while datagrams wait.
const RELAY_BUFFER: usize = 1 << 20;

fn domain(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// A non-blocking UDP socket bound to `addr`. IPv6 sockets are v6-only so
/// that `[::]` and `0.0.0.0` can be bound side by side.
pub fn udp(addr: SocketAddr, big_buffers: bool) -> io::Result<mio::net::UdpSocket> {
    udp_socket(addr, big_buffers, false)
}

/// A UDP client listener on `addr` (big buffers); with `reuse_port`, one
/// of several sockets on the same address (one per shard) among which the
/// kernel spreads the flows, each flow (4-tuple) always to the same socket.
pub fn udp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<mio::net::UdpSocket> {
    udp_socket(addr, true, reuse_port)
}

fn udp_socket(
    addr: SocketAddr,
    big_buffers: bool,
    reuse_port: bool,
) -> io::Result<mio::net::UdpSocket> {
    let s = Socket::new(domain(&addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    if big_buffers {
        let _ = s.set_recv_buffer_size(LISTENER_BUFFER);
        let _ = s.set_send_buffer_size(LISTENER_BUFFER);
    } else {
        let _ = s.set_recv_buffer_size(RELAY_BUFFER);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(s.into()))
}

/// A non-blocking TCP listener on `addr`; with `reuse_port`, outgoing
/// connections may bind the same address (RFC 6062 relay listeners), or
/// several listeners share it (client listeners, one per shard: the kernel
/// spreads new connections among them).
pub fn tcp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<mio::net::TcpListener> {
    let s = Socket::new(domain(&addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(mio::net::TcpListener::from_std(s.into()))
}

/// A non-blocking TCP connection from `local` (a relay address, shared with
/// its listener) to `peer` (RFC 6062 Connect).
pub fn tcp_connect(local: SocketAddr, peer: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let s = Socket::new(domain(&local), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    s.bind(&local.into())?;
    match s.connect(&peer.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(s.into()))
}

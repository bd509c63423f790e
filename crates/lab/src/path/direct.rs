//! `direct`: UDP between the two agents on loopback, no relay — the
//! baseline every relayed path is compared with.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::{Leg, PathError, PathOpener};

/// Opens UDP sockets on a loopback address.
#[derive(Debug, Clone)]
pub struct DirectOpener {
    ip: IpAddr,
}

impl Default for DirectOpener {
    fn default() -> Self {
        DirectOpener {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

impl PathOpener for DirectOpener {
    fn kind(&self) -> &'static str {
        "direct"
    }

    fn open(&self, _deadline: Instant) -> Result<Box<dyn Leg>, PathError> {
        let sock =
            UdpSocket::bind(SocketAddr::new(self.ip, 0)).map_err(PathError::io("bind UDP"))?;
        let addr = sock.local_addr().map_err(PathError::io("bind UDP"))?;
        Ok(Box::new(DirectLeg {
            sock,
            addr,
            peer: None,
            buf: vec![0u8; 65_536],
        }))
    }
}

#[derive(Debug)]
struct DirectLeg {
    sock: UdpSocket,
    addr: SocketAddr,
    peer: Option<SocketAddr>,
    buf: Vec<u8>,
}

impl Leg for DirectLeg {
    fn address(&self) -> SocketAddr {
        self.addr
    }

    fn connect_peer(&mut self, peer: SocketAddr, _deadline: Instant) -> Result<(), PathError> {
        self.peer = Some(peer);
        Ok(())
    }

    fn send(&mut self, _now: Instant, data: &[u8]) -> Result<(), PathError> {
        let Some(peer) = self.peer else {
            return Err(PathError::Turn("no peer".into()));
        };
        match self.sock.send_to(data, peer) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(PathError::Io {
                what: "send UDP",
                source: e,
            }),
        }
    }

    fn recv(&mut self, timeout: Duration, out: &mut Vec<Vec<u8>>) -> Result<(), PathError> {
        if !super::wire::wait_readable(&self.sock, timeout).map_err(PathError::io("poll UDP"))? {
            return Ok(());
        }
        self.sock
            .set_read_timeout(Some(Duration::from_millis(5)))
            .map_err(PathError::io("UDP timeout"))?;
        match self.sock.recv_from(&mut self.buf) {
            Ok((n, from)) if Some(from) == self.peer => {
                out.push(self.buf[..n].to_vec());
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(PathError::Io {
                what: "receive UDP",
                source: e,
            }),
        }
    }

    fn housekeeping(&mut self, _now: Instant) -> Result<(), PathError> {
        Ok(())
    }

    fn close(&mut self, _deadline: Instant) {}
}

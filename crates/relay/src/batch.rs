//! Batched UDP I/O: `recvmmsg` and `sendmmsg` (Linux), the relay's first
//! performance lever — one system call moves many datagrams.
//!
//! Receiving: a batch smaller than its capacity means the socket was drained,
//! so no extra `EAGAIN` call is needed (Linux reports every new datagram on
//! an edge-triggered epoll, so nothing is left behind unseen).
//! Sending: datagrams for clients are collected per listener socket during
//! one event-loop turn and flushed with one call.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Largest datagram handled in a batch slot; larger ones are dropped and counted.
pub const SLOT: usize = 4096;

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }
}

/// Receive slots: each has `headroom` bytes before the datagram.
pub struct RecvBatch {
    headers: MultiHeaders<SockaddrStorage>,
    buf: Vec<u8>,
    stride: usize,
    headroom: usize,
    meta: [(usize, Option<SocketAddr>, bool); BATCH],
    n: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Slots with `headroom` bytes before and `tailroom` after each datagram.
    pub fn new(headroom: usize, tailroom: usize) -> Self {
        let stride = headroom + SLOT + tailroom;
        RecvBatch {
            headers: MultiHeaders::preallocate(BATCH, None),
            buf: vec![0; stride * BATCH],
            stride,
            headroom,
            meta: [(0, None, false); BATCH],
            n: 0,
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; `Ok(0)` when none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.n = 0;
        let (h, stride) = (self.headroom, self.stride);
        let mut chunks = self.buf.chunks_exact_mut(stride);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(match chunks.next() {
                Some(c) => &mut c[h..h + SLOT],
                None => &mut [],
            })]
        });
        let res = match recvmmsg(
            fd,
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(Errno::EAGAIN) => return Ok(0),
            Err(e) => return Err(io::Error::from(e)),
        };
        let mut n = 0;
        for (slot, m) in self.meta.iter_mut().zip(res) {
            let truncated = m.flags.contains(MsgFlags::MSG_TRUNC);
            *slot = (m.bytes, m.address.as_ref().and_then(to_std), truncated);
            n += 1;
        }
        self.n = n;
        Ok(n)
    }

    /// Whether the last receive filled every slot (more may be waiting).
    pub fn full(&self) -> bool {
        self.n == BATCH
    }

    /// Datagram `i` of the last receive: sender, its slot (headroom, data,
    /// tailroom) and the data length; `None` for a truncated datagram or an
    /// unknown sender.
    pub fn get(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], usize)> {
        let (len, from, truncated) = *self.meta.get(i)?;
        if i >= self.n || truncated {
            return None;
        }
        let from = from?;
        let slot = self.buf.chunks_exact_mut(self.stride).nth(i)?;
        Some((from, slot, len))
    }
}

/// Datagrams waiting to leave one socket.
pub struct SendBatch {
    headers: MultiHeaders<SockaddrStorage>,
    buf: Vec<u8>,
    lens: [usize; BATCH],
    addrs: Vec<Option<SockaddrStorage>>,
    n: usize,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            headers: MultiHeaders::preallocate(BATCH, None),
            buf: vec![0; SLOT * BATCH],
            lens: [0; BATCH],
            addrs: vec![None; BATCH],
            n: 0,
        }
    }
}

impl SendBatch {
    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether another datagram fits.
    pub fn is_full(&self) -> bool {
        self.n == BATCH
    }

    /// Queues a datagram; false if the batch is full or it is larger than [`SLOT`].
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if self.n == BATCH || data.len() > SLOT {
            return false;
        }
        let at = self.n * SLOT;
        self.buf[at..at + data.len()].copy_from_slice(data);
        self.lens[self.n] = data.len();
        self.addrs[self.n] = Some(SockaddrStorage::from(to));
        self.n += 1;
        true
    }

    /// Sends everything queued; returns how many datagrams could not be sent
    /// (the kernel's buffer was full, or an error).
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let mut sent = 0;
        let total = self.n;
        // A few rounds at most: sendmmsg may stop early.
        for _ in 0..4 {
            if sent == total {
                break;
            }
            let (buf, lens) = (&self.buf, &self.lens);
            let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|j| {
                let i = sent + j;
                [IoSlice::new(if i < total {
                    &buf[i * SLOT..i * SLOT + lens[i]]
                } else {
                    &[]
                })]
            });
            let r = sendmmsg(
                fd,
                &mut self.headers,
                iovs.iter(),
                &self.addrs[sent..total],
                [],
                MsgFlags::MSG_DONTWAIT,
            );
            match r {
                Ok(res) => {
                    let k = res.count();
                    if k == 0 {
                        break;
                    }
                    sent += k;
                }
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        self.n = 0;
        total - sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_v4_and_v6() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let a = std::net::UdpSocket::bind(local).unwrap();
            let b = std::net::UdpSocket::bind(local).unwrap();
            b.set_nonblocking(true).unwrap();
            let to = b.local_addr().unwrap();
            let mut sb = SendBatch::default();
            for i in 0..40u8 {
                if sb.is_full() {
                    assert_eq!(sb.flush(a.as_raw_fd()), 0);
                }
                assert!(sb.push(to, &[i; 100]));
            }
            assert_eq!(sb.flush(a.as_raw_fd()), 0);
            let mut rb = RecvBatch::new(48, 4);
            let mut got = Vec::new();
            for _ in 0..10 {
                let n = rb.recv(b.as_raw_fd()).unwrap();
                for i in 0..n {
                    let (from, slot, len) = rb.get(i).unwrap();
                    assert_eq!(from, a.local_addr().unwrap());
                    assert_eq!(len, 100);
                    got.push(slot[48]);
                }
                if n == 0 {
                    break;
                }
            }
            assert_eq!(got, (0..40u8).collect::<Vec<_>>());
        }
    }

    #[test]
    fn oversize_datagrams_are_refused_or_flagged() {
        let mut sb = SendBatch::default();
        assert!(!sb.push("127.0.0.1:9".parse().unwrap(), &vec![0; SLOT + 1]));
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(&vec![1u8; SLOT + 100], b.local_addr().unwrap())
            .unwrap();
        let mut rb = RecvBatch::new(0, 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(rb.recv(b.as_raw_fd()).unwrap(), 1);
        assert!(rb.get(0).is_none(), "a truncated datagram is not delivered");
    }
}

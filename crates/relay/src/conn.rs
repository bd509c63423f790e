//! Stream connections: TURN clients over TCP or TLS, and RFC 6062 peer
//! connections. Plain byte plumbing with bounded buffers; no protocol here.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::Token;
use stun::StreamDecoder;
use turn::FiveTuple;

/// Most bytes queued for a connection before frames are dropped (client
/// control/media connections) or reading from the other side pauses (RFC 6062
/// raw pipes).
pub const OUT_LIMIT: usize = 256 * 1024;

/// How a client connection's bytes are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// STUN and ChannelData frames.
    Frames,
    /// RFC 6062 data connection bound to a peer connection: raw bytes.
    Raw {
        /// The peer connection.
        peer: Token,
    },
}

/// Outcome of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Everything available was read.
    Drained,
    /// The read budget ran out; more may be waiting.
    More,
    /// The other side closed, or the connection failed.
    Closed,
}

/// A TURN client over TCP or TLS.
pub struct ClientConn {
    pub stream: TcpStream,
    pub tls: Option<Box<rustls::ServerConnection>>,
    pub ft: FiveTuple,
    pub decoder: StreamDecoder,
    /// Bytes read in raw mode, waiting for the peer connection.
    pub raw_in: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    pub mode: Mode,
    /// Frames are queued and waiting for the end-of-turn flush.
    pub dirty: bool,
    pub opened: Instant,
    pub last_activity: Instant,
    pub got_frame: bool,
}

impl std::fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConn")
            .field("transport", &self.ft.transport)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl ClientConn {
    pub fn new(
        stream: TcpStream,
        tls: Option<rustls::ServerConnection>,
        ft: FiveTuple,
        max_frame: usize,
        now: Instant,
    ) -> Self {
        ClientConn {
            stream,
            tls: tls.map(Box::new),
            ft,
            decoder: StreamDecoder::new(max_frame),
            raw_in: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            mode: Mode::Frames,
            dirty: false,
            opened: now,
            last_activity: now,
            got_frame: false,
        }
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Queues a whole frame; refuses (returns false) rather than exceed
    /// [`OUT_LIMIT`], so frames are never cut.
    pub fn queue(&mut self, data: &[u8]) -> bool {
        if self.queued() + data.len() > OUT_LIMIT {
            return false;
        }
        if self.out_pos > 0 && self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(data);
        true
    }

    /// Writes what it can; `Err` means the connection is dead.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_mut() {
            while self.out_pos < self.out.len() {
                let n = tls.writer().write(&self.out[self.out_pos..])?;
                if n == 0 {
                    break;
                }
                self.out_pos += n;
            }
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                }
            }
        } else {
            while self.out_pos < self.out.len() {
                match self.stream.write(&self.out[self.out_pos..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.out_pos += n,
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > OUT_LIMIT {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads at most `budget` bytes of plaintext into the frame decoder (or
    /// `raw_in` in raw mode). Frame errors surface when frames are taken.
    pub fn read(&mut self, scratch: &mut [u8], budget: usize, now: Instant) -> ReadOutcome {
        let mut total = 0;
        let outcome = loop {
            if total >= budget {
                break ReadOutcome::More;
            }
            let want = scratch.len().min(budget - total).max(1);
            let n = match self.tls.as_mut() {
                None => match self.stream.read(&mut scratch[..want]) {
                    Ok(0) => break ReadOutcome::Closed,
                    Ok(n) => n,
                    Err(e) if would_block(&e) => break ReadOutcome::Drained,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break ReadOutcome::Closed,
                },
                Some(tls) => {
                    // Plaintext already decrypted comes first.
                    match tls.reader().read(&mut scratch[..want]) {
                        Ok(0) => break ReadOutcome::Closed,
                        Ok(n) => n,
                        Err(e) if would_block(&e) => match tls.read_tls(&mut self.stream) {
                            Ok(0) => break ReadOutcome::Closed,
                            Ok(_) => {
                                if tls.process_new_packets().is_err() {
                                    // Send the alert, best effort.
                                    let _ = tls.write_tls(&mut self.stream);
                                    break ReadOutcome::Closed;
                                }
                                continue;
                            }
                            Err(e) if would_block(&e) => break ReadOutcome::Drained,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => break ReadOutcome::Closed,
                        },
                        Err(_) => break ReadOutcome::Closed,
                    }
                }
            };
            total += n;
            self.last_activity = now;
            match self.mode {
                Mode::Frames => {
                    if self.decoder.push(&scratch[..n]).is_err() {
                        break ReadOutcome::Closed;
                    }
                }
                Mode::Raw { .. } => self.raw_in.extend_from_slice(&scratch[..n]),
            }
        };
        // A TLS handshake may have produced records to send.
        if self.tls.as_ref().is_some_and(|t| t.wants_write()) && self.flush().is_err() {
            return ReadOutcome::Closed;
        }
        outcome
    }
}

/// State of an RFC 6062 peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Outgoing connect in progress, until the deadline.
    Connecting {
        /// When to give up (447).
        deadline: Instant,
    },
    /// Connected (or accepted), waiting for the client's ConnectionBind.
    Waiting,
    /// Bound to a client data connection.
    Bound {
        /// The client data connection.
        client: Token,
    },
}

/// An RFC 6062 peer connection.
#[derive(Debug)]
pub struct PeerConn {
    pub stream: TcpStream,
    pub id: u32,
    pub state: PeerState,
    out: Vec<u8>,
    out_pos: usize,
}

impl PeerConn {
    pub fn new(stream: TcpStream, id: u32, state: PeerState) -> Self {
        PeerConn {
            stream,
            id,
            state,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    pub fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }

    pub fn queue(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads up to `max` bytes into `into`.
    pub fn read(&mut self, scratch: &mut [u8], into: &mut Vec<u8>, max: usize) -> ReadOutcome {
        let mut total = 0;
        loop {
            if total >= max {
                return ReadOutcome::More;
            }
            let want = scratch.len().min(max - total);
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => {
                    into.extend_from_slice(&scratch[..n]);
                    total += n;
                }
                Err(e) if would_block(&e) => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }
}

//! Stream connections: TURN clients over TCP or TLS, and RFC 6062 peer
//! connections. Plain byte plumbing with bounded buffers; no protocol here.

use std::collections::VecDeque;
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
    /// Over TLS, where each queued frame ends in `out`: every frame goes out
    /// in a TLS record of its own, as coturn sends them. Clients that take
    /// one `SSL_read` for one message (coturn's `turnutils_uclient` does)
    /// would otherwise count two frames in one record as one.
    frame_ends: VecDeque<usize>,
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
        let tls = tls.map(|mut t| {
            // Our own queue bounds what is buffered (`OUT_LIMIT`, and `flush`
            // hands rustls frames only once it has sent everything before),
            // so rustls takes each frame whole and never splits one.
            t.set_buffer_limit(None);
            Box::new(t)
        });
        ClientConn {
            stream,
            tls,
            ft,
            decoder: StreamDecoder::new(max_frame),
            raw_in: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            frame_ends: VecDeque::new(),
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
        if self.tls.is_some() {
            self.frame_ends.push_back(self.out.len());
        }
        true
    }

    /// Sends what rustls holds; `Ok(false)` when the socket would block
    /// before all of it went out.
    fn write_tls(tls: &mut rustls::ServerConnection, stream: &mut TcpStream) -> io::Result<bool> {
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Writes what it can; `Err` means the connection is dead.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_mut() {
            // Frames move into rustls only once it has sent all it held, so
            // its buffer never holds more than one queue's worth.
            if Self::write_tls(tls, &mut self.stream)? && self.out_pos < self.out.len() {
                while let Some(end) = self.frame_ends.pop_front() {
                    // One write, one record: the buffer limit is off, so
                    // rustls takes the whole frame.
                    tls.writer().write_all(&self.out[self.out_pos..end])?;
                    self.out_pos = end;
                }
                Self::write_tls(tls, &mut self.stream)?;
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
            for end in &mut self.frame_ends {
                *end -= self.out_pos;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// The plaintext of each application-data record a TLS client receives,
    /// one entry per record, until `want` bytes have arrived.
    fn records_seen_by_client(
        mut sock: std::net::TcpStream,
        root: rustls_pki_types::CertificateDer<'static>,
        want: usize,
    ) -> Vec<Vec<u8>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut sock).unwrap();
        }
        // Now feed the records one at a time and see what each carries.
        let mut records = Vec::new();
        let mut got = 0;
        for _ in 0..1000 {
            if got >= want {
                break;
            }
            let mut header = [0u8; 5];
            sock.read_exact(&mut header).unwrap();
            let len = u16::from_be_bytes([header[3], header[4]]) as usize;
            let mut record = header.to_vec();
            record.resize(5 + len, 0);
            sock.read_exact(&mut record[5..]).unwrap();
            tls.read_tls(&mut record.as_slice()).unwrap();
            tls.process_new_packets().unwrap();
            let mut plain = vec![0u8; 70_000];
            match tls.reader().read(&mut plain) {
                Ok(n) if n > 0 => {
                    got += n;
                    records.push(plain[..n].to_vec());
                }
                // A session ticket or another record without data.
                _ => {}
            }
        }
        records
    }

    #[test]
    fn each_frame_goes_out_in_a_tls_record_of_its_own() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let cert = ck.cert.der().clone();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frames: Vec<Vec<u8>> = vec![vec![0x40, 0, 0, 4, 1, 2, 3, 4], vec![0x40, 1, 0, 0], {
            let mut f = vec![0x40, 2, 0x01, 0x2c];
            f.resize(4 + 300, 7);
            f
        }];
        let want = frames.iter().map(Vec::len).sum();
        let client = std::thread::spawn(move || {
            let sock = std::net::TcpStream::connect(addr).unwrap();
            records_seen_by_client(sock, cert, want)
        });
        let (stream, peer) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let ft = FiveTuple {
            client: peer,
            server: addr,
            transport: turn::Transport::Tls,
        };
        let now = Instant::now();
        let tls = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut conn = ClientConn::new(TcpStream::from_std(stream), Some(tls), ft, 65_600, now);
        let mut scratch = vec![0u8; 4096];
        for _ in 0..500 {
            if !conn.tls.as_ref().unwrap().is_handshaking() {
                break;
            }
            assert_ne!(conn.read(&mut scratch, 65_536, now), ReadOutcome::Closed);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!conn.tls.as_ref().unwrap().is_handshaking());
        // Queued in one turn, flushed once: still one record each.
        for f in &frames {
            assert!(conn.queue(f));
        }
        conn.flush().unwrap();
        for _ in 0..200 {
            if conn.queued() == 0 && !conn.tls.as_ref().unwrap().wants_write() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            conn.flush().unwrap();
        }
        assert_eq!(client.join().unwrap(), frames);
    }
}

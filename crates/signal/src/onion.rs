//! The onion front: where `serve --onion`'s tor delivers onion-service
//! connections, and how each gets a client identity of its own.
//!
//! ```text
//! caller ─▶ Tor ─▶ serve's tor (HiddenServicePort V 127.0.0.1:FRONT, HiddenServiceExportCircuitID haproxy)
//!   ─▶ front listener 127.0.0.1:FRONT (loopback peers only)
//!        read "PROXY TCP6 fc00:dead:beef:4dad::AABB:CCDD ::1 65535 42\r\n" (≤ 107 bytes, ≤ 5 s)
//!        identity = 127.128.0.0/9 address derived from the circuit id
//!   ─▶ connect from IDENTITY:0 to the web or relay listener; splice both ways
//! ```
//!
//! Every onion-service connection reaches the service from tor, i.e. from
//! 127.0.0.1: without a per-circuit identity, all onion callers would share
//! one join bucket, one web-connection cap and one `max_allocations_per_ip`.
//! Tor tells the circuit of each connection in a PROXY protocol **version
//! 1** header (tor 0.4.9 writes the text form shown above, not version 2).
//! The front parses it ([`parse_proxy_v1`]), maps the circuit to a
//! loopback address ([`circuit_identity`]) and connects to the real
//! listener *from* that address, so the web server and the relay see each
//! circuit as a distinct client without any change to their limits, and
//! learn no address of the caller (there is none: the identity names a
//! circuit of this machine's tor).
//!
//! Design decisions:
//! - PROXY headers are accepted only here, on listeners serve opens on
//!   127.0.0.1 for its own tor, never on public listeners; a connection
//!   whose peer is not loopback, or whose first bytes are not tor's header,
//!   is dropped and counted.
//! - Splicing bytes keeps TLS end to end (TURN over TLS terminates at the
//!   relay); the extra loopback hop costs little next to Tor's.
//! - Identities come from 127.128.0.0/9 (23 bits of the circuit id): two
//!   circuits share an identity only if their ids differ by a multiple of
//!   2^23 − 2, i.e. after ~8 million circuits. `serve` refuses onion mode
//!   when `trusted_proxies` covers that range (a caller could then choose
//!   its address with a forwarding header).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// The longest PROXY v1 header, CRLF included (haproxy's spec: 107).
pub const MAX_HEADER: usize = 107;
/// How long tor may take to send the header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to the target may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The /64 tor encodes circuit ids in.
pub const TOR_CIRCUIT_PREFIX: [u16; 4] = [0xfc00, 0xdead, 0xbeef, 0x4dad];
/// The first address of the identity range 127.128.0.0/9.
pub const IDENTITY_BASE: Ipv4Addr = Ipv4Addr::new(127, 128, 0, 0);
/// The prefix length of the identity range.
pub const IDENTITY_PREFIX: u8 = 9;
/// Distinct identities (the range without its first and last address).
const IDENTITIES: u32 = (1 << (32 - IDENTITY_PREFIX as u32)) - 2;

/// Why the first bytes of a connection are not tor's PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// No CRLF within [`MAX_HEADER`] bytes.
    #[error("no PROXY header end within {MAX_HEADER} bytes")]
    TooLong,
    /// The bytes do not start with `PROXY TCP6 `.
    #[error("not a PROXY TCP6 header")]
    NotProxy,
    /// Wrong number of fields, a bad address or port.
    #[error("malformed PROXY header")]
    Malformed,
    /// A well-formed header whose source is not tor's circuit prefix.
    #[error("the PROXY header's source is not a tor circuit id")]
    NotTor,
}

/// Parses tor's PROXY v1 header at the start of `buf`: `Ok(None)` while it
/// may still be incomplete, else the global circuit id and the header's
/// length (the caller's data follows it).
pub fn parse_proxy_v1(buf: &[u8]) -> Result<Option<(u32, usize)>, ProxyHeaderError> {
    const PREFIX: &[u8] = b"PROXY TCP6 ";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(ProxyHeaderError::NotProxy);
    }
    let window = &buf[..buf.len().min(MAX_HEADER)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_HEADER {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[PREFIX.len().min(end)..end])
        .map_err(|_| ProxyHeaderError::Malformed)?;
    let mut fields = line.split(' ');
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyHeaderError::Malformed);
    };
    let src: Ipv6Addr = src.parse().map_err(|_| ProxyHeaderError::Malformed)?;
    dst.parse::<Ipv6Addr>()
        .map_err(|_| ProxyHeaderError::Malformed)?;
    for p in [sport, dport] {
        // Decimal without sign or leading zeros (haproxy's spec).
        if p.is_empty() || p.len() > 5 || (p.len() > 1 && p.starts_with('0')) {
            return Err(ProxyHeaderError::Malformed);
        }
        p.parse::<u16>().map_err(|_| ProxyHeaderError::Malformed)?;
    }
    let s = src.segments();
    if s[..4] != TOR_CIRCUIT_PREFIX || s[4] != 0 || s[5] != 0 {
        return Err(ProxyHeaderError::NotTor);
    }
    let circuit = (u32::from(s[6]) << 16) | u32::from(s[7]);
    Ok(Some((circuit, end + 2)))
}

/// The loopback address standing for circuit `circuit` (in
/// 127.128.0.0/9, never its first or last address).
pub fn circuit_identity(circuit: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(IDENTITY_BASE) + 1 + circuit % IDENTITIES)
}

/// Whether `ip` is in the identity range.
pub fn is_identity(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            u32::from(a) >> (32 - u32::from(IDENTITY_PREFIX))
                == u32::from(IDENTITY_BASE) >> (32 - u32::from(IDENTITY_PREFIX))
        }
        IpAddr::V6(_) => false,
    }
}

/// Counters of one front, for `/metrics`.
#[derive(Debug, Default)]
pub struct FrontStats {
    /// Connections spliced to the target.
    pub spliced: AtomicU64,
    /// Dropped: the header was missing, malformed or not tor's.
    pub bad_header: AtomicU64,
    /// Dropped: no complete header within [`HEADER_TIMEOUT`].
    pub header_timeout: AtomicU64,
    /// Dropped: the peer was not a loopback address.
    pub not_loopback: AtomicU64,
    /// Dropped: the front's connection cap was reached.
    pub over_cap: AtomicU64,
    /// Dropped: the target did not accept the connection.
    pub target_failed: AtomicU64,
}

/// One front: tor connects to `listener`, the front to `target`.
#[derive(Debug, Clone)]
pub struct Front {
    /// A name for metrics (`web`, `turn_tcp`, `turn_tls`).
    pub name: String,
    /// Where the front connects (from a circuit identity): an IPv4 address
    /// of this machine.
    pub target: SocketAddr,
    /// Its counters.
    pub stats: Arc<FrontStats>,
}

impl Front {
    /// A front for `target` named `name`; refuses a target the identities
    /// cannot connect to (IPv6: the identity range is IPv4 loopback).
    pub fn new(name: &str, target: SocketAddr) -> io::Result<Front> {
        let target = match target.ip() {
            IpAddr::V4(a) if a.is_unspecified() => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, target.port()))
            }
            IpAddr::V6(a) if a.is_unspecified() => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, target.port()))
            }
            IpAddr::V4(_) => target,
            IpAddr::V6(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the onion front needs an IPv4 or unspecified listener, not {target}"),
                ))
            }
        };
        Ok(Front {
            name: name.to_owned(),
            target,
            stats: Arc::default(),
        })
    }

    /// Accepts from `listener` until the task is dropped; each connection
    /// holds a permit of `cap` while it lives.
    pub async fn run(self, listener: TcpListener, cap: Arc<Semaphore>) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    // EMFILE and the like: pause instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !peer.ip().to_canonical().is_loopback() {
                self.stats.not_loopback.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Ok(permit) = cap.clone().try_acquire_owned() else {
                self.stats.over_cap.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let front = self.clone();
            tokio::spawn(async move {
                front.handle(stream).await;
                drop(permit);
            });
        }
    }

    async fn handle(&self, mut stream: TcpStream) {
        let stats = &self.stats;
        let header = tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut stream)).await;
        let (circuit, rest) = match header {
            Ok(Ok(x)) => x,
            Ok(Err(_)) => {
                stats.bad_header.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                stats.header_timeout.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let identity = circuit_identity(circuit);
        let connect = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((identity, 0)))?;
            socket.connect(self.target).await
        };
        let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(s)) => s,
            _ => {
                stats.target_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        stats.spliced.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        if upstream.write_all(&rest).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
    }
}

/// Reads up to the end of tor's header: the circuit id and the bytes read
/// after the header.
async fn read_header(stream: &mut TcpStream) -> io::Result<(u32, Vec<u8>)> {
    let mut buf = [0u8; MAX_HEADER];
    let mut len = 0;
    while len < MAX_HEADER {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        match parse_proxy_v1(&buf[..len]) {
            Ok(Some((circuit, used))) => return Ok((circuit, buf[used..len].to_vec())),
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        ProxyHeaderError::TooLong,
    ))
}

/// Prometheus text for the fronts' counters.
pub fn render_metrics(fronts: &[Front]) -> String {
    let mut out = String::from(
        "# HELP onionrtc_onion_connections_total Connections tor made to serve's onion fronts, by front and outcome.\n\
         # TYPE onionrtc_onion_connections_total counter\n",
    );
    for f in fronts {
        let s = &f.stats;
        for (outcome, v) in [
            ("spliced", &s.spliced),
            ("bad_header", &s.bad_header),
            ("header_timeout", &s.header_timeout),
            ("not_loopback", &s.not_loopback),
            ("over_cap", &s.over_cap),
            ("target_failed", &s.target_failed),
        ] {
            out.push_str(&format!(
                "onionrtc_onion_connections_total{{front=\"{}\",outcome=\"{outcome}\"}} {}\n",
                f.name,
                v.load(Ordering::Relaxed)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const TOR: &[u8] = b"PROXY TCP6 fc00:dead:beef:4dad::ffff:ffff ::1 65535 42\r\n";

    #[test]
    fn tor_header() {
        assert_eq!(parse_proxy_v1(TOR).unwrap(), Some((u32::MAX, TOR.len())));
        let h = b"PROXY TCP6 fc00:dead:beef:4dad::0:29 ::1 65535 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse_proxy_v1(h).unwrap(), Some((0x29, 52)));
        assert_eq!(&h[52..56], b"GET ");
        // Every prefix is "not yet".
        for n in 0..TOR.len() {
            assert_eq!(parse_proxy_v1(&TOR[..n]), Ok(None), "{n}");
        }
    }

    #[test]
    fn bad_headers() {
        use ProxyHeaderError::*;
        let cases: &[(&[u8], ProxyHeaderError)] = &[
            (b"GET / HTTP/1.1\r\n", NotProxy),
            (b"\x16\x03\x01", NotProxy),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NotProxy),
            (b"PROXY TCP6 ::1 ::1 1 2\r\n", NotTor),
            (b"PROXY TCP6 fc00:dead:beef:4dad:1::1 ::1 1 2\r\n", NotTor),
            (b"PROXY TCP6 fc00:dead:beef:4dad::1 ::1 1\r\n", Malformed),
            (
                b"PROXY TCP6 fc00:dead:beef:4dad::1 ::1 1 2 3\r\n",
                Malformed,
            ),
            (
                b"PROXY TCP6 fc00:dead:beef:4dad::1 ::1 1 65536\r\n",
                Malformed,
            ),
            (b"PROXY TCP6 fc00:dead:beef:4dad::1 ::1 01 2\r\n", Malformed),
            (b"PROXY TCP6 fc00:dead:beef:4dad::1 x 1 2\r\n", Malformed),
            (b"PROXY TCP6 fc00:dead:beef:4dad::1  ::1 1 2\r\n", Malformed),
            (b"PROXY TCP6 \r\n", Malformed),
            (b"PROXY TCP6 \xff\r\n", Malformed),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_proxy_v1(input),
                Err(*want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let mut long = b"PROXY TCP6 ".to_vec();
        long.resize(MAX_HEADER, b'1');
        assert_eq!(parse_proxy_v1(&long), Err(ProxyHeaderError::TooLong));
        long.truncate(MAX_HEADER - 1);
        assert_eq!(parse_proxy_v1(&long), Ok(None));
    }

    #[test]
    fn identities_are_distinct_loopback_addresses_in_their_range() {
        let a = circuit_identity(1);
        let b = circuit_identity(2);
        assert_ne!(a, b);
        for c in [0, 1, 41, IDENTITIES - 1, IDENTITIES, u32::MAX] {
            let ip = circuit_identity(c);
            assert!(ip.is_loopback(), "{ip}");
            assert!(is_identity(IpAddr::V4(ip)), "{ip}");
            assert_ne!(ip, Ipv4Addr::new(127, 128, 0, 0));
            assert_ne!(ip, Ipv4Addr::new(127, 255, 255, 255));
        }
        assert!(!is_identity(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!is_identity(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
    }

    /// A fake "tor" on loopback: two circuits reach an echo target from two
    /// identities; a connection without the header is dropped and counted.
    #[tokio::test]
    async fn front_splices_from_the_circuit_identity() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_addr = target.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let mut peers = Vec::new();
            for _ in 0..2 {
                let (mut s, peer) = target.accept().await.unwrap();
                peers.push(peer.ip());
                let mut b = [0u8; 5];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
            }
            peers
        });
        let front = Front::new("web", target_addr).unwrap();
        let stats = front.stats.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(front.run(listener, Arc::new(Semaphore::new(8))));
        for circuit in ["1", "2"] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let h = format!("PROXY TCP6 fc00:dead:beef:4dad::0:{circuit} ::1 65535 80\r\nhello");
            s.write_all(h.as_bytes()).await.unwrap();
            let mut b = [0u8; 5];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&b, b"hello");
        }
        let peers = seen.await.unwrap();
        assert_eq!(
            peers,
            [
                IpAddr::V4(circuit_identity(1)),
                IpAddr::V4(circuit_identity(2))
            ]
        );
        // Negative control: plain HTTP without tor's header never reaches
        // the target.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(stats.bad_header.load(Ordering::Relaxed), 1);
        assert_eq!(stats.spliced.load(Ordering::Relaxed), 2);
        let text = render_metrics(&[Front {
            name: "web".into(),
            target: target_addr,
            stats,
        }]);
        assert!(text
            .contains("onionrtc_onion_connections_total{front=\"web\",outcome=\"spliced\"} 2\n"));
        task.abort();
    }
}

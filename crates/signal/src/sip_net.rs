//! SIP over UDP, TCP and TLS (RFC 3261 §18, §26.2) for phones: `[sip]
//! listen = ["udp://IP:PORT", "tcp://IP:PORT", "tls://IP:PORT"]`, into the
//! same [`sip::Core`] as the `/sip` WebSocket (one registrar, one B2BUA,
//! one set of authentication limits; four transports).
//!
//! ```text
//! UDP socket ── datagram from A ── flow(A) (created, bounded) ── token bucket ── core.receive
//!            ◀─ response: to A when the Via asked rport, else A's IP and the Via's port (§18.2.2)
//!            ◀─ request to a user registered from A: to A (the flow), never to a Contact it claims
//! TCP listener ── accept (per-address and total caps as /ws) ── one task per connection:
//!   bytes ── framing (CRLF CRLF ping → CRLF pong, Content-Length, ≤ 65,535 bytes) ── core.receive
//!   oversize → 413 when the header section can be answered, then close; header timeout; idle timeout
//! TLS listener ── accept (same caps) ── TLS handshake (≤ 10 s, certificate from [`SipTls`],
//!   swapped on reload) ── the same per-connection task as TCP, Via `SIP/2.0/TLS`
//! ```
//!
//! A UDP "connection" of the core is a flow: one remote address on one
//! listener. Flows that no registration or call uses are forgotten after
//! [`UDP_FLOW_IDLE`]; at most [`MAX_UDP_FLOWS`] exist (further datagrams from
//! new addresses are dropped and counted). Requests we send over UDP are
//! retransmitted by the core (Timers A/E); our Via names the listener's
//! address with `rport`. Nothing here logs a client address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::ratelimit::TokenBucket;
use crate::sip_ws::{lock, Sink, SipRuntime};
use crate::state::SignalState;
use crate::ws::{self, stopped, OUT_QUEUE, SEND_TIMEOUT};

/// UDP flows remembered at most.
pub const MAX_UDP_FLOWS: usize = 100_000;
/// A UDP flow that no registration or call uses is forgotten after this.
pub const UDP_FLOW_IDLE: Duration = Duration::from_secs(64);
/// How often idle UDP flows are looked for.
pub const UDP_REAP_EVERY: Duration = Duration::from_secs(16);
/// A TCP connection must complete a message within this.
pub const TCP_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A TCP connection silent this long is closed (a registered phone
/// refreshes within `max_expires`, 3600 s, or sends CRLF keep-alives).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3700);
/// A TLS handshake must finish within this.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate of the `tls://` listeners, swapped in place when the
/// operator reloads (SIGHUP, `onionrtc ctl reload`): connections already
/// up keep the session they have, new handshakes present the new one.
#[derive(Debug, Clone)]
pub struct SipTls(Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>);

impl SipTls {
    pub fn new(config: Arc<rustls::ServerConfig>) -> SipTls {
        SipTls(Arc::new(std::sync::RwLock::new(config)))
    }

    /// New handshakes use `fresh`'s configuration from now on.
    pub fn follow(&self, fresh: &SipTls) {
        let config = fresh.current();
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A SIP transport of `[sip] listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    Udp,
    Tcp,
    Tls,
}

/// One entry of `[sip] listen`: `udp://IP:PORT`, `tcp://IP:PORT` or
/// `tls://IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipListen {
    pub transport: SipTransport,
    pub addr: SocketAddr,
}

impl SipListen {
    /// Parses `udp://IP:PORT`, `tcp://IP:PORT` or `tls://IP:PORT` (IPv6 in
    /// brackets; a port is required; no host names).
    pub fn parse(s: &str) -> Option<SipListen> {
        let s = s.trim();
        let (scheme, rest) = s.split_once("://")?;
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "udp" => SipTransport::Udp,
            "tcp" => SipTransport::Tcp,
            "tls" => SipTransport::Tls,
            _ => return None,
        };
        let addr: SocketAddr = rest.parse().ok()?;
        (addr.port() != 0).then_some(SipListen { transport, addr })
    }
}

impl std::fmt::Display for SipListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.transport {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
            SipTransport::Tls => "tls",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// Receive and send buffer asked for on a SIP UDP socket (the kernel caps
/// it at net.core.[rw]mem_max): a burst of requests and responses must not
/// overflow the default 208 KiB while the core is busy, or the transaction
/// layer has to make up for it with retransmissions.
const UDP_BUFFER: usize = 4 << 20;

/// A UDP socket on `addr` with large buffers (IPv6: v6-only).
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Our Via sent-by / Contact host on a listener: its address, or the
/// domain when it listens on every address.
fn sent_by(local: SocketAddr, domain: &str) -> String {
    match local.ip() {
        ip if ip.is_unspecified() => format!("{domain}:{}", local.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", local.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", local.port()),
    }
}

/// Binds every `[sip] listen` address and starts serving them; the
/// addresses bound, in order. `[sip]` must be enabled, and `tls` given
/// when a listener is `tls://`.
pub async fn start(
    state: &SignalState,
    listen: &[SipListen],
    tls: Option<SipTls>,
) -> std::io::Result<Vec<SocketAddr>> {
    let Some(rt) = state.inner.sip.clone() else {
        return Err(std::io::Error::other("[sip] is not enabled"));
    };
    let mut bound = Vec::new();
    for l in listen {
        match l.transport {
            SipTransport::Udp => {
                let socket = Arc::new(udp_socket(l.addr)?);
                let local = socket.local_addr()?;
                bound.push(local);
                tokio::spawn(udp_loop(state.clone(), Arc::clone(&rt), socket, local));
            }
            SipTransport::Tcp | SipTransport::Tls => {
                let tls = match l.transport {
                    SipTransport::Tls => match tls.clone() {
                        Some(t) => Some(t),
                        None => {
                            return Err(std::io::Error::other(format!(
                                "[sip] listen {l} needs a TLS certificate and key"
                            )))
                        }
                    },
                    _ => None,
                };
                let listener = TcpListener::bind(l.addr).await?;
                let local = listener.local_addr()?;
                bound.push(local);
                let (state, rt) = (state.clone(), Arc::clone(&rt));
                tokio::spawn(tcp_accept(state, rt, listener, local, tls));
            }
        }
    }
    Ok(bound)
}

/// Where a message for UDP flow `flow` goes (RFC 3261 §18.2.2, RFC 3581):
/// a response to the flow when its top Via has `rport` (we filled it in),
/// else to the flow's IP and the Via's sent-by port (5060 by default); a
/// request to the flow.
pub fn udp_destination(data: &[u8], flow: SocketAddr) -> SocketAddr {
    if !data.starts_with(b"SIP/2.0 ") {
        return flow;
    }
    let text = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    let via = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("via") || name.eq_ignore_ascii_case("v")).then_some(value)
    });
    let Some(via) = via else { return flow };
    let first = via.split(',').next().unwrap_or("");
    let mut parts = first.split(';');
    let sent = parts.next().unwrap_or("").trim();
    if parts.any(|p| {
        let name = p.split('=').next().unwrap_or("").trim();
        name.eq_ignore_ascii_case("rport")
    }) {
        return flow;
    }
    // "SIP/2.0/UDP host[:port]"
    let host_port = sent.split_whitespace().nth(1).unwrap_or("");
    let port = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']')) => {
            p.parse::<u16>().ok()
        }
        _ => None,
    };
    SocketAddr::new(flow.ip(), port.filter(|p| *p != 0).unwrap_or(5060))
}

struct Flow {
    conn: sip::ConnId,
    last: Instant,
    bucket: TokenBucket,
}

async fn udp_loop(
    state: SignalState,
    rt: Arc<SipRuntime>,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
) {
    let mut shutdown = state.inner.shutdown.subscribe();
    let me = sent_by(local, &rt.domain);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut reap = tokio::time::interval(UDP_REAP_EVERY);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A datagram is at most 65,535 bytes; one more shows a larger input
    // (it cannot happen over IP, but the core counts it as too large).
    let mut buf = vec![0u8; sip::MAX_MESSAGE_BYTES + 1];
    let rate = f64::from(rt.messages_per_sec.max(1));
    let burst = rt.messages_per_sec.saturating_mul(2).max(1);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            _ = reap.tick() => reap_flows(&rt, &mut flows, Instant::now()),
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else {
                    // ICMP errors surface here on some systems: not fatal.
                    continue;
                };
                let now = Instant::now();
                if !flows.contains_key(&from) {
                    if flows.len() >= MAX_UDP_FLOWS {
                        reap_flows(&rt, &mut flows, now);
                    }
                    if flows.len() >= MAX_UDP_FLOWS {
                        rt.counters.udp_flows_full.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let conn = rt.next.fetch_add(1, Ordering::Relaxed);
                    lock(&rt.conns).insert(conn, Sink::Udp(Arc::clone(&socket), from));
                    lock(&rt.core).connected_at(conn, from, "UDP", false, &me);
                    flows.insert(from, Flow { conn, last: now, bucket: TokenBucket::new(rate, burst, now) });
                }
                let Some(flow) = flows.get_mut(&from) else { continue };
                flow.last = now;
                if !flow.bucket.take(now) {
                    rt.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let conn = flow.conn;
                rt.receive(conn, &buf[..n], state.config());
            }
        }
    }
}

/// Forgets the flows idle for [`UDP_FLOW_IDLE`] that no registration or
/// call uses.
fn reap_flows(rt: &SipRuntime, flows: &mut HashMap<SocketAddr, Flow>, now: Instant) {
    let in_use = lock(&rt.core).conns_in_use();
    let gone: Vec<(SocketAddr, sip::ConnId)> = flows
        .iter()
        .filter(|(_, f)| {
            now.saturating_duration_since(f.last) >= UDP_FLOW_IDLE && !in_use.contains(&f.conn)
        })
        .map(|(a, f)| (*a, f.conn))
        .collect();
    for (addr, conn) in gone {
        flows.remove(&addr);
        lock(&rt.conns).remove(&conn);
        let outs = lock(&rt.core).closed(conn, now);
        rt.dispatch(outs);
    }
}

/// Accepts SIP over TCP, or over TLS when `tls` is given.
async fn tcp_accept(
    state: SignalState,
    rt: Arc<SipRuntime>,
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<SipTls>,
) {
    let mut shutdown = state.inner.shutdown.subscribe();
    let me = sent_by(local, &rt.domain);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            r = listener.accept() => {
                let Ok((stream, peer)) = r else {
                    // Out of descriptors and the like: breathe, go on.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Some((slot, guard)) = ws::admit(&state, peer.ip()) else {
                    continue; // dropped: closes the connection
                };
                let (state, rt, me) = (state.clone(), Arc::clone(&rt), me.clone());
                let tls = tls.as_ref().map(SipTls::current);
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    match tls {
                        None => tcp_conn(state, rt, stream, peer, me, "TCP").await,
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => tcp_conn(state, rt, stream, peer, me, "TLS").await,
                                // Not logged per connection (scanners); counted.
                                _ => {
                                    rt.counters.tls_handshake_failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    drop((guard, slot));
                });
            }
        }
    }
}

/// What the start of a TCP stream holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// More bytes needed.
    Incomplete,
    /// RFC 5626 §3.5.1 ping (CRLF CRLF, answered CRLF): bytes to consume.
    Ping(usize),
    /// A lone CRLF (a pong, or noise between messages): bytes to consume.
    Skip(usize),
    /// A whole message of this many bytes.
    Message(usize),
    /// A message whose Content-Length makes it too large: its header
    /// section's length (answered 413, then the connection closes).
    TooLarge(usize),
    /// No header section end within the limit, or an unreadable
    /// Content-Length: the header section's length if there is one
    /// (answered 400 when possible), then the connection closes.
    Broken(Option<usize>),
}

/// Frames the start of a SIP stream (RFC 3261 §18.3: Content-Length
/// delimits the body; absent means 0).
pub fn next_frame(buf: &[u8]) -> Frame {
    if buf.starts_with(b"\r\n\r\n") {
        return Frame::Ping(4);
    }
    if buf.starts_with(b"\r\n") {
        return if buf.len() >= 4 || (buf.len() == 3 && buf[2] != b'\r') {
            Frame::Skip(2)
        } else {
            Frame::Incomplete
        };
    }
    let limit = buf.len().min(sip::MAX_MESSAGE_BYTES);
    let Some(end) = buf[..limit].windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > sip::MAX_MESSAGE_BYTES {
            Frame::Broken(None)
        } else {
            Frame::Incomplete
        };
    };
    let head_len = end + 4;
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Frame::Broken(Some(head_len));
    };
    let mut length: Option<usize> = None;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if !(name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")) {
            continue;
        }
        let v = value.trim();
        if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Frame::Broken(Some(head_len));
        }
        let n: usize = v.parse().unwrap_or(usize::MAX);
        if length.is_some_and(|l| l != n) {
            return Frame::Broken(Some(head_len));
        }
        length = Some(n);
    }
    let total = head_len.saturating_add(length.unwrap_or(0));
    if total > sip::MAX_MESSAGE_BYTES {
        return Frame::TooLarge(head_len);
    }
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    }
}

/// One SIP connection over a stream (`transport`: `TCP` or `TLS`, as our
/// Via names it).
async fn tcp_conn<S>(
    state: SignalState,
    rt: Arc<SipRuntime>,
    stream: S,
    peer: SocketAddr,
    me: String,
    transport: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = rt.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    lock(&rt.conns).insert(conn, Sink::Stream(tx.clone()));
    lock(&rt.core).connected_at(conn, peer, transport, true, &me);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut shutdown = state.inner.shutdown.subscribe();
    let now = Instant::now();
    let rate = f64::from(rt.messages_per_sec.max(1));
    let mut bucket = TokenBucket::new(rate, rt.messages_per_sec.saturating_mul(2).max(1), now);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut last_seen = tokio::time::Instant::now();
    // Set while the buffer holds part of a message.
    let mut partial_since: Option<tokio::time::Instant> = None;
    let mut closing = false;
    'conn: loop {
        let deadline = match partial_since {
            Some(t) => t + TCP_HEADER_TIMEOUT,
            None => last_seen + TCP_IDLE_TIMEOUT,
        };
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            () = tokio::time::sleep_until(deadline) => break,
            out = rx.recv() => {
                let Some(data) = out else { break };
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, wr.write_all(&data)).await, Ok(Ok(()))) {
                    break;
                }
            }
            r = rd.read(&mut chunk), if !closing => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                last_seen = tokio::time::Instant::now();
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match next_frame(&buf) {
                        Frame::Incomplete => break,
                        Frame::Ping(k) => {
                            buf.drain(..k);
                            let _ = tx.try_send(b"\r\n".to_vec());
                        }
                        Frame::Skip(k) => {
                            buf.drain(..k);
                        }
                        Frame::Message(k) => {
                            if !bucket.take(Instant::now()) {
                                rt.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                                break 'conn;
                            }
                            let msg: Vec<u8> = buf.drain(..k).collect();
                            rt.receive(conn, &msg, state.config());
                        }
                        Frame::TooLarge(head) => {
                            let outs = lock(&rt.core).refused_too_large_head(conn, &buf[..head]);
                            rt.dispatch(outs);
                            closing = true;
                            break;
                        }
                        Frame::Broken(head) => {
                            match head {
                                // The core answers 400 when it can, and counts.
                                Some(h) => rt.receive(conn, &buf[..h], state.config()),
                                None => lock(&rt.core).refused_too_large(),
                            }
                            closing = true;
                            break;
                        }
                    }
                }
                if closing {
                    buf.clear();
                    // Let the answer out, then close.
                    partial_since = Some(tokio::time::Instant::now() - TCP_HEADER_TIMEOUT + Duration::from_secs(2));
                    continue;
                }
                partial_since = if buf.is_empty() {
                    None
                } else {
                    partial_since.or(Some(tokio::time::Instant::now()))
                };
            }
        }
    }
    lock(&rt.conns).remove(&conn);
    let outs = lock(&rt.core).closed(conn, Instant::now());
    rt.dispatch(outs);
    // Flush what is queued (a 413 or 400) before the socket closes.
    while let Ok(data) = rx.try_recv() {
        if !matches!(
            tokio::time::timeout(SEND_TIMEOUT, wr.write_all(&data)).await,
            Ok(Ok(()))
        ) {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_entries() {
        let l = SipListen::parse("udp://127.0.0.1:5060").unwrap();
        assert_eq!(l.transport, SipTransport::Udp);
        assert_eq!(l.to_string(), "udp://127.0.0.1:5060");
        let l = SipListen::parse("TCP://[::1]:5070").unwrap();
        assert_eq!(l.transport, SipTransport::Tcp);
        assert_eq!(l.addr.port(), 5070);
        let l = SipListen::parse("tls://127.0.0.1:5061").unwrap();
        assert_eq!(l.transport, SipTransport::Tls);
        assert_eq!(l.to_string(), "tls://127.0.0.1:5061");
        for bad in [
            "udp://127.0.0.1",
            "sctp://127.0.0.1:5061",
            "udp://example.org:5060",
            "127.0.0.1:5060",
            "udp://127.0.0.1:0",
            "",
        ] {
            assert!(SipListen::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            sent_by("0.0.0.0:5060".parse().unwrap(), "ex.org"),
            "ex.org:5060"
        );
        assert_eq!(
            sent_by("[::1]:5060".parse().unwrap(), "ex.org"),
            "[::1]:5060"
        );
    }

    #[test]
    fn udp_response_destination() {
        let flow: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        let req = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5062\r\n\r\n";
        assert_eq!(udp_destination(req, flow), flow);
        let rport = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h:5062;branch=z9;rport=40000;received=127.0.0.2\r\n\r\n";
        assert_eq!(udp_destination(rport, flow), flow);
        let port = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h:5062;branch=z9;received=127.0.0.2\r\n\r\n";
        assert_eq!(
            udp_destination(port, flow),
            "127.0.0.2:5062".parse().unwrap()
        );
        let none = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [2001:db8::1];branch=z9\r\n\r\n";
        assert_eq!(
            udp_destination(none, flow),
            "127.0.0.2:5060".parse().unwrap()
        );
        // Never another IP than the flow's, whatever the Via says.
        let other = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.7:9;branch=z9\r\n\r\n";
        assert_eq!(udp_destination(other, flow), "127.0.0.2:9".parse().unwrap());
    }

    #[test]
    fn stream_framing() {
        assert_eq!(next_frame(b""), Frame::Incomplete);
        assert_eq!(next_frame(b"\r\n\r\nINVITE"), Frame::Ping(4));
        assert_eq!(next_frame(b"\r\n"), Frame::Incomplete);
        assert_eq!(next_frame(b"\r\nOPT"), Frame::Skip(2));
        let msg = b"OPTIONS sip:x SIP/2.0\r\nl: 3\r\n\r\nabcNEXT";
        assert_eq!(next_frame(msg), Frame::Message(msg.len() - 4));
        assert_eq!(next_frame(&msg[..msg.len() - 6]), Frame::Incomplete);
        let no_len = b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\nrest";
        assert_eq!(next_frame(no_len), Frame::Message(no_len.len() - 4));
        let big = b"INVITE sip:x SIP/2.0\r\nContent-Length: 70000\r\n\r\n";
        assert_eq!(next_frame(big), Frame::TooLarge(big.len()));
        let huge = b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999999999999\r\n\r\n";
        assert_eq!(next_frame(huge), Frame::Broken(Some(huge.len())));
        let two = b"INVITE sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab";
        assert_eq!(next_frame(two), Frame::Broken(Some(two.len() - 2)));
        let endless = vec![b'a'; sip::MAX_MESSAGE_BYTES + 1];
        assert_eq!(next_frame(&endless), Frame::Broken(None));
        assert_eq!(next_frame(&endless[..1000]), Frame::Incomplete);
    }
}

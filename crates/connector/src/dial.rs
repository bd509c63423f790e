//! Upstream streams: a TCP connection made directly or through a SOCKS5
//! proxy (tor's or another), or a stream of embedded Tor, optionally
//! wrapped in TLS, under one timeout.
//!
//! Through SOCKS5 the host *name* is passed to the proxy (no local DNS
//! lookup, so nothing leaks to the local resolver) and every dial uses
//! fresh random credentials: with tor's `IsolateSOCKSAuth` (on by default)
//! every flow gets its own circuit, and a re-dial a new one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::Endpoint;
use crate::stats::Stats;

/// A bidirectional byte stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An upstream stream (TCP, or TLS over TCP).
pub type BoxIo = Box<dyn Io>;

/// Why an upstream stream could not be opened. Errors name the target as
/// configured (the relay's or site's host), never a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The whole dial took longer than the dial timeout.
    #[error("connecting to {target} timed out after {timeout:?}")]
    Timeout {
        /// The upstream.
        target: String,
        /// The limit.
        timeout: Duration,
    },
    /// The TCP connection (to the target, or to the SOCKS proxy) failed.
    #[error("TCP connection to {target} failed: {source}")]
    Connect {
        /// Where the connection went.
        target: String,
        /// The error.
        source: io::Error,
    },
    /// The SOCKS5 proxy refused or failed.
    #[error("SOCKS5 proxy {proxy} could not connect to {target}: {source}")]
    Socks {
        /// The proxy.
        proxy: String,
        /// The upstream.
        target: String,
        /// The proxy's answer.
        source: tokio_socks::Error,
    },
    /// The TLS handshake failed (certificate, pin, protocol).
    #[error("TLS handshake with {target} failed: {reason}")]
    Tls {
        /// The upstream.
        target: String,
        /// What went wrong, in words.
        reason: String,
        /// The error (wrapping rustls's).
        io: io::Error,
    },
    /// The host cannot be a TLS server name.
    #[error("{0:?} cannot be used as a TLS server name")]
    ServerName(String),
    /// Embedded Tor could not open a stream.
    #[error("{0}")]
    Tor(String),
}

impl DialError {
    /// Whether the relay's certificate was refused (a configuration
    /// problem rather than a network one).
    pub fn is_certificate(&self) -> bool {
        match self {
            DialError::Tls { io, .. } => {
                rustls_error(io).is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
            }
            _ => false,
        }
    }
}

fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
}

/// A TLS failure in words: rustls prints its "other" certificate errors
/// (our pin mismatch) with `Debug`, so those get their own text.
fn tls_reason(e: &io::Error) -> String {
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) => {
            let text = o.0.to_string();
            if text.contains("CaUsedAsEndEntity") {
                "invalid peer certificate: it is a CA certificate used as the server's own \
                 (e.g. made by `openssl req -x509`); pin its key with --relay-spki instead"
                    .to_owned()
            } else {
                format!("invalid peer certificate: {text}")
            }
        }
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            "invalid peer certificate: no trusted CA signed it (self-signed? give its CA \
             with --relay-ca, or pin its key with --relay-spki)"
                .to_owned()
        }
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

/// How TCP connections leave this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Straight.
    Direct,
    /// Through the SOCKS5 proxy at this `HOST:PORT`.
    Socks5(String),
    /// Through embedded Tor, one circuit per stream.
    #[cfg(feature = "arti")]
    Tor(crate::tor::Embedded),
}

/// Opens upstream streams along a [`Route`].
#[derive(Debug, Clone)]
pub struct Dialer {
    route: Route,
    timeout: Duration,
}

impl Dialer {
    /// A dialer whose every dial is bounded by `timeout`.
    pub fn new(route: Route, timeout: Duration) -> Dialer {
        Dialer { route, timeout }
    }

    /// The route.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// A stream to `ep`: TCP along the route, then TLS with `tls` when the
    /// endpoint is `tls`. With `stats`, the TCP bytes are counted as
    /// upstream TURN bytes.
    pub async fn dial(
        &self,
        ep: &Endpoint,
        tls: Option<&Arc<ClientConfig>>,
        stats: Option<Arc<Stats>>,
    ) -> Result<BoxIo, DialError> {
        let target = ep.authority();
        match tokio::time::timeout(self.timeout, self.dial_inner(ep, tls, stats)).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Timeout {
                target,
                timeout: self.timeout,
            }),
        }
    }

    async fn dial_inner(
        &self,
        ep: &Endpoint,
        tls: Option<&Arc<ClientConfig>>,
        stats: Option<Arc<Stats>>,
    ) -> Result<BoxIo, DialError> {
        #[cfg(feature = "arti")]
        if let Route::Tor(t) = &self.route {
            let stream = t
                .tor()
                .connect(&ep.host, ep.port)
                .await
                .map_err(|e| DialError::Tor(e.to_string()))?;
            let stream = Counted {
                inner: stream,
                stats,
            };
            return secure(ep, tls, stream).await;
        }
        let tcp = self.tcp(ep).await?;
        let _ = tcp.set_nodelay(true);
        secure(ep, tls, Counted { inner: tcp, stats }).await
    }

    async fn tcp(&self, ep: &Endpoint) -> Result<TcpStream, DialError> {
        match &self.route {
            Route::Direct => TcpStream::connect((ep.host.as_str(), ep.port))
                .await
                .map_err(|source| DialError::Connect {
                    target: ep.authority(),
                    source,
                }),
            Route::Socks5(proxy) => socks5(proxy, ep).await,
            #[cfg(feature = "arti")]
            Route::Tor(_) => Err(DialError::Tor("not a TCP route".into())),
        }
    }
}

/// `stream`, wrapped in TLS with `tls` when the endpoint is `tls`.
async fn secure<S: Io + 'static>(
    ep: &Endpoint,
    tls: Option<&Arc<ClientConfig>>,
    stream: S,
) -> Result<BoxIo, DialError> {
    match (ep.tls, tls) {
        (true, Some(config)) => {
            let name = crate::tls::server_name(&ep.host)
                .ok_or_else(|| DialError::ServerName(ep.host.clone()))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|io| DialError::Tls {
                    target: ep.authority(),
                    reason: tls_reason(&io),
                    io,
                })?;
            Ok(Box::new(stream))
        }
        _ => Ok(Box::new(stream)),
    }
}

/// A TCP stream to `ep` through the SOCKS5 proxy at `proxy`, with fresh
/// credentials.
async fn socks5(proxy: &str, ep: &Endpoint) -> Result<TcpStream, DialError> {
    let socket = TcpStream::connect(proxy)
        .await
        .map_err(|source| DialError::Connect {
            target: format!("the SOCKS5 proxy {proxy}"),
            source,
        })?;
    let _ = socket.set_nodelay(true);
    let (user, pass) = isolation_credentials();
    let stream = tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(
        socket,
        (ep.host.as_str(), ep.port),
        &user,
        &pass,
    )
    .await
    .map_err(|source| DialError::Socks {
        proxy: proxy.to_owned(),
        target: ep.authority(),
        source,
    })?;
    Ok(stream.into_inner())
}

/// Fresh random SOCKS5 credentials (32 hex digits each): one circuit per
/// dial under tor's `IsolateSOCKSAuth`.
fn isolation_credentials() -> (String, String) {
    let hex = |b: [u8; 16]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    (hex(rand::random()), hex(rand::random()))
}

/// A stream whose bytes are added to the upstream counters.
#[derive(Debug)]
struct Counted<S> {
    inner: S,
    stats: Option<Arc<Stats>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(s) = &self.stats {
            let n = buf.filled().len().saturating_sub(before);
            Stats::add(&s.bytes_down, n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Some(s), Poll::Ready(Ok(n))) = (&self.stats, &r) {
            Stats::add(&s.bytes_up, *n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let (Some(s), Poll::Ready(Ok(n))) = (&self.stats, &r) {
            Stats::add(&s.bytes_up, *n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_fresh() {
        let (u1, p1) = isolation_credentials();
        let (u2, _) = isolation_credentials();
        assert_eq!(u1.len(), 32);
        assert_eq!(p1.len(), 32);
        assert_ne!(u1, u2);
        assert_ne!(u1, p1);
    }
}

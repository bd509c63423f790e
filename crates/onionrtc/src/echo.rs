//! The echo test's media side in `serve`: for each `POST /api/echo`, our
//! own WebRTC endpoint (crate `media`, no codec) allocates on the server's
//! relay over UDP like any caller — so the path under test is caller →
//! relay → echo — answers the offer, and sends every audio frame it
//! receives straight back (same payload and RTP timestamp: RTP-level
//! loopback, no transcoding) for at most [`SESSION_LIMIT`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use media::ice_servers::parse_turn_url;
use media::{Endpoint, EndpointConfig, EndpointEvent, RelayProtocol};
use signal::echo::{AnswerFuture, EchoError, EchoRelay, EchoService};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// A session ends after this, connected or not.
pub const SESSION_LIMIT: Duration = Duration::from_secs(60);
/// The endpoint must have its relay address within this.
const ALLOCATE_LIMIT: Duration = Duration::from_secs(5);
/// ICE must connect within this after the answer.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// The echo service of `serve`.
#[derive(Debug, Default)]
pub struct EchoServer;

impl EchoService for EchoServer {
    fn answer(
        &self,
        offer: String,
        relay: EchoRelay,
        permit: OwnedSemaphorePermit,
    ) -> AnswerFuture {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                session(offer, relay, tx).await;
                drop(permit);
            });
            rx.await
                .unwrap_or_else(|_| Err(EchoError::Unavailable("the echo session ended".into())))
        })
    }
}

/// The relay's UDP address from the TURN URLs (an IP literal: the echo
/// runs beside the relay).
fn udp_relay(urls: &[String]) -> Option<SocketAddr> {
    urls.iter().filter_map(|u| parse_turn_url(u)).find_map(|u| {
        let ip: IpAddr = u.host.parse().ok()?;
        (u.protocol == RelayProtocol::Udp).then_some(SocketAddr::new(ip, u.port))
    })
}

async fn session(
    offer: String,
    relay: EchoRelay,
    answer_tx: oneshot::Sender<Result<String, EchoError>>,
) {
    let Some(server) = udp_relay(&relay.urls) else {
        let _ = answer_tx.send(Err(EchoError::Unavailable(
            "the echo test needs a UDP TURN URL with an IP address".into(),
        )));
        return;
    };
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match tokio::net::UdpSocket::bind(bind).await {
        Ok(s) if s.connect(server).await.is_ok() => s,
        _ => {
            let _ = answer_tx.send(Err(EchoError::Unavailable("no socket for the echo".into())));
            return;
        }
    };
    let local = sock.local_addr().unwrap_or(bind);
    let turn = turn::client::ClientConfig::new(
        server,
        turn::Transport::Udp,
        relay.username,
        relay.credential,
    );
    let mut config = EndpointConfig::new(turn, local);
    config.connect_timeout = CONNECT_LIMIT;
    let start = Instant::now();
    let mut ep = match Endpoint::new(config, start) {
        Ok(ep) => ep,
        Err(e) => {
            let _ = answer_tx.send(Err(EchoError::Unavailable(e.to_string())));
            return;
        }
    };
    if ep.start(start).is_err() {
        let _ = answer_tx.send(Err(EchoError::Unavailable("cannot allocate".into())));
        return;
    }
    let mut answer_tx = Some(answer_tx);
    let mut offer = Some(offer);
    let deadline = start + SESSION_LIMIT;
    let mut buf = vec![0u8; 65_536];
    loop {
        while let Some(t) = ep.poll_transmit() {
            let _ = sock.send(&t.payload).await;
        }
        let now = Instant::now();
        while let Some(ev) = ep.poll_event() {
            match ev {
                EndpointEvent::Allocated { .. } => {
                    if let (Some(tx), Some(sdp)) = (answer_tx.take(), offer.take()) {
                        let r = ep.accept_offer(now, &sdp).map_err(|e| {
                            EchoError::BadOffer(format!("cannot answer the offer: {e}"))
                        });
                        let failed = r.is_err();
                        let _ = tx.send(r);
                        if failed {
                            ep.close(now);
                            flush(&mut ep, &sock).await;
                            return;
                        }
                    }
                }
                EndpointEvent::AllocationFailed { code, .. } => {
                    if let Some(tx) = answer_tx.take() {
                        let _ = tx.send(Err(EchoError::Unavailable(format!(
                            "the relay refused the echo's allocation ({code})"
                        ))));
                    }
                    return;
                }
                // RTP-level loopback: the frame goes back as it came.
                EndpointEvent::Audio(p) => {
                    ep.send_audio(now, p.rtp_time, &p.payload);
                }
                EndpointEvent::Failed(_) => {
                    ep.close(now);
                    flush(&mut ep, &sock).await;
                    return;
                }
                EndpointEvent::Connected | EndpointEvent::Disconnected => {}
            }
        }
        if answer_tx.is_some() && now >= start + ALLOCATE_LIMIT {
            if let Some(tx) = answer_tx.take() {
                let _ = tx.send(Err(EchoError::Unavailable(
                    "the relay did not allocate in time".into(),
                )));
            }
            return;
        }
        if now >= deadline {
            break;
        }
        let wake = ep
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(100))
            .min(deadline);
        tokio::select! {
            r = sock.recv(&mut buf) => {
                if let Ok(n) = r {
                    ep.handle_turn_datagram(Instant::now(), server, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                ep.handle_timeout(Instant::now());
            }
        }
    }
    ep.close(Instant::now());
    flush(&mut ep, &sock).await;
}

async fn flush(ep: &mut Endpoint, sock: &tokio::net::UdpSocket) {
    while let Some(t) = ep.poll_transmit() {
        let _ = sock.send(&t.payload).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_url_with_an_address_is_used() {
        let urls = [
            "turns:relay.example:443?transport=tcp".to_owned(),
            "turn:127.0.0.1:3478?transport=tcp".to_owned(),
            "turn:127.0.0.1:3478?transport=udp".to_owned(),
        ];
        assert_eq!(udp_relay(&urls), Some("127.0.0.1:3478".parse().unwrap()));
        assert_eq!(udp_relay(&urls[..2]), None);
        assert_eq!(udp_relay(&["turn:relay.example:3478".to_owned()]), None);
    }
}

//! The WebRTC ↔ plain-RTP gateway: calls between a browser SIP client
//! (JsSIP, SIP.js: ICE, DTLS-SRTP) and a phone (plain RTP/AVP, no ICE).
//!
//! A browser cannot speak plain RTP and a phone cannot speak WebRTC, so
//! when the B2BUA sends an offer from one kind to the other (a WebSocket
//! client is a browser, a UDP/TCP/TLS client a phone) and the media bridge
//! is on (`[sip] media_ports`), the leg gets a gateway:
//!
//! ```text
//! browser ══ICE/DTLS-SRTP══▶ relay ══▶ our media::Endpoint ─┐        ┌─ port p, p+1 ◀──RTP── phone
//!         (relay candidates only:    (allocated on the      └─frames─┘  (latching as the bridge)
//!          the browser learns the     relay like any caller)
//!          relay's address only)
//! ```
//!
//! - **Towards the browser** the gateway is a WebRTC endpoint of our own
//!   (crate `media`: str0m + our TURN client) that allocates on the
//!   server's relay over UDP like any caller, so the browser's path is the
//!   usual relay/relay one and its SDP holds only our relayed address.
//! - **Towards the phone** it sends and receives plain RTP on a port pair
//!   of `[sip] media_ports`, latching on the phone's packets like the
//!   phone-to-phone bridge ([`crate::sip_media`]).
//! - **Codecs pass through, never transcoded**: the phone is offered the
//!   browser's Opus, G.722, PCMU and PCMA (in the browser's order), or the browser
//!   is offered the phone's; whatever the answer picks is the only codec
//!   the other side is offered or answered (the browser's offer is
//!   restricted to it before our endpoint answers it). DTMF
//!   (telephone-event) and comfort noise are not carried.
//! - **Timing.** Our endpoint allocates when the offer arrives; the SIP
//!   core waits for it (at most [`WAIT`]) only when it must write our
//!   relay candidate into an offer, or answer the browser. The endpoints
//!   run on a runtime of their own (one thread), so that wait never
//!   starves them.
//! - **Within the dialog** a re-INVITE or UPDATE that carries SDP is
//!   refused with 488 (the session stays as it was): hold and codec
//!   changes through a gateway are not supported yet.
//!
//! A gateway goes when its call ends, like a bridge; a gateway whose
//! endpoint failed (allocation refused, ICE lost for good) hangs its call
//! up. Nothing here is logged with an address.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use media::{AudioCodec, Endpoint, EndpointConfig, EndpointEvent};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::ratelimit::TokenBucket;
use crate::sip_media::{
    rtp_like, MediaCounters, Peer, MAX_DATAGRAM, PACKETS_PER_SEC, PACKET_BURST,
};
use crate::sip_ws::lock;

/// How long the SIP core waits for our endpoint (its allocation, then the
/// offer or answer).
pub const WAIT: Duration = Duration::from_secs(3);
/// ICE must connect within this after the offer/answer.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// Which side offered.
#[derive(Debug)]
enum Dir {
    /// The browser's offer went to a phone (as plain RTP): the browser is
    /// answered once the phone answers. Holds the browser's offer.
    BrowserOffered(String),
    /// The phone's offer went to a browser (our endpoint's offer): the
    /// phone is answered once the browser answers. Holds the phone's
    /// codecs (payload type, codec) in its order.
    PhoneOffered(Vec<(u8, AudioCodec)>),
}

/// What the SIP side asks the endpoint.
enum Cmd {
    /// Create an offer.
    Offer(std_mpsc::Sender<Result<String, String>>),
    /// Answer this offer.
    Answer(String, std_mpsc::Sender<Result<String, String>>),
    /// Take this answer; reply with the codec it chose.
    Accept(String, std_mpsc::Sender<Result<AudioCodec, String>>),
}

/// What the SIP side and the endpoint's task share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The phone, as its SDP and signaling describe it.
    pub(crate) phone: Peer,
    /// The phone's payload type of the chosen codec, once answered.
    pub(crate) phone_pt: Option<u8>,
    pub(crate) last_packet: Instant,
    pub(crate) idle_reported: bool,
    /// The endpoint failed for good: hang the call up.
    pub(crate) failed: bool,
}

/// One gateway (one call leg between a browser and a phone).
#[derive(Debug)]
pub(crate) struct Gateway {
    /// Its two port pairs: the phone's RTP (RTCP on the next), and the
    /// port our endpoint talks to the relay from.
    pub(crate) ports: [u16; 2],
    dir: Dir,
    cmd: mpsc::UnboundedSender<Cmd>,
    pub(crate) shared: Arc<Mutex<Shared>>,
    /// The SDP we gave for the answer (a 183 and then a 200 carry the same).
    answered: Option<String>,
    address: IpAddr,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Offer(_) => "Offer",
            Cmd::Answer(..) => "Answer",
            Cmd::Accept(..) => "Accept",
        })
    }
}

/// The relay our endpoints allocate on, with fresh TURN REST credentials.
#[derive(Debug, Clone)]
pub(crate) struct RelayAccess {
    pub(crate) server: SocketAddr,
    pub(crate) username: String,
    pub(crate) password: String,
}

/// `a=rtpmap` encoding of a codec.
fn rtpmap(codec: AudioCodec) -> &'static str {
    match codec {
        AudioCodec::Opus => "opus/48000/2",
        AudioCodec::Pcmu => "PCMU/8000",
        AudioCodec::Pcma => "PCMA/8000",
        AudioCodec::G722 => "G722/8000",
    }
}

/// A plain-RTP SDP naming only `address:port` with `codecs`.
pub fn plain_sdp(address: IpAddr, port: u16, codecs: &[(u8, AudioCodec)]) -> String {
    let c = match address {
        IpAddr::V4(a) => format!("IN IP4 {a}"),
        IpAddr::V6(a) => format!("IN IP6 {a}"),
    };
    let id = rand::random::<u32>();
    let mut s =
        format!("v=0\r\no=- {id} {id} {c}\r\ns=-\r\nc={c}\r\nt=0 0\r\nm=audio {port} RTP/AVP");
    for (pt, _) in codecs {
        s.push_str(&format!(" {pt}"));
    }
    s.push_str("\r\n");
    for (pt, codec) in codecs {
        s.push_str(&format!("a=rtpmap:{pt} {}\r\n", rtpmap(*codec)));
    }
    s.push_str(&format!(
        "a=rtcp:{} {c}\r\na=ptime:20\r\na=sendrecv\r\n",
        port.saturating_add(1)
    ));
    s
}

/// The RTP header's payload type, timestamp and payload (CSRCs, header
/// extension and padding skipped); `None` when it does not add up.
pub fn rtp_payload(d: &[u8]) -> Option<(u8, u32, &[u8])> {
    if !rtp_like(d) || d.len() < 12 {
        return None;
    }
    let cc = usize::from(d[0] & 0x0f);
    let mut at = 12 + 4 * cc;
    if d[0] & 0x10 != 0 {
        let len = d.get(at + 2..at + 4)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([len[0], len[1]]));
    }
    let mut end = d.len();
    if d[0] & 0x20 != 0 {
        let pad = usize::from(*d.last()?);
        end = end.checked_sub(pad)?;
    }
    let payload = d.get(at..end)?;
    let ts = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    Some((d[1] & 0x7f, ts, payload))
}

impl Gateway {
    /// Opens a gateway on `sockets` (phone RTP, phone RTCP, relay) and
    /// starts its endpoint's allocation on `runtime`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        runtime: &tokio::runtime::Handle,
        ports: [u16; 2],
        sockets: [std::net::UdpSocket; 3],
        address: IpAddr,
        relay: RelayAccess,
        browser_offer: Option<String>,
        phone_codecs: Vec<(u8, AudioCodec)>,
        phone: Peer,
        counters: Arc<MediaCounters>,
    ) -> Option<Gateway> {
        let [rtp, rtcp, to_relay] = sockets;
        let local = to_relay.local_addr().ok()?;
        let codecs: Vec<AudioCodec> = match &browser_offer {
            // Whatever the phone picks of the browser's.
            Some(offer) => media::sdp::audio_codecs(offer)
                .into_iter()
                .map(|(_, c)| c)
                .collect(),
            None => phone_codecs.iter().map(|(_, c)| *c).collect(),
        };
        if codecs.is_empty() {
            return None;
        }
        let turn = turn::client::ClientConfig::new(
            relay.server,
            turn::Transport::Udp,
            relay.username,
            relay.password,
        );
        let mut config = EndpointConfig::new(turn, local);
        config.connect_timeout = CONNECT_LIMIT;
        config.codecs = codecs;
        let now = Instant::now();
        let mut ep = Endpoint::new(config, now).ok()?;
        ep.start(now).ok()?;
        let shared = Arc::new(Mutex::new(Shared {
            phone,
            phone_pt: None,
            last_packet: now,
            idle_reported: false,
            failed: false,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let _guard = runtime.enter();
        let sockets = [
            UdpSocket::from_std(rtp).ok()?,
            UdpSocket::from_std(rtcp).ok()?,
            UdpSocket::from_std(to_relay).ok()?,
        ];
        runtime.spawn(run(ep, relay.server, sockets, shared.clone(), rx, counters));
        let dir = match browser_offer {
            Some(o) => Dir::BrowserOffered(o),
            None => Dir::PhoneOffered(phone_codecs),
        };
        Some(Gateway {
            ports,
            dir,
            cmd: tx,
            shared,
            answered: None,
            address,
        })
    }

    /// Whether the leg answered (through [`Gateway::answer`]).
    pub(crate) fn is_answered(&self) -> bool {
        self.answered.is_some()
    }

    /// The offer for the other side: plain RTP for the phone (from the
    /// browser's codecs), or our endpoint's WebRTC offer for the browser
    /// (waits for the allocation). `None`: cannot (488 for this leg).
    pub(crate) fn offer(&self) -> Option<String> {
        match &self.dir {
            Dir::BrowserOffered(offer) => {
                let codecs = media::sdp::audio_codecs(offer);
                Some(plain_sdp(self.address, self.ports[0], &codecs))
            }
            Dir::PhoneOffered(_) => {
                let (tx, rx) = std_mpsc::channel();
                self.cmd.send(Cmd::Offer(tx)).ok()?;
                rx.recv_timeout(WAIT).ok()?.ok()
            }
        }
    }

    /// The other side's answer (`sdp`, from `signaling`) turned into the
    /// answer for the offerer: our endpoint's WebRTC answer for the
    /// browser (its offer restricted to the codec the phone chose), or
    /// plain RTP for the phone (the codec the browser chose). The same
    /// again for a later answer of the same leg.
    pub(crate) fn answer(&mut self, sdp: &str, signaling: Option<IpAddr>) -> Option<String> {
        if let Some(a) = &self.answered {
            return Some(a.clone());
        }
        let out = match &self.dir {
            Dir::BrowserOffered(offer) => {
                let (pt, codec) = media::sdp::audio_codecs(sdp).first().copied()?;
                let browser_pt = media::sdp::audio_codecs(offer)
                    .into_iter()
                    .find(|(_, c)| *c == codec)
                    .map(|(p, _)| p)?;
                {
                    let mut st = lock(&self.shared);
                    st.phone
                        .answered(signaling, crate::sip_media::declared_address(sdp));
                    st.phone_pt = Some(pt);
                }
                let restricted = media::sdp::restrict_audio(offer, &[browser_pt]);
                let (tx, rx) = std_mpsc::channel();
                self.cmd.send(Cmd::Answer(restricted, tx)).ok()?;
                rx.recv_timeout(WAIT).ok()?.ok()?
            }
            Dir::PhoneOffered(codecs) => {
                let (tx, rx) = std_mpsc::channel();
                self.cmd.send(Cmd::Accept(sdp.to_owned(), tx)).ok()?;
                let codec = rx.recv_timeout(WAIT).ok()?.ok()?;
                let chosen = codecs.iter().find(|(_, c)| *c == codec).copied()?;
                lock(&self.shared).phone_pt = Some(chosen.0);
                plain_sdp(self.address, self.ports[0], &[chosen])
            }
        };
        // The media starts now (a long ring is not silence).
        lock(&self.shared).last_packet = Instant::now();
        self.answered = Some(out.clone());
        Some(out)
    }
}

/// One gateway's endpoint and phone sockets ([phone RTP, phone RTCP,
/// relay]), until the SIP side drops the gateway (its command channel).
async fn run(
    mut ep: Endpoint,
    relay: SocketAddr,
    sockets: [UdpSocket; 3],
    shared: Arc<Mutex<Shared>>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    counters: Arc<MediaCounters>,
) {
    let [rtp, rtcp, to_relay] = sockets;
    let mut waiting: Vec<Cmd> = Vec::new();
    let mut allocated = false;
    let mut dead: Option<String> = None;
    let mut seq: u16 = rand::random();
    let ssrc: u32 = rand::random();
    let mut bucket = TokenBucket::new(PACKETS_PER_SEC, PACKET_BURST, Instant::now());
    let mut b_relay = vec![0u8; 65_536];
    let mut b_rtp = [0u8; 2048];
    let mut b_rtcp = [0u8; 2048];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    loop {
        while let Some(t) = ep.poll_transmit() {
            let _ = to_relay.try_send_to(&t.payload, relay);
        }
        let now = Instant::now();
        while let Some(ev) = ep.poll_event() {
            match ev {
                EndpointEvent::Allocated { .. } => allocated = true,
                EndpointEvent::AllocationFailed { code, .. } => {
                    dead = Some(format!(
                        "the relay refused the gateway's allocation ({code})"
                    ));
                }
                EndpointEvent::Failed(why) => dead = Some(why),
                EndpointEvent::Audio(p) => {
                    let (to, pt) = {
                        let mut st = lock(&shared);
                        st.last_packet = now;
                        (st.phone.destination(0), st.phone_pt)
                    };
                    let (Some(to), Some(pt)) = (to, pt) else {
                        counters.no_peer.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    seq = seq.wrapping_add(1);
                    out.clear();
                    out.extend_from_slice(&[0x80, pt & 0x7f]);
                    out.extend_from_slice(&seq.to_be_bytes());
                    out.extend_from_slice(&p.rtp_time.to_be_bytes());
                    out.extend_from_slice(&ssrc.to_be_bytes());
                    out.extend_from_slice(&p.payload);
                    match rtp.try_send_to(&out, to) {
                        Ok(_) => counters.forwarded.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counters.send_errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
                EndpointEvent::Connected | EndpointEvent::Disconnected => {}
            }
        }
        if dead.is_some() {
            lock(&shared).failed = true;
        }
        if allocated || dead.is_some() {
            for c in waiting.drain(..) {
                handle(&mut ep, c, dead.as_deref(), now);
            }
            while let Some(t) = ep.poll_transmit() {
                let _ = to_relay.try_send_to(&t.payload, relay);
            }
        }
        let wake = ep
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(100))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            c = cmds.recv() => match c {
                None => break,
                Some(c) if allocated || dead.is_some() => handle(&mut ep, c, dead.as_deref(), Instant::now()),
                Some(c) => waiting.push(c),
            },
            r = to_relay.recv_from(&mut b_relay) => {
                // Only the relay's datagrams reach our endpoint.
                if let Ok((n, from)) = r {
                    if from == relay {
                        ep.handle_turn_datagram(Instant::now(), relay, &b_relay[..n]);
                    }
                }
            }
            r = rtp.recv_from(&mut b_rtp) => {
                let Ok((n, src)) = r else { continue };
                let now = Instant::now();
                let d = &b_rtp[..n];
                let Some((pt, ts, payload)) = rtp_payload(d) else {
                    counters.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let want = {
                    let mut st = lock(&shared);
                    if !st.phone.accept(0, src) {
                        counters.foreign.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    st.last_packet = now;
                    st.phone_pt
                };
                if !bucket.take(now) {
                    counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // Other payload types (telephone-event, comfort noise) are
                // not carried.
                if want == Some(pt) && ep.send_audio(now, ts, payload) {
                    counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
            r = rtcp.recv_from(&mut b_rtcp) => {
                // The phone's reports end here (our endpoint keeps its own
                // RTCP with the browser); they only latch and keep alive.
                let Ok((n, src)) = r else { continue };
                if !rtp_like(&b_rtcp[..n]) {
                    counters.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let mut st = lock(&shared);
                if st.phone.accept(1, src) {
                    st.last_packet = Instant::now();
                } else {
                    counters.foreign.fetch_add(1, Ordering::Relaxed);
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                ep.handle_timeout(Instant::now());
            }
        }
    }
    // Hang up: ICE/DTLS closed, the allocation deleted.
    ep.close(Instant::now());
    while let Some(t) = ep.poll_transmit() {
        let _ = to_relay.try_send_to(&t.payload, relay);
    }
}

fn handle(ep: &mut Endpoint, c: Cmd, dead: Option<&str>, now: Instant) {
    if let Some(why) = dead {
        let why = why.to_owned();
        match c {
            Cmd::Offer(tx) | Cmd::Answer(_, tx) => {
                let _ = tx.send(Err(why));
            }
            Cmd::Accept(_, tx) => {
                let _ = tx.send(Err(why));
            }
        }
        return;
    }
    match c {
        Cmd::Offer(tx) => {
            let _ = tx.send(ep.create_offer(now).map_err(|e| e.to_string()));
        }
        Cmd::Answer(offer, tx) => {
            let _ = tx.send(ep.accept_offer(now, &offer).map_err(|e| e.to_string()));
        }
        Cmd::Accept(answer, tx) => {
            let r = ep
                .accept_answer(now, &answer)
                .map_err(|e| e.to_string())
                .and_then(|()| ep.codec().ok_or_else(|| "no codec in common".to_owned()));
            let _ = tx.send(r);
        }
    }
}

/// The runtime the gateways' endpoints run on: one thread of its own, so
/// that the SIP core, waiting for an endpoint under its lock, never holds
/// up the thread that endpoint needs. Stops when dropped.
#[derive(Debug)]
pub(crate) struct MediaRuntime {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl MediaRuntime {
    pub(crate) fn start() -> Option<MediaRuntime> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("sip-media".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let _ = tx.send(rt.handle().clone());
                let _ = rt.block_on(stopped);
            })
            .ok()?;
        let handle = rx.recv_timeout(Duration::from_secs(5)).ok()?;
        Some(MediaRuntime {
            handle,
            _stop: stop,
        })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_sdp_names_only_the_gateway() {
        let s = plain_sdp(
            "198.51.100.1".parse().unwrap(),
            30_000,
            &[(111, AudioCodec::Opus), (0, AudioCodec::Pcmu)],
        );
        assert!(s.contains("c=IN IP4 198.51.100.1\r\n"), "{s}");
        assert!(s.contains("m=audio 30000 RTP/AVP 111 0\r\n"), "{s}");
        assert!(s.contains("a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"));
        assert!(s.contains("a=rtcp:30001 IN IP4 198.51.100.1\r\n"));
        assert!(crate::sip_media::is_plain_rtp(&s));
        assert_eq!(
            media::sdp::audio_codecs(&s),
            vec![(111, AudioCodec::Opus), (0, AudioCodec::Pcmu)]
        );
    }

    #[test]
    fn rtp_payloads_are_found_or_refused() {
        let mut p = vec![0x80u8, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
        p.extend_from_slice(&[0xff; 160]);
        let (pt, ts, payload) = rtp_payload(&p).unwrap();
        assert_eq!((pt, ts, payload.len()), (0, 160, 160));
        // One CSRC, an extension of one word, two bytes of padding.
        let mut q = vec![0xb1u8, 0x88, 0, 2, 0, 0, 1, 64, 1, 2, 3, 4, 9, 9, 9, 9];
        q.extend_from_slice(&[0xbe, 0xde, 0, 1, 7, 7, 7, 7]);
        q.extend_from_slice(&[5, 5, 5, 0, 2]);
        let (pt, ts, payload) = rtp_payload(&q).unwrap();
        assert_eq!((pt, ts, payload), (8, 320, &[5u8, 5, 5][..]));
        // Lengths that do not add up: refused, never a panic.
        for bad in [
            &q[..14],
            &[0xa0u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 200][..],
            &[0x90u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff][..],
            &[0x40u8; 20][..],
        ] {
            assert_eq!(rtp_payload(bad), None, "{bad:?}");
        }
    }
}

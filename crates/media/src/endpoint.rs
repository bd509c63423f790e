//! [`Endpoint`]: str0m driven through one TURN allocation.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, IceConnectionState, Input, Output, Rtc, RtcConfig};
use turn::client::{Client, ClientConfig, ClientState, Event as TurnEvent, Transmit};

use crate::sdp;

/// How the endpoint reaches its relay (for statistics: `relayProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayProtocol {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS.
    Tls,
}

impl RelayProtocol {
    /// `udp`, `tcp` or `tls`, as getStats writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            RelayProtocol::Udp => "udp",
            RelayProtocol::Tcp => "tcp",
            RelayProtocol::Tls => "tls",
        }
    }
}

/// An audio codec the endpoint can carry. It never transcodes: frames go
/// in and out encoded, so a gateway passes a phone's G.711 or Opus through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// Opus, 48 kHz clock (what browsers prefer; `onionrtc call` encodes it).
    Opus,
    /// G.711 µ-law (PCMU), 8 kHz, static payload type 0.
    Pcmu,
    /// G.711 A-law (PCMA), 8 kHz, static payload type 8.
    Pcma,
    /// G.722 (wideband, 16 kHz audio), static payload type 9, whose RTP
    /// clock is 8 kHz (RFC 3551 §4.5.2).
    G722,
}

impl AudioCodec {
    /// The codec of an `a=rtpmap` encoding name (`opus`, `PCMU`, `PCMA`;
    /// any case), `None` for others.
    pub fn from_encoding(name: &str) -> Option<AudioCodec> {
        match name.to_ascii_lowercase().as_str() {
            "opus" => Some(AudioCodec::Opus),
            "pcmu" => Some(AudioCodec::Pcmu),
            "pcma" => Some(AudioCodec::Pcma),
            "g722" => Some(AudioCodec::G722),
            _ => None,
        }
    }

    /// The RTP clock rate.
    pub const fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Opus => 48_000,
            AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::G722 => 8_000,
        }
    }

    fn rtp_frequency(self) -> Frequency {
        match self {
            AudioCodec::Opus => Frequency::FORTY_EIGHT_KHZ,
            AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::G722 => Frequency::EIGHT_KHZ,
        }
    }

    fn of(codec: Codec) -> Option<AudioCodec> {
        match codec {
            Codec::Opus => Some(AudioCodec::Opus),
            Codec::PCMU => Some(AudioCodec::Pcmu),
            Codec::PCMA => Some(AudioCodec::Pcma),
            Codec::G722 => Some(AudioCodec::G722),
            _ => None,
        }
    }
}

/// Configuration of an [`Endpoint`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The TURN client's configuration (server, transport, credentials).
    pub turn: ClientConfig,
    /// Our end of the connection to the relay. str0m needs a local address
    /// for its relay candidate; it is never written into an SDP.
    pub local: SocketAddr,
    /// UDP, TCP or TLS to the relay (TLS is TCP to the TURN client).
    pub relay_protocol: RelayProtocol,
    /// How long ICE may take to connect after the remote description is
    /// set before the endpoint reports [`EndpointEvent::Failed`].
    pub connect_timeout: Duration,
    /// The audio codecs offered or accepted, in order of preference
    /// (default: Opus only).
    pub codecs: Vec<AudioCodec>,
}

impl EndpointConfig {
    /// A configuration whose relay protocol follows the TURN transport
    /// (UDP or TCP; set [`EndpointConfig::relay_protocol`] for TLS).
    pub fn new(turn: ClientConfig, local: SocketAddr) -> Self {
        let relay_protocol = if turn.transport.is_stream() {
            RelayProtocol::Tcp
        } else {
            RelayProtocol::Udp
        };
        EndpointConfig {
            turn,
            local,
            relay_protocol,
            connect_timeout: Duration::from_secs(30),
            codecs: vec![AudioCodec::Opus],
        }
    }
}

/// Errors of the endpoint's API calls. Bad bytes from the network are
/// never errors: they are dropped and counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation needs the relay allocation first.
    #[error("no relay allocation yet")]
    NotAllocated,
    /// The TURN client refused.
    #[error("TURN: {0}")]
    Turn(#[from] turn::client::ClientError),
    /// The SDP could not be parsed.
    #[error("malformed SDP: {0}")]
    Sdp(String),
    /// str0m refused the offer or answer (no common codec, …).
    #[error("{0}")]
    Rtc(#[from] str0m::RtcError),
    /// The offer has no audio we can take (no audio section, or none of
    /// our codecs).
    #[error("the offer has no audio codec we take")]
    NoAudio,
    /// An answer came without an offer of ours pending.
    #[error("no offer pending")]
    NoPendingOffer,
    /// A candidate line that does not parse.
    #[error("malformed candidate")]
    Candidate,
    /// DTLS certificate generation failed.
    #[error("cannot create a DTLS certificate")]
    Certificate,
}

/// A received audio packet (one encoded frame).
#[derive(Debug, Clone)]
pub struct AudioPacket {
    /// Extended RTP sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub rtp_time: u32,
    /// When it arrived.
    pub arrival: Instant,
    /// The encoded frame.
    pub payload: Arc<[u8]>,
    /// Its codec.
    pub codec: AudioCodec,
}

/// What happened, from [`Endpoint::poll_event`].
#[derive(Debug, Clone)]
pub enum EndpointEvent {
    /// The relay allocated our address: create or accept an offer now.
    Allocated {
        /// The relayed address (our only candidate).
        relayed: SocketAddr,
    },
    /// The relay refused the allocation (e.g. 486 Allocation Quota Reached).
    AllocationFailed {
        /// STUN error code (0: the client gave up).
        code: u16,
        /// The reason.
        reason: String,
    },
    /// ICE and DTLS are up: media flows.
    Connected,
    /// ICE lost the peer (consent expired or the relay stopped forwarding).
    Disconnected,
    /// The call cannot connect or went away for good.
    Failed(String),
    /// An audio frame from the peer.
    Audio(AudioPacket),
}

/// Counters about what the endpoint dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Datagrams str0m refused (garbage, unknown SRTP, …).
    pub bad_input: u64,
    /// Remote candidates ignored (not UDP `typ relay`, or malformed), in
    /// descriptions and trickled.
    pub candidates_ignored: u64,
    /// Transmits the TURN client could not take (queue full, no allocation).
    pub send_failed: u64,
    /// Media packets of kinds we only count (video).
    pub other_media: u64,
}

/// A WebRTC endpoint whose only path is one TURN allocation. See the
/// [crate documentation](crate).
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rtc: Rtc,
    turn: Client,
    relayed: Option<SocketAddr>,
    mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    rtc_timeout: Option<Instant>,
    events: VecDeque<EndpointEvent>,
    connected: bool,
    failed: bool,
    /// RFC 8016: the outcome of the last [`Endpoint::move_relay`], until taken.
    moved: Option<Result<(), u16>>,
    connect_deadline: Option<Instant>,
    drops: Drops,
    rtt: Option<Duration>,
    bytes_sent: u64,
    packets_sent: u64,
    media_received: u64,
    /// Datagrams that arrived while our offer waited for its answer.
    early: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
}

/// Datagrams kept at most while an offer waits for its answer.
const MAX_EARLY: usize = 256;

/// Events queued at most (the oldest audio is dropped beyond).
const MAX_EVENTS: usize = 4096;

impl Endpoint {
    /// An endpoint with a fresh DTLS certificate, the configured codecs,
    /// relay only.
    ///
    /// # Errors
    /// [`Error::Certificate`] when no certificate can be made.
    pub fn new(config: EndpointConfig, now: Instant) -> Result<Self, Error> {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or(Error::Certificate)?;
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(Arc::new(provider))
            .set_dtls_cert(cert)
            .clear_codecs();
        for c in &config.codecs {
            rtc = match c {
                AudioCodec::Opus => rtc.enable_opus(true, false),
                AudioCodec::Pcmu => rtc.enable_pcmu(true, false),
                AudioCodec::Pcma => rtc.enable_pcma(true, false),
                AudioCodec::G722 => rtc.enable_g722(true, false),
            };
        }
        let rtc = rtc
            .set_stats_interval(Some(Duration::from_secs(1)))
            .set_reordering_size_audio(0)
            .build(now);
        let turn = Client::new(config.turn.clone(), now);
        Ok(Endpoint {
            config,
            rtc,
            turn,
            relayed: None,
            mid: None,
            pending: None,
            rtc_timeout: None,
            events: VecDeque::new(),
            connected: false,
            failed: false,
            moved: None,
            connect_deadline: None,
            drops: Drops::default(),
            rtt: None,
            bytes_sent: 0,
            packets_sent: 0,
            media_received: 0,
            early: VecDeque::new(),
        })
    }

    /// Sends the Allocate request.
    ///
    /// # Errors
    /// When an allocation exists or is in progress.
    pub fn start(&mut self, now: Instant) -> Result<(), Error> {
        self.turn.allocate(now)?;
        Ok(())
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// The relay protocol.
    pub fn relay_protocol(&self) -> RelayProtocol {
        self.config.relay_protocol
    }

    /// Whether the call was connected at least once.
    pub fn was_connected(&self) -> bool {
        self.connected
    }

    /// What was dropped.
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Round-trip time of the selected candidate pair (ICE consent checks;
    /// RTCP's before the first), once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Payload bytes and RTP packets of audio sent.
    pub fn sent(&self) -> (u64, u64) {
        (self.bytes_sent, self.packets_sent)
    }

    /// Creates an SDP offer with one send-receive audio section (the
    /// configured codecs) and our relay candidate.
    ///
    /// # Errors
    /// [`Error::NotAllocated`] before [`EndpointEvent::Allocated`].
    pub fn create_offer(&mut self, now: Instant) -> Result<String, Error> {
        if self.relayed.is_none() {
            return Err(Error::NotAllocated);
        }
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().ok_or(Error::NoPendingOffer)?;
        self.mid = Some(mid);
        self.pending = Some(pending);
        self.arm_connect_deadline(now);
        self.drive(now);
        Ok(sdp::anonymize(&offer.to_sdp_string()))
    }

    /// Takes the peer's offer and returns our answer.
    ///
    /// # Errors
    /// [`Error::NotAllocated`], [`Error::Sdp`], [`Error::NoAudio`] (no
    /// audio section with one of our codecs), [`Error::Rtc`].
    pub fn accept_offer(&mut self, now: Instant, offer: &str) -> Result<String, Error> {
        if self.relayed.is_none() {
            return Err(Error::NotAllocated);
        }
        if !has_audio(offer, &self.config.codecs) {
            return Err(Error::NoAudio);
        }
        let (offer, dropped) = sdp::relay_candidates_only(offer);
        self.drops.candidates_ignored += dropped;
        let offer = SdpOffer::from_sdp_string(&offer).map_err(|e| Error::Sdp(e.to_string()))?;
        let answer = self.rtc.sdp_api().accept_offer(offer)?;
        self.arm_connect_deadline(now);
        self.drive(now);
        Ok(sdp::anonymize(&answer.to_sdp_string()))
    }

    /// Takes the peer's answer to our offer.
    ///
    /// # Errors
    /// [`Error::NoPendingOffer`], [`Error::Sdp`], [`Error::Rtc`].
    pub fn accept_answer(&mut self, now: Instant, answer: &str) -> Result<(), Error> {
        let pending = self.pending.take().ok_or(Error::NoPendingOffer)?;
        let (answer, dropped) = sdp::relay_candidates_only(answer);
        self.drops.candidates_ignored += dropped;
        let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| Error::Sdp(e.to_string()))?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        // What overtook the answer, in order, as if it arrived now.
        while let Some((_, peer, data)) = self.early.pop_front() {
            self.receive(now, peer, &data);
        }
        self.drive(now);
        Ok(())
    }

    /// A trickled remote candidate (`candidate:…`, with or without `a=`).
    /// Only relay candidates are used; others are counted and ignored.
    ///
    /// # Errors
    /// [`Error::Candidate`] when a relay candidate does not parse.
    pub fn add_remote_candidate(&mut self, now: Instant, line: &str) -> Result<(), Error> {
        let line = line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            return Ok(()); // end of candidates
        }
        if !sdp::is_relay_candidate(line) {
            self.drops.candidates_ignored += 1;
            return Ok(());
        }
        let c = Candidate::from_sdp_string(line).map_err(|_| {
            self.drops.candidates_ignored += 1;
            Error::Candidate
        })?;
        if c.proto() != Protocol::Udp {
            self.drops.candidates_ignored += 1;
            return Ok(());
        }
        let addr = c.addr();
        self.rtc.add_remote_candidate(c);
        self.permit(now, addr);
        self.drive(now);
        Ok(())
    }

    /// Sends one encoded audio frame (of the negotiated codec, see
    /// [`Endpoint::codec`]) with RTP timestamp `rtp_time` in its clock.
    /// Before the call is connected the frame is dropped (returns false).
    pub fn send_audio(&mut self, now: Instant, rtp_time: u32, payload: &[u8]) -> bool {
        if !self.connected {
            return false;
        }
        let Some(mid) = self.mid else { return false };
        let Some((pt, codec)) = self.send_pt(mid) else {
            return false;
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        // In the RTP clock; str0m rebases to the codec's (G.722: 16 kHz).
        let time = MediaTime::new(u64::from(rtp_time), codec.rtp_frequency());
        if writer.write(pt, now, time, payload.to_vec()).is_err() {
            return false;
        }
        self.bytes_sent += payload.len() as u64;
        self.packets_sent += 1;
        self.drive(now);
        true
    }

    /// The negotiated codec we send: the first of the session's payload
    /// types (the answer's order) that is one of ours.
    fn send_pt(&mut self, mid: Mid) -> Option<(Pt, AudioCodec)> {
        let codecs = &self.config.codecs;
        let writer = self.rtc.writer(mid)?;
        let found = writer.payload_params().find_map(|p| {
            let c = AudioCodec::of(p.spec().codec)?;
            codecs.contains(&c).then_some((p.pt(), c))
        });
        found
    }

    /// The audio codec negotiated, once the offer/answer is done.
    pub fn codec(&mut self) -> Option<AudioCodec> {
        let mid = self.mid?;
        self.send_pt(mid).map(|(_, c)| c)
    }

    /// Bytes from the relay over UDP.
    pub fn handle_turn_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.turn.handle_datagram(now, from, bytes);
        self.drive(now);
    }

    /// Bytes from the relay over a TCP or TLS stream.
    ///
    /// # Errors
    /// When the stream carries something that is not STUN or ChannelData:
    /// the driver closes the connection (and the call fails).
    pub fn handle_turn_stream(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        let r = self.turn.handle_stream_bytes(now, bytes);
        self.drive(now);
        r.map_err(Error::Turn)
    }

    /// The next bytes for the relay.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.turn.poll_transmit()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.turn.poll_timeout(),
            self.rtc_timeout,
            self.connect_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.turn.handle_timeout(now);
        let due = self.rtc_timeout.is_none_or(|t| t <= now);
        if due && self.rtc.handle_input(Input::Timeout(now)).is_err() {
            self.fail("WebRTC engine error on timeout".into());
        }
        if self.connect_deadline.is_some_and(|t| t <= now) && !self.connected {
            self.connect_deadline = None;
            self.fail("ICE did not connect through the relay in time".into());
        }
        self.drive(now);
    }

    /// RFC 8016: moves the allocation to a new connection to the relay (a
    /// new Tor circuit): from now on every transmit is for it, starting
    /// with a Refresh that carries the MOBILITY-TICKET (the TURN client
    /// must have been configured with `mobility`). The relayed address,
    /// and so ICE and DTLS, stay: the peer sees nothing. The outcome comes
    /// from [`Endpoint::take_move_result`].
    ///
    /// # Errors
    /// [`Error::Turn`] without an allocation or a ticket.
    pub fn move_relay(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: turn::Transport,
    ) -> Result<(), Error> {
        self.moved = None;
        self.turn
            .move_to(now, server, transport)
            .map_err(Error::Turn)?;
        self.drive(now);
        Ok(())
    }

    /// Sends the relay a request it answers at once (a Refresh), so that
    /// a silent path can be told from a quiet peer: whatever comes back
    /// proves the relay connection alive.
    pub fn probe_relay(&mut self, now: Instant) {
        if self.turn.probe(now).is_err() {
            self.drops.send_failed += 1;
        }
    }

    /// Whether the relay gave a MOBILITY-TICKET: [`Endpoint::move_relay`]
    /// can work.
    pub fn can_move_relay(&self) -> bool {
        self.turn.mobility_ticket().is_some()
    }

    /// The outcome of the last [`Endpoint::move_relay`] once the relay
    /// answered: `Ok` moved, `Err(code)` refused or unanswered (0).
    pub fn take_move_result(&mut self) -> Option<Result<(), u16>> {
        self.moved.take()
    }

    /// Hangs up: closes the WebRTC session and deletes the allocation
    /// (poll the transmits once more to send the Refresh with lifetime 0).
    pub fn close(&mut self, now: Instant) {
        self.rtc.disconnect();
        let _ = self.turn.deallocate(now);
    }

    fn arm_connect_deadline(&mut self, now: Instant) {
        if self.connect_deadline.is_none() && !self.connected {
            self.connect_deadline = Some(now + self.config.connect_timeout);
        }
    }

    fn fail(&mut self, why: String) {
        if !self.failed {
            self.failed = true;
            self.push_event(EndpointEvent::Failed(why));
        }
    }

    fn push_event(&mut self, e: EndpointEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Installs a permission and a channel for `peer` on the relay.
    fn permit(&mut self, now: Instant, peer: SocketAddr) {
        if self.turn.state() == ClientState::Allocated && self.turn.channel(peer).is_none() {
            let _ = self.turn.bind_channel(now, peer);
        }
    }

    /// Moves everything between str0m and the TURN client until both are
    /// quiet (bounded).
    fn drive(&mut self, now: Instant) {
        for _ in 0..10_000 {
            let mut progressed = false;
            while let Some(ev) = self.turn.poll_event() {
                progressed = true;
                self.on_turn_event(now, ev);
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = Some(t);
                }
                Ok(Output::Transmit(t)) => {
                    progressed = true;
                    let dest = t.destination;
                    self.permit(now, dest);
                    if self.turn.send_to(now, dest, &t.contents).is_err() {
                        self.drops.send_failed += 1;
                    }
                }
                Ok(Output::Event(e)) => {
                    progressed = true;
                    self.on_rtc_event(e);
                }
                Err(e) => {
                    self.fail(format!("WebRTC engine: {e}"));
                    return;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_turn_event(&mut self, now: Instant, ev: TurnEvent) {
        match ev {
            TurnEvent::Allocated { relayed, .. } => {
                let Some(addr) = relayed
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or(relayed.first())
                    .copied()
                else {
                    self.fail("the relay allocated no address".into());
                    return;
                };
                match Candidate::relayed(addr, self.config.local, "udp") {
                    Ok(c) => {
                        self.rtc.add_local_candidate(c);
                        self.relayed = Some(addr);
                        self.push_event(EndpointEvent::Allocated { relayed: addr });
                    }
                    Err(e) => self.fail(format!("relay candidate: {e}")),
                }
            }
            TurnEvent::AllocationFailed { code, reason } => {
                self.failed = true;
                self.push_event(EndpointEvent::AllocationFailed { code, reason });
            }
            TurnEvent::Data { peer, data } => {
                if self.pending.is_some() {
                    // Our offer is out but the answer is not here yet: the
                    // peer's ICE and DTLS can overtake its answer (its
                    // signaling and media take different paths, e.g. both
                    // through Tor). Keep them for when the answer is set.
                    if self.early.len() >= MAX_EARLY {
                        self.early.pop_front();
                        self.drops.bad_input += 1;
                    }
                    self.early.push_back((now, peer, data));
                    return;
                }
                self.receive(now, peer, &data);
            }
            TurnEvent::Moved { .. } => self.moved = Some(Ok(())),
            TurnEvent::MoveFailed { code } => self.moved = Some(Err(code)),
            TurnEvent::AllocationExpired => self.fail("the relay allocation expired".into()),
            TurnEvent::RefreshFailed { code: 437 } => {
                self.fail("the relay forgot the allocation".into());
            }
            TurnEvent::TransactionTimedOut { method, .. } if method == stun::Method::ALLOCATE => {
                self.failed = true;
                self.push_event(EndpointEvent::AllocationFailed {
                    code: 0,
                    reason: "the relay did not answer".into(),
                });
            }
            _ => {}
        }
    }

    /// Hands a datagram from the peer (via the relay) to str0m.
    fn receive(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        let Some(relayed) = self.relayed else { return };
        let Ok(contents) = data.try_into() else {
            self.drops.bad_input += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: peer,
                destination: relayed,
                contents,
            },
        );
        if self.rtc.handle_input(input).is_err() {
            self.drops.bad_input += 1;
        }
    }

    fn on_rtc_event(&mut self, e: str0m::Event) {
        use str0m::Event;
        match e {
            Event::Connected if !self.connected => {
                self.connected = true;
                self.connect_deadline = None;
                self.push_event(EndpointEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.push_event(EndpointEvent::Disconnected);
            }
            Event::MediaAdded(m) if m.kind == MediaKind::Audio && self.mid.is_none() => {
                self.mid = Some(m.mid);
            }
            Event::MediaData(d) => {
                let codec = AudioCodec::of(d.params.spec().codec)
                    .filter(|c| self.config.codecs.contains(c));
                let Some(codec) = codec.filter(|_| Some(d.mid) == self.mid) else {
                    self.drops.other_media += 1;
                    return;
                };
                self.media_received += 1;
                let seq = **d.seq_range.start();
                self.push_event(EndpointEvent::Audio(AudioPacket {
                    seq,
                    // The RTP clock (str0m gives G.722 in its 16 kHz one).
                    rtp_time: d.time.rebase(codec.rtp_frequency()).numer() as u32,
                    arrival: d.network_time,
                    payload: d.data,
                    codec,
                }));
            }
            Event::MediaEgressStats(s) => {
                if let (None, Some(rtt)) = (self.rtt, s.rtt) {
                    self.rtt = Some(rtt);
                }
            }
            Event::PeerStats(p) => {
                // The selected pair's STUN round trip, as the browser's
                // candidate-pair currentRoundTripTime (what the web app reports).
                if let Some(rtt) = p
                    .selected_candidate_pair
                    .and_then(|c| c.current_round_trip_time)
                {
                    self.rtt = Some(rtt);
                }
            }
            Event::MediaIngressStats(_) => {}
            _ => {}
        }
    }
}

/// Whether an SDP has an audio section offering one of `codecs`.
fn has_audio(sdp: &str, codecs: &[AudioCodec]) -> bool {
    crate::sdp::audio_codecs(sdp)
        .iter()
        .any(|(_, c)| codecs.contains(c))
}

#[cfg(test)]
mod tests;

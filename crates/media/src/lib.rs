//! A WebRTC media endpoint of our own: str0m (ICE, DTLS-SRTP, RTP/RTCP)
//! reaching its peer only through our sans-IO TURN client.
//!
//! [`Endpoint`] owns no socket and reads no clock, like `turn::client`. The
//! driver (`onionrtc call`, the echo test in `serve`, a test in simulated
//! time) connects to the relay (UDP, or a TCP/TLS stream through the
//! connector's dialers), then runs this loop:
//!
//! ```no_run
//! # use std::time::Instant;
//! # use media::{Endpoint, EndpointConfig};
//! # fn recv() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # let server = "192.0.2.1:3478".parse().unwrap();
//! # let local = "192.0.2.2:5000".parse().unwrap();
//! let turn = turn::client::ClientConfig::new(server, turn::Transport::Udp, "user", "pass");
//! let mut ep = Endpoint::new(EndpointConfig::new(turn, local), Instant::now()).unwrap();
//! ep.start(Instant::now()).unwrap();
//! loop {
//!     while let Some(t) = ep.poll_transmit() {
//!         send(t.destination, &t.payload);
//!     }
//!     while let Some(event) = ep.poll_event() {
//!         // Allocated (now create or accept an offer), Connected, Audio, …
//!     }
//!     let now = Instant::now();
//!     if let Some((from, bytes)) = recv() {
//!         ep.handle_turn_datagram(now, from, &bytes);
//!     }
//!     ep.handle_timeout(now);
//! }
//! ```
//!
//! ## What the endpoint reveals
//! - **Relay only.** No host or server-reflexive candidate is ever gathered:
//!   the only local candidate is the relayed address of our own allocation,
//!   and every packet str0m sends leaves wrapped in a ChannelData message or
//!   Send indication to the relay. Remote candidates other than `typ relay`
//!   are ignored, so a peer cannot make our relay probe addresses of its
//!   choosing.
//! - **No software name.** str0m writes `str0m-<version>` as the `o=` user
//!   name; [`sdp::anonymize`] makes it `-` in everything we send.
//! - **A fresh DTLS certificate per endpoint** (so per call): the
//!   fingerprint does not link two calls.
//!
//! ## Audio
//! The endpoint carries encoded frames of the codecs its configuration
//! names ([`AudioCodec`]: Opus by default; the SIP gateway of `serve` also
//! passes a phone's G.722, PCMU or PCMA through, never transcoding). `onionrtc
//! call` speaks Opus (48 kHz, mono here, 20 ms frames), encoded and decoded with
//! libopus behind the `opus` feature ([`codec`]). Received frames go into
//! the adaptive [`jitter::JitterBuffer`], which asks the decoder for
//! packet-loss concealment (or FEC, when the next packet carries it) and
//! keeps the counters of a browser's `getStats()` ([`stats`]).

pub mod endpoint;
pub mod ice_servers;
pub mod jitter;
pub mod sdp;
pub mod stats;
pub mod tone;

#[cfg(feature = "opus")]
pub mod codec;

pub use endpoint::{
    AudioCodec, AudioPacket, Endpoint, EndpointConfig, EndpointEvent, Error, RelayProtocol,
};
pub use jitter::{FrameDecoder, JitterBuffer, Pop};
pub use stats::{CallStats, ReceiveStats};

/// Opus's RTP clock rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame at 48 kHz (mono).
pub const FRAME_SAMPLES: usize = 960;
/// One frame's duration.
pub const FRAME: std::time::Duration = std::time::Duration::from_millis(20);

//! The sans-IO media agent: a paced sender of RTP-like packets, a receiver
//! keeping [`ReceiverStats`], and an echo service for RTT.
//!
//! ## Packet format (big-endian, [`HEADER_LEN`] = 14 bytes, then zero padding)
//! | bytes | field |
//! |---|---|
//! | 0..4 | sequence number, one space per direction (all streams) |
//! | 4..12 | send time, ns on the lab clock |
//! | 12 | flags: `0x01` echo request, `0x02` echo reply |
//! | 13 | stream: 0 audio, 1 video |
//!
//! Every `echo_interval` the sender marks one media packet as an echo
//! request; the receiver answers at once with a header-only echo reply
//! carrying the same sequence number and send time, so the sender reads
//! RTT = arrival − send time without clock agreement. Echo replies are not
//! media: they count in neither loss nor throughput.
//!
//! The agent never reads a clock: every call takes `now` in ns.

use std::collections::VecDeque;

use crate::metrics::{PerSecond, ReceiverStats};

/// Bytes of the header.
pub const HEADER_LEN: usize = 14;
/// Flag: the receiver should echo this packet.
pub const FLAG_ECHO_REQUEST: u8 = 0x01;
/// Flag: this is an echo reply.
pub const FLAG_ECHO_REPLY: u8 = 0x02;
/// Largest packet an agent sends.
pub const MAX_PACKET: usize = 1400;
/// RTT samples kept at most.
pub const MAX_RTT_SAMPLES: usize = 1 << 20;
/// Echo replies waiting to be sent at most.
const MAX_PENDING_REPLIES: usize = 1024;

/// A media stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Audio frames.
    Audio = 0,
    /// Video packets.
    Video = 1,
}

/// A parsed packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Sequence number.
    pub seq: u32,
    /// Send time, ns on the lab clock.
    pub send_ns: u64,
    /// Flags.
    pub flags: u8,
    /// Stream.
    pub stream: StreamKind,
}

/// Why bytes are not an agent packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the header.
    #[error("packet of {0} bytes is shorter than the 14-byte header")]
    Short(usize),
    /// Unknown flag bits, or both echo flags.
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    /// Unknown stream.
    #[error("unknown stream {0}")]
    Stream(u8),
}

impl Header {
    /// Parses the header of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Header, PacketError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(PacketError::Short(bytes.len()));
        };
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&h[0..4]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&h[4..12]);
        let flags = h[12];
        if flags & !(FLAG_ECHO_REQUEST | FLAG_ECHO_REPLY) != 0
            || flags == FLAG_ECHO_REQUEST | FLAG_ECHO_REPLY
        {
            return Err(PacketError::Flags(flags));
        }
        let stream = match h[13] {
            0 => StreamKind::Audio,
            1 => StreamKind::Video,
            s => return Err(PacketError::Stream(s)),
        };
        Ok(Header {
            seq: u32::from_be_bytes(seq),
            send_ns: u64::from_be_bytes(ts),
            flags,
            stream,
        })
    }

    /// Encodes the header followed by zeros up to `size` bytes (at least
    /// the header).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut out = vec![0u8; size.max(HEADER_LEN)];
        out[0..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..12].copy_from_slice(&self.send_ns.to_be_bytes());
        out[12] = self.flags;
        out[13] = self.stream as u8;
        out
    }
}

/// One paced stream of the call profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    /// Audio or video.
    pub kind: StreamKind,
    /// Packet size, bytes (header included).
    pub packet_bytes: usize,
    /// Time between packets, ns.
    pub interval_ns: u64,
}

impl StreamSpec {
    /// A stream of `kbps` kbit/s in `packet_bytes`-byte packets.
    pub fn at_rate(kind: StreamKind, kbps: f64, packet_bytes: usize) -> Self {
        let packet_bytes = packet_bytes.clamp(HEADER_LEN, MAX_PACKET);
        let interval_ns = (packet_bytes as f64 * 8.0 / (kbps * 1000.0) * 1e9).round() as u64;
        StreamSpec {
            kind,
            packet_bytes,
            interval_ns: interval_ns.max(100_000),
        }
    }

    /// Audio frames of `frame_ms` at `kbps` (64 kbit/s, 20 ms: 160 bytes).
    pub fn audio(frame_ms: f64, kbps: f64) -> Self {
        let bytes = (kbps * 1000.0 / 8.0 * frame_ms / 1000.0).round() as usize;
        let packet_bytes = bytes.clamp(HEADER_LEN, MAX_PACKET);
        StreamSpec {
            kind: StreamKind::Audio,
            packet_bytes,
            interval_ns: (frame_ms * 1e6).round().max(100_000.0) as u64,
        }
    }
}

/// What an agent sends and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaProfile {
    /// The streams (each paced on its own).
    pub streams: Vec<StreamSpec>,
    /// Media duration, ns.
    pub duration_ns: u64,
    /// Time between echo requests, ns.
    pub echo_interval_ns: u64,
}

impl MediaProfile {
    /// 20 ms audio frames at 64 kbit/s for `duration_ns`, an echo every 100 ms.
    pub fn audio(duration_ns: u64) -> Self {
        MediaProfile {
            streams: vec![StreamSpec::audio(20.0, 64.0)],
            duration_ns,
            echo_interval_ns: 100_000_000,
        }
    }

    /// Media packets each agent sends over the whole duration.
    pub fn packets_per_call(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| self.duration_ns.div_ceil(s.interval_ns))
            .sum()
    }
}

/// What an agent sent.
#[derive(Debug, Clone, Default)]
pub struct TxStats {
    /// Media packets sent.
    pub packets: u64,
    /// Media bytes sent.
    pub bytes: u64,
    /// Media bytes per second since the media start.
    pub per_second: PerSecond,
    /// Echo replies sent.
    pub echo_replies: u64,
}

/// One side of a call.
#[derive(Debug)]
pub struct Agent {
    profile: MediaProfile,
    next_send: Vec<u64>,
    seq: u32,
    start_ns: u64,
    end_ns: u64,
    next_echo_ns: u64,
    replies: VecDeque<Vec<u8>>,
    /// What this agent sent.
    pub tx: TxStats,
    /// What this agent received.
    pub rx: ReceiverStats,
    /// Round-trip times of this agent's echo requests, ms.
    pub rtt_ms: Vec<f64>,
    /// Packets that did not parse, or echo replies to nothing we sent.
    pub bad_packets: u64,
}

impl Agent {
    /// An agent that sends from `start_ns` for the profile's duration.
    pub fn new(profile: MediaProfile, start_ns: u64) -> Self {
        let next_send = vec![start_ns; profile.streams.len()];
        let end_ns = start_ns.saturating_add(profile.duration_ns);
        Agent {
            profile,
            next_send,
            seq: 0,
            start_ns,
            end_ns,
            next_echo_ns: start_ns,
            replies: VecDeque::new(),
            tx: TxStats::default(),
            rx: ReceiverStats::new(start_ns),
            rtt_ms: Vec::new(),
            bad_packets: 0,
        }
    }

    /// When media starts, ns.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// When media ends, ns.
    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }

    /// The profile.
    pub fn profile(&self) -> &MediaProfile {
        &self.profile
    }

    /// The next packet to send at `now`: echo replies first, then media
    /// packets due (a late driver gets every packet it missed, in order,
    /// so the average rate holds).
    pub fn poll_transmit(&mut self, now: u64) -> Option<Vec<u8>> {
        if let Some(r) = self.replies.pop_front() {
            self.tx.echo_replies += 1;
            return Some(r);
        }
        let (i, at) = self
            .next_send
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, at)| *at < self.end_ns)
            .min_by_key(|(_, at)| *at)?;
        if at > now {
            return None;
        }
        let spec = self.profile.streams[i];
        self.next_send[i] = at.saturating_add(spec.interval_ns);
        let mut flags = 0;
        if at >= self.next_echo_ns {
            flags = FLAG_ECHO_REQUEST;
            self.next_echo_ns = at.saturating_add(self.profile.echo_interval_ns);
        }
        let header = Header {
            seq: self.seq,
            send_ns: now,
            flags,
            stream: spec.kind,
        };
        self.seq = self.seq.wrapping_add(1);
        let packet = header.encode(spec.packet_bytes);
        self.tx.packets += 1;
        self.tx.bytes += packet.len() as u64;
        self.tx
            .per_second
            .add(i128::from(now) - i128::from(self.start_ns), packet.len());
        Some(packet)
    }

    /// When `poll_transmit` has something next (`None` once media ended and
    /// no reply waits).
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.replies.is_empty() {
            return Some(0);
        }
        self.next_send
            .iter()
            .copied()
            .filter(|at| *at < self.end_ns)
            .min()
    }

    /// Handles a packet from the peer received at `now`.
    pub fn handle_packet(&mut self, now: u64, bytes: &[u8]) -> Result<(), PacketError> {
        let h = match Header::parse(bytes) {
            Ok(h) => h,
            Err(e) => {
                self.bad_packets += 1;
                return Err(e);
            }
        };
        if h.flags & FLAG_ECHO_REPLY != 0 {
            if h.send_ns > now || h.seq >= self.seq {
                self.bad_packets += 1;
                return Ok(());
            }
            if self.rtt_ms.len() < MAX_RTT_SAMPLES {
                self.rtt_ms.push((now - h.send_ns) as f64 / 1e6);
            }
            return Ok(());
        }
        self.rx.on_packet(h.seq, h.send_ns, now, bytes.len());
        if h.flags & FLAG_ECHO_REQUEST != 0 && self.replies.len() < MAX_PENDING_REPLIES {
            let reply = Header {
                flags: FLAG_ECHO_REPLY,
                ..h
            };
            self.replies.push_back(reply.encode(HEADER_LEN));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_errors() {
        let h = Header {
            seq: 7,
            send_ns: 123_456_789,
            flags: FLAG_ECHO_REQUEST,
            stream: StreamKind::Video,
        };
        let b = h.encode(100);
        assert_eq!(b.len(), 100);
        assert_eq!(Header::parse(&b), Ok(h));
        assert_eq!(Header::parse(&b[..13]), Err(PacketError::Short(13)));
        let mut bad = b.clone();
        bad[12] = 0x03;
        assert_eq!(Header::parse(&bad), Err(PacketError::Flags(3)));
        bad[12] = 0;
        bad[13] = 9;
        assert_eq!(Header::parse(&bad), Err(PacketError::Stream(9)));
    }

    #[test]
    fn audio_profile_paces_at_64_kbps() {
        let p = MediaProfile::audio(1_000_000_000);
        assert_eq!(p.streams[0].packet_bytes, 160);
        assert_eq!(p.streams[0].interval_ns, 20_000_000);
        let mut a = Agent::new(p, 0);
        let mut n = 0;
        let mut t = 0;
        while t < 2_000_000_000 {
            while a.poll_transmit(t).is_some() {
                n += 1;
            }
            t += 1_000_000;
        }
        assert_eq!(n, 50);
        assert_eq!(a.tx.bytes, 8000);
    }

    #[test]
    fn video_spec() {
        let s = StreamSpec::at_rate(StreamKind::Video, 500.0, 1200);
        assert_eq!(s.interval_ns, 19_200_000);
    }

    #[test]
    fn echo_gives_rtt() {
        let mut a = Agent::new(MediaProfile::audio(100_000_000), 0);
        let mut b = Agent::new(MediaProfile::audio(100_000_000), 0);
        let p = a.poll_transmit(0).unwrap();
        b.handle_packet(30_000_000, &p).unwrap();
        let r = b.poll_transmit(30_000_000).unwrap();
        assert_eq!(r.len(), HEADER_LEN);
        a.handle_packet(60_000_000, &r).unwrap();
        assert_eq!(a.rtt_ms, vec![60.0]);
        assert_eq!(b.rx.delays_ms, vec![30.0]);
    }
}

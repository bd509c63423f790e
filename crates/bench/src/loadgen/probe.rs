//! The payload of every load packet: a sequence number and timestamps.
//!
//! ```text
//! 0      8        16       24     28     32         size
//! | seq  | sent_ns | peer_ns | from | magic | zeros… |
//! ```
//!
//! All little-endian. `sent_ns` is set by the sender just before the send,
//! `peer_ns` by the echo peer; both count from one [`Clock`] of the load
//! generator process, which both ends share. `from` is the index of the
//! session that sent the probe (a client-to-client responder echoes probes
//! that are not its own).

use std::time::Instant;

/// Marks a probe ("ORTB").
pub const MAGIC: u32 = 0x4254_524f;
/// Smallest payload that holds a probe.
pub const PROBE_LEN: usize = 32;

/// Nanoseconds since the start of the load generator.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// `at` in nanoseconds since the epoch (0 before it).
    pub fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// One probe as carried in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Sequence number, counted over the whole run.
    pub seq: u64,
    /// When the sender sent it.
    pub sent_ns: u64,
    /// When the echo peer received it (0 until then).
    pub peer_ns: u64,
    /// The session that sent it.
    pub from: u32,
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

impl Probe {
    /// Writes the probe into the first [`PROBE_LEN`] bytes of `buf`; false
    /// if `buf` is too short.
    pub fn write(&self, buf: &mut [u8]) -> bool {
        if buf.len() < PROBE_LEN {
            return false;
        }
        buf[0..8].copy_from_slice(&self.seq.to_le_bytes());
        buf[8..16].copy_from_slice(&self.sent_ns.to_le_bytes());
        buf[16..24].copy_from_slice(&self.peer_ns.to_le_bytes());
        buf[24..28].copy_from_slice(&self.from.to_le_bytes());
        buf[28..32].copy_from_slice(&MAGIC.to_le_bytes());
        true
    }

    /// The probe at the start of `buf`, if it carries one.
    pub fn read(buf: &[u8]) -> Option<Probe> {
        if buf.len() < PROBE_LEN || u32_at(buf, 28) != MAGIC {
            return None;
        }
        Some(Probe {
            seq: u64_at(buf, 0),
            sent_ns: u64_at(buf, 8),
            peer_ns: u64_at(buf, 16),
            from: u32_at(buf, 24),
        })
    }

    /// Sets `peer_ns` in a payload that carries a probe; false otherwise.
    pub fn stamp_peer(buf: &mut [u8], ns: u64) -> bool {
        if buf.len() < PROBE_LEN || u32_at(buf, 28) != MAGIC {
            return false;
        }
        buf[16..24].copy_from_slice(&ns.to_le_bytes());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_stamp() {
        let p = Probe {
            seq: 7,
            sent_ns: 123_456,
            peer_ns: 0,
            from: 3,
        };
        let mut buf = vec![0u8; 120];
        assert!(p.write(&mut buf));
        assert_eq!(Probe::read(&buf), Some(p));
        assert!(Probe::stamp_peer(&mut buf, 999));
        assert_eq!(Probe::read(&buf).map(|p| p.peer_ns), Some(999));
    }

    #[test]
    fn rejects_short_and_foreign_payloads() {
        assert_eq!(Probe::read(&[0u8; 31]), None);
        assert_eq!(Probe::read(&[0u8; 64]), None);
        assert!(!Probe::stamp_peer(&mut [0u8; 64], 1));
        assert!(!Probe {
            seq: 0,
            sent_ns: 0,
            peer_ns: 0,
            from: 0
        }
        .write(&mut [0u8; 8]));
    }
}

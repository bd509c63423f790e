//! `ChannelData::parse`; what parses re-encodes, padded and not, to
//! something that parses to the same channel and data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stun::{ChannelData, PacketKind};

fuzz_target!(|data: &[u8]| {
    let _ = stun::framing::frame_len(data);
    let Ok(c) = ChannelData::parse(data) else {
        return;
    };
    assert_eq!(stun::classify(data), PacketKind::ChannelData);
    assert!(data.len() - 4 - c.data.len() <= 3);
    let mut out = vec![0u8; c.data.len() + 8];
    for pad in [false, true] {
        let n = ChannelData::encode(c.number, c.data, &mut out, pad).unwrap();
        let back = ChannelData::parse(&out[..n]).unwrap();
        assert_eq!(back, c);
    }
});

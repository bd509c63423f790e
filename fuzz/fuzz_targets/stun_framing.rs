//! `StreamDecoder` fed the input in chunks whose sizes come from the input.
//!
//! Layout: two bytes of maximum frame size, then `[n][n + 1 bytes]...`: each
//! chunk is preceded by a byte giving its length minus one. The frames (and
//! the first error) must be the same as when the whole stream is pushed at
//! once, and every frame must be consistent with `frame_len`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stun::framing::{frame_len, FrameKind, StreamDecoder};
use stun::{ChannelData, Error, Message};

type Frames = Vec<(FrameKind, Vec<u8>)>;

/// Drains frames; returns the first error, if any.
fn drain(d: &mut StreamDecoder, out: &mut Frames) -> Option<Error> {
    loop {
        match d.next_frame() {
            Ok(Some((k, f))) => out.push((k, f.to_vec())),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_frame = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let mut rest = &data[2..];
    let mut chunks = Vec::new();
    while let Some((&n, tail)) = rest.split_first() {
        let take = (usize::from(n) + 1).min(tail.len());
        let (chunk, tail) = tail.split_at(take);
        chunks.push(chunk);
        rest = tail;
    }
    let stream: Vec<u8> = chunks.concat();

    // Chunked.
    let mut d = StreamDecoder::new(max_frame);
    let mut got = Frames::new();
    let mut err = None;
    let mut push_refused = false;
    for c in &chunks {
        if d.push(c).is_err() {
            push_refused = true;
            break;
        }
        err = drain(&mut d, &mut got);
        if err.is_some() {
            break;
        }
    }

    // All at once.
    let mut whole = StreamDecoder::new(max_frame);
    let mut want = Frames::new();
    let mut whole_err = None;
    match whole.push(&stream) {
        Ok(()) => whole_err = drain(&mut whole, &mut want),
        Err(_) => push_refused = true,
    }

    if push_refused {
        // Only possible for inputs over 64 KiB: frames before that agree.
        let n = got.len().min(want.len());
        assert_eq!(got[..n], want[..n]);
    } else {
        assert_eq!(got, want);
        assert_eq!(err, whole_err);
        if err.is_none() {
            let framed: usize = got.iter().map(|(_, f)| f.len()).sum();
            assert_eq!(framed + d.pending(), stream.len());
        }
    }

    for (kind, f) in &got {
        assert!(f.len() >= 4 && f.len() <= max_frame.max(24));
        assert_eq!(frame_len(f), Ok(Some((*kind, f.len()))));
        match kind {
            FrameKind::Stun => {
                let _ = Message::parse(f);
            }
            FrameKind::ChannelData => {
                let n = u16::from_be_bytes([f[0], f[1]]);
                let c = ChannelData::parse(f);
                assert_eq!(c.is_ok(), stun::channel::is_rfc5766_channel(n));
            }
        }
    }
    let _ = d.take_pending();
});

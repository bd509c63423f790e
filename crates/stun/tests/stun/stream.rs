//! The stream framer (`StreamDecoder`, `frame_len`) against random frame
//! sequences split at random points.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use stun::framing::{frame_len, FrameKind, StreamDecoder};
use stun::{ChannelData, Error, MessageEncoder, TransactionId};

use crate::roundtrip::{body_attr, message_type, Owned};

/// One frame as it appears on a stream.
#[derive(Debug, Clone)]
enum Frame {
    Stun {
        typ: stun::MessageType,
        txid: [u8; 12],
        attrs: Vec<Owned>,
        fingerprint: bool,
    },
    /// Channel number (0x4000–0x7FFF, the RFC 5766 range) and data; padded
    /// to four bytes as streams require.
    Channel(u16, Vec<u8>),
}

impl Frame {
    fn bytes(&self) -> (FrameKind, Vec<u8>) {
        match self {
            Frame::Stun {
                typ,
                txid,
                attrs,
                fingerprint,
            } => {
                let mut buf = vec![0u8; 65_556];
                let mut e = MessageEncoder::new(&mut buf, *typ, TransactionId(*txid)).unwrap();
                for a in attrs {
                    e.push(&a.attr()).unwrap();
                }
                if *fingerprint {
                    e.fingerprint().unwrap();
                }
                let n = e.finish();
                buf.truncate(n);
                (FrameKind::Stun, buf)
            }
            Frame::Channel(number, data) => {
                let mut buf = number.to_be_bytes().to_vec();
                buf.extend_from_slice(&(data.len() as u16).to_be_bytes());
                buf.extend_from_slice(data);
                while buf.len() % 4 != 0 {
                    buf.push(0);
                }
                (FrameKind::ChannelData, buf)
            }
        }
    }
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            message_type(),
            any::<[u8; 12]>(),
            vec(body_attr(), 0..4),
            any::<bool>()
        )
            .prop_map(|(typ, txid, attrs, fingerprint)| Frame::Stun {
                typ,
                txid,
                attrs,
                fingerprint,
            }),
        (0x4000u16..=0x7FFF, vec(any::<u8>(), 0..300)).prop_map(|(n, d)| Frame::Channel(n, d)),
    ]
}

const MAX_FRAME: usize = 16_384;

/// Feeds `stream` cut at `cuts`, draining frames after every push.
fn decode_split(stream: &[u8], cuts: &[Index]) -> (Vec<(FrameKind, Vec<u8>)>, usize) {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    let mut d = StreamDecoder::new(MAX_FRAME);
    let mut got = Vec::new();
    for w in points.windows(2) {
        d.push(&stream[w[0]..w[1]]).unwrap();
        while let Some((k, f)) = d.next_frame().unwrap() {
            got.push((k, f.to_vec()));
        }
    }
    (got, d.pending())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_frames_split_at_random_points(
        frames in vec(frame(), 0..12),
        cuts in vec(any::<Index>(), 0..40),
    ) {
        let want: Vec<(FrameKind, Vec<u8>)> = frames.iter().map(Frame::bytes).collect();
        prop_assume!(want.iter().all(|(_, b)| b.len() <= MAX_FRAME));
        let stream: Vec<u8> = want.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        let (got, pending) = decode_split(&stream, &cuts);
        prop_assert_eq!(pending, 0);
        prop_assert_eq!(got.len(), want.len());
        for ((gk, gb), (wk, wb)) in got.iter().zip(&want) {
            prop_assert_eq!(gk, wk);
            prop_assert_eq!(gb, wb);
            if *gk == FrameKind::Stun {
                prop_assert!(stun::Message::parse(gb).is_ok());
            } else {
                // Every 0b01 channel number the framer produces (0x4000–0x7FFF)
                // is one ChannelData::parse accepts.
                prop_assert!(ChannelData::parse(gb).is_ok());
            }
        }
    }

    /// A frame cut short yields nothing and stays pending.
    #[test]
    fn incomplete_frame_is_held_back(f in frame(), cut in any::<Index>()) {
        let (_, bytes) = f.bytes();
        prop_assume!(bytes.len() <= MAX_FRAME);
        let n = cut.index(bytes.len());
        let mut d = StreamDecoder::new(MAX_FRAME);
        d.push(&bytes[..n]).unwrap();
        prop_assert_eq!(d.next_frame().unwrap(), None);
        prop_assert_eq!(d.pending(), n);
        d.push(&bytes[n..]).unwrap();
        let (_, got) = d.next_frame().unwrap().unwrap();
        prop_assert_eq!(got, &bytes[..]);
        prop_assert_eq!(d.next_frame().unwrap(), None);
    }
}

#[test]
fn byte_at_a_time_over_many_frames_keeps_the_buffer_bounded() {
    let mut stream = Vec::new();
    for i in 0..200u16 {
        let (_, b) = Frame::Channel(0x4000 + i, vec![i as u8; usize::from(i % 37)]).bytes();
        stream.extend_from_slice(&b);
    }
    let mut d = StreamDecoder::new(1500);
    let mut count = 0;
    for b in &stream {
        d.push(std::slice::from_ref(b)).unwrap();
        while d.next_frame().unwrap().is_some() {
            count += 1;
        }
        assert!(d.pending() < 1500);
    }
    assert_eq!(count, 200);
    assert_eq!(d.pending(), 0);
}

#[test]
fn frame_len_needs_four_bytes_then_answers() {
    let (_, stun) = Frame::Stun {
        typ: stun::MessageType::new(stun::Method::BINDING, stun::Class::Request),
        txid: [0; 12],
        attrs: vec![],
        fingerprint: true,
    }
    .bytes();
    for n in 0..4 {
        assert_eq!(frame_len(&stun[..n]), Ok(None));
    }
    for n in 4..=stun.len() {
        assert_eq!(frame_len(&stun[..n]), Ok(Some((FrameKind::Stun, 28))));
    }
    assert_eq!(
        frame_len(&[0x40, 0x00, 0x00, 0x05]),
        Ok(Some((FrameKind::ChannelData, 12)))
    );
    assert_eq!(
        frame_len(&[0x00, 0x01, 0x00, 0x02]),
        Err(Error::UnalignedLength)
    );
    for first in [0x80u8, 0xC0, 0xFF] {
        assert_eq!(frame_len(&[first, 0, 0, 0]), Err(Error::UnknownFrame));
    }
}

#[test]
fn largest_frames_fit_the_default_limits() {
    // The largest STUN frame (length 0xFFFC) and the largest ChannelData
    // (0xFFFF bytes, padded) are accepted with a 64 KiB + header maximum.
    let max = 20 + 0xFFFC;
    let mut d = StreamDecoder::new(max);
    let mut stun = vec![0u8; max];
    stun[2..4].copy_from_slice(&0xFFFCu16.to_be_bytes());
    stun[4..8].copy_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
    d.push(&stun).unwrap();
    assert_eq!(d.next_frame().unwrap().unwrap().1.len(), max);
    let mut d = StreamDecoder::new(4 + 0x10000);
    let mut cd = vec![0u8; 4 + 0x10000];
    cd[0] = 0x40;
    cd[2..4].copy_from_slice(&0xFFFFu16.to_be_bytes());
    d.push(&cd).unwrap();
    let (k, f) = d.next_frame().unwrap().unwrap();
    assert_eq!((k, f.len()), (FrameKind::ChannelData, 4 + 0x10000));
    assert_eq!(ChannelData::parse(f).unwrap().data.len(), 0xFFFF);
}

#[test]
fn take_pending_returns_the_partial_frame() {
    let mut d = StreamDecoder::new(1500);
    d.push(&[0x40, 0x01, 0x00, 0x08, 1, 2]).unwrap();
    assert_eq!(d.next_frame().unwrap(), None);
    assert_eq!(d.take_pending(), vec![0x40, 0x01, 0x00, 0x08, 1, 2]);
    assert_eq!(d.pending(), 0);
    assert_eq!(d.next_frame().unwrap(), None);
}

//! Codec benchmarks: the hot paths of a TURN server.
//!
//! `cargo bench -p stun -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stun::attr::{self, Attribute};
use stun::{
    ChannelData, Class, Key, Message, MessageEncoder, MessageType, Method, PasswordAlgorithm,
    TransactionId,
};

const NONCE: &str = "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA";

fn key() -> Key {
    match Key::long_term(PasswordAlgorithm::Md5, "alice", "example.org", "secret") {
        Ok(k) => k,
        Err(e) => panic!("key: {e}"),
    }
}

/// Encodes an authenticated Allocate request into `buf`; returns its length.
fn encode_allocate(buf: &mut [u8], key: &Key) -> Result<usize, stun::Error> {
    let typ = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut e = MessageEncoder::new(buf, typ, TransactionId([0x5a; 12]))?;
    e.push(&Attribute::Username("alice"))?;
    e.push(&Attribute::Realm("example.org"))?;
    e.push(&Attribute::Nonce(NONCE))?;
    e.push(&Attribute::RequestedTransport(17))?;
    e.push(&Attribute::Lifetime(600))?;
    e.message_integrity(key)?;
    e.fingerprint()?;
    Ok(e.finish())
}

fn codec(c: &mut Criterion) {
    let key = key();
    let mut buf = [0u8; 256];
    let n = encode_allocate(&mut buf, &key).unwrap_or_default();
    let msg = buf[..n].to_vec();

    let mut g = c.benchmark_group("allocate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&msg)).ok()?;
            let mut n = 0usize;
            for a in m.attributes() {
                n += usize::from(a.is_ok());
            }
            let user = m.get(attr::USERNAME)?.ok()?;
            Some((n, user))
        })
    });
    g.bench_function("encode", |b| {
        let mut out = [0u8; 256];
        b.iter(|| encode_allocate(black_box(&mut out), black_box(&key)))
    });
    g.bench_function("verify_integrity", |b| {
        let m = Message::parse(&msg);
        b.iter(|| {
            m.as_ref()
                .map(|m| black_box(m).verify_integrity(black_box(&key)))
        })
    });
    g.bench_function("verify_fingerprint", |b| {
        let m = Message::parse(&msg);
        b.iter(|| m.as_ref().map(|m| black_box(m).verify_fingerprint()))
    });
    g.finish();

    let mut g = c.benchmark_group("channel_data");
    for size in [160usize, 1200] {
        let data = vec![0x42u8; size];
        let mut frame = vec![0u8; size + 8];
        let n = ChannelData::encode(0x4001, &data, &mut frame, true).unwrap_or_default();
        frame.truncate(n);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("parse_{size}"), |b| {
            b.iter(|| ChannelData::parse(black_box(&frame)).map(|c| c.data.len()))
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

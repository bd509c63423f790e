//! Added round-trip time and wire overhead of the connector, measured with
//! our own `turn::client` (microsecond timestamps; uclient reports whole
//! milliseconds): a 20 ms / 160-byte stream per flow, through a channel to
//! a UDP echo peer on loopback, straight to the relay over UDP versus
//! through the connector over TCP and TLS (direct mode), with 1 and 100
//! concurrent flows.
//!
//! The full measurement is `#[ignore]`d (about a minute); run it with
//! `cargo test --release -p connector --test connector -- --ignored
//! measure --nocapture`. A short stream runs with the other tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{sleep_until, Instant};
use turn::client::{Client, ClientConfig, Event};
use turn::Transport;

use crate::support::*;

const PAYLOAD: usize = 160;
const INTERVAL: Duration = Duration::from_millis(20);

/// A UDP echo on 127.0.0.1 (ends with the runtime).
async fn echo_peer() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// One flow: allocate on `server` over UDP, bind a channel to `peer`, send
/// `count` payloads every 20 ms; the round-trip times in microseconds.
async fn stream(server: SocketAddr, peer: SocketAddr, count: u32) -> Result<Vec<u64>, String> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut client = Client::new(
        ClientConfig::new(server, Transport::Udp, USER, PASSWORD),
        start.into_std(),
    );
    client
        .allocate(start.into_std())
        .map_err(|e| e.to_string())?;
    let deadline = start + Duration::from_secs(20) + INTERVAL * count;
    let mut sent_at: HashMap<u32, Instant> = HashMap::new();
    let mut rtts = Vec::new();
    let mut next_send: Option<Instant> = None;
    let mut seq: u32 = 0;
    let mut last_sent: Option<Instant> = None;
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(t) = client.poll_transmit() {
            sock.send_to(&t.payload, t.destination)
                .await
                .map_err(|e| e.to_string())?;
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                Event::Allocated { .. } => {
                    client
                        .bind_channel(Instant::now().into_std(), peer)
                        .map_err(|e| e.to_string())?;
                }
                Event::ChannelBound { .. } => next_send = Some(Instant::now()),
                Event::Data { data, .. } => {
                    if let Some(b) = data.get(..4) {
                        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        if let Some(t) = sent_at.remove(&n) {
                            rtts.push(t.elapsed().as_micros() as u64);
                        }
                    }
                }
                Event::AllocationFailed { code, reason } => {
                    return Err(format!("allocation failed: {code} {reason}"))
                }
                Event::ChannelBindFailed { code, .. } => {
                    return Err(format!("channel bind failed: {code}"))
                }
                _ => {}
            }
        }
        let now = Instant::now();
        if seq == count
            && (sent_at.is_empty() || last_sent.is_some_and(|t| now > t + Duration::from_secs(2)))
        {
            return Ok(rtts);
        }
        if now > deadline {
            return Err(format!("timed out: {} of {count} answered", rtts.len()));
        }
        if let Some(at) = next_send.filter(|at| *at <= now && seq < count) {
            let mut payload = vec![0u8; PAYLOAD];
            payload[..4].copy_from_slice(&seq.to_be_bytes());
            client
                .send_to(now.into_std(), peer, &payload)
                .map_err(|e| e.to_string())?;
            sent_at.insert(seq, now);
            last_sent = Some(now);
            seq += 1;
            next_send = Some(at + INTERVAL);
            continue;
        }
        let mut wake = deadline;
        if let Some(t) = client.poll_timeout() {
            wake = wake.min(Instant::from_std(t));
        }
        if let Some(t) = next_send.filter(|_| seq < count) {
            wake = wake.min(t);
        }
        if seq == count {
            wake = wake.min(now + Duration::from_millis(50));
        }
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    client.handle_datagram(Instant::now().into_std(), from, &buf[..n]);
                }
            }
            () = sleep_until(wake) => client.handle_timeout(Instant::now().into_std()),
        }
    }
}

#[derive(Debug)]
struct Summary {
    answered: usize,
    expected: usize,
    median_us: u64,
    p95_us: u64,
    mean_us: u64,
}

async fn run_flows(server: SocketAddr, peer: SocketAddr, flows: usize, count: u32) -> Summary {
    let mut tasks = Vec::new();
    for i in 0..flows {
        tasks.push(tokio::spawn(async move {
            // Spread the flows over one interval, as independent callers would be.
            tokio::time::sleep(INTERVAL * (i as u32) / (flows as u32)).await;
            stream(server, peer, count).await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => all.extend(r),
            Err(e) => panic!("flow failed: {e}"),
        }
    }
    all.sort_unstable();
    let pick = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    Summary {
        answered: all.len(),
        expected: flows * count as usize,
        median_us: pick(0.5),
        p95_us: pick(0.95),
        mean_us: all.iter().sum::<u64>() / (all.len().max(1) as u64),
    }
}

#[test]
fn turn_client_stream_through_connector() {
    let relay = TestRelay::start();
    let rt = runtime();
    let peer = rt.block_on(echo_peer());
    let h = start(&rt, tls_config(&relay));
    let s = rt.block_on(run_flows(h.turn_addr(), peer, 2, 25));
    assert_eq!(s.answered, s.expected, "{s:?}");
    stop(&rt, h);
}

#[test]
#[ignore = "measurement: run with --release -- --ignored measure --nocapture"]
fn measure_added_rtt_and_overhead() {
    let relay = TestRelay::start();
    let rt = runtime();
    let peer = rt.block_on(echo_peer());
    let count = 250; // 5 s per flow
    let udp = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let mut lines = Vec::new();
    for flows in [1, 100] {
        let base = rt.block_on(run_flows(udp, peer, flows, count));
        lines.push(format!(
            "{flows:>3} flows  UDP straight to relay   median {:>6} us  p95 {:>6} us  mean {:>6} us  ({}/{})",
            base.median_us, base.p95_us, base.mean_us, base.answered, base.expected
        ));
        for (name, cfg) in [
            ("TCP", config(relay.tcp_endpoint())),
            ("TLS", tls_config(&relay)),
        ] {
            let h = start(&rt, cfg);
            let s = rt.block_on(run_flows(h.turn_addr(), peer, flows, count));
            let st = h.stats();
            lines.push(format!(
                "{flows:>3} flows  via connector over {name}  median {:>6} us  p95 {:>6} us  mean {:>6} us  ({}/{})  added median {:+} us, p95 {:+} us",
                s.median_us, s.p95_us, s.mean_us, s.answered, s.expected,
                s.median_us as i64 - base.median_us as i64,
                s.p95_us as i64 - base.p95_us as i64,
            ));
            let packets = (flows as u64) * u64::from(count);
            lines.push(format!(
                "           upstream bytes: up {} B for {} B of TURN ({:.3}x), down {} B for {} B ({:.3}x); per media packet up {:.1} B on the stream for {PAYLOAD} B payload",
                st.bytes_up, st.payload_up, st.bytes_up as f64 / st.payload_up.max(1) as f64,
                st.bytes_down, st.payload_down, st.bytes_down as f64 / st.payload_down.max(1) as f64,
                st.bytes_up as f64 / packets as f64,
            ));
            stop(&rt, h);
        }
    }
    eprintln!("\n{}\n", lines.join("\n"));
}

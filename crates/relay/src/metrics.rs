//! Prometheus metrics: a snapshot the event loop refreshes, rendered as the
//! text exposition format, and a small HTTP endpoint serving it.
//!
//! Nothing is labelled by user or address, so cardinality is bounded.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use turn::server::{AuthFailure, Stats};

/// What the relay exports, beyond the sans-IO server's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Client connections alive now: tcp, tls.
    pub connections_current: [u64; 2],
    /// Client connections refused by a connection limit.
    pub connections_refused: u64,
    /// Client connections closed for timeouts (handshake or idle).
    pub connections_timed_out: u64,
    /// Datagrams the kernel would not take (send buffer full) or errors.
    pub send_errors: u64,
    /// Frames dropped because a stream's output buffer was full.
    pub stream_drops: u64,
    /// Relay sockets open now.
    pub relay_sockets: u64,
    /// Datagrams larger than a receive slot (4096 bytes), dropped.
    pub oversize_datagrams: u64,
    /// RFC 6062 data connections handed to the shard owning their
    /// ConnectionBind.
    pub handovers: u64,
    /// RFC 8016 allocations moved in from another shard (UDP flows; a
    /// stream is handed over instead, counted in `handovers`).
    pub mobility_arrivals: u64,
    /// RFC 8016 moves between shards lost because a shard was gone
    /// (shutting down).
    pub mobility_lost: u64,
}

/// The latest counters of every shard.
#[derive(Debug, Default)]
pub struct Metrics {
    shards: Mutex<Vec<(Stats, DriverStats)>>,
}

impl Metrics {
    /// Metrics for `n` shards.
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Metrics {
            shards: Mutex::new(vec![Default::default(); n]),
        })
    }

    /// Stores shard `i`'s counters.
    pub fn update(&self, i: usize, server: &Stats, driver: &DriverStats) {
        if let Ok(mut s) = self.shards.lock() {
            if let Some(slot) = s.get_mut(i) {
                slot.0.clone_from(server);
                slot.1.clone_from(driver);
            }
        }
    }

    /// Shards reporting here.
    pub fn shard_count(&self) -> usize {
        self.shards.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// The sum over shards.
    pub fn totals(&self) -> (Stats, DriverStats) {
        let mut t = (Stats::default(), DriverStats::default());
        if let Ok(s) = self.shards.lock() {
            for (a, d) in s.iter() {
                add_stats(&mut t.0, a);
                for i in 0..2 {
                    t.1.connections_current[i] += d.connections_current[i];
                }
                t.1.connections_refused += d.connections_refused;
                t.1.connections_timed_out += d.connections_timed_out;
                t.1.send_errors += d.send_errors;
                t.1.stream_drops += d.stream_drops;
                t.1.relay_sockets += d.relay_sockets;
                t.1.oversize_datagrams += d.oversize_datagrams;
                t.1.handovers += d.handovers;
                t.1.mobility_lost += d.mobility_lost;
                t.1.mobility_arrivals += d.mobility_arrivals;
            }
        }
        t
    }

    /// The Prometheus text exposition of the totals.
    pub fn render(&self) -> String {
        let (s, d) = self.totals();
        let mut o = String::with_capacity(4096);
        let t = ["udp", "tcp", "tls"];
        header(
            &mut o,
            "onionrtc_allocations_current",
            "gauge",
            "Allocations alive now, by client transport.",
        );
        for (i, name) in t.iter().enumerate() {
            let _ = writeln!(
                o,
                "onionrtc_allocations_current{{transport=\"{name}\"}} {}",
                s.allocations_current[i]
            );
        }
        header(
            &mut o,
            "onionrtc_allocations_total",
            "counter",
            "Allocations created, by client transport.",
        );
        for (i, name) in t.iter().enumerate() {
            let _ = writeln!(
                o,
                "onionrtc_allocations_total{{transport=\"{name}\"}} {}",
                s.allocations_created[i]
            );
        }
        header(
            &mut o,
            "onionrtc_relayed_packets_total",
            "counter",
            "Packets relayed, by direction.",
        );
        let _ = writeln!(
            o,
            "onionrtc_relayed_packets_total{{direction=\"to_peer\"}} {}",
            s.packets_to_peer
        );
        let _ = writeln!(
            o,
            "onionrtc_relayed_packets_total{{direction=\"to_client\"}} {}",
            s.packets_to_client
        );
        header(
            &mut o,
            "onionrtc_relayed_bytes_total",
            "counter",
            "Payload bytes relayed, by direction (RFC 6062 TCP streams included).",
        );
        let _ = writeln!(
            o,
            "onionrtc_relayed_bytes_total{{direction=\"to_peer\"}} {}",
            s.bytes_to_peer
        );
        let _ = writeln!(
            o,
            "onionrtc_relayed_bytes_total{{direction=\"to_client\"}} {}",
            s.bytes_to_client
        );
        header(
            &mut o,
            "onionrtc_auth_failures_total",
            "counter",
            "Authentication failures, by reason.",
        );
        for f in AuthFailure::ALL {
            let _ = writeln!(
                o,
                "onionrtc_auth_failures_total{{reason=\"{}\"}} {}",
                f.as_str(),
                s.auth_failures_for(f)
            );
        }
        let simple: [(&str, &str, u64); 17] = [
            (
                "onionrtc_auth_challenges_total",
                "401 challenges to requests without credentials.",
                s.challenges,
            ),
            (
                "onionrtc_peer_refused_total",
                "Requests or packets refused by the peer policy.",
                s.peer_refused,
            ),
            (
                "onionrtc_quota_refused_total",
                "Allocations refused by a quota (486).",
                s.quota_refused,
            ),
            (
                "onionrtc_capacity_refused_total",
                "Requests refused for lack of capacity (508).",
                s.capacity_refused,
            ),
            (
                "onionrtc_redirected_total",
                "Allocate requests sent to an alternate relay (300 ALTERNATE-SERVER).",
                s.redirected,
            ),
            (
                "onionrtc_rate_limited_total",
                "Unauthenticated answers not sent because of the rate limit.",
                s.rate_limited,
            ),
            (
                "onionrtc_malformed_total",
                "Packets that were neither valid STUN nor ChannelData.",
                s.malformed,
            ),
            (
                "onionrtc_unknown_attributes_total",
                "Requests answered 420.",
                s.unknown_attributes,
            ),
            (
                "onionrtc_dropped_no_permission_total",
                "Data dropped for lack of a permission.",
                s.dropped_no_permission,
            ),
            (
                "onionrtc_dropped_no_allocation_total",
                "Data dropped for lack of an allocation.",
                s.dropped_no_allocation,
            ),
            (
                "onionrtc_connections_refused_total",
                "Client connections refused by a connection limit.",
                d.connections_refused,
            ),
            (
                "onionrtc_connection_handovers_total",
                "RFC 6062 data connections handed to the shard holding their peer connection.",
                d.handovers,
            ),
            (
                "onionrtc_mobility_moves_total",
                "RFC 8016: allocations moved to a new client 5-tuple by a MOBILITY-TICKET.",
                s.mobility_moves,
            ),
            (
                "onionrtc_mobility_refused_total",
                "RFC 8016: mobility requests refused (unknown ticket, another user, mobility off).",
                s.mobility_refused,
            ),
            (
                "onionrtc_mobility_shard_moves_total",
                "RFC 8016: allocations that moved to another shard with their client's new UDP flow.",
                d.mobility_arrivals,
            ),
            (
                "onionrtc_mobility_lost_total",
                "RFC 8016: moves between shards lost to a shard shutting down.",
                d.mobility_lost,
            ),
            (
                "onionrtc_connections_timed_out_total",
                "Client connections closed by a timeout.",
                d.connections_timed_out,
            ),
        ];
        for (name, help, v) in simple {
            header(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {v}");
        }
        header(
            &mut o,
            "onionrtc_bandwidth_dropped_packets_total",
            "counter",
            "Data dropped by a bandwidth limit, by direction and limit (allocation or total).",
        );
        for (i, dir) in ["to_peer", "to_client"].iter().enumerate() {
            for (j, limit) in ["allocation", "total"].iter().enumerate() {
                let _ = writeln!(
                    o,
                    "onionrtc_bandwidth_dropped_packets_total{{direction=\"{dir}\",limit=\"{limit}\"}} {}",
                    s.bandwidth_dropped_packets[i][j]
                );
            }
        }
        header(
            &mut o,
            "onionrtc_bandwidth_dropped_bytes_total",
            "counter",
            "Payload bytes dropped by a bandwidth limit, by direction.",
        );
        for (i, dir) in ["to_peer", "to_client"].iter().enumerate() {
            let _ = writeln!(
                o,
                "onionrtc_bandwidth_dropped_bytes_total{{direction=\"{dir}\"}} {}",
                s.bandwidth_dropped_bytes[i]
            );
        }
        header(
            &mut o,
            "onionrtc_send_errors_total",
            "counter",
            "Datagrams or frames not sent (full buffers, errors).",
        );
        let _ = writeln!(
            o,
            "onionrtc_send_errors_total {}",
            d.send_errors + d.stream_drops
        );
        header(
            &mut o,
            "onionrtc_connections_current",
            "gauge",
            "Client connections alive now, by transport.",
        );
        let _ = writeln!(
            o,
            "onionrtc_connections_current{{transport=\"tcp\"}} {}",
            d.connections_current[0]
        );
        let _ = writeln!(
            o,
            "onionrtc_connections_current{{transport=\"tls\"}} {}",
            d.connections_current[1]
        );
        header(
            &mut o,
            "onionrtc_relay_sockets_current",
            "gauge",
            "Relay sockets open now.",
        );
        let _ = writeln!(o, "onionrtc_relay_sockets_current {}", d.relay_sockets);
        header(
            &mut o,
            "onionrtc_relay_shards",
            "gauge",
            "Event loops (shards) of the relay, one thread each.",
        );
        let _ = writeln!(o, "onionrtc_relay_shards {}", self.shard_count());
        o
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn add_stats(t: &mut Stats, a: &Stats) {
    for i in 0..3 {
        t.allocations_created[i] += a.allocations_created[i];
        t.allocations_current[i] += a.allocations_current[i];
    }
    for i in 0..t.auth_failures.len() {
        t.auth_failures[i] += a.auth_failures[i];
    }
    t.packets_to_peer += a.packets_to_peer;
    t.bytes_to_peer += a.bytes_to_peer;
    t.packets_to_client += a.packets_to_client;
    t.bytes_to_client += a.bytes_to_client;
    t.challenges += a.challenges;
    t.peer_refused += a.peer_refused;
    t.quota_refused += a.quota_refused;
    t.capacity_refused += a.capacity_refused;
    t.redirected += a.redirected;
    t.rate_limited += a.rate_limited;
    t.malformed += a.malformed;
    t.unknown_attributes += a.unknown_attributes;
    t.dropped_no_allocation += a.dropped_no_allocation;
    t.dropped_no_permission += a.dropped_no_permission;
    t.dropped_no_channel += a.dropped_no_channel;
    t.error_responses += a.error_responses;
    t.mobility_moves += a.mobility_moves;
    t.mobility_refused += a.mobility_refused;
    for i in 0..2 {
        for j in 0..2 {
            t.bandwidth_dropped_packets[i][j] += a.bandwidth_dropped_packets[i][j];
        }
        t.bandwidth_dropped_bytes[i] += a.bandwidth_dropped_bytes[i];
    }
}

/// A minimal HTTP/1.1 endpoint answering `GET /metrics`, one request per
/// connection, each bounded in size and time.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `metrics` from a thread.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(listener, metrics, flag))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let mut req = [0u8; 2048];
                let mut n = 0;
                while n < req.len() {
                    match stream.read(&mut req[n..]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if req[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let ok = req[..n].starts_with(b"GET /metrics ")
                    || req[..n].starts_with(b"GET /metrics?");
                let (status, body) = if ok {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "not found\n".to_string())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_contract_names() {
        let m = Metrics::new(2);
        let mut s = Stats::default();
        s.allocations_current[0] = 2;
        s.packets_to_peer = 7;
        m.update(0, &s, &DriverStats::default());
        m.update(1, &s, &DriverStats::default());
        let text = m.render();
        for name in [
            "onionrtc_allocations_current{transport=\"udp\"} 4",
            "onionrtc_allocations_total{transport=\"tls\"} 0",
            "onionrtc_relayed_packets_total{direction=\"to_peer\"} 14",
            "onionrtc_relayed_bytes_total{direction=\"to_client\"} 0",
            "onionrtc_auth_failures_total{reason=\"bad_integrity\"} 0",
            "onionrtc_peer_refused_total 0",
            "onionrtc_quota_refused_total 0",
            "onionrtc_redirected_total 0",
            "onionrtc_connections_current{transport=\"tcp\"} 0",
            "onionrtc_rate_limited_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn http_endpoint() {
        let m = Metrics::new(1);
        let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), m).unwrap();
        let mut s = std::net::TcpStream::connect(srv.local_addr()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"));
        assert!(out.contains("onionrtc_allocations_current"));
        let mut s = std::net::TcpStream::connect(srv.local_addr()).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 404"));
    }
}

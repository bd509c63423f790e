//! The peer policy of the live relay with its default settings (the
//! dangerous loopback switch OFF), inside a fresh network namespace with only
//! `lo`, so a policy bug can never send a packet off the machine.
//!
//! "Bait" listeners on denied loopback addresses (127.0.0.1, 127.0.0.2, ::1)
//! record anything the relay sends them. The turn client drives dual-stack
//! allocations over real UDP and TCP; hand-made CreatePermission requests
//! carry the real peer port (the client's own carry port 0, see the ignored
//! test at the end). For every denied class the relay must answer 403,
//! deliver nothing, try no send at all (`onionrtc_send_errors_total` stays
//! 0: in the namespace any other destination would be unreachable) and count
//! the refusal. Another allocation's relayed address is the one loopback
//! peer that is allowed, and only while that allocation lives.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stun::attr::Attribute;
use stun::Method;
use turn::client::{ClientConfig, Event, RequestedTransport};
use turn::Transport;

use crate::auth::{metric_now, wait_metric, Driver};
use crate::support::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// No bait thread outlives this.
const BAIT_LIFETIME: Duration = Duration::from_secs(300);
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// What a bait listener received.
type Received = Arc<Mutex<Vec<(SocketAddr, usize)>>>;

/// A UDP socket recording every datagram it receives, from a thread that
/// stops when the bait is dropped (or after [`BAIT_LIFETIME`]).
struct UdpBait {
    addr: SocketAddr,
    got: Received,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpBait {
    fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let got = Received::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + BAIT_LIFETIME;
            let mut buf = vec![0u8; 65_536];
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    g.lock().unwrap().push((from, n));
                }
            }
        });
        Ok(UdpBait {
            addr,
            got,
            stop,
            thread: Some(thread),
        })
    }

    fn received(&self) -> Vec<(SocketAddr, usize)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for UdpBait {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP listener counting the connections it accepts.
struct TcpBait {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpBait {
    fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + BAIT_LIFETIME;
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok(_) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(TcpBait {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        })
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpBait {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// UDP baits on 127.0.0.1, 127.0.0.2 and ::1 and TCP baits on 127.0.0.1
/// and 127.0.0.2, all on one port.
struct Baits {
    port: u16,
    udp: Vec<UdpBait>,
    tcp: Vec<TcpBait>,
}

impl Baits {
    fn new() -> Self {
        let ips: [IpAddr; 3] = [
            LOCALHOST,
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        for _ in 0..50 {
            let port = free_port();
            let udp: Result<Vec<_>, _> = ips
                .iter()
                .map(|ip| UdpBait::bind(SocketAddr::new(*ip, port)))
                .collect();
            let tcp: Result<Vec<_>, _> = ips[..2]
                .iter()
                .map(|ip| TcpBait::bind(SocketAddr::new(*ip, port)))
                .collect();
            if let (Ok(udp), Ok(tcp)) = (udp, tcp) {
                return Baits { port, udp, tcp };
            }
        }
        panic!("no port free for the baits");
    }

    /// Waits 500 ms for stray packets, then asserts that no bait got any.
    fn assert_untouched(&self, when: &str) {
        std::thread::sleep(Duration::from_millis(500));
        for b in &self.udp {
            let got = b.received();
            assert!(
                got.is_empty(),
                "{when}: UDP bait {} received {got:?}",
                b.addr
            );
        }
        for b in &self.tcp {
            assert_eq!(
                b.accepted(),
                0,
                "{when}: TCP bait {} accepted a connection",
                b.addr
            );
        }
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One peer of every class the default policy denies; `bait` is the baits'
/// port, `relay_port` the relay's own TURN port.
fn denied_peers(bait: u16, relay_port: u16) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = [
        "0.0.0.0",
        "[::]",
        "[::ffff:127.0.0.1]",
        "127.0.0.1",
        "127.0.0.2",
        "[::1]",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "[fe80::1]",
        "224.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
    ]
    .iter()
    .map(|ip| sa(&format!("{ip}:{bait}")))
    .collect();
    // The relay's own TURN listener: a loop back into the relay.
    v.push(SocketAddr::new(LOCALHOST, relay_port));
    v
}

/// A client of the test user asking for an IPv4 and an IPv6 relayed address.
fn dual_stack(relay: &TestRelay, transport: Transport) -> (Driver, SocketAddr, SocketAddr) {
    let server = SocketAddr::new(LOCALHOST, relay.port);
    let mut config = ClientConfig::new(server, transport, USER, PASSWORD);
    config.additional_ipv6 = true;
    let mut d = Driver::new(config, LOCALHOST);
    let relayed = d.allocate().unwrap();
    let v4 = *relayed.iter().find(|a| a.is_ipv4()).expect("an IPv4 relay");
    let v6 = *relayed.iter().find(|a| a.is_ipv6()).expect("an IPv6 relay");
    assert_eq!(v4.ip(), LOCALHOST);
    assert_eq!(v6.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    (d, v4, v6)
}

fn peer_refused(relay: &TestRelay) -> u64 {
    metric_now(relay, "onionrtc_peer_refused_total")
}

/// Waits until the counters are published and `name` reached `want`;
/// asserts it is exactly `want`.
fn assert_metric(relay: &TestRelay, name: &str, want: u64) {
    let v = wait_metric(relay, name, |v| v >= want);
    assert_eq!(v, want, "{name}");
}

/// The relay's own IPs in the namespace: relayed addresses live there.
const RELAY_IPS: [IpAddr; 2] = [LOCALHOST, IpAddr::V6(Ipv6Addr::LOCALHOST)];

/// Every denied peer: ChannelBind (client) and CreatePermission with the
/// real port (hand-made) are 403; CreatePermission with port 0 (client) is
/// 403 too, except on the relay's own IPs, where it is granted because live
/// allocations use them (RFC 8656 §9.1: the port is ignored) and each packet
/// is then checked against the live allocations; Send indications deliver
/// nothing. Returns what the relay must have counted as peer refusals and
/// as data without permission.
fn refuse_all(d: &mut Driver, peers: &[SocketAddr]) -> (u64, u64) {
    let now = Instant::now();
    let mut ips: Vec<IpAddr> = peers.iter().map(SocketAddr::ip).collect();
    ips.sort();
    ips.dedup();
    for p in peers {
        d.client.bind_channel(now, *p).unwrap();
    }
    for ip in &ips {
        d.client.create_permission(now, *ip).unwrap();
    }
    for p in peers {
        let ev = d
            .wait_event(EVENT_WAIT, |e| matches!(e, Event::ChannelBindFailed { peer, .. } | Event::ChannelBound { peer, .. } if peer == p))
            .unwrap_or_else(|| panic!("no answer to ChannelBind {p}"));
        let want = Event::ChannelBindFailed {
            peer: *p,
            code: 403,
        };
        assert_eq!(ev, want, "ChannelBind {p}");
    }
    let mut refused = 2 * peers.len() as u64;
    for ip in &ips {
        let ev = d
            .wait_event(EVENT_WAIT, |e| matches!(e, Event::PermissionFailed { peer, .. } | Event::PermissionCreated(peer) if peer == ip))
            .unwrap_or_else(|| panic!("no answer to CreatePermission {ip}"));
        let want = if RELAY_IPS.contains(ip) {
            Event::PermissionCreated(*ip)
        } else {
            refused += 1;
            Event::PermissionFailed {
                peer: *ip,
                code: 403,
            }
        };
        assert_eq!(ev, want, "CreatePermission {ip} (port 0)");
    }
    for p in peers {
        let code = d.signed(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(*p)]);
        assert_eq!(code, Some(403), "hand-made CreatePermission {p}");
    }
    let mut no_permission = 0;
    for p in peers {
        d.client
            .send_to(Instant::now(), *p, b"must never arrive")
            .unwrap();
        d.step(Duration::ZERO);
        if RELAY_IPS.contains(&p.ip()) {
            refused += 1;
        } else {
            no_permission += 1;
        }
    }
    d.run_for(Duration::from_millis(100));
    (refused, no_permission)
}

/// Sends `data` from `x` to `to`, and expects `y` to get it from `from`.
fn deliver(x: &mut Driver, to: SocketAddr, y: &mut Driver, from: SocketAddr, data: &[u8]) {
    x.client.send_to(Instant::now(), to, data).unwrap();
    x.step(Duration::ZERO);
    let ev = y.wait_event(
        EVENT_WAIT,
        |e| matches!(e, Event::Data { peer, data: d } if *peer == from && d == data),
    );
    assert!(
        ev.is_some(),
        "{from} -> {to}: {:?} not delivered; events {:?}",
        String::from_utf8_lossy(data),
        y.take_events()
    );
}

fn bind_ok(d: &mut Driver, peer: SocketAddr) {
    d.client.bind_channel(Instant::now(), peer).unwrap();
    let ev = d.wait_event(EVENT_WAIT, |e| {
        matches!(e, Event::ChannelBound { peer: p, .. } | Event::ChannelBindFailed { peer: p, .. } if *p == peer)
    });
    assert!(
        matches!(ev, Some(Event::ChannelBound { .. })),
        "ChannelBind {peer}: {ev:?}"
    );
}

#[test]
fn peer_policy_in_netns() {
    if !testkit::netns::run_isolated("policy::peer_policy_in_netns") {
        return;
    }
    let relay = TestRelay::start(|c| {
        c.dangerous_allow_loopback_peers = false;
        c.relay_ip6 = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
    });
    let baits = Baits::new();
    let denied = denied_peers(baits.port, relay.port);

    // 1. Every denied class, from a UDP and from a TCP client.
    let (mut a, a4, a6) = dual_stack(&relay, Transport::Udp);
    let (mut t, t4, _) = dual_stack(&relay, Transport::Tcp);
    let (r1, n1) = refuse_all(&mut a, &denied);
    let (r2, n2) = refuse_all(&mut t, &denied);
    baits.assert_untouched("denied peers");
    let mut refused = r1 + r2;
    assert_metric(&relay, "onionrtc_peer_refused_total", refused);
    assert_metric(&relay, "onionrtc_dropped_no_permission_total", n1 + n2);
    assert_eq!(metric_now(&relay, "onionrtc_send_errors_total"), 0);
    assert_eq!(
        metric_now(
            &relay,
            r#"onionrtc_relayed_packets_total{direction="to_peer"}"#
        ),
        0
    );

    // 2. Another allocation's relayed address is allowed although it is a
    // loopback address: channels over IPv4, hand-made CreatePermission
    // (real port) and Send/Data indications over IPv6, both ways.
    let (mut b, b4, b6) = dual_stack(&relay, Transport::Udp);
    bind_ok(&mut a, b4);
    bind_ok(&mut b, a4);
    deliver(&mut a, b4, &mut b, a4, b"a to b over a channel");
    deliver(&mut b, a4, &mut a, b4, b"b to a over a channel");
    let perm =
        |d: &mut Driver, p| d.signed(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(p)]);
    assert_eq!(perm(&mut a, b6), None, "CreatePermission {b6}");
    assert_eq!(perm(&mut b, a6), None, "CreatePermission {a6}");
    deliver(&mut a, b6, &mut b, a6, b"a to b over IPv6");
    deliver(&mut b, a6, &mut a, b6, b"b to a over IPv6");
    bind_ok(&mut t, b4);
    deliver(&mut t, b4, &mut b, t4, b"t (tcp) to b");
    deliver(&mut b, t4, &mut t, b4, b"b to t (tcp)");
    assert_eq!(peer_refused(&relay), refused);

    // 3. Those permissions cover the relay's loopback IPs, but only live
    // allocations on them: every other port stays refused, packet by packet.
    let escapes = [
        SocketAddr::new(LOCALHOST, baits.port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), baits.port),
        SocketAddr::new(LOCALHOST, relay.port),
        SocketAddr::new(LOCALHOST, relay.tls_port),
    ];
    for p in escapes {
        a.client.send_to(Instant::now(), p, b"escape").unwrap();
        a.step(Duration::ZERO);
        refused += 1;
    }
    t.client
        .send_to(Instant::now(), escapes[0], b"escape over tcp")
        .unwrap();
    t.step(Duration::ZERO);
    refused += 1;
    let mapped = sa(&format!("[::ffff:127.0.0.1]:{}", b4.port()));
    for p in [escapes[0], mapped] {
        a.client.bind_channel(Instant::now(), p).unwrap();
        let ev = a.wait_event(EVENT_WAIT, |e| matches!(e, Event::ChannelBindFailed { peer, .. } | Event::ChannelBound { peer, .. } if *peer == p));
        assert_eq!(ev, Some(Event::ChannelBindFailed { peer: p, code: 403 }));
        assert_eq!(perm(&mut a, p), Some(403), "CreatePermission {p}");
        refused += 2;
    }
    baits.assert_untouched("escapes through a relayed-address permission");
    assert_metric(&relay, "onionrtc_peer_refused_total", refused);

    // 4. Once b's allocation is gone, its addresses are plain loopback
    // addresses again: a's channel and permission to them carry nothing,
    // even to a process that now listens there.
    b.deallocate();
    let rebind = |addr| {
        testkit::wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            UdpBait::bind(addr).ok()
        })
        .unwrap_or_else(|| panic!("the relay still holds {addr} after Refresh(0)"))
    };
    let (late4, late6) = (rebind(b4), rebind(b6));
    assert!(
        a.client.channel(b4).is_some(),
        "a keeps its channel to {b4}"
    );
    a.client
        .send_to(Instant::now(), b4, b"over a stale channel")
        .unwrap();
    a.client
        .send_to(Instant::now(), b6, b"over a stale permission")
        .unwrap();
    a.step(Duration::ZERO);
    refused += 2;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(late4.received(), vec![], "{b4}");
    assert_eq!(late6.received(), vec![], "{b6}");
    assert_metric(&relay, "onionrtc_peer_refused_total", refused);

    // 5. RFC 6062: a TCP allocation may not connect to loopback or private
    // peers, and a loopback process may not connect in without permission.
    let server = SocketAddr::new(LOCALHOST, relay.port);
    let mut config = ClientConfig::new(server, Transport::Tcp, USER, PASSWORD);
    config.requested_transport = RequestedTransport::Tcp;
    let mut c = Driver::new(config, LOCALHOST);
    let c4 = c.allocate().unwrap()[0];
    let targets = [
        baits.tcp[1].addr,
        baits.tcp[0].addr,
        sa(&format!("10.0.0.1:{}", baits.port)),
        sa(&format!("169.254.169.254:{}", baits.port)),
        SocketAddr::new(LOCALHOST, relay.port),
    ];
    for p in targets {
        c.client.connect(Instant::now(), p).unwrap();
        let ev = c.wait_event(EVENT_WAIT, |e| {
            matches!(e, Event::ConnectFailed { peer, .. } | Event::ConnectionCreated { peer, .. } if *peer == p)
        });
        assert_eq!(
            ev,
            Some(Event::ConnectFailed { peer: p, code: 403 }),
            "Connect {p}"
        );
        refused += 1;
    }
    let no_perm_before = metric_now(&relay, "onionrtc_dropped_no_permission_total");
    let mut intruder = TcpStream::connect_timeout(&c4, Duration::from_secs(2)).unwrap();
    intruder
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut one = [0u8; 1];
    match intruder.read(&mut one) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("a connection to {c4} without permission must be closed: {other:?}"),
    }
    c.run_for(Duration::from_millis(200));
    let attempts: Vec<Event> = c
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::ConnectionAttempt { .. }))
        .collect();
    assert_eq!(attempts, vec![]);
    baits.assert_untouched("RFC 6062 Connect");
    assert_metric(&relay, "onionrtc_peer_refused_total", refused);
    assert!(
        metric_now(&relay, "onionrtc_dropped_no_permission_total") > no_perm_before,
        "the refused incoming connection is counted"
    );
    assert_eq!(metric_now(&relay, "onionrtc_send_errors_total"), 0);
    assert!(relay.handle().is_running());
}

/// The turn client's CreatePermission carries the peer with port 0 (RFC
/// 8656 §9.1: the port is ignored); another allocation's relayed address is
/// the one loopback peer it may name, and data then flows both ways with
/// Send and Data indications.
#[test]
fn client_create_permission_to_relayed_address() {
    if !testkit::netns::run_isolated("policy::client_create_permission_to_relayed_address") {
        return;
    }
    let relay = TestRelay::start(|c| c.dangerous_allow_loopback_peers = false);
    let (mut a, a4) = udp_v4(&relay);
    let (mut b, b4) = udp_v4(&relay);
    for (d, peer) in [(&mut a, b4), (&mut b, a4)] {
        d.client
            .create_permission(Instant::now(), peer.ip())
            .unwrap();
        let ev = d.wait_event(EVENT_WAIT, |e| {
            matches!(
                e,
                Event::PermissionCreated(_) | Event::PermissionFailed { .. }
            )
        });
        assert_eq!(
            ev,
            Some(Event::PermissionCreated(peer.ip())),
            "CreatePermission {peer}"
        );
    }
    deliver(&mut a, b4, &mut b, a4, b"a to b");
    deliver(&mut b, a4, &mut a, b4, b"b to a");
    assert_eq!(peer_refused(&relay), 0);
}

/// An RFC 6062 allocation's relayed address is a TCP listener: UDP data
/// can never reach it on the wire, so it is not a peer a UDP allocation may
/// relay to. The relay lets a UDP allocation bind a channel to it (the
/// live-allocation exception of the policy ignores the transport) and hands
/// the datagram, in-process, to the TCP allocation as a Data indication on
/// its control connection, which RFC 6062 allocations never receive.
#[test]
fn udp_data_never_reaches_a_tcp_allocation() {
    if !testkit::netns::run_isolated("policy::udp_data_never_reaches_a_tcp_allocation") {
        return;
    }
    let relay = TestRelay::start(|c| c.dangerous_allow_loopback_peers = false);
    let (mut a, a4) = udp_v4(&relay);
    let server = SocketAddr::new(LOCALHOST, relay.port);
    let mut config = ClientConfig::new(server, Transport::Tcp, USER, PASSWORD);
    config.requested_transport = RequestedTransport::Tcp;
    let mut c = Driver::new(config, LOCALHOST);
    let c4 = c.allocate().unwrap()[0];
    // c accepts anything from the relay's IP (port 0: a live allocation uses it).
    c.client.create_permission(Instant::now(), a4.ip()).unwrap();
    let ev = c.wait_event(EVENT_WAIT, |e| {
        matches!(
            e,
            Event::PermissionCreated(_) | Event::PermissionFailed { .. }
        )
    });
    assert_eq!(ev, Some(Event::PermissionCreated(a4.ip())));

    a.client.bind_channel(Instant::now(), c4).unwrap();
    let ev = a.wait_event(EVENT_WAIT, |e| {
        matches!(
            e,
            Event::ChannelBound { .. } | Event::ChannelBindFailed { .. }
        )
    });
    a.client
        .send_to(Instant::now(), c4, b"udp into a tcp allocation")
        .unwrap();
    a.step(Duration::ZERO);
    c.run_for(Duration::from_millis(500));
    let data: Vec<Event> = c
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::Data { .. }))
        .collect();
    assert_eq!(data, vec![], "UDP data reached the TCP allocation {c4}");
    assert_eq!(
        ev,
        Some(Event::ChannelBindFailed {
            peer: c4,
            code: 403
        }),
        "ChannelBind from a UDP allocation to the TCP relayed address {c4}"
    );
}

/// A UDP allocation's relayed port is a UDP socket; on TCP that same port
/// may belong to anything else on the relay's IP. An RFC 6062 Connect to it
/// must be refused like any other loopback peer, or the relay opens a TCP
/// connection to whatever local service listens there.
#[test]
fn tcp_connect_never_reaches_a_udp_relayed_port() {
    if !testkit::netns::run_isolated("policy::tcp_connect_never_reaches_a_udp_relayed_port") {
        return;
    }
    let relay = TestRelay::start(|c| c.dangerous_allow_loopback_peers = false);
    let (_b, b4) = udp_v4(&relay);
    // A local TCP service that happens to use the same port number.
    let service = TcpBait::bind(b4).expect("TCP port of b's UDP relay port is free");
    let server = SocketAddr::new(LOCALHOST, relay.port);
    let mut config = ClientConfig::new(server, Transport::Tcp, USER, PASSWORD);
    config.requested_transport = RequestedTransport::Tcp;
    let mut c = Driver::new(config, LOCALHOST);
    c.allocate().unwrap();
    c.client.connect(Instant::now(), b4).unwrap();
    let ev = c.wait_event(EVENT_WAIT, |e| {
        matches!(
            e,
            Event::ConnectFailed { .. } | Event::ConnectionCreated { .. }
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        service.accepted(),
        0,
        "the relay connected to the local service on {b4}"
    );
    assert_eq!(
        ev,
        Some(Event::ConnectFailed {
            peer: b4,
            code: 403
        }),
        "Connect to the UDP relayed address {b4}"
    );
}

/// An IPv4-only UDP allocation and its relayed address.
fn udp_v4(relay: &TestRelay) -> (Driver, SocketAddr) {
    let mut d = Driver::udp(relay);
    let relayed = d.allocate().unwrap();
    (d, relayed[0])
}

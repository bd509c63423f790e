//! Traffic at a fixed rate: relay, direct and client-to-client modes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::engine::{Engine, Path, SessionState};
use super::setup::Setup;
use super::{count_error, io_err, offset, secs};
use super::{LinkKind, LoadgenArgs, LoadgenError, LoadgenReport, Mode, ServerUrl};

/// Probes sent per wake-up at most, when the schedule is behind.
const BURST: usize = 64;
/// How long to wait for probes still in flight after the last send.
const DRAIN: Duration = Duration::from_secs(1);
/// Wait per loop round when nothing is scheduled sooner.
const IDLE: Duration = Duration::from_millis(20);
/// Echo peers at most, unless --peers says otherwise.
const DEFAULT_PEERS: u32 = 16;

pub(super) fn run(
    args: &LoadgenArgs,
    server: Option<ServerUrl>,
    stop: &AtomicBool,
) -> Result<LoadgenReport, LoadgenError> {
    let kind = server.map_or(LinkKind::Udp, |s| s.kind);
    let (path, mode) = match args.mode {
        Mode::Relay => (Path::Relay, "relay"),
        Mode::Direct => (Path::Direct, "direct"),
        Mode::C2c => (Path::ClientToClient, "c2c"),
    };
    let mut n = args.allocations as usize;
    if path == Path::ClientToClient {
        n = (n.max(2) + 1) & !1;
    }
    let planned = (f64::from(args.pps) * args.duration).ceil() as u64;
    let mut engine =
        Engine::new(path, kind, n, args.size as usize, planned).map_err(io_err("event loop"))?;
    engine.set_busy_poll(args.busy_poll);

    let peer_ip = server
        .map(|s| s.addr.ip())
        .filter(IpAddr::is_loopback)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let targets: Vec<SocketAddr> = match (path, args.peer) {
        (Path::ClientToClient, _) => Vec::new(),
        (_, Some(p)) => vec![p],
        (_, None) => {
            let count = args
                .peers
                .unwrap_or(DEFAULT_PEERS.min(args.allocations))
                .max(1);
            (0..count)
                .map(|_| engine.add_peer(peer_ip))
                .collect::<Result<_, _>>()
                .map_err(io_err("echo peer socket"))?
        }
    };

    let mut report = LoadgenReport {
        mode: mode.into(),
        transport: kind.name().into(),
        server: server.map(|s| s.to_string()),
        allocations: u32::try_from(n).unwrap_or(u32::MAX),
        pps_target: args.pps,
        size: args.size,
        ..LoadgenReport::default()
    };

    let started = Instant::now();
    let mut setup = match server {
        Some(server) if path != Path::Direct => {
            let mut setup = Setup::new(args, server, targets.clone());
            let deadline = started + secs(args.setup_timeout);
            while setup.settled() < n && !stop.load(Ordering::Relaxed) {
                if Instant::now() >= deadline {
                    setup.give_up(&mut engine);
                    break;
                }
                setup.start_more(&mut engine, n);
                engine.pump(None, IDLE).map_err(io_err("event loop"))?;
                setup.handle_notices(&mut engine);
            }
            Some(setup)
        }
        _ => {
            for i in 0..n {
                let to = targets[i % targets.len()];
                engine.open(i, to, None).map_err(io_err("client socket"))?;
                engine.sessions[i].target = Some(to);
            }
            None
        }
    };
    report.setup_s = started.elapsed().as_secs_f64();

    let senders: Vec<usize> = (0..n)
        .filter(|&i| {
            let ready = |j: usize| engine.sessions[j].state == SessionState::Ready;
            match path {
                Path::ClientToClient => i % 2 == 0 && ready(i) && ready(i + 1),
                _ => ready(i),
            }
        })
        .collect();
    let ready = (0..n)
        .filter(|&i| engine.sessions[i].state == SessionState::Ready)
        .count();
    report.ready = u32::try_from(ready).unwrap_or(u32::MAX);
    report.failed = report.allocations - report.ready;

    if !senders.is_empty() {
        send_and_drain(
            &mut engine,
            &mut setup,
            &senders,
            args,
            planned,
            stop,
            &mut report,
        )?;
    }

    report.sent = engine.counters.sent;
    report.received = engine.seq.received();
    report.lost = report.sent.saturating_sub(report.received);
    report.duplicates = engine.seq.duplicates();
    report.send_dropped = engine.counters.send_dropped;
    report.echoed = engine.counters.echoed;
    report.peer_received = engine.peers.iter().map(|p| p.received).sum();
    report.rtt_us = engine.rtt.percentiles();
    report.to_peer_us = engine.to_peer.percentiles();
    report.from_peer_us = engine.from_peer.percentiles();
    if let Some(s) = setup {
        report.errors = s.errors;
    }
    if engine.seq.unexpected() > 0 {
        report.errors.insert(
            "probes with an unknown sequence number".into(),
            engine.seq.unexpected(),
        );
    }
    if engine.counters.foreign > 0 {
        report
            .errors
            .insert("data that is not a probe".into(), engine.counters.foreign);
    }
    if senders.is_empty() {
        count_error(&mut report.errors, "no session could be set up".into());
    }
    Ok(report)
}

/// Sends `planned` probes on the deadline schedule, then waits for the
/// last ones to come back.
fn send_and_drain(
    engine: &mut Engine,
    setup: &mut Option<Setup<'_>>,
    senders: &[usize],
    args: &LoadgenArgs,
    planned: u64,
    stop: &AtomicBool,
    report: &mut LoadgenReport,
) -> Result<(), LoadgenError> {
    let start = Instant::now() + Duration::from_millis(5);
    let mut k: u64 = 0;
    let mut next_at = start;
    while k < planned && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut burst = 0;
        while next_at <= now && burst < BURST && k < planned {
            let i = senders[(k % senders.len() as u64) as usize];
            engine.send_probe(i, engine.counters.sent);
            k += 1;
            burst += 1;
            next_at = start + offset(k, args.pps);
        }
        engine
            .pump(Some(next_at), IDLE)
            .map_err(io_err("event loop"))?;
        if let Some(s) = setup.as_mut() {
            s.handle_notices(engine);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    report.duration_s = elapsed;
    report.achieved_pps = if elapsed > 0.0 {
        engine.counters.sent as f64 / elapsed
    } else {
        0.0
    };
    let drain_end = Instant::now() + DRAIN;
    while engine.seq.received() < engine.counters.sent
        && Instant::now() < drain_end
        && !stop.load(Ordering::Relaxed)
    {
        engine
            .pump(None, Duration::from_millis(5))
            .map_err(io_err("event loop"))?;
        if let Some(s) = setup.as_mut() {
            s.handle_notices(engine);
        }
    }
    // Let echoes in flight reach the peers' counters.
    let _ = engine.pump(None, Duration::ZERO);
    Ok(())
}

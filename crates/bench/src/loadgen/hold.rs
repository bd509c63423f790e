//! `--hold`: allocations kept alive for a memory measurement.
//!
//! Sessions are set up up to each milestone in turn; at each, a JSON line
//! goes to stdout and, with `--step`, the generator waits for a line on
//! stdin before going on, so the orchestrator can read the server's RSS
//! with exactly that many allocations. After the last milestone the
//! allocations are kept (and refreshed) until stdin closes or a signal.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::engine::{Engine, Path};
use super::setup::Setup;
use super::{io_err, print_json_line, secs};
use super::{LoadgenArgs, LoadgenError, LoadgenReport, Progress, ServerUrl};

const IDLE: Duration = Duration::from_millis(20);
const DEFAULT_PEERS: u32 = 16;

/// Lines from stdin; `None` at its end.
fn stdin_lines() -> mpsc::Receiver<Option<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) => {
                    if tx.send(Some(line.trim().to_owned())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

fn milestones(args: &LoadgenArgs) -> Vec<usize> {
    let n = args.allocations as usize;
    let mut m: Vec<usize> = args
        .milestones
        .iter()
        .map(|&x| x as usize)
        .filter(|&x| x > 0 && x < n)
        .collect();
    m.push(n);
    m.sort_unstable();
    m.dedup();
    m
}

pub(super) fn run(
    args: &LoadgenArgs,
    server: ServerUrl,
    stop: &AtomicBool,
) -> Result<LoadgenReport, LoadgenError> {
    let n = args.allocations as usize;
    let mut engine =
        Engine::new(Path::Relay, server.kind, n, 32, 0).map_err(io_err("event loop"))?;
    let peer_ip = if server.addr.ip().is_loopback() {
        server.addr.ip()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    };
    let targets = (0..args.peers.unwrap_or(DEFAULT_PEERS).max(1))
        .map(|_| engine.add_peer(peer_ip))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err("echo peer socket"))?;
    let mut setup = Setup::new(args, server, targets);
    let stages = milestones(args);
    let lines = stdin_lines();

    let started = Instant::now();
    let mut stage = 0;
    let mut stage_started = started;
    let mut announced = false;
    let mut waiting = false;
    let mut holding = false;
    let mut stdin_closed = false;
    let mut setup_s = 0.0;
    while !stop.load(Ordering::Relaxed) {
        let limit = stages[stage];
        if !waiting && !holding {
            setup.start_more(&mut engine, limit);
        }
        engine.pump(None, IDLE).map_err(io_err("event loop"))?;
        setup.handle_notices(&mut engine);
        if !announced
            && setup.settled() < limit
            && stage_started.elapsed() > secs(args.setup_timeout)
        {
            setup.give_up(&mut engine);
        }
        if !announced && setup.settled() >= limit {
            announced = true;
            setup_s = started.elapsed().as_secs_f64();
            let last = stage + 1 == stages.len();
            let progress = Progress {
                event: if last { "holding" } else { "milestone" }.into(),
                allocations: u32::try_from(setup.ready).unwrap_or(u32::MAX),
                failed: u32::try_from(setup.failed).unwrap_or(u32::MAX),
                elapsed_s: setup_s,
            };
            print_json_line(&progress).map_err(io_err("stdout"))?;
            if last {
                holding = true;
            } else if args.step {
                waiting = true;
            } else {
                stage += 1;
                stage_started = Instant::now();
                announced = false;
            }
        }
        while let Ok(line) = lines.try_recv() {
            match line {
                Some(_) if waiting => {
                    waiting = false;
                    stage += 1;
                    stage_started = Instant::now();
                    announced = false;
                }
                Some(_) => {}
                None => stdin_closed = true,
            }
        }
        if stdin_closed && (holding || waiting) {
            break;
        }
    }
    Ok(LoadgenReport {
        mode: "hold".into(),
        transport: server.kind.name().into(),
        server: Some(server.to_string()),
        allocations: u32::try_from(n).unwrap_or(u32::MAX),
        ready: u32::try_from(setup.ready).unwrap_or(u32::MAX),
        failed: u32::try_from(setup.failed).unwrap_or(u32::MAX),
        setup_s,
        errors: setup.errors,
        ..LoadgenReport::default()
    })
}

//! Scaling: each server with 1 and 2 relay threads (ours: shards; coturn:
//! `--relay-threads`), on one fresh server per thread count, our generator
//! offering UDP 120 B at rising rates, a few seconds each, until the loss
//! reaches 0.1 % (or the generator cannot offer the rate): the highest
//! rate held at < 0.1 % loss. Each step is one measurement (no repeats):
//! see docs/performance.md for the noise.

use super::traffic::{fill_traffic, loadgen_limit, run_loadgen, traffic_flags};
use super::{error_lines, note_command, servers, Snapshot};
use crate::loadgen::LinkKind;
use crate::orchestrate::report::{int, num, Row, Table};
use crate::orchestrate::servers::{Auth, Server};
use crate::orchestrate::{BenchError, Ctx};

/// Loss (fraction of sent) at or above which a rate is not held.
const MAX_LOSS: f64 = 0.001;
/// Payload bytes.
const SIZE: u32 = 120;

pub(super) fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    if !ctx.filter.allows("scaling", "udp") {
        return Ok(());
    }
    let (rates, secs): (&[u32], f64) = if ctx.quick {
        (&[2000], 1.0)
    } else {
        (
            &[
                10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000, 120_000, 150_000,
                200_000,
            ],
            3.0,
        )
    };
    println!(
        "\n== scaling: UDP {SIZE} B, 100 allocations, offered rate stepped up ({secs} s a step) until the loss reaches {} %; 1 and 2 relay threads",
        MAX_LOSS * 100.0
    );
    let mut rows = Vec::new();
    let mut held = Vec::new();
    for kind in servers(ctx) {
        for threads in [1u32, 2] {
            let mut server = match Server::start_threads(ctx, kind, Auth::Static, Some(threads)) {
                Ok(s) => s,
                Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                Err(e) => {
                    let row = Row {
                        scenario: format!("scaling-udp-{SIZE}-{threads}t"),
                        kind: "scaling".into(),
                        transport: "udp".into(),
                        server: kind.name().into(),
                        threads: Some(threads),
                        error: Some(e.to_string()),
                        ..Row::default()
                    };
                    ctx.doc.rows.push(row.clone());
                    rows.push(row);
                    continue;
                }
            };
            note_command(ctx, &server);
            let mut best = None;
            for &pps in rates {
                let row = step(ctx, &mut server, threads, pps, secs)?;
                let sent = row.sent.unwrap_or(0).max(1) as f64;
                let loss = row.lost.unwrap_or(0) as f64 / sent;
                let offered = row.achieved_pps.unwrap_or(0.0) >= 0.95 * f64::from(pps);
                let ok = row.ok && loss < MAX_LOSS && offered;
                let generator_limited = row.ok && !offered;
                ctx.doc.rows.push(row.clone());
                rows.push(row);
                if ok {
                    best = Some(pps);
                } else {
                    if generator_limited {
                        println!(
                            "{} {threads} thread(s): the generator could not offer {pps}/s: the limit is ours, not the server's",
                            kind.name()
                        );
                    }
                    break;
                }
            }
            held.push((kind.name(), threads, best));
        }
    }
    print(&rows);
    for (name, threads, best) in held {
        match best {
            Some(p) => println!(
                "highest rate held at < {} % loss: {name}, {threads} thread(s): {p} packets/s",
                MAX_LOSS * 100.0
            ),
            None => println!("highest rate held: {name}, {threads} thread(s): none of the steps"),
        }
    }
    Ok(())
}

/// One rate on a running server: the generator's report and the server's
/// CPU-seconds meanwhile.
fn step(
    ctx: &mut Ctx,
    server: &mut Server,
    threads: u32,
    pps: u32,
    secs: f64,
) -> Result<Row, BenchError> {
    let mut row = Row {
        scenario: format!("scaling-udp-{SIZE}-{threads}t-{pps}pps"),
        kind: "scaling".into(),
        transport: "udp".into(),
        server: server.kind.name().into(),
        threads: Some(threads),
        size: Some(SIZE),
        pps: Some(pps),
        ..Row::default()
    };
    let flags = traffic_flags(
        ctx,
        "relay",
        Some(server.url(LinkKind::Udp)),
        SIZE,
        pps,
        secs,
    );
    let cpu0 = server.cpu_s()?;
    let before = Snapshot::take(ctx);
    let t0 = std::time::Instant::now();
    let got =
        run_loadgen(ctx, &flags, loadgen_limit(secs)).and_then(|rep| fill_traffic(&mut row, &rep));
    row.seconds = Some(t0.elapsed().as_secs_f64());
    match got {
        Ok(()) => row.ok = true,
        Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
        Err(e) => row.error = Some(e.to_string()),
    }
    server.check_alive()?;
    let cpu = server.cpu_s()? - cpu0;
    Snapshot::fill(Snapshot::take(ctx), before, cpu, &mut row);
    row.cpu_s = Some(cpu);
    row.peak_rss_kb = server.peak_rss_kb().ok();
    if let Some(m) = row.relayed {
        row.msgs_per_cpu_s = (cpu > 0.0).then(|| m as f64 / cpu);
    }
    Ok(row)
}

fn print(rows: &[Row]) {
    let mut t = Table::new(&[
        "server",
        "threads",
        "offered",
        "achieved",
        "sent",
        "lost",
        "loss_%",
        "cpu_s",
        "cpu/s",
        "msgs/cpu_s",
        "p50_us",
        "p99_us",
    ]);
    for r in rows.iter().filter(|r| r.ok) {
        let sent = r.sent.unwrap_or(0).max(1) as f64;
        let secs = r.seconds.unwrap_or(0.0);
        t.push(vec![
            r.server.clone(),
            int(r.threads.map(u64::from)),
            int(r.pps.map(u64::from)),
            num(r.achieved_pps, 0),
            int(r.sent),
            int(r.lost),
            num(r.lost.map(|l| 100.0 * l as f64 / sent), 3),
            num(r.cpu_s, 2),
            num(r.cpu_s.filter(|_| secs > 0.0).map(|c| c / secs), 2),
            num(r.msgs_per_cpu_s, 0),
            num(r.rtt_us.as_ref().map(|p| p.p50), 1),
            num(r.rtt_us.as_ref().map(|p| p.p99), 1),
        ]);
    }
    print!("{}", t.render());
    error_lines(rows);
}

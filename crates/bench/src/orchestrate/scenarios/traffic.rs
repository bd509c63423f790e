//! Our load generator at fixed rates: relay (against coturn and ours),
//! direct (the baseline), and client to client through our relay.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{error_lines, measure, ratio_line, servers, Snapshot};
use crate::loadgen::{LinkKind, LoadgenReport, Percentiles, ServerUrl};
use crate::orchestrate::children::{tail, ChildGuard};
use crate::orchestrate::report::{int, mb, num, Added, Row, Table};
use crate::orchestrate::servers::{Auth, Server, ServerKind};
use crate::orchestrate::{BenchError, Ctx};

/// Allocations of the rate-based loadgen scenarios.
const LOADGEN_ALLOCATIONS: u32 = 100;

/// Flags of a rate-based loadgen run.
pub(super) fn traffic_flags(
    ctx: &Ctx,
    mode: &str,
    url: Option<ServerUrl>,
    size: u32,
    pps: u32,
    secs: f64,
) -> Vec<String> {
    let mut f = vec!["--mode".to_owned(), mode.to_owned()];
    if ctx.busy_poll {
        f.push("--busy-poll".into());
    }
    if let Some(u) = url {
        f.extend(["--server".into(), u.to_string()]);
    }
    f.extend([
        "--allocations".into(),
        LOADGEN_ALLOCATIONS.to_string(),
        "--pps".into(),
        pps.to_string(),
        "--size".into(),
        size.to_string(),
        "--duration".into(),
        secs.to_string(),
        "--setup-timeout".into(),
        "20".into(),
    ]);
    f
}

/// Runs `onionrtc bench loadgen FLAGS` to completion and reads its report.
pub(super) fn run_loadgen(
    ctx: &mut Ctx,
    flags: &[String],
    limit: Duration,
) -> Result<LoadgenReport, BenchError> {
    ctx.serial += 1;
    let out = ctx.work.join(format!("loadgen-{}.out", ctx.serial));
    let err = ctx.work.join(format!("loadgen-{}.err", ctx.serial));
    let open = |p: &std::path::Path| {
        std::fs::File::create(p)
            .map_err(|e| BenchError::io(format!("cannot create {}", p.display()), e))
    };
    let mut cmd = Command::new(&ctx.exe);
    cmd.args(["bench", "loadgen"])
        .args(flags)
        .stdin(Stdio::null())
        .stdout(open(&out)?)
        .stderr(open(&err)?);
    let mut child = ChildGuard::spawn("load generator", &mut cmd)?;
    let status = child.wait(limit, &ctx.stop)?;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<LoadgenReport>(l).ok())
        .ok_or_else(|| BenchError::Loadgen {
            status: status.to_string(),
            stderr: tail(&err, 10),
        })
}

pub(super) fn fill_traffic(row: &mut Row, rep: &LoadgenReport) -> Result<(), BenchError> {
    row.sent = Some(rep.sent);
    row.received = Some(rep.received);
    row.lost = Some(rep.lost);
    row.rtt_us = rep.rtt_us;
    row.to_peer_us = rep.to_peer_us;
    row.from_peer_us = rep.from_peer_us;
    row.achieved_pps = Some(rep.achieved_pps);
    row.generator_cpu_s = Some(rep.cpu_s);
    row.allocations = Some(u64::from(rep.ready));
    row.relayed = match rep.mode.as_str() {
        "relay" => Some(rep.peer_received + rep.received),
        // Each probe crosses two allocations each way.
        "c2c" => Some(2 * (rep.echoed + rep.received)),
        _ => None,
    };
    let mut notes = Vec::new();
    if rep.failed > 0 {
        notes.push(format!(
            "{} of {} allocations failed",
            rep.failed, rep.allocations
        ));
    }
    if rep.send_dropped > 0 {
        notes.push(format!(
            "{} sends dropped by the local socket",
            rep.send_dropped
        ));
    }
    for (e, n) in rep.errors.iter().take(4) {
        notes.push(format!("{e} (×{n})"));
    }
    if !notes.is_empty() {
        row.note = Some(notes.join("; "));
    }
    if rep.received == 0 {
        return Err(BenchError::Loadgen {
            status: "no probe came back".into(),
            stderr: row.note.clone().unwrap_or_default(),
        });
    }
    Ok(())
}

pub(super) fn loadgen_limit(secs: f64) -> Duration {
    Duration::from_secs_f64(secs + 20.0 + 30.0)
}

pub(super) fn loadgen_matrix(ctx: &mut Ctx) -> Result<(), BenchError> {
    let (rates, secs): (&[u32], f64) = if ctx.quick {
        (&[5000], 1.0)
    } else {
        (&[5000, 20_000], 5.0)
    };
    if ctx.filter.allows("loadgen", "udp") {
        for size in [120u32, 1200] {
            for &pps in rates {
                traffic_scenario(ctx, LinkKind::Udp, size, pps, secs)?;
            }
        }
    }
    if !ctx.quick {
        for t in [LinkKind::Tcp, LinkKind::Tls] {
            if ctx.filter.allows("loadgen", t.name()) {
                traffic_scenario(ctx, t, 120, 20_000, secs)?;
            }
        }
    }
    Ok(())
}

/// The direct round trip of `size`/`pps` measured earlier in this run.
fn direct_rtt(ctx: &Ctx, size: u32, pps: u32) -> Option<Percentiles> {
    ctx.doc
        .rows
        .iter()
        .find(|r| r.ok && r.server == "direct" && r.size == Some(size) && r.pps == Some(pps))
        .and_then(|r| r.rtt_us)
}

fn traffic_scenario(
    ctx: &mut Ctx,
    t: LinkKind,
    size: u32,
    pps: u32,
    secs: f64,
) -> Result<(), BenchError> {
    println!(
        "\n== loadgen {} {size} B at {pps} packets/s for {secs} s, {LOADGEN_ALLOCATIONS} allocations (permission + channel each) to our echo peers",
        t.name().to_uppercase()
    );
    let scenario = format!("loadgen-{}-{size}-{pps}pps", t.name());
    let base = Row {
        scenario: scenario.clone(),
        kind: "loadgen".into(),
        transport: t.name().into(),
        size: Some(size),
        pps: Some(pps),
        ..Row::default()
    };
    let mut rows = Vec::new();
    if t == LinkKind::Udp {
        // The same generator without relay: its round trip is the baseline.
        let mut row = Row {
            server: "direct".into(),
            ..base.clone()
        };
        let flags = traffic_flags(ctx, "direct", None, size, pps, secs);
        let before = Snapshot::take(ctx);
        let t0 = Instant::now();
        let got = run_loadgen(ctx, &flags, loadgen_limit(secs));
        row.seconds = Some(t0.elapsed().as_secs_f64());
        Snapshot::fill(Snapshot::take(ctx), before, 0.0, &mut row);
        match got {
            Ok(rep) => match fill_traffic(&mut row, &rep) {
                Ok(()) => row.ok = true,
                Err(e) => row.error = Some(e.to_string()),
            },
            Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
            Err(e) => row.error = Some(e.to_string()),
        }
        ctx.doc.rows.push(row.clone());
        rows.push(row);
    }
    let direct = direct_rtt(ctx, size, pps);
    for kind in servers(ctx) {
        let mut load = |ctx: &mut Ctx, server: &Server, row: &mut Row| {
            let flags = traffic_flags(ctx, "relay", Some(server.url(t)), size, pps, secs);
            let rep = run_loadgen(ctx, &flags, loadgen_limit(secs))?;
            fill_traffic(row, &rep)
        };
        let mut row = measure(ctx, kind, Auth::Static, base.clone(), &mut load)?;
        if let (Some(r), Some(d)) = (row.rtt_us.as_ref(), direct.as_ref()) {
            row.added_us = Some(Added::between(r, d));
        }
        ctx.doc.rows.push(row.clone());
        rows.push(row);
    }
    print_traffic(&rows);
    Ok(())
}

fn print_traffic(rows: &[Row]) {
    let mut t = Table::new(&[
        "server",
        "sent",
        "recv",
        "lost",
        "pps",
        "relayed",
        "cpu_s",
        "msgs/cpu_s",
        "peak_MB",
        "p50_us",
        "p99_us",
        "p99.9_us",
        "+p50",
        "+p99",
        "+p99.9",
    ]);
    for r in rows.iter().filter(|r| r.ok) {
        let rtt = r.rtt_us.as_ref();
        let add = r.added_us.as_ref();
        t.push(vec![
            r.server.clone(),
            int(r.sent),
            int(r.received),
            int(r.lost),
            num(r.achieved_pps, 0),
            int(r.relayed),
            num(r.cpu_s, 2),
            num(r.msgs_per_cpu_s, 0),
            mb(r.peak_rss_kb),
            num(rtt.map(|p| p.p50), 1),
            num(rtt.map(|p| p.p99), 1),
            num(rtt.map(|p| p.p999), 1),
            num(add.map(|a| a.p50), 1),
            num(add.map(|a| a.p99), 1),
            num(add.map(|a| a.p999), 1),
        ]);
    }
    print!("{}", t.render());
    error_lines(rows);
    ratio_line(rows, "messages per CPU-second", |r| r.msgs_per_cpu_s);
}

pub(super) fn client_to_client(ctx: &mut Ctx) -> Result<(), BenchError> {
    if !ctx.filter.allows("c2c", "udp") || !ctx.filter.allows_server("onionrtc") {
        return Ok(());
    }
    let (pps, secs) = if ctx.quick {
        (5000, 1.0)
    } else {
        (20_000, 5.0)
    };
    let size = 120;
    println!(
        "\n== c2c: client to client through our relay, {} pairs of allocations bound to each other, {size} B at {pps} packets/s for {secs} s (each probe crosses the relay twice each way; reported separately, not compared)",
        LOADGEN_ALLOCATIONS / 2
    );
    ctx.doc
        .skipped
        .push("c2c against coturn: not run (the comparison relays to an external peer)".into());
    let base = Row {
        scenario: format!("c2c-udp-{size}-{pps}pps"),
        kind: "c2c".into(),
        transport: "udp".into(),
        size: Some(size),
        pps: Some(pps),
        ..Row::default()
    };
    let mut load = |ctx: &mut Ctx, server: &Server, row: &mut Row| {
        let flags = traffic_flags(ctx, "c2c", Some(server.url(LinkKind::Udp)), size, pps, secs);
        let rep = run_loadgen(ctx, &flags, loadgen_limit(secs))?;
        fill_traffic(row, &rep)
    };
    let mut row = measure(ctx, ServerKind::Ours, Auth::Static, base, &mut load)?;
    if let (Some(r), Some(d)) = (row.rtt_us.as_ref(), direct_rtt(ctx, size, pps).as_ref()) {
        row.added_us = Some(Added::between(r, d));
    }
    let rows = vec![row];
    print_traffic(&rows);
    ctx.doc.rows.extend(rows);
    Ok(())
}

//! Memory: allocations with a permission and a channel each, held by the
//! load generator, and the server's VmRSS at each step.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{error_lines, note_command, servers};
use crate::loadgen::{LinkKind, LoadgenReport, Progress};
use crate::orchestrate::children::{tail, ChildGuard};
use crate::orchestrate::report::{int, mb, num, Row, Table};
use crate::orchestrate::servers::{Auth, Server, ServerKind};
use crate::orchestrate::{BenchError, Ctx};

/// How long the RSS may settle after a memory step before it is read.
const SETTLE: Duration = Duration::from_millis(500);

pub(super) fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    if !ctx.filter.allows("memory", "udp") {
        return Ok(());
    }
    let steps: &[u32] = if ctx.quick {
        &[100, 500, 1000]
    } else {
        &[1000, 5000, 10_000]
    };
    let list: Vec<String> = steps.iter().map(u32::to_string).collect();
    println!(
        "\n== memory: {} UDP allocations, each with a permission and a channel, held by the load generator; the server's VmRSS at each step",
        list.join("/")
    );
    let mut rows = Vec::new();
    for kind in servers(ctx) {
        let got = memory_for(ctx, kind, steps);
        match got {
            Ok(r) => rows.extend(r),
            Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
            Err(e) => rows.push(Row {
                scenario: "memory".into(),
                kind: "memory".into(),
                transport: "udp".into(),
                server: kind.name().into(),
                error: Some(e.to_string()),
                ..Row::default()
            }),
        }
    }
    print_memory(&rows);
    ctx.doc.rows.extend(rows);
    Ok(())
}

fn memory_for(ctx: &mut Ctx, kind: ServerKind, steps: &[u32]) -> Result<Vec<Row>, BenchError> {
    let mut server = Server::start(ctx, kind, Auth::Static)?;
    note_command(ctx, &server);
    let row = |step: u64, rss: u64| Row {
        scenario: format!("memory-{step}"),
        kind: "memory".into(),
        transport: "udp".into(),
        server: kind.name().into(),
        ok: true,
        allocations: Some(step),
        rss_kb: Some(rss),
        ..Row::default()
    };
    let mut rows = vec![row(0, server.rss_kb()?)];
    let last = steps.iter().copied().max().unwrap_or(0);
    let mut flags = vec![
        "--hold".to_owned(),
        "--step".into(),
        "--server".into(),
        server.url(LinkKind::Udp).to_string(),
        "--allocations".into(),
        last.to_string(),
        "--milestones".into(),
    ];
    flags.push(
        steps
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    ctx.serial += 1;
    let err = ctx.work.join(format!("loadgen-{}.err", ctx.serial));
    let err_file = std::fs::File::create(&err)
        .map_err(|e| BenchError::io(format!("cannot create {}", err.display()), e))?;
    let mut cmd = Command::new(&ctx.exe);
    cmd.args(["bench", "loadgen"])
        .args(&flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err_file);
    let mut child = ChildGuard::spawn("load generator", &mut cmd)?;
    let mut stdin = child.child_mut().stdin.take();
    let stdout = child.child_mut().stdout.take();
    let (tx, rx) = mpsc::channel();
    if let Some(out) = stdout {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let limit = Duration::from_secs(if ctx.quick { 60 } else { 240 });
    let deadline = Instant::now() + limit;
    let mut final_report = None;
    let mut t_last = Instant::now();
    loop {
        if ctx.interrupted() {
            return Err(BenchError::Interrupted);
        }
        server.check_alive()?;
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout(format!(
                "the memory scenario did not finish within {} s",
                limit.as_secs()
            )));
        }
        let line = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Ok(p) = serde_json::from_str::<Progress>(&line) {
            std::thread::sleep(SETTLE);
            let mut r = row(u64::from(p.allocations), server.rss_kb()?);
            r.scenario = format!(
                "memory-{}",
                steps
                    .iter()
                    .find(|&&s| s >= p.allocations)
                    .copied()
                    .unwrap_or(p.allocations)
            );
            r.peak_rss_kb = server.peak_rss_kb().ok();
            r.seconds = Some(t_last.elapsed().as_secs_f64());
            t_last = Instant::now();
            if p.failed > 0 {
                r.note = Some(format!("{} allocations failed", p.failed));
            }
            rows.push(r);
            if p.event == "holding" {
                stdin = None;
            } else if let Some(s) = stdin.as_mut() {
                let _ = writeln!(s, "next");
                let _ = s.flush();
            }
        } else if let Ok(rep) = serde_json::from_str::<LoadgenReport>(&line) {
            final_report = Some(rep);
        }
    }
    drop(stdin);
    let _ = child.wait(Duration::from_secs(10), &ctx.stop);
    if let Some(rep) = final_report {
        if let Some(r) = rows.last_mut() {
            let errors: Vec<String> = rep
                .errors
                .iter()
                .take(4)
                .map(|(e, n)| format!("{e} (×{n})"))
                .collect();
            if !errors.is_empty() {
                let note = r.note.take().map(|n| format!("{n}: ")).unwrap_or_default();
                r.note = Some(format!("{note}{}", errors.join("; ")));
            }
        }
    }
    if rows.len() < 2 {
        return Err(BenchError::Loadgen {
            status: "no memory step reached".into(),
            stderr: tail(&err, 10),
        });
    }
    Ok(rows)
}

fn print_memory(rows: &[Row]) {
    let mut t = Table::new(&[
        "server",
        "allocations",
        "rss_MB",
        "KB/alloc (step)",
        "peak_MB",
    ]);
    let mut prev: Option<&Row> = None;
    for r in rows.iter().filter(|r| r.ok) {
        let step = match prev {
            Some(p) if p.server == r.server => {
                let da = r.allocations.unwrap_or(0) as f64 - p.allocations.unwrap_or(0) as f64;
                let dr = r.rss_kb.unwrap_or(0) as f64 - p.rss_kb.unwrap_or(0) as f64;
                (da > 0.0).then(|| dr / da)
            }
            _ => None,
        };
        t.push(vec![
            r.server.clone(),
            int(r.allocations),
            mb(r.rss_kb),
            num(step, 2),
            mb(r.peak_rss_kb),
        ]);
        prev = Some(r);
    }
    print!("{}", t.render());
    error_lines(rows);
    let top = |server: &str| {
        rows.iter()
            .filter(|r| r.ok && r.server == server)
            .max_by_key(|r| r.allocations)
            .and_then(|r| r.rss_kb)
            .map(|k| k as f64)
    };
    match (top("onionrtc"), top("coturn")) {
        (Some(a), Some(b)) if b > 0.0 => {
            println!("ratio onionrtc/coturn, RSS at the last step: {:.2}", a / b)
        }
        _ => println!("ratio onionrtc/coturn, RSS at the last step: n/a"),
    }
}

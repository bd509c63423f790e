//! `turnutils_uclient` over UDP, TCP and TLS, `turnutils_peer` as the peer.

use std::time::Duration;

use super::{error_lines, measure, ratio_line, servers};
use crate::loadgen::LinkKind;
use crate::orchestrate::children::{tail, ChildGuard};
use crate::orchestrate::report::{int, mb, num, Row, Table};
use crate::orchestrate::servers::{Auth, Server, PASSWORD, USER};
use crate::orchestrate::uclient::{self, UclientPeer};
use crate::orchestrate::{BenchError, Ctx};

pub(super) fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    let any = ["udp", "tcp", "tls"]
        .iter()
        .any(|t| ctx.filter.allows("uclient", t));
    if !ctx.have_uclient || !any {
        return Ok(());
    }
    let sizes: &[u32] = if ctx.quick { &[120] } else { &[120, 1200] };
    if ctx.quick {
        ctx.doc
            .skipped
            .push("uclient at 1200 bytes: full run only (--quick)".into());
    }
    for t in [LinkKind::Udp, LinkKind::Tcp, LinkKind::Tls] {
        for &size in sizes {
            if !ctx.filter.allows("uclient", t.name()) {
                continue;
            }
            let flags = uclient::load_flags(t, size, ctx.quick);
            println!(
                "\n== uclient {} {size} B: turnutils_uclient -u {USER} -w {PASSWORD} -e 127.0.0.1 -r PEERPORT {} -p PORT 127.0.0.1",
                t.name().to_uppercase(),
                flags.join(" ")
            );
            let mut rows = Vec::new();
            for kind in servers(ctx) {
                ensure_peer(ctx)?;
                let base = Row {
                    scenario: format!("uclient-{}-{size}", t.name()),
                    kind: "uclient".into(),
                    transport: t.name().into(),
                    size: Some(size),
                    ..Row::default()
                };
                let mut load = |ctx: &mut Ctx, server: &Server, row: &mut Row| {
                    run_uclient(ctx, server, t, &flags, row)
                };
                rows.push(measure(ctx, kind, Auth::Static, base, &mut load)?);
            }
            print_uclient(&rows);
            ctx.doc.rows.extend(rows);
        }
    }
    Ok(())
}

fn ensure_peer(ctx: &mut Ctx) -> Result<(), BenchError> {
    if ctx.peer.as_mut().is_some_and(UclientPeer::alive) {
        return Ok(());
    }
    ctx.serial += 1;
    let log = ctx.work.join(format!("turnutils_peer-{}.log", ctx.serial));
    ctx.peer = Some(UclientPeer::start(&log)?);
    Ok(())
}

fn run_uclient(
    ctx: &mut Ctx,
    server: &Server,
    t: LinkKind,
    flags: &[String],
    row: &mut Row,
) -> Result<(), BenchError> {
    let peer_port = ctx.peer.as_ref().map_or(0, |p| p.port);
    ctx.serial += 1;
    let log = ctx.work.join(format!("uclient-{}.log", ctx.serial));
    let mut cmd = uclient::command(server.port(t), peer_port, flags);
    let mut child = ChildGuard::spawn_logged("turnutils_uclient", &mut cmd, &log)?;
    let limit = Duration::from_secs(if ctx.quick { 90 } else { 300 });
    let status = child.wait(limit, &ctx.stop)?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let r = uclient::parse(&text).ok_or_else(|| BenchError::Loadgen {
        status: status.to_string(),
        stderr: format!("turnutils_uclient printed no totals:\n{}", tail(&log, 10)),
    })?;
    row.sent = Some(r.sent);
    row.received = Some(r.received);
    row.lost = Some(r.lost);
    row.relayed = Some(r.sent + r.received);
    row.rtt_avg_ms = r.rtt_avg_ms;
    if r.received == 0 {
        return Err(BenchError::Loadgen {
            status: status.to_string(),
            stderr: format!("no message came back:\n{}", tail(&log, 10)),
        });
    }
    Ok(())
}

fn print_uclient(rows: &[Row]) {
    let mut t = Table::new(&[
        "server",
        "sent",
        "recv",
        "lost",
        "relayed",
        "cpu_s",
        "msgs/cpu_s",
        "peak_MB",
        "rtt_avg_ms",
    ]);
    for r in rows.iter().filter(|r| r.ok) {
        t.push(vec![
            r.server.clone(),
            int(r.sent),
            int(r.received),
            int(r.lost),
            int(r.relayed),
            num(r.cpu_s, 2),
            num(r.msgs_per_cpu_s, 0),
            mb(r.peak_rss_kb),
            num(r.rtt_avg_ms, 2),
        ]);
    }
    print!("{}", t.render());
    error_lines(rows);
    ratio_line(rows, "messages per CPU-second", |r| r.msgs_per_cpu_s);
}

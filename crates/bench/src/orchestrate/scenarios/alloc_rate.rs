//! Allocations per second with TURN REST credentials.

use super::traffic::{loadgen_limit, run_loadgen};
use super::{error_lines, measure, ratio_line, servers};
use crate::loadgen::LinkKind;
use crate::orchestrate::report::{int, mb, num, Row, Table};
use crate::orchestrate::servers::{Auth, Server, REST_SECRET};
use crate::orchestrate::{BenchError, Ctx};

/// Allocation setups in flight at once.
const ALLOC_RATE_WINDOW: u32 = 64;

pub(super) fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    if !ctx.filter.allows("alloc-rate", "udp") {
        return Ok(());
    }
    let secs = if ctx.quick { 1.0 } else { 5.0 };
    println!(
        "\n== alloc-rate: UDP allocations with fresh TURN REST credentials for {secs} s, {ALLOC_RATE_WINDOW} in flight, each deleted once made (401, Allocate, Refresh 0)"
    );
    let mut rows = Vec::new();
    for kind in servers(ctx) {
        let base = Row {
            scenario: "alloc-rate-udp".into(),
            kind: "alloc-rate".into(),
            transport: "udp".into(),
            ..Row::default()
        };
        let mut load = |ctx: &mut Ctx, server: &Server, row: &mut Row| {
            let flags = vec![
                "--measure".to_owned(),
                "alloc-rate".into(),
                "--server".into(),
                server.url(LinkKind::Udp).to_string(),
                "--rest-secret".into(),
                REST_SECRET.into(),
                "--allocations".into(),
                ALLOC_RATE_WINDOW.to_string(),
                "--duration".into(),
                secs.to_string(),
            ];
            let rep = run_loadgen(ctx, &flags, loadgen_limit(secs))?;
            row.allocations = Some(rep.allocations_made);
            row.alloc_per_s = rep.alloc_per_s;
            row.generator_cpu_s = Some(rep.cpu_s);
            let errors: Vec<String> = rep
                .errors
                .iter()
                .take(4)
                .map(|(e, n)| format!("{e} (×{n})"))
                .collect();
            if !errors.is_empty() {
                row.note = Some(errors.join("; "));
            }
            if rep.allocations_made == 0 {
                return Err(BenchError::Loadgen {
                    status: "no allocation made".into(),
                    stderr: row.note.clone().unwrap_or_default(),
                });
            }
            Ok(())
        };
        rows.push(measure(ctx, kind, Auth::Rest, base, &mut load)?);
    }
    let mut t = Table::new(&[
        "server",
        "allocations",
        "alloc/s",
        "cpu_s",
        "alloc/cpu_s",
        "peak_MB",
    ]);
    for r in rows.iter().filter(|r| r.ok) {
        let per_cpu = match (r.allocations, r.cpu_s) {
            (Some(a), Some(c)) if c > 0.0 => Some(a as f64 / c),
            _ => None,
        };
        t.push(vec![
            r.server.clone(),
            int(r.allocations),
            num(r.alloc_per_s, 0),
            num(r.cpu_s, 2),
            num(per_cpu, 0),
            mb(r.peak_rss_kb),
        ]);
    }
    print!("{}", t.render());
    error_lines(&rows);
    ratio_line(&rows, "allocations per second", |r| r.alloc_per_s);
    ctx.doc.rows.extend(rows);
    Ok(())
}

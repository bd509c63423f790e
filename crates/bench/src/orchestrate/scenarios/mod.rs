//! The scenarios: each runs its load against coturn, then ours, every
//! server started fresh, and prints its table as soon as it is done.

mod alloc_rate;
mod memory;
mod scaling;
mod traffic;
mod uclient_matrix;

use std::time::Instant;

use super::report::Row;
use super::servers::REST_SECRET;
use super::servers::{coturn_command, our_config, Auth, Server, ServerKind};
use super::{BenchError, Ctx};

/// Prints the machine and the exact server command lines.
pub(super) fn print_header(ctx: &Ctx) {
    let m = &ctx.doc.machine;
    println!(
        "onionrtc bench relay{} — onionrtc {} vs {}",
        if ctx.quick { " --quick" } else { "" },
        m.onionrtc,
        m.coturn.as_deref().unwrap_or("coturn (not installed)")
    );
    println!(
        "machine: {} × {}, Linux {}, RLIMIT_NOFILE {}",
        m.cpus, m.cpu, m.kernel, m.fd_limit
    );
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("work directory: {}", ctx.work.display());
    if ctx.busy_poll {
        println!(
            "--busy-poll: our load generator never sleeps while it sends (it keeps one CPU busy)"
        );
    }
    let w = &ctx.work;
    println!("\ncoturn (PORT and TLSPORT are free ports chosen per start; REST scenario: --use-auth-secret --static-auth-secret={REST_SECRET} instead of --lt-cred-mech --user):");
    // Ports 1 and 2 and serial 0 stand for PORT, TLSPORT and N.
    let c = coturn_command(w, 1, 2, Auth::Static, 0);
    let mut line = format!("  {}", c.get_program().to_string_lossy());
    for a in c.get_args() {
        let a = match a.to_string_lossy().as_ref() {
            "--listening-port=1" => "--listening-port=PORT".to_owned(),
            "--tls-listening-port=2" => "--tls-listening-port=TLSPORT".to_owned(),
            other => other.replace("coturn-0.log", "coturn-N.log"),
        };
        line.push(' ');
        line.push_str(&a);
    }
    println!("{line}");
    println!(
        "onionrtc (RUST_LOG=warn; REST scenario adds auth_secrets = [\"{REST_SECRET}\"]):\n  {} relay --config onionrtc-N.toml",
        ctx.exe.display()
    );
    for l in our_config(w, 1, 2, Auth::Static, 1).lines() {
        let l = l.replace(":1\"", ":PORT\"").replace(":2\"", ":TLSPORT\"");
        println!("    {l}");
    }
    if ctx.relay_busy_poll_us > 0 {
        println!(
            "    busy_poll_us = {}   (--relay-busy-poll-us: each shard spins that long after a busy turn)",
            ctx.relay_busy_poll_us
        );
    }
    println!(
        "Messages relayed = sent + received by the clients (loadgen: received by the peer + by the clients);\nCPU = utime + stime of the server process from /proc/PID/stat; peak RSS = VmHWM (fresh server per row)."
    );
}

/// Every scenario the filter allows, in order.
pub(super) fn run_all(ctx: &mut Ctx) -> Result<(), BenchError> {
    uclient_matrix::run(ctx)?;
    traffic::loadgen_matrix(ctx)?;
    memory::run(ctx)?;
    alloc_rate::run(ctx)?;
    traffic::client_to_client(ctx)?;
    scaling::run(ctx)?;
    Ok(())
}

pub(super) fn servers(ctx: &Ctx) -> Vec<ServerKind> {
    let mut v = Vec::new();
    if ctx.have_coturn && ctx.filter.allows_server("coturn") {
        v.push(ServerKind::Coturn);
    }
    if ctx.filter.allows_server("onionrtc") {
        v.push(ServerKind::Ours);
    }
    v
}

pub(super) fn note_command(ctx: &mut Ctx, server: &Server) {
    match server.kind {
        ServerKind::Coturn if ctx.doc.coturn_command.is_none() => {
            ctx.doc.coturn_command = Some(server.command.clone());
        }
        ServerKind::Ours if ctx.doc.onionrtc_command.is_none() => {
            ctx.doc.onionrtc_command = Some(server.command.clone());
            ctx.doc.onionrtc_config = server.config.clone();
        }
        _ => {}
    }
}

/// What a scenario does with its running server.
pub(super) type Load<'a> = &'a mut dyn FnMut(&mut Ctx, &Server, &mut Row) -> Result<(), BenchError>;

/// Starts a fresh `kind` server, runs `load` against it, and fills the
/// server's CPU-seconds and peak RSS into the row. Errors other than an
/// interruption become the row's error.
pub(super) fn measure(
    ctx: &mut Ctx,
    kind: ServerKind,
    auth: Auth,
    mut row: Row,
    load: Load<'_>,
) -> Result<Row, BenchError> {
    row.server = kind.name().into();
    match measure_inner(ctx, kind, auth, &mut row, load) {
        Ok(()) => row.ok = true,
        Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
        Err(e) => {
            row.ok = false;
            row.error = Some(e.to_string());
        }
    }
    if ctx.interrupted() {
        return Err(BenchError::Interrupted);
    }
    Ok(row)
}

fn measure_inner(
    ctx: &mut Ctx,
    kind: ServerKind,
    auth: Auth,
    row: &mut Row,
    load: Load<'_>,
) -> Result<(), BenchError> {
    let mut server = Server::start(ctx, kind, auth)?;
    note_command(ctx, &server);
    let cpu0 = server.cpu_s()?;
    let before = Snapshot::take(ctx);
    let t0 = Instant::now();
    load(ctx, &server, row)?;
    row.seconds = Some(t0.elapsed().as_secs_f64());
    server.check_alive()?;
    let cpu = server.cpu_s()? - cpu0;
    Snapshot::fill(Snapshot::take(ctx), before, cpu, row);
    row.cpu_s = Some(cpu);
    row.peak_rss_kb = server.peak_rss_kb().ok();
    if let Some(m) = row.relayed {
        row.msgs_per_cpu_s = (cpu > 0.0).then(|| m as f64 / cpu);
    }
    Ok(())
}

/// Machine-wide counters around a load, to tell what else ran meanwhile.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    busy: f64,
    ours: f64,
    drops: u64,
}

impl Snapshot {
    /// The machine's busy CPU-seconds, those of this process, its reaped
    /// children (the load generators) and turnutils_peer, and UDP drops.
    pub(super) fn take(ctx: &Ctx) -> Option<Snapshot> {
        let own = crate::procfs::cpu_seconds(std::process::id()).ok()?;
        let children = crate::procfs::reaped_children_seconds().ok()?;
        let peer = ctx
            .peer
            .as_ref()
            .and_then(|p| crate::procfs::cpu_seconds(p.pid()).ok())
            .unwrap_or(0.0);
        Some(Snapshot {
            busy: crate::procfs::machine_busy_seconds().ok()?,
            ours: own + children + peer,
            drops: crate::procfs::udp_rcvbuf_errors().unwrap_or(0),
        })
    }

    /// Fills the row's background CPU (busy time not spent by the server,
    /// the generator, the peer or us) and UDP drops since `before`.
    pub(super) fn fill(
        after: Option<Snapshot>,
        before: Option<Snapshot>,
        server_cpu: f64,
        row: &mut Row,
    ) {
        if let (Some(a), Some(b)) = (after, before) {
            let other = (a.busy - b.busy) - (a.ours - b.ours) - server_cpu;
            row.background_cpu_s = Some(other.max(0.0));
            row.udp_rcvbuf_errors = Some(a.drops.saturating_sub(b.drops));
        }
    }
}

pub(super) fn ratio_line(rows: &[Row], what: &str, f: impl Fn(&Row) -> Option<f64>) {
    let get = |server: &str| {
        rows.iter()
            .find(|r| r.ok && r.server == server)
            .and_then(&f)
    };
    if !rows.iter().any(|r| r.server == "coturn") {
        return;
    }
    match (get("onionrtc"), get("coturn")) {
        (Some(a), Some(b)) if b > 0.0 => println!("ratio onionrtc/coturn, {what}: {:.2}", a / b),
        _ => println!("ratio onionrtc/coturn, {what}: n/a"),
    }
}

pub(super) fn error_lines(rows: &[Row]) {
    for r in rows {
        if let (Some(bg), Some(secs)) = (r.background_cpu_s, r.seconds) {
            if secs > 0.0 && bg / secs > 0.1 {
                println!(
                    "{}: note: other processes used {:.0}% of a CPU meanwhile: its latency and loss figures are disturbed",
                    r.server,
                    100.0 * bg / secs
                );
            }
        }
        if let Some(d) = r.udp_rcvbuf_errors.filter(|&d| d > 0) {
            println!(
                "{}: note: {d} UDP datagrams dropped on full socket receive buffers (machine-wide)",
                r.server
            );
        }
        if let Some(e) = &r.error {
            println!("{}: ERROR {}", r.server, e.replace('\n', "\n    "));
        }
        if let Some(n) = &r.note {
            println!("{}: note: {n}", r.server);
        }
    }
}

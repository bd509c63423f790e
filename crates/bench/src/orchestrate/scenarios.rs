//! The scenarios: each runs its load against coturn, then ours, every
//! server started fresh, and prints its table as soon as it is done.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::children::{tail, ChildGuard};
use super::report::{int, mb, num, Added, Row, Table};
use super::servers::{coturn_command, our_config, Auth, Server, ServerKind};
use super::servers::{PASSWORD, REST_SECRET, USER};
use super::uclient::{self, UclientPeer};
use super::{BenchError, Ctx};
use crate::loadgen::{LinkKind, LoadgenReport, Progress, ServerUrl};

/// Allocations of the rate-based loadgen scenarios.
const LOADGEN_ALLOCATIONS: u32 = 100;
/// Allocation setups in flight at once in the alloc-rate scenario.
const ALLOC_RATE_WINDOW: u32 = 64;
/// How long the RSS may settle after a memory step before it is read.
const SETTLE: Duration = Duration::from_millis(500);

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
    let w = &ctx.work;
    println!("\ncoturn (PORT and TLSPORT are free ports chosen per start; REST scenario: --use-auth-secret --static-auth-secret={REST_SECRET} instead of --lt-cred-mech --user):");
    let c = coturn_command(w, 0, 0, Auth::Static, 0);
    let mut line = format!("  {}", c.get_program().to_string_lossy());
    for a in c.get_args() {
        let a = a
            .to_string_lossy()
            .replace("=0", "=PORT")
            .replace("tls-listening-port=PORT", "tls-listening-port=TLSPORT");
        line.push(' ');
        line.push_str(&a);
    }
    println!("{line}");
    println!(
        "onionrtc (RUST_LOG=warn; REST scenario adds auth_secrets = [\"{REST_SECRET}\"]):\n  {} relay --config onionrtc-N.toml",
        ctx.exe.display()
    );
    for l in our_config(w, 0, 0, Auth::Static).lines() {
        let l = l.replace(":0\"", ":PORT\"");
        println!("    {l}");
    }
    println!(
        "Messages relayed = sent + received by the clients (loadgen: received by the peer + by the clients);\nCPU = utime + stime of the server process from /proc/PID/stat; peak RSS = VmHWM (fresh server per row)."
    );
}

/// Every scenario the filter allows, in order.
pub(super) fn run_all(ctx: &mut Ctx) -> Result<(), BenchError> {
    uclient_matrix(ctx)?;
    loadgen_matrix(ctx)?;
    memory(ctx)?;
    alloc_rate(ctx)?;
    client_to_client(ctx)?;
    Ok(())
}

fn servers(ctx: &Ctx) -> Vec<ServerKind> {
    let mut v = Vec::new();
    if ctx.have_coturn && ctx.filter.allows_server("coturn") {
        v.push(ServerKind::Coturn);
    }
    if ctx.filter.allows_server("onionrtc") {
        v.push(ServerKind::Ours);
    }
    v
}

fn note_command(ctx: &mut Ctx, server: &Server) {
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
type Load<'a> = &'a mut dyn FnMut(&mut Ctx, &Server, &mut Row) -> Result<(), BenchError>;

/// Starts a fresh `kind` server, runs `load` against it, and fills the
/// server's CPU-seconds and peak RSS into the row. Errors other than an
/// interruption become the row's error.
fn measure(
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
struct Snapshot {
    busy: f64,
    ours: f64,
    drops: u64,
}

impl Snapshot {
    /// The machine's busy CPU-seconds, those of this process, its reaped
    /// children (the load generators) and turnutils_peer, and UDP drops.
    fn take(ctx: &Ctx) -> Option<Snapshot> {
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
    fn fill(after: Option<Snapshot>, before: Option<Snapshot>, server_cpu: f64, row: &mut Row) {
        if let (Some(a), Some(b)) = (after, before) {
            let other = (a.busy - b.busy) - (a.ours - b.ours) - server_cpu;
            row.background_cpu_s = Some(other.max(0.0));
            row.udp_rcvbuf_errors = Some(a.drops.saturating_sub(b.drops));
        }
    }
}

fn ratio_line(rows: &[Row], what: &str, f: impl Fn(&Row) -> Option<f64>) {
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

fn error_lines(rows: &[Row]) {
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

// ---------------------------------------------------------------- uclient

fn uclient_matrix(ctx: &mut Ctx) -> Result<(), BenchError> {
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

// ---------------------------------------------------------------- loadgen

/// Flags of a rate-based loadgen run.
fn traffic_flags(
    mode: &str,
    url: Option<ServerUrl>,
    size: u32,
    pps: u32,
    secs: f64,
) -> Vec<String> {
    let mut f = vec!["--mode".to_owned(), mode.to_owned()];
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
fn run_loadgen(
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

fn fill_traffic(row: &mut Row, rep: &LoadgenReport) -> Result<(), BenchError> {
    row.sent = Some(rep.sent);
    row.received = Some(rep.received);
    row.lost = Some(rep.lost);
    row.rtt_us = rep.rtt_us;
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

fn loadgen_limit(secs: f64) -> Duration {
    Duration::from_secs_f64(secs + 20.0 + 30.0)
}

fn loadgen_matrix(ctx: &mut Ctx) -> Result<(), BenchError> {
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
fn direct_rtt(ctx: &Ctx, size: u32, pps: u32) -> Option<crate::loadgen::Percentiles> {
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
        let flags = traffic_flags("direct", None, size, pps, secs);
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
            let flags = traffic_flags("relay", Some(server.url(t)), size, pps, secs);
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

// ---------------------------------------------------------------- memory

fn memory(ctx: &mut Ctx) -> Result<(), BenchError> {
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

// ---------------------------------------------------------------- alloc rate

fn alloc_rate(ctx: &mut Ctx) -> Result<(), BenchError> {
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

// ---------------------------------------------------------------- c2c

fn client_to_client(ctx: &mut Ctx) -> Result<(), BenchError> {
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
        let flags = traffic_flags("c2c", Some(server.url(LinkKind::Udp)), size, pps, secs);
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

//! `onionrtc bench sip`: SIP over UDP and TCP (issue 14) driven by Debian's
//! SIPp (`sip-tester`), and the SIPp helpers the integration tests share.
//!
//! One fresh `serve` (pinned to one core with `taskset` when there is one)
//! with `[sip] listen` on UDP and TCP and `digest_algorithms = ["MD5"]`
//! (SIPp 3.6 answers only the first challenge and knows MD5 only). Then:
//!
//! ```text
//! register udp: N users, one UDP socket per registration (-t un), ≤ C at once, as fast as answered
//! memory:       serve's RSS before and after those N registrations (they stay bound)
//! register tcp: min(N, 2000) users, one TCP connection per registration (-t tn)
//! calls udp:    a SIPp UAS registered as `callee`, a SIPp UAC calling it M times, ≤ C at once
//! ```
//!
//! Each registration is two transactions (REGISTER → 401, REGISTER with
//! digest → 200); each call is INVITE → 407, ACK, INVITE with digest → 100
//! → 180 → 200, ACK, BYE → 200 on the caller's side and the same dialog
//! again on the callee's (the B2BUA). Figures are printed, never asserted.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::orchestrate::children::{free_port, tail, tool_exists, ChildGuard};
use crate::orchestrate::BenchError;

/// One REGISTER with digest per call (`-inf`: user;domain;[authentication …];expires).
pub const REGISTER_XML: &str = include_str!("../sipp/register.xml");
/// The caller (`-inf`: user;domain;[authentication …];callee).
pub const UAC_XML: &str = include_str!("../sipp/uac.xml");
/// The callee (registered beforehand from the same address and port).
pub const UAS_XML: &str = include_str!("../sipp/uas.xml");

/// The password of every benchmark account.
pub const PASSWORD: &str = "bench-password-1";

/// Writes `register.xml`, `uac.xml` and `uas.xml` into `dir`.
pub fn write_scenarios(dir: &Path) -> Result<(), BenchError> {
    for (name, text) in [
        ("register.xml", REGISTER_XML),
        ("uac.xml", UAC_XML),
        ("uas.xml", UAS_XML),
    ] {
        std::fs::write(dir.join(name), text)
            .map_err(|e| BenchError::io(format!("cannot write {name}"), e))?;
    }
    Ok(())
}

/// Creates the accounts `names` (password [`PASSWORD`]) in `data_dir`'s
/// user store for `realm`.
pub fn add_users(data_dir: &Path, realm: &str, names: &[String]) -> Result<(), BenchError> {
    let store = signal::users::UserStore::open(data_dir)
        .map_err(|e| BenchError::io("cannot open the user store", std::io::Error::other(e)))?;
    for n in names {
        store
            .add(n, realm, PASSWORD)
            .map_err(|e| BenchError::io(format!("cannot add {n}"), std::io::Error::other(e)))?;
    }
    Ok(())
}

/// An injection file for `register.xml`.
pub fn register_csv(domain: &str, names: &[String], password: &str, expires: u32) -> String {
    let mut s = String::from("SEQUENTIAL\n");
    for n in names {
        s.push_str(&format!(
            "{n};{domain};[authentication username={n} password={password}];{expires}\n"
        ));
    }
    s
}

/// An injection file for `uac.xml`: `caller` calls `callee`.
pub fn caller_csv(domain: &str, caller: &str, password: &str, callee: &str) -> String {
    format!(
        "SEQUENTIAL\n{caller};{domain};[authentication username={caller} password={password}];{callee}\n"
    )
}

/// How a SIPp run ended.
#[derive(Debug, Clone)]
pub struct SippRun {
    /// SIPp's exit code: 0 all calls succeeded, 1 some failed.
    pub code: Option<i32>,
    /// Successful and failed calls (SIPp's cumulative counters).
    pub successful: u64,
    pub failed: u64,
    /// Wall time.
    pub secs: f64,
    /// The end of SIPp's output (for failure messages).
    pub tail: String,
}

/// The cumulative column of SIPp's `NAME |  period | cumulative` line.
fn counter(screen: &str, name: &str) -> u64 {
    screen
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A SIPp command: `sipp ARGS -nostdin`, output to `log`.
pub fn sipp_command(args: &[String]) -> Command {
    let mut cmd = Command::new("sipp");
    cmd.args(args).arg("-nostdin");
    cmd
}

/// Starts SIPp in the background (a UAS), output to `log`.
pub fn spawn_sipp(name: &str, args: &[String], log: &Path) -> Result<ChildGuard, BenchError> {
    ChildGuard::spawn_logged(name, &mut sipp_command(args), log)
}

/// Runs SIPp to its end (at most `limit`), output to `log`.
pub fn run_sipp(
    name: &str,
    args: &[String],
    limit: Duration,
    log: &Path,
) -> Result<SippRun, BenchError> {
    let start = Instant::now();
    let mut child = spawn_sipp(name, args, log)?;
    finish_sipp(name, &mut child, start, limit, log)
}

/// Waits for a SIPp started with [`spawn_sipp`] (killed after `limit`).
pub fn finish_sipp(
    name: &str,
    child: &mut ChildGuard,
    start: Instant,
    limit: Duration,
    log: &Path,
) -> Result<SippRun, BenchError> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let status = child.wait(limit, &stop).map_err(|e| match e {
        BenchError::Timeout(t) => BenchError::Timeout(format!("{t} ({name}): {}", tail(log, 20))),
        e => e,
    })?;
    let secs = start.elapsed().as_secs_f64();
    let mut screen = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.read_to_string(&mut screen);
    }
    Ok(SippRun {
        code: status.code(),
        successful: counter(&screen, "Successful call"),
        failed: counter(&screen, "Failed call"),
        secs,
        tail: tail(log, 20),
    })
}

/// Flags of `onionrtc bench sip`.
#[derive(clap::Args, Debug, Clone)]
pub struct SipArgs {
    /// Registrations over UDP (each a user of its own; they stay bound for
    /// the memory figure). TCP registers min(this, 2000).
    #[arg(long, default_value_t = 10_000)]
    pub registrations: usize,
    /// Calls (INVITE → 200 → ACK → BYE) between two SIPp UAs.
    #[arg(long, default_value_t = 2_000)]
    pub calls: usize,
    /// Registrations or calls in progress at once.
    #[arg(long, default_value_t = 100)]
    pub concurrent: usize,
    /// How long each call stays up, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub hold_ms: u64,
    /// The core serve is pinned to (taskset -c), when taskset exists.
    #[arg(long, default_value_t = 0)]
    pub core: usize,
    /// Print the rows as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run the registrations against Debian's Kamailio (5.6) as a
    /// registrar with digest, when it is installed.
    #[arg(long)]
    pub kamailio: bool,
    /// Keep the configurations and SIPp logs in this (new) directory
    /// instead of a temporary one.
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
}

const DOMAIN: &str = "bench.test";

struct Serve {
    child: ChildGuard,
    sip: SocketAddr,
}

fn start_serve(exe: &Path, dir: &Path, core: Option<usize>) -> Result<Serve, BenchError> {
    let turn = free_port()?;
    let (web, sip) = loop {
        let (a, b) = (free_port()?, free_port()?);
        if a != turn && b != turn && a != b {
            break (a, b);
        }
    };
    let config = dir.join("onionrtc.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nlisten = [\"udp://127.0.0.1:{turn}\"]\n\
             [serve]\nlisten = \"127.0.0.1:{web}\"\nmax_connections_per_ip = 5000\n\
             [sip]\nenabled = true\ndomain = \"{DOMAIN}\"\ndigest_algorithms = [\"MD5\"]\n\
             listen = [\"udp://127.0.0.1:{sip}\", \"tcp://127.0.0.1:{sip}\"]\n\
             messages_per_sec = 1000000\n"
        ),
    )
    .map_err(|e| BenchError::io("cannot write the serve configuration", e))?;
    let child = crate::echo::spawn_serve(
        exe,
        core,
        &config,
        &dir.join("data"),
        &dir.join("serve.log"),
    )?;
    Ok(Serve {
        child,
        sip: SocketAddr::from(([127, 0, 0, 1], sip)),
    })
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

/// SIPp's arguments for `register.xml` (in `dir`) against `target`: `m`
/// registrations from `csv`, at most `concurrent` at once, as fast as
/// answered, over `transport` (`u1`, `un`, `t1`, `tn`) from `ip:port`; the
/// digest `uri` is `sip:DOMAIN` (SIPp's default is the remote address).
#[allow(clippy::too_many_arguments)]
pub fn register_args(
    domain: &str,
    dir: &Path,
    target: &str,
    csv: &Path,
    m: usize,
    concurrent: usize,
    transport: &str,
    ip: &str,
    port: u16,
) -> Vec<String> {
    vec![
        s(target),
        s("-sf"),
        dir.join("register.xml").display().to_string(),
        s("-inf"),
        csv.display().to_string(),
        s("-m"),
        s(m),
        s("-l"),
        s(concurrent),
        s("-r"),
        s(100_000),
        s("-t"),
        s(transport),
        s("-i"),
        s(ip),
        s("-p"),
        s(port),
        s("-auth_uri"),
        s(domain),
        s("-max_socket"),
        s(concurrent * 4 + 100),
    ]
}

/// A server under test: its SIP address, its CPU-seconds so far, and the
/// memory its registrations use (bytes, as the server can tell).
struct Target<'a> {
    name: &'static str,
    addr: String,
    cpu: Box<dyn Fn() -> f64 + 'a>,
    memory: Box<dyn Fn() -> u64 + 'a>,
    memory_what: &'static str,
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text)
        .map_err(|e| BenchError::io(format!("cannot write {}", path.display()), e))
}

/// REGISTER over UDP (bindings kept: the memory row), then over TCP.
fn register_rows(
    dir: &Path,
    t: &Target<'_>,
    names: &[String],
    n_tcp: usize,
    conc: usize,
) -> Result<Vec<Value>, BenchError> {
    let mut rows = Vec::new();
    let n = names.len();
    let limit = |count: usize| Duration::from_secs(60 + count as u64 / 20);
    // One SIPp run of `who` over `transport`: the run and the server's CPU-seconds.
    let register =
        |label: &str, who: &[String], transport: &str| -> Result<(SippRun, f64), BenchError> {
            let csv = dir.join(format!("{}-reg-{label}.csv", t.name));
            write(&csv, &register_csv(DOMAIN, who, PASSWORD, 3600))?;
            let c0 = (t.cpu)();
            let args = register_args(
                DOMAIN,
                dir,
                &t.addr,
                &csv,
                who.len(),
                conc,
                transport,
                "127.0.0.2",
                free_port()?,
            );
            let log = dir.join(format!("{}-reg-{label}.log", t.name));
            let run = run_sipp(
                &format!("sipp register {label}"),
                &args,
                limit(who.len()),
                &log,
            )?;
            Ok((run, (t.cpu)() - c0))
        };
    std::thread::sleep(Duration::from_millis(500));
    let mem0 = (t.memory)();
    let (run, cpu) = register("udp", names, "un")?;
    std::thread::sleep(Duration::from_millis(500));
    let mem1 = (t.memory)();
    rows.push(row(t.name, "register", "udp", n, &run, cpu, json!({})));
    let per_reg = mem1.saturating_sub(mem0) as f64 / run.successful.max(1) as f64;
    rows.push(json!({
        "server": t.name, "test": "memory", "transport": "udp", "registrations": run.successful,
        "memory": t.memory_what, "before_bytes": mem0, "after_bytes": mem1,
        "bytes_per_registration": per_reg.round(),
    }));
    let (run, cpu) = register("tcp", &names[..n_tcp], "tn")?;
    rows.push(row(t.name, "register", "tcp", n_tcp, &run, cpu, json!({})));
    Ok(rows)
}

/// Runs the benchmark; prints a table (or JSON lines). Returns the rows.
pub fn main(args: &SipArgs, exe: &Path) -> Result<Vec<Value>, BenchError> {
    if !tool_exists("sipp", &["-v"]) {
        return Err(BenchError::MissingTool(
            "sipp (Debian: apt-get install sip-tester)".into(),
        ));
    }
    crate::raise_fd_limit();
    let work = tempfile::Builder::new()
        .prefix("onionrtc-bench-sip")
        .tempdir()
        .map_err(|e| BenchError::io("cannot create a temporary directory", e))?;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir(d)
                .map_err(|e| BenchError::io(format!("cannot create {}", d.display()), e))?;
            d.as_path()
        }
        None => work.path(),
    };
    write_scenarios(dir)?;
    let n = args.registrations.max(1);
    let n_tcp = n.min(2000);
    let conc = args.concurrent.max(1);
    let names: Vec<String> = (0..n).map(|i| format!("reg{i}")).collect();
    let t0 = Instant::now();
    let mut all = names.clone();
    all.push("caller".into());
    all.push("callee".into());
    add_users(&dir.join("data"), DOMAIN, &all)?;
    let users_secs = t0.elapsed().as_secs_f64();
    let core = tool_exists("taskset", &["-V"]).then_some(args.core);
    let serve = start_serve(exe, dir, core)?;
    let pid = serve.child.pid();
    let ours = Target {
        name: "onionrtc",
        addr: serve.sip.to_string(),
        cpu: Box::new(move || crate::procfs::cpu_seconds(pid).unwrap_or(0.0)),
        memory: Box::new(move || crate::procfs::status_kb(pid, "VmRSS").unwrap_or(0) * 1024),
        memory_what: "VmRSS",
    };
    let mut rows = register_rows(dir, &ours, &names, n_tcp, conc)?;

    // Calls: the callee registers from the port its UAS then listens on.
    let limit = |count: usize| Duration::from_secs(60 + count as u64 / 20);
    let calls = args.calls.max(1);
    let callee_port = free_port()?;
    let csv = dir.join("callee.csv");
    write(
        &csv,
        &register_csv(DOMAIN, &["callee".to_string()], PASSWORD, 3600),
    )?;
    let reg = register_args(
        DOMAIN,
        dir,
        &ours.addr,
        &csv,
        1,
        1,
        "u1",
        "127.0.0.3",
        callee_port,
    );
    let r = run_sipp(
        "sipp callee register",
        &reg,
        limit(1),
        &dir.join("callee-reg.log"),
    )?;
    if r.successful != 1 {
        return Err(BenchError::Timeout(format!(
            "the callee did not register: {}",
            r.tail
        )));
    }
    let uas_log = dir.join("uas.log");
    let uas_args = vec![
        s("-sf"),
        dir.join("uas.xml").display().to_string(),
        s("-t"),
        s("u1"),
        s("-i"),
        s("127.0.0.3"),
        s("-p"),
        s(callee_port),
        s("-m"),
        s(calls),
    ];
    let uas_start = Instant::now();
    let mut uas = spawn_sipp("sipp callee", &uas_args, &uas_log)?;
    std::thread::sleep(Duration::from_millis(300));
    let csv = dir.join("caller.csv");
    write(&csv, &caller_csv(DOMAIN, "caller", PASSWORD, "callee"))?;
    let mut uac = register_args(
        DOMAIN,
        dir,
        &ours.addr,
        &csv,
        calls,
        conc,
        "un",
        "127.0.0.2",
        free_port()?,
    );
    set_arg(&mut uac, "-sf", &dir.join("uac.xml").display().to_string());
    set_arg(&mut uac, "-auth_uri", &format!("callee@{DOMAIN}"));
    uac.extend([s("-d"), s(args.hold_ms), s("-trace_err"), s("-error_file")]);
    uac.push(dir.join("uac-errors.log").display().to_string());
    let c0 = (ours.cpu)();
    let run = run_sipp("sipp caller", &uac, limit(calls), &dir.join("uac.log"))?;
    let c1 = (ours.cpu)();
    let callee = finish_sipp(
        "sipp callee",
        &mut uas,
        uas_start,
        Duration::from_secs(30),
        &uas_log,
    )?;
    rows.push(row(
        "onionrtc",
        "calls",
        "udp",
        calls,
        &run,
        c1 - c0,
        json!({"callee_successful": callee.successful, "callee_failed": callee.failed, "hold_ms": args.hold_ms}),
    ));
    drop(ours);
    drop(serve);

    if args.kamailio && tool_exists("kamailio", &["-v"]) {
        let kam = start_kamailio(dir, core, &names)?;
        let kpid = kam.child.pid();
        let ctl = kam.ctl.clone();
        let target = Target {
            name: "kamailio",
            addr: kam.sip.to_string(),
            cpu: Box::new(move || crate::procfs::family_cpu_seconds(kpid).unwrap_or(0.0)),
            memory: Box::new(move || kamailio_shm_used(&ctl).unwrap_or(0)),
            memory_what: "shared memory real_used (kamcmd core.shmmem)",
        };
        rows.extend(register_rows(dir, &target, &names, n_tcp, conc)?);
    }
    print_rows(args, &rows, users_secs, n + 2);
    Ok(rows)
}

/// Kamailio 5.6 as a registrar with digest (auth_db over db_text, the
/// same accounts and password), UDP and TCP on one port, one UDP and one
/// TCP worker, pinned like serve.
const KAMAILIO_CFG: &str = r#"#!KAMAILIO
debug=0
log_stderror=yes
fork=yes
children=1
tcp_children=1
auto_aliases=no
listen=udp:127.0.0.1:@PORT@
listen=tcp:127.0.0.1:@PORT@
alias="@DOMAIN@"
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "ctl.so"
modparam("ctl", "binrpc", "unix:@DIR@/ctl")
modparam("usrloc", "db_mode", 0)
modparam("auth_db", "db_url", "text://@DIR@/db")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (is_method("REGISTER")) {
        if (!www_authenticate("$td", "subscriber")) {
            www_challenge("$td", "1");
            exit;
        }
        if (!save("location")) { sl_reply_error(); }
        exit;
    }
    sl_send_reply("405", "Method Not Allowed");
}
"#;

struct Kamailio {
    child: ChildGuard,
    sip: SocketAddr,
    ctl: String,
}

impl Drop for Kamailio {
    /// SIGTERM to the main process (it stops its workers, which a SIGKILL
    /// would orphan), at most 5 s, then the guard's kill.
    fn drop(&mut self) {
        let pid = self.child.pid().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdin(std::process::Stdio::null())
            .status();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let _ = self.child.wait(Duration::from_secs(5), &stop);
    }
}

fn start_kamailio(
    dir: &Path,
    core: Option<usize>,
    names: &[String],
) -> Result<Kamailio, BenchError> {
    let kdir = dir.join("kamailio");
    let db = kdir.join("db");
    std::fs::create_dir_all(&db)
        .map_err(|e| BenchError::io("cannot create kamailio's directory", e))?;
    write(
        &db.join("version"),
        "table_name(string) table_version(int) \nsubscriber:7\nlocation:9\n",
    )?;
    let mut subscribers = String::from("id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null) \n");
    for (i, n) in names.iter().enumerate() {
        subscribers.push_str(&format!("{i}:{n}:{DOMAIN}:{PASSWORD}::\n"));
    }
    write(&db.join("subscriber"), &subscribers)?;
    let port = free_port()?;
    let cfg = KAMAILIO_CFG
        .replace("@PORT@", &port.to_string())
        .replace("@DOMAIN@", DOMAIN)
        .replace("@DIR@", &kdir.display().to_string());
    let cfg_path = kdir.join("kamailio.cfg");
    write(&cfg_path, &cfg)?;
    let mut cmd = match core {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(c.to_string()).arg("kamailio");
            t
        }
        None => Command::new("kamailio"),
    };
    cmd.arg("-f")
        .arg(&cfg_path)
        .args(["-DD", "-E", "-Y"])
        .arg(&kdir);
    let log = kdir.join("kamailio.log");
    let child = ChildGuard::spawn_logged("kamailio", &mut cmd, &log)?;
    let ctl = kdir.join("ctl").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while kamailio_shm_used(&ctl).is_none() {
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout(format!(
                "kamailio did not start: {}",
                tail(&log, 10)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Kamailio {
        child,
        sip: SocketAddr::from(([127, 0, 0, 1], port)),
        ctl,
    })
}

/// Kamailio's shared memory in use (`real_used` of `kamcmd core.shmmem`).
fn kamailio_shm_used(ctl: &str) -> Option<u64> {
    let out = Command::new("kamcmd")
        .args(["-s", &format!("unix:{ctl}"), "core.shmmem"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("real_used:"))
        .and_then(|v| v.trim().parse().ok())
}

fn set_arg(args: &mut [String], flag: &str, value: &str) {
    if let Some(i) = args.iter().position(|a| a == flag) {
        if let Some(v) = args.get_mut(i + 1) {
            *v = value.to_string();
        }
    }
}

fn row(
    server: &str,
    test: &str,
    transport: &str,
    attempted: usize,
    run: &SippRun,
    cpu_s: f64,
    extra: Value,
) -> Value {
    let rate = run.successful as f64 / run.secs.max(0.001);
    let failures = if attempted == 0 {
        0.0
    } else {
        1.0 - run.successful as f64 / attempted as f64
    };
    let mut v = json!({
        "server": server, "test": test, "transport": transport, "attempted": attempted,
        "successful": run.successful, "failed": run.failed, "failure_share": failures,
        "secs": run.secs, "per_sec": rate, "server_cpu_s": cpu_s,
        "server_core_share": cpu_s / run.secs.max(0.001),
        "per_cpu_s": run.successful as f64 / cpu_s.max(0.001),
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

fn print_rows(args: &SipArgs, rows: &[Value], users_secs: f64, users: usize) {
    if args.json {
        for r in rows {
            println!("{r}");
        }
        return;
    }
    println!(
        "SIP (SIPp): each server pinned to core {}; {users} accounts made in {users_secs:.1} s; {} at once",
        args.core, args.concurrent
    );
    for r in rows {
        let server = r["server"].as_str().unwrap_or("");
        if r["test"] == "memory" {
            println!(
                "{server:<9} memory   {} registrations bound: {} bytes each ({}: {} → {} bytes)",
                r["registrations"],
                r["bytes_per_registration"],
                r["memory"].as_str().unwrap_or(""),
                r["before_bytes"],
                r["after_bytes"]
            );
            continue;
        }
        println!(
            "{server:<9} {:<8} {:<3} {:>6} ok {:>4} failed ({:.2} %) in {:>6.1} s: {:>7.0}/s; server {:>3.0} % of a core, {:>7.0} per CPU-second",
            r["test"].as_str().unwrap_or(""),
            r["transport"].as_str().unwrap_or(""),
            r["successful"],
            r["failed"],
            r["failure_share"].as_f64().unwrap_or(0.0) * 100.0,
            r["secs"].as_f64().unwrap_or(0.0),
            r["per_sec"].as_f64().unwrap_or(0.0),
            r["server_core_share"].as_f64().unwrap_or(0.0) * 100.0,
            r["per_cpu_s"].as_f64().unwrap_or(0.0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipp_counters_and_injection_files() {
        let screen = "  Successful call        |        0                  |       10      \n\
                      Failed call            |        1                  |        2    \n";
        assert_eq!(counter(screen, "Successful call"), 10);
        assert_eq!(counter(screen, "Failed call"), 2);
        assert_eq!(counter("", "Failed call"), 0);
        let csv = register_csv("d", &["a".into()], "pw", 60);
        assert_eq!(
            csv,
            "SEQUENTIAL\na;d;[authentication username=a password=pw];60\n"
        );
        assert!(REGISTER_XML.contains("[field2]") && UAC_XML.contains("[field3]"));
    }
}

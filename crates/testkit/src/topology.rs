//! Small network topologies for tests: a "server" namespace and "client"
//! namespaces connected to the test's own namespace by veth pairs, and an
//! nftables firewall that lets only TCP to port 443 out.
//!
//! Everything here is made **inside the namespace of
//! [`run_isolated`](crate::netns::run_isolated)** (or of
//! [`tor::run_isolated_group`](crate::tor::run_isolated_group)): the
//! addresses below exist only there, and the whole topology vanishes with
//! that namespace. [`Topology::new`] refuses to run anywhere else
//! ([`assert_isolated`]).
//!
//! # Shape
//! ```text
//!  client ns 0                 test ns (router, ip_forward=1)         server ns
//!  eth0 10.201.0.2/30 ──veth── cl0   10.201.0.1/30
//!  client ns 1                       srv   10.200.0.1/24 ──veth── eth0 10.200.0.2/24
//!  eth0 10.201.1.2/30 ──veth── cl1   10.201.1.1/30       + 10.200.0.9/24 (extra)
//! ```
//! - The **server** namespace holds the servers under test (relay, peers).
//!   The test namespace reaches it directly on the /24 and owns extra
//!   addresses on the same link, e.g. 10.200.0.9 on which Tor's exits bind
//!   (`OutboundBindAddressExit`): the server then tells a connection that
//!   came through Tor (source 10.200.0.9) from one that bypassed it
//!   (10.200.0.1).
//! - Each **client** namespace gets its own veth and /30 to the test
//!   namespace, which routes between them (no bridge). A client knows only a
//!   route to the server's /24 (no default route); the server knows a route
//!   back to [`CLIENT_NET`].
//! - Every namespace is held by a `unshare --net sleep` child started with a
//!   parent-death signal ([`spawn_tied`]), killed by PID on drop.
//!
//! ```no_run
//! # use testkit::topology::*;
//! let topo = Topology::new(&TopologyConfig::default()).unwrap();
//! let client = topo.add_client().unwrap();
//! client.install_firewall(&[443]).unwrap();
//! let mut sleeper = topo.server().command("sleep");
//! sleeper.arg("1");
//! let _server = topo.server().spawn(sleeper).unwrap();
//! ```

use std::ffi::OsStr;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

use crate::process::{run_bounded, wait_until, Proc};

/// The clients' networks: client `i` uses `10.201.i.0/30`.
pub const CLIENT_NET: &str = "10.201.0.0/16";
/// How long the `sleep` holding a namespace lives at most.
const HOLDER_SECS: u32 = 900;
/// Limit for each `ip`/`nft`/`sysctl` command.
const CMD_LIMIT: Duration = Duration::from_secs(20);

/// Addresses of a [`Topology`].
#[derive(Debug, Clone)]
pub struct TopologyConfig {
    /// The server namespace's address (default 10.200.0.2).
    pub server_addr: Ipv4Addr,
    /// The test namespace's address on the server link (default 10.200.0.1).
    pub router_addr: Ipv4Addr,
    /// More addresses of the test namespace on the server link (default
    /// 10.200.0.9, for Tor's exits).
    pub extra_addrs: Vec<Ipv4Addr>,
    /// Prefix length of the server link (default 24).
    pub prefix: u8,
    /// Turn off delayed ACKs on every route the topology makes, and on
    /// loopback in its namespaces (default `true`; see
    /// [`loopback_quickack`] for why).
    pub quickack: bool,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            server_addr: Ipv4Addr::new(10, 200, 0, 2),
            router_addr: Ipv4Addr::new(10, 200, 0, 1),
            extra_addrs: vec![Ipv4Addr::new(10, 200, 0, 9)],
            prefix: 24,
            quickack: true,
        }
    }
}

impl TopologyConfig {
    /// The server link's network, e.g. `10.200.0.0/24`.
    pub fn network(&self) -> String {
        network_of(self.server_addr, self.prefix)
    }
}

/// A network namespace held by a `sleep` child, which is killed by PID on
/// drop (and by its parent-death signal when the test binary exits).
#[derive(Debug)]
pub struct Netns {
    name: String,
    holder: Proc,
}

impl Netns {
    /// A new namespace with `lo` up and nothing else.
    pub fn new(name: &str) -> io::Result<Netns> {
        let mut cmd = tied_command("unshare");
        cmd.args(["--net", "--", "sleep", &HOLDER_SECS.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let holder = spawn_tied(cmd)?;
        let ns = Netns {
            name: name.to_owned(),
            holder,
        };
        // Wait until the child has entered its namespace.
        let mine = std::fs::read_link("/proc/self/ns/net")?;
        let pid = ns.pid();
        let entered = wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (theirs != mine && cmdline.starts_with(b"sleep\0")).then_some(())
        });
        if entered.is_none() {
            return Err(io::Error::other(format!(
                "namespace {name}: unshare --net did not start"
            )));
        }
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The name given at creation (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PID holding the namespace (`nsenter -t PID -n`).
    pub fn pid(&self) -> u32 {
        self.holder.pid()
    }

    /// A command that runs `program` inside this namespace (`nsenter -t PID
    /// -n`, under a parent-death signal: see [`tied_command`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = tied_command("nsenter");
        cmd.args(["-t", &self.pid().to_string(), "-n", "--"])
            .arg(program);
        cmd
    }

    /// Runs `program args` inside this namespace to completion within
    /// `limit`, returning what it printed.
    pub fn run<S: AsRef<OsStr>>(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
        limit: Duration,
    ) -> Output {
        run_bounded(self.command(program).args(args), limit)
    }

    /// Starts `cmd` (built with [`Netns::command`]) as a child killed by PID
    /// on drop and when the test binary exits ([`spawn_tied`]).
    pub fn spawn(&self, cmd: Command) -> io::Result<Proc> {
        spawn_tied(cmd)
    }

    /// Runs `f` on a new thread that has entered this namespace (`setns`),
    /// and returns its result. Sockets made in `f`, and threads it spawns
    /// (with their sockets), belong to this namespace for their whole life:
    /// a listener bound here serves the namespace after `f` returns.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid()))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs `ip ARGS` inside this namespace; an error carries its stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        checked(self.command("ip").args(args))
    }

    /// Whether a TCP connection from inside this namespace to `addr`
    /// succeeds within `timeout` (bash's `/dev/tcp`).
    pub fn tcp_probe(&self, addr: SocketAddr, timeout: Duration) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
        let out = run_bounded(
            self.command("timeout")
                .arg(format!("{}", timeout.as_secs_f64()))
                .args(["bash", "-c", &script]),
            timeout + Duration::from_secs(5),
        );
        out.status.success()
    }

    /// Installs a firewall whose output chain accepts loopback traffic and
    /// TCP to the given destination ports, and drops everything else
    /// (policy drop): from this namespace only TCP to those ports goes out.
    /// Input is not filtered, so replies come back.
    ///
    /// ```text
    /// table inet onionrtc_fw {
    ///   chain out {
    ///     type filter hook output priority 0; policy drop;
    ///     oif "lo" accept
    ///     tcp dport { 443 } accept
    ///   }
    /// }
    /// ```
    pub fn install_firewall(&self, tcp_ports: &[u16]) -> io::Result<()> {
        let ports: Vec<String> = tcp_ports.iter().map(u16::to_string).collect();
        let mut rules = String::from(
            "table inet onionrtc_fw {\n  chain out {\n    \
             type filter hook output priority 0; policy drop;\n    oif \"lo\" accept\n",
        );
        if !ports.is_empty() {
            rules.push_str(&format!(
                "    tcp dport {{ {} }} accept\n",
                ports.join(", ")
            ));
        }
        rules.push_str("  }\n}\n");
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), &rules)?;
        let path = file.path().to_string_lossy().into_owned();
        checked(self.command("nft").args(["-f", &path]))?;
        let listed = run_bounded(self.command("nft").args(["list", "ruleset"]), CMD_LIMIT);
        let text = String::from_utf8_lossy(&listed.stdout);
        if !text.contains("policy drop") {
            return Err(io::Error::other(format!(
                "firewall not in place in {}:\n{text}",
                self.name
            )));
        }
        Ok(())
    }
}

/// A server namespace behind a veth pair, plus client namespaces routed
/// through the test namespace. See the [module](self) documentation.
#[derive(Debug)]
pub struct Topology {
    config: TopologyConfig,
    next_client: AtomicU8,
    server: Netns,
}

/// A client namespace made by [`Topology::add_client`], routed to the
/// server's network through the test namespace. Dropping it removes it.
#[derive(Debug)]
pub struct ClientNs {
    ns: Netns,
    index: u8,
    addr: Ipv4Addr,
    router: Ipv4Addr,
}

impl std::ops::Deref for ClientNs {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

impl ClientNs {
    /// The client's address (10.201.i.2).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The test namespace's address on this client's link (10.201.i.1).
    pub fn router(&self) -> Ipv4Addr {
        self.router
    }

    /// The index `i` of `10.201.i.0/30`.
    pub fn index(&self) -> u8 {
        self.index
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = checked(Command::new("ip").args(["link", "del", &format!("cl{}", self.index)]));
    }
}

impl Topology {
    /// Creates the server namespace and its veth pair (test side `srv`,
    /// server side `eth0`), assigns the addresses, brings the links up,
    /// enables IPv4 forwarding in the test namespace (for client
    /// namespaces) and checks the path both ways: a TCP probe to a closed
    /// port of the server gets its reset back.
    ///
    /// Panics unless the current namespace is isolated ([`assert_isolated`]).
    pub fn new(config: &TopologyConfig) -> io::Result<Topology> {
        assert_isolated();
        let server = Netns::new("server")?;
        let topo = Topology {
            config: config.clone(),
            next_client: AtomicU8::new(0),
            server,
        };
        let mut here = vec![config.router_addr];
        here.extend(&config.extra_addrs);
        let link = Veth {
            near: "srv",
            near_addrs: &here,
            far_addr: config.server_addr,
            prefix: config.prefix,
            quickack: config.quickack,
        };
        link.create(&topo.server)?;
        topo.server.ip(&with_quickack(
            &[
                "route",
                "add",
                CLIENT_NET,
                "via",
                &config.router_addr.to_string(),
            ],
            config.quickack,
        ))?;
        if config.quickack {
            loopback_quickack(Some(&topo.server))?;
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        // Both directions work: a closed port answers with a reset
        // (`connection refused`), which proves the path.
        let to_server = SocketAddr::from((config.server_addr, 9));
        if !reachable(to_server, Duration::from_secs(10)) {
            return Err(io::Error::other(format!(
                "{to_server} is unreachable from the test namespace"
            )));
        }
        Ok(topo)
    }

    /// The configuration in use.
    pub fn config(&self) -> &TopologyConfig {
        &self.config
    }

    /// The server namespace.
    pub fn server(&self) -> &Netns {
        &self.server
    }

    /// The server's address.
    pub fn server_addr(&self) -> Ipv4Addr {
        self.config.server_addr
    }

    /// Adds a client namespace `i` (0, 1, …): veth `cl<i>` (test side,
    /// 10.201.i.1/30) to `eth0` (client side, 10.201.i.2/30), with a route
    /// to the server's network via the test namespace and no default route.
    pub fn add_client(&self) -> io::Result<ClientNs> {
        let index = self.next_client.fetch_add(1, Ordering::Relaxed);
        let ns = Netns::new(&format!("client{index}"))?;
        let router = Ipv4Addr::new(10, 201, index, 1);
        let addr = Ipv4Addr::new(10, 201, index, 2);
        let client = ClientNs {
            ns,
            index,
            addr,
            router,
        };
        let veth = format!("cl{index}");
        let quickack = self.config.quickack;
        let link = Veth {
            near: &veth,
            near_addrs: &[router],
            far_addr: addr,
            prefix: 30,
            quickack,
        };
        link.create(&client)?;
        let network = self.config.network();
        client.ip(&with_quickack(
            &["route", "add", &network, "via", &router.to_string()],
            quickack,
        ))?;
        if quickack {
            loopback_quickack(Some(&client))?;
        }
        Ok(client)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both; the holder's death
        // then frees the namespace.
        let _ = checked(Command::new("ip").args(["link", "del", "srv"]));
    }
}

/// A veth pair from this namespace (`near`, with `near_addrs`) to `eth0` in
/// another namespace (with `far_addr`), both up.
struct Veth<'a> {
    near: &'a str,
    near_addrs: &'a [Ipv4Addr],
    far_addr: Ipv4Addr,
    prefix: u8,
    quickack: bool,
}

impl Veth<'_> {
    fn create(&self, far: &Netns) -> io::Result<()> {
        let peer = format!("{}-peer", self.near);
        let p = self.prefix;
        ip(&[
            "link", "add", self.near, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &far.pid().to_string()])?;
        for a in self.near_addrs {
            ip(&["addr", "add", &format!("{a}/{p}"), "dev", self.near])?;
        }
        ip(&["link", "set", self.near, "up"])?;
        far.ip(&["link", "set", &peer, "name", "eth0"])?;
        far.ip(&[
            "addr",
            "add",
            &format!("{}/{p}", self.far_addr),
            "dev",
            "eth0",
        ])?;
        far.ip(&["link", "set", "eth0", "up"])?;
        if self.quickack {
            // The kernel's connected routes, again, with quickack.
            let net = network_of(self.far_addr, p);
            let src = self.near_addrs.first().map(ToString::to_string);
            let src = src.as_deref().unwrap_or("0.0.0.0");
            ip(&connected_route(&net, self.near, src))?;
            far.ip(&connected_route(&net, "eth0", &self.far_addr.to_string()))?;
        }
        Ok(())
    }
}

fn connected_route<'a>(net: &'a str, dev: &'a str, src: &'a str) -> [&'a str; 13] {
    [
        "route", "replace", net, "dev", dev, "proto", "kernel", "scope", "link", "src", src,
        "quickack", "1",
    ]
}

fn with_quickack<'a>(args: &[&'a str], quickack: bool) -> Vec<&'a str> {
    let mut v = args.to_vec();
    if quickack {
        v.extend(["quickack", "1"]);
    }
    v
}

/// `a.b.c.d/prefix` with the host bits cleared.
fn network_of(addr: Ipv4Addr, prefix: u8) -> String {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    format!("{}/{prefix}", Ipv4Addr::from(u32::from(addr) & mask))
}

/// Turns off delayed ACKs on the loopback routes of this namespace
/// (`None`) or of `ns`: `ip route replace local 127.0.0.0/8 … quickack 1`
/// and the same for `local 127.0.0.1`.
///
/// Why: tor (like other programs) leaves Nagle's algorithm on for some of
/// its sockets; several circuits multiplexed over one connection then wait
/// for Linux's delayed ACK (40 ms). Measured on the private Tor network with
/// four concurrent paced 160-byte echo streams: median RTT 21 ms, p95 65 ms
/// with delayed ACKs; 1.1 ms and 2 ms with quickack. Real networks have
/// their own timing; in tests this artefact would hide the delay our code
/// adds.
pub fn loopback_quickack(ns: Option<&Netns>) -> io::Result<()> {
    if ns.is_none() {
        assert_isolated();
    }
    for dst in ["127.0.0.0/8", "127.0.0.1"] {
        let args = [
            "route",
            "replace",
            "local",
            dst,
            "dev",
            "lo",
            "table",
            "local",
            "proto",
            "kernel",
            "scope",
            "host",
            "src",
            "127.0.0.1",
            "quickack",
            "1",
        ];
        match ns {
            Some(ns) => ns.ip(&args)?,
            None => ip(&args)?,
        }
    }
    Ok(())
}

/// Whether a TCP connection attempt from this namespace to `addr` gets an
/// answer (connected, or refused by a closed port) within `limit`.
pub fn reachable(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    wait_until(limit, Duration::from_millis(50), || {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(
            &addr,
            left.clamp(Duration::from_millis(10), Duration::from_secs(1)),
        ) {
            Ok(_) => Some(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(()),
            Err(_) => None,
        }
    })
    .is_some()
}

/// Panics unless this process runs in a network namespace a test made: not
/// PID 1's namespace, no default route (IPv4 or IPv6), and only `lo` and
/// veth links. Code that opens routes to non-loopback addresses (Tor exits
/// with `ExitPolicy accept *:*`, the topology's routes) calls it first.
pub fn assert_isolated() {
    if let Err(why) = isolated() {
        panic!("refusing to run outside an isolated test namespace: {why}");
    }
}

/// Why this process is not in an isolated test namespace, if it is not.
pub fn isolated() -> Result<(), String> {
    let ours = std::fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
    if let Ok(init) = std::fs::read_link("/proc/1/ns/net") {
        if init == ours {
            return Err("this is PID 1's network namespace".into());
        }
    }
    for family in ["-4", "-6"] {
        let out = run_bounded(
            Command::new("ip").args([family, "route", "show", "default"]),
            CMD_LIMIT,
        );
        if !out.status.success() {
            return Err(format!("`ip {family} route` failed: {out:?}"));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.trim().is_empty() {
            return Err(format!("there is a default route: {}", text.trim()));
        }
    }
    let out = run_bounded(
        Command::new("ip").args(["-o", "-d", "link", "show"]),
        CMD_LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let name = line.split(':').nth(1).map(str::trim).unwrap_or("");
        let name = name.split('@').next().unwrap_or(name);
        if name != "lo" && !line.contains(" veth ") {
            return Err(format!("link {name} is neither lo nor a veth: {line}"));
        }
    }
    Ok(())
}

fn ip(args: &[&str]) -> io::Result<()> {
    checked(Command::new("ip").args(args))
}

fn checked(cmd: &mut Command) -> io::Result<()> {
    let out = run_bounded(cmd, CMD_LIMIT);
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// A command that runs `program` under `setpriv --pdeathsig KILL`: started
/// with [`spawn_tied`], it is killed (SIGKILL) when the test binary exits.
/// `setpriv` execs the program, so the child's PID is the program's.
pub fn tied_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
    cmd
}

/// Starts `cmd` (made with [`tied_command`]) from a thread that lives as
/// long as the test binary, so the child's parent-death signal fires when
/// the test binary exits — also when it crashes or is killed, and also for a
/// process-wide shared server whose owner is never dropped. The returned
/// [`Proc`] kills it by PID on drop as usual. Stdin is closed; stdout and
/// stderr are as configured on `cmd`.
///
/// (The kernel sends the parent-death signal when the *thread* that forked
/// the child ends; test threads end with their test, hence the dedicated
/// thread.)
pub fn spawn_tied(mut cmd: Command) -> io::Result<Proc> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and the
                // thread) lasts until the process exits.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    cmd.stdin(Stdio::null());
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    let child = rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread is gone"))??;
    Ok(Proc(child))
}

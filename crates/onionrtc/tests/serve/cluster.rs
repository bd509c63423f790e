//! Rooms across two `serve` nodes on one real Redis (Debian's
//! `redis-server`, testkit::redis): signaling between members on different
//! nodes, limits shared by the nodes, what Redis holds (no room name, no
//! address), a Redis outage (joins refused cleanly, logged once, back after
//! it returns), a node killed by PID (its members leave within the
//! documented bound); and a Chromium call relay/relay across the nodes
//! whose media outlives a Redis restart.

use std::path::PathBuf;

use testkit::redis::Redis;

use super::*;
use crate::ws_common::{ws_connect, ws_connect_within, ws_join, ws_send, ws_wait, Ws};

/// The documented bound for `peer-left` after a node crash (docs/serve.md:
/// member TTL 8 s + one 2 s sweep), plus room for a loaded machine.
const PEER_LEFT_BOUND: Duration = Duration::from_secs(10);
const PEER_LEFT_SLACK: Duration = Duration::from_secs(5);
/// A minimal description the sanitizer accepts, with a host candidate it
/// must remove.
const SDP: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                   a=candidate:1 1 udp 2122260223 192.168.77.7 54321 typ host\r\n";

/// One `serve` node: its relay and web listener on loopback, rooms in
/// `redis`, the room key shared with the other nodes.
struct Node {
    server: Server,
    data: PathBuf,
    log: PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &str, redis: &Redis, room_key: &str, extra: &str) -> Node {
        Self::start_env(dir, name, redis, room_key, extra, &[])
    }

    /// [`Node::start`] with extra environment variables.
    fn start_env(
        dir: &Path,
        name: &str,
        redis: &Redis,
        room_key: &str,
        extra: &str,
        env: &[(&str, &Path)],
    ) -> Node {
        let dir = dir.join(name);
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = data.join("room-key");
        std::fs::write(&key, format!("{room_key}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let turn = testkit::free_port();
        let web = loop {
            let p = testkit::free_port();
            if p != turn {
                break p;
            }
        };
        let config = dir.join("onionrtc.toml");
        std::fs::write(
            &config,
            format!(
                "[relay]\nlisten = [\"udp://127.0.0.1:{turn}\"]\n\
                 # The other node's relay is on loopback too (tests only).\n\
                 dangerous_allow_loopback_peers = true\n\
                 [serve]\nlisten = \"127.0.0.1:{web}\"\nredis_url = \"{}\"\n{extra}",
                redis.url()
            ),
        )
        .unwrap();
        let log = dir.join("serve.log");
        let server = Server::start_env(&config, &data, "info", Some(&log), env);
        Node { server, data, log }
    }

    /// The node's `/ws`, with a generous read timeout: a node that just
    /// started on a loaded machine may take seconds to answer the upgrade.
    fn ws(&self) -> Ws {
        let ws = ws_connect_within(self.server.web, Duration::from_secs(30)).unwrap();
        // Then the 5 s every other reader of `/ws` in these tests expects.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        ws
    }

    fn metrics(&self) -> String {
        let (status, m) = self.server.get_as_operator("/metrics", &self.data);
        assert_eq!(status, 200, "{m}");
        m
    }

    /// Lines of the node's log containing `needle`.
    fn log_lines(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

fn room_key() -> String {
    format!(
        "{:016x}{:016x}",
        testkit::process::random_u64(),
        testkit::process::random_u64()
    )
}

/// Every key in Redis with its type and value, one per line.
fn dump(redis: &Redis) -> String {
    let mut out = String::new();
    let keys = redis.cli(&["--scan"]).unwrap();
    for key in keys.lines().map(str::trim).filter(|k| !k.is_empty()) {
        let ty = redis.cli(&["TYPE", key]).unwrap();
        let value = match ty.trim() {
            "string" => redis.cli(&["GET", key]),
            "hash" => redis.cli(&["HGETALL", key]),
            "zset" => redis.cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
            "set" => redis.cli(&["SMEMBERS", key]),
            "list" => redis.cli(&["LRANGE", key, "0", "-1"]),
            other => Ok(format!("<{other}>")),
        }
        .unwrap();
        out.push_str(&format!(
            "{key} ({}) = {}\n",
            ty.trim(),
            value.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    out
}

/// Room names and addresses are neither keys nor values in Redis; the
/// dump does hold the rooms (the negative control: it is not empty).
fn check_dump(dump: &str, room: &str, member: &str) {
    assert!(dump.contains("onionrtc:room:"), "no room in Redis:\n{dump}");
    assert!(
        dump.contains(member),
        "member {member} not in Redis:\n{dump}"
    );
    assert!(!dump.contains(room), "the room name is in Redis:\n{dump}");
    let ips = ipv4_literals(dump);
    assert!(ips.is_empty(), "addresses {ips:?} in Redis:\n{dump}");
    assert!(!dump.contains("::1"), "an address in Redis:\n{dump}");
}

fn is(ty: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == ty
}

fn peer_msg(ty: &'static str, id: String) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == ty && v["memberId"] == id.as_str()
}

fn wait(ws: &mut Ws, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    ws_wait(ws, Duration::from_secs(15), want)
        .unwrap_or_else(|seen| panic!("no {what} within 15 s; got {seen:?}"))
}

fn joined(ws: &mut Ws, room: &str) -> (String, Vec<String>) {
    let j = ws_join(ws, room);
    assert_eq!(j["type"], "joined", "{j}");
    let members = j["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    (j["memberId"].as_str().unwrap().to_owned(), members)
}

/// A join's answer within 15 s (during an outage it takes up to the
/// server's Redis timeout).
fn try_join(ws: &mut Ws, room: &str) -> Value {
    ws_send(ws, &serde_json::json!({"type": "join", "room": room}));
    wait(ws, "answer to join", |v| {
        v["type"] == "joined" || v["type"] == "error"
    })
}

#[test]
fn rooms_across_two_nodes_on_redis() {
    let Some(mut redis) = Redis::start().unwrap() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let key = room_key();
    let extra = "max_room_size = 3\n";
    let a = Node::start(dir.path(), "a", &redis, &key, extra);
    let b = Node::start(dir.path(), "b", &redis, &key, extra);
    let room = random_room();

    // a1 on A creates the room; b1 and b2 on B join it.
    let mut a1 = a.ws();
    let (a1_id, members) = joined(&mut a1, &room);
    assert!(members.is_empty());
    let mut b1 = b.ws();
    let (b1_id, members) = joined(&mut b1, &room);
    assert_eq!(members, std::slice::from_ref(&a1_id));
    wait(
        &mut a1,
        "peer-joined b1",
        peer_msg("peer-joined", b1_id.clone()),
    );
    let mut b2 = b.ws();
    let (b2_id, members) = joined(&mut b2, &room);
    assert_eq!(members, [a1_id.clone(), b1_id.clone()]);
    wait(
        &mut a1,
        "peer-joined b2",
        peer_msg("peer-joined", b2_id.clone()),
    );
    wait(
        &mut b1,
        "peer-joined b2",
        peer_msg("peer-joined", b2_id.clone()),
    );

    // Across nodes: the offer arrives sanitized (its host candidate gone),
    // from the sender's id; the answer comes back.
    ws_send(
        &mut b1,
        &serde_json::json!({"type": "offer", "sdp": SDP, "to": a1_id}),
    );
    let offer = wait(&mut a1, "offer", is("offer"));
    assert_eq!(offer["from"], b1_id.as_str(), "{offer}");
    let sdp = offer["sdp"].as_str().unwrap();
    assert!(sdp.starts_with("v=0"), "{offer}");
    assert!(!sdp.contains("192.168.77.7"), "not sanitized: {offer}");
    ws_send(
        &mut a1,
        &serde_json::json!({"type": "answer", "sdp": SDP, "to": b1_id}),
    );
    let answer = wait(&mut b1, "answer", is("answer"));
    assert_eq!(answer["from"], a1_id.as_str(), "{answer}");
    // Several others: `to` is required, as on one node.
    ws_send(&mut a1, &serde_json::json!({"type": "offer", "sdp": SDP}));
    let e = wait(&mut a1, "error", is("error"));
    assert_eq!(e["code"], "to-required", "{e}");

    // The room size counts members of both nodes.
    let mut a3 = a.ws();
    let full = ws_join(&mut a3, &room);
    assert_eq!(full["code"], "room-full", "{full}");
    drop(a3);

    // What Redis holds during the call.
    let during = dump(&redis);
    check_dump(&during, &room, &a1_id);

    // A leave on B reaches A.
    ws_send(&mut b2, &serde_json::json!({"type": "bye"}));
    wait(
        &mut a1,
        "peer-left b2",
        peer_msg("peer-left", b2_id.clone()),
    );
    wait(
        &mut b1,
        "peer-left b2",
        peer_msg("peer-left", b2_id.clone()),
    );
    drop(b2);

    // The per-address join limit (20 a minute) is shared: alternating
    // nodes, the 21st join from this address is refused (per node it
    // would take 40). Joins so far: a1, b1, b2, a3.
    let mut refused_at = None;
    for i in 0..25 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut ws = node.ws();
        let r = ws_join(&mut ws, &format!("{room}-{i}"));
        if r["type"] == "error" {
            assert_eq!(r["code"], "too-many-joins", "{r}");
            refused_at = Some(4 + i + 1);
            break;
        }
        assert_eq!(r["type"], "joined", "{r}");
    }
    assert!(
        refused_at.is_some_and(|n| n <= 21),
        "joins refused at {refused_at:?}"
    );

    // Redis goes away: new joins are refused cleanly (on both nodes), the
    // outage is logged once per node, the members stay connected.
    redis.stop();
    let outage = Instant::now();
    for node in [&a, &b, &a] {
        let mut ws = node.ws();
        let r = try_join(&mut ws, &format!("{room}-outage"));
        assert_eq!(r["code"], "server-unavailable", "{r}");
    }
    // Redis returns (empty): the nodes put their members back, and a new
    // member on B joins the room of A's member and hears of both.
    redis.resume().unwrap();
    let outage = outage.elapsed();
    let back = testkit::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let d = dump(&redis);
        (d.matches(&a1_id).count() >= 2 && d.matches(&b1_id).count() >= 2).then_some(d)
    });
    assert!(
        back.is_some(),
        "members not re-registered after Redis returned:\n{}",
        dump(&redis)
    );
    let mut b3 = b.ws();
    let (b3_id, members) = joined(&mut b3, &room);
    assert_eq!(members, [a1_id.clone(), b1_id.clone()]);
    wait(
        &mut a1,
        "peer-joined b3",
        peer_msg("peer-joined", b3_id.clone()),
    );
    wait(
        &mut b1,
        "peer-joined b3",
        peer_msg("peer-joined", b3_id.clone()),
    );
    for node in [&a, &b] {
        assert_eq!(node.log_lines("Redis unreachable"), 1, "once per outage");
        assert_eq!(node.log_lines("Redis is reachable again"), 1);
        let m = node.metrics();
        assert_eq!(
            metric_sum(&m, "onionrtc_signal_redis_outages_total"),
            1,
            "{m}"
        );
        assert_eq!(metric_sum(&m, "onionrtc_signal_redis_up"), 1, "{m}");
        assert!(
            metric_sum(&m, "onionrtc_signal_redis_published_total") > 0,
            "{m}"
        );
        assert!(
            metric_sum(&m, "onionrtc_signal_redis_received_total") > 0,
            "{m}"
        );
    }
    // No address in either node's log.
    for node in [&a, &b] {
        let log = std::fs::read_to_string(&node.log).unwrap();
        assert!(!log.contains(&room), "room name logged");
    }

    // Node A dies (SIGKILL by PID): B's members get peer-left for a1 within
    // the bound, from B's sweep of the expired member key.
    let Node { server, .. } = a;
    drop(server);
    let killed = Instant::now();
    wait(
        &mut b1,
        "peer-left a1",
        peer_msg("peer-left", a1_id.clone()),
    );
    let b1_after = killed.elapsed();
    wait(
        &mut b3,
        "peer-left a1",
        peer_msg("peer-left", a1_id.clone()),
    );
    let b3_after = killed.elapsed();
    assert!(
        b3_after <= PEER_LEFT_BOUND + PEER_LEFT_SLACK,
        "peer-left after {b3_after:?}"
    );
    assert!(metric_sum(&b.metrics(), "onionrtc_signal_redis_swept_total") >= 1);
    eprintln!(
        "cluster: peer-left {b1_after:?} / {b3_after:?} after the kill; outage of {outage:?}; \
         joins refused at #{refused_at:?}; total {:?}",
        started.elapsed()
    );
    drop(a1);
}

/// A join on `node` within `limit` (Redis may still be coming back):
/// fresh connections, bounded; the joined connection and `joined`.
fn join_eventually(node: &Node, room: &str, limit: Duration) -> Result<(Ws, Value), Value> {
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let mut ws = node.ws();
        last = try_join(&mut ws, room);
        if last["type"] == "joined" {
            return Ok((ws, last));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(last)
}

#[test]
fn chromium_calls_across_nodes_through_a_redis_restart() {
    if !testkit::require_tool("chromium", &["--version"]) {
        return;
    }
    let Some(mut redis) = Redis::start().unwrap() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let key = room_key();
    let a = Node::start(dir.path(), "a", &redis, &key, "");
    let b = Node::start(dir.path(), "b", &redis, &key, "");
    let browser = Chromium::launch(LaunchOptions::default()).unwrap();
    let room = random_room();
    let mut pages = vec![
        browser
            .new_page(&a.server.url(&format!("/?room={room}")))
            .unwrap(),
        browser
            .new_page(&b.server.url(&format!("/?room={room}")))
            .unwrap(),
    ];
    let deadline = Instant::now() + CONNECT;
    for i in 0..2 {
        if let Err(e) = wait_connected(&mut pages[i], deadline) {
            fail(
                &format!("page {i} not connected: {e}"),
                &mut pages,
                &b.server,
            );
        }
    }
    let connected_in = started.elapsed();
    // relay/relay, each page through its own node's relay.
    for i in 0..2 {
        if let Err(e) = check_media(&mut pages[i]) {
            fail(&format!("page {i}: {e}"), &mut pages, &b.server);
        }
        let received = pages[i].evaluate("window.onionrtc.received").unwrap();
        if let Err(e) = check_received(&received) {
            fail(&format!("page {i}: {e}"), &mut pages, &b.server);
        }
    }
    for node in [&a, &b] {
        let m = node.metrics();
        assert!(
            metric_sum(&m, "onionrtc_allocations_current") >= 1
                && metric_sum(&m, "onionrtc_relayed_bytes_total") > 0,
            "a node's relay carries no call:\n{m}"
        );
    }
    // What Redis holds during the call: no room name, no address.
    let member = pages[0].evaluate("window.onionrtc.memberId").unwrap();
    check_dump(&dump(&redis), &room, member.as_str().unwrap_or("?"));

    // Redis goes away mid-call: the media keeps flowing (it never touches
    // Redis), a new join is refused cleanly.
    redis.stop();
    for i in 0..2 {
        if let Err(e) = check_media(&mut pages[i]) {
            fail(
                &format!("page {i} while Redis is down: {e}"),
                &mut pages,
                &b.server,
            );
        }
    }
    let mut ws = b.ws();
    let r = try_join(&mut ws, &format!("{room}-x"));
    assert_eq!(r["code"], "server-unavailable", "{r}");
    drop(ws);
    // It returns: joins work again, the call is still up.
    redis.resume().unwrap();
    let rejoined = join_eventually(&b, &format!("{room}-y"), Duration::from_secs(20));
    assert!(
        rejoined.is_ok(),
        "no join after Redis returned: {:?}",
        rejoined.map(|(_, v)| v)
    );
    for i in 0..2 {
        if let Err(e) = check_media(&mut pages[i]) {
            fail(
                &format!("page {i} after Redis returned: {e}"),
                &mut pages,
                &b.server,
            );
        }
        let state = pages[i].evaluate("window.onionrtc.state").unwrap();
        assert_eq!(state, "connected", "page {i}");
    }
    drop(pages);
    drop(browser);
    eprintln!(
        "cluster chromium: connected in {connected_in:?}; total {:?}",
        started.elapsed()
    );
}

/// Figures for docs/performance.md (not a check; `--ignored` runs it):
/// joins per second and offer → peer latency, in one process and on Redis
/// with both members on one node or on two; Redis memory per room.
/// Clients claim distinct addresses through a trusted `X-Forwarded-For`
/// so that the per-address limits stay out of the way.
#[test]
#[ignore = "benchmark: cargo test -p onionrtc --test serve cluster::bench -- --ignored --nocapture"]
fn bench_rooms_on_redis() {
    let Some(redis) = Redis::start().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = room_key();
    let extra = "trusted_proxies = [\"127.0.0.1/32\"]\n";
    let a = Node::start(dir.path(), "a", &redis, &key, extra);
    let b = Node::start(dir.path(), "b", &redis, &key, extra);
    // The same settings without Redis.
    let solo_dir = dir.path().join("solo");
    std::fs::create_dir_all(&solo_dir).unwrap();
    let (config, _, _) = serve_config(&solo_dir, &["udp"]);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}{extra}")).unwrap();
    let solo = Server::start(&config, &solo_dir.join("data"));

    let mut next_addr = 0u32;
    let mut client = |web: SocketAddr| {
        next_addr += 1;
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + next_addr).to_string();
        let mut ws = ws_connect(web, &[("x-forwarded-for", &ip)]).unwrap();
        ws.get_mut().set_nodelay(true).unwrap();
        ws
    };
    const PAIRS: usize = 150;
    // Within the per-connection burst (100 messages; 50/s sustained).
    const ROUNDS: usize = 90;
    let cases: [(&str, SocketAddr, SocketAddr); 3] = [
        ("in process", solo.web, solo.web),
        ("Redis, same node", a.server.web, a.server.web),
        ("Redis, two nodes", a.server.web, b.server.web),
    ];
    let used_memory = || -> u64 {
        let info = redis.cli(&["INFO", "memory"]).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    for (name, x_web, y_web) in cases {
        let before = used_memory();
        let mut pairs: Vec<(Ws, Ws)> = (0..PAIRS).map(|_| (client(x_web), client(y_web))).collect();
        let tag = format!("{:x}", testkit::process::random_u64());
        // Joins from 4 threads at once (pairs into rooms of 2).
        let t = Instant::now();
        let ids: Vec<(String, String)> = std::thread::scope(|s| {
            let tag = &tag;
            let threads: Vec<_> = pairs
                .chunks_mut(PAIRS.div_ceil(4))
                .enumerate()
                .map(|(c, chunk)| {
                    s.spawn(move || {
                        let mut ids = Vec::new();
                        for (i, (x, y)) in chunk.iter_mut().enumerate() {
                            let room = format!("bench-{tag}-{c}-{i}");
                            let (xid, _) = joined(x, &room);
                            let (yid, _) = joined(y, &room);
                            ids.push((xid, yid));
                        }
                        ids
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let join_time = t.elapsed();
        let joins_per_sec = (2 * PAIRS) as f64 / join_time.as_secs_f64();
        let after = used_memory();
        // What the rooms' keys take (MEMORY USAGE, summed in one script).
        let keys_bytes: u64 = redis
            .cli(&[
                "EVAL",
                "local s = 0 for _, p in ipairs(ARGV) do for _, k in ipairs(redis.call('KEYS', p)) do \
                 s = s + (redis.call('MEMORY', 'USAGE', k) or 0) end end return s",
                "0",
                "onionrtc:room:*",
                "onionrtc:member:*",
                "onionrtc:rooms",
            ])
            .unwrap()
            .trim()
            .parse()
            .unwrap_or(0);
        let (xs, ys): (Vec<Ws>, Vec<Ws>) = pairs.into_iter().unzip();
        let (mut xs, mut ys) = (xs, ys);
        // offer → peer: x sends, y receives (peer-joined first, skipped).
        let (x, y) = (&mut xs[0], &mut ys[0]);
        let to = ids[0].1.clone();
        wait(x, "peer-joined", is("peer-joined"));
        let mut lat = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            ws_send(
                x,
                &serde_json::json!({"type": "offer", "sdp": SDP, "to": to}),
            );
            wait(y, "offer", is("offer"));
            lat.push(t.elapsed());
        }
        lat.sort();
        let per_room = after.saturating_sub(before) / PAIRS as u64;
        eprintln!(
            "bench {name}: {joins_per_sec:.0} joins/s ({} joins, 4 threads); offer → peer \
             median {:?}, p90 {:?}, max {:?}; Redis used_memory +{per_room} B per room of 2, \
             keys {} B per room",
            2 * PAIRS,
            lat[ROUNDS / 2],
            lat[ROUNDS * 9 / 10],
            lat[ROUNDS - 1],
            keys_bytes / PAIRS as u64,
        );
        drop(xs);
        drop(ys);
        // Wait until the leaves are done before the next case's baseline.
        let empty =
            testkit::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
                redis
                    .cli(&["--scan", "--pattern", "onionrtc:room:*"])
                    .ok()
                    .filter(|k| k.trim().is_empty())
            });
        assert!(empty.is_some(), "rooms left in Redis");
    }
}

/// `rediss://`: a node reaches a TLS-only Redis when it trusts the
/// server's certificate (here through `SSL_CERT_FILE`), and refuses joins
/// (`server-unavailable`, logged once) when it does not: the system store
/// does not hold the test's self-signed certificate (the negative
/// control). Also: a node with another room key refuses joins.
#[test]
fn rediss_and_a_foreign_room_key() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (
        dir.path().join("redis-cert.pem"),
        dir.path().join("redis-key.pem"),
    );
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let Some(redis) = Redis::start_tls(cert.clone(), key).unwrap() else {
        return;
    };
    assert!(redis.url().starts_with("rediss://"));
    assert_eq!(redis.cli(&["PING"]).unwrap().trim(), "PONG");
    let room_key = room_key();
    let trusting = Node::start_env(
        dir.path(),
        "trusting",
        &redis,
        &room_key,
        "",
        &[("SSL_CERT_FILE", cert.as_path())],
    );
    let room = random_room();
    let joined = join_eventually(&trusting, &room, Duration::from_secs(20));
    let Ok((_member_ws, joined)) = joined else {
        panic!(
            "no join over rediss://: {joined:?}\n{}",
            trusting.server.stderr_tail()
        );
    };
    let member = joined["memberId"].as_str().unwrap().to_owned();
    check_dump(&dump(&redis), &room, &member);

    // Without the certificate: not trusted, so no Redis, so no joins.
    let distrusting = Node::start(dir.path(), "distrusting", &redis, &room_key, "");
    let mut ws = distrusting.ws();
    let r = try_join(&mut ws, &room);
    assert_eq!(r["code"], "server-unavailable", "{r}");
    let logged = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        (distrusting.log_lines("Redis unreachable") == 1).then_some(())
    });
    assert!(
        logged.is_some(),
        "{}",
        std::fs::read_to_string(&distrusting.log).unwrap_or_default()
    );
    drop(distrusting);

    // Another room key in the same Redis: refused, logged.
    let foreign = Node::start_env(
        dir.path(),
        "foreign",
        &redis,
        &self::room_key(),
        "",
        &[("SSL_CERT_FILE", cert.as_path())],
    );
    // (Its first join may come before its subscription: retry until the
    // key check has spoken.)
    let refused = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let mut ws = foreign.ws();
        let r = try_join(&mut ws, &room);
        assert_eq!(r["code"], "server-unavailable", "{r}");
        (foreign.log_lines("uses a different room key") > 0).then_some(())
    });
    assert!(refused.is_some(), "no key mismatch logged");
    let mut ws = foreign.ws();
    let r = try_join(&mut ws, &room);
    assert_eq!(r["code"], "server-unavailable", "{r}");
    assert_eq!(foreign.log_lines("uses a different room key"), 1);
}

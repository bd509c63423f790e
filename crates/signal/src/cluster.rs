//! Rooms across `serve` nodes on Redis (`[serve] redis_url`): any node
//! accepts any WebSocket; membership lives in Redis, messages between
//! members on different nodes travel over Redis pub/sub. The design and
//! its reasons are in docs/serve.md, "Several nodes on Redis".
//!
//! ```text
//! onionrtc:room:{h}         hash  call, started, seq, m:{member id} = "node side seq"   TTL 8 s
//! onionrtc:member:{h}:{id}  string  node id                                            TTL 8 s
//! onionrtc:rooms            zset  {h} scored by its expiry (unix s): max_rooms
//! onionrtc:joins:{a}        counter of joins per address, TTL 60 s
//! onionrtc:key-check        HMAC(room key, "key-check"): nodes with another key refuse joins
//! channel onionrtc:node:{node id}   "{member id}\n{JSON text}" for a member of that node
//! ```
//!
//! `{h}` is `HMAC(room key, "redis-room:" + name)`, `{a}` the same of the
//! client's address (IPv6: its /64): room names and addresses are never
//! keys or values. Joins, leaves and the sweep are Lua scripts (atomic:
//! the size and room limits hold across nodes); they publish `peer-joined`
//! and `peer-left` to the other nodes themselves. Every [`TICK`] each node
//! refreshes the TTLs of its members and their rooms (re-creating them
//! after Redis lost its data), then removes from the rooms it has members
//! in every member whose key expired (its node stopped): the survivors get
//! `peer-left` within TTL + TICK = 10 s of a node's crash.
//!
//! Offers, answers and candidates are sanitized on the sender's node
//! before they are published; a node delivers what arrives on its channel
//! only to the member it names.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands as _, Script};

use crate::protocol::{self, ErrorCode};
use crate::rooms::{JoinInfo, Member, Route, Target, MAX_ROOM_SIZE};
use crate::store::RoomKey;

/// How long a member's and a room's keys live without a refresh.
pub const TTL: Duration = Duration::from_secs(8);
/// How often a node refreshes its members' keys and sweeps its rooms.
pub const TICK: Duration = Duration::from_secs(2);
/// The longest a Redis operation may take before a join is refused.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// The per-address join window.
const JOIN_WINDOW_SECS: u64 = 60;
/// Members refreshed per script call.
const REFRESH_BATCH: usize = 100;

const JOIN: &str = r#"
-- KEYS: room, rooms, member, key-check, joins
-- ARGV: h, id, node, max_size, max_rooms, call, started, ttl, check, joined text, joins limit, window
if tonumber(ARGV[11]) > 0 then
  local n = redis.call('INCR', KEYS[5])
  if n == 1 then redis.call('EXPIRE', KEYS[5], ARGV[12]) end
  if n > tonumber(ARGV[11]) then return {'too-many-joins'} end
end
local c = redis.call('GET', KEYS[4])
if not c then redis.call('SET', KEYS[4], ARGV[9]) elseif c ~= ARGV[9] then return {'key-mismatch'} end
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {'server-full'} end
  redis.call('HSET', KEYS[1], 'call', ARGV[6], 'started', ARGV[7], 'seq', 0)
end
local f = redis.call('HGETALL', KEYS[1])
local members, used = {}, {}
local call, started = ARGV[6], ARGV[7]
for i = 1, #f, 2 do
  local k, v = f[i], f[i + 1]
  if k == 'call' then call = v
  elseif k == 'started' then started = v
  elseif string.sub(k, 1, 2) == 'm:' then
    local id = string.sub(k, 3)
    if id == ARGV[2] then return {'collision'} end
    local node, side, seq = string.match(v, '^(%x+) (%d+) (%d+)$')
    if node then
      used[tonumber(side)] = true
      table.insert(members, {id, node, seq})
    end
  end
end
if #members >= tonumber(ARGV[4]) then return {'room-full'} end
local side = 0
while used[side] do side = side + 1 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'm:' .. ARGV[2], ARGV[3] .. ' ' .. side .. ' ' .. seq)
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[8]), ARGV[1])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[8])
local out = {'ok', call, started, tostring(side), tostring(seq)}
for _, m in ipairs(members) do
  if m[2] ~= ARGV[3] then
    redis.call('PUBLISH', 'onionrtc:node:' .. m[2], m[1] .. '\n' .. ARGV[10])
  end
  table.insert(out, m[1] .. ' ' .. m[2] .. ' ' .. m[3])
end
return out
"#;

const LEAVE: &str = r#"
-- KEYS: room, rooms, member; ARGV: h, id, node, left text
redis.call('DEL', KEYS[3])
if redis.call('HDEL', KEYS[1], 'm:' .. ARGV[2]) == 0 then return 0 end
local f = redis.call('HGETALL', KEYS[1])
local left = 0
for i = 1, #f, 2 do
  if string.sub(f[i], 1, 2) == 'm:' then
    left = left + 1
    local node = string.match(f[i + 1], '^(%x+) ')
    if node and node ~= ARGV[3] then
      redis.call('PUBLISH', 'onionrtc:node:' .. node, string.sub(f[i], 3) .. '\n' .. ARGV[4])
    end
  end
end
if left == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
"#;

const REFRESH: &str = r#"
-- KEYS: rooms, then per member: room, member
-- ARGV: node, ttl, then per member: h, id, side, call, started, seq
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[2])
local n = (#KEYS - 1) / 2
for i = 0, n - 1 do
  local room, member = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local a = 3 + 6 * i
  local h, id, side, call, started, seq =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  if redis.call('EXISTS', room) == 0 then
    redis.call('HSET', room, 'call', call, 'started', started, 'seq', 0)
  end
  if redis.call('HEXISTS', room, 'm:' .. id) == 0 then
    -- Back after Redis lost it: the same slot and place in the join order.
    redis.call('HSET', room, 'm:' .. id, ARGV[1] .. ' ' .. side .. ' ' .. seq)
    if tonumber(redis.call('HGET', room, 'seq') or '0') < tonumber(seq) then
      redis.call('HSET', room, 'seq', seq)
    end
  end
  redis.call('EXPIRE', room, ttl)
  redis.call('ZADD', KEYS[1], now + ttl, h)
  redis.call('SET', member, ARGV[1], 'EX', ttl)
end
return n
"#;

const SWEEP: &str = r#"
-- KEYS: rooms, then the rooms to sweep; ARGV: node, then their hashes
local out = {}
for r = 2, #KEYS do
  local h = ARGV[r]
  local f = redis.call('HGETALL', KEYS[r])
  local gone, alive = {}, {}
  for i = 1, #f, 2 do
    if string.sub(f[i], 1, 2) == 'm:' then
      local id = string.sub(f[i], 3)
      local node = string.match(f[i + 1], '^(%x+) ')
      if redis.call('EXISTS', 'onionrtc:member:' .. h .. ':' .. id) == 0 then
        redis.call('HDEL', KEYS[r], f[i])
        table.insert(gone, id)
        table.insert(out, h .. ' ' .. id)
      else
        table.insert(alive, {id, node})
      end
    end
  end
  for _, g in ipairs(gone) do
    local text = '{"memberId":"' .. g .. '","type":"peer-left"}'
    for _, m in ipairs(alive) do
      if m[2] and m[2] ~= ARGV[1] then
        redis.call('PUBLISH', 'onionrtc:node:' .. m[2], m[1] .. '\n' .. text)
      end
    end
  end
  if #gone > 0 and #alive == 0 then
    redis.call('DEL', KEYS[r])
    redis.call('ZREM', KEYS[1], h)
  end
end
return out
"#;

const ROOMS: &str = "onionrtc:rooms";
const KEY_CHECK: &str = "onionrtc:key-check";

/// Why a `redis_url` is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// Not a `redis://`, `rediss://` or `redis+unix://` URL.
    #[error("give a redis://, rediss:// or redis+unix:// URL")]
    Scheme,
    /// `redis://` to a host that is not loopback.
    #[error(
        "a Redis that is not on this machine needs TLS: use rediss:// \
         (redis:// is accepted for 127.0.0.0/8, ::1 and localhost only)"
    )]
    NeedsTls,
}

/// Checks a `redis_url`: a known scheme, and `rediss://` (TLS) unless the
/// host is loopback or a Unix socket. The error names no part of the URL
/// (it may hold a password).
pub fn check_url(url: &str) -> Result<(), UrlError> {
    let parsed = redis::parse_redis_url(url).ok_or(UrlError::Scheme)?;
    match parsed.scheme() {
        "rediss" | "valkeys" => Ok(()),
        "redis+unix" | "valkey+unix" | "unix" => Ok(()),
        "redis" | "valkey" => {
            let host = parsed.host_str().unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(UrlError::NeedsTls)
            }
        }
        _ => Err(UrlError::Scheme),
    }
}

/// `url` as it may be printed: the password replaced by `<redacted>`.
pub fn redact(url: &str) -> String {
    match redis::parse_redis_url(url) {
        Some(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("<redacted>"));
            }
            u.to_string()
        }
        None => "<unreadable Redis URL, not shown>".into(),
    }
}

/// A member of this node.
#[derive(Debug)]
struct Local {
    room: String,
    member: Member,
    side: u8,
    call: String,
    started: i64,
    /// Its place in the room's join order.
    seq: u64,
}

#[derive(Debug, Default)]
struct Registry {
    /// By member id.
    members: HashMap<String, Local>,
    /// Room hash → ids of this node's members there.
    rooms: HashMap<String, Vec<String>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    pub(crate) errors: AtomicU64,
    pub(crate) outages: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) swept: AtomicU64,
}

/// This node's view of the rooms in Redis.
pub(crate) struct Cluster {
    node: String,
    channel: String,
    client: redis::Client,
    conn: OnceLock<ConnectionManager>,
    key: RoomKey,
    check: String,
    max_rooms: usize,
    max_size: usize,
    joins_per_minute: u32,
    local: Mutex<Registry>,
    /// Redis unreachable (logged once per outage).
    down: AtomicBool,
    /// The pub/sub subscription is live.
    subscribed: AtomicBool,
    mismatch_logged: AtomicBool,
    pub(crate) counters: ClusterCounters,
    join: Script,
    leave: Script,
    refresh: Script,
    sweep: Script,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("max_rooms", &self.max_rooms)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

/// Why a Redis operation failed.
#[derive(Debug)]
enum OpError {
    Redis(redis::RedisError),
    Timeout,
    NotStarted,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Redis(e) => write!(f, "{}", e.category()),
            OpError::Timeout => write!(f, "no answer within {OP_TIMEOUT:?}"),
            OpError::NotStarted => f.write_str("not connected yet"),
        }
    }
}

impl Cluster {
    /// A cluster member for `url` (checked with [`check_url`] by the
    /// caller). Connects nothing yet: see [`Cluster::start`].
    pub(crate) fn new(
        url: &str,
        key: RoomKey,
        max_rooms: usize,
        max_size: usize,
        joins_per_minute: u32,
    ) -> Result<Cluster, String> {
        if url.starts_with("rediss:") || url.starts_with("valkeys:") {
            // rustls needs one process-wide provider; arti installs the
            // same one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(url)
            .map_err(|e| format!("invalid redis_url ({})", e.category()))?;
        let node = format!("{:016x}", rand::random::<u64>());
        let check = key.hash("redis-key-check");
        Ok(Cluster {
            channel: format!("onionrtc:node:{node}"),
            node,
            client,
            conn: OnceLock::new(),
            key,
            check,
            max_rooms,
            max_size: max_size.clamp(2, MAX_ROOM_SIZE),
            joins_per_minute,
            local: Mutex::new(Registry::default()),
            down: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            mismatch_logged: AtomicBool::new(false),
            counters: ClusterCounters::default(),
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
            refresh: Script::new(REFRESH),
            sweep: Script::new(SWEEP),
        })
    }

    /// Creates the connection (reconnecting with back-off) and runs the
    /// subscription and the refresh/sweep ticks until `stop`.
    pub(crate) fn start(self: &Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(4)
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(conn) => {
                let _ = self.conn.set(conn);
            }
            Err(e) => {
                tracing::error!("signal: cannot set up the Redis connection: {e}");
                return;
            }
        }
        tracing::info!(node = %self.node, "signal: rooms on Redis");
        tokio::spawn(Arc::clone(self).subscriber(stop.clone()));
        tokio::spawn(Arc::clone(self).ticker(stop));
    }

    /// Waits (at most `limit`) until the subscription is live, so that a
    /// node that has just started does not refuse its first joins; a
    /// Redis that is down at startup is noted by the tick, not here.
    pub(crate) async fn ready(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.subscribed.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room name's form in Redis.
    fn room_hash(&self, room: &str) -> String {
        self.key.hash(&format!("redis-room:{room}"))
    }

    fn conn(&self) -> Result<ConnectionManager, OpError> {
        self.conn.get().cloned().ok_or(OpError::NotStarted)
    }

    /// Runs `op` with [`OP_TIMEOUT`]; notes the outage or its end.
    async fn op<T, F>(&self, op: F) -> Result<T, OpError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let r = match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(OpError::Redis(e)),
            Err(_) => Err(OpError::Timeout),
        };
        match &r {
            Ok(_) => self.up(),
            Err(e) => self.failed(e),
        }
        r
    }

    fn up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("signal: Redis is reachable again; joins accepted");
        }
    }

    fn failed(&self, e: &OpError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::AcqRel) {
            self.counters.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "signal: Redis unreachable ({e}): new joins are refused (server-unavailable) \
                 until it returns; calls in progress go on"
            );
        }
    }

    /// Rooms with members of this node.
    pub(crate) fn rooms(&self) -> usize {
        self.registry().rooms.len()
    }

    /// Members of this node.
    pub(crate) fn members(&self) -> usize {
        self.registry().members.len()
    }

    /// Whether Redis answered the last operation and the subscription is live.
    pub(crate) fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire) && self.subscribed.load(Ordering::Acquire)
    }

    /// Joins `member` (from `ip`) to `room`.
    pub(crate) async fn join(
        &self,
        room: &str,
        ip: IpAddr,
        member: Member,
        now_ms: i64,
    ) -> Result<JoinInfo, ErrorCode> {
        if !self.subscribed.load(Ordering::Acquire) {
            return Err(ErrorCode::ServerUnavailable);
        }
        let h = self.room_hash(room);
        let addr = self
            .key
            .hash(&format!("redis-addr:{}", crate::ratelimit::bucket_key(ip)));
        let call = format!("{:032x}", rand::random::<u128>());
        let mut conn = self.conn().map_err(|_| ErrorCode::ServerUnavailable)?;
        // 64 random bits: a collision is next to impossible, but an id must
        // name one member, so draw again (bounded) if it happens.
        for _ in 0..4 {
            let id = protocol::new_member_id();
            let joined = protocol::peer("peer-joined", &id);
            let mut inv = self.join.prepare_invoke();
            inv.key(format!("onionrtc:room:{h}"))
                .key(ROOMS)
                .key(format!("onionrtc:member:{h}:{id}"))
                .key(KEY_CHECK)
                .key(format!("onionrtc:joins:{addr}"))
                .arg(&h)
                .arg(&id)
                .arg(&self.node)
                .arg(self.max_size)
                .arg(self.max_rooms)
                .arg(&call)
                .arg(now_ms)
                .arg(TTL.as_secs())
                .arg(&self.check)
                .arg(&joined)
                .arg(self.joins_per_minute)
                .arg(JOIN_WINDOW_SECS);
            let out: Vec<String> = self
                .op(inv.invoke_async(&mut conn))
                .await
                .map_err(|_| ErrorCode::ServerUnavailable)?;
            let (status, rest) = out.split_first().ok_or(ErrorCode::ServerUnavailable)?;
            match status.as_str() {
                "ok" => {}
                "collision" => continue,
                "too-many-joins" => return Err(ErrorCode::TooManyJoins),
                "server-full" => return Err(ErrorCode::ServerFull),
                "room-full" => return Err(ErrorCode::RoomFull),
                "key-mismatch" => {
                    if !self.mismatch_logged.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            "signal: another node in this Redis uses a different room key: copy \
                             one DATA_DIR/room-key to every node (joins are refused until then)"
                        );
                    }
                    return Err(ErrorCode::ServerUnavailable);
                }
                _ => return Err(ErrorCode::ServerUnavailable),
            }
            let (info, seq) = parse_joined(rest, id).ok_or(ErrorCode::ServerUnavailable)?;
            let mut reg = self.registry();
            let Registry { members, rooms } = &mut *reg;
            // Members of this node were not told by the script.
            if let Some(ids) = rooms.get(&h) {
                for other in ids {
                    if let Some(l) = members.get(other) {
                        l.member.deliver(joined.clone());
                    }
                }
            }
            rooms
                .entry(h.clone())
                .or_default()
                .push(info.member_id.clone());
            members.insert(
                info.member_id.clone(),
                Local {
                    room: h,
                    member,
                    side: info.side,
                    call: info.call_id.clone(),
                    started: info.started_ms,
                    seq,
                },
            );
            return Ok(info);
        }
        Err(ErrorCode::ServerUnavailable)
    }

    /// Removes this node's member `id` from `room`: this node's other
    /// members there are told `peer-left` at once, the others through
    /// Redis (or, if Redis is unreachable, by the sweep after the TTL).
    pub(crate) async fn leave(&self, room: &str, id: &str) {
        let h = self.room_hash(room);
        let left = protocol::peer("peer-left", id);
        {
            let mut reg = self.registry();
            if reg.members.remove(id).is_none() {
                return;
            }
            let Registry { members, rooms } = &mut *reg;
            if let Some(ids) = rooms.get_mut(&h) {
                ids.retain(|m| m != id);
                for other in ids.iter() {
                    if let Some(l) = members.get(other) {
                        l.member.deliver(left.clone());
                    }
                }
                if ids.is_empty() {
                    rooms.remove(&h);
                }
            }
        }
        let Ok(mut conn) = self.conn() else { return };
        let mut inv = self.leave.prepare_invoke();
        inv.key(format!("onionrtc:room:{h}"))
            .key(ROOMS)
            .key(format!("onionrtc:member:{h}:{id}"))
            .arg(&h)
            .arg(id)
            .arg(&self.node)
            .arg(&left);
        let _: Result<i64, _> = self.op(inv.invoke_async(&mut conn)).await;
    }

    /// Where a message of member `from` in `room` goes (the rules of
    /// [`crate::rooms::Rooms::route`]).
    pub(crate) async fn route(
        &self,
        room: &str,
        from: &str,
        to: Option<&str>,
    ) -> Result<Route, ErrorCode> {
        let h = self.room_hash(room);
        let mut conn = self.conn().map_err(|_| ErrorCode::ServerUnavailable)?;
        let fields: HashMap<String, String> = self
            .op(conn.hgetall(format!("onionrtc:room:{h}")))
            .await
            .map_err(|_| ErrorCode::ServerUnavailable)?;
        let members = members_of(&fields);
        if !members.iter().any(|m| m.id == from) {
            return Err(ErrorCode::NotJoined);
        }
        let others = members.iter().filter(|m| m.id != from);
        let target = crate::rooms::pick(others, to, |m| &m.id)?;
        let to = if target.node == self.node {
            match self.registry().members.get(&target.id) {
                Some(l) => Target::Local(l.member.clone()),
                // Gone from this node a moment ago: nobody to deliver to.
                None => return Err(ErrorCode::NoSuchMember),
            }
        } else {
            Target::Remote {
                node: target.node.clone(),
                id: target.id.clone(),
            }
        };
        Ok(Route {
            from: from.to_owned(),
            to,
        })
    }

    /// Publishes `text` for member `id` of `node`; false if Redis did not
    /// take it.
    pub(crate) async fn publish(&self, node: &str, id: &str, text: &str) -> bool {
        let Ok(mut conn) = self.conn() else {
            return false;
        };
        let payload = format!("{id}\n{text}");
        let r: Result<i64, _> = self
            .op(conn.publish(format!("onionrtc:node:{node}"), payload))
            .await;
        if r.is_ok() {
            self.counters.published.fetch_add(1, Ordering::Relaxed);
        }
        r.is_ok()
    }

    /// One message from this node's channel: delivered to the member it
    /// names if that member is here, else dropped.
    fn on_message(&self, payload: &[u8]) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let Some((id, text)) = split_payload(payload) else {
            return;
        };
        if let Some(l) = self.registry().members.get(id) {
            l.member.deliver(text.to_owned());
        }
    }

    async fn subscriber(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut delay = Duration::from_millis(100);
        loop {
            let connected = tokio::time::timeout(OP_TIMEOUT, async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(ps)
            })
            .await;
            match connected {
                // Outages are noted (and logged once) by the command path,
                // which the tick exercises every 2 s; the subscription only
                // gates joins, so that its reconnection cannot make the log
                // flap.
                Ok(Ok(mut ps)) => {
                    delay = Duration::from_millis(100);
                    self.subscribed.store(true, Ordering::Release);
                    tracing::debug!("signal: subscribed to {}", self.channel);
                    let mut stream = ps.on_message();
                    loop {
                        tokio::select! {
                            () = crate::ws::stopped(&mut stop) => return,
                            msg = stream.next() => match msg {
                                Some(m) => self.on_message(m.get_payload_bytes()),
                                None => break,
                            },
                        }
                    }
                    self.subscribed.store(false, Ordering::Release);
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("signal: Redis subscription lost; reconnecting");
                }
                Ok(Err(e)) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("signal: Redis subscription: {}", e.category());
                }
                Err(_) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::select! {
                () = crate::ws::stopped(&mut stop) => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn ticker(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = crate::ws::stopped(&mut stop) => return,
                _ = tick.tick() => self.tick().await,
            }
        }
    }

    /// Refreshes this node's members and sweeps their rooms.
    async fn tick(&self) {
        let Ok(mut conn) = self.conn() else { return };
        let (members, rooms): (Vec<MemberRow>, Vec<String>) = {
            let reg = self.registry();
            (
                reg.members
                    .iter()
                    .map(|(id, l)| {
                        (
                            l.room.clone(),
                            id.clone(),
                            l.side,
                            l.call.clone(),
                            l.started,
                            l.seq,
                        )
                    })
                    .collect(),
                reg.rooms.keys().cloned().collect(),
            )
        };
        if members.is_empty() {
            // Keep the outage state current (joins depend on it).
            let _: Result<String, _> = self.op(redis::cmd("PING").query_async(&mut conn)).await;
            return;
        }
        for batch in members.chunks(REFRESH_BATCH) {
            let mut inv = self.refresh.prepare_invoke();
            inv.key(ROOMS).arg(&self.node).arg(TTL.as_secs());
            for (h, id, side, call, started, seq) in batch {
                inv.key(format!("onionrtc:room:{h}"))
                    .key(format!("onionrtc:member:{h}:{id}"))
                    .arg(h)
                    .arg(id)
                    .arg(*side)
                    .arg(call)
                    .arg(*started)
                    .arg(*seq);
            }
            let r: Result<i64, _> = self.op(inv.invoke_async(&mut conn)).await;
            if r.is_err() {
                return;
            }
        }
        for batch in rooms.chunks(REFRESH_BATCH) {
            let mut inv = self.sweep.prepare_invoke();
            inv.key(ROOMS).arg(&self.node);
            for h in batch {
                inv.key(format!("onionrtc:room:{h}")).arg(h);
            }
            let Ok(gone) = self.op::<Vec<String>, _>(inv.invoke_async(&mut conn)).await else {
                return;
            };
            let reg = self.registry();
            for entry in gone {
                let Some((h, id)) = entry.split_once(' ') else {
                    continue;
                };
                self.counters.swept.fetch_add(1, Ordering::Relaxed);
                let left = protocol::peer("peer-left", id);
                for other in reg.rooms.get(h).into_iter().flatten() {
                    if let Some(l) = reg.members.get(other) {
                        l.member.deliver(left.clone());
                    }
                }
            }
        }
    }
}

/// A member of this node as the tick refreshes it: room hash, id, side,
/// call id, call start, place in the join order.
type MemberRow = (String, String, u8, String, i64, u64);

/// A member as the room's hash lists it.
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    id: String,
    node: String,
    seq: u64,
}

/// The members in a room's hash fields, in the order they joined.
fn members_of(fields: &HashMap<String, String>) -> Vec<Listed> {
    let mut out: Vec<Listed> = fields
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("m:")?;
            let (node, _side, seq) = parse_listed(v)?;
            Some(Listed {
                id: id.to_owned(),
                node: node.to_owned(),
                seq,
            })
        })
        .collect();
    out.sort_by_key(|m| m.seq);
    out
}

/// `"node side seq"`.
fn parse_listed(v: &str) -> Option<(&str, u8, u64)> {
    let mut it = v.split(' ');
    let node = it.next().filter(|n| !n.is_empty())?;
    let side = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    it.next().is_none().then_some((node, side, seq))
}

/// The join script's answer after `ok`: call, started, side, the
/// joiner's seq, then `"id node seq"` per member present.
fn parse_joined(rest: &[String], member_id: String) -> Option<(JoinInfo, u64)> {
    let [call, started, side, seq, listed @ ..] = rest else {
        return None;
    };
    let mut present: Vec<(u64, String)> = listed
        .iter()
        .filter_map(|l| {
            let mut it = l.split(' ');
            let id = it.next()?;
            let _node = it.next()?;
            let seq = it.next()?.parse().ok()?;
            protocol::valid_member_id(id).then(|| (seq, id.to_owned()))
        })
        .collect();
    present.sort();
    let info = JoinInfo {
        call_id: call.clone(),
        started_ms: started.parse().ok()?,
        side: side.parse().ok()?,
        member_id,
        members: present.into_iter().map(|(_, id)| id).collect(),
    };
    Some((info, seq.parse().ok()?))
}

/// `"{member id}\n{text}"` from a node channel.
fn split_payload(payload: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(payload).ok()?;
    let (id, text) = s.split_once('\n')?;
    protocol::valid_member_id(id).then_some((id, text))
}

/// Reads `data` as everything this node takes from Redis — a message on
/// its channel, a room's hash fields (`NUL`-separated `field NUL value`
/// pairs) and the join script's answer (`NUL`-separated) — as the node
/// does, without a Redis: the fuzz target `redis_room_data` drives it.
/// Never panics; what parses is consistent (members sorted by their
/// place, valid member ids).
pub fn check_redis_data(data: &[u8]) {
    if let Some((id, _text)) = split_payload(data) {
        assert!(protocol::valid_member_id(id));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parts: Vec<String> = text.split('\0').map(str::to_owned).collect();
    let fields: HashMap<String, String> = parts
        .chunks(2)
        .filter_map(|c| match c {
            [k, v] => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let members = members_of(&fields);
    assert!(members.windows(2).all(|w| w[0].seq <= w[1].seq));
    if let Some((info, _seq)) = parse_joined(&parts, protocol::new_member_id()) {
        assert!(info.members.iter().all(|m| protocol::valid_member_id(m)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(check_url("redis://127.0.0.1:6379/"), Ok(()));
        assert_eq!(check_url("redis://:pw@127.0.0.2:1/0"), Ok(()));
        assert_eq!(check_url("redis://localhost/"), Ok(()));
        assert_eq!(check_url("redis://[::1]:6379"), Ok(()));
        assert_eq!(check_url("rediss://redis.example:6380/"), Ok(()));
        assert_eq!(check_url("redis+unix:///run/redis.sock"), Ok(()));
        assert_eq!(
            check_url("redis://:pw@redis.example/"),
            Err(UrlError::NeedsTls)
        );
        assert_eq!(check_url("redis://10.0.0.5/"), Err(UrlError::NeedsTls));
        assert_eq!(check_url("http://127.0.0.1/"), Err(UrlError::Scheme));
        assert_eq!(check_url("127.0.0.1:6379"), Err(UrlError::Scheme));
        let shown = redact("rediss://user:s3cret@redis.example:6380/2");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis.example:6380"), "{shown}");
        assert!(!redact("redis://:s3cret@127.0.0.1/").contains("s3cret"));
        assert!(!UrlError::NeedsTls.to_string().contains("example"));
    }

    #[test]
    fn parsing_what_redis_holds() {
        assert_eq!(parse_listed("00ff 3 17"), Some(("00ff", 3, 17)));
        for bad in ["", "a", "a 1", "a x 1", "a 1 2 3", " 1 2", "a 300 1"] {
            assert_eq!(parse_listed(bad), None, "{bad}");
        }
        let mut f = HashMap::new();
        f.insert("call".to_owned(), "c".to_owned());
        f.insert("m:bbbbbbbbbbbbbbbb".to_owned(), "n2 1 9".to_owned());
        f.insert("m:aaaaaaaaaaaaaaaa".to_owned(), "n1 0 4".to_owned());
        f.insert("m:cccccccccccccccc".to_owned(), "junk".to_owned());
        let m = members_of(&f);
        assert_eq!(
            m.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
            ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]
        );
        let rest: Vec<String> = [
            "call",
            "17",
            "2",
            "6",
            "bbbbbbbbbbbbbbbb n 5",
            "aaaaaaaaaaaaaaaa n 1",
            "notanid x 3",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let j = parse_joined(&rest, "x".into());
        assert_eq!(
            j.map(|(j, seq)| (j.started_ms, j.side, seq, j.members)),
            Some((
                17,
                2,
                6,
                vec!["aaaaaaaaaaaaaaaa".to_owned(), "bbbbbbbbbbbbbbbb".to_owned()]
            ))
        );
        assert!(parse_joined(&rest[..3], "x".into()).is_none());
        assert_eq!(
            split_payload(b"0123456789abcdef\n{\"a\":1}"),
            Some(("0123456789abcdef", "{\"a\":1}"))
        );
        assert_eq!(split_payload(b"nope\n{}"), None);
        assert_eq!(split_payload(b"0123456789abcdef"), None);
        assert_eq!(split_payload(&[0xff, b'\n']), None);
        for data in [
            &b""[..],
            b"0123456789abcdef\n{}",
            b"c\0\x0017\x002\x006\x00aaaaaaaaaaaaaaaa n 1",
            b"m:x\0n 1 2\0m:y\0n 2 1",
            &[0xff, 0, 0xfe],
        ] {
            check_redis_data(data);
        }
    }
}

//! Rooms: up to `max_room_size` members (a full mesh of peer connections
//! between them), a random member id per member, a random call id per room
//! lifetime, and delivery of messages to one member through its bounded
//! queue.
//!
//! All operations take one short `std` mutex and never await; delivering
//! is `try_send`, and a member whose queue is full is told to close
//! (its [`Member::kill`] is notified) instead of making anyone wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use crate::protocol::{self, ErrorCode};

/// The largest room the server allows, whatever the configuration says: a
/// full mesh of 8 is 28 peer connections, 7 per member.
pub const MAX_ROOM_SIZE: usize = 8;

/// A room member as the registry sees it: its connection's outgoing queue.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The connection's id (unique per process).
    pub(crate) conn: u64,
    /// Its outgoing queue of JSON text frames.
    pub(crate) tx: mpsc::Sender<String>,
    /// Notified when the connection must close (its queue overflowed).
    pub(crate) kill: Arc<Notify>,
}

impl Member {
    pub(crate) fn deliver(&self, text: String) {
        if self.tx.try_send(text).is_err() {
            self.kill.notify_one();
        }
    }
}

/// A member in a room: its queue, random id and statistics slot.
#[derive(Debug)]
struct Present {
    member: Member,
    id: String,
    side: u8,
}

/// What a successful join tells the joiner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinInfo {
    /// The room's call id.
    pub(crate) call_id: String,
    /// When the room (its call) started, ms since the epoch.
    pub(crate) started_ms: i64,
    /// The member's statistics slot: the smallest one free, 0–7.
    pub(crate) side: u8,
    /// The member's random id.
    pub(crate) member_id: String,
    /// The ids of the members already there, in the order they joined.
    pub(crate) members: Vec<String>,
}

#[derive(Debug)]
struct Room {
    call_id: String,
    started_ms: i64,
    /// In the order they joined.
    members: Vec<Present>,
}

/// Where a message goes: the sender's id and the receiver.
#[derive(Debug)]
pub(crate) struct Route {
    /// The sender's member id (the `from` of what is forwarded).
    pub(crate) from: String,
    /// The receiving member.
    pub(crate) to: Target,
}

/// The receiving member: on this node, or (rooms on Redis) on another.
#[derive(Debug)]
pub(crate) enum Target {
    /// Its queue on this node.
    Local(Member),
    /// Member `id` of node `node`, reached through Redis.
    Remote { node: String, id: String },
}

/// Where rooms live: in this process (the default), or in Redis shared by
/// several nodes ([`crate::cluster`]).
#[derive(Debug)]
pub(crate) enum RoomBackend {
    Local(Rooms),
    Redis(Arc<crate::cluster::Cluster>),
}

impl RoomBackend {
    /// Rooms at the moment (on Redis: rooms with members on this node).
    pub(crate) fn len(&self) -> usize {
        match self {
            RoomBackend::Local(r) => r.len(),
            RoomBackend::Redis(c) => c.rooms(),
        }
    }

    /// Members at the moment (on Redis: members on this node).
    pub(crate) fn members(&self) -> usize {
        match self {
            RoomBackend::Local(r) => r.members(),
            RoomBackend::Redis(c) => c.members(),
        }
    }

    /// Joins `member` to `room`. In process, `limiter` counts the join of
    /// `ip` first; on Redis the count is Redis's, shared by the nodes.
    pub(crate) async fn join(
        &self,
        room: &str,
        ip: std::net::IpAddr,
        limiter: &crate::ratelimit::JoinLimiter,
        member: Member,
        now_ms: i64,
    ) -> Result<JoinInfo, ErrorCode> {
        match self {
            RoomBackend::Local(r) => {
                if !limiter.allow(ip, std::time::Instant::now()) {
                    return Err(ErrorCode::TooManyJoins);
                }
                r.join(room, member, now_ms)
            }
            RoomBackend::Redis(c) => c.join(room, ip, member, now_ms).await,
        }
    }

    /// Connection `conn`, member `id`, leaves `room`.
    pub(crate) async fn leave(&self, room: &str, conn: u64, id: &str) {
        match self {
            RoomBackend::Local(r) => r.leave(room, conn),
            RoomBackend::Redis(c) => c.leave(room, id).await,
        }
    }

    /// Where a message of connection `conn`, member `id`, goes.
    pub(crate) async fn route(
        &self,
        room: &str,
        conn: u64,
        id: &str,
        to: Option<&str>,
    ) -> Result<Route, ErrorCode> {
        match self {
            RoomBackend::Local(r) => r.route(room, conn, to),
            RoomBackend::Redis(c) => c.route(room, id, to).await,
        }
    }

    /// Delivers `text` along `route`; false if it could not be handed on
    /// (Redis unreachable).
    pub(crate) async fn deliver(&self, route: &Route, text: String) -> bool {
        match (&route.to, self) {
            (Target::Local(m), _) => {
                m.deliver(text);
                true
            }
            (Target::Remote { node, id }, RoomBackend::Redis(c)) => {
                c.publish(node, id, &text).await
            }
            (Target::Remote { .. }, RoomBackend::Local(_)) => false,
        }
    }
}

/// The room registry.
#[derive(Debug)]
pub(crate) struct Rooms {
    max_rooms: usize,
    max_size: usize,
    inner: Mutex<HashMap<String, Room>>,
}

impl Rooms {
    /// `max_size` is capped to 2..=[`MAX_ROOM_SIZE`].
    pub(crate) fn new(max_rooms: usize, max_size: usize) -> Self {
        Rooms {
            max_rooms,
            max_size: max_size.clamp(2, MAX_ROOM_SIZE),
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rooms at the moment.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Members in all rooms at the moment.
    pub(crate) fn members(&self) -> usize {
        self.lock().values().map(|r| r.members.len()).sum()
    }

    /// Adds `member` to `room` (creating it) with a fresh random id, and
    /// tells the members already there `peer-joined`.
    pub(crate) fn join(
        &self,
        room: &str,
        member: Member,
        now_ms: i64,
    ) -> Result<JoinInfo, ErrorCode> {
        let mut rooms = self.lock();
        if !rooms.contains_key(room) && rooms.len() >= self.max_rooms {
            return Err(ErrorCode::ServerFull);
        }
        let entry = rooms.entry(room.to_owned()).or_insert_with(|| Room {
            call_id: format!("{:032x}", rand::random::<u128>()),
            started_ms: now_ms,
            members: Vec::new(),
        });
        if entry.members.len() >= self.max_size {
            return Err(ErrorCode::RoomFull);
        }
        let side = (0..=u8::MAX)
            .find(|s| entry.members.iter().all(|p| p.side != *s))
            .unwrap_or(0);
        // 64 random bits: a collision is next to impossible, but an id must
        // name one member, so draw again (bounded) if it happens.
        let mut id = protocol::new_member_id();
        for _ in 0..8 {
            if entry.members.iter().all(|p| p.id != id) {
                break;
            }
            id = protocol::new_member_id();
        }
        let members: Vec<String> = entry.members.iter().map(|p| p.id.clone()).collect();
        let joined = protocol::peer("peer-joined", &id);
        for p in &entry.members {
            p.member.deliver(joined.clone());
        }
        entry.members.push(Present {
            member,
            id: id.clone(),
            side,
        });
        Ok(JoinInfo {
            call_id: entry.call_id.clone(),
            started_ms: entry.started_ms,
            side,
            member_id: id,
            members,
        })
    }

    /// Removes connection `conn` from `room`; the others are told
    /// `peer-left`; an empty room is deleted.
    pub(crate) fn leave(&self, room: &str, conn: u64) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        if let Some(i) = entry.members.iter().position(|p| p.member.conn == conn) {
            let gone = entry.members.remove(i);
            let left = protocol::peer("peer-left", &gone.id);
            for p in &entry.members {
                p.member.deliver(left.clone());
            }
        }
        if entry.members.is_empty() {
            rooms.remove(room);
        }
    }

    /// Where a message of `conn` in `room` goes: to the member `to` names,
    /// or without `to` to the one other member (`to-required` when there
    /// are several, `no-peer` when there is none). `to` naming the sender
    /// itself, a member of another room or nobody is `no-such-member`.
    pub(crate) fn route(
        &self,
        room: &str,
        conn: u64,
        to: Option<&str>,
    ) -> Result<Route, ErrorCode> {
        let rooms = self.lock();
        let entry = rooms.get(room).ok_or(ErrorCode::NotJoined)?;
        let from = entry
            .members
            .iter()
            .find(|p| p.member.conn == conn)
            .ok_or(ErrorCode::NotJoined)?;
        let others = entry.members.iter().filter(|p| p.member.conn != conn);
        let target = pick(others, to, |p| &p.id)?;
        Ok(Route {
            from: from.id.clone(),
            to: Target::Local(target.member.clone()),
        })
    }
}

/// The receiver among the sender's `others`: the one `to` names
/// (`no-such-member` if none), or without `to` the only one (`no-peer`
/// when there is none, `to-required` when there are several).
pub(crate) fn pick<'a, T>(
    mut others: impl Iterator<Item = &'a T>,
    to: Option<&str>,
    id: impl Fn(&T) -> &str,
) -> Result<&'a T, ErrorCode> {
    match to {
        Some(to) => others.find(|m| id(m) == to).ok_or(ErrorCode::NoSuchMember),
        None => {
            let first = others.next().ok_or(ErrorCode::NoPeer)?;
            if others.next().is_some() {
                return Err(ErrorCode::ToRequired);
            }
            Ok(first)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(conn: u64, cap: usize) -> (Member, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(cap);
        (
            Member {
                conn,
                tx,
                kill: Arc::new(Notify::new()),
            },
            rx,
        )
    }

    fn forward(
        rooms: &Rooms,
        room: &str,
        conn: u64,
        to: Option<&str>,
    ) -> Result<String, ErrorCode> {
        let r = rooms.route(room, conn, to)?;
        let Target::Local(m) = r.to else {
            panic!("remote target in process");
        };
        m.deliver("x".into());
        Ok(r.from)
    }

    #[test]
    fn two_members_then_full() {
        let rooms = Rooms::new(10, 2);
        let (a, mut arx) = member(1, 4);
        let (b, _brx) = member(2, 4);
        let (c, _crx) = member(3, 4);
        let ja = rooms.join("r", a, 5).ok();
        let jb = rooms.join("r", b, 6).ok();
        let (Some(ja), Some(jb)) = (ja, jb) else {
            panic!("join failed");
        };
        assert_eq!((ja.side, ja.members.len(), ja.started_ms), (0, 0, 5));
        assert_eq!((jb.side, jb.members.len(), jb.started_ms), (1, 1, 5));
        assert_eq!(jb.members, vec![ja.member_id.clone()]);
        assert_ne!(ja.member_id, jb.member_id);
        assert_eq!(ja.call_id, jb.call_id);
        assert_eq!(ja.call_id.len(), 32);
        assert_eq!(rooms.join("r", c, 7), Err(ErrorCode::RoomFull));
        assert_eq!(
            arx.try_recv().ok(),
            Some(protocol::peer("peer-joined", &jb.member_id))
        );
        assert_eq!(forward(&rooms, "r", 2, None), Ok(jb.member_id.clone()));
        assert_eq!(arx.try_recv().ok().as_deref(), Some("x"));
        rooms.leave("r", 2);
        assert_eq!(
            arx.try_recv().ok(),
            Some(protocol::peer("peer-left", &jb.member_id))
        );
        assert_eq!(forward(&rooms, "r", 1, None), Err(ErrorCode::NoPeer));
        rooms.leave("r", 1);
        assert_eq!(rooms.len(), 0);
        assert_eq!(rooms.members(), 0);
    }

    #[test]
    fn mesh_routing_by_member_id() {
        let rooms = Rooms::new(10, 20); // capped to MAX_ROOM_SIZE
        let mut rxs = Vec::new();
        let mut ids = Vec::new();
        for conn in 0..MAX_ROOM_SIZE as u64 {
            let (m, rx) = member(conn, 16);
            let j = rooms.join("r", m, 0).ok();
            let Some(j) = j else { panic!("join {conn}") };
            assert_eq!(j.members, ids);
            assert_eq!(usize::from(j.side), ids.len());
            ids.push(j.member_id);
            rxs.push(rx);
        }
        let (extra, _rx) = member(99, 4);
        assert_eq!(rooms.join("r", extra, 0), Err(ErrorCode::RoomFull));
        // Everyone before the last heard of everyone after them.
        for (i, rx) in rxs.iter_mut().enumerate() {
            for id in &ids[i + 1..] {
                assert_eq!(rx.try_recv().ok(), Some(protocol::peer("peer-joined", id)));
            }
            assert!(rx.try_recv().is_err());
        }
        // Addressed: only the named member gets it; the sender's id is
        // the server's, not anything the sender says.
        assert_eq!(forward(&rooms, "r", 3, Some(&ids[5])), Ok(ids[3].clone()));
        assert_eq!(rxs[5].try_recv().ok().as_deref(), Some("x"));
        for (i, rx) in rxs.iter_mut().enumerate() {
            if i != 5 {
                assert!(rx.try_recv().is_err(), "{i}");
            }
        }
        assert_eq!(forward(&rooms, "r", 3, None), Err(ErrorCode::ToRequired));
        assert_eq!(
            forward(&rooms, "r", 3, Some(&ids[3])),
            Err(ErrorCode::NoSuchMember)
        );
        assert_eq!(
            forward(&rooms, "r", 3, Some("0000000000000000")),
            Err(ErrorCode::NoSuchMember)
        );
        // A member of another room is not reachable.
        let (o, _orx) = member(100, 4);
        let other = rooms.join("s", o, 0).ok().map(|j| j.member_id);
        let Some(other) = other else { panic!("join s") };
        assert_eq!(
            forward(&rooms, "r", 3, Some(&other)),
            Err(ErrorCode::NoSuchMember)
        );
        assert_eq!(forward(&rooms, "s", 3, None), Err(ErrorCode::NotJoined));
        // Leaving frees the slot, which the next member takes.
        rooms.leave("r", 2);
        for (i, rx) in rxs.iter_mut().enumerate() {
            if i != 2 {
                assert_eq!(
                    rx.try_recv().ok(),
                    Some(protocol::peer("peer-left", &ids[2]))
                );
            }
        }
        let (n, _nrx) = member(50, 4);
        let j = rooms.join("r", n, 0).ok();
        assert_eq!(
            j.map(|j| (j.side, j.members.len())),
            Some((2, MAX_ROOM_SIZE - 1))
        );
    }

    #[test]
    fn many_joins_and_leaves_leave_no_state() {
        let rooms = Rooms::new(10, 6);
        let (a, mut arx) = member(1, 512);
        assert!(rooms.join("r", a, 0).is_ok());
        for conn in 2..102 {
            let (m, _rx) = member(conn, 4);
            assert!(rooms.join("r", m, 0).is_ok());
            rooms.leave("r", conn);
        }
        let mut n = 0;
        while arx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 200);
        assert_eq!(rooms.members(), 1);
        rooms.leave("r", 1);
        assert_eq!((rooms.len(), rooms.members()), (0, 0));
    }

    #[test]
    fn server_full_and_overflow_kills() {
        let rooms = Rooms::new(1, 6);
        let (a, _arx) = member(1, 1);
        let kill = Arc::clone(&a.kill);
        let (b, _brx) = member(2, 1);
        let (c, _crx) = member(3, 1);
        assert!(rooms.join("r", a, 0).is_ok());
        assert_eq!(rooms.join("s", c, 0), Err(ErrorCode::ServerFull));
        assert!(rooms.join("r", b, 0).is_ok()); // a's queue now holds peer-joined
        assert!(forward(&rooms, "r", 2, None).is_ok());
        // The queue was full: a is told to close.
        let notified = kill.notified();
        tokio::pin!(notified);
        assert!(notified.as_mut().enable());
    }
}

//! Rooms: at most two members, a random call id per room lifetime, and
//! delivery of messages to the other member through its bounded queue.
//!
//! All operations take one short `std` mutex and never await; delivering
//! is `try_send`, and a member whose queue is full is told to close
//! (its [`Member::kill`] is notified) instead of making anyone wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use crate::protocol::{self, ErrorCode};

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
    fn deliver(&self, text: String) {
        if self.tx.try_send(text).is_err() {
            self.kill.notify_one();
        }
    }
}

/// What a successful join tells the joiner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinInfo {
    /// The room's call id.
    pub(crate) call_id: String,
    /// When the room (its call) started, ms since the epoch.
    pub(crate) started_ms: i64,
    /// The member's slot: 0 or 1.
    pub(crate) side: u8,
    /// Members already there (0 or 1).
    pub(crate) peers: u8,
}

#[derive(Debug)]
struct Room {
    call_id: String,
    started_ms: i64,
    members: [Option<Member>; 2],
}

impl Room {
    fn other(&self, conn: u64) -> Option<&Member> {
        self.members.iter().flatten().find(|m| m.conn != conn)
    }
}

/// The room registry.
#[derive(Debug)]
pub(crate) struct Rooms {
    max_rooms: usize,
    inner: Mutex<HashMap<String, Room>>,
}

impl Rooms {
    pub(crate) fn new(max_rooms: usize) -> Self {
        Rooms {
            max_rooms,
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

    /// Adds `member` to `room` (creating it), and tells the member already
    /// there `peer-joined`.
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
            members: [None, None],
        });
        let Some(side) = entry.members.iter().position(Option::is_none) else {
            return Err(ErrorCode::RoomFull);
        };
        let peers = u8::from(entry.members.iter().any(Option::is_some));
        if let Some(other) = entry.other(member.conn) {
            other.deliver(protocol::bare("peer-joined"));
        }
        entry.members[side] = Some(member);
        Ok(JoinInfo {
            call_id: entry.call_id.clone(),
            started_ms: entry.started_ms,
            side: u8::try_from(side).unwrap_or(0),
            peers,
        })
    }

    /// Removes connection `conn` from `room`; the other member (if any) is
    /// told `peer-left`; an empty room is deleted.
    pub(crate) fn leave(&self, room: &str, conn: u64) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        let mut removed = false;
        for slot in entry.members.iter_mut() {
            if slot.as_ref().is_some_and(|m| m.conn == conn) {
                *slot = None;
                removed = true;
            }
        }
        if removed {
            if let Some(other) = entry.other(conn) {
                other.deliver(protocol::bare("peer-left"));
            }
        }
        if entry.members.iter().all(Option::is_none) {
            rooms.remove(room);
        }
    }

    /// Queues `text` for the member of `room` other than `conn`.
    pub(crate) fn forward(&self, room: &str, conn: u64, text: String) -> Result<(), ErrorCode> {
        let rooms = self.lock();
        let other = rooms
            .get(room)
            .and_then(|r| r.other(conn))
            .ok_or(ErrorCode::NoPeer)?;
        other.deliver(text);
        Ok(())
    }

    /// Whether `room` has a member other than `conn`.
    pub(crate) fn has_peer(&self, room: &str, conn: u64) -> bool {
        self.lock().get(room).and_then(|r| r.other(conn)).is_some()
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

    #[test]
    fn two_members_then_full() {
        let rooms = Rooms::new(10);
        let (a, mut arx) = member(1, 4);
        let (b, _brx) = member(2, 4);
        let (c, _crx) = member(3, 4);
        let ja = rooms.join("r", a, 5).ok();
        let jb = rooms.join("r", b, 6).ok();
        let (Some(ja), Some(jb)) = (ja, jb) else {
            panic!("join failed");
        };
        assert_eq!((ja.side, ja.peers, ja.started_ms), (0, 0, 5));
        assert_eq!((jb.side, jb.peers, jb.started_ms), (1, 1, 5));
        assert_eq!(ja.call_id, jb.call_id);
        assert_eq!(ja.call_id.len(), 32);
        assert_eq!(rooms.join("r", c, 7), Err(ErrorCode::RoomFull));
        assert_eq!(arx.try_recv().ok(), Some(protocol::bare("peer-joined")));
        assert_eq!(rooms.forward("r", 2, "x".into()), Ok(()));
        assert_eq!(arx.try_recv().ok().as_deref(), Some("x"));
        rooms.leave("r", 2);
        assert_eq!(arx.try_recv().ok(), Some(protocol::bare("peer-left")));
        assert_eq!(rooms.forward("r", 1, "x".into()), Err(ErrorCode::NoPeer));
        rooms.leave("r", 1);
        assert_eq!(rooms.len(), 0);
    }

    #[test]
    fn server_full_and_overflow_kills() {
        let rooms = Rooms::new(1);
        let (a, _arx) = member(1, 1);
        let kill = Arc::clone(&a.kill);
        let (b, _brx) = member(2, 1);
        let (c, _crx) = member(3, 1);
        assert!(rooms.join("r", a, 0).is_ok());
        assert_eq!(rooms.join("s", c, 0), Err(ErrorCode::ServerFull));
        assert!(rooms.join("r", b, 0).is_ok()); // a's queue now holds peer-joined
        assert_eq!(rooms.forward("r", 2, "x".into()), Ok(()));
        // The queue was full: a is told to close.
        let notified = kill.notified();
        tokio::pin!(notified);
        assert!(notified.as_mut().enable());
    }
}

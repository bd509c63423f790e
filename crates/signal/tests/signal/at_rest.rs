//! What the data directory holds at rest: no room name (a keyed hash), no
//! per-second byte counts or bit rates unless the operator opts in, modes
//! 0700/0600 whatever they were; a room is found by its name through the
//! API.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use signal::store::RoomKey;
use signal::SignalConfig;

use crate::support::{config, start_with_data_dir, Server, ADMIN, WAIT};

/// The room of the call.
const ROOM: &str = "alice-meets-bob-at-clinic-7f3k";
/// The room of a call stored by the previous version (schema 1).
const OLD_ROOM: &str = "carol-sees-dave-9q2w";
/// A per-second value of the schema-1 file (its call's second and last
/// sample, `OLD_TOTAL`, is the call's total).
const OLD_BYTES: i64 = 98_765_432;
const OLD_TOTAL: i64 = 99_000_017;

/// Per-second values the members send: cumulative byte counts that are
/// not a call's total, and bit rates (fractional, so SQLite keeps them as
/// 8-byte floats).
const A_SENT_1: i64 = 123_456_789;
const A_SENT_2: i64 = 150_000_001;
const A_RECEIVED_1: i64 = 111_111_111;
const B_SENT: i64 = 140_000_003;
const RATES: [f64; 3] = [876_543.25, 765_432.75, 654_321.5];

fn stats(sent: i64, received: i64, rate: f64) -> Value {
    json!({"type": "stats", "stats": {
        "state": "connected", "rtt": 0.0123, "jitter": 0.0045,
        "packetsLost": 3, "packetsReceived": 1000,
        "bytesSent": sent, "bytesReceived": received,
        "bitrateIn": rate, "bitrateOut": rate,
        "localCandidateType": "relay", "remoteCandidateType": "relay", "relayProtocol": "udp"
    }})
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The ways `v` can sit in a SQLite file: decimal text, a 4-byte
/// big-endian integer (all values here are 2^23..2^31), an 8-byte float.
fn int_forms(v: i64) -> Vec<Vec<u8>> {
    let Ok(v32) = i32::try_from(v) else {
        panic!("{v} does not fit 4 bytes");
    };
    vec![
        v.to_string().into_bytes(),
        v32.to_be_bytes().to_vec(),
        (v as f64).to_be_bytes().to_vec(),
    ]
}

fn float_forms(v: f64) -> Vec<Vec<u8>> {
    vec![v.to_string().into_bytes(), v.to_be_bytes().to_vec()]
}

/// Which of the needles (by name) occur in any file of `dir`.
fn found_in(dir: &Path, needles: &[(String, Vec<Vec<u8>>)]) -> Vec<String> {
    let mut found = Vec::new();
    for path in files(dir) {
        // The WAL and shared-memory files go when the last connection
        // closes, maybe between listing and reading.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for (name, forms) in needles {
            if forms.iter().any(|f| contains(&bytes, f)) {
                found.push(format!("{name} in {}", path.display()));
            }
        }
    }
    found
}

/// A data directory as an older install left it: mode 0755, a schema-1
/// database with a clear room name and a per-second byte count, and a
/// secret, all 0644.
fn old_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join(signal::store::DB_FILE);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE calls(id TEXT PRIMARY KEY, room TEXT, started INTEGER, last INTEGER);
         CREATE TABLE samples(call_id, side INTEGER, ts INTEGER, state, rtt REAL, jitter REAL,
             packets_lost INTEGER, packets_received INTEGER, jitter_buffer_delay REAL,
             jitter_buffer_emitted INTEGER, bytes_sent INTEGER, bytes_received INTEGER,
             bitrate_in REAL, bitrate_out REAL, local_type TEXT, remote_type TEXT,
             relay_protocol TEXT);
         CREATE INDEX samples_call_ts ON samples(call_id, ts);
         CREATE INDEX samples_ts ON samples(ts);
         CREATE INDEX calls_last ON calls(last);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    conn.execute(
        "INSERT INTO calls VALUES ('00aa', ?1, ?2, ?2)",
        rusqlite::params![OLD_ROOM, now - 60_000],
    )
    .unwrap();
    for (ts, sent) in [(now - 61_000, OLD_BYTES), (now - 60_000, OLD_TOTAL)] {
        conn.execute(
            "INSERT INTO samples(call_id, side, ts, rtt, bytes_sent) VALUES ('00aa', 0, ?1, 0.02, ?2)",
            rusqlite::params![ts, sent],
        )
        .unwrap();
    }
    drop(conn);
    std::fs::write(data.join("turn-secret"), "c2VjcmV0\n").unwrap();
    for f in files(&data) {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Waits until `/api/calls?room=ROOM` shows a call with `n` samples.
async fn call_of_room(server: &Server, n: i64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = server
            .get(&format!("/api/calls?room={ROOM}"), &[ADMIN])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if v[0]["samples"].as_i64() == Some(n) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a server on an old data directory, makes one call with stats,
/// and returns what the data directory's files contain (while running and
/// after stopping).
async fn call_and_grep(store_stats_samples: bool) -> Vec<String> {
    let dir = old_data_dir();
    let data = dir.path().join("data");
    // The control: the old file holds the name and the value in a form
    // the search finds.
    let old_needles = [
        (OLD_ROOM.to_owned(), vec![OLD_ROOM.as_bytes().to_vec()]),
        (OLD_BYTES.to_string(), int_forms(OLD_BYTES)),
    ];
    assert_eq!(found_in(&data, &old_needles).len(), 2);
    assert_eq!(mode(&data), 0o755);

    let server = start_with_data_dir(SignalConfig {
        data_dir: data.clone(),
        room_key: Some(RoomKey::new(b"0123456789abcdef0123456789abcdef")),
        store_stats_samples,
        ..config()
    })
    .await;
    let (mut a, ja) = server.joined(ROOM).await;
    let (mut b, _) = server.joined(ROOM).await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    a.send(stats(A_SENT_1, A_RECEIVED_1, RATES[0])).await;
    b.send(stats(B_SENT, 130_000_007, RATES[1])).await;
    tokio::time::sleep(Duration::from_millis(550)).await;
    a.send(stats(A_SENT_2, 133_333_337, RATES[2])).await;

    // Found by name, with the totals; the old call by its old name.
    let calls = call_of_room(&server, 3).await;
    assert_eq!(calls.as_array().unwrap().len(), 1, "{calls}");
    assert_eq!(calls[0]["id"], ja["callId"]);
    assert_eq!(calls[0]["bytesSent"], A_SENT_2 + B_SENT);
    assert_eq!(calls[0]["bytesReceived"], 133_333_337 + 130_000_007);
    let old = server
        .get(&format!("/api/calls?room={OLD_ROOM}"), &[ADMIN])
        .await
        .json();
    assert_eq!(old[0]["id"], "00aa", "{old}");
    assert_eq!(old[0]["bytesSent"], OLD_TOTAL);
    assert_eq!(old[0]["samples"], 2);
    let all = server.get("/api/calls", &[ADMIN]).await.json();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");

    // Modes while running: the directory and every file in it (database,
    // WAL, shared memory, the secret) private.
    assert!(server.state.store().flush(WAIT));
    assert_eq!(mode(&data), 0o700);
    let names: Vec<String> = files(&data)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "signal.sqlite",
        "signal.sqlite-wal",
        "signal.sqlite-shm",
        "turn-secret",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for f in files(&data) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }

    let mut needles = vec![
        (ROOM.to_owned(), vec![ROOM.as_bytes().to_vec()]),
        (OLD_ROOM.to_owned(), vec![OLD_ROOM.as_bytes().to_vec()]),
        ("alice".to_owned(), vec![b"alice".to_vec()]),
    ];
    for v in [A_SENT_1, A_SENT_2, A_RECEIVED_1, B_SENT, OLD_BYTES] {
        needles.push((v.to_string(), int_forms(v)));
    }
    for r in RATES {
        needles.push((r.to_string(), float_forms(r)));
    }
    let mut found = found_in(&data, &needles);
    server.stop().await.unwrap();
    found.extend(found_in(&data, &needles));
    found
}

#[tokio::test]
async fn no_room_names_or_per_second_values_at_rest() {
    let found = call_and_grep(false).await;
    assert!(found.is_empty(), "found at rest: {found:#?}");
}

/// The negative control: with `store_stats_samples` the same search finds
/// the per-second values (and still no room name).
#[tokio::test]
async fn per_second_values_at_rest_when_opted_in() {
    let found = call_and_grep(true).await;
    for v in [
        A_SENT_1.to_string(),
        B_SENT.to_string(),
        RATES[0].to_string(),
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(&format!("{v} in"))),
            "{v} not found: {found:#?}"
        );
    }
    assert!(
        !found
            .iter()
            .any(|f| f.contains(ROOM) || f.starts_with("alice")),
        "{found:#?}"
    );
}

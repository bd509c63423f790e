//! Statistics: ingest over the WebSocket, SQLite rows, the operator API and
//! page, and the retention sweep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use signal::SignalConfig;

use crate::support::{config, start, Server, ADMIN, WAIT};

fn sample(rtt: f64) -> Value {
    json!({"type": "stats", "stats": {
        "ts": 1_763_800_000_000u64, "state": "connected", "rtt": rtt, "jitter": 0.004,
        "packetsLost": 2, "packetsReceived": 198, "jitterBufferDelay": 1.5,
        "jitterBufferEmittedCount": 100, "bytesSent": 12_000, "bytesReceived": 11_000,
        "bitrateIn": 64_000.0, "bitrateOut": 63_000.0,
        "localCandidateType": "relay", "remoteCandidateType": "relay", "relayProtocol": "udp",
        "address": "192.0.2.77", "ip": "192.0.2.77"
    }})
}

/// Waits until `/api/calls` lists a call with `n` samples.
async fn calls_with_samples(server: &Server, n: i64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = server.get("/api/calls", &[ADMIN]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if v[0]["samples"].as_i64() == Some(n) || tokio::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stats_are_stored_and_listed() {
    let server = start(config()).await;
    let (mut a, ja) = server.joined("stats-room").await;
    let (mut b, _) = server.joined("stats-room").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    let call_id = ja["callId"].as_str().unwrap().to_owned();

    a.send(sample(0.010)).await;
    a.send(sample(9.0)).await; // within 500 ms of the previous: ignored
    b.send(sample(0.030)).await;
    b.send(json!({"type": "stats", "stats": {"rtt": -1, "jitter": "NaN", "state": "<script>", "relayProtocol": "quic"}}))
        .await; // ignored too (rate), and invalid anyway
    tokio::time::sleep(Duration::from_millis(550)).await;
    a.send(sample(0.020)).await;

    let calls = calls_with_samples(&server, 3).await;
    let list = calls.as_array().unwrap();
    assert_eq!(list.len(), 1, "{calls}");
    let c = &list[0];
    assert_eq!(c["id"], call_id.as_str());
    assert_eq!(c["room"], "stats-room");
    assert_eq!(c["samples"], 3);
    assert_eq!(c["rttMedian"], 0.02);
    assert_eq!(c["jitterMedian"], 0.004);
    assert_eq!(c["relayProtocols"], json!(["udp"]));
    let loss = c["lossPct"].as_f64().unwrap();
    assert!((loss - 1.0).abs() < 1e-9, "{loss}");
    assert!(c["started"].as_i64().unwrap() <= c["last"].as_i64().unwrap());

    let r = server.get(&format!("/api/calls/{call_id}"), &[ADMIN]).await;
    assert_eq!(r.status, 200);
    let detail = r.json();
    assert_eq!(detail["id"], call_id.as_str());
    assert_eq!(detail["room"], "stats-room");
    let samples = detail["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    let sides: Vec<i64> = samples
        .iter()
        .map(|s| s["side"].as_i64().unwrap())
        .collect();
    assert_eq!(sides.iter().filter(|s| **s == 0).count(), 2);
    assert_eq!(sides.iter().filter(|s| **s == 1).count(), 1);
    let s0 = samples.iter().find(|s| s["side"] == 1).unwrap();
    assert_eq!(s0["rtt"], 0.03);
    assert_eq!(s0["packetsReceived"], 198);
    assert_eq!(s0["jitterBufferEmittedCount"], 100);
    assert_eq!(s0["localCandidateType"], "relay");
    assert_eq!(s0["state"], "connected");
    assert!(s0.get("address").is_none() && s0.get("ip").is_none());
    assert!(!r.body.contains("192.0.2.77"));

    assert_eq!(
        server.get("/api/calls/0123abcd", &[ADMIN]).await.status,
        404
    );
    assert_eq!(server.get("/api/calls/not-hex", &[ADMIN]).await.status, 404);

    // The page lists it.
    let page = server.get("/calls", &[ADMIN]).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains(&call_id));
    assert!(page.body.contains("<td>stats-room</td>"));
    assert!(page.body.contains("<td>20.0</td>"), "{}", page.body);

    // Nothing but numbers and short enums in the database file.
    server.state.store().flush(WAIT);
    let conn = rusqlite::Connection::open(server.state.store().path()).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM samples", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);
    let text: String = conn
        .query_row(
            "SELECT group_concat(coalesce(state,'') || coalesce(local_type,'') || coalesce(remote_type,'') || coalesce(relay_protocol,'')) FROM samples",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!text.contains("192.0.2") && !text.contains('<'), "{text}");
}

#[tokio::test]
async fn stats_before_join_are_ignored() {
    let server = start(config()).await;
    let mut a = server.client().await;
    a.send(sample(0.01)).await;
    a.expect_silence(Duration::from_millis(100)).await;
    server.state.store().flush(WAIT);
    assert_eq!(server.get("/api/calls", &[ADMIN]).await.json(), json!([]));
}

#[tokio::test]
async fn operator_access_with_admin_token() {
    let server = start(SignalConfig {
        admin_token: Some("s3cr3t-token".into()),
        ..config()
    })
    .await;
    for path in ["/api/calls", "/calls", "/api/calls/00"] {
        let r = server.get(path, &[]).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = server.get(path, &["Authorization: Bearer wrong"]).await;
        assert_eq!(r.status, 403, "{path}");
        let r = server
            .get(path, &["Authorization: Basic czNjcjN0LXRva2Vu"])
            .await;
        assert_eq!(r.status, 401, "{path}");
        let r = server
            .get(path, &["Authorization: Bearer s3cr3t-token"])
            .await;
        let want = if path == "/api/calls/00" { 404 } else { 200 };
        assert_eq!(r.status, want, "{path}");
    }
    // Loopback alone is not enough once a token is set, but anyone may
    // still use the app and /healthz.
    assert_eq!(server.get("/healthz", &[]).await.status, 200);
}

#[tokio::test]
async fn retention_sweep_deletes_old_rows() {
    let server = start(config()).await;
    let (mut a, ja) = server.joined("keep").await;
    a.send(sample(0.01)).await;
    calls_with_samples(&server, 1).await;
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let old = now - 8 * 86_400_000;
    {
        let conn = rusqlite::Connection::open(server.state.store().path()).unwrap();
        conn.execute(
            "INSERT INTO calls(id, room, started, last) VALUES ('00ff', 'old', ?1, ?1)",
            [old],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO samples(call_id, side, ts, rtt) VALUES ('00ff', 0, ?1, 0.5)",
            [old],
        )
        .unwrap();
        // An old sample of a live call goes too.
        conn.execute(
            "INSERT INTO samples(call_id, side, ts, rtt) VALUES (?1, 1, ?2, 0.5)",
            rusqlite::params![ja["callId"].as_str().unwrap(), old],
        )
        .unwrap();
    }
    assert_eq!(
        server
            .get("/api/calls", &[ADMIN])
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let deleted = server.state.store().sweep(7, now).unwrap();
    assert_eq!(deleted, 3);
    let calls = server.get("/api/calls", &[ADMIN]).await.json();
    assert_eq!(calls.as_array().unwrap().len(), 1);
    assert_eq!(calls[0]["room"], "keep");
    assert_eq!(calls[0]["samples"], 1);
    assert_eq!(server.get("/api/calls/00ff", &[ADMIN]).await.status, 404);
    // The async wrapper used at startup and hourly runs too.
    signal::sweep(&server.state).await;
}

#[tokio::test]
async fn sweep_runs_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = signal::store::Store::open(&data).unwrap();
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    conn.execute(
        "INSERT INTO calls(id, room, started, last) VALUES ('0a', 'old', 1000, 1000)",
        [],
    )
    .unwrap();
    drop(conn);
    drop(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(signal::serve(
        SignalConfig {
            data_dir: data.clone(),
            ..config()
        },
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let calls = crate::support::http_get(addr, "/api/calls", &[ADMIN]).await;
        if calls.status == 200 && calls.json() == json!([]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", calls.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

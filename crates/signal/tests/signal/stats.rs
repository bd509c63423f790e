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
    stored_and_listed(None).await;
}

/// The same on PostgreSQL (`database_url`), a real server the test binary
/// starts (testkit::postgres).
#[tokio::test]
async fn stats_are_stored_and_listed_in_postgres() {
    let Some(pg) = testkit::postgres::shared() else {
        return;
    };
    stored_and_listed(Some(pg.database().unwrap())).await;
}

/// Ingest, API and page, and what the store holds; `database_url`: the
/// store in PostgreSQL.
async fn stored_and_listed(database_url: Option<String>) {
    let server = start(SignalConfig {
        database_url: database_url.clone(),
        ..config()
    })
    .await;
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
    let mut later = sample(0.020);
    later["stats"]["bytesSent"] = json!(15_000);
    later["stats"]["packetsLost"] = json!(4);
    later["stats"]["packetsReceived"] = json!(296);
    a.send(later).await;

    let calls = calls_with_samples(&server, 3).await;
    let list = calls.as_array().unwrap();
    assert_eq!(list.len(), 1, "{calls}");
    let c = &list[0];
    assert_eq!(c["id"], call_id.as_str());
    let hash = c["roomHash"].as_str().unwrap().to_owned();
    assert_eq!(hash, server.state.store().room_hash("stats-room"));
    assert_eq!(hash.len(), 32);
    assert!(c.get("room").is_none(), "{c}");
    assert_eq!(c["samples"], 3);
    assert_eq!(c["rttMax"], 0.03);
    assert!((c["rttMean"].as_f64().unwrap() - 0.02).abs() < 1e-12, "{c}");
    assert_eq!(c["jitterMean"], 0.004);
    assert_eq!(c["jitterMax"], 0.004);
    assert_eq!(c["relayProtocols"], json!(["udp"]));
    assert_eq!(c["candidateTypes"], json!(["relay"]));
    assert_eq!(c["states"], json!(["connected"]));
    // Totals: a's counters went 12,000 → 15,000 bytes sent, 2 → 4 lost,
    // 198 → 296 received; b's are 12,000, 2 and 198.
    assert_eq!(c["bytesSent"], 15_000 + 12_000);
    assert_eq!(c["bytesReceived"], 11_000 + 11_000);
    assert_eq!(c["packetsLost"], 4 + 2);
    assert_eq!(c["packetsReceived"], 296 + 198);
    let loss = c["lossPct"].as_f64().unwrap();
    assert!((loss - 100.0 * 6.0 / 500.0).abs() < 1e-9, "{loss}");
    assert!((c["jitterBufferMean"].as_f64().unwrap() - 0.015).abs() < 1e-12);
    assert!(c["started"].as_i64().unwrap() <= c["last"].as_i64().unwrap());

    // Looked up by name; another name finds nothing.
    let r = server.get("/api/calls?room=stats-room", &[ADMIN]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.json()[0]["id"], call_id.as_str());
    let r = server.get("/api/calls?room=stats-roo", &[ADMIN]).await;
    assert_eq!(r.json(), json!([]));

    // The detail: the same aggregates, no per-sample series by default.
    let r = server.get(&format!("/api/calls/{call_id}"), &[ADMIN]).await;
    assert_eq!(r.status, 200);
    let detail = r.json();
    assert_eq!(detail["id"], call_id.as_str());
    assert_eq!(detail["roomHash"], hash.as_str());
    assert_eq!(detail["bytesSent"], 27_000);
    assert_eq!(detail["series"], json!([]));
    assert!(!r.body.contains("192.0.2.77"));

    assert_eq!(
        server.get("/api/calls/0123abcd", &[ADMIN]).await.status,
        404
    );
    assert_eq!(server.get("/api/calls/not-hex", &[ADMIN]).await.status, 404);

    // The page lists it by hash, and finds it by name through its form.
    let page = server.get("/calls", &[ADMIN]).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains(&call_id));
    assert!(page.body.contains(&format!("<code>{hash}</code>")));
    assert!(!page.body.contains("stats-room"));
    assert!(page.body.contains("<td>20.0 / 30.0</td>"), "{}", page.body);
    let found = server
        .post_form("/calls/find", &[ADMIN], "room=stats-room")
        .await;
    assert_eq!(found.status, 200);
    assert!(found.body.contains(&call_id), "{}", found.body);
    let none = server.post_form("/calls/find", &[ADMIN], "room=nope").await;
    assert_eq!(none.status, 200);
    assert!(!none.body.contains(&call_id) && none.body.contains("0 call(s)"));

    // Nothing but numbers, short enums and the hash in the database.
    server.state.store().flush(WAIT);
    if let Some(url) = database_url {
        let pg = testkit::postgres::shared().unwrap();
        let db = url.rsplit('/').next().unwrap();
        let q = |sql: &str| pg.psql(db, sql).unwrap().trim().to_owned();
        assert_eq!(q("SELECT count(*) FROM onionrtc_signal.samples"), "0");
        assert_eq!(
            q("SELECT string_agg(id || room_hash, ',') FROM onionrtc_signal.calls"),
            format!("{call_id}{hash}")
        );
        // No text anywhere in the store's schema holds the room name.
        let dump = q("SELECT string_agg(row_to_json(c)::text, ' ') FROM onionrtc_signal.calls c");
        assert!(
            dump.contains(&hash) && !dump.contains("stats-room"),
            "{dump}"
        );
        assert!(!dump.contains("192.0.2.77"), "{dump}");
        return;
    }
    let conn = rusqlite::Connection::open(server.state.store().path().unwrap()).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM samples", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    let text: String = conn
        .query_row("SELECT group_concat(id || room_hash) FROM calls", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(text, format!("{call_id}{hash}"));
}

#[tokio::test]
async fn samples_are_stored_when_the_operator_opts_in() {
    let server = start(SignalConfig {
        store_stats_samples: true,
        ..config()
    })
    .await;
    let (mut a, ja) = server.joined("kept").await;
    let (mut b, _) = server.joined("kept").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    a.send(sample(0.010)).await;
    b.send(sample(0.030)).await;
    let call_id = ja["callId"].as_str().unwrap();
    calls_with_samples(&server, 2).await;
    let r = server.get(&format!("/api/calls/{call_id}"), &[ADMIN]).await;
    let detail = r.json();
    let series = detail["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{detail}");
    let s1 = series.iter().find(|s| s["side"] == 1).unwrap();
    assert_eq!(s1["rtt"], 0.03);
    assert_eq!(s1["packetsReceived"], 198);
    assert_eq!(s1["jitterBufferEmittedCount"], 100);
    assert_eq!(s1["bytesSent"], 12_000);
    assert_eq!(s1["bitrateOut"], 63_000.0);
    assert_eq!(s1["localCandidateType"], "relay");
    assert_eq!(s1["state"], "connected");
    assert!(s1.get("address").is_none() && s1.get("ip").is_none());
    assert!(!r.body.contains("192.0.2.77"));
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
        let conn = rusqlite::Connection::open(server.state.store().path().unwrap()).unwrap();
        conn.execute(
            "INSERT INTO calls(id, room_hash, started, last) VALUES ('00ff', 'old', ?1, ?1)",
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
    assert_eq!(calls[0]["id"], ja["callId"]);
    assert_eq!(calls[0]["samples"], 1);
    assert_eq!(server.get("/api/calls/00ff", &[ADMIN]).await.status, 404);
    // The async wrapper used at startup and hourly runs too.
    signal::sweep(&server.state).await;
}

#[tokio::test]
async fn sweep_runs_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = signal::store::StoreOptions {
        room_key: signal::store::RoomKey::random(),
        keep_samples: false,
    };
    let store = signal::store::Store::open(&data, options).unwrap();
    let conn = rusqlite::Connection::open(store.path().unwrap()).unwrap();
    conn.execute(
        "INSERT INTO calls(id, room_hash, started, last) VALUES ('0a', 'old', 1000, 1000)",
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

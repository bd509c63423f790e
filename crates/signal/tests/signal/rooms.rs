//! Rooms and the WebSocket protocol of docs/signaling.md.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use signal::SignalConfig;

use crate::support::{config, start, Client, SECRET, TURN_URLS, WAIT};

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The protocol-1 behaviour of a room of two (what the web app of before
/// protocol 2, `onionrtc call` and third-party clients rely on), in a room
/// limited to two. Protocol 2 adds `memberId`/`from` fields, which these
/// clients ignore.
#[tokio::test]
async fn join_gives_turn_credentials_and_roles() {
    let server = start(SignalConfig {
        max_room_size: 2,
        ..config()
    })
    .await;
    let (mut a, ja) = server.joined("room-1").await;
    assert_eq!(ja["room"], "room-1");
    assert_eq!(ja["peers"], 0);
    assert_eq!(ja["initiator"], false);
    assert_eq!(ja["iceTransportPolicy"], "relay");
    assert_eq!(ja["credentialTtl"], 600);
    let call_id = ja["callId"].as_str().unwrap();
    assert!(is_hex(call_id, 32), "{call_id}");
    let ice = &ja["iceServers"][0];
    assert_eq!(ice["urls"], json!(TURN_URLS));
    let username = ice["username"].as_str().unwrap();
    let (expiry, id) = username.split_once(':').unwrap();
    assert!(is_hex(id, 16), "{username}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (now + 595..=now + 605).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(
        ice["credential"].as_str().unwrap(),
        turn::auth::rest_password(SECRET.as_bytes(), username)
    );

    let (mut b, jb) = server.joined("room-1").await;
    assert_eq!(jb["peers"], 1);
    assert_eq!(jb["initiator"], true);
    assert_eq!(jb["callId"], call_id);
    // A fresh credential per connection.
    assert_ne!(jb["iceServers"][0]["username"], ice["username"]);
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-joined", "memberId": jb["memberId"]})
    );

    let mut c = server.client().await;
    let jc = c.join("room-1").await;
    assert_eq!(jc["type"], "error");
    assert_eq!(jc["code"], "room-full");
    assert!(jc["message"].is_string());

    assert_eq!(b.join("room-2").await["code"], "already-joined");
    // The third client can use another room.
    assert_eq!(c.join("room-2").await["type"], "joined");
    a.expect_silence(Duration::from_millis(100)).await;
}

const OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=audio 50000 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 198.51.100.7\r\n\
a=rtcp:50001 IN IP4 198.51.100.7\r\n\
a=candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host generation 0 network-id 1\r\n\
a=candidate:2 1 udp 1686052607 198.51.100.7 50000 typ srflx raddr 192.168.1.20 rport 50000 generation 0\r\n\
a=candidate:3 1 udp 41885439 203.0.113.9 61000 typ relay raddr 198.51.100.7 rport 50000 generation 0\r\n\
a=candidate:4 1 udp 2122260223 4b1f0a2e-1111-2222-3333-444455556666.local 50002 typ host\r\n\
a=candidate:5 1 tcp 1518280447 2001:db8::20 9 typ host tcptype active\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:0123456789abcdefghijklmn\r\n\
a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=end-of-candidates\r\n";

#[tokio::test]
async fn offer_and_answer_arrive_sanitized() {
    let server = start(config()).await;
    let (mut a, _) = server.joined("r").await;
    let (mut b, _) = server.joined("r").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    b.send(json!({"type": "offer", "sdp": OFFER})).await;
    let got = a.recv().await;
    assert_eq!(got["type"], "offer");
    let sdp = got["sdp"].as_str().unwrap();
    assert!(!sdp.contains("192.168.1.20"), "{sdp}");
    assert!(!sdp.contains("198.51.100.7"), "{sdp}");
    assert!(!sdp.contains(".local"), "{sdp}");
    assert!(!sdp.contains("2001:db8::20"), "{sdp}");
    assert!(!sdp.contains("typ host") && !sdp.contains("typ srflx"));
    assert!(sdp.contains(
        "a=candidate:3 1 udp 41885439 203.0.113.9 61000 typ relay raddr 0.0.0.0 rport 0 generation 0\r\n"
    ));
    assert!(sdp.contains("c=IN IP4 0.0.0.0\r\n"));
    assert!(sdp.contains("a=rtcp:50001 IN IP4 0.0.0.0\r\n"));
    assert!(sdp.contains("a=fingerprint:sha-256 AB:CD"));
    assert!(sdp.contains("a=end-of-candidates\r\n"));
    let relays = server.state.config().relay_addresses.clone();
    let clean = signal::sanitize::Sanitizer::new(&relays)
        .sdp(OFFER)
        .unwrap();
    assert_eq!(sdp, clean.sdp);

    a.send(json!({"type": "answer", "sdp": OFFER.replace("actpass", "active")}))
        .await;
    let got = b.recv().await;
    assert_eq!(got["type"], "answer");
    assert!(got["sdp"].as_str().unwrap().contains("a=setup:active"));
    assert!(!got["sdp"].as_str().unwrap().contains("192.168.1.20"));
}

#[tokio::test]
async fn trickled_candidates_only_relay_pass() {
    let server = start(config()).await;
    let (mut a, _) = server.joined("t").await;
    let (mut b, jb) = server.joined("t").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    for host in [
        "candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host generation 0 ufrag abcd network-id 1",
        "candidate:2 1 udp 1686052607 198.51.100.7 50000 typ srflx raddr 192.168.1.20 rport 50000",
        "candidate:4 1 udp 2122260223 4b1f0a2e.local 50002 typ host",
        "candidate:6 1 udp 1845501695 198.51.100.7 50003 typ prflx raddr 0.0.0.0 rport 0",
    ] {
        b.send(json!({"type": "candidate", "candidate": {"candidate": host, "sdpMid": "0", "sdpMLineIndex": 0}}))
            .await;
    }
    b.send(json!({"type": "candidate", "candidate": {
        "candidate": "candidate:3 1 udp 41885439 203.0.113.9 61000 typ relay raddr 198.51.100.7 rport 50000 generation 0 ufrag abcd network-id 1",
        "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}}))
        .await;
    // The first thing A gets is the relay candidate: the others were dropped.
    let got = a.recv().await;
    assert_eq!(
        got,
        json!({"type": "candidate", "candidate": {
            "candidate": "candidate:3 1 udp 41885439 203.0.113.9 61000 typ relay raddr 0.0.0.0 rport 0 generation 0 ufrag abcd network-id 1",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}, "from": jb["memberId"]})
    );
    b.send(json!({"type": "candidate", "candidate": null}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "candidate", "candidate": null, "from": jb["memberId"]})
    );
    a.expect_silence(Duration::from_millis(100)).await;
    b.expect_silence(Duration::from_millis(50)).await;
}

/// The value of one metric line in `render_metrics()`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(u64::MAX)
}

#[tokio::test]
async fn hostile_descriptions_and_candidates_are_refused_and_counted() {
    let server = start(config()).await;
    let (mut a, _) = server.joined("h").await;
    let (mut b, _) = server.joined("h").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    // Invisible characters, a lone CR: refused as a whole, sender told.
    for bad in [
        OFFER.replace("a=mid:0", "\u{200b}a=mid:0"),
        OFFER.replace("a=setup:actpass\r\n", "a=setup:actpass\r"),
    ] {
        b.send(json!({"type": "offer", "sdp": bad})).await;
        assert_eq!(b.recv().await["code"], "bad-sdp");
    }
    a.expect_silence(Duration::from_millis(100)).await;
    // Address-bearing lines, audio levels, foreign relays: removed.
    let offer = OFFER.replace(
        "a=mid:0\r\n",
        "a=mid:0\r\na=x-caller:10.1.2.3\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
         a=candidate:7 1 udp 5 10.1.2.3 9 typ relay\r\n",
    );
    b.send(json!({"type": "offer", "sdp": offer})).await;
    let sdp = a.recv().await["sdp"].as_str().unwrap().to_owned();
    assert!(
        !sdp.contains("10.1.2.3") && !sdp.contains("audio-level"),
        "{sdp}"
    );
    assert!(sdp.contains("typ relay raddr 0.0.0.0 rport 0"), "{sdp}");
    // Trickled: a foreign relay, a bad sdpMid, a folded line.
    let relay = "candidate:3 1 udp 41885439 203.0.113.9 61000 typ relay";
    for (candidate, mid) in [
        (
            "candidate:3 1 udp 41885439 10.1.2.3 61000 typ relay".to_owned(),
            "0",
        ),
        (relay.to_owned(), "1.2.3.4"),
        (
            format!("{relay}\r\na=candidate:1 1 udp 1 10.1.2.3 9 typ host"),
            "0",
        ),
    ] {
        b.send(json!({"type": "candidate", "candidate": {"candidate": candidate, "sdpMid": mid}}))
            .await;
    }
    a.expect_silence(Duration::from_millis(100)).await;
    let m = server.state.render_metrics();
    assert_eq!(
        metric(&m, "onionrtc_signal_descriptions_rejected_total"),
        2,
        "{m}"
    );
    assert_eq!(
        metric(&m, "onionrtc_signal_foreign_relay_candidates_total"),
        2,
        "{m}"
    );
    assert_eq!(
        metric(&m, "onionrtc_signal_candidates_dropped_total"),
        3,
        "{m}"
    );
    assert_eq!(
        metric(&m, "onionrtc_signal_sdp_lines_removed_total"),
        2,
        "{m}"
    );
}

#[tokio::test]
async fn protocol_errors() {
    let server = start(config()).await;
    let mut a = server.client().await;
    let cases = [
        ("{not json", "bad-message"),
        ("[1,2]", "bad-message"),
        (r#"{"room":"x"}"#, "bad-message"),
        (r#"{"type":"dance"}"#, "unknown-type"),
        (r#"{"type":"join","room":"no spaces"}"#, "bad-room"),
        (r#"{"type":"join","room":""}"#, "bad-room"),
        (r#"{"type":"join","room":42}"#, "bad-message"),
        (r#"{"type":"offer","sdp":"v=0"}"#, "not-joined"),
        (r#"{"type":"answer","sdp":"v=0"}"#, "not-joined"),
        (r#"{"type":"candidate","candidate":null}"#, "not-joined"),
        (r#"{"type":"offer"}"#, "bad-message"),
    ];
    for (text, code) in cases {
        a.send_text(text).await;
        let got = a.recv().await;
        assert_eq!(got["type"], "error", "{text}");
        assert_eq!(got["code"], code, "{text}");
    }
    assert_eq!(a.join("alone").await["type"], "joined");
    a.send(json!({"type": "offer", "sdp": "v=0"})).await;
    assert_eq!(a.recv().await["code"], "no-peer");
    a.send(json!({"type": "candidate", "candidate": null}))
        .await;
    assert_eq!(a.recv().await["code"], "no-peer");
    // Stats and bye need no answer.
    a.send(json!({"type": "stats", "stats": {}})).await;
    a.send(json!({"type": "bye"})).await;
    a.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn oversize_message_is_refused_and_closed() {
    let server = start(config()).await;
    for size in [65_537, 70_000, 1 << 20] {
        let mut a = server.client().await;
        let big = json!({"type": "offer", "sdp": "x".repeat(size)}).to_string();
        a.send_text(&big).await;
        let (closed, texts) = a.closed(WAIT).await;
        assert!(closed, "{size}: not closed");
        if size < 100_000 {
            assert_eq!(texts.len(), 1, "{size}: {texts:?}");
            let v: serde_json::Value = serde_json::from_str(&texts[0]).unwrap();
            assert_eq!(v["code"], "too-large");
        }
    }
    // Exactly at the limit is fine.
    let mut a = server.client().await;
    let pad = 65_536 - r#"{"type":"offer","sdp":""}"#.len();
    a.send_text(&format!(
        r#"{{"type":"offer","sdp":"{}"}}"#,
        "x".repeat(pad)
    ))
    .await;
    assert_eq!(a.recv().await["code"], "not-joined");
}

#[tokio::test]
async fn message_flood_is_rate_limited_then_closed() {
    let server = start(config()).await;
    let mut a = server.client().await;
    // Burst 100 + 50/s: 400 messages are over the limit unless sending
    // them took 6 s.
    for _ in 0..400 {
        a.send(json!({"type": "bye"})).await;
    }
    let got = a.recv().await;
    assert_eq!(got["code"], "rate-limited");
    // Keeps going: closed.
    for _ in 0..400 {
        a.send(json!({"type": "bye"})).await;
    }
    let (closed, _) = a.closed(WAIT).await;
    assert!(closed);
    // A well-behaved client is unaffected.
    let mut b = server.client().await;
    for _ in 0..20 {
        b.send(json!({"type": "bye"})).await;
    }
    b.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn leaving_tells_the_peer() {
    let server = start(config()).await;
    let (mut a, ja) = server.joined("p").await;
    let (b, jb) = server.joined("p").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    b.close().await;
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-left", "memberId": jb["memberId"]})
    );

    // The next member is the initiator; the call id stays with the room.
    let (mut c, jc) = server.joined("p").await;
    assert_eq!(jc["initiator"], true);
    assert_eq!(jc["callId"], ja["callId"]);
    assert_eq!(a.recv().await["type"], "peer-joined");
    c.send(json!({"type": "bye"})).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-left", "memberId": jc["memberId"]})
    );
    // After bye the connection stays open and may join again.
    assert_eq!(c.join("p").await["initiator"], true);
    assert_eq!(a.recv().await["type"], "peer-joined");

    // Everyone gone: the room and its call id are gone.
    drop(a);
    drop(c);
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.state.rooms() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.state.rooms(), 0);
    let (_d, jd) = server.joined("p").await;
    assert_ne!(jd["callId"], ja["callId"]);
}

#[tokio::test]
async fn origin_check() {
    let mut cfg = config();
    cfg.allowed_origins = vec!["https://call.example".into()];
    let server = start(cfg).await;
    let url = server.ws_url();
    for bad in ["http://evil.example", "null", "https://call.example.evil"] {
        match Client::connect(&url, Some(bad)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "{bad}");
            }
            Err(e) => panic!("{bad}: {e}"),
            Ok(_) => panic!("{bad}: accepted"),
        }
    }
    let own = format!("http://{}", server.addr);
    for good in [own.as_str(), "https://call.example"] {
        let mut c = Client::connect(&url, Some(good)).await.unwrap();
        assert_eq!(c.join("o").await["type"], "joined", "{good}");
    }
}

#[tokio::test]
async fn join_flood_from_one_address() {
    let server = start(config()).await;
    let mut a = server.client().await;
    for i in 0..20 {
        assert_eq!(a.join(&format!("f{i}")).await["type"], "joined", "{i}");
        a.send(json!({"type": "bye"})).await;
    }
    assert_eq!(a.join("f20").await["code"], "too-many-joins");
    // Per address, not per connection.
    let mut b = server.client().await;
    assert_eq!(b.join("g").await["code"], "too-many-joins");
}

#[tokio::test]
async fn idle_connection_is_closed_and_rooms_are_bounded() {
    let cfg = SignalConfig {
        join_timeout: Duration::from_millis(300),
        max_rooms: 1,
        ..config()
    };
    let server = start(cfg).await;
    let mut idle = server.client().await;
    let (closed, texts) = idle.closed(Duration::from_secs(3)).await;
    assert!(closed && texts.is_empty(), "{texts:?}");

    let (_a, _) = server.joined("one").await;
    let mut b = server.client().await;
    assert_eq!(b.join("two").await["code"], "server-full");
    // Joining the existing room is still possible.
    assert_eq!(b.join("one").await["type"], "joined");
    // A joined connection is not closed by the join timeout.
    b.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_returns() {
    let server = start(config()).await;
    let (mut a, _) = server.joined("s").await;
    let stopping = tokio::spawn(server.stop());
    let (closed, _) = a.closed(WAIT).await;
    assert!(closed);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

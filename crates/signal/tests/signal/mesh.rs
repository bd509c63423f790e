//! Protocol 2 (docs/signaling.md): rooms of up to `max_room_size`, member
//! ids, `to`/`from`, `refresh`, and the bad inputs of a mesh — messages to
//! a non-member or a member of another room, a forged `from`, a member that
//! never answers, many joins and leaves in a row.

use std::time::Duration;

use serde_json::{json, Value};
use signal::SignalConfig;

use crate::support::{config, start, Client, Server, WAIT};

const OFFER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:0123456789abcdefghijklmn\r\n\
a=candidate:1 1 udp 41885439 203.0.113.9 61000 typ relay raddr 198.51.100.7 rport 5 generation 0\r\n\
a=candidate:2 1 udp 2122260223 192.168.1.20 50000 typ host generation 0\r\n\
a=rtpmap:111 opus/48000/2\r\n";

fn id(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_owned()
}

/// `n` members joined to `room`, each with its `joined`, after every
/// `peer-joined` has been read.
async fn fill(server: &Server, room: &str, n: usize) -> Vec<(Client, Value)> {
    let mut out: Vec<(Client, Value)> = Vec::new();
    for _ in 0..n {
        let (c, j) = server.joined(room).await;
        let new = id(&j, "memberId");
        for (o, _) in out.iter_mut() {
            let got = o.recv().await;
            assert_eq!(got, json!({"type": "peer-joined", "memberId": new}));
        }
        out.push((c, j));
    }
    out
}

#[tokio::test]
async fn six_members_then_room_full_with_ids_and_offerer_rule() {
    let server = start(config()).await;
    let members = fill(&server, "m", 6).await;
    let ids: Vec<String> = members.iter().map(|(_, j)| id(j, "memberId")).collect();
    for (i, (_, j)) in members.iter().enumerate() {
        assert_eq!(j["protocol"], 2);
        assert_eq!(j["peers"], i);
        assert_eq!(j["initiator"], i > 0);
        assert_eq!(j["members"], json!(ids[..i]), "{j}");
        let me = id(j, "memberId");
        assert_eq!(me.len(), 16);
        assert!(me.bytes().all(|b| b.is_ascii_hexdigit()));
        // The TURN username's id is not the member id.
        assert!(!j["iceServers"][0]["username"]
            .as_str()
            .unwrap()
            .contains(&me));
        assert_eq!(j["callId"], members[0].1["callId"]);
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 6);
    let mut seventh = server.client().await;
    let refused = seventh.join("m").await;
    assert_eq!(refused["code"], "room-full", "{refused}");
    assert_eq!(refused["message"], "the room is full");
    assert_eq!(server.state.members(), 6);
    let metrics = server.state.render_metrics();
    assert!(metrics.contains("onionrtc_signal_members 6\n"), "{metrics}");
}

#[tokio::test]
async fn addressed_messages_reach_only_their_member_with_the_true_from() {
    let server = start(config()).await;
    let mut m = fill(&server, "a", 4).await;
    let ids: Vec<String> = m.iter().map(|(_, j)| id(j, "memberId")).collect();
    // The newest offers to member 1, claiming to be member 2.
    m[3].0
        .send(json!({"type": "offer", "sdp": OFFER, "to": ids[1], "from": ids[2]}))
        .await;
    let got = m[1].0.recv().await;
    assert_eq!(got["type"], "offer");
    assert_eq!(got["from"], ids[3], "the server's from, not the sender's");
    let sdp = got["sdp"].as_str().unwrap();
    assert!(
        !sdp.contains("192.168.1.20") && !sdp.contains("198.51.100.7"),
        "{sdp}"
    );
    assert!(sdp.contains("typ relay raddr 0.0.0.0 rport 0"), "{sdp}");
    // Answer and candidates back, addressed.
    m[1].0
        .send(json!({"type": "answer", "sdp": OFFER, "to": ids[3]}))
        .await;
    let got = m[3].0.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["from"].as_str()),
        (Some("answer"), Some(ids[1].as_str()))
    );
    m[1].0
        .send(json!({"type": "candidate", "to": ids[3], "candidate": {
            "candidate": "candidate:3 1 udp 41885439 203.0.113.9 61000 typ relay raddr 10.0.0.1 rport 1",
            "sdpMid": "0", "sdpMLineIndex": 0}}))
        .await;
    let got = m[3].0.recv().await;
    assert_eq!(got["from"], ids[1]);
    assert_eq!(
        got["candidate"]["candidate"],
        "candidate:3 1 udp 41885439 203.0.113.9 61000 typ relay raddr 0.0.0.0 rport 0"
    );
    m[1].0
        .send(json!({"type": "candidate", "to": ids[0], "candidate": null}))
        .await;
    assert_eq!(
        m[0].0.recv().await,
        json!({"type": "candidate", "candidate": null, "from": ids[1]})
    );
    // Nobody else heard anything.
    for (c, _) in m.iter_mut() {
        c.expect_silence(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn misaddressed_messages_are_errors_and_leak_nothing() {
    let server = start(config()).await;
    let mut m = fill(&server, "x", 3).await;
    let (mut other, jo) = server.joined("elsewhere").await;
    let ids: Vec<String> = m.iter().map(|(_, j)| id(j, "memberId")).collect();
    let stranger = id(&jo, "memberId");
    let cases = [
        (
            json!({"type": "offer", "sdp": OFFER, "to": stranger}),
            "no-such-member",
        ),
        (
            json!({"type": "offer", "sdp": OFFER, "to": "0000000000000000"}),
            "no-such-member",
        ),
        (
            json!({"type": "offer", "sdp": OFFER, "to": ids[0]}),
            "no-such-member",
        ), // itself
        (json!({"type": "answer", "sdp": OFFER}), "to-required"),
        (
            json!({"type": "candidate", "candidate": null}),
            "to-required",
        ),
        (
            json!({"type": "candidate", "candidate": null, "to": stranger}),
            "no-such-member",
        ),
        (
            json!({"type": "offer", "sdp": OFFER, "to": "ZZ"}),
            "bad-message",
        ),
        (
            json!({"type": "offer", "sdp": OFFER, "to": 5}),
            "bad-message",
        ),
        (
            json!({"type": "offer", "sdp": "v=0\r\ns=\u{200b}\r\n", "to": ids[1]}),
            "bad-sdp",
        ),
    ];
    for (msg, code) in &cases {
        m[0].0.send(msg.clone()).await;
        let got = m[0].0.recv().await;
        assert_eq!(got["code"], *code, "{msg} → {got}");
    }
    for (c, _) in m.iter_mut().skip(1) {
        c.expect_silence(Duration::from_millis(50)).await;
    }
    other.expect_silence(Duration::from_millis(50)).await;
    let metrics = server.state.render_metrics();
    assert!(
        metrics.contains("onionrtc_signal_misaddressed_total 4\n"),
        "{metrics}"
    );
    // Before joining, `to` does not help.
    let mut c = server.client().await;
    c.send(json!({"type": "offer", "sdp": OFFER, "to": ids[1]}))
        .await;
    assert_eq!(c.recv().await["code"], "not-joined");
    c.send(json!({"type": "refresh"})).await;
    assert_eq!(c.recv().await["code"], "not-joined");
}

#[tokio::test]
async fn refresh_gives_new_credentials_without_leaving() {
    let server = start(config()).await;
    let mut m = fill(&server, "r", 2).await;
    m[1].0.send(json!({"type": "refresh"})).await;
    let got = m[1].0.recv().await;
    assert_eq!(got["type"], "credentials");
    assert_eq!(got["iceTransportPolicy"], "relay");
    assert_eq!(got["credentialTtl"], 600);
    let user = got["iceServers"][0]["username"].as_str().unwrap();
    assert_ne!(m[1].1["iceServers"][0]["username"].as_str().unwrap(), user);
    assert_eq!(
        got["iceServers"][0]["credential"].as_str().unwrap(),
        turn::auth::rest_password(crate::support::SECRET.as_bytes(), user)
    );
    // Still in the room: the other member heard nothing, messages flow.
    m[0].0.expect_silence(Duration::from_millis(50)).await;
    assert_eq!(server.state.members(), 2);
    m[1].0
        .send(json!({"type": "candidate", "candidate": null}))
        .await;
    assert_eq!(m[0].0.recv().await["type"], "candidate");
    assert!(server
        .state
        .render_metrics()
        .contains("onionrtc_signal_credential_refreshes_total 1\n"));
}

#[tokio::test]
async fn silent_member_does_not_block_the_others() {
    // A member that never answers nor reads: messages to it are queued
    // (a full queue closes it: unit test `server_full_and_overflow_kills`),
    // nobody waits for it, and when it goes the others see it leave.
    let server = start(config()).await;
    let mut m = fill(&server, "s", 3).await;
    let ids: Vec<String> = m.iter().map(|(_, j)| id(j, "memberId")).collect();
    let (silent, _) = m.remove(0);
    for _ in 0..40 {
        m[0].0
            .send(json!({"type": "offer", "sdp": OFFER, "to": ids[0]}))
            .await;
    }
    m[1].0
        .send(json!({"type": "candidate", "candidate": null, "to": ids[1]}))
        .await;
    let got = m[0].0.recv().await;
    assert_eq!(got["from"], ids[2], "{got}");
    drop(silent);
    for (c, _) in m.iter_mut() {
        let left = c.recv().await;
        assert_eq!(left, json!({"type": "peer-left", "memberId": ids[0]}));
    }
    assert_eq!(server.state.members(), 2);
}

#[tokio::test]
async fn a_hundred_joins_and_leaves_leave_no_state() {
    let server = start(SignalConfig {
        joins_per_minute_per_ip: 1000,
        ..config()
    })
    .await;
    let (mut stay, _) = server.joined("h").await;
    for i in 0..100 {
        let (mut c, j) = server.joined("h").await;
        assert_eq!(j["peers"], 1, "join {i}");
        let who = id(&j, "memberId");
        assert_eq!(
            stay.recv().await,
            json!({"type": "peer-joined", "memberId": who})
        );
        if i % 2 == 0 {
            c.send(json!({"type": "bye"})).await;
        } else {
            c.close().await;
        }
        assert_eq!(
            stay.recv().await,
            json!({"type": "peer-left", "memberId": who})
        );
    }
    assert_eq!((server.state.rooms(), server.state.members()), (1, 1));
    // The room is not stuck: five can still join.
    let mut more = Vec::new();
    for _ in 0..5 {
        more.push(server.joined("h").await);
    }
    assert_eq!(server.state.members(), 6);
    drop(more);
    drop(stay);
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.state.members() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((server.state.rooms(), server.state.members()), (0, 0));
}

#[tokio::test]
async fn room_size_is_configurable_and_capped() {
    let server = start(SignalConfig {
        max_room_size: 3,
        ..config()
    })
    .await;
    let _m = fill(&server, "c", 3).await;
    let mut c = server.client().await;
    assert_eq!(c.join("c").await["code"], "room-full");
    drop(server);
    let server = start(SignalConfig {
        max_room_size: 50,
        joins_per_minute_per_ip: 100,
        ..config()
    })
    .await;
    let _m = fill(&server, "c", signal::MAX_ROOM_SIZE).await;
    let mut c = server.client().await;
    assert_eq!(c.join("c").await["code"], "room-full");
}

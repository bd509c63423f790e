//! The webrtc agent (`mode = "webrtc"`): two `media` endpoints (ICE,
//! DTLS-SRTP, Opus, jitter buffer) through the lab's own relay over TURN
//! UDP, with the lab's seeded impairment in the path. Under 60 ms of jitter
//! (±30 ms) and 5 % loss the MOS measured from what the jitter buffer
//! delivered is close to the E-model's for those conditions and the
//! decoder concealed; the same call clean conceals (almost) nothing.

use lab::emodel::{self, Codec};
use lab::runner::{RunOptions, Runner, DB_FILE};
use lab::store::{SqliteStore, Store};

use crate::support::write_plan;

const PLAN: &str = r#"
name = "webrtc"
seed = 11
[relay]
mode = "start"
[profile]
duration_s = 10
[impairments.bad]
delay_ms = 40
jitter_ms = 30
loss_pct = 5
[[scenarios]]
name = "webrtc clean"
mode = "webrtc"
caller = "turn-udp"
callee = "turn-udp"
[[scenarios]]
name = "webrtc bad"
agent = "webrtc"
caller = "turn-udp"
callee = "turn-udp"
impairment = "bad"
[[scenarios]]
name = "webrtc tls bad"
mode = "webrtc"
caller = "turn-tls"
callee = "turn-tcp"
impairment = "bad"
[[scenarios]]
name = "synthetic bad"
caller = "turn-udp"
callee = "turn-udp"
impairment = "bad"
"#;

#[test]
fn webrtc_agent_measures_what_the_jitter_buffer_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), PLAN);
    let out = dir.path().join("out");
    let mut opts = RunOptions::new(&plan, &out);
    opts.quiet = true;
    let mut runner = Runner::new(&opts).unwrap();
    assert_eq!(runner.run(None).unwrap(), 4);
    runner.finish().unwrap();

    let db = SqliteStore::open(&out.join(DB_FILE)).unwrap();
    let data = db.load_run(db.latest_run().unwrap().unwrap()).unwrap();
    let scenario = |n: &str| data.scenarios.iter().find(|s| s.name == n).unwrap();
    let call = |n: &str| {
        let id = scenario(n).id;
        data.calls.iter().find(|c| c.scenario_id == id).unwrap()
    };
    let sides = |n: &str| {
        let id = call(n).id;
        data.sides
            .iter()
            .filter(|s| s.call_id == id)
            .collect::<Vec<_>>()
    };
    assert_eq!(scenario("webrtc bad").mode, "webrtc");
    assert_eq!(scenario("synthetic bad").mode, "synthetic");

    let clean = call("webrtc clean");
    assert_eq!(clean.outcome, lab::call::Outcome::Success, "{clean:?}");
    for s in sides("webrtc clean") {
        assert_eq!(s.relay_protocol.as_deref(), Some("udp"));
        let pct = s.concealed_pct.unwrap();
        eprintln!(
            "clean {}: concealed {pct:.2} % ({:?} samples)",
            s.side, s.concealed_samples
        );
        assert!(pct < 1.0, "clean call concealed {pct} %: {s:?}");
    }

    let bad = call("webrtc bad");
    assert_eq!(bad.outcome, lab::call::Outcome::Success, "{bad:?}");
    for s in sides("webrtc bad") {
        assert!(s.concealed_samples.unwrap() > 0, "{s:?}");
        eprintln!(
            "bad {}: concealed {:.2} %, jitter buffer {:?} ms",
            s.side,
            s.concealed_pct.unwrap(),
            s.jitter_buffer_ms
        );
    }
    // Over TLS and TCP the stage acts on the received audio (streams
    // cannot lose bytes): the call connects and the decoder conceals.
    let streams = call("webrtc tls bad");
    assert_eq!(streams.outcome, lab::call::Outcome::Success, "{streams:?}");
    let mut protocols: Vec<String> = sides("webrtc tls bad")
        .iter()
        .map(|s| {
            assert!(s.concealed_samples.unwrap() > 0, "{s:?}");
            s.relay_protocol.clone().unwrap()
        })
        .collect();
    protocols.sort();
    assert_eq!(protocols, ["tcp", "tls"]);
    eprintln!(
        "over TLS/TCP: MOS {:?}, loss {:?} %",
        streams.mos, streams.loss_pct
    );

    let loss = bad.loss_pct.unwrap();
    assert!((2.0..9.0).contains(&loss), "wire loss {loss} %");
    // The E-model for the configured conditions: the mean delay plus a
    // buffer covering the jitter above it, the 20 ms frame, 5 % random loss.
    let expected = emodel::rate(Codec::Opus, 40.0 + 30.0 + 20.0, 5.0, 1.0).mos;
    let measured = bad.mos.unwrap();
    let clean_mos = clean.mos.unwrap();
    let synthetic = call("synthetic bad").mos.unwrap();
    eprintln!(
        "MOS measured {measured:.2} (owd incl. buffer {:?} ms), E-model for the conditions \
         {expected:.2}; clean {clean_mos:.2}; synthetic agent {synthetic:.2}",
        bad.owd_ms
    );
    assert!(
        (measured - expected).abs() < 0.3,
        "measured {measured} vs E-model {expected}"
    );
    assert!(
        clean_mos > measured + 0.3,
        "clean {clean_mos} vs bad {measured}"
    );

    // Both agents in the report.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("webrtc agent"), "report names the agent");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let by_name = |n: &str| {
        summary["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("webrtc bad")["mode"], "webrtc");
    assert!(by_name("webrtc bad")["concealed_pct"].as_f64().unwrap() > 1.0);
    assert_eq!(by_name("synthetic bad")["mode"], "synthetic");
    assert!(by_name("synthetic bad").get("concealed_pct").is_none());
}

/// A webrtc call whose caller goes through a `turn-socks` path (microsocks
/// and a connector the lab starts, TURN over TLS to the relay): the same
/// plumbing as the synthetic agent's. Skipped outside CI without microsocks
/// or the onionrtc binary.
#[test]
fn webrtc_agent_through_a_socks_connector() {
    if !testkit::require_tool("microsocks", &["-h"]) {
        return;
    }
    let Some(bin) = crate::support::onionrtc_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        r#"
        name = "webrtc socks"
        relay = "start"
        [profile]
        duration_s = 4
        [paths.socks]
        kind = "turn-socks"
        socks = "microsocks"
        [[scenarios]]
        name = "webrtc SOCKS–UDP"
        agent = "webrtc"
        caller = "socks"
        callee = "turn-udp"
        "#,
    );
    let out = dir.path().join("out");
    crate::support::lab_run(&plan, &out, &bin).unwrap();
    let db = SqliteStore::open(&out.join(DB_FILE)).unwrap();
    let data = db.load_run(db.latest_run().unwrap().unwrap()).unwrap();
    let c = &data.calls[0];
    eprintln!(
        "webrtc via SOCKS: {:?}, setup {:?} ms, MOS {:?}, owd {:?} ms",
        c.outcome, c.setup_ms, c.mos, c.owd_ms
    );
    assert_eq!(c.outcome, lab::call::Outcome::Success, "{c:?}");
    assert!(c.mos.unwrap() > 4.0, "{c:?}");
    assert_eq!(data.sides.len(), 2);
}

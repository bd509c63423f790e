//! Plan validation: every mistake is an error naming its key.

use std::path::Path;

use lab::plan::{PathKind, Plan, PlanError, RelaySpec};

const BASE: &str = r#"
[relay]
mode = "start"
[[scenarios]]
name = "a"
caller = "turn-udp"
callee = "turn-udp"
"#;

fn err(text: &str) -> String {
    match Plan::from_toml(text, Path::new(".")) {
        Ok(_) => panic!("plan accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn with(extra: &str) -> String {
    format!("{extra}\n{BASE}")
}

#[test]
fn minimal_plan_has_defaults() {
    let p = Plan::from_toml(BASE, Path::new(".")).unwrap();
    assert_eq!(p.relay, RelaySpec::Start);
    assert_eq!(p.setup_retries, 4);
    assert_eq!(p.total_calls(), 1);
    assert_eq!(p.profile.duration_ns, 10_000_000_000);
    assert_eq!(p.profile.streams[0].packet_bytes, 160);
    assert_eq!(p.path("turn-udp").unwrap().kind, PathKind::TurnUdp);
    assert_eq!(p.hash.len(), 64);
}

#[test]
fn relay_start_shorthand() {
    let text = BASE.replace("[relay]\nmode = \"start\"", "relay = \"start\"");
    assert!(text.starts_with("\nrelay = \"start\""), "{text}");
    let p = Plan::from_toml(&text, Path::new(".")).unwrap();
    assert_eq!(p.relay, RelaySpec::Start);
    let e = err(&BASE.replace("[relay]\nmode = \"start\"", "relay = \"begin\""));
    assert!(e.contains("relay") && e.contains("begin"), "{e}");
    let e = err(&BASE.replace("mode = \"start\"", "mode = \"start\"\nport = 1"));
    assert!(e.contains("relay") && e.contains("port"), "{e}");
}

#[test]
fn the_example_plan_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab-plan.toml");
    let p = Plan::load(&path).unwrap();
    assert!(p.scenarios.len() >= 4);
}

#[test]
fn unknown_keys_are_errors() {
    let e = err(&with("colour = \"blue\""));
    assert!(e.contains("colour"), "{e}");
    let e = err(&format!(
        "{BASE}\n[profile]\nmedia = \"audio\"\nduraton_s = 3\n"
    ));
    assert!(e.contains("duraton_s"), "{e}");
    let e = err(&format!("{BASE}\n[impairments.x]\ndelay = 5\n"));
    assert!(e.contains("impairments.x") && e.contains("delay"), "{e}");
}

#[test]
fn value_errors_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("setup_retries = 5", "setup_retries"),
        ("repetitions = 0", "repetitions"),
    ];
    for (extra, key) in cases {
        let e = err(&with(extra));
        assert!(e.contains(key), "{extra}: {e}");
    }
    let e = err(&format!("{BASE}\n[impairments.x]\nloss_pct = 120\n"));
    assert!(e.contains("impairments.x.loss_pct"), "{e}");
    let e = err(&format!(
        "{BASE}\n[impairments.x]\nloss_pct = 1\ngilbert_elliott = {{ p = 0.1, r = 0.5 }}\n"
    ));
    assert!(e.contains("not both"), "{e}");
    let e = err(&format!("{BASE}\n[call]\nsetup_timeout_s = 0\n"));
    assert!(e.contains("call.setup_timeout_s"), "{e}");
    let e = err(&format!("{BASE}\n[emodel]\ncodec = \"amr\"\n"));
    assert!(e.contains("codec") || e.contains("amr"), "{e}");
    let e = err("[relay]\nmode = \"start\"\n");
    assert!(e.contains("scenarios"), "{e}");
    let e = err("[relay]\nmode = \"maybe\"\n[[scenarios]]\nname=\"a\"\ncaller=\"direct\"\ncallee=\"direct\"\n");
    assert!(e.contains("relay.mode"), "{e}");
}

#[test]
fn scenario_errors() {
    let e = err(&format!(
        "{BASE}\n[[scenarios]]\nname = \"a\"\ncaller = \"direct\"\ncallee = \"direct\"\n"
    ));
    assert!(
        e.contains("scenarios[1].name") && e.contains("twice"),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}\n[[scenarios]]\nname = \"b\"\ncaller = \"direct\"\ncallee = \"turn-udp\"\n"
    ));
    assert!(
        e.contains("scenarios[1]") && e.contains("peer to peer"),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}\n[[scenarios]]\nname = \"b\"\ncaller = \"carrier-pigeon\"\ncallee = \"turn-udp\"\n"
    ));
    assert!(
        e.contains("scenarios[1].caller") && e.contains("carrier-pigeon"),
        "{e}"
    );
    let e = err(&format!("{BASE}\n[[scenarios]]\nname = \"b\"\ncaller = \"turn-udp\"\ncallee = \"turn-udp\"\nimpairment = \"wan\"\n"));
    assert!(
        e.contains("scenarios[1].impairment") && e.contains("wan"),
        "{e}"
    );
}

#[test]
fn unimplemented_features_are_refused_clearly() {
    let e = err(&format!("{BASE}\n[[scenarios]]\nname = \"b\"\ncaller = \"turn-udp\"\ncallee = \"turn-udp\"\nmode = \"browser\"\n"));
    assert!(
        e.contains("scenarios[1].mode") && e.contains("not implemented"),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}\n[impairments.x]\nbackend = \"netem\"\ndelay_ms = 5\n"
    ));
    assert!(
        e.contains("impairments.x.backend") && e.contains("sch_netem"),
        "{e}"
    );
    // turn-tor needs a running connector's address…
    let e = err(&format!("{BASE}\n[paths.tor]\nkind = \"turn-tor\"\n"));
    assert!(e.contains("paths.tor.connector"), "{e}");
    // … and an external relay.
    let e = err(&format!(
        "{BASE}\n[paths.tor]\nkind = \"turn-tor\"\nconnector = \"127.0.0.1:3479\"\n"
    ));
    assert!(e.contains("external"), "{e}");
    let e = err(&format!(
        "{BASE}\n[[scenarios]]\nname = \"b\"\ncaller = \"turn-socks\"\ncallee = \"turn-udp\"\n"
    ));
    assert!(e.contains("[paths.NAME]"), "{e}");
}

#[test]
fn external_relay_checks() {
    let scen = "[[scenarios]]\nname = \"a\"\ncaller = \"turn-tls\"\ncallee = \"turn-udp\"\n";
    let e = err(&format!("[relay]\nmode = \"external\"\nudp = \"127.0.0.1:3478\"\nusername = \"u\"\npassword = \"p\"\n{scen}"));
    assert!(e.contains("relay.tls"), "{e}");
    let e = err(&format!("[relay]\nmode = \"external\"\nudp = \"127.0.0.1:3478\"\ntls = \"127.0.0.1:5349\"\nusername = \"u\"\npassword = \"p\"\n{scen}"));
    assert!(e.contains("relay.tls_ca"), "{e}");
    let e = err(&format!("[relay]\nmode = \"external\"\nudp = \"127.0.0.1:3478\"\ntls = \"127.0.0.1:5349\"\ntls_ca = \"ca.pem\"\nusername = \"u\"\n{scen}"));
    assert!(e.contains("username and password"), "{e}");
    let e = err(&format!("[relay]\nmode = \"external\"\nudp = \"127.0.0.1:3478\"\nauth_secret_env = \"LAB_TEST_UNSET_VARIABLE_42\"\n{BASE_SCEN}"));
    assert!(e.contains("LAB_TEST_UNSET_VARIABLE_42"), "{e}");
    let e = err(&format!(
        "[relay]\nmode = \"start\"\nudp = \"127.0.0.1:3478\"\n{BASE_SCEN}"
    ));
    assert!(e.contains("relay.udp"), "{e}");
    // A complete external plan with a connector path.
    let ok = "[relay]\nmode = \"external\"\nudp = \"127.0.0.1:3478\"\nauth_secret = \"s\"\n\
         [paths.tor]\nkind = \"turn-tor\"\nconnector = \"127.0.0.1:3479\"\n\
         [[scenarios]]\nname = \"Tor–Norm\"\ncaller = \"tor\"\ncallee = \"turn-udp\"\n";
    let p = Plan::from_toml(ok, Path::new(".")).unwrap();
    assert_eq!(p.path("tor").unwrap().kind, PathKind::TurnTor);
    assert!(
        !format!("{:?}", p.relay).contains("\"s\""),
        "secret in Debug output"
    );
}

const BASE_SCEN: &str =
    "[[scenarios]]\nname = \"a\"\ncaller = \"turn-udp\"\ncallee = \"turn-udp\"\n";

#[test]
fn read_errors_name_the_file() {
    match Plan::load(Path::new("/nonexistent/plan.toml")) {
        Err(PlanError::Read { path, .. }) => assert!(path.ends_with("plan.toml")),
        other => panic!("{other:?}"),
    }
}

//! Plan validation: every mistake is an error naming its key.

use std::path::Path;

use lab::plan::{
    PathKind, Plan, PlanError, Proxy, RelaySpec, RelayTransport, ScenarioMode, ServeSpec,
};

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
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab-browser-socks.toml");
    let p = Plan::load(&path).unwrap();
    assert!(p.has_mode(ScenarioMode::Browser) && p.has_mode(ScenarioMode::Synthetic));
    assert_eq!(
        p.path("socks").unwrap().launch.as_ref().unwrap().proxy,
        Proxy::Microsocks
    );
}

/// `examples/lab-tor-matrix.toml` (the thesis's matrix against a real
/// deployment, for users to run): the 4 × 4 scenarios over the normal path
/// and three running connectors, each its own port. Its secret comes from
/// the environment, which this test does not set: the loader names the
/// variable, and the same plan with the secret inline is valid.
#[test]
fn the_tor_matrix_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab-tor-matrix.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    if std::env::var_os("ONIONRTC_AUTH_SECRET").is_none() {
        let e = Plan::load(&path).unwrap_err().to_string();
        assert!(e.contains("ONIONRTC_AUTH_SECRET"), "{e}");
    }
    let env_line = "auth_secret_env = \"ONIONRTC_AUTH_SECRET\"";
    assert!(text.contains(env_line));
    let inline = text.replace(env_line, "auth_secret = \"test-secret\"");
    let p = Plan::from_toml(&inline, path.parent().unwrap()).unwrap();
    let names = ["norm", "tor", "toreu", "onion"];
    assert_eq!(p.scenarios.len(), names.len() * names.len());
    for caller in names {
        for callee in names {
            assert!(
                p.scenarios
                    .iter()
                    .any(|s| s.caller == caller && s.callee == callee),
                "no scenario {caller} → {callee}"
            );
        }
    }
    assert_eq!(p.path("norm").unwrap().kind, PathKind::TurnUdp);
    let mut ports: Vec<_> = ["tor", "toreu", "onion"]
        .iter()
        .map(|n| {
            let path = p.path(n).unwrap();
            assert_eq!(path.kind, PathKind::TurnTor, "{n}");
            assert!(path.launch.is_none(), "{n}: a running connector");
            path.connector.unwrap()
        })
        .collect();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{ports:?}");
    assert!(matches!(p.relay, RelaySpec::External { .. }));
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
    let e = err(&format!(
        "{BASE}\n[impairments.x]\nbackend = \"netem\"\ndelay_ms = 5\n"
    ));
    assert!(
        e.contains("impairments.x.backend") && e.contains("sch_netem"),
        "{e}"
    );
}

#[test]
fn browser_scenarios() {
    let scen = |caller: &str, callee: &str, extra: &str| {
        format!(
            "{BASE}\n[[scenarios]]\nname = \"b\"\ncaller = \"{caller}\"\ncallee = \"{callee}\"\n\
             mode = \"browser\"\n{extra}"
        )
    };
    let p = Plan::from_toml(&scen("turn-udp", "turn-tls", ""), Path::new(".")).unwrap();
    assert_eq!(p.scenarios[1].mode, ScenarioMode::Browser);
    assert!(p.has_mode(ScenarioMode::Browser));
    assert_eq!(p.browser.serve, ServeSpec::Start);
    let e = err(&scen("direct", "direct", ""));
    assert!(e.contains("scenarios[1]") && e.contains("turn-udp"), "{e}");
    let e = err(&format!(
        "{}\n[impairments.wan]\ndelay_ms = 5\n",
        scen("turn-udp", "turn-udp", "impairment = \"wan\"")
    ));
    assert!(e.contains("scenarios[1].impairment"), "{e}");
    let e = err(&format!(
        "{}\n[profile]\nmedia = \"video\"\n",
        scen("turn-udp", "turn-udp", "")
    ));
    assert!(e.contains("profile.media"), "{e}");
    let e = err(&format!(
        "{}\n[profile]\nduration_s = 1\n",
        scen("turn-udp", "turn-udp", "")
    ));
    assert!(e.contains("profile.duration_s"), "{e}");
    let e = err(&scen("turn-udp", "turn-udp", "").replace("\"browser\"", "\"puppet\""));
    assert!(
        e.contains("scenarios[1].mode") && e.contains("puppet"),
        "{e}"
    );
    // [browser]: a running serve, Chromium and its flags.
    let p = Plan::from_toml(
        &format!(
            "{}\n[browser]\nserve = \"http://127.0.0.1:8080/\"\nchromium = \"/opt/chromium\"\n\
             chromium_args = [\"--allow-loopback-in-peer-connection\"]\n",
            scen("turn-udp", "turn-udp", "")
        ),
        Path::new("."),
    )
    .unwrap();
    assert_eq!(
        p.browser.serve,
        ServeSpec::External("http://127.0.0.1:8080".into())
    );
    assert_eq!(p.browser.chromium_args.len(), 1);
    for (extra, key) in [
        ("serve = \"ftp://x\"", "browser.serve"),
        ("serve = \"http://h/path\"", "browser.serve"),
        ("chromium_args = [\"-x\"]", "browser.chromium_args"),
        ("headless = false", "headless"),
    ] {
        let e = err(&format!("{BASE}\n[browser]\n{extra}\n"));
        assert!(e.contains(key), "{extra}: {e}");
    }
}

#[test]
fn connector_paths() {
    // The lab starts the connector: microsocks, a given proxy, Tor.
    let p = Plan::from_toml(
        &format!(
            "{BASE}\n[paths.s]\nkind = \"turn-socks\"\nsocks = \"microsocks\"\n\
             [paths.p]\nkind = \"turn-socks\"\nsocks = \"127.0.0.1:1080\"\nrelay_transport = \"tcp\"\n\
             [paths.t]\nkind = \"turn-tor\"\ntor_socks = \"127.0.0.1:9050\"\n"
        ),
        Path::new("."),
    )
    .unwrap();
    let launch = |n: &str| p.path(n).unwrap().launch.clone().unwrap();
    assert_eq!(launch("s").proxy, Proxy::Microsocks);
    assert_eq!(launch("s").relay_transport, RelayTransport::Tls);
    assert_eq!(
        launch("p").proxy,
        Proxy::Socks("127.0.0.1:1080".parse().unwrap())
    );
    assert_eq!(launch("p").relay_transport, RelayTransport::Tcp);
    assert_eq!(p.path("t").unwrap().kind, PathKind::TurnTor);
    assert_eq!(
        launch("t").proxy,
        Proxy::Socks("127.0.0.1:9050".parse().unwrap())
    );
    // Relay bind address of the lab's relay: loopback only.
    let bound = BASE.replace("mode = \"start\"", "mode = \"start\"\nbind = \"127.0.0.2\"");
    let p = Plan::from_toml(&bound, Path::new(".")).unwrap();
    assert_eq!(p.relay_bind.to_string(), "127.0.0.2");
    let e = err(&BASE.replace("mode = \"start\"", "mode = \"start\"\nbind = \"10.0.0.1\""));
    assert!(e.contains("relay.bind") && e.contains("loopback"), "{e}");

    let cases: &[(&str, &str)] = &[
        ("kind = \"turn-tor\"", "paths.x.tor_socks"),
        ("kind = \"turn-socks\"", "paths.x.socks"),
        (
            "kind = \"turn-tor\"\nsocks = \"microsocks\"",
            "paths.x.socks",
        ),
        (
            "kind = \"turn-socks\"\ntor_socks = \"127.0.0.1:9050\"",
            "paths.x.tor_socks",
        ),
        (
            "kind = \"turn-tor\"\ntor_socks = \"microsocks\"",
            "paths.x.tor_socks",
        ),
        (
            "kind = \"turn-socks\"\nsocks = \"microsocks\"\nconnector = \"127.0.0.1:3479\"",
            "not both",
        ),
        (
            "kind = \"turn-socks\"\nsocks = \"microsocks\"\nrelay_transport = \"udp\"",
            "relay_transport",
        ),
        (
            "kind = \"turn-udp\"\nsocks = \"microsocks\"",
            "paths.x.socks",
        ),
        // A running connector forwards to a fixed relay: not the lab's own.
        (
            "kind = \"turn-tor\"\nconnector = \"127.0.0.1:3479\"",
            "external",
        ),
    ];
    for (table, want) in cases {
        let e = err(&format!("{BASE}\n[paths.x]\n{table}\n"));
        assert!(e.contains(want), "{table}: {e}");
    }
    let e = err(&format!(
        "{BASE}\n[[scenarios]]\nname = \"b\"\ncaller = \"turn-socks\"\ncallee = \"turn-udp\"\n"
    ));
    assert!(e.contains("[paths.NAME]"), "{e}");
    // An external relay needs the listener the connector dials.
    let e = err(
        "[relay]\nmode = \"external\"\nudp = \"127.0.0.1:3478\"\nauth_secret = \"s\"\n\
         [paths.s]\nkind = \"turn-socks\"\nsocks = \"127.0.0.1:1080\"\n\
         [[scenarios]]\nname = \"a\"\ncaller = \"s\"\ncallee = \"turn-udp\"\n",
    );
    assert!(e.contains("paths.s") && e.contains("relay.tls"), "{e}");
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

#[test]
fn webrtc_mode_needs_the_feature_and_turn_paths() {
    let webrtc = BASE.replace("name = \"a\"", "name = \"a\"\nmode = \"webrtc\"");
    if cfg!(feature = "webrtc") {
        let p = Plan::from_toml(&webrtc, Path::new(".")).unwrap();
        assert_eq!(p.scenarios[0].mode, ScenarioMode::Webrtc);
        // `agent` is the same key.
        let agent = webrtc.replace("mode = \"webrtc\"", "agent = \"webrtc\"");
        let p = Plan::from_toml(&agent, Path::new(".")).unwrap();
        assert_eq!(p.scenarios[0].mode, ScenarioMode::Webrtc);
        let e = err(&webrtc.replace("callee = \"turn-udp\"", "callee = \"direct\""));
        assert!(e.contains("relay-only") && e.contains("direct"), "{e}");
    } else {
        // A build without Opus refuses the agent, saying how to get it.
        let e = err(&webrtc);
        assert!(
            e.contains("scenarios") && e.contains("webrtc") && e.contains("--features call"),
            "{e}"
        );
    }
}

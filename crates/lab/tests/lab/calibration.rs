//! Calibration: a known impairment in, the right figure out. Simulated time
//! for the exact checks, real time on loopback for the driver.

use std::path::Path;
use std::time::Duration;

use lab::agent::{Agent, MediaProfile};
use lab::call::{Outcome, RatingInputs};
use lab::emodel::{self, Codec};
use lab::env::Environment;
use lab::impair::{GilbertElliott, Impairment};
use lab::metrics::{Jitter, ReceiverStats};
use lab::plan::Plan;
use lab::realtime::{self, CallSpec, LabClock};
use lab::sim::SimCall;

fn delay(ms: f64) -> Impairment {
    Impairment {
        delay_ms: ms,
        ..Impairment::none()
    }
}

#[test]
fn simulated_50ms_each_way_reads_50_and_100() {
    let call = SimCall::symmetric(MediaProfile::audio(10_000_000_000), delay(50.0), 1);
    let (a, b) = call.run_agents();
    for agent in [&a, &b] {
        assert_eq!(agent.rx.unique, 500);
        for d in &agent.rx.delays_ms {
            assert!((d - 50.0).abs() <= 0.5, "one-way delay {d}");
        }
        assert!(
            agent.rtt_ms.len() >= 99,
            "{} RTT samples",
            agent.rtt_ms.len()
        );
        for r in &agent.rtt_ms {
            assert!((r - 100.0).abs() <= 1.0, "RTT {r}");
        }
    }
    let report = call.run();
    assert_eq!(report.outcome, Outcome::Success);
    let owd = report.owd_ms().unwrap();
    let rtt = report.rtt_ms.unwrap();
    assert!((owd - 50.0).abs() <= 0.5, "{owd}");
    assert!((rtt - 100.0).abs() <= 1.0, "{rtt}");
    assert_eq!(report.jitter_ms(), Some(0.0));
    assert_eq!(report.loss_pct(), Some(0.0));
}

#[test]
fn simulated_5_percent_random_loss_over_2000_packets() {
    let imp = Impairment {
        loss_pct: 5.0,
        ..Impairment::none()
    };
    // 50 s of 20 ms frames: 2500 packets each way.
    let report = SimCall::symmetric(MediaProfile::audio(50_000_000_000), imp, 2024).run();
    for d in [&report.forward, &report.backward] {
        assert!(d.sent >= 2000, "{} packets", d.sent);
        assert!((d.loss_pct - 5.0).abs() <= 1.5, "loss {} %", d.loss_pct);
        assert_eq!(d.lost, d.sent - d.received);
        // Random loss: the measured burst ratio is about 1.
        assert!(d.burst_r < 1.3, "BurstR {}", d.burst_r);
    }
}

#[test]
fn simulated_bursty_loss_has_burst_ratio_above_one() {
    let ge = GilbertElliott {
        p: 0.01,
        r: 0.25,
        loss_bad: 1.0,
        loss_good: 0.0,
    };
    let imp = Impairment {
        gilbert_elliott: Some(ge),
        ..Impairment::none()
    };
    let report = SimCall::symmetric(MediaProfile::audio(100_000_000_000), imp, 9).run();
    let d = &report.forward;
    assert!(
        (d.loss_pct - ge.mean_loss_pct()).abs() < 1.5,
        "{}",
        d.loss_pct
    );
    // G.107: BurstR = 1/(p + r) = 3.85 for this chain.
    assert!(
        (d.burst_r - 1.0 / (ge.p + ge.r)).abs() < 1.0,
        "{}",
        d.burst_r
    );
}

/// Transit times 10, 12, 9, 15, 10 ms: |D| = 2, 3, 6, 5, and by hand
/// J = 0.125, 0.3046875, 0.66064453125, 0.931854248046875 ms.
const SEND_MS: [f64; 5] = [0.0, 20.0, 40.0, 60.0, 80.0];
const RECV_MS: [f64; 5] = [10.0, 32.0, 49.0, 75.0, 90.0];
const HAND_J: [f64; 5] = [0.0, 0.125, 0.3046875, 0.66064453125, 0.931854248046875];

#[test]
fn rfc3550_jitter_matches_a_hand_computed_sequence() {
    let mut j = Jitter::new();
    for i in 0..5 {
        j.update(SEND_MS[i], RECV_MS[i]);
        assert_eq!(j.value(), HAND_J[i], "after packet {i}");
    }
    // In RTP timestamp units of G.711 (8 kHz), then back to ms.
    let mut j = Jitter::new();
    for i in 0..5 {
        j.update(SEND_MS[i] * 8.0, RECV_MS[i] * 8.0);
    }
    assert!((j.value() / 8.0 - HAND_J[4]).abs() < 1e-12);
    // Through the receiver, in nanoseconds on the lab clock.
    let mut r = ReceiverStats::new(0);
    for i in 0..5 {
        r.on_packet(
            i as u32,
            (SEND_MS[i] * 1e6) as u64,
            (RECV_MS[i] * 1e6) as u64,
            160,
        );
    }
    assert!(
        (r.jitter_ms() - HAND_J[4]).abs() < 1e-9,
        "{}",
        r.jitter_ms()
    );
    // And through an agent's packet path.
    let mut agent = Agent::new(MediaProfile::audio(1_000_000_000), 0);
    for i in 0..5 {
        let h = lab::agent::Header {
            seq: i as u32,
            send_ns: (SEND_MS[i] * 1e6) as u64,
            flags: 0,
            stream: lab::agent::StreamKind::Audio,
        };
        agent
            .handle_packet((RECV_MS[i] * 1e6) as u64, &h.encode(160))
            .unwrap();
    }
    assert!((agent.rx.jitter_ms() - HAND_J[4]).abs() < 1e-9);
}

#[test]
fn emodel_check_points() {
    // G.711, no impairment: R = 93.2, MOS ≈ 4.41.
    let r = emodel::rate(Codec::G711, 0.0, 0.0, 1.0);
    assert!((r.r - 93.2).abs() < 1e-9, "{}", r.r);
    assert!((r.mos - 4.41).abs() < 0.005, "{}", r.mos);
    // G.711 with PLC (Ie 0, Bpl 25.1), 200 ms one way, 2 % random loss:
    // Id = 7.297, Ie,eff = 7.011, R = 78.89, MOS = 3.98.
    let r = emodel::rate(Codec::G711, 200.0, 2.0, 1.0);
    assert!((r.id - 7.297).abs() < 0.0005, "Id {}", r.id);
    assert!((r.ie_eff - 7.011).abs() < 0.0005, "Ie,eff {}", r.ie_eff);
    assert!((r.r - 78.89).abs() < 0.005, "R {}", r.r);
    assert!((r.mos - 3.98).abs() < 0.005, "MOS {}", r.mos);
    // Opus is rated as G.711 with PLC (documented assumption).
    assert_eq!(emodel::rate(Codec::Opus, 200.0, 2.0, 1.0), r);
    // The same check point through a simulated call: 200 ms each way and
    // exactly 2 % loss are not what a seeded stage gives, so check the
    // call's rating equals the formula on its own measured inputs.
    let call = SimCall::symmetric(
        MediaProfile::audio(20_000_000_000),
        Impairment {
            delay_ms: 200.0,
            loss_pct: 2.0,
            ..Impairment::none()
        },
        5,
    );
    let call = SimCall {
        rating: RatingInputs {
            measured_burst: false,
            ..RatingInputs::default()
        },
        ..call
    };
    let rep = call.run();
    let f = &rep.forward;
    let expect = emodel::rate(Codec::G711, f.owd_median_ms.unwrap(), f.loss_pct, 1.0);
    assert!((f.r.unwrap() - expect.r).abs() < 1e-9);
    assert!((f.owd_median_ms.unwrap() - 200.0).abs() < 0.5);
}

fn loopback_plan(dir: &Path) -> Plan {
    let text = r#"
        [relay]
        mode = "start"
        [[scenarios]]
        name = "direct"
        caller = "direct"
        callee = "direct"
        [[scenarios]]
        name = "udp"
        caller = "turn-udp"
        callee = "turn-udp"
    "#;
    Plan::from_toml(text, dir).unwrap()
}

#[test]
fn real_time_loopback_50ms_each_way_within_10_percent() {
    let dir = tempfile::tempdir().unwrap();
    let plan = loopback_plan(dir.path());
    let env = Environment::prepare(&plan, None).unwrap();
    let spec = CallSpec {
        profile: MediaProfile::audio(2_000_000_000),
        impairment: delay(50.0),
        seed: 3,
        timing: lab::plan::CallTiming {
            setup_timeout_s: 5.0,
            stall_timeout_s: 2.0,
            drain_ms: 200.0,
            pause_ms: 0.0,
        },
        rating: RatingInputs::default(),
        setup_retries: 0,
    };
    let clock = LabClock::new();
    for path in ["direct", "turn-udp"] {
        let opener = env.opener(path).unwrap();
        let started = std::time::Instant::now();
        let rep = realtime::run_call(opener.as_ref(), opener.as_ref(), &spec, clock);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(rep.outcome, Outcome::Success, "{path}: {:?}", rep.failure);
        for d in [&rep.forward, &rep.backward] {
            let owd = d.owd_median_ms.unwrap();
            assert!((owd - 50.0).abs() <= 5.0, "{path}: one-way delay {owd}");
            assert_eq!(d.received, d.sent, "{path}: loss on loopback");
            assert!(d.sent >= 95, "{path}: {} packets", d.sent);
        }
        let rtt = rep.rtt_ms.unwrap();
        assert!((rtt - 100.0).abs() <= 10.0, "{path}: RTT {rtt}");
        assert!(
            rep.setup_ms.unwrap() > 50.0,
            "setup includes the first packet's delay"
        );
    }
}

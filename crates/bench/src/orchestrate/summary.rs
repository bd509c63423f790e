//! The targets of the issue, judged from the rows, and the closing summary.

use super::report::{num, Document, Row, Table, Target};

fn find<'a>(doc: &'a Document, scenario: &str, server: &str) -> Option<&'a Row> {
    doc.rows
        .iter()
        .find(|r| r.ok && r.scenario == scenario && r.server == server)
}

/// ours/coturn messages per CPU-second in `scenario`.
fn cpu_ratio(doc: &Document, scenario: &str) -> Option<f64> {
    let ours = find(doc, scenario, "onionrtc")?.msgs_per_cpu_s?;
    let theirs = find(doc, scenario, "coturn")?.msgs_per_cpu_s?;
    (theirs > 0.0).then(|| ours / theirs)
}

fn at_least(name: String, goal: f64, value: Option<f64>) -> Target {
    Target {
        name,
        goal: format!(">= {goal}"),
        value,
        pass: value.map(|v| v >= goal),
    }
}

fn below(name: String, goal: f64, value: Option<f64>) -> Target {
    Target {
        name,
        goal: format!("< {goal}"),
        value,
        pass: value.map(|v| v < goal),
    }
}

/// Every target, PASS/FAIL where measured.
pub fn targets(doc: &Document) -> Vec<Target> {
    let mut t = Vec::new();
    for (transport, goal) in [("udp", 2.0), ("tcp", 1.5), ("tls", 1.5)] {
        for size in [120, 1200] {
            t.push(at_least(
                format!(
                    "uclient {} {size} B: msgs/CPU-s ours/coturn",
                    transport.to_uppercase()
                ),
                goal,
                cpu_ratio(doc, &format!("uclient-{transport}-{size}")),
            ));
        }
    }
    for size in [120, 1200] {
        t.push(at_least(
            format!("loadgen UDP {size} B 20000 pps: msgs/CPU-s ours/coturn"),
            2.0,
            cpu_ratio(doc, &format!("loadgen-udp-{size}-20000pps")),
        ));
    }
    for size in [120, 1200] {
        let added =
            find(doc, &format!("loadgen-udp-{size}-20000pps"), "onionrtc").and_then(|r| r.added_us);
        t.push(below(
            format!("latency added, UDP {size} B 20000 pps: p50 µs"),
            30.0,
            added.map(|a| a.p50),
        ));
        t.push(below(
            format!("latency added, UDP {size} B 20000 pps: p99 µs"),
            100.0,
            added.map(|a| a.p99),
        ));
    }
    let ours_mem: Vec<&Row> = doc
        .rows
        .iter()
        .filter(|r| r.ok && r.kind == "memory" && r.server == "onionrtc")
        .collect();
    let at_10k = ours_mem
        .iter()
        .find(|r| r.allocations.is_some_and(|a| a >= 9_900))
        .and_then(|r| r.rss_kb)
        .map(|kb| kb as f64 / 1024.0);
    t.push(below(
        "RSS with 10000 allocations + permission + channel: MB".into(),
        100.0,
        at_10k,
    ));
    t.push(Target {
        name: "memory linear: KB/alloc of the last step / of the first step".into(),
        goal: "<= 1.5".into(),
        value: linearity(&ours_mem),
        pass: linearity(&ours_mem).map(|v| v <= 1.5),
    });
    t.push(at_least(
        "allocations per second with REST credentials".into(),
        5000.0,
        find(doc, "alloc-rate-udp", "onionrtc").and_then(|r| r.alloc_per_s),
    ));
    t
}

/// KB per allocation of the last step over that of the first step (rows
/// ordered by allocations, the first being the empty server).
fn linearity(rows: &[&Row]) -> Option<f64> {
    let per = |a: &Row, b: &Row| {
        let da = b.allocations? as f64 - a.allocations? as f64;
        let dr = b.rss_kb? as f64 - a.rss_kb? as f64;
        (da > 0.0).then(|| dr / da)
    };
    if rows.len() < 4 {
        return None;
    }
    let first = per(rows[0], rows[1])?;
    let last = per(rows[rows.len() - 2], rows[rows.len() - 1])?;
    (first > 0.0).then(|| last / first)
}

/// Prints the targets, the skipped scenarios and the failures.
pub fn print(doc: &Document) {
    println!(
        "\n== summary{} (targets are read from this output, never asserted)",
        if doc.quick {
            " of a --quick run: small loads, figures indicative only"
        } else {
            ""
        }
    );
    let mut t = Table::new(&["target", "goal", "value", "result"]);
    for target in &doc.targets {
        t.push(vec![
            target.name.clone(),
            target.goal.clone(),
            num(target.value, 2),
            match target.pass {
                Some(true) => "PASS".into(),
                Some(false) => "FAIL".into(),
                None => "n/a".into(),
            },
        ]);
    }
    print!("{}", t.render());
    let (bg, secs) = doc
        .rows
        .iter()
        .filter_map(|r| Some((r.background_cpu_s?, r.seconds?)))
        .fold((0.0, 0.0), |(b, s), (rb, rs)| (b + rb, s + rs));
    if secs > 0.0 {
        let share = 100.0 * bg / secs;
        println!(
            "background: other processes used {share:.0}% of a CPU on average during the loads{}",
            if share > 10.0 {
                " — rerun on a quiet machine for trustworthy latency and loss figures"
            } else {
                ""
            }
        );
    }
    for s in &doc.skipped {
        println!("skipped: {s}");
    }
    let failed: Vec<String> = doc
        .rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} ({})", r.scenario, r.server))
        .collect();
    if !failed.is_empty() {
        println!("no result: {}", failed.join(", "));
    }
    if doc.interrupted {
        println!("interrupted: the run stopped early");
    }
    println!("elapsed: {:.0} s", doc.elapsed_s);
}

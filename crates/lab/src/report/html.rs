//! `report.html`: one self-contained file (inline CSS and SVG, no script,
//! nothing fetched).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::svg::{self, esc, num, Segment};
use super::{scenario_calls, Spread, Summary};
use crate::call::{self, Outcome};
use crate::emodel::Codec;
use crate::store::{CallRow, RunData};

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.meta{color:#555;font-size:.9em}
svg{display:block;margin:1em 0;font-family:system-ui,sans-serif}
svg .title{font-size:14px;font-weight:600}svg .tick{font-size:10px;fill:#444}
svg .label{font-size:11px}svg .axis{font-size:11px;fill:#444}
svg .grid{stroke:#e5e5e5}svg .whisker{stroke:#555}svg .box{fill:#cfe2f3;stroke:#1f77b4}
svg .median{stroke:#d62728;stroke-width:2}svg .threshold{stroke:#999;stroke-dasharray:4 3}
svg .threshold-label{font-size:10px;fill:#777}";

/// Colours of the outcomes.
fn outcome_color(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "#2ca02c",
        Outcome::FailedSetup => "#d62728",
        Outcome::FailedDuringCall => "#ff7f0e",
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from Unix milliseconds.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn cell(s: &Option<Spread>) -> String {
    match s {
        Some(s) => format!("{} / {}", esc(&num(s.median)), esc(&num(s.p95))),
        None => "–".into(),
    }
}

/// A path's name, with its kind when the name is not the kind.
fn path_cell(name: &str, kind: &str) -> String {
    if name == kind {
        esc(name)
    } else {
        format!("{} ({})", esc(name), esc(kind))
    }
}

fn summary_table(out: &mut String, summary: &Summary) {
    out.push_str(
        "<table><tr><th class=l>scenario</th><th class=l>caller → callee</th><th>calls</th>\
         <th>success</th><th>failed setup</th><th>failed in call</th><th>acceptable</th>\
         <th>RTT ms</th><th>one-way ms</th><th>jitter ms</th><th>loss %</th><th>MOS</th>\
         <th>setup ms</th><th>kbit/s</th><th>G.114 good/acc/poor</th></tr>",
    );
    for s in &summary.scenarios {
        let o = |k: &str| s.outcomes.get(k).copied().unwrap_or(0);
        let g = |k: &str| s.g114.get(k).copied().unwrap_or(0);
        let owd = if s.owd_estimated && s.owd_ms.is_some() {
            format!("≈ {}", cell(&s.owd_ms))
        } else {
            cell(&s.owd_ms)
        };
        let name = if s.mode == "browser" {
            let protocols: Vec<String> = s
                .relay_protocols
                .iter()
                .map(|(p, n)| format!("{} ×{n}", esc(p)))
                .collect();
            format!(
                "{} <span class=meta>(browser{}{})</span>",
                esc(&s.name),
                if protocols.is_empty() { "" } else { "; relay " },
                protocols.join(", ")
            )
        } else if s.mode == "webrtc" {
            format!(
                "{} <span class=meta>(webrtc agent: Opus, jitter buffer{})</span>",
                esc(&s.name),
                s.concealed_pct
                    .map(|c| format!("; concealed {c:.2} %"))
                    .unwrap_or_default()
            )
        } else {
            esc(&s.name)
        };
        let _ = write!(
            out,
            "<tr><td class=l>{}</td><td class=l>{} → {}</td><td>{}/{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}/{}/{}</td></tr>",
            name,
            path_cell(&s.caller, &s.caller_kind),
            path_cell(&s.callee, &s.callee_kind),
            s.calls,
            s.planned,
            o("success"),
            o("failed_setup"),
            o("failed_during_call"),
            s.acceptable,
            cell(&s.rtt_ms),
            owd,
            cell(&s.jitter_ms),
            cell(&s.loss_pct),
            cell(&s.mos),
            cell(&s.setup_ms),
            cell(&s.rx_kbps),
            g("good"),
            g("acceptable"),
            g("poor"),
        );
    }
    out.push_str("</table><p class=meta>Cells: median / 95th percentile over successful calls.");
    if summary.scenarios.iter().any(|s| s.owd_estimated) {
        let _ = write!(
            out,
            " ≈: one-way delay <b>estimated</b> (browser calls: browsers do not expose it): \
             RTT/2 + mean jitter-buffer delay + {} ms packetisation.",
            crate::browser::PACKETISATION_MS
        );
    }
    out.push_str("</p>");
}

fn metric_rows(data: &RunData, f: impl Fn(&CallRow) -> Option<f64>) -> Vec<(String, Vec<f64>)> {
    data.scenarios
        .iter()
        .map(|s| {
            let v = scenario_calls(data, s)
                .into_iter()
                .filter(|c| c.outcome == Outcome::Success)
                .filter_map(&f)
                .collect();
            (s.name.clone(), v)
        })
        .collect()
}

fn throughput_rows(data: &RunData) -> Vec<(String, Vec<f64>)> {
    let calls: BTreeMap<i64, &CallRow> = data.calls.iter().map(|c| (c.id, c)).collect();
    data.scenarios
        .iter()
        .map(|s| {
            let v = data
                .samples
                .iter()
                .filter(|m| {
                    calls.get(&m.call_id).is_some_and(|c| {
                        c.scenario_id == s.id
                            && c.outcome == Outcome::Success
                            // Whole seconds of media only (the last one may be partial).
                            && f64::from(m.t_s + 1) * 1000.0 <= c.duration_ms
                    })
                })
                .map(|m| 8.0 * m.rx_bytes as f64 / 1000.0)
                .collect();
            (s.name.clone(), v)
        })
        .collect()
}

fn success_over_time(data: &RunData) -> Vec<(String, Vec<(f64, f64)>)> {
    let t0 = data.run.started_ms;
    data.scenarios
        .iter()
        .map(|s| {
            let mut ok = 0usize;
            let points = scenario_calls(data, s)
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    ok += usize::from(c.outcome == Outcome::Success);
                    let minutes = (c.started_ms - t0) as f64 / 60_000.0;
                    (minutes, 100.0 * ok as f64 / (i + 1) as f64)
                })
                .collect();
            (s.name.clone(), points)
        })
        .collect()
}

/// Renders the report.
pub fn render(data: &RunData, summary: &Summary) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\">\
         <title>Call-quality lab: {name}</title><style>{CSS}</style></head><body>\
         <h1>Call-quality lab: {name}</h1>\
         <p class=meta>Run {id} · started {start} · {end} · plan sha256 {hash}</p>",
        name = esc(&summary.plan),
        id = summary.run_id,
        start = esc(&utc(summary.started_ms)),
        end = match summary.finished_ms {
            Some(f) => format!("finished {}", esc(&utc(f))),
            None => "unfinished".into(),
        },
        hash = esc(summary.plan_hash.get(..16).unwrap_or(&summary.plan_hash)),
    );
    out.push_str("<h2>Summary</h2>");
    summary_table(&mut out, summary);

    out.push_str("<h2>Outcomes</h2>");
    let bars: Vec<(String, Vec<Segment>)> = data
        .scenarios
        .iter()
        .map(|s| {
            let calls = scenario_calls(data, s);
            let segs = Outcome::ALL
                .iter()
                .map(|o| Segment {
                    name: o.as_str().replace('_', " "),
                    value: calls.iter().filter(|c| c.outcome == *o).count(),
                    color: outcome_color(*o),
                })
                .collect();
            (s.name.clone(), segs)
        })
        .collect();
    out.push_str(&svg::stacked_bars(
        "Calls per scenario by outcome",
        "calls",
        &bars,
    ));
    out.push_str(&svg::line_chart(
        "Success rate over time (cumulative, per scenario)",
        "minutes since the run started",
        "% success",
        &success_over_time(data),
        (0.0, 100.0),
    ));

    out.push_str("<h2>Quality (successful calls)</h2>");
    let rtt = format!("acceptable < {} ms", call::MAX_RTT_MS);
    let loss = format!("acceptable < {} %", call::MAX_LOSS_PCT);
    let jit = format!("acceptable < {} ms", call::MAX_JITTER_MS);
    let owd = format!("G.114 good < {} ms", call::G114_GOOD_MS);
    type Chart<'a> = (
        &'a str,
        &'a str,
        Vec<(String, Vec<f64>)>,
        Option<(f64, &'a str)>,
    );
    let charts: [Chart<'_>; 5] = [
        (
            "Round-trip time",
            "ms",
            metric_rows(data, |c| c.rtt_ms),
            Some((call::MAX_RTT_MS, &rtt)),
        ),
        (
            if summary.scenarios.iter().any(|s| s.owd_estimated) {
                "One-way delay (worse direction; browser scenarios: estimate)"
            } else {
                "One-way delay (worse direction)"
            },
            "ms",
            metric_rows(data, |c| c.owd_ms),
            Some((call::G114_GOOD_MS, &owd)),
        ),
        (
            "RFC 3550 jitter (worse direction)",
            "ms",
            metric_rows(data, |c| c.jitter_ms),
            Some((call::MAX_JITTER_MS, &jit)),
        ),
        (
            "Packet loss (worse direction)",
            "%",
            metric_rows(data, |c| c.loss_pct),
            Some((call::MAX_LOSS_PCT, &loss)),
        ),
        (
            "E-model MOS (worse direction)",
            "MOS",
            metric_rows(data, |c| c.mos),
            None,
        ),
    ];
    for (title, unit, rows, threshold) in charts {
        out.push_str(&svg::box_plots(title, unit, &rows, threshold));
    }
    out.push_str(&svg::box_plots(
        "Throughput per second, received media per direction",
        "kbit/s",
        &throughput_rows(data),
        None,
    ));

    let _ = write!(
        out,
        "<h2>Method</h2><ul>\
         <li>Each call: two agents exchange RTP-like packets both ways through the scenario's \
         paths; RTT from echoed packets, one-way delay from send timestamps on a clock both \
         agents share, RFC 3550 interarrival jitter, loss from the sender's count.</li>\
         <li>Browser scenarios: two headless Chromium pages call each other through \
         <code>onionrtc serve</code>; RTT is the selected candidate pair's, jitter and loss the \
         receiving page's <code>inbound-rtp</code>; one-way delay is estimated as RTT/2 + mean \
         jitter-buffer delay + {pkt} ms packetisation; MOS with BurstR 1. Setup: page load to \
         both pages connected.</li>\
         <li>Acceptable: success with RTT &lt; {rtt} ms, loss &lt; {loss} %, jitter &lt; {jit} ms. \
         ITU-T G.114: one-way delay &lt; {good} ms good, &lt; {acc} ms acceptable.</li>\
         <li>E-model (ITU-T G.107 simplified): R = 93.2 − Id − Ie,eff; codec constants \
         G.711 Ie {g711_ie}, Bpl {g711_bpl}; Opus rated as G.711 with PLC (our assumption). \
         Box plots: box 25th–75th percentile, red line median, whiskers minimum–maximum.</li>\
         </ul><p class=meta>Exports: <a href=\"summary.json\">summary.json</a> · \
         <a href=\"calls.csv\">calls.csv</a></p></body></html>",
        rtt = call::MAX_RTT_MS,
        loss = call::MAX_LOSS_PCT,
        jit = call::MAX_JITTER_MS,
        good = call::G114_GOOD_MS,
        acc = call::G114_ACCEPTABLE_MS,
        g711_ie = Codec::G711.ie(),
        g711_bpl = Codec::G711.bpl(),
        pkt = crate::browser::PACKETISATION_MS,
    );
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
    }
}

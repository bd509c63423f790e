//! Reports of a stored run: `summary.json`, `calls.csv` and one
//! self-contained `report.html` with hand-written SVG charts.
//!
//! Every figure is computed from [`RunData`] (what the store holds), so a
//! report made later with `lab report` is the same as the one `lab run`
//! wrote. Quality figures (RTT, one-way delay, jitter, loss, R, MOS, setup
//! time, throughput) are taken over the scenario's **successful** calls;
//! medians and 95th percentiles use [`crate::metrics::percentile`]
//! (linear interpolation).

mod html;
mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::call::{self, Outcome};
use crate::metrics::percentile;
use crate::store::{CallRow, RunData, ScenarioRow};

/// Median and 95th percentile of a figure over a scenario's successful calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Values it is computed from.
    pub n: usize,
}

impl Spread {
    /// The spread of `values` (`None` when empty).
    pub fn of(values: &[f64]) -> Option<Spread> {
        Some(Spread {
            median: percentile(values, 50.0)?,
            p95: percentile(values, 95.0)?,
            n: values.iter().filter(|v| !v.is_nan()).count(),
        })
    }
}

/// The summary of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioSummary {
    /// Name.
    pub name: String,
    /// Caller's path name.
    pub caller: String,
    /// Caller's path kind.
    pub caller_kind: String,
    /// Callee's path name.
    pub callee: String,
    /// Callee's path kind.
    pub callee_kind: String,
    /// The agent: `synthetic` (the lab's agents), `browser` (two Chromium
    /// pages) or `webrtc` (two `media` endpoints with Opus).
    pub mode: String,
    /// Whether the one-way delays are estimates (browser calls: RTT/2 +
    /// mean jitter-buffer delay + 20 ms packetisation), not measurements.
    pub owd_estimated: bool,
    /// Browser calls: the relay protocol each page's selected candidate
    /// used (`udp`, `tcp`, `tls`), counted per page.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub relay_protocols: BTreeMap<String, usize>,
    /// Webrtc calls: mean over the receiving sides of the samples the
    /// decoder concealed, percent of those played.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concealed_pct: Option<f64>,
    /// Impairment (JSON object).
    pub impairment: serde_json::Value,
    /// Calls planned.
    pub planned: u32,
    /// Calls recorded.
    pub calls: usize,
    /// Calls by outcome (`success`, `failed_setup`, `failed_during_call`).
    pub outcomes: BTreeMap<&'static str, usize>,
    /// Successful calls / recorded calls (`None` without calls).
    pub success_rate: Option<f64>,
    /// Calls acceptable against RTT < 400 ms, loss < 2 %, jitter < 30 ms.
    pub acceptable: usize,
    /// Successful calls by ITU-T G.114 class (`good`, `acceptable`, `poor`).
    pub g114: BTreeMap<String, usize>,
    /// RTT, ms.
    pub rtt_ms: Option<Spread>,
    /// One-way delay (worse direction), ms.
    pub owd_ms: Option<Spread>,
    /// RFC 3550 jitter (worse direction), ms.
    pub jitter_ms: Option<Spread>,
    /// Loss (worse direction), percent.
    pub loss_pct: Option<Spread>,
    /// E-model R (worse direction).
    pub r: Option<Spread>,
    /// E-model MOS (worse direction).
    pub mos: Option<Spread>,
    /// Setup time, ms.
    pub setup_ms: Option<Spread>,
    /// Received media throughput (both directions), kbit/s.
    pub rx_kbps: Option<Spread>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Run id.
    pub run_id: i64,
    /// Plan name.
    pub plan: String,
    /// Plan hash.
    pub plan_hash: String,
    /// Start, Unix ms.
    pub started_ms: i64,
    /// End, Unix ms (absent while unfinished).
    pub finished_ms: Option<i64>,
    /// The thresholds calls are classed with.
    pub thresholds: Thresholds,
    /// Per scenario, in plan order.
    pub scenarios: Vec<ScenarioSummary>,
}

/// The thresholds, stated in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Acceptable RTT below, ms.
    pub rtt_ms: f64,
    /// Acceptable loss below, percent.
    pub loss_pct: f64,
    /// Acceptable jitter below, ms.
    pub jitter_ms: f64,
    /// G.114 good below, ms.
    pub g114_good_ms: f64,
    /// G.114 acceptable below, ms.
    pub g114_acceptable_ms: f64,
}

const THRESHOLDS: Thresholds = Thresholds {
    rtt_ms: call::MAX_RTT_MS,
    loss_pct: call::MAX_LOSS_PCT,
    jitter_ms: call::MAX_JITTER_MS,
    g114_good_ms: call::G114_GOOD_MS,
    g114_acceptable_ms: call::G114_ACCEPTABLE_MS,
};

fn successful<'a>(calls: &'a [&'a CallRow]) -> impl Iterator<Item = &'a CallRow> + 'a {
    calls
        .iter()
        .copied()
        .filter(|c| c.outcome == Outcome::Success)
}

fn spread(calls: &[&CallRow], f: impl Fn(&CallRow) -> Option<f64>) -> Option<Spread> {
    let v: Vec<f64> = successful(calls).filter_map(f).collect();
    Spread::of(&v)
}

/// The calls of scenario `s`.
pub fn scenario_calls<'a>(data: &'a RunData, s: &ScenarioRow) -> Vec<&'a CallRow> {
    data.calls
        .iter()
        .filter(|c| c.scenario_id == s.id)
        .collect()
}

/// Summarises a run.
pub fn summarize(data: &RunData) -> Summary {
    let scenarios = data
        .scenarios
        .iter()
        .map(|s| {
            let calls = scenario_calls(data, s);
            let mut outcomes: BTreeMap<&'static str, usize> =
                Outcome::ALL.iter().map(|o| (o.as_str(), 0)).collect();
            for c in &calls {
                *outcomes.entry(c.outcome.as_str()).or_default() += 1;
            }
            let ok = outcomes.get("success").copied().unwrap_or(0);
            let mut g114: BTreeMap<String, usize> = ["good", "acceptable", "poor"]
                .iter()
                .map(|k| ((*k).to_owned(), 0))
                .collect();
            for c in successful(&calls) {
                if let Some(g) = &c.g114 {
                    *g114.entry(g.clone()).or_default() += 1;
                }
            }
            let ids: std::collections::HashSet<i64> = calls.iter().map(|c| c.id).collect();
            let mut relay_protocols: BTreeMap<String, usize> = BTreeMap::new();
            let concealed: Vec<f64> = data
                .sides
                .iter()
                .filter(|d| ids.contains(&d.call_id))
                .filter_map(|d| d.concealed_pct)
                .collect();
            let concealed_pct = (!concealed.is_empty())
                .then(|| concealed.iter().sum::<f64>() / concealed.len() as f64);
            for side in data.sides.iter().filter(|d| ids.contains(&d.call_id)) {
                if let Some(p) = &side.relay_protocol {
                    *relay_protocols.entry(p.clone()).or_default() += 1;
                }
            }
            ScenarioSummary {
                name: s.name.clone(),
                caller: s.caller_path.clone(),
                caller_kind: s.caller_kind.clone(),
                callee: s.callee_path.clone(),
                callee_kind: s.callee_kind.clone(),
                mode: s.mode.clone(),
                owd_estimated: s.mode == "browser" || calls.iter().any(|c| c.owd_estimated),
                relay_protocols,
                concealed_pct,
                impairment: serde_json::from_str(&s.impairment).unwrap_or(serde_json::Value::Null),
                planned: s.repetitions,
                calls: calls.len(),
                success_rate: (!calls.is_empty()).then(|| ok as f64 / calls.len() as f64),
                outcomes,
                acceptable: calls.iter().filter(|c| c.acceptable).count(),
                g114,
                rtt_ms: spread(&calls, |c| c.rtt_ms),
                owd_ms: spread(&calls, |c| c.owd_ms),
                jitter_ms: spread(&calls, |c| c.jitter_ms),
                loss_pct: spread(&calls, |c| c.loss_pct),
                r: spread(&calls, |c| c.r),
                mos: spread(&calls, |c| c.mos),
                setup_ms: spread(&calls, |c| c.setup_ms),
                rx_kbps: spread(&calls, |c| c.rx_kbps),
            }
        })
        .collect();
    Summary {
        run_id: data.run.id,
        plan: data.run.plan_name.clone(),
        plan_hash: data.run.plan_hash.clone(),
        started_ms: data.run.started_ms,
        finished_ms: data.run.finished_ms,
        thresholds: THRESHOLDS,
        scenarios,
    }
}

/// A CSV field: quoted when it holds a comma, quote or line break; a text
/// starting with `=`, `+`, `-` or `@` gets a leading `'` so spreadsheets
/// do not run it as a formula.
fn csv_text(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => String::new(),
    }
}

/// `calls.csv`: one line per call.
pub fn calls_csv(data: &RunData) -> String {
    let names: BTreeMap<i64, &ScenarioRow> = data.scenarios.iter().map(|s| (s.id, s)).collect();
    let mut out = String::from(
        "call_id,scenario,caller,callee,repetition,outcome,acceptable,g114,attempts,started_ms,\
         setup_ms,duration_ms,rtt_ms,rtt_p95_ms,owd_ms,jitter_ms,loss_pct,r,mos,rx_kbps,failure,\
         mode,owd_estimated\n",
    );
    for c in &data.calls {
        let s = names.get(&c.scenario_id);
        let fields = [
            c.id.to_string(),
            csv_text(s.map_or("", |s| s.name.as_str())),
            csv_text(s.map_or("", |s| s.caller_path.as_str())),
            csv_text(s.map_or("", |s| s.callee_path.as_str())),
            c.repetition.to_string(),
            c.outcome.as_str().to_owned(),
            u8::from(c.acceptable).to_string(),
            c.g114.clone().unwrap_or_default(),
            c.attempts.to_string(),
            c.started_ms.to_string(),
            csv_num(c.setup_ms),
            csv_num(Some(c.duration_ms)),
            csv_num(c.rtt_ms),
            csv_num(c.rtt_p95_ms),
            csv_num(c.owd_ms),
            csv_num(c.jitter_ms),
            csv_num(c.loss_pct),
            csv_num(c.r),
            csv_num(c.mos),
            csv_num(c.rx_kbps),
            csv_text(c.failure.as_deref().unwrap_or("")),
            csv_text(s.map_or("", |s| s.mode.as_str())),
            u8::from(c.owd_estimated).to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// The files a report wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// `report.html`.
    pub html: PathBuf,
    /// `summary.json`.
    pub summary: PathBuf,
    /// `calls.csv`.
    pub csv: PathBuf,
}

/// Writes `report.html`, `summary.json` and `calls.csv` into `out`.
pub fn write(data: &RunData, out: &Path) -> std::io::Result<Written> {
    std::fs::create_dir_all(out)?;
    let summary = summarize(data);
    let w = Written {
        html: out.join("report.html"),
        summary: out.join("summary.json"),
        csv: out.join("calls.csv"),
    };
    let json = serde_json::to_string_pretty(&summary).map_err(std::io::Error::other)?;
    std::fs::write(&w.summary, json + "\n")?;
    std::fs::write(&w.csv, calls_csv(data))?;
    std::fs::write(&w.html, html::render(data, &summary))?;
    Ok(w)
}

/// A plain-text table of the summary (what `lab run` prints at the end).
pub fn text_table(summary: &Summary) -> String {
    let f = |s: &Option<Spread>, digits: usize| {
        s.map_or("-".to_owned(), |s| format!("{:.*}", digits, s.median))
    };
    let mut out = format!(
        "{:<24} {:>5} {:>5} {:>5} {:>5} {:>9} {:>9} {:>9} {:>7} {:>5} {:>9}\n",
        "scenario",
        "calls",
        "ok",
        "fail",
        "acc",
        "rtt ms",
        "owd ms",
        "jit ms",
        "loss %",
        "MOS",
        "setup ms"
    );
    let mut estimated = false;
    for s in &summary.scenarios {
        let ok = s.outcomes.get("success").copied().unwrap_or(0);
        let owd = if s.owd_estimated && s.owd_ms.is_some() {
            estimated = true;
            format!("~{}", f(&s.owd_ms, 1))
        } else {
            f(&s.owd_ms, 1)
        };
        out.push_str(&format!(
            "{:<24} {:>5} {:>5} {:>5} {:>5} {:>9} {:>9} {:>9} {:>7} {:>5} {:>9}\n",
            s.name.chars().take(24).collect::<String>(),
            s.calls,
            ok,
            s.calls - ok,
            s.acceptable,
            f(&s.rtt_ms, 1),
            owd,
            f(&s.jitter_ms, 2),
            f(&s.loss_pct, 2),
            f(&s.mos, 2),
            f(&s.setup_ms, 0),
        ));
    }
    if estimated {
        out.push_str(
            "~ one-way delay estimated (browser calls: RTT/2 + jitter buffer + 20 ms packetisation)\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_escapes() {
        assert_eq!(csv_text("a,b"), "\"a,b\"");
        assert_eq!(csv_text("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_text("=cmd()"), "'=cmd()");
        assert_eq!(csv_text("Tor–Norm"), "Tor–Norm");
    }
}

//! Rows, tables and the JSON document of a benchmark run.

use serde::{Deserialize, Serialize};

use crate::loadgen::Percentiles;

/// One server in one scenario (or one step of the memory scenario).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    /// Stable key of the scenario, e.g. `uclient-udp-120`.
    pub scenario: String,
    /// uclient, loadgen, memory, alloc-rate or c2c.
    pub kind: String,
    /// udp, tcp or tls.
    pub transport: String,
    /// Payload bytes.
    pub size: Option<u32>,
    /// Packets per second asked for.
    pub pps: Option<u32>,
    /// coturn, onionrtc or direct.
    pub server: String,
    /// Relay threads (shards) of the server (scaling rows).
    pub threads: Option<u32>,
    /// Whether the row holds a measurement.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// Messages the clients sent.
    pub sent: Option<u64>,
    /// Messages the clients received back.
    pub received: Option<u64>,
    /// Messages lost.
    pub lost: Option<u64>,
    /// Messages the server relayed.
    pub relayed: Option<u64>,
    /// Server CPU-seconds (user + system) during the load.
    pub cpu_s: Option<f64>,
    /// `relayed / cpu_s`.
    pub msgs_per_cpu_s: Option<f64>,
    /// Server VmHWM at the end of the scenario, kB.
    pub peak_rss_kb: Option<u64>,
    /// Round trip, µs.
    pub rtt_us: Option<Percentiles>,
    /// Sender to echo peer, one way, µs (our generator).
    pub to_peer_us: Option<Percentiles>,
    /// Echo peer back to the sender, one way, µs (our generator).
    pub from_peer_us: Option<Percentiles>,
    /// coturn's own average round trip, ms (uclient rows).
    pub rtt_avg_ms: Option<f64>,
    /// Round trip minus the direct round trip of the same load, µs.
    pub added_us: Option<Added>,
    /// Allocations held (memory) or set up.
    pub allocations: Option<u64>,
    /// Server VmRSS at this step, kB (memory rows).
    pub rss_kb: Option<u64>,
    /// Allocations per second (alloc-rate rows).
    pub alloc_per_s: Option<f64>,
    /// Probes per second the generator achieved.
    pub achieved_pps: Option<f64>,
    /// CPU-seconds of the load generator itself.
    pub generator_cpu_s: Option<f64>,
    /// Wall-clock seconds of the load.
    pub seconds: Option<f64>,
    /// CPU-seconds other processes (not the server, not the load
    /// generator) used meanwhile: above a few percent of `seconds`, the
    /// latency figures of the row are disturbed.
    pub background_cpu_s: Option<f64>,
    /// UDP datagrams the machine dropped on full receive buffers meanwhile.
    pub udp_rcvbuf_errors: Option<u64>,
    /// Anything worth knowing (failures, errors counted by the generator).
    pub note: Option<String>,
}

/// Latency added by the relay, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Added {
    /// Relay p50 − direct p50.
    pub p50: f64,
    /// Relay p99 − direct p99.
    pub p99: f64,
    /// Relay p99.9 − direct p99.9.
    pub p999: f64,
}

impl Added {
    /// `relay − direct`, percentile by percentile.
    pub fn between(relay: &Percentiles, direct: &Percentiles) -> Added {
        Added {
            p50: relay.p50 - direct.p50,
            p99: relay.p99 - direct.p99,
            p999: relay.p999 - direct.p999,
        }
    }
}

/// One target of the issue, judged from the rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// What is measured.
    pub name: String,
    /// The goal, e.g. `>= 2.0`.
    pub goal: String,
    /// The measured value.
    pub value: Option<f64>,
    /// PASS, FAIL, or `None` when it could not be measured.
    pub pass: Option<bool>,
}

/// The whole run, as written by `--json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Document {
    /// Format version.
    pub version: u32,
    /// `--quick`.
    pub quick: bool,
    /// `--busy-poll`.
    pub busy_poll: bool,
    /// Wall-clock seconds of the run.
    pub elapsed_s: f64,
    /// The machine.
    pub machine: Machine,
    /// coturn's command line (first start; ports vary per start).
    pub coturn_command: Option<String>,
    /// Our relay's command line (first start).
    pub onionrtc_command: Option<String>,
    /// Our relay's configuration file (first start).
    pub onionrtc_config: Option<String>,
    /// Every measurement.
    pub rows: Vec<Row>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Scenarios not run, with the reason.
    pub skipped: Vec<String>,
    /// Stopped by SIGINT or SIGTERM.
    pub interrupted: bool,
}

/// What the run was measured on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// `turnserver --version`.
    pub coturn: Option<String>,
    /// Our version.
    pub onionrtc: String,
    /// Soft RLIMIT_NOFILE after raising it.
    pub fd_limit: u64,
}

impl Machine {
    /// Reads `/proc` and asks coturn its version.
    pub fn probe(coturn: Option<String>, fd_limit: u64) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            coturn,
            onionrtc: env!("CARGO_PKG_VERSION").into(),
            fd_limit,
        }
    }
}

/// A text table with right-aligned numeric columns.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as titles).
    pub fn push(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, two spaces between columns;
    /// the first column is left-aligned, the others right-aligned.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(cols) {
                if i == 0 {
                    line.push_str(&format!("{c:<w$}", w = width[i]));
                } else {
                    line.push_str(&format!("  {c:>w$}", w = width[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A number for a table: `-` when absent.
pub fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".into(),
    }
}

/// An integer for a table: `-` when absent.
pub fn int(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// kB as MB with one decimal.
pub fn mb(kb: Option<u64>) -> String {
    num(kb.map(|k| k as f64 / 1024.0), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["server", "msgs"]);
        t.push(vec!["coturn".into(), "5".into()]);
        t.push(vec!["onionrtc".into(), "12345".into()]);
        assert_eq!(
            t.render(),
            "server     msgs\ncoturn        5\nonionrtc  12345\n"
        );
    }

    #[test]
    fn formats_absent_values() {
        assert_eq!(num(None, 1), "-");
        assert_eq!(num(Some(f64::NAN), 1), "-");
        assert_eq!(int(Some(3)), "3");
        assert_eq!(mb(Some(2048)), "2.0");
    }
}

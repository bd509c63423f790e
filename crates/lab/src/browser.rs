//! Browser mode: two headless Chromium pages call each other through
//! `onionrtc serve`, and the lab reads their `getStats()` summaries.
//!
//! ```text
//! BrowserEnv::start: onionrtc serve --config T/onionrtc.toml --data-dir T/data
//!                      (TURN udp+tcp and tls on free 127.0.0.1 ports, web app on another)
//!                    chromium (cdp crate: flags of shared/BROWSER-TESTS.md)
//! run_call:  room = lab-<random>
//!            caller page, callee page: http://127.0.0.1:W/?room=<room>[&audio=only]
//!              (an init script keeps only the TURN URLs of the page's path: udp, tcp or tls)
//!            setup = until window.onionrtc.state === 'connected' on both (bounded)
//!            every second for the duration: window.onionrtc.stats of both pages
//!            → CallReport (per direction from the receiving page) → store
//! ```
//!
//! ## Figures (docs/lab.md, "Browser mode")
//! - RTT: the selected candidate pair's `currentRoundTripTime` (both pages);
//! - jitter: the receiving page's `inbound-rtp` jitter (RFC 3550, audio);
//! - loss: Δ`packetsLost` / (Δ`packetsLost` + Δ`packetsReceived`) at the
//!   receiving page over the call;
//! - one-way delay: **an estimate** (browsers do not expose it): RTT/2 +
//!   the receiver's mean jitter-buffer delay (Δ`jitterBufferDelay` /
//!   Δ`jitterBufferEmittedCount`) + 20 ms packetisation;
//! - MOS: the lab's E-model with that delay and loss, BurstR = 1 (the loss
//!   pattern is not visible).
//!
//! Chromium and serve are children killed by PID when [`BrowserEnv`] drops;
//! pages are closed after each call.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use cdp::{Chromium, LaunchOptions, Page, Value};
use rcgen::PublicKeyData as _;
use sha2::{Digest as _, Sha256};

use crate::call::{CallReport, DirectionReport, Outcome, Sample, SideReport};
use crate::child::{free_port, Child};
use crate::emodel;
use crate::metrics::{median, percentile};
use crate::plan::{BrowserSpec, PathKind, ServeSpec};
use crate::realtime::CallSpec;

/// Packetisation delay added to the one-way delay estimate, ms (20 ms
/// Opus frames, Chromium's default).
pub const PACKETISATION_MS: f64 = 20.0;
/// How long serve may take to print `Open http://…/`.
const SERVE_STARTUP: Duration = Duration::from_secs(20);
/// Launch attempts of serve (a free port may be taken meanwhile).
const SERVE_ATTEMPTS: usize = 3;
/// Limit of one CDP call.
const CDP_CALL: Duration = Duration::from_secs(10);
/// Polling step while waiting for `connected`.
const SETUP_POLL: Duration = Duration::from_millis(50);
/// Most per-second reads of one call (a day).
const MAX_READS: u64 = 86_400;

/// A running serve (when the lab started it) and Chromium. Dropping it
/// kills Chromium, then stops serve (both by PID).
#[derive(Debug)]
pub struct BrowserEnv {
    // Declared first: the browser goes before the server.
    chromium: Chromium,
    serve: Option<Child>,
    base_url: String,
    _dir: Option<tempfile::TempDir>,
}

/// `onionrtc serve` started by the lab.
struct StartedServe {
    child: Child,
    web: SocketAddr,
    spki: String,
    dir: tempfile::TempDir,
}

fn start_serve(exe: &Path) -> anyhow::Result<StartedServe> {
    let dir = tempfile::Builder::new()
        .prefix("lab-serve-")
        .tempdir()
        .context("temporary directory for serve")?;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .context("cannot make a certificate for serve's TLS listener")?;
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).context("write certificate")?;
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem())
        .context("write key")?;
    let spki = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(ck.signing_key.subject_public_key_info()));
    let mut last = None;
    for _ in 0..SERVE_ATTEMPTS {
        let lo = Ipv4Addr::LOCALHOST;
        let turn = free_port(lo).context("a port for serve's TURN listeners")?;
        let mut ports = vec![turn];
        let mut next = || -> anyhow::Result<u16> {
            for _ in 0..20 {
                let p = free_port(lo).context("a port for serve")?;
                if !ports.contains(&p) {
                    ports.push(p);
                    return Ok(p);
                }
            }
            bail!("no distinct free ports")
        };
        let tls = next()?;
        let web = next()?;
        let config = dir.path().join("onionrtc.toml");
        std::fs::write(
            &config,
            format!(
                "# Written by onionrtc lab for its browser scenarios.\n\
                 [relay]\n\
                 listen = [\"udp://127.0.0.1:{turn}\", \"tcp://127.0.0.1:{turn}\", \
                 \"tls://127.0.0.1:{tls}\"]\n\
                 tls_cert = \"cert.pem\"\n\
                 tls_key = \"key.pem\"\n\
                 max_allocations_per_user = 1000\n\
                 max_allocations_per_ip = 1000\n\
                 max_connections_per_ip = 1000\n\
                 [serve]\n\
                 listen = \"127.0.0.1:{web}\"\n"
            ),
        )
        .context("write serve's configuration")?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("ONIONRTC_AUTH_SECRET")
            .env("RUST_LOG", "warn");
        let mut child = Child::spawn("onionrtc serve", &mut cmd)?;
        let ready = child.wait_line(SERVE_STARTUP, |l| {
            l.strip_prefix("Open http://")
                .and_then(|r| r.strip_suffix('/'))
                .and_then(|a| a.parse::<SocketAddr>().ok())
        });
        match ready {
            Ok(web) => {
                return Ok(StartedServe {
                    child,
                    web,
                    spki,
                    dir,
                })
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("onionrtc serve did not start")))
}

impl BrowserEnv {
    /// Starts serve (unless the plan names a running one) and Chromium.
    /// `exe` is the `onionrtc` executable ([`crate::child::onionrtc_exe`]).
    pub fn start(spec: &BrowserSpec, exe: Option<&Path>) -> anyhow::Result<BrowserEnv> {
        let mut extra = Vec::new();
        let (serve, base_url, dir) = match &spec.serve {
            ServeSpec::Start => {
                let exe = crate::child::onionrtc_exe(exe)?;
                let s = start_serve(&exe)?;
                // Trust serve's self-signed TURN-over-TLS certificate, and
                // only that one.
                extra.push(format!("--ignore-certificate-errors-spki-list={}", s.spki));
                (Some(s.child), format!("http://{}", s.web), Some(s.dir))
            }
            ServeSpec::External(url) => (None, url.clone(), None),
        };
        extra.extend(spec.chromium_args.iter().cloned());
        let opts = LaunchOptions {
            binary: spec.chromium.clone(),
            extra_args: extra,
            startup_timeout: Duration::from_secs(20),
            call_timeout: CDP_CALL,
            kill_with_parent: true,
        };
        let chromium = match Chromium::launch(opts) {
            Ok(c) => c,
            Err(e) => bail!(
                "cannot start Chromium ({}): {e}",
                spec.chromium
                    .clone()
                    .unwrap_or_else(cdp::chromium_binary)
                    .display()
            ),
        };
        Ok(BrowserEnv {
            chromium,
            serve,
            base_url,
            _dir: dir,
        })
    }

    /// The web app's base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// PIDs of Chromium and of the serve the lab started.
    pub fn pids(&self) -> Vec<u32> {
        self.chromium
            .pid()
            .into_iter()
            .chain(self.serve.as_ref().map(Child::pid))
            .collect()
    }
}

/// The page-side transport a path kind asks for.
fn transport(kind: PathKind) -> &'static str {
    match kind {
        PathKind::TurnTcp => "tcp",
        PathKind::TurnTls => "tls",
        _ => "udp",
    }
}

/// An init script that keeps only the TURN URLs of one transport in every
/// `RTCPeerConnection` the page makes (`turn:…?transport=udp` for udp,
/// `turn:…?transport=tcp` for tcp, `turns:` for tls).
fn transport_filter(want: &str) -> String {
    format!(
        r#"(() => {{
  const want = "{want}";
  const keep = (u) => {{
    const s = String(u);
    const tls = s.startsWith('turns:');
    const tcp = /[?&]transport=tcp/i.test(s);
    if (want === 'tls') return tls;
    if (want === 'tcp') return !tls && tcp;
    return !tls && !tcp;
  }};
  const Orig = window.RTCPeerConnection;
  if (!Orig) return;
  function LabPeerConnection(config, ...rest) {{
    if (config && Array.isArray(config.iceServers)) {{
      const iceServers = config.iceServers
        .map((s) => Object.assign({{}}, s, {{ urls: [].concat(s.urls || []).filter(keep) }}))
        .filter((s) => s.urls.length > 0);
      config = Object.assign({{}}, config, {{ iceServers }});
    }}
    return new Orig(config, ...rest);
  }}
  LabPeerConnection.prototype = Orig.prototype;
  Object.setPrototypeOf(LabPeerConnection, Orig);
  window.RTCPeerConnection = LabPeerConnection;
}})();"#
    )
}

/// One `window.onionrtc.stats` summary (docs/signaling.md, "Statistics").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageStats {
    /// Page clock, ms.
    pub ts: Option<f64>,
    /// `window.onionrtc.state` when sampled.
    pub state: Option<String>,
    /// Selected pair RTT, s.
    pub rtt: Option<f64>,
    /// Inbound jitter, s.
    pub jitter: Option<f64>,
    /// Cumulative inbound packets lost.
    pub packets_lost: Option<f64>,
    /// Cumulative inbound packets received.
    pub packets_received: Option<f64>,
    /// Cumulative jitter-buffer delay, s.
    pub jitter_buffer_delay: Option<f64>,
    /// Cumulative jitter-buffer emitted count.
    pub jitter_buffer_emitted: Option<f64>,
    /// Selected pair bytes sent.
    pub bytes_sent: Option<f64>,
    /// Selected pair bytes received.
    pub bytes_received: Option<f64>,
    /// Local candidate type.
    pub local_candidate: Option<String>,
    /// Remote candidate type.
    pub remote_candidate: Option<String>,
    /// Local candidate's relay protocol.
    pub relay_protocol: Option<String>,
}

impl PageStats {
    /// Reads a summary; anything missing or of the wrong type is `None`.
    pub fn from_json(v: &Value) -> PageStats {
        let num = |k: &str| v.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 64)
                .map(str::to_owned)
        };
        PageStats {
            ts: num("ts"),
            state: text("state"),
            rtt: num("rtt"),
            jitter: num("jitter"),
            packets_lost: num("packetsLost"),
            packets_received: num("packetsReceived"),
            jitter_buffer_delay: num("jitterBufferDelay"),
            jitter_buffer_emitted: num("jitterBufferEmittedCount"),
            bytes_sent: num("bytesSent"),
            bytes_received: num("bytesReceived"),
            local_candidate: text("localCandidateType"),
            remote_candidate: text("remoteCandidateType"),
            relay_protocol: text("relayProtocol"),
        }
    }
}

/// `b − a` of a cumulative counter, at least 0 (a missing value counts 0).
fn delta(a: Option<f64>, b: Option<f64>) -> f64 {
    (b.unwrap_or(0.0) - a.unwrap_or(0.0)).max(0.0)
}

fn count(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.round() as u64
    } else {
        0
    }
}

/// What one page reported over a call: a read at the connect time, then
/// one per second.
#[derive(Debug, Clone, Default)]
pub struct PageSeries {
    /// Read `k` was taken `k` seconds after both pages connected.
    pub reads: Vec<PageStats>,
}

/// The mean jitter-buffer delay of a receiver over the series, ms.
fn jitter_buffer_ms(rx: &PageSeries) -> Option<f64> {
    let first = rx.reads.first()?;
    let last = rx.reads.last()?;
    let n = delta(first.jitter_buffer_emitted, last.jitter_buffer_emitted);
    if n > 0.0 {
        Some(1000.0 * delta(first.jitter_buffer_delay, last.jitter_buffer_delay) / n)
    } else {
        match (last.jitter_buffer_delay, last.jitter_buffer_emitted) {
            (Some(d), Some(c)) if c > 0.0 => Some(1000.0 * d / c),
            _ => None,
        }
    }
}

/// One direction (`tx` page → `rx` page) from the two series.
pub fn direction(
    tx: &PageSeries,
    rx: &PageSeries,
    rating: &crate::call::RatingInputs,
) -> DirectionReport {
    let (Some(rx0), Some(rxn)) = (rx.reads.first(), rx.reads.last()) else {
        return DirectionReport::default();
    };
    let (tx0, txn) = match (tx.reads.first(), tx.reads.last()) {
        (Some(a), Some(b)) => (a.clone(), b.clone()),
        _ => Default::default(),
    };
    let received = count(delta(rx0.packets_received, rxn.packets_received));
    let lost = count(delta(rx0.packets_lost, rxn.packets_lost));
    let sent = received + lost;
    let loss_pct = if sent > 0 {
        100.0 * lost as f64 / sent as f64
    } else {
        0.0
    };
    let mut rtt_ms: Vec<f64> = tx
        .reads
        .iter()
        .skip(1)
        .filter_map(|r| r.rtt)
        .map(|r| r * 1000.0)
        .collect();
    if rtt_ms.is_empty() {
        // The receiver's view of the same pair.
        rtt_ms = rx
            .reads
            .iter()
            .skip(1)
            .filter_map(|r| r.rtt)
            .map(|r| r * 1000.0)
            .collect();
    }
    let rtt_median = median(&rtt_ms);
    let rtt_p95 = percentile(&rtt_ms, 95.0);
    let jb = jitter_buffer_ms(rx).unwrap_or(0.0);
    let owd_median = rtt_median.map(|r| r / 2.0 + jb + PACKETISATION_MS);
    let owd_p95 = rtt_p95.map(|r| r / 2.0 + jb + PACKETISATION_MS);
    let rated = owd_median
        .filter(|_| sent > 0)
        .map(|d| emodel::rate(rating.codec, d + rating.extra_delay_ms, loss_pct, 1.0));
    let seconds = (1..rx.reads.len().max(tx.reads.len()))
        .map(|k| {
            let r = |s: &PageSeries, i: usize| s.reads.get(i).cloned().unwrap_or_default();
            let (rp, rk) = (r(rx, k - 1), r(rx, k));
            let (tp, tk) = (r(tx, k - 1), r(tx, k));
            Sample {
                t_s: u32::try_from(k - 1).unwrap_or(u32::MAX),
                tx_bytes: count(delta(tp.bytes_sent, tk.bytes_sent)),
                rx_bytes: count(delta(rp.bytes_received, rk.bytes_received)),
                rx_packets: count(delta(rp.packets_received, rk.packets_received)),
                jitter_ms: rk.jitter.map_or(0.0, |j| j * 1000.0),
                rtt_ms: tk.rtt.map(|x| x * 1000.0),
            }
        })
        .collect();
    DirectionReport {
        sent,
        received,
        lost,
        duplicates: 0,
        reordered: 0,
        loss_pct,
        owd_median_ms: owd_median,
        owd_p95_ms: owd_p95,
        jitter_ms: rxn.jitter.map_or(0.0, |j| j * 1000.0),
        rtt_median_ms: rtt_median,
        rtt_p95_ms: rtt_p95,
        rtt_samples: rtt_ms.len() as u64,
        burst_r: 1.0,
        r: rated.map(|r| r.r),
        mos: rated.map(|r| r.mos),
        tx_bytes: count(delta(tx0.bytes_sent, txn.bytes_sent)),
        rx_bytes: count(delta(rx0.bytes_received, rxn.bytes_received)),
        seconds,
    }
}

/// What a side's page said about its connection (its last read).
fn side_report(side: &str, s: &PageSeries) -> SideReport {
    let last = s.reads.last().cloned().unwrap_or_default();
    SideReport {
        side: side.to_owned(),
        local_candidate: last.local_candidate,
        remote_candidate: last.remote_candidate,
        relay_protocol: last.relay_protocol,
        jitter_buffer_ms: jitter_buffer_ms(s),
        concealed_samples: None,
        concealed_pct: None,
    }
}

/// The call report of a measured browser call.
pub fn report(
    caller: &PageSeries,
    callee: &PageSeries,
    spec: &CallSpec,
    outcome: Outcome,
    failure: Option<String>,
    setup_ms: f64,
) -> CallReport {
    let forward = direction(caller, callee, &spec.rating);
    let backward = direction(callee, caller, &spec.rating);
    let mut rtts: Vec<f64> = [caller, callee]
        .iter()
        .flat_map(|s| s.reads.iter().skip(1).filter_map(|r| r.rtt))
        .map(|r| r * 1000.0)
        .collect();
    rtts.retain(|r| r.is_finite());
    CallReport {
        outcome,
        failure,
        attempts: 1,
        setup_ms: Some(setup_ms),
        duration_ms: spec.profile.duration_ns as f64 / 1e6,
        forward,
        backward,
        rtt_ms: median(&rtts),
        rtt_p95_ms: percentile(&rtts, 95.0),
        owd_estimated: true,
        sides: vec![side_report("caller", caller), side_report("callee", callee)],
    }
}

/// What a page says about itself, for failure messages.
fn describe(page: &mut Page) -> String {
    let v = page
        .evaluate(
            "JSON.stringify({state: window.onionrtc && window.onionrtc.state, \
             notice: (document.getElementById('notice') || {}).textContent || null})",
        )
        .unwrap_or_else(Value::String);
    let mut out = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let console = page.console();
    if let Some(tail) = console.get(console.len().saturating_sub(3)..) {
        if !tail.is_empty() {
            let _ = write!(out, "; console: {tail:?}");
        }
    }
    out
}

fn state(page: &mut Page) -> Result<Option<String>, String> {
    let v = page.evaluate("window.onionrtc ? window.onionrtc.state : null")?;
    Ok(v.as_str().map(str::to_owned))
}

fn read_stats(page: &mut Page) -> Result<PageStats, String> {
    let v = page.evaluate("window.onionrtc ? window.onionrtc.stats : null")?;
    Ok(PageStats::from_json(&v))
}

/// One attempt: open both pages, wait for both `connected`; `Err` is a
/// setup failure (retried).
fn set_up(
    env: &BrowserEnv,
    kinds: [PathKind; 2],
    audio_only: bool,
    deadline: Instant,
) -> Result<[Page; 2], String> {
    let room = format!("lab-{:016x}", rand::random::<u64>());
    let url = format!(
        "{}/?room={room}{}",
        env.base_url,
        if audio_only { "&audio=only" } else { "" }
    );
    let open = |side: &str, kind: PathKind| {
        env.chromium
            .open_page(&url, Some(&transport_filter(transport(kind))))
            .map_err(|e| format!("{side} page: {e}"))
    };
    let caller = open("caller", kinds[0])?;
    let callee = open("callee", kinds[1])?;
    let mut pages = [caller, callee];
    let mut connected = [false, false];
    for _ in 0..MAX_READS {
        for (i, page) in pages.iter_mut().enumerate() {
            if connected[i] {
                continue;
            }
            match state(page) {
                Ok(Some(s)) if s == "connected" => connected[i] = true,
                Ok(Some(s)) if s == "failed" || s == "closed" => {
                    let side = ["caller", "callee"][i];
                    return Err(format!("{side} page: {}", describe(page)));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{} page: {e}", ["caller", "callee"][i])),
            }
        }
        if connected == [true, true] {
            return Ok(pages);
        }
        if Instant::now() >= deadline {
            let [a, b] = &mut pages;
            return Err(format!(
                "not connected within the setup timeout: caller {}; callee {}",
                describe(a),
                describe(b)
            ));
        }
        std::thread::sleep(SETUP_POLL);
    }
    Err("setup polling bound reached".into())
}

/// Runs a browser call between a caller on `caller` and a callee on
/// `callee` (turn-udp, turn-tcp or turn-tls: the TURN URL each page keeps),
/// retrying a failed setup up to `spec.setup_retries` times.
pub fn run_call(
    env: &BrowserEnv,
    caller: PathKind,
    callee: PathKind,
    spec: &CallSpec,
    audio_only: bool,
) -> CallReport {
    let attempts = 1 + spec.setup_retries.min(crate::plan::MAX_SETUP_RETRIES);
    let mut last = String::new();
    for n in 1..=attempts {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(spec.timing.setup_timeout_s);
        match set_up(env, [caller, callee], audio_only, deadline) {
            Ok(mut pages) => {
                let setup_ms = t0.elapsed().as_secs_f64() * 1000.0;
                let mut report = measure(&mut pages, spec, setup_ms);
                report.attempts = n;
                return report;
            }
            Err(e) => last = e,
        }
    }
    let mut r = CallReport::failed_setup(attempts, last, spec.profile.duration_ns as f64 / 1e6);
    r.owd_estimated = true;
    r
}

/// The media phase: one read of both pages at the connect time, then one
/// per second for the duration.
fn measure(pages: &mut [Page; 2], spec: &CallSpec, setup_ms: f64) -> CallReport {
    let start = Instant::now();
    let duration = Duration::from_nanos(spec.profile.duration_ns);
    let reads = (spec.profile.duration_ns.div_ceil(1_000_000_000)).clamp(1, MAX_READS);
    let stall = Duration::from_secs_f64(spec.timing.stall_timeout_s);
    let mut series = [PageSeries::default(), PageSeries::default()];
    let mut failure = None;
    let mut last_growth = [start, start];
    'reads: for k in 0..=reads {
        let at = start + Duration::from_secs(k).min(duration);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for (i, page) in pages.iter_mut().enumerate() {
            let side = ["caller", "callee"][i];
            let s = match read_stats(page) {
                Ok(s) => s,
                Err(e) => {
                    failure = Some(format!("{side} page: {e}"));
                    break 'reads;
                }
            };
            if matches!(s.state.as_deref(), Some("failed" | "closed")) {
                failure = Some(format!("{side} page: {}", describe(page)));
                break 'reads;
            }
            let grew = series[i]
                .reads
                .last()
                .is_none_or(|p| s.packets_received > p.packets_received);
            if grew {
                last_growth[i] = Instant::now();
            } else if last_growth[i].elapsed() > stall {
                failure = Some(format!(
                    "media stalled: the {side} page received nothing for {:.1} s",
                    last_growth[i].elapsed().as_secs_f64()
                ));
                series[i].reads.push(s);
                break 'reads;
            }
            series[i].reads.push(s);
        }
    }
    let [caller, callee] = &series;
    let no_media = failure.is_none()
        && [(caller, callee), (callee, caller)]
            .iter()
            .any(|(tx, rx)| direction(tx, rx, &spec.rating).received == 0);
    if no_media {
        failure = Some("connected, but no media arrived in one direction".into());
    }
    let outcome = if failure.is_some() {
        Outcome::FailedDuringCall
    } else {
        Outcome::Success
    };
    report(caller, callee, spec, outcome, failure, setup_ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::call::RatingInputs;

    fn read(t: f64, rtt_ms: f64, received: f64, lost: f64, jb_s: f64, emitted: f64) -> PageStats {
        PageStats {
            ts: Some(t),
            state: Some("connected".into()),
            rtt: Some(rtt_ms / 1000.0),
            jitter: Some(0.004),
            packets_lost: Some(lost),
            packets_received: Some(received),
            jitter_buffer_delay: Some(jb_s),
            jitter_buffer_emitted: Some(emitted),
            bytes_sent: Some(received * 100.0),
            bytes_received: Some(received * 100.0),
            local_candidate: Some("relay".into()),
            remote_candidate: Some("relay".into()),
            relay_protocol: Some("udp".into()),
        }
    }

    #[test]
    fn direction_figures_follow_the_documented_formulas() {
        // Receiver: 10 packets at connect, +50 per second, 2 lost in the
        // call; jitter buffer: 40 ms mean over the call (2 s over 50 frames
        // per second → Δdelay 4.0 s / Δcount 100).
        let rx = PageSeries {
            reads: vec![
                read(0.0, 10.0, 10.0, 0.0, 0.4, 10.0),
                read(1.0, 10.0, 60.0, 1.0, 2.4, 60.0),
                read(2.0, 10.0, 108.0, 2.0, 4.4, 110.0),
            ],
        };
        let tx = PageSeries {
            reads: vec![
                read(0.0, 10.0, 0.0, 0.0, 0.0, 0.0),
                read(1.0, 10.0, 50.0, 0.0, 0.0, 0.0),
                read(2.0, 30.0, 100.0, 0.0, 0.0, 0.0),
            ],
        };
        let d = direction(&tx, &rx, &RatingInputs::default());
        assert_eq!((d.received, d.lost, d.sent), (98, 2, 100));
        assert!((d.loss_pct - 2.0).abs() < 1e-9);
        // RTT median of the sender's reads after the connect: (10 + 30) / 2.
        assert_eq!(d.rtt_median_ms, Some(20.0));
        assert_eq!(d.rtt_samples, 2);
        // One-way estimate: 20 / 2 + 40 + 20.
        assert!((d.owd_median_ms.unwrap() - 70.0).abs() < 1e-9);
        assert!((d.jitter_ms - 4.0).abs() < 1e-9);
        assert_eq!(d.burst_r, 1.0);
        let rated = emodel::rate(crate::emodel::Codec::G711, 70.0, 2.0, 1.0);
        assert_eq!(d.mos, Some(rated.mos));
        // Per-second deltas, the sender's RTT per second.
        assert_eq!(d.seconds.len(), 2);
        assert_eq!(d.seconds[0].rx_packets, 50);
        assert_eq!(d.seconds[1].rx_packets, 48);
        assert_eq!(d.seconds[0].tx_bytes, 5000);
        assert_eq!(d.seconds[1].rtt_ms, Some(30.0));
        assert_eq!(d.rx_bytes, 9800);
    }

    #[test]
    fn missing_and_malformed_stats_are_none() {
        let s = PageStats::from_json(&serde_json::json!({
            "rtt": "fast", "jitter": null, "packetsLost": 3, "relayProtocol": "x".repeat(100),
            "state": "connected"
        }));
        assert_eq!(s.rtt, None);
        assert_eq!(s.jitter, None);
        assert_eq!(s.packets_lost, Some(3.0));
        assert_eq!(s.relay_protocol, None);
        assert_eq!(s.state.as_deref(), Some("connected"));
        assert_eq!(PageStats::from_json(&Value::Null), PageStats::default());
        // No reads at all: an empty direction, no panic.
        let d = direction(
            &PageSeries::default(),
            &PageSeries::default(),
            &Default::default(),
        );
        assert_eq!(d, DirectionReport::default());
    }

    #[test]
    fn the_transport_filter_names_its_transport() {
        for t in ["udp", "tcp", "tls"] {
            assert!(transport_filter(t).contains(&format!("const want = \"{t}\"")));
        }
        assert_eq!(transport(PathKind::TurnTls), "tls");
        assert_eq!(transport(PathKind::TurnTcp), "tcp");
        assert_eq!(transport(PathKind::TurnUdp), "udp");
    }
}

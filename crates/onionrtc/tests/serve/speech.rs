//! Speech activity as the relay sees it (issue 10, item 5): a real Chromium
//! call through `onionrtc serve`, captured with tcpdump on `lo` (only the
//! relay's UDP port), TURN framing (ChannelData, Send and Data indications)
//! parsed, then the clear RTP header inside: its header extensions (one-byte
//! `0xBEDE` and two-byte `0x100x`) and the payload size. The fake microphone
//! plays a WAV made here: a tone, then digital silence, looped.
//!
//! - Through `serve` (sanitized SDP): no header extension id on any RTP
//!   packet but those of the kept URIs, so no audio level; audio flows.
//! - Negative control, same browser, same relay: a page connects two
//!   RTCPeerConnections to each other with the *unsanitized* SDP; the
//!   capture must show the audio-level extension on its audio packets.
//! - Audio payload sizes talking vs silent are printed for both; with
//!   `cbr=1` they must be constant (Chromium 156: 90 bytes, an 80-byte Opus
//!   frame and the SRTP tag, every 20 ms), while the control's vary
//!   (13 bytes silent, ~91 talking).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::chromium::{serde_json, Chromium, LaunchOptions, Page, StaticServer, Value};
use testkit::Proc;

use super::{check_media, fail, random_room, serve_config, wait_connected, Server, CONNECT};

const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// How long each call's media is captured (covers talk and silence).
const LISTEN: Duration = Duration::from_secs(8);
/// The WAV: this long a tone, then this long silence.
const TALK_MS: u32 = 2000;
const SILENCE_MS: u32 = 2000;

/// A 48 kHz mono 16-bit WAV: a 440 Hz tone with harmonics for `TALK_MS`,
/// then `SILENCE_MS` of zeros.
fn write_wav(path: &Path) {
    let rate = 48_000u32;
    let talk = rate * TALK_MS / 1000;
    let total = talk + rate * SILENCE_MS / 1000;
    let mut data = Vec::with_capacity(total as usize * 2);
    for i in 0..total {
        let v = if i < talk {
            let t = f64::from(i) / f64::from(rate);
            let s = (2.0 * std::f64::consts::PI * 440.0 * t).sin() * 0.5
                + (2.0 * std::f64::consts::PI * 1320.0 * t).sin() * 0.2
                + (2.0 * std::f64::consts::PI * 2750.0 * t).sin() * 0.1;
            (s * 12_000.0) as i16
        } else {
            0
        };
        data.extend_from_slice(&v.to_le_bytes());
    }
    super::write_pcm_wav(path, rate, &data);
}

/// tcpdump on `lo`, UDP to or from one port, into a pcap file.
struct Capture {
    proc: Proc,
    file: PathBuf,
}

impl Capture {
    fn start(dir: &Path, name: &str, port: u16) -> Capture {
        let file = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", "lo", "-n", "-U", "-s", "0", "-Z", "root", "-w"])
            .arg(&file)
            .arg(format!("udp port {port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let proc = Proc::spawn(&mut cmd).unwrap();
        // tcpdump says "listening on lo" once it captures.
        let ready = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("listening on"))
        });
        assert!(
            ready.is_some(),
            "tcpdump did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Capture { proc, file }
    }

    /// SIGINT (tcpdump flushes and exits), then the packets.
    fn stop(mut self) -> Vec<(f64, u16, u16, Vec<u8>)> {
        let pid = self.proc.pid().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let _ = testkit::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            self.proc.0.try_wait().ok().flatten()
        });
        let raw = std::fs::read(&self.file).unwrap_or_default();
        parse_pcap(&raw)
    }
}

/// (time in s, source port, destination port, UDP payload) of every IPv4
/// UDP packet of a pcap file (Ethernet, Linux cooked v1/v2 or raw IP).
fn parse_pcap(raw: &[u8]) -> Vec<(f64, u16, u16, Vec<u8>)> {
    let mut out = Vec::new();
    if raw.len() < 24 {
        return out;
    }
    let le = raw[0..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let nano = raw[0..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le || nano {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(raw, 20);
    let l2 = match link {
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked
        276 => 20, // Linux cooked v2
        101 => 0,  // raw IP
        _ => panic!("pcap link type {link} not handled"),
    };
    let mut i = 24;
    while i + 16 <= raw.len() {
        let sec = u32_at(raw, i);
        let frac = u32_at(raw, i + 4);
        let caplen = u32_at(raw, i + 8) as usize;
        let t = f64::from(sec) + f64::from(frac) / if nano { 1e9 } else { 1e6 };
        i += 16;
        if i + caplen > raw.len() {
            break;
        }
        let pkt = &raw[i..i + caplen];
        i += caplen;
        let Some(ip) = pkt.get(l2..) else { continue };
        if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        let sport = u16::from_be_bytes([udp[0], udp[1]]);
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        out.push((t, sport, dport, udp[8..].to_vec()));
    }
    out
}

/// What a TURN client and server carry: ChannelData's data, or a Send or
/// Data indication's DATA attribute.
fn turn_payload(p: &[u8]) -> Option<&[u8]> {
    match p.first()? >> 6 {
        1 => {
            let len = usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
            p.get(4..4 + len)
        }
        0 => {
            let ty = u16::from_be_bytes([p[0], *p.get(1)?]);
            if p.get(4..8)? != [0x21, 0x12, 0xa4, 0x42] || !(ty == 0x0016 || ty == 0x0017) {
                return None;
            }
            let mut a = 20;
            while a + 4 <= p.len() {
                let at = u16::from_be_bytes([p[a], p[a + 1]]);
                let len = usize::from(u16::from_be_bytes([p[a + 2], p[a + 3]]));
                if at == 0x0013 {
                    return p.get(a + 4..a + 4 + len);
                }
                a += 4 + len.div_ceil(4) * 4;
            }
            None
        }
        _ => None,
    }
}

/// The clear part of one RTP packet.
#[derive(Debug)]
struct Rtp {
    pt: u8,
    ssrc: u32,
    ext_ids: Vec<u8>,
    /// Encrypted payload plus SRTP tag.
    payload: usize,
}

/// Parses an RTP header (not RTCP, DTLS or STUN).
fn parse_rtp(p: &[u8]) -> Option<Rtp> {
    if p.len() < 12 || p[0] >> 6 != 2 || (192..=223).contains(&p[1]) {
        return None;
    }
    let cc = usize::from(p[0] & 0x0f);
    let mut off = 12 + 4 * cc;
    let mut ext_ids = Vec::new();
    if p[0] & 0x10 != 0 {
        let profile = u16::from_be_bytes([*p.get(off)?, *p.get(off + 1)?]);
        let words = usize::from(u16::from_be_bytes([*p.get(off + 2)?, *p.get(off + 3)?]));
        let body = p.get(off + 4..off + 4 + words * 4)?;
        let mut j = 0;
        if profile == 0xBEDE {
            while j < body.len() {
                let id = body[j] >> 4;
                if id == 0 {
                    j += 1;
                    continue;
                }
                if id == 15 {
                    break;
                }
                ext_ids.push(id);
                j += 1 + usize::from(body[j] & 0x0f) + 1;
            }
        } else if profile & 0xfff0 == 0x1000 {
            while j + 1 < body.len() {
                let id = body[j];
                if id == 0 {
                    j += 1;
                    continue;
                }
                ext_ids.push(id);
                j += 2 + usize::from(body[j + 1]);
            }
        }
        off += 4 + words * 4;
    }
    Some(Rtp {
        pt: p[1] & 0x7f,
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        ext_ids,
        payload: p.len().checked_sub(off)?,
    })
}

/// (time, RTP) of every RTP packet between clients and the relay port.
fn rtp_packets(packets: &[(f64, u16, u16, Vec<u8>)], port: u16) -> Vec<(f64, Rtp)> {
    packets
        .iter()
        .filter(|(_, s, d, _)| *s == port || *d == port)
        .filter_map(|(t, _, _, p)| Some((*t, parse_rtp(turn_payload(p)?)?)))
        .collect()
}

/// `id → URI` of the `a=extmap` lines of some SDPs.
fn extmaps(sdps: &[String]) -> BTreeMap<u8, String> {
    let mut m = BTreeMap::new();
    for sdp in sdps {
        for l in sdp.lines() {
            if let Some(v) = l.trim_end().strip_prefix("a=extmap:") {
                let mut t = v.split(' ');
                let id = t.next().and_then(|x| x.split('/').next()?.parse().ok());
                if let (Some(id), Some(uri)) = (id, t.next()) {
                    m.insert(id, uri.to_owned());
                }
            }
        }
    }
    m
}

/// The Opus payload types of some SDPs.
fn opus_pts(sdps: &[String]) -> BTreeSet<u8> {
    sdps.iter()
        .flat_map(|s| s.lines())
        .filter_map(|l| l.trim_end().strip_prefix("a=rtpmap:"))
        .filter(|v| v.to_ascii_lowercase().contains(" opus/"))
        .filter_map(|v| v.split(' ').next()?.parse().ok())
        .collect()
}

/// The SSRCs the `a=ssrc:` lines of some SDPs announce.
fn ssrcs(sdps: &[String]) -> BTreeSet<u32> {
    sdps.iter()
        .flat_map(|s| s.lines())
        .filter_map(|l| l.strip_prefix("a=ssrc:")?.split(' ').next()?.parse().ok())
        .collect()
}

/// Audio payload sizes (after the encoder's first second).
struct Sizes {
    /// Per SSRC: the histogram and, per 250 ms bin, the packet count and
    /// mean size (talk and silence alternate every 2 s: runs of bins).
    text: String,
    min: usize,
    max: usize,
    /// The share of packets that have the most common size.
    modal_share: f64,
}

fn size_report(audio: &[(f64, Rtp)]) -> Sizes {
    let Some(t0) = audio.first().map(|(t, _)| *t) else {
        return Sizes {
            text: "no audio".into(),
            min: 0,
            max: 0,
            modal_share: 0.0,
        };
    };
    let mut hist: BTreeMap<usize, usize> = BTreeMap::new();
    let mut per_ssrc: BTreeMap<u32, BTreeMap<u64, Vec<usize>>> = BTreeMap::new();
    let (mut min, mut max) = (usize::MAX, 0);
    for (t, r) in audio {
        if t - t0 < 1.0 {
            continue; // the encoder's start-up
        }
        let bin = ((t - t0) * 4.0) as u64;
        per_ssrc
            .entry(r.ssrc)
            .or_default()
            .entry(bin)
            .or_default()
            .push(r.payload);
        min = min.min(r.payload);
        max = max.max(r.payload);
        *hist.entry(r.payload).or_default() += 1;
    }
    let total: usize = hist.values().sum();
    let modal = hist.values().max().copied().unwrap_or(0);
    let mut text = String::new();
    for (ssrc, bins) in &per_ssrc {
        let mut all: BTreeMap<usize, usize> = BTreeMap::new();
        let line: Vec<String> = bins
            .values()
            .map(|v| {
                for s in v {
                    *all.entry(*s).or_default() += 1;
                }
                let mean = v.iter().sum::<usize>() / v.len().max(1);
                format!("{}x{mean}", v.len())
            })
            .collect();
        text.push_str(&format!(
            "  ssrc {ssrc:08x}: sizes {all:?}\n    per 250 ms (packets x mean bytes): {}\n",
            line.join(" ")
        ));
    }
    Sizes {
        text,
        min,
        max,
        modal_share: modal as f64 / total.max(1) as f64,
    }
}

const PC_STATS: &str = r#"(async (pc) => {
  if (!pc) return null;
  const r = await pc.getStats();
  let audioIn = 0;
  r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') audioIn += s.bytesReceived || 0; });
  return audioIn;
})"#;

/// Inbound audio bytes of `pc_expr` grow within 10 s.
fn audio_flows(page: &mut Page, pc_expr: &str) -> Result<u64, String> {
    let js = format!("{PC_STATS}({pc_expr})");
    let b1 = page.evaluate(&js)?.as_u64().unwrap_or(0);
    testkit::wait_until(Duration::from_secs(10), Duration::from_millis(300), || {
        let b = page.evaluate(&js).ok()?.as_u64()?;
        (b > b1).then_some(b)
    })
    .ok_or_else(|| format!("inbound audio bytes stay at {b1}"))
}

/// The negative control: two RTCPeerConnections in one page, connected to
/// each other through the relay with their own (unsanitized) SDP.
fn control_page(urls: &[String], username: &str, credential: &str) -> String {
    let cfg = serde_json::json!({
        "iceServers": [{"urls": urls, "username": username, "credential": credential}],
        "iceTransportPolicy": "relay",
    });
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>control</title><script>
window.result = {{ state: 'new' }};
(async () => {{
  const cfg = {cfg};
  const a = new RTCPeerConnection(cfg), b = new RTCPeerConnection(cfg);
  window.pcs = {{ a, b }};
  for (const pc of [a, b]) {{
    const s = await navigator.mediaDevices.getUserMedia({{ audio: true }});
    s.getTracks().forEach((t) => pc.addTrack(t, s));
  }}
  const gathered = (pc) => new Promise((ok) => {{
    if (pc.iceGatheringState === 'complete') return ok();
    pc.addEventListener('icegatheringstatechange', () => {{ if (pc.iceGatheringState === 'complete') ok(); }});
  }});
  a.addEventListener('connectionstatechange', () => {{ window.result.state = a.connectionState; }});
  await a.setLocalDescription(await a.createOffer());
  await gathered(a);
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await gathered(b);
  await a.setRemoteDescription(b.localDescription);
  window.result.offer = a.localDescription.sdp;
  window.result.answer = b.localDescription.sdp;
}})().catch((e) => {{ window.result.error = String(e); }});
</script>"#
    )
}

#[test]
fn speech_activity_is_not_in_clear() {
    if !testkit::require_tool("chromium", &["--version"])
        || !testkit::require_tool("tcpdump", &["--version"])
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("talk-silence.wav");
    write_wav(&wav);
    // UDP only: ChannelData over UDP is what the capture parses.
    let (config, turn_port, _) = serve_config(dir.path(), &["udp"]);
    let data_dir = dir.path().join("data");
    let server = Server::start(&config, &data_dir);
    let browser = Chromium::launch(LaunchOptions::default().arg(format!(
        "--use-file-for-fake-audio-capture={}",
        wav.display()
    )))
    .unwrap();

    // 1. Through serve: sanitized SDP.
    let capture = Capture::start(dir.path(), "serve", turn_port);
    let room = random_room();
    let url = server.url(&format!("/?room={room}"));
    let mut pages = vec![
        browser.new_page(&url).unwrap(),
        browser.new_page(&url).unwrap(),
    ];
    let deadline = Instant::now() + CONNECT;
    for i in 0..2 {
        if let Err(e) = wait_connected(&mut pages[i], deadline) {
            fail(&format!("page {i} not connected: {e}"), &mut pages, &server);
        }
        if let Err(e) = check_media(&mut pages[i]) {
            fail(&format!("page {i}: {e}"), &mut pages, &server);
        }
    }
    std::thread::sleep(LISTEN);
    let mut audio_in = Vec::new();
    for i in 0..2 {
        match audio_flows(&mut pages[i], "window.onionrtc.pc") {
            Ok(b) => audio_in.push(b),
            Err(e) => fail(&format!("page {i}: {e}"), &mut pages, &server),
        }
    }
    let mut received = Vec::new();
    let mut local = Vec::new();
    for p in &mut pages {
        let r = p.evaluate("window.onionrtc.received").unwrap();
        for e in r.as_array().into_iter().flatten() {
            if let Some(s) = e["sdp"].as_str() {
                received.push(s.to_owned());
            }
        }
        if let Value::String(s) = p
            .evaluate("window.onionrtc.pc.localDescription.sdp")
            .unwrap()
        {
            local.push(s);
        }
    }
    drop(pages);
    let packets = capture.stop();

    let kept = extmaps(&received);
    let offered = extmaps(&local);
    let pts = opus_pts(&received);
    let rtp = rtp_packets(&packets, turn_port);
    // No packet (video included) carries an extension that was removed.
    let all_ids: BTreeSet<u8> = rtp.iter().flat_map(|(_, r)| r.ext_ids.clone()).collect();
    for id in &all_ids {
        assert!(
            kept.contains_key(id),
            "extension id {id} ({:?}) on RTP packets through serve",
            offered.get(id)
        );
    }
    let ours = ssrcs(&local);
    let audio: Vec<(f64, Rtp)> = rtp
        .into_iter()
        .filter(|(_, r)| pts.contains(&r.pt) && ours.contains(&r.ssrc))
        .collect();
    let seen: BTreeSet<u8> = audio.iter().flat_map(|(_, r)| r.ext_ids.clone()).collect();
    let served = size_report(&audio);
    eprintln!(
        "through serve: {} UDP packets, {} audio RTP (PT {pts:?}); extension ids on audio {seen:?}; \
         negotiated {kept:?}; audio bytes received by the pages {audio_in:?}\n{}",
        packets.len(),
        audio.len(),
        served.text
    );
    assert!(
        audio.len() > 100,
        "too few audio packets captured: {}",
        audio.len()
    );
    assert!(!kept.values().any(|u| u == AUDIO_LEVEL), "{kept:?}");
    let level_id = offered
        .iter()
        .find(|(_, u)| *u == AUDIO_LEVEL)
        .map(|(i, _)| *i);
    assert!(
        level_id.is_some(),
        "Chromium no longer offers {AUDIO_LEVEL}: {offered:?}"
    );
    for id in &seen {
        assert!(
            kept.contains_key(id),
            "extension id {id} ({:?}) on audio packets through serve",
            offered.get(id)
        );
    }

    // 2. Negative control: the same browser and relay, SDP not sanitized.
    let secret = std::fs::read_to_string(data_dir.join("turn-secret")).unwrap();
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 600;
    let username = turn::auth::rest_username(expiry, Some("control"));
    let credential = turn::auth::rest_password(secret.trim().as_bytes(), &username);
    let urls = vec![format!("turn:127.0.0.1:{turn_port}?transport=udp")];
    let site = StaticServer::start(control_page(&urls, &username, &credential)).unwrap();
    let capture = Capture::start(dir.path(), "control", turn_port);
    let mut page = browser.new_page(&site.url()).unwrap();
    if let Err(e) = page.wait_for("window.result.state === 'connected'", CONNECT) {
        let r = page
            .evaluate("JSON.stringify(window.result)")
            .unwrap_or_default();
        panic!("control page not connected: {e}: {r}");
    }
    std::thread::sleep(LISTEN);
    let control_in = audio_flows(&mut page, "window.pcs.b").unwrap();
    let sdps: Vec<String> = ["offer", "answer"]
        .iter()
        .filter_map(|k| {
            page.evaluate(&format!("window.result.{k}"))
                .ok()?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    drop(page);
    let packets = capture.stop();
    let maps = extmaps(&sdps);
    let pts = opus_pts(&sdps);
    let theirs = ssrcs(&sdps);
    let audio: Vec<(f64, Rtp)> = rtp_packets(&packets, turn_port)
        .into_iter()
        .filter(|(_, r)| pts.contains(&r.pt) && theirs.contains(&r.ssrc))
        .collect();
    let seen_c: BTreeSet<u8> = audio.iter().flat_map(|(_, r)| r.ext_ids.clone()).collect();
    let control = size_report(&audio);
    eprintln!(
        "control (unsanitized): {} audio RTP; extension ids on audio {seen_c:?}; negotiated {maps:?}; \
         audio bytes received {control_in}\n{}",
        audio.len(),
        control.text
    );
    let level = maps
        .iter()
        .find(|(_, u)| *u == AUDIO_LEVEL)
        .map(|(i, _)| *i);
    assert!(
        level.is_some_and(|id| seen_c.contains(&id)),
        "control: the audio-level extension ({level:?}) is not seen on audio packets {seen_c:?}: \
         the capture could not tell"
    );

    // 3. Sizes: constant with cbr=1, varying without.
    eprintln!(
        "audio payload sizes: through serve {}..{} bytes ({:.1} % of the most common size), \
         control {}..{} bytes ({:.1} %)",
        served.min,
        served.max,
        served.modal_share * 100.0,
        control.min,
        control.max,
        control.modal_share * 100.0
    );
    // The measurement can tell (talk and silence differ without cbr), and
    // with cbr=1;usedtx=0 Chromium sends one size whatever the input (a
    // packet or two of another size is tolerated, not a talk pattern).
    assert!(
        control.max >= control.min + 20 && control.modal_share < 0.9,
        "control: audio sizes {}..{} do not show talk and silence",
        control.min,
        control.max
    );
    assert!(
        served.modal_share >= 0.99,
        "audio payload sizes through serve vary ({}..{}): Opus is not at a constant bitrate",
        served.min,
        served.max
    );
    let _ = server.terminate();
}

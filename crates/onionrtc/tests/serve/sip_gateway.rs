//! The WebRTC ↔ RTP gateway (`[sip] media_ports`, docs/sip.md): a browser
//! SIP client (JsSIP in Chromium, over `/sip`) and a Debian **baresip**
//! phone (plain RTP over UDP from 127.0.0.2, G.711 only) call each other
//! through `onionrtc serve`, which terminates ICE/DTLS-SRTP towards the
//! browser through its own relay and speaks plain RTP to the phone from a
//! port of `media_ports`. Chromium's microphone is a 1000 Hz tone (a WAV
//! file), the phone's a 440 Hz tone (`aufile`); the phone records what it
//! decodes (`sndfile`), the page measures what it hears (Web Audio). Call A:
//! alice (browser) calls the phone, the phone answers, alice hangs up.
//! Call B: the phone calls alice, alice answers, the phone hangs up (it
//! quits on SIGTERM and sends BYE, which its trace must show). Call C:
//! carol on **SIP.js** calls a wideband phone (G.722 first, then G.711:
//! the call must be G.722 end to end) and hangs up. Each call:
//! the phone's SDP is plain RTP/AVP on a port of `media_ports` (no ICE,
//! no DTLS), codecs pass through (the browser is answered with the codec
//! the phone chose alone, offered only codecs the phone offered, and the
//! phone is answered with the browser's choice alone), relay/relay in
//! the browser, inbound audio growing, the browser hears
//! 440 Hz, the phone decodes 1000 Hz and not its own 440 Hz (the negative
//! control), one gateway open (metrics) and none after the BYE. During
//! call A, malformed, truncated and oversized SIP hits the UDP and TCP
//! listeners (sipp.rs's `bad_input`: 400/413 or dropped): the call keeps
//! its audio both ways. Privacy:
//! nothing the browser received names the phone (its address, Call-ID,
//! tags, Contact user, User-Agent), nothing the phone received names the
//! browser, and the server's log names neither.

use std::path::PathBuf;

use super::firefox::js_dir;
use super::sip_rtp::{
    audio_port, baresip, decoded, has_tone, phone_dir, phone_dir_with, quit, strength, tone_wav,
    tone_wav_at,
};
use super::sip_rtp::{PASSWORD, RATE};
use super::sip_ws::{caller_secrets, check_page_got, jssip_bundle, sip_config, sip_page_report};
use super::sip_ws::{users, ModuleServer, DOMAIN, JSSIP_HARNESS, SIPJS_HARNESS, STATS_JS};
use super::sipp::bad_input;
use super::*;

const PHONE_IP: &str = "127.0.0.2";
const PHONE_HZ: f64 = 440.0;
const BROWSER_HZ: f64 = 1000.0;
/// Seconds of decoded audio the phone must have recorded.
const AUDIO_SECS: usize = 3;
/// How far the browser's dominant frequency may be from the phone's tone.
const HZ_TOLERANCE: f64 = 30.0;

/// What the page hears from the session's peer connection: the dominant
/// frequency of its remote audio track (Web Audio analyser, 1.5 s) and its
/// level in dB. Chromium feeds Web Audio a remote track's samples only
/// while a media element plays it (JsSIP attaches it to none): one does.
const PAGE_HEARS_SIP: &str = r#"(async () => {
  const pc = sipt.pc();
  const track = pc && pc.getReceivers().map((r) => r.track).find((t) => t && t.kind === 'audio');
  if (!track) return {error: 'no remote audio track'};
  const stream = new MediaStream([track]);
  const sink = document.createElement('audio');
  sink.srcObject = stream;
  document.body.appendChild(sink);
  await sink.play().catch(() => {});
  const ctx = new AudioContext();
  await ctx.resume();
  const an = ctx.createAnalyser();
  an.fftSize = 8192;
  ctx.createMediaStreamSource(stream).connect(an);
  await new Promise((r) => setTimeout(r, 1500));
  const data = new Float32Array(an.frequencyBinCount);
  an.getFloatFrequencyData(data);
  let best = 1;
  for (let i = 2; i < data.length; i++) if (data[i] > data[best]) best = i;
  const hz = best * ctx.sampleRate / an.fftSize;
  ctx.close();
  sink.pause();
  sink.remove();
  return { hz, level: data[best] };
})()"#;

/// Chromium's audio processing (gain control, noise suppression) pulls the
/// fake microphone's steady tone down (measured here: the phone decoded it
/// at a Goertzel strength of 0.04–0.05 with it, 0.115 without, and
/// `has_tone` wants 0.02): JsSIP's `getUserMedia` gets the file's tone as
/// it is.
const RAW_MIC: &str = r#"(() => {
  const md = navigator.mediaDevices;
  const gum = md.getUserMedia.bind(md);
  md.getUserMedia = (c) => gum({ ...c, audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  return true;
})()"#;

/// The server, its data directory and the current phone's files, for
/// checks and failure messages.
struct Scene<'a> {
    server: &'a Server,
    data: &'a Path,
    /// The current phone's config dir (its recordings) and log (its trace).
    phone: PathBuf,
    phone_log: PathBuf,
}

impl Scene<'_> {
    fn metric(&self, name: &str) -> u64 {
        metric_sum(&self.server.get_as_operator("/metrics", self.data).1, name)
    }

    /// Fails with the page's view, the phone's log and the server's stderr.
    fn fail(&self, what: &str, page: &mut Page) -> ! {
        let log = std::fs::read(&self.phone_log).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(300)..].join("\n");
        panic!(
            "{what}\n--- page: {}\n--- phone ({}):\n{tail}\n--- serve stderr:\n{}",
            sip_page_report(page),
            self.phone_log.display(),
            self.server.stderr_tail()
        );
    }

    /// The SIP messages in the phone's trace (`-s`).
    fn trace(&self) -> Vec<Traced> {
        phone_trace(&self.phone_log)
    }

    /// The 200 to an INVITE in the phone's trace: the one it sent
    /// (`sent`, its answer) or received (ours, when it called).
    fn invite_ok(&self, sent: bool) -> Option<Traced> {
        self.trace()
            .into_iter()
            .find(|m| m.sent == sent && m.is_invite_response("200"))
    }

    /// Waits (bounded) until the phone's trace holds a message that
    /// `want` accepts.
    fn wait_trace(&self, limit: Duration, want: impl Fn(&Traced) -> bool) -> Option<Traced> {
        testkit::wait_until(limit, Duration::from_millis(100), || {
            self.trace().into_iter().find(&want)
        })
    }

    /// The call is up through one gateway: the page is connected
    /// relay/relay with inbound audio growing, hears the phone's tone, and
    /// the phone decodes the browser's tone and not its own. Returns what
    /// the page heard.
    fn check_talk(&self, page: &mut Page, call: &str) -> Value {
        // The events of earlier calls stay: count this call's confirmation.
        // A failed session (none before: the test stops there) ends the wait.
        // (Calls A and B are alice's, C is carol's, on her own page.)
        let confirmed = if call == "B" { 2 } else { 1 };
        let connected = format!(
            "(async () => {{ if (sipt.events.some((e) => e.startsWith('failed'))) return 'failed'; \
             const s = await sipt.stats(); \
             return s && s.state === 'connected' && \
             sipt.events.filter((e) => e === 'confirmed').length >= {confirmed} ? s : null; }})()"
        );
        match page.wait_for(&connected, CONNECT) {
            Err(e) => self.fail(
                &format!("call {call}: the page is not connected: {e}"),
                page,
            ),
            Ok(Value::String(f)) => self.fail(&format!("call {call}: the session {f}"), page),
            Ok(_) => {}
        }
        let first = page.evaluate("sipt.stats()").unwrap();
        if first["local"] != "relay" || first["remote"] != "relay" {
            self.fail(&format!("call {call}: not relay/relay: {first}"), page);
        }
        let p0 = first["packets"].as_u64().unwrap_or(0);
        let grown =
            testkit::wait_until(Duration::from_secs(10), Duration::from_millis(300), || {
                let v = page.evaluate("sipt.stats()").ok()?;
                (v["packets"].as_u64().unwrap_or(0) > p0).then_some(v)
            });
        if grown.is_none() {
            let what = format!("call {call}: inbound audio does not grow from {first}");
            self.fail(&what, page);
        }
        let gateways = self.metric("onionrtc_sip_gateways");
        if gateways != 1 {
            let m = self.server.get_as_operator("/metrics", self.data).1;
            self.fail(
                &format!("call {call}: onionrtc_sip_gateways is {gateways}, not 1:\n{m}"),
                page,
            );
        }

        // The browser hears the phone's tone.
        let heard = page
            .evaluate(PAGE_HEARS_SIP)
            .unwrap_or_else(|e| self.fail(&format!("call {call}: analyser: {e}"), page));
        let hz = heard["hz"].as_f64().unwrap_or(0.0);
        let level = heard["level"].as_f64().unwrap_or(f64::MIN);
        if (hz - PHONE_HZ).abs() > HZ_TOLERANCE || level < -80.0 {
            self.fail(
                &format!("call {call}: the browser does not hear {PHONE_HZ} Hz: {heard}"),
                page,
            );
        }

        // The phone decodes the browser's tone.
        let enough = AUDIO_SECS * RATE as usize;
        let got = testkit::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            (decoded(&self.phone).len() > enough).then_some(())
        });
        if got.is_none() {
            let n = decoded(&self.phone).len();
            self.fail(
                &format!("call {call}: the phone decoded {n} samples, not {enough}"),
                page,
            );
        }
        let samples = decoded(&self.phone);
        let (want, own) = (strength(&samples, BROWSER_HZ), strength(&samples, PHONE_HZ));
        eprintln!(
            "call {call}: the browser hears {heard}; the phone decoded {} samples: \
             {want:.3} at {BROWSER_HZ} Hz, {own:.3} at {PHONE_HZ} Hz",
            samples.len()
        );
        if !has_tone(&samples, BROWSER_HZ, PHONE_HZ) {
            self.fail(
                &format!("call {call}: the phone does not hear the browser's {BROWSER_HZ} Hz ({want:.3}; {own:.3} at {PHONE_HZ} Hz)"),
                page,
            );
        }
        // Negative control: the check fails on the phone's own tone.
        if has_tone(&samples, PHONE_HZ, BROWSER_HZ) {
            self.fail(&format!("call {call}: the phone hears itself"), page);
        }
        heard
    }

    /// After a hang-up: the gateway is closed within a bound (the call
    /// itself stays counted in `onionrtc_sip_calls` while its transactions
    /// linger, 64·T1 over UDP: not waited for here).
    fn check_released(&self, page: &mut Page, call: &str) {
        let released =
            testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                (self.metric("onionrtc_sip_gateways") == 0).then_some(())
            });
        if released.is_none() {
            let m = self.server.get_as_operator("/metrics", self.data).1;
            self.fail(
                &format!("call {call}: the gateway outlived the BYE:\n{m}"),
                page,
            );
        }
    }
}

/// One SIP message of a baresip trace.
#[derive(Debug, Clone)]
struct Traced {
    /// Sent by the phone (else received).
    sent: bool,
    text: String,
}

impl Traced {
    fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .map(str::trim)
    }

    /// A response to an INVITE with `code`.
    fn is_invite_response(&self, code: &str) -> bool {
        self.text.starts_with(&format!("SIP/2.0 {code} "))
            && self.header("CSeq").is_some_and(|c| c.ends_with(" INVITE"))
    }
}

/// The SIP messages of a baresip log with its SIP trace (`-s`): each is
/// printed as `ESC[36;1m#`, `UDP src -> dst`, the message, `ESC[;m`.
fn phone_trace(log: &Path) -> Vec<Traced> {
    let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    text.split("\x1b[36;1m#\n")
        .skip(1)
        .filter_map(|block| {
            let (route, rest) = block.split_once('\n')?;
            let src = route.split_whitespace().nth(1)?;
            Some(Traced {
                sent: src.starts_with(&format!("{PHONE_IP}:")),
                text: rest.split("\x1b[;m").next()?.to_owned(),
            })
        })
        .collect()
}

/// The payload types on the first `m=audio` line of a message's SDP.
fn audio_pts(text: &str) -> Vec<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .map(|m| m.split_whitespace().skip(2).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The last message of the page's `list` (`sipt.sent`, `sipt.received`)
/// starting with `start` and carrying SDP; empty if none.
fn page_sdp(page: &mut Page, list: &str, start: &str) -> String {
    let messages: Vec<String> = serde_json::from_value(page.evaluate(list).unwrap()).unwrap();
    messages
        .into_iter()
        .rev()
        .find(|m| m.starts_with(start) && m.contains("\r\nm=audio"))
        .unwrap_or_default()
}

/// The `tag` parameter of a From or To value.
fn tag(value: &str) -> Option<String> {
    value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("tag="))
        .map(str::to_owned)
}

/// What identifies the phone in what it sent for its calls: its address,
/// Contact user, User-Agent, and the Call-IDs and tags of its dialogs.
fn phone_secrets(trace: &[Traced]) -> Vec<String> {
    let mut out = vec![PHONE_IP.to_owned(), "baresip".to_owned()];
    for m in trace.iter().filter(|m| m.sent) {
        let invite = m.text.starts_with("INVITE ");
        if !(invite || m.is_invite_response("200")) {
            continue;
        }
        if let Some(user) = m
            .header("Contact")
            .and_then(|c| c.split("sip:").nth(1))
            .and_then(|c| c.split('@').next())
        {
            out.push(user.to_owned());
        }
        let own_tag = if invite { "From" } else { "To" };
        out.extend(m.header(own_tag).and_then(tag));
        if invite {
            out.extend(m.header("Call-ID").map(str::to_owned));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn jssip_sipjs_and_baresip_talk_through_the_gateway() {
    if !testkit::require_tool("chromium", &["--version"])
        || !testkit::require_tool("node", &["--version"])
        || !testkit::require_tool("baresip", &["-h"])
    {
        return;
    }
    let Some(bundle) = jssip_bundle() else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let sip_port = testkit::free_port();
    // 40 ports (10 gateways of four) below the ephemeral range; with the
    // same process id never on sip_rtp's (24000 + (pid % 400)·20), so
    // both can run at once.
    let first = 26_000 + (std::process::id() % 200) as u16 * 20;
    // baresip 1.0 answers only the first challenge.
    let (config, _) = sip_config(
        work,
        &format!(
            "listen = [\"udp://127.0.0.1:{sip_port}\", \"tcp://127.0.0.1:{sip_port}\"]\n\
             digest_algorithms = [\"MD5\"]\nmedia_ports = \"{first}-{}\"\n",
            first + 39
        ),
    );
    let data = work.join("data");
    for user in ["alice", "phone", "carol"] {
        let (ok, _, err) = users(&config, &data, &["add", user], &format!("{PASSWORD}\n"));
        assert!(ok, "users add {user}: {err}");
    }
    let log = work.join("serve.log");
    let server = Server::start_logged(&config, &data, "info", Some(&log));
    let sip = SocketAddr::from(([127, 0, 0, 1], sip_port));

    let (phone_wav, browser_wav) = (work.join("phone.wav"), work.join("browser.wav"));
    tone_wav(&phone_wav, PHONE_HZ);
    tone_wav(&browser_wav, BROWSER_HZ);
    let phone_log = work.join("phone-a.log");
    let mut scene = Scene {
        server: &server,
        data: &data,
        phone: phone_dir(&work.join("a"), "phone", PHONE_IP, sip, &phone_wav),
        phone_log: phone_log.clone(),
    };
    let mut phone = baresip(&scene.phone, &scene.phone_log, &[]);

    // Chromium's microphone: the 1000 Hz tone, looped (an 8 kHz WAV like
    // the phone's: Chromium resamples the file).
    let browser = Chromium::launch(LaunchOptions::default().arg(format!(
        "--use-file-for-fake-audio-capture={}",
        browser_wav.display()
    )))
    .unwrap();
    let mut page = browser.new_page(&server.url("/healthz")).unwrap();
    page.evaluate_within(&bundle, Duration::from_secs(30))
        .unwrap();
    page.evaluate(JSSIP_HARNESS).unwrap();
    page.evaluate(STATS_JS).unwrap();
    page.evaluate(RAW_MIC).unwrap();
    if let Err(e) = page.evaluate(&format!("sipt.start('alice', '{PASSWORD}', '{DOMAIN}')")) {
        scene.fail(&format!("alice start: {e}"), &mut page);
    }
    if let Err(e) = page.wait_for(
        "sipt.events.includes('registered')",
        Duration::from_secs(20),
    ) {
        scene.fail(&format!("alice not registered: {e}"), &mut page);
    }
    let registered =
        testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            (scene.metric("onionrtc_sip_registrations") >= 2).then_some(())
        });
    if registered.is_none() {
        scene.fail("the phone did not register", &mut page);
    }

    // Call A: the browser calls the phone; the phone answers.
    page.evaluate(&format!("sipt.call('sip:phone@{DOMAIN}')"))
        .unwrap();
    let invite = scene.wait_trace(Duration::from_secs(20), |m| {
        !m.sent && m.text.starts_with("INVITE ")
    });
    let Some(invite) = invite else {
        scene.fail("call A: the phone got no INVITE", &mut page);
    };
    // The phone is offered plain RTP from a port of media_ports: no ICE,
    // no DTLS, no browser.
    let port = audio_port(&invite.text, "INVITE ").unwrap_or(0);
    if !(first..=first + 39).contains(&port)
        || !invite.text.contains("RTP/AVP")
        || invite.text.contains("a=candidate")
        || invite.text.contains("a=fingerprint")
        || !invite.text.contains("c=IN IP4 127.0.0.1")
    {
        scene.fail(
            &format!(
                "call A: the phone's offer is not plain RTP from {first}-{}:\n{}",
                first + 39,
                invite.text
            ),
            &mut page,
        );
    }
    let heard_a = scene.check_talk(&mut page, "A");
    // Codecs pass through: the browser is answered with the phone's choice
    // (G.711: baresip answers PCMU and PCMA, the first counts) alone.
    let phone_answer = scene
        .invite_ok(true)
        .map(|m| audio_pts(&m.text))
        .unwrap_or_default();
    let browser_answer = audio_pts(&page_sdp(&mut page, "sipt.received", "SIP/2.0 200 "));
    if phone_answer.is_empty()
        || !["0", "8"].contains(&phone_answer[0].as_str())
        || browser_answer != phone_answer[..1]
    {
        scene.fail(
            &format!(
                "call A: the phone answered {phone_answer:?}, the browser was answered {browser_answer:?}"
            ),
            &mut page,
        );
    }
    let browser_secrets = caller_secrets(&mut page);
    // Control: the needles are findable (the responses to alice echo her
    // own Via and Call-ID).
    let own: Vec<String> = serde_json::from_value(page.evaluate("sipt.received").unwrap()).unwrap();
    for needle in &browser_secrets[..2] {
        assert!(
            own.iter().any(|m| m.contains(needle.as_str())),
            "{needle} not in {own:#?}"
        );
    }
    let secrets_a = phone_secrets(&scene.trace());
    // Control: the phone's own trace names its address and tags.
    assert!(secrets_a.len() >= 4, "{secrets_a:?}");
    check_page_got(&mut page, &secrets_a, "alice", "SIP/2.0 200 ");

    // Malformed, truncated and oversized SIP on the phones' UDP and TCP
    // listeners during the call (sipp.rs's checks: 400/413 or dropped, the
    // listeners still answer): the call keeps its audio both ways.
    let decoded_before = decoded(&scene.phone).len();
    bad_input(SocketAddr::from(([127, 0, 0, 1], sip_port)));
    let heard = page.evaluate(PAGE_HEARS_SIP).unwrap();
    let hz = heard["hz"].as_f64().unwrap_or(0.0);
    if (hz - PHONE_HZ).abs() > HZ_TOLERANCE || heard["level"].as_f64().unwrap_or(f64::MIN) < -80.0 {
        scene.fail(
            &format!("call A: after the bad input the browser hears {heard}"),
            &mut page,
        );
    }
    let grows = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        (decoded(&scene.phone).len() > decoded_before + RATE as usize).then_some(())
    });
    if grows.is_none() {
        scene.fail(
            "call A: the phone's audio stopped after the bad input",
            &mut page,
        );
    }

    // alice hangs up: the phone gets the BYE; the gateway closes.
    page.evaluate("sipt.hangup()").unwrap();
    let bye = scene.wait_trace(Duration::from_secs(10), |m| {
        !m.sent && m.text.starts_with("BYE ")
    });
    if bye.is_none() {
        scene.fail("call A: the phone got no BYE", &mut page);
    }
    scene.check_released(&mut page, "A");
    quit(&mut phone);
    drop(phone);

    // Call B: a fresh phone calls alice; the page answers by itself.
    scene.phone = phone_dir(&work.join("b"), "phone", PHONE_IP, sip, &phone_wav);
    scene.phone_log = work.join("phone-b.log");
    let dial = format!("/dial sip:alice@{DOMAIN}");
    let mut phone = baresip(&scene.phone, &scene.phone_log, &["-e", &dial]);
    if let Err(e) = page.wait_for(
        "sipt.received.filter((m) => m.startsWith('INVITE ')).length >= 1",
        Duration::from_secs(20),
    ) {
        scene.fail(&format!("call B: the page got no INVITE: {e}"), &mut page);
    }
    let heard_b = scene.check_talk(&mut page, "B");
    let answer = scene.invite_ok(false);
    let port = answer
        .as_ref()
        .and_then(|m| audio_port(&m.text, "SIP/2.0 200"))
        .unwrap_or(0);
    if !(first..=first + 39).contains(&port) {
        scene.fail(
            &format!(
                "call B: the phone's answer is not from {first}-{}: {answer:?}",
                first + 39
            ),
            &mut page,
        );
    }
    // The browser is offered the phone's codecs (no Opus: the phone has
    // none); the phone is answered with the browser's choice alone.
    let phone_offer = scene
        .trace()
        .into_iter()
        .find(|m| m.sent && m.text.starts_with("INVITE "))
        .map(|m| audio_pts(&m.text))
        .unwrap_or_default();
    let browser_offer = audio_pts(&page_sdp(&mut page, "sipt.received", "INVITE "));
    let browser_answer = audio_pts(&page_sdp(&mut page, "sipt.sent", "SIP/2.0 200 "));
    let phone_got = answer
        .as_ref()
        .map(|m| audio_pts(&m.text))
        .unwrap_or_default();
    if browser_offer.is_empty()
        || !browser_offer.iter().all(|p| phone_offer.contains(p))
        || browser_answer.is_empty()
        || phone_got != browser_answer[..1]
    {
        scene.fail(
            &format!(
                "call B: the phone offered {phone_offer:?}, the browser was offered \
                 {browser_offer:?} and answered {browser_answer:?}, the phone got {phone_got:?}"
            ),
            &mut page,
        );
    }
    let mut secrets_b = phone_secrets(&scene.trace());
    assert!(secrets_b.len() >= 5, "{secrets_b:?}");
    secrets_b.extend(secrets_a.iter().cloned());
    check_page_got(&mut page, &secrets_b, "alice", "INVITE ");

    // The phone hangs up (baresip quits on SIGTERM with a BYE).
    quit(&mut phone);
    let bye = scene.wait_trace(Duration::from_secs(1), |m| {
        m.sent && m.text.starts_with("BYE ")
    });
    if bye.is_none() {
        scene.fail("call B: the phone sent no BYE when it quit", &mut page);
    }
    if let Err(e) = page.wait_for(
        "sipt.events.filter((e) => e.startsWith('ended')).length >= 2",
        Duration::from_secs(10),
    ) {
        scene.fail(&format!("call B: alice's call did not end: {e}"), &mut page);
    }
    scene.check_released(&mut page, "B");
    let total = scene.metric("onionrtc_sip_gateways_total");
    if total != 2 {
        scene.fail(
            &format!("onionrtc_sip_gateways_total is {total}, not 2"),
            &mut page,
        );
    }
    drop(phone);

    // Call C: carol on SIP.js (its own session description handler and
    // 407 handling) calls a fresh phone; carol hangs up.
    let phone_log_b = scene.phone_log.clone();
    // This phone is wideband: G.722 first (then G.711), so the call is
    // G.722 end to end (Chromium offers it).
    let codecs = ["g722.so", "g711.so"];
    let wide_wav = work.join("phone-16k.wav");
    tone_wav_at(&wide_wav, PHONE_HZ, 2 * RATE);
    scene.phone = phone_dir_with(&work.join("c"), "phone", PHONE_IP, sip, &wide_wav, &codecs);
    scene.phone_log = work.join("phone-c.log");
    let phone = baresip(&scene.phone, &scene.phone_log, &[]);
    let modules = ModuleServer::start(js_dir().join("node_modules/sip.js/lib"));
    let mut carol = browser.new_page(&server.url("/healthz")).unwrap();
    carol.evaluate(RAW_MIC).unwrap();
    let module = format!("http://{}/index.js", modules.addr);
    carol
        .evaluate_within(
            &SIPJS_HARNESS.replace("MODULE", &module),
            Duration::from_secs(30),
        )
        .unwrap();
    carol.evaluate(STATS_JS).unwrap();
    if let Err(e) = carol.evaluate(&format!("sipt.start('carol', '{PASSWORD}', '{DOMAIN}')")) {
        scene.fail(&format!("carol start: {e}"), &mut carol);
    }
    let registered =
        testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            (scene.metric("onionrtc_sip_registrations") >= 3).then_some(())
        });
    if registered.is_none() {
        scene.fail("carol and the new phone did not register", &mut carol);
    }
    carol
        .evaluate(&format!("sipt.call('sip:phone@{DOMAIN}')"))
        .unwrap();
    let heard_c = scene.check_talk(&mut carol, "C");
    let phone_answer = scene
        .invite_ok(true)
        .map(|m| audio_pts(&m.text))
        .unwrap_or_default();
    let carol_answer = audio_pts(&page_sdp(&mut carol, "sipt.received", "SIP/2.0 200 "));
    if phone_answer.first().map(String::as_str) != Some("9") || carol_answer != ["9"] {
        scene.fail(
            &format!(
                "call C: not G.722 end to end: the phone answered {phone_answer:?}, \
                 carol was answered {carol_answer:?}"
            ),
            &mut carol,
        );
    }
    check_page_got(
        &mut carol,
        &phone_secrets(&scene.trace()),
        "carol",
        "SIP/2.0 200 ",
    );
    carol.evaluate("sipt.hangup()").unwrap();
    let bye = scene.wait_trace(Duration::from_secs(10), |m| {
        !m.sent && m.text.starts_with("BYE ")
    });
    if bye.is_none() {
        scene.fail("call C: the phone got no BYE", &mut carol);
    }
    scene.check_released(&mut carol, "C");
    drop(phone);
    drop(carol);
    drop(page);
    drop(browser);

    // Privacy: neither phone's trace names the browser (its own names
    // itself: the grep can fail), nor does the server's log name either.
    let mut needles = browser_secrets.clone();
    needles.push("JsSIP".to_owned());
    for phone_log in [&phone_log, &phone_log_b, &scene.phone_log] {
        let text = String::from_utf8_lossy(&std::fs::read(phone_log).unwrap()).into_owned();
        assert!(text.contains(PHONE_IP), "{text}");
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{} holds the browser's {needle}:\n{text}",
                phone_log.display()
            );
        }
    }
    let server_log = std::fs::read_to_string(&log).unwrap();
    for needle in [PHONE_IP, "sip:alice", "sip:phone", "sip:carol"] {
        assert!(
            !server_log.contains(needle),
            "the log names {needle}:\n{server_log}"
        );
    }
    let m = server.get_as_operator("/metrics", &data).1;
    assert_eq!(
        metric_sum(&m, "onionrtc_sip_calls_answered_total"),
        3,
        "{m}"
    );
    let status = server.terminate().unwrap();
    assert!(status.success(), "serve exited with {status}");
    let counter = |name: &str| metric_sum(&m, &format!("onionrtc_sip_media_{name}_total"));
    // (`foreign` is usually 1: baresip sends its first RTCP report from
    // 127.0.0.1, not its own 127.0.0.2, before its answer tells the
    // gateway its ports; dropped, as a stranger's would be.)
    eprintln!(
        "gateway e2e: media packets {}, foreign {}, malformed {}, rate-limited {}",
        counter("packets"),
        counter("foreign"),
        counter("malformed"),
        counter("rate_limited")
    );
    eprintln!(
        "gateway e2e: the browsers heard {}, {} and {} Hz; {:?} in all",
        heard_a["hz"],
        heard_b["hz"],
        heard_c["hz"],
        started.elapsed()
    );
}

// Firefox ESR in an OnionRTC call, for crates/onionrtc/tests/serve/firefox.rs.
//
//   node tests/js/firefox_call.mjs URL [HOLD_SECONDS] [--more]
//
// Starts Debian's firefox-esr headless over WebDriver BiDi (puppeteer-core,
// no browser download), with fake camera and microphone and loopback ICE
// allowed, opens URL (the web app with ?room=…), waits until the page is
// `connected`, checks that the selected pair is relay/relay and that
// inbound audio grows, prints one JSON line, keeps the call up for
// HOLD_SECONDS (so the other side can check too) and exits. Every wait is
// bounded; on any failure it prints {"error": …} and exits 1.
//
// With --more, the same Firefox then takes further room URLs, one a line
// on stdin (waiting at most HOLD_SECONDS for each; `quit` or end of input
// ends it): it opens each, waits for `connected` and inbound audio, and
// prints one JSON line with the same fields plus what it hears — the
// dominant frequency of the remote audio track (HEARS_JS) and the inbound
// audio's concealedSamples / totalSamplesReceived. One Firefox
// serves every call of a test binary.

import puppeteer from 'puppeteer-core';

const args = process.argv.slice(2).filter((a) => a !== '--more');
const more = process.argv.includes('--more');
const [url, holdArg] = args;
const hold = Number(holdArg ?? 15) * 1000;
const firefox = process.env.FIREFOX || '/usr/bin/firefox-esr';
const LIMIT_MS = 45_000;

const PEER_JS = `(async () => {
  const api = window.onionrtc;
  const p = Object.values(api.peers)[0];
  if (!p) return { state: api.state };
  const r = await p.pc.getStats();
  let pair = null;
  r.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = r.get(s.selectedCandidatePairId); });
  if (!pair) r.forEach((s) => { if (s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) pair = s; });
  const local = pair ? r.get(pair.localCandidateId) : null;
  const remote = pair ? r.get(pair.remoteCandidateId) : null;
  let audioIn = 0, audioOut = 0;
  r.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') audioIn += s.bytesReceived || 0;
    if (s.type === 'outbound-rtp' && s.kind === 'audio') audioOut += s.bytesSent || 0;
  });
  return { state: api.state, peerState: p.state, memberId: api.memberId, peer: p.id,
    local: local ? local.candidateType : null, remote: remote ? remote.candidateType : null, audioIn, audioOut };
})()`;

// What the page hears on its first peer's remote audio track: 2 s of the
// decoded track recorded (MediaRecorder), decoded again offline, and the
// strongest frequency of 100–4000 Hz (Goertzel, 10 Hz steps, past the
// first 0.5 s). No AudioContext: headless Firefox without a sound device
// keeps one suspended.
const HEARS_JS = `(async () => {
  const p = Object.values(window.onionrtc.peers)[0];
  const track = p && p.pc.getReceivers().map((r) => r.track).find((t) => t && t.kind === 'audio');
  if (!track) return { hearsError: 'no remote audio track' };
  const rec = new MediaRecorder(new MediaStream([track]));
  const chunks = [];
  rec.ondataavailable = (e) => chunks.push(e.data);
  const stopped = new Promise((r) => { rec.onstop = r; });
  rec.start();
  await new Promise((r) => setTimeout(r, 2000));
  rec.stop();
  await Promise.race([stopped, new Promise((r) => setTimeout(r, 3000))]);
  const bytes = await new Blob(chunks).arrayBuffer();
  const audio = await new OfflineAudioContext(1, 48000, 48000).decodeAudioData(bytes);
  const x = audio.getChannelData(0);
  const rate = audio.sampleRate;
  const from = Math.floor(rate * 0.5);
  const n = Math.max(1, x.length - from);
  const g = (f) => {
    const c = 2 * Math.cos(2 * Math.PI * f / rate);
    let s1 = 0, s2 = 0;
    for (let i = from; i < x.length; i++) { const s0 = x[i] + c * s1 - s2; s2 = s1; s1 = s0; }
    return Math.sqrt(Math.max(0, s1 * s1 + s2 * s2 - c * s1 * s2)) / n;
  };
  let hz = 0, strength = 0;
  for (let f = 100; f < 4000; f += 10) { const v = g(f); if (v > strength) { strength = v; hz = f; } }
  const r = await p.pc.getStats();
  let inb = null;
  r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') inb = s; });
  return { hz, strength, off: g(hz * 1.37), seconds: x.length / rate,
    concealed: inb ? (inb.concealedSamples ?? null) : null, total: inb ? (inb.totalSamplesReceived ?? null) : null };
})()`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Opens nothing: waits (bounded) until the page's first peer is connected
// and audio flows both ways; returns the PEER_JS fields.
async function callResult(page) {
  const deadline = Date.now() + LIMIT_MS;
  let first = null;
  while (Date.now() < deadline) {
    const v = await page.evaluate(PEER_JS);
    if (v.peerState === 'connected' && v.local) {
      first = v;
      break;
    }
    await sleep(250);
  }
  if (!first) throw new Error(`not connected: ${JSON.stringify(await page.evaluate(PEER_JS))}`);
  let last = first;
  for (let i = 0; i < 40 && !(last.audioIn > first.audioIn && last.audioOut > first.audioOut); i += 1) {
    await sleep(250);
    last = await page.evaluate(PEER_JS);
  }
  const ua = await page.evaluate('navigator.userAgent');
  return { ...last, audioInBefore: first.audioIn, audioOutBefore: first.audioOut, userAgent: ua };
}

// The next line on stdin, or null at its end or after `ms`.
function lineReader() {
  const lines = [];
  let waiting = null;
  let ended = false;
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i).trim());
      buf = buf.slice(i + 1);
    }
    if (waiting && lines.length) { const w = waiting; waiting = null; w(lines.shift()); }
  });
  process.stdin.on('end', () => { ended = true; if (waiting) { const w = waiting; waiting = null; w(null); } });
  return (ms) => new Promise((resolve) => {
    if (lines.length) return resolve(lines.shift());
    if (ended) return resolve(null);
    const t = setTimeout(() => { waiting = null; resolve(null); }, ms);
    waiting = (l) => { clearTimeout(t); resolve(l); };
  });
}

async function main() {
  let watchdog = null;
  // (Re)arms the bound on what follows: the first call, then each --more call.
  const arm = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => {
      console.log(JSON.stringify({ error: `no result within ${LIMIT_MS} ms` }));
      process.exit(1);
    }, LIMIT_MS + hold + 30_000);
  };
  arm();
  // The test that started us is gone (killed): stop, so Firefox goes too.
  const parent = process.ppid;
  const orphan = setInterval(() => {
    if (process.ppid !== parent) process.kill(process.pid, 'SIGTERM');
  }, 1000);
  orphan.unref();
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: firefox,
    headless: true,
    timeout: 30_000,
    // Our own handlers below close Firefox, then exit.
    handleSIGTERM: false,
    handleSIGINT: false,
    handleSIGHUP: false,
    extraPrefsFirefox: {
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      'media.peerconnection.ice.loopback': true,
      'media.peerconnection.ice.obfuscate_host_addresses': false,
      'permissions.default.camera': 1,
      'permissions.default.microphone': 1,
      'media.autoplay.default': 0,
      'media.autoplay.blocking_policy': 0,
    },
  });
  const stop = () => {
    clearTimeout(watchdog);
    browser.close().catch(() => {}).finally(() => process.exit(0));
    // Bounded: if closing hangs, kill it.
    setTimeout(() => { browser.process()?.kill('SIGKILL'); process.exit(0); }, 5000).unref();
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.once(sig, stop);
  try {
    const page = await browser.newPage();
    await page.goto(url, { timeout: 20_000 });
    console.log(JSON.stringify(await callResult(page)));
    if (!more) {
      await sleep(hold);
    } else {
      const next = lineReader();
      for (let n = 0; n < 10; n += 1) {
        const line = await next(hold);
        if (!line || line === 'quit') break;
        arm();
        await page.goto(line, { timeout: 20_000 });
        const r = await callResult(page);
        console.log(JSON.stringify({ ...r, ...(await page.evaluate(HEARS_JS)) }));
      }
    }
  } finally {
    clearTimeout(watchdog);
    await browser.close().catch(() => {});
  }
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
});

// Firefox ESR in an OnionRTC call, for crates/onionrtc/tests/serve/firefox.rs.
//
//   node tests/js/firefox_call.mjs URL [HOLD_SECONDS]
//
// Starts Debian's firefox-esr headless over WebDriver BiDi (puppeteer-core,
// no browser download), with fake camera and microphone and loopback ICE
// allowed, opens URL (the web app with ?room=…), waits until the page is
// `connected`, checks that the selected pair is relay/relay and that
// inbound audio grows, prints one JSON line, keeps the call up for
// HOLD_SECONDS (so the other side can check too) and exits. Every wait is
// bounded; on any failure it prints {"error": …} and exits 1.

import puppeteer from 'puppeteer-core';

const [url, holdArg] = process.argv.slice(2);
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const watchdog = setTimeout(() => {
    console.log(JSON.stringify({ error: `no result within ${LIMIT_MS} ms` }));
    process.exit(1);
  }, LIMIT_MS + hold + 10_000);
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
    console.log(JSON.stringify({ ...last, audioInBefore: first.audioIn, audioOutBefore: first.audioOut, userAgent: ua }));
    await sleep(hold);
  } finally {
    clearTimeout(watchdog);
    await browser.close().catch(() => {});
  }
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
});

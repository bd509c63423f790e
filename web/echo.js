// "Test my connection": the server's echo test (`/api/echo`, docs/serve.md)
// sends this page's microphone audio back through the relay — the same
// path a call takes, through the connector too in private mode. After
// TEST_SECONDS the page shows RTT, jitter, loss, a MOS estimate (the lab's
// E-model) and a verdict with docs/lab.md's thresholds.
//
// Result for automation: `window.onionrtc.echo` = {state: 'running' |
// 'done' | 'failed', rtt, jitter, loss, jitterBufferDelay, mos, verdict,
// error}.

export const TEST_SECONDS = 8;
const GATHER_MS = 5000;

/**
 * MOS by the lab's E-model (ITU-T G.107 simplified, Opus rated as G.711
 * with PLC: Ie 0, Bpl 25.1): one-way delay = RTT/2 + jitter buffer + 20 ms
 * frame, random loss.
 */
export function mos(rtt, jitterBuffer, lossFraction) {
  const d = (rtt / 2 + jitterBuffer) * 1000 + 20;
  let id = 0.024 * d;
  if (d >= 177.3) id += 0.11 * (d - 177.3);
  const ppl = Math.min(Math.max(lossFraction * 100, 0), 100);
  const ie = (95 * ppl) / (ppl + 25.1);
  const r = 93.2 - id - ie;
  if (r < 0) return 1;
  if (r > 100) return 4.5;
  return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r);
}

/**
 * docs/lab.md: usable ("acceptable") is RTT < 400 ms, loss < 2 %, jitter
 * < 30 ms; good also has a one-way delay under G.114's 150 ms; else poor.
 */
export function verdict({ rtt, jitter, loss, jitterBufferDelay }) {
  if (rtt == null) return 'poor';
  const usable = rtt < 0.4 && loss < 0.02 && (jitter ?? 1) < 0.03;
  const oneWay = rtt / 2 + (jitterBufferDelay ?? 0);
  if (usable && oneWay < 0.15) return 'good';
  return usable ? 'usable' : 'poor';
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return;
  await Promise.race([
    new Promise((resolve) => {
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      });
    }),
    sleep(GATHER_MS),
  ]);
}

async function measure(pc) {
  const report = await pc.getStats();
  let rtt = null;
  let inbound = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = report.get(s.selectedCandidatePairId);
      if (pair && pair.currentRoundTripTime != null) rtt = pair.currentRoundTripTime;
    }
    if (s.type === 'inbound-rtp' && s.kind === 'audio') inbound = s;
  });
  const received = inbound?.packetsReceived ?? 0;
  const lost = Math.max(inbound?.packetsLost ?? 0, 0);
  const loss = received + lost > 0 ? lost / (received + lost) : 1;
  const emitted = inbound?.jitterBufferEmittedCount ?? 0;
  const jitterBufferDelay = emitted > 0 ? inbound.jitterBufferDelay / emitted : null;
  return { rtt, jitter: inbound?.jitter ?? null, loss, received, jitterBufferDelay };
}

/**
 * Runs one test. `turnUrls`: the connector's TURN URLs in private mode
 * (null: the server's). `onProgress(text)` gets status lines.
 */
export async function runEchoTest(turnUrls, onProgress) {
  const res = await fetch('/api/echo', { cache: 'no-store' });
  if (!res.ok) throw new Error(`the server has no echo test (${res.status})`);
  const config = await res.json();
  const iceServers = turnUrls
    ? config.iceServers.map((s) => ({ ...s, urls: turnUrls }))
    : config.iceServers;
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
  let stream = null;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    for (const t of stream.getAudioTracks()) pc.addTrack(t, stream);
  } catch (e) {
    console.warn('no microphone; testing with silence', e);
    pc.addTransceiver('audio', { direction: 'sendrecv' });
  }
  try {
    onProgress('reaching the relay…');
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const answer = await fetch('/api/echo', {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const body = await answer.text();
    if (answer.status !== 201) throw new Error(`the echo test refused (${answer.status}): ${body.trim()}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    for (let i = TEST_SECONDS; i > 0; i--) {
      onProgress(`measuring… ${i} s (${pc.connectionState})`);
      await sleep(1000);
    }
    if (pc.connectionState !== 'connected') throw new Error(`no connection through the relay (${pc.connectionState})`);
    const m = await measure(pc);
    const result = { ...m, mos: m.rtt == null ? null : mos(m.rtt, m.jitterBufferDelay ?? 0, m.loss) };
    result.verdict = verdict(result);
    return result;
  } finally {
    pc.close();
    if (stream) for (const t of stream.getTracks()) t.stop();
  }
}

function ms(v) {
  return v == null ? '–' : `${Math.round(v * 1000)} ms`;
}

/** Wires the "Test my connection" button; `connector` resolves to the TURN URL override or null. */
export function setupEchoButton(api, connector) {
  const button = document.getElementById('echo-button');
  const out = document.getElementById('echo-result');
  if (!button || !out) return;
  button.addEventListener('click', async () => {
    button.disabled = true;
    api.echo = { state: 'running' };
    const show = (text) => {
      out.textContent = text;
      out.hidden = false;
    };
    try {
      const r = await runEchoTest(await connector, show);
      api.echo = { state: 'done', ...r };
      show(
        `Round trip ${ms(r.rtt)}, jitter ${ms(r.jitter)}, loss ${(r.loss * 100).toFixed(1)} %, ` +
          `MOS ${r.mos == null ? '–' : r.mos.toFixed(2)}: ${r.verdict}.`,
      );
      out.dataset.verdict = r.verdict;
    } catch (e) {
      api.echo = { state: 'failed', error: e.message };
      show(`The test failed: ${e.message}`);
      out.dataset.verdict = 'poor';
    } finally {
      button.disabled = false;
    }
  });
}

// The per-second call summary of docs/signaling.md ("Statistics"), built from
// RTCPeerConnection.getStats() with standard W3C webrtc-stats fields only, so
// it works in Chromium and Firefox alike.

/** The summary's fields, in order. The server stores exactly these. */
export const FIELDS = [
  'ts', 'state', 'rtt', 'jitter', 'packetsLost', 'packetsReceived',
  'jitterBufferDelay', 'jitterBufferEmittedCount', 'bytesSent', 'bytesReceived',
  'bitrateIn', 'bitrateOut', 'localCandidateType', 'remoteCandidateType', 'relayProtocol',
];

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v) => (typeof v === 'string' && v !== '' ? v : null);

/** The selected ICE candidate pair of a stats report, or null. */
export function selectedPair(report) {
  for (const s of report.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = report.get(s.selectedCandidatePairId);
      if (pair) return pair;
    }
  }
  // Firefox marks the pair itself.
  for (const s of report.values()) {
    if (s.type === 'candidate-pair' && s.selected) return s;
  }
  for (const s of report.values()) {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') return s;
  }
  return null;
}

/** Turns `getStats()` results into summaries; keeps what bitrates need. */
export class StatsSampler {
  constructor() {
    this.prev = null; // {t, bytesSent, bytesReceived, pc}
  }

  /**
   * One summary of `pc`.
   * @param {RTCPeerConnection} pc
   * @param {string} state window.onionrtc.state
   */
  async sample(pc, state) {
    const report = await pc.getStats();
    const t = performance.now();
    const pair = selectedPair(report);
    const local = pair ? report.get(pair.localCandidateId) : undefined;
    const remote = pair ? report.get(pair.remoteCandidateId) : undefined;

    const inbound = { audio: null, video: null };
    let packetsLost = null;
    let packetsReceived = null;
    for (const s of report.values()) {
      if (s.type !== 'inbound-rtp') continue;
      const kind = s.kind || s.mediaType;
      if (kind === 'audio' || kind === 'video') inbound[kind] = inbound[kind] || s;
      if (num(s.packetsLost) !== null) packetsLost = (packetsLost || 0) + s.packetsLost;
      if (num(s.packetsReceived) !== null) packetsReceived = (packetsReceived || 0) + s.packetsReceived;
    }
    // Jitter and the jitter buffer come from one stream (audio if present),
    // so that jitterBufferDelay / jitterBufferEmittedCount is a mean delay.
    const main = inbound.audio || inbound.video;

    const bytesSent = num(pair?.bytesSent);
    const bytesReceived = num(pair?.bytesReceived);
    let bitrateIn = null;
    let bitrateOut = null;
    const prev = this.prev;
    if (prev && prev.pc === pc && t > prev.t) {
      const dt = (t - prev.t) / 1000;
      if (bytesReceived !== null && prev.bytesReceived !== null && bytesReceived >= prev.bytesReceived) {
        bitrateIn = Math.round((8 * (bytesReceived - prev.bytesReceived)) / dt);
      }
      if (bytesSent !== null && prev.bytesSent !== null && bytesSent >= prev.bytesSent) {
        bitrateOut = Math.round((8 * (bytesSent - prev.bytesSent)) / dt);
      }
    }
    this.prev = { t, bytesSent, bytesReceived, pc };

    return {
      ts: Date.now(),
      state,
      rtt: num(pair?.currentRoundTripTime),
      jitter: num(main?.jitter),
      packetsLost,
      packetsReceived,
      jitterBufferDelay: num(main?.jitterBufferDelay),
      jitterBufferEmittedCount: num(main?.jitterBufferEmittedCount),
      bytesSent,
      bytesReceived,
      bitrateIn,
      bitrateOut,
      localCandidateType: str(local?.candidateType),
      remoteCandidateType: str(remote?.candidateType),
      relayProtocol: str(local?.relayProtocol),
    };
  }
}

/** Loss in percent of the packets that should have arrived, or null. */
export function lossPercent(s) {
  if (s.packetsLost === null || s.packetsReceived === null) return null;
  const expected = s.packetsLost + s.packetsReceived;
  return expected > 0 ? (100 * Math.max(0, s.packetsLost)) / expected : 0;
}

/**
 * How a connection is doing, from the latest summary: `good` (round trip
 * under 300 ms and under 2 % loss), `usable` (under 600 ms and 8 %) or
 * `poor`; null before there is a round trip.
 */
export function quality(s) {
  if (!s || s.rtt === null) return null;
  const loss = lossPercent(s) ?? 0;
  if (s.rtt < 0.3 && loss < 2) return 'good';
  if (s.rtt < 0.6 && loss < 8) return 'usable';
  return 'poor';
}

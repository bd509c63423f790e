// One other member of the room: a relay-only RTCPeerConnection (end-to-end
// DTLS-SRTP through our relay) and a negotiated data channel that carries
// chat, display names and mute/camera/screen state — never the server.
//
// Who offers: the member who joined later (docs/signaling.md). Both ends
// add one audio and one video transceiver, `sendrecv` even without a track,
// so a camera, a screen or nothing can be swapped in later with
// `replaceTrack`, without renegotiating. ICE restarts are offered by the
// same member; if both ends ever offer at once, "perfect negotiation"
// settles it: the member who was in the room first is polite and rolls
// back its own offer, the other ignores the colliding one.

import { StatsSampler } from './stats.js';

/** Largest data-channel message accepted (chat text is 2,000 characters). */
export const MAX_DATA_MESSAGE = 16384;
/**
 * Without a single relay candidate this long after the peer connection was
 * made, the relay counts as unreachable (a TURN allocation that gets no
 * answer is retried for about 40 s before gathering ends; through Tor an
 * allocation takes a few seconds).
 */
export const RELAY_CHECK_MS = 15000;

export class Peer {
  /**
   * @param {string} id the member id the server gave the other member
   * @param {object} o
   * @param {boolean} o.polite we were in the room first (the other offers)
   * @param {RTCIceServer[]} o.iceServers
   * @param {() => {audio: MediaStreamTrack|null, video: MediaStreamTrack|null, stream: MediaStream|null}} o.local
   * @param {(msg: object) => void} o.signal sends a signaling message to this member
   * @param {object} o.on callbacks: state(peer), track(peer, track), data(peer, msg), open(peer), gathered(peer, relayCandidates)
   */
  constructor(id, o) {
    this.id = id;
    this.polite = o.polite;
    this.offerer = !o.polite;
    this.local = o.local;
    this.signal = o.signal;
    this.on = o.on;
    this.state = 'connecting';
    this.stats = null;
    this.quality = null;
    this.name = null;
    this.muted = false;
    this.cameraOff = false;
    this.sharing = false;
    this.stream = new MediaStream();
    this.sampler = new StatsSampler();
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.pending = [];
    this.restarts = 0;
    /** Offers that collided with ours (glare), and how they were settled. */
    this.collisions = { ignored: 0, rolledBack: 0 };
    this.relayCandidates = 0;
    this.closed = false;

    const pc = new RTCPeerConnection({ iceServers: o.iceServers, iceTransportPolicy: 'relay' });
    this.pc = pc;
    this.dc = pc.createDataChannel('room', { negotiated: true, id: 0, ordered: true });
    this.dc.addEventListener('open', () => this.on.open(this));
    this.dc.addEventListener('message', (e) => this.onData(e.data));
    pc.addEventListener('icecandidate', (e) => {
      const c = e.candidate;
      if (c && c.candidate && / typ relay/.test(c.candidate)) this.relayCandidates += 1;
      this.signal({
        type: 'candidate',
        candidate: c && c.candidate ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null,
      });
    });
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') this.on.gathered(this, this.relayCandidates);
    });
    this.relayTimer = setTimeout(() => {
      // Only once gathering has started: a member that never answers is not a relay failure.
      if (!this.closed && this.relayCandidates === 0 && this.pc.iceGatheringState !== 'new') this.on.gathered(this, 0);
    }, RELAY_CHECK_MS);
    pc.addEventListener('track', (e) => {
      if (!this.stream.getTracks().includes(e.track)) this.stream.addTrack(e.track);
      this.on.track(this, e.track);
    });
    const change = () => this.onConnectionState();
    pc.addEventListener('connectionstatechange', change);
    pc.addEventListener('iceconnectionstatechange', change);
    if (this.offerer) {
      const { audio, video, stream } = this.local();
      const streams = stream ? [stream] : [];
      pc.addTransceiver(audio || 'audio', { direction: 'sendrecv', streams });
      pc.addTransceiver(video || 'video', { direction: 'sendrecv', streams });
    }
  }

  onConnectionState() {
    if (this.closed) return;
    const s = this.pc.connectionState ?? this.pc.iceConnectionState;
    const next = {
      connected: 'connected',
      completed: 'connected',
      failed: 'failed',
      disconnected: 'reconnecting',
      closed: 'closed',
    }[s] || 'connecting';
    if (next === this.state) return;
    this.state = next;
    this.on.state(this);
  }

  /** The offer (or, with `iceRestart`, the ICE restart) to the other member. */
  async offer({ iceRestart = false } = {}) {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      if (iceRestart) this.pc.restartIce();
      await this.pc.setLocalDescription(await this.pc.createOffer({ iceRestart }));
      this.signal({ type: 'offer', sdp: this.pc.localDescription.sdp });
    } finally {
      this.makingOffer = false;
    }
  }

  /** An `offer` or `answer` from the other member. */
  async onDescription(type, sdp) {
    if (this.closed) return;
    const pc = this.pc;
    if (type === 'answer' && pc.signalingState !== 'have-local-offer') return; // stale
    const collision = type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
    this.ignoreOffer = !this.polite && collision;
    if (this.ignoreOffer) {
      this.collisions.ignored += 1;
      return;
    }
    if (collision) this.collisions.rolledBack += 1;
    await pc.setRemoteDescription({ type, sdp }); // rolls back our offer when polite
    const pending = this.pending;
    this.pending = [];
    for (const c of pending) await this.addCandidate(c);
    if (type !== 'offer') return;
    this.attachLocal();
    await pc.setLocalDescription(await pc.createAnswer());
    this.signal({ type: 'answer', sdp: pc.localDescription.sdp });
  }

  /** The answerer's side: send what we have on the offered transceivers. */
  attachLocal() {
    const { audio, video, stream } = this.local();
    for (const t of this.pc.getTransceivers()) {
      const kind = t.receiver.track?.kind;
      if (kind !== 'audio' && kind !== 'video') continue;
      if (t.direction !== 'sendrecv') t.direction = 'sendrecv';
      const track = kind === 'audio' ? audio : video;
      if (!t.sender.track && track) {
        t.sender.replaceTrack(track).catch((e) => console.warn('replaceTrack:', e.message));
        if (stream && t.sender.setStreams) t.sender.setStreams(stream);
      }
    }
  }

  async onCandidate(c) {
    if (this.closed) return;
    if (!this.pc.remoteDescription) {
      if (this.pending.length < 200) this.pending.push(c);
      return;
    }
    await this.addCandidate(c);
  }

  async addCandidate(c) {
    try {
      await this.pc.addIceCandidate(c || undefined);
    } catch (e) {
      if (!this.ignoreOffer) console.warn('addIceCandidate refused a candidate:', e.message);
    }
  }

  /** Sends `track` (or nothing, for null) as our `kind` to this member. */
  async setTrack(kind, track) {
    for (const t of this.pc.getTransceivers()) {
      if (t.receiver.track?.kind === kind && t.direction !== 'stopped') {
        await t.sender.replaceTrack(track);
        return;
      }
    }
  }

  onData(data) {
    if (typeof data !== 'string' || data.length > MAX_DATA_MESSAGE) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg && typeof msg === 'object' && typeof msg.t === 'string') this.on.data(this, msg);
  }

  /** Sends one JSON message over the data channel; false when it is not open. */
  send(msg) {
    if (this.dc.readyState !== 'open') return false;
    try {
      this.dc.send(JSON.stringify(msg));
      return true;
    } catch (e) {
      console.warn('data channel send:', e.message);
      return false;
    }
  }

  /** A fresh summary of getStats() (docs/signaling.md "Statistics"). */
  async sample() {
    this.stats = await this.sampler.sample(this.pc, this.state);
    return this.stats;
  }

  close() {
    this.closed = true;
    clearTimeout(this.relayTimer);
    clearTimeout(this.disconnectTimer);
    this.state = 'closed';
    try {
      this.dc.close();
    } catch {
      // already closed
    }
    this.pc.close();
    for (const t of this.stream.getTracks()) this.stream.removeTrack(t);
  }
}

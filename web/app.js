// OnionRTC web app: one call between two people in a room, media through the
// TURN relay only. The protocol is docs/signaling.md.
//
// Flow: load → (form, or ?room=NAME) → getUserMedia (or receive-only) →
// WebSocket `join` → `joined` (waiting) → the second member offers →
// answer, trickled candidates both ways → connected; a stats summary every
// second. `peer-left` closes the peer connection and waits for the next one.
//
// `window.onionrtc` (for automation; see docs/signaling.md and docs/serve.md):
//   state    new | joining | waiting | connecting | connected | failed | closed
//   pc       the RTCPeerConnection, once created
//   stats    the latest per-second summary
//   received debug record of what the server forwarded to this page:
//            {type: 'offer'|'answer', sdp} and {type: 'candidate', candidate}
//            (the candidate line, or null for end-of-candidates); at most
//            MAX_RECEIVED entries, oldest dropped.

import { Signaling, signalingUrl } from './signaling.js';
import { StatsSampler } from './stats.js';
import * as ui from './ui.js';
import { setupEchoButton } from './echo.js';

const MAX_RECEIVED = 500;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** Errors after which this page cannot take part in the call. */
const FATAL_ERRORS = new Set(['bad-room', 'room-full', 'too-many-joins', 'server-full', 'already-joined']);
const CONNECTOR_TIMEOUT_MS = 3000;
/**
 * TURN credentials are checked when an allocation is made. A member who
 * waits alone in the room re-joins (new WebSocket, fresh credentials) this
 * long before its credentials expire (at most a quarter of their lifetime),
 * so the next call can still allocate.
 */
const CREDENTIAL_MARGIN_MS = 60_000;

const api = { state: 'new', pc: null, stats: null, received: [] };
window.onionrtc = api;

let sig = null;
let roomName = null;
let credentialsExpire = 0; // ms since the epoch
let credentialMargin = CREDENTIAL_MARGIN_MS;
let rejoining = false;
let iceServers = [];
let localStream = null;
let remoteStream = null;
let pendingCandidates = [];
let sampler = new StatsSampler();
let statsTimer = null;
let muted = false;
let cameraOff = false;

// Started at load; awaited when the server's iceServers arrive.
const connector = loadConnector();

function setState(state) {
  api.state = state;
  ui.showState(state);
}

function record(entry) {
  api.received.push(entry);
  if (api.received.length > MAX_RECEIVED) api.received.shift();
}

/**
 * Private mode: a local connector serves `/connector.json` with the TURN
 * URL(s) browsers must use instead of the server's, e.g.
 * `{"turn": "turn:127.0.0.1:3479?transport=udp"}`. A 404 (or anything that
 * is not such JSON) means normal mode. Resolves to the URL list or null.
 */
async function loadConnector() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), CONNECTOR_TIMEOUT_MS);
  try {
    const res = await fetch('/connector.json', { cache: 'no-store', signal: abort.signal });
    if (!res.ok) return null;
    const body = await res.json();
    const urls = [].concat(body?.turn ?? []);
    if (urls.length === 0 || !urls.every((u) => typeof u === 'string' && /^turns?:/.test(u))) {
      console.warn('connector.json has no usable "turn" URL: normal mode');
      return null;
    }
    return urls;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/** The server's iceServers, with the connector's TURN URLs in private mode. */
function applyConnector(servers, urls) {
  if (!Array.isArray(servers)) return [];
  if (!urls) return servers;
  return servers.map((s) => ({ ...s, urls }));
}

function suggestRoom() {
  const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789';
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

function roomLink(room) {
  return `${location.origin}${location.pathname}?room=${encodeURIComponent(room)}`;
}

/** Camera and microphone (or the microphone alone); null means receive-only. */
async function getMedia(audioOnly) {
  if (!navigator.mediaDevices?.getUserMedia) {
    ui.notice('This page has no access to a camera or microphone here: you can see and hear the other person, but they cannot see or hear you.');
    return null;
  }
  const attempts = audioOnly ? [{ audio: true }] : [{ audio: true, video: true }, { audio: true }];
  let lastError = null;
  for (const constraints of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      if (!audioOnly && !constraints.video) ui.notice(`No camera (${lastError?.name || 'error'}): audio only.`);
      return stream;
    } catch (e) {
      lastError = e;
    }
  }
  ui.notice(`No camera or microphone (${lastError?.name || 'error'}): receive-only. You can see and hear the other person, but they cannot see or hear you.`);
  return null;
}

async function join(room, audioOnly) {
  ui.showCall(room, roomLink(room));
  setState('joining');
  localStream = await getMedia(audioOnly);
  ui.showLocal(localStream);
  roomName = room;
  if (!(await connect())) {
    ui.notice('Cannot reach the signaling server.');
    setState('failed');
    return;
  }
  statsTimer = setInterval(tick, 1000);
}

/** Opens a signaling connection and joins the room; false if it cannot. */
async function connect() {
  // Messages and the close of a replaced connection are ignored.
  const s = new Signaling(
    signalingUrl(),
    (msg) => (sig === s ? onSignal(msg) : undefined),
    () => {
      if (sig === s) onSignalClosed();
    },
  );
  sig = s;
  try {
    await s.opened;
  } catch {
    return false;
  }
  s.send({ type: 'join', room: roomName });
  return true;
}

/**
 * Leaves and joins the room again on a new connection, for fresh TURN
 * credentials. Only while no call is up: a member who was waiting becomes
 * the one who joined last.
 */
async function rejoin() {
  if (rejoining) return;
  rejoining = true;
  closePc();
  const old = sig;
  sig = null;
  if (old) old.close();
  setState('joining');
  try {
    if (!(await connect())) {
      ui.notice('Cannot reach the signaling server.');
      setState('failed');
    }
  } finally {
    rejoining = false;
  }
}

function credentialsStale(marginMs) {
  return Date.now() > credentialsExpire - marginMs;
}

/** Once a second: statistics; fresh credentials while waiting alone. */
function tick() {
  if (api.state === 'waiting' && !api.pc && credentialsStale(credentialMargin)) {
    rejoin().catch((e) => console.error('re-join failed:', e));
    return;
  }
  sendStats();
}

async function onSignal(msg) {
  switch (msg.type) {
    case 'joined': {
      const urls = await connector;
      ui.showPrivateMode(!!urls);
      iceServers = applyConnector(msg.iceServers, urls);
      const ttl = Number.isFinite(msg.credentialTtl) ? msg.credentialTtl : 600;
      credentialsExpire = Date.now() + ttl * 1000;
      credentialMargin = Math.min(CREDENTIAL_MARGIN_MS, (ttl * 1000) / 4);
      setState('waiting');
      if (msg.initiator) await startCall(true);
      break;
    }
    case 'peer-joined':
      if (api.state === 'closed') break;
      closePc();
      ui.notice('');
      // Too late to allocate with these credentials: join again (the
      // newcomer sees us leave and come back, and we offer).
      if (credentialsStale(credentialMargin / 4)) {
        await rejoin();
        break;
      }
      await startCall(false);
      break;
    case 'peer-left':
      if (api.state === 'closed') break;
      closePc();
      ui.notice('The other person left. Waiting for someone to join this room.');
      setState('waiting');
      break;
    case 'offer':
      record({ type: 'offer', sdp: msg.sdp });
      if (api.state === 'closed') break;
      if (!api.pc) await startCall(false);
      await api.pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await flushCandidates();
      await api.pc.setLocalDescription(await api.pc.createAnswer());
      sig.send({ type: 'answer', sdp: api.pc.localDescription.sdp });
      break;
    case 'answer':
      record({ type: 'answer', sdp: msg.sdp });
      if (!api.pc) break;
      await api.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      await flushCandidates();
      break;
    case 'candidate':
      record({ type: 'candidate', candidate: msg.candidate ? msg.candidate.candidate : null });
      if (api.pc && api.pc.remoteDescription) await addCandidate(msg.candidate);
      else pendingCandidates.push(msg.candidate);
      break;
    case 'error':
      console.warn(`signaling error ${msg.code}: ${msg.message}`);
      ui.notice(`Server: ${msg.message} (${msg.code})`);
      if (FATAL_ERRORS.has(msg.code)) {
        closePc();
        setState('failed');
      }
      break;
    default:
      console.warn(`signaling: unknown message type ${msg.type}`);
  }
}

function onSignalClosed() {
  if (api.state === 'closed' || api.state === 'failed' || rejoining) return;
  ui.notice('Lost the connection to the signaling server.');
  // Media keeps flowing through the relay; without a call, nothing can start.
  if (api.state !== 'connected') {
    closePc();
    setState('failed');
  }
}

async function addCandidate(c) {
  try {
    // null: the other side has gathered all its candidates.
    await api.pc.addIceCandidate(c || undefined);
  } catch (e) {
    console.warn('addIceCandidate failed:', e.message);
  }
}

async function flushCandidates() {
  const list = pendingCandidates;
  pendingCandidates = [];
  for (const c of list) await addCandidate(c);
}

function createPc() {
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
  api.pc = pc;
  pendingCandidates = [];
  remoteStream = new MediaStream();
  ui.showRemote(remoteStream);
  pc.addEventListener('icecandidate', (e) => {
    if (api.pc !== pc) return;
    const c = e.candidate;
    sig.send({
      type: 'candidate',
      candidate: c && c.candidate ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null,
    });
  });
  pc.addEventListener('track', (e) => {
    if (api.pc !== pc) return;
    remoteStream.addTrack(e.track);
    ui.showRemote(remoteStream);
  });
  const onChange = () => {
    if (api.pc !== pc) return;
    const s = pc.connectionState ?? pc.iceConnectionState;
    if (s === 'connected' || s === 'completed') setState('connected');
    else if (s === 'failed') {
      setState('failed');
      ui.notice('The call could not be connected through the relay.');
    } else if (s !== 'closed') setState('connecting');
  };
  pc.addEventListener('connectionstatechange', onChange);
  pc.addEventListener('iceconnectionstatechange', onChange);
  if (localStream) {
    for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
  }
  return pc;
}

async function startCall(initiator) {
  const pc = createPc();
  setState('connecting');
  if (!initiator) return;
  // Always offer audio and video, so the other side can send what it has
  // even when this side sends less (audio only, receive-only).
  for (const kind of ['audio', 'video']) {
    if (!pc.getTransceivers().some((t) => t.receiver.track.kind === kind)) {
      pc.addTransceiver(kind, { direction: 'recvonly' });
    }
  }
  await pc.setLocalDescription(await pc.createOffer());
  sig.send({ type: 'offer', sdp: pc.localDescription.sdp });
}

function closePc() {
  const pc = api.pc;
  api.pc = null;
  pendingCandidates = [];
  sampler = new StatsSampler();
  if (pc) pc.close();
  if (remoteStream) for (const t of remoteStream.getTracks()) remoteStream.removeTrack(t);
  ui.showFigures(null);
}

async function sendStats() {
  const pc = api.pc;
  if (!pc) return;
  let summary;
  try {
    summary = await sampler.sample(pc, api.state);
  } catch (e) {
    console.warn('getStats failed:', e.message);
    return;
  }
  if (api.pc !== pc) return;
  api.stats = summary;
  ui.showFigures(summary);
  if (sig && sig.isOpen) sig.send({ type: 'stats', stats: summary });
}

function hangUp() {
  if (sig && sig.isOpen) sig.send({ type: 'bye' });
  clearInterval(statsTimer);
  closePc();
  if (localStream) for (const t of localStream.getTracks()) t.stop();
  if (sig) sig.close();
  setState('closed');
  ui.notice('');
  ui.showEnded();
}

function toggleMute() {
  muted = !muted;
  for (const t of localStream?.getAudioTracks() ?? []) t.enabled = !muted;
  ui.showMuted(muted);
}

function toggleCamera() {
  cameraOff = !cameraOff;
  for (const t of localStream?.getVideoTracks() ?? []) t.enabled = !cameraOff;
  ui.showCameraOff(cameraOff);
}

function main() {
  ui.init({
    onJoin: (room, audioOnly) => {
      const params = new URLSearchParams({ room });
      if (audioOnly) params.set('audio', 'only');
      location.assign(`?${params}`);
    },
    onHangup: hangUp,
    onMute: toggleMute,
    onCamera: toggleCamera,
    onRejoin: () => location.reload(),
  });
  ui.showState(api.state);
  connector.then((urls) => ui.showPrivateMode(!!urls));
  setupEchoButton(api, connector);
  const params = new URLSearchParams(location.search);
  const room = params.get('room');
  const audioOnly = params.get('audio') === 'only';
  if (room !== null && ROOM_RE.test(room)) {
    join(room, audioOnly).catch((e) => {
      console.error(e);
      ui.notice(`Cannot start the call: ${e.message}`);
      setState('failed');
    });
    return;
  }
  if (room !== null) ui.notice('That room name is not valid: a room name is 1 to 64 letters, digits, "-" or "_".');
  ui.showJoinForm(suggestRoom(), audioOnly);
}

main();

// OnionRTC web app: a call of up to `max_room_size` people (default 6) in a
// full mesh — one relay-only RTCPeerConnection per other member, media
// end-to-end DTLS-SRTP through our relay. The protocol is docs/signaling.md
// (protocol 2); the page is documented in docs/serve.md.
//
// Flow: load → pre-join screen (camera preview, microphone meter, devices,
// name) or, with ?room=NAME, straight in → WebSocket `join` → `joined`
// (memberId, members) → we offer to every member already there; members
// who arrive later offer to us → trickled candidates → connected. Chat,
// names and mute/camera/screen state go over each pair's data channel,
// never through the server. TURN credentials are renewed with `refresh`.
//
// `window.onionrtc` (for automation):
//   state     new | joining | waiting | connecting | connected | failed | closed
//             (`connected` while at least one peer connection is)
//   pc        the first peer's RTCPeerConnection, or null
//   stats     the first peer's latest per-second summary
//   peers     {memberId: {state, pc, stats, name, muted, cameraOff, sharing, quality}}
//   memberId  ours, once joined
//   chat      chat lines shown: [{from, name, text, mine}] (at most 200)
//   timing    {join: performance.now() at Join, firstAudio: {memberId: ms after Join}}
//   credentialsRenewed  how many `credentials` answers were applied
//   refreshCredentials()  sends `refresh` now (the page does it at 3/4 of the TTL)
//   restartIce(memberId)  an ICE restart with that member now (tests)
//   hop       circuit hopping: {enabled, events, restarts, last}. With the
//             connector, its `/connector/events` stream says when a TURN
//             flow's Tor circuit degraded; the page then restarts ICE with
//             every member, so new TURN flows get fresh circuits (docs/
//             connector.md "Circuit racing and hopping"). Without it too,
//             ICE is restarted after DISCONNECTED_RESTART_MS of
//             `iceConnectionState` `disconnected`. `enabled = false` turns
//             both off (tests' negative control).
//   received  debug record of what the server forwarded to this page:
//             {type: 'offer'|'answer', sdp, from} and {type: 'candidate',
//             candidate, from} (the candidate line, or null); at most
//             MAX_RECEIVED entries, oldest dropped.

import { Signaling, signalingUrl } from './signaling.js';
import { quality } from './stats.js';
import { Peer } from './peer.js';
import * as media from './media.js';
import * as ui from './ui.js';
import { setupEchoButton } from './echo.js';

const MAX_RECEIVED = 2000;
const MAX_CHAT = 200;
const MAX_CHAT_TEXT = 2000;
const MAX_NAME = 40;
const MAX_ICE_RESTARTS = 3;
const RESTART_FALLBACK_MS = 5000;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const NAME_KEY = 'onionrtc-name';
/** Errors after which this page cannot take part in the call. */
const RELAY_UNREACHABLE =
  'Cannot reach the relay server: no relay address could be allocated. Calls here go only through the relay; check your network or firewall.';
const FATAL_ERRORS = new Set(['bad-room', 'room-full', 'too-many-joins', 'server-full', 'already-joined']);
const FATAL_TEXT = {
  'room-full': 'This room is full: it already has as many people as the server allows. Try again later, or use another room.',
  'too-many-joins': 'Too many joins from your network in the last minute. Wait a minute and try again.',
  'server-full': 'The server has too many calls right now. Try again later.',
  'server-unavailable': 'The server cannot start calls at the moment. Try again in a minute.',
  'bad-room': 'That room name is not valid: a room name is 1 to 64 letters, digits, "-" or "_".',
};
const CONNECTOR_TIMEOUT_MS = 3000;
/** `iceConnectionState` `disconnected` this long: restart ICE ourselves. */
const DISCONNECTED_RESTART_MS = 2000;
/**
 * At most one hop (ICE restart for a degraded circuit) per peer this often:
 * the events of one fault (several flows, several peers) arrive together.
 */
const HOP_MIN_INTERVAL_MS = 1000;

const api = {
  state: 'new',
  pc: null,
  stats: null,
  peers: {},
  memberId: null,
  chat: [],
  timing: { join: null, firstAudio: {} },
  credentialsRenewed: 0,
  received: [],
  hop: { enabled: true, events: 0, restarts: 0, last: null },
};
window.onionrtc = api;

/** Asks the server for new TURN credentials now (as the timer does). */
api.refreshCredentials = () => sig?.send({ type: 'refresh' });

/**
 * Restarts ICE with member `id` now, whichever end of the pair this is (the
 * app does it by itself only on the offerer's side, after a failure): for
 * tests of renegotiation and of offers that cross (perfect negotiation).
 */
api.restartIce = (id) => {
  const p = api.peers[id];
  if (!p) return Promise.reject(new Error(`no peer ${id}`));
  return p.offer({ iceRestart: true });
};

let sig = null;
let roomName = null;
let myName = 'Guest';
let iceServers = [];
let connectorUrls = null;
// Private mode: the site's public origin (the page itself is on loopback).
let connectorSite = null;
let localStream = null;
let cameraTrack = null;
let screenTrack = null;
let muted = false;
let cameraOff = false;
let statsTimer = null;
let refreshTimer = null;
let speakerTimer = null;
let relayNoticeShown = false;
let previewMeter = null;
let previewTimer = null;
const meters = new Map(); // memberId | 'local' → LevelMeter

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
    if (typeof body?.site === 'string' && /^https?:\/\/[^/\s?#@]+$/.test(body.site)) {
      connectorSite = body.site;
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

/**
 * The link to share: the room is in the fragment, which browsers never send
 * to the server (nor to a proxy's access log); it opens the pre-join screen.
 * In private mode the page is on the connector's loopback address, which
 * nobody else can open: the link names the site's public origin instead.
 * `here` gives this page's own address (for the history entry).
 */
function roomLink(room, here = false) {
  const origin = here ? location.origin : (connectorSite ?? location.origin);
  return `${origin}${location.pathname}#room=${encodeURIComponent(room)}`;
}

/** Control, zero-width and bidi-override characters: never shown. */
// eslint-disable-next-line no-control-regex
const HIDDEN_CHARS = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;

/** Text from another member as we show it: without hidden characters, trimmed, bounded. */
function cleanText(v, max) {
  if (typeof v !== 'string' || v.length > max * 4) return null;
  const s = v.replace(HIDDEN_CHARS, '').trim().slice(0, max);
  return s || null;
}

/** A display name as we show it. */
function cleanName(v) {
  return cleanText(v, MAX_NAME);
}

function savedName() {
  try {
    return cleanName(localStorage.getItem(NAME_KEY)) || '';
  } catch {
    return '';
  }
}

function saveName(name) {
  try {
    if (name) localStorage.setItem(NAME_KEY, name);
    else localStorage.removeItem(NAME_KEY);
  } catch {
    // storage disabled: the name lasts for this page only
  }
}

// ---- pre-join screen ----

async function startPreview() {
  stopPreview();
  const choice = ui.deviceChoice();
  const { stream, error } = await media.getUserMedia(choice, !choice.audioOnly);
  if (api.state !== 'new') {
    // Joined meanwhile: the call has its own stream.
    for (const t of stream?.getTracks() ?? []) t.stop();
    return;
  }
  ui.notice(error || '');
  localStream = stream;
  ui.showPreview(stream);
  const audio = stream?.getAudioTracks()[0];
  if (audio) {
    previewMeter = new media.LevelMeter(audio);
    previewTimer = setInterval(() => ui.showMicLevel(previewMeter.level()), 100);
  }
  try {
    ui.showDevices(await media.listDevices(), media.canChooseSpeaker);
  } catch (e) {
    console.warn('enumerateDevices:', e.message);
  }
}

function stopPreview() {
  clearInterval(previewTimer);
  previewMeter?.disconnect();
  previewMeter = null;
  if (localStream) for (const t of localStream.getTracks()) t.stop();
  localStream = null;
}

// ---- joining ----

async function join(o) {
  api.timing.join = performance.now();
  roomName = o.room;
  myName = cleanName(o.name) || 'Guest';
  saveName(cleanName(o.name));
  clearInterval(previewTimer);
  previewMeter?.disconnect();
  previewMeter = null;
  ui.showCall(o.room, roomLink(o.room));
  history.replaceState(null, '', roomLink(o.room, true));
  setState('joining');
  if (!localStream || (o.audioOnly && localStream.getVideoTracks().length)) {
    if (localStream) for (const t of localStream.getTracks()) t.stop();
    const r = await media.getUserMedia({ mic: '', cam: '' }, !o.audioOnly);
    localStream = r.stream;
    if (r.error) ui.notice(r.error);
  }
  cameraTrack = localStream?.getVideoTracks()[0] || null;
  muted = !!o.muted;
  cameraOff = !!o.cameraOff && !!cameraTrack;
  for (const t of localStream?.getAudioTracks() ?? []) t.enabled = !muted;
  if (cameraTrack) cameraTrack.enabled = !cameraOff;
  ui.showLocal(localStream, myName);
  ui.showMuted(muted);
  ui.showCameraOff(cameraOff);
  showLocalFlags();
  const audio = localStream?.getAudioTracks()[0];
  if (audio) meters.set('local', new media.LevelMeter(audio));
  if (!(await connect())) {
    ui.notice('Cannot reach the signaling server. Check your connection and reload the page.');
    setState('failed');
    return;
  }
  statsTimer = setInterval(tick, 1000);
  speakerTimer = setInterval(showSpeaker, 250);
}

/** Opens the signaling connection and joins the room; false if it cannot. */
async function connect() {
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

/** What we send: the microphone, and the screen or the camera. */
function localTracks() {
  return {
    audio: localStream?.getAudioTracks()[0] || null,
    video: screenTrack || cameraTrack,
    stream: localStream,
  };
}

function scheduleRefresh(ttlSeconds) {
  clearTimeout(refreshTimer);
  // Renew at 3/4 of the lifetime: allocations made later (an ICE restart,
  // a newcomer) then still have valid credentials.
  refreshTimer = setTimeout(() => sig?.send({ type: 'refresh' }), ttlSeconds * 750);
}

function setIceServers(msg) {
  iceServers = applyConnector(msg.iceServers, connectorUrls);
  const ttl = Number.isFinite(msg.credentialTtl) && msg.credentialTtl > 0 ? msg.credentialTtl : 600;
  scheduleRefresh(ttl);
}

function addPeer(id, polite) {
  if (api.peers[id]) closePeer(id);
  const peer = new Peer(id, {
    polite,
    iceServers,
    local: localTracks,
    signal: (msg) => sig?.send({ ...msg, to: id }),
    on: {
      state: onPeerState,
      track: onPeerTrack,
      data: onPeerData,
      open: (p) => {
        p.send(hello());
        ui.enableChat(true);
      },
      gathered: (p, relays) => {
        if (relays === 0 && p.state !== 'connected' && !relayNoticeShown) {
          relayNoticeShown = true;
          ui.notice(RELAY_UNREACHABLE);
        }
      },
    },
  });
  api.peers[id] = peer;
  ui.showPeer(peer);
  updateState();
  return peer;
}

function closePeer(id) {
  const p = api.peers[id];
  if (!p) return;
  delete api.peers[id];
  p.close();
  meters.get(id)?.disconnect();
  meters.delete(id);
  ui.removePeer(id);
  ui.enableChat(Object.values(api.peers).some((q) => q.dc.readyState === 'open'));
  updateState();
}

function firstPeer() {
  return Object.values(api.peers)[0] || null;
}

/** The page's state: `connected` while at least one peer is. */
function updateState() {
  const first = firstPeer();
  api.pc = first ? first.pc : null;
  if (!first) api.stats = null;
  if (['closed', 'failed', 'new', 'joining'].includes(api.state) && !first) return;
  if (api.state === 'closed') return;
  const peers = Object.values(api.peers);
  if (peers.some((p) => p.state === 'connected')) setState('connected');
  else if (peers.length) setState('connecting');
  else setState('waiting');
}

/**
 * An ICE restart with `p` now, because its path degraded (`why`: the
 * connector's reason, or `disconnected`): whichever end of the pair this
 * is; crossing offers are settled by perfect negotiation (peer.js).
 */
function hop(p, why) {
  if (!api.hop.enabled || api.peers[p.id] !== p || p.closed) return;
  const now = performance.now();
  if (p.lastHop !== undefined && now - p.lastHop < HOP_MIN_INTERVAL_MS) return;
  p.lastHop = now;
  api.hop.restarts += 1;
  api.hop.last = { why, at: Math.round(now) };
  p.offer({ iceRestart: true }).catch((e) => console.warn('ICE restart:', e.message));
}

/**
 * Private mode: the connector's event stream. A `degraded` event names a
 * TURN flow whose Tor circuit stalled, slowed down or broke; which peer it
 * carries is not known here, so every peer restarts ICE (new TURN flows,
 * new circuits). EventSource reconnects by itself.
 */
function watchCircuits() {
  if (typeof EventSource !== 'function') return;
  const events = new EventSource('/connector/events');
  events.addEventListener('degraded', (e) => {
    api.hop.events += 1;
    let why = 'degraded';
    try {
      const data = JSON.parse(e.data);
      if (typeof data?.reason === 'string') why = data.reason.slice(0, 20);
    } catch {
      // keep the generic reason
    }
    for (const p of Object.values(api.peers)) hop(p, why);
  });
}

function onPeerState(p) {
  ui.showPeer(p);
  updateState();
  clearTimeout(p.disconnectTimer);
  if (p.pc.iceConnectionState === 'disconnected') {
    p.disconnectTimer = setTimeout(() => {
      if (p.pc.iceConnectionState === 'disconnected') hop(p, 'disconnected');
    }, DISCONNECTED_RESTART_MS);
  }
  if (p.state === 'failed') restartIce(p);
  if (p.state === 'connected') {
    p.restarts = 0;
    if (relayNoticeShown) {
      relayNoticeShown = false;
      ui.notice('');
    }
  }
}

/**
 * ICE restart after a failure, offered by the pair's offerer; the other end
 * offers one too if nothing happened within RESTART_FALLBACK_MS (a client
 * that does not restart, or one whose signaling went away). Crossing
 * offers are settled by perfect negotiation (peer.js).
 */
function restartIce(p) {
  if (!p.offerer) {
    setTimeout(() => {
      if (api.peers[p.id] === p && p.state === 'failed') {
        p.offerer = true;
        restartIce(p);
      }
    }, RESTART_FALLBACK_MS);
    return;
  }
  if (p.restarts >= MAX_ICE_RESTARTS) {
    ui.notice(`The connection to ${p.name || 'a member'} failed and could not be restored through the relay.`);
    return;
  }
  p.restarts += 1;
  ui.notice(`The connection to ${p.name || 'a member'} was lost: reconnecting…`);
  sig?.send({ type: 'refresh' });
  // The offer goes after the new credentials have been applied (`credentials`
  // handled in order before this timer's turn is likely); a short delay keeps
  // it simple and bounded.
  setTimeout(() => {
    if (api.peers[p.id] === p) p.offer({ iceRestart: true }).catch((e) => console.warn('ICE restart:', e.message));
  }, 500);
}

function onPeerTrack(p, track) {
  ui.showPeer(p);
  if (track.kind !== 'audio') return;
  meters.get(p.id)?.disconnect();
  meters.set(p.id, new media.LevelMeter(track));
  const first = () => {
    if (api.timing.join !== null && !(p.id in api.timing.firstAudio)) {
      api.timing.firstAudio[p.id] = Math.round(performance.now() - api.timing.join);
    }
  };
  if (!track.muted) first();
  else track.addEventListener('unmute', first, { once: true });
}

/** Whether the others see no video of us (camera off, or no camera at all). */
function noVideo() {
  return !screenTrack && (cameraOff || !cameraTrack);
}

function hello() {
  return { t: 'hello', name: myName, muted, cameraOff: noVideo(), sharing: !!screenTrack };
}

function broadcast(msg) {
  let sent = 0;
  for (const p of Object.values(api.peers)) if (p.send(msg)) sent += 1;
  return sent;
}

function addChatLine(from, name, text, mine) {
  api.chat.push({ from, name, text, mine });
  if (api.chat.length > MAX_CHAT) api.chat.shift();
  ui.addChat(name, text, mine);
}

/** A data-channel message from member `p`: every field checked. */
function onPeerData(p, m) {
  switch (m.t) {
    case 'hello':
    case 'state':
      if (m.t === 'hello') p.name = cleanName(m.name) || p.name;
      p.muted = m.muted === true;
      p.cameraOff = m.cameraOff === true;
      p.sharing = m.sharing === true;
      ui.showPeer(p);
      break;
    case 'chat': {
      if (typeof m.text !== 'string' || m.text.length > MAX_CHAT_TEXT) return;
      const text = cleanText(m.text, MAX_CHAT_TEXT);
      if (text) addChatLine(p.id, p.name || 'Guest', text, false);
      break;
    }
    default:
      // Newer versions may send more; ignored.
  }
}

function sendChat(text) {
  const t = text.slice(0, MAX_CHAT_TEXT);
  if (broadcast({ t: 'chat', text: t }) === 0) {
    ui.notice('Nobody is connected to receive the message yet.');
    return false;
  }
  addChatLine(api.memberId, myName, t, true);
  return true;
}

function showLocalFlags() {
  ui.showLocalFlags({ name: myName, muted, cameraOff: noVideo(), sharing: !!screenTrack });
}

function announceState() {
  showLocalFlags();
  broadcast({ t: 'state', muted, cameraOff: noVideo(), sharing: !!screenTrack });
}

async function onSignal(msg) {
  switch (msg.type) {
    case 'joined': {
      connectorUrls = await connector;
      ui.showPrivateMode(!!connectorUrls);
      if (connectorSite) ui.showCall(roomName, roomLink(roomName));
      setIceServers(msg);
      api.memberId = typeof msg.memberId === 'string' ? msg.memberId : null;
      setState('waiting');
      const members = Array.isArray(msg.members) ? msg.members.filter((m) => typeof m === 'string') : [];
      // We joined last: we offer to everyone already here.
      for (const id of members) {
        const p = addPeer(id, false);
        await p.offer();
      }
      updateState();
      break;
    }
    case 'credentials':
      setIceServers(msg);
      api.credentialsRenewed += 1;
      for (const p of Object.values(api.peers)) {
        try {
          p.pc.setConfiguration({ iceServers, iceTransportPolicy: 'relay' });
        } catch (e) {
          console.warn('setConfiguration:', e.message);
        }
      }
      break;
    case 'peer-joined':
      if (api.state === 'closed' || typeof msg.memberId !== 'string') break;
      // The newcomer offers; we wait for it, politely.
      addPeer(msg.memberId, true);
      ui.notice('');
      break;
    case 'peer-left':
      if (typeof msg.memberId !== 'string') break;
      closePeer(msg.memberId);
      if (!firstPeer() && api.state !== 'closed') ui.notice('Everybody else left. Waiting for someone to join this room.');
      break;
    case 'offer':
    case 'answer': {
      record({ type: msg.type, sdp: msg.sdp, from: msg.from });
      if (api.state === 'closed' || typeof msg.from !== 'string' || typeof msg.sdp !== 'string') break;
      const p = api.peers[msg.from] || (msg.type === 'offer' ? addPeer(msg.from, true) : null);
      if (p) await p.onDescription(msg.type, msg.sdp);
      break;
    }
    case 'candidate': {
      record({ type: 'candidate', candidate: msg.candidate ? msg.candidate.candidate : null, from: msg.from });
      const p = api.peers[msg.from];
      if (p) await p.onCandidate(msg.candidate);
      break;
    }
    case 'error':
      if (msg.code === 'no-such-member') {
        // A message for a member who has just left: harmless.
        console.warn('signaling: a message for a member who left was not delivered');
        break;
      }
      console.warn(`signaling error ${msg.code}: ${msg.message}`);
      // server-unavailable: refused before joining is fatal; in a call
      // (one message not delivered) the call goes on.
      if (FATAL_ERRORS.has(msg.code) || (msg.code === 'server-unavailable' && !api.memberId)) {
        ui.notice(FATAL_TEXT[msg.code] || `Server: ${msg.message} (${msg.code})`);
        leaveCall('failed');
      } else {
        ui.notice(`Server: ${msg.message} (${msg.code})`);
      }
      break;
    default:
      console.warn(`signaling: unknown message type ${msg.type}`);
  }
}

function onSignalClosed() {
  if (api.state === 'closed' || api.state === 'failed') return;
  if (api.state === 'connected') {
    ui.notice('Lost the connection to the server: the call goes on, but nobody new can join and a lost connection cannot be restored. Reload the page to reconnect.');
    return;
  }
  ui.notice('Lost the connection to the server. Reload the page to try again.');
  leaveCall('failed');
}

/** Once a second: statistics of every peer; the first one's to the server. */
async function tick() {
  const first = firstPeer();
  for (const p of Object.values(api.peers)) {
    try {
      await p.sample();
    } catch (e) {
      console.warn('getStats:', e.message);
      continue;
    }
    p.quality = quality(p.stats);
    ui.showPeer(p);
  }
  if (first && api.peers[first.id] === first && first.stats) {
    api.stats = first.stats;
    ui.showFigures(first.stats);
    if (sig && sig.isOpen) sig.send({ type: 'stats', stats: first.stats });
  }
}

/** The loudest member above the speaking level, computed here. */
function showSpeaker() {
  let best = null;
  let loudest = media.SPEAKING_LEVEL;
  for (const [id, m] of meters) {
    if (id === 'local' && muted) continue;
    const level = m.level();
    if (level > loudest) {
      loudest = level;
      best = id;
    }
  }
  ui.showSpeaker(best);
}

function leaveCall(state) {
  clearInterval(statsTimer);
  clearInterval(speakerTimer);
  clearTimeout(refreshTimer);
  for (const id of Object.keys(api.peers)) closePeer(id);
  for (const m of meters.values()) m.disconnect();
  meters.clear();
  api.pc = null;
  setState(state);
}

function hangUp() {
  if (sig && sig.isOpen) sig.send({ type: 'bye' });
  leaveCall('closed');
  if (screenTrack) screenTrack.stop();
  screenTrack = null;
  if (localStream) for (const t of localStream.getTracks()) t.stop();
  if (sig) sig.close();
  ui.notice('');
  ui.showFigures(null);
  ui.showEnded();
}

function toggleMute() {
  muted = !muted;
  for (const t of localStream?.getAudioTracks() ?? []) t.enabled = !muted;
  ui.showMuted(muted);
  announceState();
}

function toggleCamera() {
  cameraOff = !cameraOff;
  if (cameraTrack) cameraTrack.enabled = !cameraOff;
  ui.showCameraOff(cameraOff);
  announceState();
}

async function toggleShare() {
  if (screenTrack) {
    stopSharing();
    return;
  }
  if (connectorUrls && !window.confirm('Private mode: a shared screen may show who you are (names, e-mail, open files, notifications). Share anyway?')) {
    return;
  }
  let track;
  try {
    track = await media.getScreen();
  } catch (e) {
    if (e?.name !== 'NotAllowedError') ui.notice(media.mediaErrorText(e, 'screen'));
    return;
  }
  screenTrack = track;
  track.addEventListener('ended', stopSharing, { once: true });
  await Promise.all(Object.values(api.peers).map((p) => p.setTrack('video', track).catch((e) => console.warn('share:', e.message))));
  ui.showLocalVideo(track);
  ui.showSharing(true);
  announceState();
}

function stopSharing() {
  const track = screenTrack;
  if (!track) return;
  screenTrack = null;
  track.stop();
  for (const p of Object.values(api.peers)) p.setTrack('video', cameraTrack).catch((e) => console.warn('share:', e.message));
  ui.showLocalVideo(cameraTrack);
  ui.showSharing(false);
  announceState();
}

async function copyLink() {
  const link = roomLink(roomName);
  try {
    await navigator.clipboard.writeText(link);
    ui.notice('Room link copied. Send it to the people you want in the call.');
  } catch {
    ui.notice(`Copy this link: ${link}`);
  }
}

function main() {
  ui.init({
    onJoin: (o) => {
      join(o).catch((e) => {
        console.error(e);
        ui.notice(`Cannot start the call: ${e.message}`);
        setState('failed');
      });
    },
    onDevice: () => startPreview().catch((e) => console.warn('preview:', e.message)),
    onHangup: hangUp,
    onMute: toggleMute,
    onCamera: toggleCamera,
    onShare: () => toggleShare().catch((e) => ui.notice(`Cannot share the screen: ${e.message}`)),
    onRejoin: () => location.reload(),
    onCopyLink: () => copyLink(),
    onChat: sendChat,
  });
  ui.showState(api.state);
  connector.then((urls) => {
    ui.showPrivateMode(!!urls);
    if (urls) watchCircuits();
  });
  setupEchoButton(api, connector);
  const params = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const room = params.get('room');
  const audioOnly = params.get('audio') === 'only';
  // ?room=NAME joins at once (links of before, automation).
  if (room !== null && ROOM_RE.test(room)) {
    join({ room, name: savedName(), audioOnly, muted: false, cameraOff: false }).catch((e) => {
      console.error(e);
      ui.notice(`Cannot start the call: ${e.message}`);
      setState('failed');
    });
    return;
  }
  if (room !== null) ui.notice('That room name is not valid: a room name is 1 to 64 letters, digits, "-" or "_".');
  const linked = fragment.get('room');
  ui.showJoinForm({
    room: linked !== null && ROOM_RE.test(linked) ? linked : suggestRoom(),
    name: savedName(),
    audioOnly,
  });
  startPreview().catch((e) => console.warn('preview:', e.message));
}

main();

// The page's DOM: nothing here talks to the network. Everything another
// member sends (names, chat) is written with textContent, never as HTML.

import { lossPercent } from './stats.js';

const $ = (id) => document.getElementById(id);

const STATE_TEXT = {
  new: 'new',
  joining: 'joining the room…',
  waiting: 'waiting for others to join',
  connecting: 'connecting…',
  connected: 'connected',
  failed: 'failed',
  closed: 'call ended',
};

const PEER_STATE_TEXT = {
  connecting: 'connecting…',
  connected: '',
  reconnecting: 'connection lost, reconnecting…',
  failed: 'connection failed',
  closed: 'left',
};

const QUALITY_TEXT = { good: 'good connection', usable: 'usable connection', poor: 'poor connection' };

/** Wires the forms and buttons to the app's handlers. */
export function init(h) {
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('room');
    if (!input.checkValidity()) {
      notice('A room name is 1 to 64 letters, digits, "-" or "_".');
      input.focus();
      return;
    }
    h.onJoin({
      room: input.value,
      name: $('name').value,
      muted: $('start-muted').checked,
      cameraOff: $('camera-off').checked,
      audioOnly: $('audio-only').checked,
    });
  });
  for (const id of ['mic', 'cam']) $(id).addEventListener('change', () => h.onDevice());
  $('audio-only').addEventListener('change', () => h.onDevice());
  $('speaker').addEventListener('change', () => setSpeaker($('speaker').value));
  $('mute').addEventListener('click', () => h.onMute());
  $('camera').addEventListener('click', () => h.onCamera());
  $('share').addEventListener('click', () => h.onShare());
  $('hangup').addEventListener('click', () => h.onHangup());
  $('rejoin').addEventListener('click', () => h.onRejoin());
  $('copy-link').addEventListener('click', () => h.onCopyLink());
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('chat-input').value.trim();
    if (!text) return;
    if (h.onChat(text)) $('chat-input').value = '';
  });
}

export function showState(state) {
  $('state').textContent = STATE_TEXT[state] || state;
  $('state').dataset.state = state;
}

/** A message for the user (replaces the previous one); empty hides it. */
export function notice(text) {
  const el = $('notice');
  el.textContent = text || '';
  el.hidden = !text;
}

export function showPrivateMode(on) {
  $('mode').hidden = !on;
}

export function showJoinForm(o) {
  $('call').hidden = true;
  $('join').hidden = false;
  $('room').value = o.room;
  $('name').value = o.name;
  $('audio-only').checked = o.audioOnly;
  $('join-button').focus();
}

/** The pre-join choices as they are now. */
export function deviceChoice() {
  return { mic: $('mic').value, cam: $('cam').value, audioOnly: $('audio-only').checked };
}

/** Fills the device lists, keeping the current choice where it still exists. */
export function showDevices(devices, canChooseSpeaker) {
  const fill = (id, list, none) => {
    const sel = $(id);
    const keep = sel.value;
    sel.replaceChildren();
    const def = document.createElement('option');
    def.value = '';
    def.textContent = list.length ? 'Default' : none;
    sel.append(def);
    for (const d of list) {
      if (!d.id || d.id === 'default') continue;
      const o = document.createElement('option');
      o.value = d.id;
      o.textContent = d.label;
      sel.append(o);
    }
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  };
  fill('mic', devices.mics, 'No microphone found');
  fill('cam', devices.cams, 'No camera found');
  fill('speaker', devices.speakers, 'Default');
  $('speaker-choice').hidden = !canChooseSpeaker;
}

export function showPreview(stream) {
  $('preview').srcObject = stream;
}

export function showMicLevel(level) {
  $('mic-meter').value = level;
}

export function showRoomSize(n) {
  $('room-size').textContent = String(n);
}

let sinkId = '';

function setSpeaker(id) {
  sinkId = id;
  for (const v of document.querySelectorAll('#grid video:not(#local-video)')) applySink(v);
}

function applySink(video) {
  if (!sinkId || typeof video.setSinkId !== 'function') return;
  video.setSinkId(sinkId).catch((e) => notice(`Cannot use that speaker (${e.name}).`));
}

export function showCall(room, link) {
  $('join').hidden = true;
  $('call').hidden = false;
  $('room-name').textContent = room;
  $('room-link').textContent = link;
  $('room-link').href = link;
}

export function showLocal(stream, name) {
  $('local-video').srcObject = stream;
  const has = (kind) => !!stream && stream.getTracks().some((t) => t.kind === kind);
  $('mute').disabled = !has('audio');
  $('camera').disabled = !has('video');
  $('share').disabled = !navigator.mediaDevices?.getDisplayMedia;
  $('local-caption').textContent = !stream
    ? `${name} (you, not sending: receive-only)`
    : has('video') ? `${name} (you)` : `${name} (you, audio only)`;
}

export function showLocalVideo(track) {
  const v = $('local-video');
  v.srcObject = track ? new MediaStream([track]) : null;
}

/** The tile of member `id`, created on first use. */
function tile(id) {
  let li = document.querySelector(`#grid li[data-member="${CSS.escape(id)}"]`);
  if (li) return li;
  li = document.createElement('li');
  li.className = 'tile';
  li.dataset.member = id;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  applySink(video);
  const caption = document.createElement('p');
  caption.className = 'caption';
  const name = document.createElement('span');
  name.className = 'name';
  const flags = document.createElement('span');
  flags.className = 'flags';
  const quality = document.createElement('span');
  quality.className = 'quality';
  const status = document.createElement('span');
  status.className = 'status';
  caption.append(name, flags, quality, status);
  li.append(video, caption);
  $('grid').append(li);
  return li;
}

/** Shows member `p` (a Peer): name, stream, state, flags, quality. */
export function showPeer(p) {
  const li = tile(p.id);
  const video = li.querySelector('video');
  if (video.srcObject !== p.stream) video.srcObject = p.stream;
  const name = p.name || 'Guest';
  video.setAttribute('aria-label', `${name}'s video`);
  li.querySelector('.name').textContent = name;
  li.querySelector('.status').textContent = PEER_STATE_TEXT[p.state] ?? '';
  li.dataset.state = p.state;
  li.classList.toggle('sharing', !!p.sharing);
  showFlags(li, p);
  const q = li.querySelector('.quality');
  q.dataset.quality = p.quality || '';
  q.textContent = p.quality ? QUALITY_TEXT[p.quality] : '';
  q.title = p.stats && p.stats.rtt !== null ? `round trip ${Math.round(p.stats.rtt * 1000)} ms, loss ${(lossPercent(p.stats) ?? 0).toFixed(1)} %` : '';
  const n = document.querySelectorAll('#grid li').length;
  $('grid').dataset.count = String(n);
  $('people').textContent = n === 1 ? 'Only you so far' : `${n} people`;
}

function showFlags(li, s) {
  li.classList.toggle('camera-off', !!s.cameraOff && !s.sharing);
  li.dataset.initial = Array.from(s.name || 'Guest')[0].toUpperCase();
  const flags = li.querySelector('.flags');
  const parts = [];
  if (s.muted) parts.push('muted');
  if (s.cameraOff) parts.push('no video');
  if (s.sharing) parts.push('sharing screen');
  flags.textContent = parts.length ? `(${parts.join(', ')})` : '';
}

export function showLocalFlags(s) {
  showFlags($('local-tile'), s);
  $('local-tile').classList.toggle('sharing', !!s.sharing);
}

export function removePeer(id) {
  document.querySelector(`#grid li[data-member="${CSS.escape(id)}"]`)?.remove();
  const n = document.querySelectorAll('#grid li').length;
  $('grid').dataset.count = String(n);
  $('people').textContent = n === 1 ? 'Only you so far' : `${n} people`;
}

/** Highlights the member speaking the loudest (id, 'local' or null). */
export function showSpeaker(id) {
  for (const li of document.querySelectorAll('#grid li')) li.classList.toggle('speaking', li.dataset.member === id);
}

export function enableChat(on) {
  $('chat-input').disabled = !on;
  $('chat-send').disabled = !on;
}

const MAX_CHAT_LINES = 200;

/** One chat line: `who` and `text` are shown as text, never as HTML. */
export function addChat(who, text, mine) {
  const log = $('chat-log');
  const li = document.createElement('li');
  if (mine) li.className = 'mine';
  const b = document.createElement('b');
  b.textContent = who;
  const span = document.createElement('span');
  span.textContent = text;
  li.append(b, ': ', span);
  log.append(li);
  while (log.children.length > MAX_CHAT_LINES) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

/** Reflects whether the microphone is muted / the camera off / the screen shared. */
export function showMuted(muted) {
  $('mute').setAttribute('aria-pressed', String(muted));
  $('mute').textContent = muted ? 'Unmute microphone' : 'Mute microphone';
}

export function showCameraOff(off) {
  $('camera').setAttribute('aria-pressed', String(off));
  $('camera').textContent = off ? 'Turn camera on' : 'Turn camera off';
}

export function showSharing(on) {
  $('share').setAttribute('aria-pressed', String(on));
  $('share').textContent = on ? 'Stop sharing' : 'Share screen';
}

export function showEnded() {
  $('hangup').hidden = true;
  $('rejoin').hidden = false;
  for (const id of ['mute', 'camera', 'share']) $(id).disabled = true;
  enableChat(false);
  for (const li of document.querySelectorAll('#grid li:not(#local-tile)')) li.remove();
  $('rejoin').focus();
}

const fmt = (v, digits, unit) => (v === null || v === undefined ? '–' : `${v.toFixed(digits)} ${unit}`);

/** Shows one summary (or clears the figures for null). */
export function showFigures(s) {
  if (!s) {
    for (const id of ['f-rtt', 'f-jitter', 'f-loss', 'f-in', 'f-out', 'f-proto']) $(id).textContent = '–';
    return;
  }
  $('f-rtt').textContent = fmt(s.rtt === null ? null : s.rtt * 1000, 0, 'ms');
  $('f-jitter').textContent = fmt(s.jitter === null ? null : s.jitter * 1000, 1, 'ms');
  $('f-loss').textContent = fmt(lossPercent(s), 1, '%');
  $('f-in').textContent = fmt(s.bitrateIn === null ? null : s.bitrateIn / 1000, 0, 'kbit/s');
  $('f-out').textContent = fmt(s.bitrateOut === null ? null : s.bitrateOut / 1000, 0, 'kbit/s');
  $('f-proto').textContent = s.relayProtocol || '–';
}

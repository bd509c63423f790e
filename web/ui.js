// The page's DOM: nothing here talks to the network.

import { lossPercent } from './stats.js';

const $ = (id) => document.getElementById(id);

const STATE_TEXT = {
  new: 'new',
  joining: 'joining the room…',
  waiting: 'waiting for the other person',
  connecting: 'connecting…',
  connected: 'connected',
  failed: 'failed',
  closed: 'call ended',
};

/** Wires the buttons and the form to the app's handlers. */
export function init(h) {
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('room');
    if (!input.checkValidity()) {
      notice('A room name is 1 to 64 letters, digits, "-" or "_".');
      input.focus();
      return;
    }
    h.onJoin(input.value, $('audio-only').checked);
  });
  $('mute').addEventListener('click', () => h.onMute());
  $('camera').addEventListener('click', () => h.onCamera());
  $('hangup').addEventListener('click', () => h.onHangup());
  $('rejoin').addEventListener('click', () => h.onRejoin());
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

export function showJoinForm(suggestedRoom, audioOnly) {
  $('call').hidden = true;
  $('join').hidden = false;
  $('room').value = suggestedRoom;
  $('audio-only').checked = audioOnly;
  $('join-button').focus();
}

export function showCall(room, link) {
  $('join').hidden = true;
  $('call').hidden = false;
  $('room-name').textContent = room;
  $('room-link').textContent = link;
  $('room-link').href = link;
}

export function showLocal(stream) {
  $('local-video').srcObject = stream;
  const has = (kind) => !!stream && stream.getTracks().some((t) => t.kind === kind);
  $('mute').disabled = !has('audio');
  $('camera').disabled = !has('video');
  $('local-caption').textContent = !stream
    ? 'You (not sending: receive-only)'
    : has('video') ? 'You' : 'You (audio only)';
}

export function showRemote(stream) {
  const v = $('remote-video');
  if (v.srcObject !== stream) v.srcObject = stream;
}

/** Reflects whether the microphone is muted / the camera off. */
export function showMuted(muted) {
  $('mute').setAttribute('aria-pressed', String(muted));
  $('mute').textContent = muted ? 'Unmute microphone' : 'Mute microphone';
}

export function showCameraOff(off) {
  $('camera').setAttribute('aria-pressed', String(off));
  $('camera').textContent = off ? 'Turn camera on' : 'Turn camera off';
}

export function showEnded() {
  $('hangup').hidden = true;
  $('rejoin').hidden = false;
  $('mute').disabled = true;
  $('camera').disabled = true;
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

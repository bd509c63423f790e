// Local media: the camera and microphone (with the chosen devices), the
// screen, and audio levels computed locally with Web Audio — from the
// decoded tracks, never from RTP header extensions (the sanitizer strips the
// audio-level extension, see docs/privacy.md).

/** A human-readable reason for a getUserMedia / getDisplayMedia failure. */
export function mediaErrorText(e, what = 'camera and microphone') {
  switch (e?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `The browser blocked the ${what}. Allow them for this site (the icon left of the address bar) and reload, or join anyway: the others will not see or hear you.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what} found. Check that one is plugged in, or choose another device.`;
    case 'NotReadableError':
    case 'AbortError':
      return `The ${what} is in use by another program, or the system refused it. Close the other program and try again.`;
    default:
      return `Cannot use the ${what} (${e?.name || 'error'}).`;
  }
}

/**
 * The camera and microphone. `choice`: {mic, cam} device ids or '' for the
 * default; `video`: whether to ask for the camera at all. Falls back to the
 * microphone alone, then to nothing. Resolves to {stream, error}.
 */
export async function getUserMedia(choice, video) {
  if (!navigator.mediaDevices?.getUserMedia) {
    return { stream: null, error: 'This page has no access to a camera or microphone here (it needs https or localhost).' };
  }
  const audio = choice.mic ? { deviceId: { exact: choice.mic } } : true;
  const cam = choice.cam ? { deviceId: { exact: choice.cam } } : { width: { ideal: 640 }, height: { ideal: 360 } };
  const attempts = video ? [{ audio, video: cam }, { audio }] : [{ audio }];
  let first = null;
  for (const constraints of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      return { stream, error: first && video ? `No camera: ${mediaErrorText(first, 'camera')}` : null };
    } catch (e) {
      first = first || e;
    }
  }
  return { stream: null, error: mediaErrorText(first) };
}

/** {mics, cams, speakers}: each [{id, label}], labels only after permission. */
export async function listDevices() {
  const out = { mics: [], cams: [], speakers: [] };
  if (!navigator.mediaDevices?.enumerateDevices) return out;
  let n = 0;
  for (const d of await navigator.mediaDevices.enumerateDevices()) {
    n += 1;
    const entry = { id: d.deviceId, label: d.label || `${d.kind} ${n}` };
    if (d.kind === 'audioinput') out.mics.push(entry);
    else if (d.kind === 'videoinput') out.cams.push(entry);
    else if (d.kind === 'audiooutput') out.speakers.push(entry);
  }
  return out;
}

/** Whether the speaker can be chosen (`HTMLMediaElement.setSinkId`). */
export const canChooseSpeaker = typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;

/** The screen (or a window or tab), or throws. */
export async function getScreen() {
  if (!navigator.mediaDevices?.getDisplayMedia) throw new Error('This browser cannot share the screen.');
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
  return stream.getVideoTracks()[0];
}

let context = null;

/** The page's one AudioContext (resumed on the next user gesture if needed). */
export function audioContext() {
  if (!context) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    context = new Ctx();
    const resume = () => context.resume().catch(() => {});
    document.addEventListener('click', resume, { once: true });
    document.addEventListener('keydown', resume, { once: true });
  }
  return context;
}

/** The level (0–1, RMS) of one audio track. */
export class LevelMeter {
  constructor(track) {
    const ctx = audioContext();
    this.analyser = null;
    if (!ctx || !track) return;
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 512;
    this.buf = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    this.smoothed = 0;
  }

  /** The current level, smoothed (fast attack, slow release). */
  level() {
    if (!this.analyser) return 0;
    this.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (const v of this.buf) sum += v * v;
    const rms = Math.sqrt(sum / this.buf.length);
    this.smoothed = rms > this.smoothed ? rms : this.smoothed * 0.8 + rms * 0.2;
    return this.smoothed;
  }

  disconnect() {
    try {
      this.source?.disconnect();
    } catch {
      // already disconnected
    }
    this.analyser = null;
  }
}

/** Above this smoothed level, a member counts as speaking. */
export const SPEAKING_LEVEL = 0.02;

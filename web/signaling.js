// The signaling WebSocket (`/ws`, docs/signaling.md): one JSON object per
// text frame. Messages are handed to `onMessage` one at a time, in order,
// each after the previous one's (possibly async) handling has finished, so
// an offer is applied before the candidates that follow it.

export class Signaling {
  /**
   * @param {string} url ws:// or wss:// URL of /ws
   * @param {(msg: object) => (void|Promise<void>)} onMessage
   * @param {(event: CloseEvent) => void} onClose
   */
  constructor(url, onMessage, onClose) {
    this.ws = new WebSocket(url);
    this.queue = Promise.resolve();
    this.opened = new Promise((resolve, reject) => {
      this.ws.addEventListener('open', () => resolve(), { once: true });
      this.ws.addEventListener('error', () => reject(new Error('WebSocket error')), { once: true });
    });
    this.ws.addEventListener('message', (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        console.warn('signaling: not JSON, ignored');
        return;
      }
      if (msg === null || typeof msg !== 'object' || typeof msg.type !== 'string') {
        console.warn('signaling: no message type, ignored');
        return;
      }
      this.queue = this.queue
        .then(() => onMessage(msg))
        .catch((err) => console.error(`signaling: handling ${msg.type} failed:`, err));
    });
    this.ws.addEventListener('close', (e) => onClose(e));
  }

  /** Whether messages can be sent now. */
  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends one message; dropped (with a warning) when the socket is not open. */
  send(msg) {
    if (!this.isOpen) {
      console.warn(`signaling: not connected, ${msg.type} dropped`);
      return;
    }
    this.ws.send(JSON.stringify(msg));
  }

  close() {
    this.ws.close(1000);
  }
}

/** The /ws URL on this page's own origin. */
export function signalingUrl(loc = window.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

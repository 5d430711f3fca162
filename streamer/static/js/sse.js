// A Server-Sent Events client on fetch(), following the WHATWG event-stream rules:
// the same parsing, `retry:`, `Last-Event-ID` on every reconnect, as EventSource.
// Why not EventSource itself: it delivers only the event names a listener was added for,
// so an event published with ?event=anything would never reach a page that shows all
// events; and it cannot tell "the server dropped me" from "the server is down".
//
// States reported to onState(state, detail):
//   connecting   the first request is on its way
//   connected    the stream is open
//   reconnecting the stream ended or broke; the next attempt waits `retry` ms
//   down         an attempt failed: nothing answers (the server is down or unreachable)
//   failed       the server refused the request (4xx): retrying would not help
//   closed       close() was called

import { problemText } from "./dom.js";

const LINE_END = /\r\n|\r|\n/g;

export class EventStream {
  /**
   * @param {string} url
   * @param {{onEvents: (events: {id: string, event: string, data: string}[]) => void,
   *          onState?: (state: string, detail: string) => void, retry?: number,
   *          lastEventId?: string}} options
   */
  constructor(url, { onEvents, onState = () => {}, retry = 2000, lastEventId = "" }) {
    this.url = url;
    this.onEvents = onEvents;
    this.onState = onState;
    this.retry = retry;
    this.lastEventId = lastEventId;
    this.state = "";
    this._abort = new AbortController();
    this._run();
  }

  close() {
    if (this.state === "closed") return;
    this._abort.abort();
    this._setState("closed", "");
  }

  get closed() {
    return this._abort.signal.aborted;
  }

  _setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }

  async _run() {
    this._setState("connecting", "");
    let quick = false; // the next attempt goes at once: a live stream just broke
    let lastQuick = -Infinity; // at most one such attempt per retry interval
    while (!this.closed) {
      let delay = this.retry;
      try {
        const headers = { Accept: "text/event-stream" };
        if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
        const response = await fetch(this.url, {
          headers,
          cache: "no-store",
          signal: this._abort.signal,
        });
        const type = response.headers.get("Content-Type") || "";
        if (!response.ok || !type.startsWith("text/event-stream")) {
          const detail = await problemText(response);
          if (response.status < 500 && response.status !== 429) {
            this._setState("failed", detail);
            return;
          }
          const after = Number(response.headers.get("Retry-After"));
          if (after > 0) delay = Math.max(delay, after * 1000);
          this._setState("down", detail);
        } else {
          this._setState("connected", "");
          await this._read(response.body);
          if (this.closed) return;
          // an orderly end: the server is going away (a restart); it asked for `retry`
          this._setState("reconnecting", "the server ended the stream");
          if (!(await reachable(this.retry))) this._setState("down", "no answer from the server");
        }
      } catch (error) {
        if (this.closed) return;
        if (this.state === "connected") {
          // Broken mid-stream: the network, or the server cut a reader that fell behind
          // (a burst of log lines). Try again at once, from the last id; if that fails
          // too, the server is down and the retry interval applies.
          this._setState("reconnecting", "the connection broke");
          quick = true;
        } else {
          this._setState("down", "no answer from the server");
        }
      }
      if (quick && this.state === "reconnecting" && performance.now() - lastQuick > this.retry) {
        delay = Math.random() * 100;
        lastQuick = performance.now();
      }
      quick = false;
      // EventSource's rule, with a little jitter so that many pages do not come back at once
      await sleep(delay * (1 + Math.random() * 0.1), this._abort.signal);
    }
  }

  async _read(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder("utf-8"); // drops one leading BOM, as the rules say
    this._buffer = "";
    this._data = [];
    this._event = "";
    this._id = this.lastEventId;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this._feed(decoder.decode(value, { stream: true }));
      }
    } finally {
      reader.releaseLock();
    }
  }

  _feed(text) {
    const buffer = this._buffer + text;
    const events = [];
    let start = 0;
    LINE_END.lastIndex = 0;
    for (let match = LINE_END.exec(buffer); match; match = LINE_END.exec(buffer)) {
      if (match[0] === "\r" && match.index === buffer.length - 1) break; // maybe half a CRLF
      this._line(buffer.slice(start, match.index), events);
      start = LINE_END.lastIndex;
    }
    this._buffer = buffer.slice(start);
    if (events.length) this.onEvents(events);
  }

  _line(line, events) {
    if (line === "") {
      // an event counts only once its blank line is in: the id of one cut off halfway
      // is not taken, so the reconnect asks for that event again
      this.lastEventId = this._id;
      if (this._data.length) {
        events.push({ id: this._id, event: this._event || "message", data: this._data.join("\n") });
      }
      this._data = [];
      this._event = "";
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ":" a comment (the heartbeat)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === "data") this._data.push(value);
    else if (field === "event") this._event = value;
    else if (field === "id" && !value.includes("\0")) this._id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

/** Why a `reset` event says the stream could not resume (its data is JSON with a reason). */
export function resetReason(data) {
  try {
    return JSON.parse(data).reason || "unknown";
  } catch {
    return "unknown";
  }
}

/** Does the server answer /healthz within `timeout` ms? */
export async function reachable(timeout) {
  try {
    const response = await fetch("/healthz", { cache: "no-store", signal: AbortSignal.timeout(timeout) });
    return response.ok || response.status === 503;
  } catch {
    return false;
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

// The logs views: the list (#/logs) and one live tail (#/logs/<name>?tail=500&filter=x).
//
// A tail can bring 100,000 lines in seconds, so nothing is done per line that can be done
// per frame: lines wait in `pending`, and each animation frame moves them into `kept`
// (the last MAX_KEPT, for filtering again and for download) and adds at most MAX_ROWS of
// them to the page, which never holds more than MAX_ROWS rows. While the reader has
// scrolled up (or paused), the rows stay still and the new lines are only counted.
import { renderAnsi, stripAnsi } from "./ansi.js";
import { downloadText, el, getJson, humanSize, localTime } from "./dom.js";
import { EventStream, resetReason } from "./sse.js";
import { connectionBadge } from "./status.js";

export const MAX_ROWS = 1500;
export const MAX_KEPT = 50_000;
const TAILS = [100, 500, 1000, 5000];
const DEFAULT_TAIL = 500;
const SERVER_GREP_MAX = 200; // the server's grep takes 1 to 200 characters
const FILTER_DELAY = 300; // ms of no typing before the stream is asked again
const LIST_EVERY = 5000; // ms between two refreshes of the log list
const MARKERS = {
  rotated: "log rotated: following the new file",
  truncated: "log truncated: reading again from its start",
  deleted: "log deleted: waiting for it to come back",
  created: "log created",
};
const LINE_KINDS = new Set(["message", "cut"]);

export function mountLogList(root) {
  const list = el("ul", { class: "entries logs", "aria-label": "Logs" });
  const note = el("p", { class: "empty", hidden: true });
  root.replaceChildren(
    el("h1", { class: "visually-hidden" }, "Logs"),
    el("div", { class: "entries-head", "aria-hidden": "true" }, el("span", {}, "Name"), el("span", {}, "Size"), el("span", {}, "Modified"), el("span", {}, "Followers")),
    list,
    note,
  );
  const load = async () => {
    try {
      const { logs } = await getJson("/api/logs");
      list.replaceChildren(
        ...logs.map((log) =>
          el(
            "li",
            { class: "entry file", "data-name": log.name },
            el("a", { class: "name", href: `#/logs/${encodeURIComponent(log.name)}` }, log.name),
            el("span", { class: "size", title: `${log.size} bytes` }, humanSize(log.size)),
            el("time", { class: "mtime", datetime: log.mtime }, localTime(log.mtime)),
            el("span", { class: "type", title: "streams following this log" }, `${log.subscribers} following`),
          ),
        ),
      );
      note.hidden = logs.length > 0;
      note.textContent = "No logs to follow: start the server with --logs DIR.";
    } catch (error) {
      note.hidden = false;
      note.textContent = error.message;
    }
  };
  load();
  const timer = setInterval(() => document.hidden || load(), LIST_EVERY);
  return () => clearInterval(timer);
}

const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export function mountLog(root, name, params) {
  const tailParam = Number(params.get("tail"));
  const state = {
    tail: TAILS.includes(tailParam) ? tailParam : DEFAULT_TAIL,
    filter: params.get("filter") || "",
    regex: params.get("regex") === "1",
  };
  const badge = connectionBadge();

  // -- controls
  const tailSelect = el("select", { id: "log-tail", name: "tail" }, ...TAILS.map((n) => el("option", { value: n, selected: n === state.tail }, String(n))));
  const filterBox = el("input", { id: "log-filter", name: "filter", type: "search", value: state.filter, placeholder: "text or /regex/", autocomplete: "off", spellcheck: "false", "aria-describedby": "log-filter-help" });
  const regexBox = el("input", { id: "log-regex", name: "regex", type: "checkbox", checked: state.regex });
  const filterHelp = el("small", { id: "log-filter-help", class: "hint" });
  const pauseButton = el("button", { type: "button", "aria-pressed": "false" }, "Pause");
  const clearButton = el("button", { type: "button" }, "Clear");
  const downloadButton = el("button", { type: "button" }, "Download shown");
  const counter = el("span", { class: "count", "aria-live": "off" }, "");
  const pane = el("div", { class: "log", role: "log", tabindex: "0", "aria-label": `Lines of ${name}` });
  const jump = el("button", { class: "jump", type: "button", hidden: true }, "Jump to live");
  root.replaceChildren(
    el("h1", { class: "log-title" }, el("a", { href: "#/logs" }, "Logs"), " / ", name),
    el(
      "div",
      { class: "bar controls" },
      el("span", { class: "field" }, el("label", { for: "log-tail" }, "Last lines"), tailSelect),
      el("span", { class: "field grow" }, el("label", { for: "log-filter" }, "Filter"), filterBox),
      el("span", { class: "field check" }, regexBox, el("label", { for: "log-regex" }, "regex")),
      pauseButton,
      clearButton,
      downloadButton,
    ),
    filterHelp,
    el("div", { class: "bar" }, badge.element, counter),
    el("div", { class: "log-wrap" }, pane, jump),
  );

  // -- what is shown
  let kept = [];
  let pending = [];
  let received = 0;
  let following = true;
  let paused = false;
  let unseen = 0;
  let frame = 0;
  let matcher = null;
  let highlight = null;
  let stream = null;
  let streamGrep = null;

  const plain = (line) => {
    if (line.plain === undefined) line.plain = stripAnsi(line.text);
    return line.plain;
  };
  const visible = (line) => !matcher || !LINE_KINDS.has(line.kind) || matcher(plain(line));

  function compile() {
    matcher = null;
    highlight = null;
    filterBox.removeAttribute("aria-invalid");
    const grep = serverGrep();
    filterHelp.textContent = state.filter ? (grep ? "filtered by the server" : "filtered in this page") : "";
    if (!state.filter) return;
    if (state.regex) {
      try {
        const test = new RegExp(state.filter, "i");
        highlight = new RegExp(state.filter, "gi");
        matcher = (text) => test.test(text);
      } catch (error) {
        filterBox.setAttribute("aria-invalid", "true");
        filterHelp.textContent = `not a regular expression: ${error.message}`;
      }
      return;
    }
    const needle = state.filter.toLowerCase();
    matcher = (text) => text.toLowerCase().includes(needle);
    highlight = new RegExp(escapeRegExp(state.filter), "gi");
  }

  /** The server's grep is a plain, case-blind substring: used for plain filters it fits. */
  function serverGrep() {
    return !state.regex && state.filter && state.filter.length <= SERVER_GREP_MAX ? state.filter : null;
  }

  function row(line) {
    if (LINE_KINDS.has(line.kind)) {
      const div = document.createElement("div");
      div.className = line.kind === "cut" ? "line cut" : "line";
      div.append(renderAnsi(line.text, highlight));
      if (line.kind === "cut") div.append(el("span", { class: "cut-note" }, "cut: longer than the server's line limit"));
      return div;
    }
    const text = line.kind === "reset" ? `position reset (${resetReason(line.text)}): showing the last lines` : MARKERS[line.kind] || line.kind;
    return el("div", { class: `marker ${line.kind}`, role: "note", "data-kind": line.kind }, text);
  }

  function markerText(line) {
    return LINE_KINDS.has(line.kind) ? plain(line) : `--- ${line.kind} ---`;
  }

  function showCounts() {
    counter.textContent = `${received} received · ${pane.childElementCount} shown`;
    jump.hidden = following;
    jump.textContent = unseen ? `Jump to live (${unseen} new)` : "Jump to live";
  }

  let settling = 0;
  function scrollToEnd() {
    pane.scrollTop = pane.scrollHeight;
    // rows out of sight are sized by estimate (see app.css): once the rows now in view
    // are laid out for real, the end may have moved, so go there once more
    if (!settling) {
      settling = requestAnimationFrame(() => {
        settling = 0;
        if (following && !paused) pane.scrollTop = pane.scrollHeight;
      });
    }
  }

  function append(lines) {
    const fragment = document.createDocumentFragment();
    for (const line of lines) fragment.append(row(line));
    if (lines.length >= MAX_ROWS) pane.replaceChildren(fragment); // a burst: all rows are new
    else {
      pane.append(fragment);
      const excess = pane.childElementCount - MAX_ROWS;
      if (excess > 0) {
        const old = document.createRange();
        old.setStartBefore(pane.firstChild);
        old.setEndAfter(pane.children[excess - 1]);
        old.deleteContents();
      }
    }
    scrollToEnd();
  }

  function rerender() {
    const shown = [];
    for (let i = kept.length - 1; i >= 0 && shown.length < MAX_ROWS; i -= 1) {
      if (visible(kept[i])) shown.push(kept[i]);
    }
    pane.replaceChildren();
    append(shown.reverse());
    showCounts();
  }

  /** Move `pending` into `kept`; returns the lines moved. */
  function absorb() {
    const batch = pending;
    pending = [];
    for (const line of batch) kept.push(line);
    if (kept.length > MAX_KEPT * 1.1) kept = kept.slice(-MAX_KEPT);
    if (paused || !following) {
      for (const line of batch) if (visible(line)) unseen += 1;
    }
    return batch;
  }

  let stale = false; // lines were absorbed without a frame (a hidden tab): draw them all again
  function flush() {
    frame = 0;
    const batch = absorb();
    if (paused || !following) {
      showCounts();
      return;
    }
    if (stale) {
      stale = false;
      rerender();
      return;
    }
    const shown = [];
    for (let i = batch.length - 1; i >= 0 && shown.length < MAX_ROWS; i -= 1) {
      if (visible(batch[i])) shown.push(batch[i]);
    }
    append(shown.reverse());
    showCounts();
  }

  function onEvents(events) {
    for (const event of events) {
      pending.push({ kind: event.event, text: event.data, id: event.id });
      if (LINE_KINDS.has(event.event)) received += 1;
    }
    if (pending.length > MAX_KEPT) {
      absorb(); // frames do not run in a hidden tab: keep memory bounded anyway
      stale = true;
    }
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function updateHash() {
    const query = new URLSearchParams();
    if (state.tail !== DEFAULT_TAIL) query.set("tail", state.tail);
    if (state.filter) query.set("filter", state.filter);
    if (state.regex) query.set("regex", "1");
    const text = query.toString();
    history.replaceState(null, "", `#/logs/${encodeURIComponent(name)}${text ? `?${text}` : ""}`);
  }

  function open() {
    if (stream) stream.close();
    kept = [];
    pending = [];
    received = 0;
    unseen = 0;
    following = true;
    pane.replaceChildren();
    streamGrep = serverGrep();
    const query = new URLSearchParams({ tail: state.tail });
    if (streamGrep) query.set("grep", streamGrep);
    stream = new EventStream(`/logs/${encodeURIComponent(name)}?${query}`, {
      onState: (streamState, detail) => badge.show(streamState, detail),
      onEvents(events) {
        onEvents(events);
        badge.lastId(stream.lastEventId);
      },
    });
    showCounts();
  }

  function jumpToLive() {
    following = true;
    unseen = 0;
    if (!paused) rerender();
    showCounts();
  }

  function stopFollowing() {
    if (!following) return;
    following = false;
    showCounts();
  }

  let filterTimer = 0;
  function filterChanged() {
    state.filter = filterBox.value;
    state.regex = regexBox.checked;
    compile();
    updateHash();
    clearTimeout(filterTimer);
    if (serverGrep() !== streamGrep) filterTimer = setTimeout(open, FILTER_DELAY);
    else rerender();
  }

  filterBox.addEventListener("input", filterChanged);
  regexBox.addEventListener("change", filterChanged);
  tailSelect.addEventListener("change", () => {
    state.tail = Number(tailSelect.value);
    updateHash();
    open();
  });
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused && following) {
      unseen = 0;
      rerender();
    }
    showCounts();
  });
  clearButton.addEventListener("click", () => {
    kept = [];
    pending = [];
    unseen = 0;
    pane.replaceChildren();
    showCounts();
  });
  downloadButton.addEventListener("click", () => {
    const lines = kept.filter(visible).map(markerText);
    downloadText(lines.length ? `${lines.join("\n")}\n` : "", `${name}${state.filter ? ".filtered" : ""}.txt`);
  });
  jump.addEventListener("click", () => {
    jumpToLive();
    pane.focus({ preventScroll: true });
  });
  // The reader moving up stops the auto-scroll at once (before the next frame would pull
  // the view down again); reaching the end again resumes it.
  pane.addEventListener("wheel", (event) => event.deltaY < 0 && stopFollowing(), { passive: true });
  pane.addEventListener("touchmove", stopFollowing, { passive: true });
  pane.addEventListener("keydown", (event) => ["ArrowUp", "PageUp", "Home"].includes(event.key) && stopFollowing());
  pane.addEventListener("mousedown", (event) => event.offsetX > pane.clientWidth && stopFollowing());
  // Only the reader stops it: a scroll event alone may be the page's own doing (rows
  // replaced, sizes settling), and taking it for the reader froze the view mid-burst.
  pane.addEventListener("scroll", () => {
    if (!following && pane.scrollHeight - pane.scrollTop - pane.clientHeight < 24) jumpToLive();
  });

  compile();
  open();
  return () => {
    if (stream) stream.close();
    if (frame) cancelAnimationFrame(frame);
    if (settling) cancelAnimationFrame(settling);
    clearTimeout(filterTimer);
  };
}

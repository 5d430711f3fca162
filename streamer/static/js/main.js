// The page: the header's health numbers, and the router that mounts one view at a time
// from the URL's fragment (#/events?topic=a, #/files/<folder>, #/logs/<name>). A view's
// mount function returns what stops it (its streams and timers) when another is shown.
import { duration, el, getJson } from "./dom.js";
import { mountEvents } from "./events.js";
import { mountFiles } from "./files.js";
import { mountLog, mountLogList } from "./logs.js";

const HEALTH_EVERY = 2000; // ms
const view = document.getElementById("view");
let unmount = () => {};

/** `#/files/a%20b/c?x=1` -> { name: "files", rest: "a b/c", params } (null if malformed). */
export function parseRoute(hash) {
  const text = hash.replace(/^#/, "") || "/events";
  const question = text.indexOf("?");
  const path = question < 0 ? text : text.slice(0, question);
  const params = new URLSearchParams(question < 0 ? "" : text.slice(question + 1));
  const [, name = "", ...rest] = path.split("/");
  try {
    const segments = rest.map(decodeURIComponent).filter((segment) => segment !== "");
    return { name, rest: segments.join("/"), params };
  } catch {
    return null;
  }
}

function notFound(message) {
  view.replaceChildren(el("p", { class: "empty" }, `${message} `, el("a", { href: "#/events" }, "Go to events")));
  return () => {};
}

function route() {
  unmount();
  const found = parseRoute(location.hash);
  const name = found ? found.name : "";
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  let title = "streamer";
  if (!found) unmount = notFound("That link is malformed.");
  else if (name === "events") {
    unmount = mountEvents(view, found.params);
    title = "Events · streamer";
  } else if (name === "files") {
    unmount = mountFiles(view, found.rest);
    title = `Files${found.rest ? ` · ${found.rest}` : ""} · streamer`;
  } else if (name === "logs" && found.rest) {
    unmount = mountLog(view, found.rest, found.params);
    title = `${found.rest} · Logs · streamer`;
  } else if (name === "logs") {
    unmount = mountLogList(view);
    title = "Logs · streamer";
  } else unmount = notFound("There is no such view.");
  document.title = title;
}

// -- health: version, uptime, subscribers from /healthz; events/s from /metrics
const health = document.getElementById("health");
const shown = (key, text) => {
  health.querySelector(`[data-health="${key}"]`).textContent = text;
};
let lastCount = null;
let lastTime = 0;

function publishedTotal(metrics) {
  const match = /^streamer_events_published_total (\d+)/m.exec(metrics);
  return match ? Number(match[1]) : null;
}

async function pollHealth() {
  if (document.hidden) return;
  try {
    const [status, metrics] = await Promise.all([
      getJson("/healthz"),
      fetch("/metrics", { cache: "no-store" }).then((response) => response.text()),
    ]);
    health.dataset.status = status.status;
    shown("version", status.version);
    shown("uptime", duration(status.uptime));
    shown("subscribers", String(status.subscribers));
    const count = publishedTotal(metrics);
    const now = performance.now();
    if (count !== null && lastCount !== null && count >= lastCount) {
      const rate = ((count - lastCount) * 1000) / (now - lastTime);
      shown("rate", rate >= 10 ? String(Math.round(rate)) : rate.toFixed(1));
    }
    lastCount = count;
    lastTime = now;
  } catch {
    health.dataset.status = "down";
    shown("rate", "—");
    lastCount = null;
  }
}

window.addEventListener("hashchange", () => {
  route();
  view.focus({ preventScroll: true });
});
route();
pollHealth();
setInterval(pollHealth, HEALTH_EVERY);

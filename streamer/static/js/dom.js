// Building the page's elements. Everything that came from outside (event data, file
// names, log lines) goes in as text nodes or textContent, never as markup: there is no
// innerHTML anywhere in this page.

/** An element with attributes, listeners (`onclick: fn`) and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** 1536 -> "1.5 KiB"; whole bytes below 1 KiB. */
export function humanSize(bytes) {
  if (bytes === null || bytes === undefined) return "";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${value} B`;
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${UNITS[unit]}`;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** A local date and time, "2026-12-03 14:05:09", from an ISO string or a Date. */
export function localTime(value) {
  const d = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(d.getTime())) return "";
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** "14:05:09.123" */
export function clockTime(d = new Date()) {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** 93784 s -> "1d 2h 3m" */
export function duration(seconds) {
  const s = Math.floor(seconds);
  const days = Math.floor(s / 86400);
  const hours = Math.floor((s % 86400) / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  if (days) return `${days}d ${hours}h ${minutes}m`;
  if (hours) return `${hours}h ${minutes}m`;
  if (minutes) return `${minutes}m ${s % 60}s`;
  return `${s % 60}s`;
}

/** What a failed response says, for people: a problem+json's title and detail, else the status. */
export async function problemText(response) {
  let text = `${response.status} ${response.statusText}`.trim();
  try {
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      const problem = await response.json();
      text = [problem.title, problem.detail].filter(Boolean).join(": ") || text;
    }
  } catch {
    // the body was not what it said: the status line is all there is
  }
  return text;
}

/** Fetch JSON; a failed answer throws an Error whose message is the problem's text. */
export async function getJson(url, options = {}) {
  const response = await fetch(url, { cache: "no-store", ...options });
  if (!response.ok) throw new Error(await problemText(response));
  return response.json();
}

/** Copy text to the clipboard; where the browser has no clipboard API (plain http on
 * another host), select the text in `fallback` (an input) so the reader can copy it. */
export async function copyText(text, fallback) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallback) {
      fallback.focus();
      fallback.select();
    }
    return false;
  }
}

/** Offer `text` as a download named `name`, from memory. */
export function downloadText(text, name) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Percent-encode each segment of a slash-separated path. */
export function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

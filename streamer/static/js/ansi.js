// ANSI escape sequences in log lines: SGR colours and styles become spans, every other
// escape (cursor moves, titles) is dropped. The text itself always goes in as text nodes.
// Colours are set through classes (16 colours, themed in app.css) or through the CSSOM
// (256 colours, 24-bit), which the page's Content-Security-Policy allows.

const ESCAPES = /\x1b\[([0-9;:?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?/g;

/** The text a reader sees: `text` without its escape sequences. */
export function stripAnsi(text) {
  return text.includes("\x1b") ? text.replace(ESCAPES, "") : text;
}

const CUBE = [0, 95, 135, 175, 215, 255];

function color256(n) {
  if (n < 16) return { index: n };
  if (n < 232) {
    const c = n - 16;
    return { rgb: `rgb(${CUBE[Math.floor(c / 36)]},${CUBE[Math.floor(c / 6) % 6]},${CUBE[c % 6]})` };
  }
  const level = 8 + (n - 232) * 10;
  return { rgb: `rgb(${level},${level},${level})` };
}

/** The style after the SGR parameters `codes` (numbers) are applied to `style`. */
function applySgr(style, codes) {
  const next = { ...style };
  for (let i = 0; i < codes.length; i += 1) {
    const code = codes[i];
    if (code === 0) Object.assign(next, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false });
    else if (code === 1) next.bold = true;
    else if (code === 2) next.dim = true;
    else if (code === 3) next.italic = true;
    else if (code === 4) next.underline = true;
    else if (code === 7) next.inverse = true;
    else if (code === 22) next.bold = next.dim = false;
    else if (code === 23) next.italic = false;
    else if (code === 24) next.underline = false;
    else if (code === 27) next.inverse = false;
    else if (code >= 30 && code <= 37) next.fg = { index: code - 30 };
    else if (code >= 90 && code <= 97) next.fg = { index: code - 90 + 8 };
    else if (code >= 40 && code <= 47) next.bg = { index: code - 40 };
    else if (code >= 100 && code <= 107) next.bg = { index: code - 100 + 8 };
    else if (code === 39) next.fg = null;
    else if (code === 49) next.bg = null;
    else if (code === 38 || code === 48) {
      let value = null;
      if (codes[i + 1] === 5 && i + 2 < codes.length) {
        value = color256(codes[i + 2] & 255);
        i += 2;
      } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
        const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => v & 255);
        value = { rgb: `rgb(${r},${g},${b})` };
        i += 4;
      }
      if (code === 38) next.fg = value;
      else next.bg = value;
    }
  }
  return next;
}

const PLAIN = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };

function isPlain(style) {
  return !style.fg && !style.bg && !style.bold && !style.dim && !style.italic && !style.underline && !style.inverse;
}

function styled(style, child) {
  if (isPlain(style)) return child;
  const span = document.createElement("span");
  const [fg, bg] = style.inverse ? [style.bg || { index: "bg" }, style.fg || { index: "fg" }] : [style.fg, style.bg];
  const classes = [];
  if (fg) {
    if (fg.rgb) span.style.color = fg.rgb;
    else classes.push(`fg-${fg.index}`);
  }
  if (bg) {
    if (bg.rgb) span.style.backgroundColor = bg.rgb;
    else classes.push(`bg-${bg.index}`);
  }
  if (style.bold) classes.push("b");
  if (style.dim) classes.push("dim");
  if (style.italic) classes.push("i");
  if (style.underline) classes.push("u");
  span.className = classes.join(" ");
  span.append(child);
  return span;
}

/** `text` with `highlight` (a global RegExp, or null) matches wrapped in <mark>. */
function marked(text, highlight) {
  if (!highlight) return document.createTextNode(text);
  const fragment = document.createDocumentFragment();
  let at = 0;
  highlight.lastIndex = 0;
  for (let match = highlight.exec(text); match; match = highlight.exec(text)) {
    if (match[0] === "") {
      highlight.lastIndex += 1;
      continue;
    }
    if (match.index > at) fragment.append(text.slice(at, match.index));
    const mark = document.createElement("mark");
    mark.textContent = match[0];
    fragment.append(mark);
    at = match.index + match[0].length;
  }
  if (at < text.length) fragment.append(text.slice(at));
  return fragment;
}

/** A fragment showing `text` with its colours, and `highlight` matches marked. */
export function renderAnsi(text, highlight = null) {
  if (!text.includes("\x1b")) return marked(text, highlight);
  const fragment = document.createDocumentFragment();
  let style = PLAIN;
  let at = 0;
  ESCAPES.lastIndex = 0;
  for (let match = ESCAPES.exec(text); match; match = ESCAPES.exec(text)) {
    if (match.index > at) fragment.append(styled(style, marked(text.slice(at, match.index), highlight)));
    at = match.index + match[0].length;
    if (match[2] === "m" && !match[1].includes("?")) {
      const codes = match[1] === "" ? [0] : match[1].split(/[;:]/).map((v) => Number(v) || 0);
      style = applySgr(style, codes);
    }
  }
  if (at < text.length) fragment.append(styled(style, marked(text.slice(at), highlight)));
  return fragment;
}

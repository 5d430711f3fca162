// The files view (#/files/<folder>): breadcrumbs, folders first, one-click download, a
// copyable resumable curl command, the SHA-256 on demand; the list follows the `files`
// topic, so files created, changed or deleted show without a reload.
import { copyText, el, encodePath, getJson, humanSize, localTime, problemText } from "./dom.js";
import { EventStream } from "./sse.js";
import { connectionBadge } from "./status.js";

const RELOAD_DELAY = 150; // ms: a burst of changes is one new listing

function parentOf(path) {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}

function breadcrumbs(folder) {
  const nav = el("nav", { class: "crumbs", "aria-label": "Folder" });
  const list = el("ol");
  nav.append(list);
  const parts = folder ? folder.split("/") : [];
  const crumb = (label, path, current) =>
    el("li", {}, el("a", { href: `#/files/${encodePath(path)}`, "aria-current": current ? "page" : null }, label));
  list.append(crumb("media", "", parts.length === 0));
  parts.forEach((part, i) => list.append(crumb(part, parts.slice(0, i + 1).join("/"), i === parts.length - 1)));
  return nav;
}

/** `curl` that resumes where a partial download stopped; the URL is quoted for a shell. */
export function curlCommand(link) {
  const url = new URL(link, location.href).href.replaceAll("'", "%27");
  return `curl -C - -O '${url}'`;
}

function fileActions(entry, details) {
  const output = el("div", { class: "detail", hidden: true });
  const show = (kind, build) => {
    if (output.dataset.kind === kind && !output.hidden) {
      output.hidden = true;
      details.delete(entry.name);
      return;
    }
    output.dataset.kind = kind;
    output.hidden = false;
    output.replaceChildren(...build());
    details.set(entry.name, kind);
  };
  const curl = () => {
    const command = curlCommand(entry.link);
    const box = el("input", { class: "command", readonly: true, value: command, "aria-label": `curl command for ${entry.name}`, spellcheck: "false" });
    const copy = el("button", { type: "button", async onclick() { copy.textContent = (await copyText(command, box)) ? "Copied" : "Select and copy"; } }, "Copy");
    return [box, copy];
  };
  const hash = () => {
    const value = el("code", { class: "sha256" }, "hashing…");
    fetch(`${entry.link}?hash=sha256`, { cache: "no-store" })
      .then(async (response) => {
        value.textContent = response.ok ? (await response.text()).trim() : await problemText(response);
      })
      .catch(() => {
        value.textContent = "no answer from the server";
      });
    return [el("span", { class: "label" }, "sha-256 "), value];
  };
  const buttons = el(
    "span",
    { class: "actions" },
    el("a", { class: "button", href: `${entry.link}?download=1`, download: entry.name, "aria-label": `Download ${entry.name}` }, "Download"),
    el("button", { type: "button", "aria-label": `curl command for ${entry.name}`, onclick: () => show("curl", curl) }, "curl"),
    el("button", { type: "button", "aria-label": `SHA-256 of ${entry.name}`, onclick: () => show("hash", hash) }, "sha-256"),
  );
  const reopen = details.get(entry.name);
  if (reopen) show(reopen, reopen === "curl" ? curl : hash);
  return [buttons, output];
}

function entryRow(folder, entry, details) {
  const path = folder ? `${folder}/${entry.name}` : entry.name;
  const isDir = entry.type === "dir";
  const name = isDir
    ? el("a", { class: "name dir", href: `#/files/${encodePath(path)}` }, `${entry.name}/`)
    : el("a", { class: "name", href: entry.link }, entry.name);
  const cells = [
    name,
    el("span", { class: "size", title: isDir ? null : `${entry.size} bytes` }, isDir ? "—" : humanSize(entry.size)),
    el("time", { class: "mtime", datetime: entry.mtime }, localTime(entry.mtime)),
    el("span", { class: "type" }, isDir ? "folder" : entry.content_type || ""),
  ];
  const [actions, detail] = isDir ? [el("span", { class: "actions" }), null] : fileActions(entry, details);
  return el("li", { class: isDir ? "entry dir" : "entry file", "data-name": entry.name }, ...cells, actions, detail);
}

export function mountFiles(root, folder) {
  const badge = connectionBadge();
  const list = el("ul", { class: "entries", "aria-label": `Files in ${folder || "media"}` });
  const note = el("p", { class: "empty", hidden: true });
  const details = new Map(); // open curl/hash rows by name, kept across live reloads
  root.replaceChildren(
    el("h1", { class: "visually-hidden" }, "Files"),
    el("div", { class: "bar" }, breadcrumbs(folder), badge.element),
    el("div", { class: "entries-head", "aria-hidden": "true" }, el("span", {}, "Name"), el("span", {}, "Size"), el("span", {}, "Modified"), el("span", {}, "Type"), el("span")),
    list,
    note,
  );

  let loading = null;
  let again = false;
  const load = async () => {
    if (loading) {
      again = true;
      return loading;
    }
    loading = (async () => {
      try {
        const listing = await getJson(`/api/files?dir=${encodeURIComponent(folder)}`);
        const entries = [...listing.entries].sort((a, b) => (a.type === "dir") === (b.type === "dir") ? (a.name < b.name ? -1 : 1) : a.type === "dir" ? -1 : 1);
        list.replaceChildren(...entries.map((entry) => entryRow(folder, entry, details)));
        note.hidden = entries.length > 0;
        note.textContent = "This folder is empty.";
      } catch (error) {
        list.replaceChildren();
        note.hidden = false;
        note.replaceChildren(`${error.message} `, el("a", { href: "#/files/" }, "Back to media"));
      }
    })();
    await loading;
    loading = null;
    if (again) {
      again = false;
      await load();
    }
  };
  let timer = 0;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(load, RELOAD_DELAY);
  };

  let connections = 0;
  const stream = new EventStream("/events?topic=files", {
    onState(state, detail) {
      badge.show(state, detail);
      if (state === "connected" && connections++ > 0) soon(); // what changed while away
    },
    onEvents(events) {
      for (const event of events) {
        if (event.event === "reset") {
          soon();
          continue;
        }
        let changed;
        try {
          changed = JSON.parse(event.data).path;
        } catch {
          continue;
        }
        if (parentOf(changed) === folder || changed === folder || folder.startsWith(`${changed}/`)) soon();
      }
      badge.lastId(stream.lastEventId);
    },
  });
  load();
  return () => {
    stream.close();
    clearTimeout(timer);
  };
}

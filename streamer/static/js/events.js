// The events view (#/events?topic=a&topic=b): one stream over the chosen topics, newest
// event first in a capped list, and a form that publishes a test event when this browser
// may publish.
import { clockTime, el, getJson, problemText } from "./dom.js";
import { EventStream, resetReason } from "./sse.js";
import { connectionBadge } from "./status.js";

export const MAX_SHOWN = 500; // events kept on the page; older ones drop off the end

/** The payload as a person wants to read it: JSON indented, anything else as it came. */
function pretty(data) {
  const first = data.trimStart()[0];
  if (first === "{" || first === "[") {
    try {
      return { text: JSON.stringify(JSON.parse(data), null, 2), json: true };
    } catch {
      // not JSON after all
    }
  }
  return { text: data, json: false };
}

function eventRow(event, at) {
  if (event.event === "reset") {
    return el(
      "li",
      { class: "event marker reset", "data-event": "reset", "data-id": event.id },
      el("strong", {}, "History reset"),
      ` (${resetReason(event.data)}): events published while this page was away could not all be replayed; live events follow.`,
    );
  }
  const { text, json } = pretty(event.data);
  return el(
    "li",
    { class: "event", "data-event": event.event, "data-id": event.id },
    el(
      "div",
      { class: "meta" },
      el("span", { class: "name" }, event.event),
      el("code", { class: "id", title: "event id" }, event.id),
      el("time", { datetime: at.toISOString() }, clockTime(at)),
    ),
    el("pre", { class: json ? "data json" : "data" }, text),
  );
}

function topicsUrl(topics) {
  const query = new URLSearchParams();
  for (const topic of topics) query.append("topic", topic);
  return query.toString();
}

function chooser(topics) {
  const input = el("input", {
    id: "topics",
    name: "topics",
    type: "text",
    value: topics.join(" "),
    placeholder: "all topics",
    autocomplete: "off",
    spellcheck: "false",
  });
  return el(
    "form",
    {
      class: "bar",
      role: "search",
      onsubmit(event) {
        event.preventDefault();
        const wanted = input.value.split(/[\s,]+/).filter(Boolean);
        const query = topicsUrl(wanted);
        location.hash = `#/events${query ? `?${query}` : ""}`;
      },
    },
    el("label", { for: "topics" }, "Topics"),
    input,
    el("button", { type: "submit" }, "Watch"),
    el("small", { class: "hint" }, "separated by spaces; empty for every topic"),
  );
}

function publishForm(topics, access) {
  const field = (id, label, input) => el("div", { class: "field" }, el("label", { for: id }, label), input);
  const topic = el("input", { id: "pub-topic", name: "topic", required: true, value: topics[0] || "test", pattern: "[A-Za-z0-9_.\\-]{1,64}", autocomplete: "off", spellcheck: "false" });
  const name = el("input", { id: "pub-event", name: "event", placeholder: "message", autocomplete: "off", spellcheck: "false" });
  const data = el("textarea", { id: "pub-data", name: "data", rows: 3, spellcheck: "false" }, '{"hello": "world"}');
  const token = el("input", { id: "pub-token", name: "token", type: "password", autocomplete: "current-password" });
  const result = el("output", { class: "result", for: "pub-topic pub-data", "aria-live": "polite" });
  const form = el(
    "form",
    {
      class: "publish",
      async onsubmit(event) {
        event.preventDefault();
        const body = data.value;
        let type = "text/plain; charset=utf-8";
        try {
          JSON.parse(body);
          type = "application/json";
        } catch {
          // sent as text: each line becomes a data: line
        }
        const headers = { "Content-Type": type };
        if (access === "token" && token.value) headers.Authorization = `Bearer ${token.value}`;
        const query = name.value ? `?event=${encodeURIComponent(name.value)}` : "";
        result.dataset.ok = "";
        try {
          const response = await fetch(`/events/${encodeURIComponent(topic.value)}${query}`, { method: "POST", headers, body });
          if (!response.ok) throw new Error(await problemText(response));
          const answer = await response.json();
          result.dataset.ok = "yes";
          result.textContent = `Published ${answer.id} to ${answer.topic}.`;
        } catch (error) {
          result.dataset.ok = "no";
          result.textContent = `Not published: ${error.message}`;
        }
      },
    },
    el("div", { class: "fields" }, field("pub-topic", "Topic", topic), field("pub-event", "Event name", name)),
    field("pub-data", "Data (JSON is sent as JSON, anything else as text)", data),
    access === "token" ? field("pub-token", "Token", token) : null,
    el("div", { class: "actions" }, el("button", { type: "submit" }, "Publish"), result),
  );
  return el("details", { class: "card" }, el("summary", {}, "Publish a test event"), form);
}

export function mountEvents(root, params) {
  const topics = params.getAll("topic").filter(Boolean);
  const badge = connectionBadge();
  const list = el("ol", { class: "events", "aria-label": "Events, newest first" });
  const empty = el("p", { class: "empty" }, topics.length ? `Waiting for events on ${topics.join(", ")}…` : "Waiting for events on any topic…");
  const counter = el("span", { class: "count" }, "0 events");
  const clear = el("button", { type: "button", onclick: () => { list.replaceChildren(); received = 0; counter.textContent = "0 events"; empty.hidden = false; } }, "Clear");
  const publishSlot = el("div");
  root.replaceChildren(
    el("h1", { class: "visually-hidden" }, "Events"),
    chooser(topics),
    el("div", { class: "bar" }, badge.element, counter, clear),
    publishSlot,
    empty,
    list,
  );

  let received = 0;
  let pending = [];
  let frame = 0;
  const flush = () => {
    frame = 0;
    const batch = pending.slice(-MAX_SHOWN);
    pending = [];
    const fragment = document.createDocumentFragment();
    const at = new Date();
    for (let i = batch.length - 1; i >= 0; i -= 1) fragment.append(eventRow(batch[i], at));
    list.prepend(fragment);
    while (list.childElementCount > MAX_SHOWN) list.lastElementChild.remove();
    empty.hidden = list.childElementCount > 0;
    counter.textContent = `${received} event${received === 1 ? "" : "s"}`;
  };
  const query = topicsUrl(topics);
  const stream = new EventStream(`/events${query ? `?${query}` : ""}`, {
    onState: (state, detail) => badge.show(state, detail),
    onEvents(events) {
      for (const event of events) {
        if (event.event === "reset") badge.show("reset", resetReason(event.data));
      }
      received += events.length;
      for (const event of events) pending.push(event);
      // frames do not run in a hidden tab: keep only what the list could show
      if (pending.length > 2 * MAX_SHOWN) pending = pending.slice(-MAX_SHOWN);
      badge.lastId(stream.lastEventId);
      if (!frame) frame = requestAnimationFrame(flush);
    },
  });

  getJson("/api/access")
    .then((access) => {
      if (access.publish !== "closed") publishSlot.replaceWith(publishForm(topics, access.publish));
    })
    .catch(() => {}); // the form stays away; the indicator already tells what is wrong

  return () => {
    stream.close();
    if (frame) cancelAnimationFrame(frame);
  };
}

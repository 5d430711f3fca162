// The connection indicator every live view shows: what the stream is doing, why, and the
// last event id it has.
import { el } from "./dom.js";

const LABELS = {
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  down: "server down",
  failed: "refused",
  closed: "closed",
  reset: "reset",
};

export function connectionBadge() {
  const label = el("span", { class: "label" }, LABELS.connecting);
  const detail = el("span", { class: "detail" });
  const last = el("code", { class: "last-id" });
  const lastBox = el("span", { class: "last", hidden: true }, "last id ", last);
  const element = el(
    "p",
    { class: "conn", role: "status", "aria-live": "polite", "data-state": "connecting" },
    el("span", { class: "dot", "aria-hidden": "true" }),
    label,
    detail,
    lastBox,
  );
  return {
    element,
    /** Show `state` (a key of LABELS) with a reason. */
    show(state, reason = "") {
      element.dataset.state = state;
      label.textContent = LABELS[state] || state;
      detail.textContent = reason ? `: ${reason}` : "";
    },
    lastId(id) {
      if (!id) return;
      last.textContent = id;
      lastBox.hidden = false;
    },
  };
}

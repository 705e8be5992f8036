// The queues: depth, queued, running and the oldest message's age, refreshed every few seconds.

import { api } from "./api.js";
import { duration, every, h, num, renderIfChanged } from "./dom.js";

const REFRESH_S = 2;

function row(q) {
  return h("tr", {},
    h("th", { scope: "row", "data-label": "Queue" }, q.name, q.declared ? h("span", { class: "tag" }, "declared") : null),
    h("td", { "data-label": "Depth", class: "num" }, num(q.depth)),
    h("td", { "data-label": "Queued", class: "num" }, num(q.queued)),
    h("td", { "data-label": "Running", class: "num" }, num(q.running)),
    h("td", { "data-label": "Oldest message", class: "num" }, q.depth ? duration(q.oldest_age_s) : "—"));
}

export function queuesPage(main, { signal }) {
  document.title = "Queues · batchq";
  const body = h("tbody");
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const updated = h("p", { class: "muted small", "aria-live": "off" }, " ");
  main.append(
    h("h1", {}, "Queues"),
    h("p", { class: "muted" }, "Depth: messages waiting in the broker. Queued: jobs whose message is on its way to a worker. Running: jobs a worker holds."),
    error,
    h("div", { class: "table-wrap" },
      h("table", { class: "grid queues" },
        h("caption", { class: "sr-only" }, "Queues"),
        h("thead", {}, h("tr", {}, ["Queue", "Depth", "Queued", "Running", "Oldest message"].map((t, i) => h("th", { scope: "col", class: i ? "num" : null }, t)))),
        body)),
    updated);
  every(REFRESH_S, signal, async () => {
    const { queues } = await api("/v1/queues", { signal });
    error.hidden = true;
    renderIfChanged(body, queues, (list) => list.map(row));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }, (err) => {
    error.textContent = `Could not load the queues: ${err}`;
    error.hidden = false;
  });
}

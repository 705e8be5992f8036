// The batches: newest first, filtered by status, queue and type (by the API), paged, refreshed
// every few seconds.

import { api } from "./api.js";
import { go } from "./app.js";
import { ago, badge, between, duration, every, h, num, progressBar, renderIfChanged } from "./dom.js";

export const BATCH_STATUSES = ["running", "compensating", "completed", "completed_with_failures", "failed", "cancelled"];
const PAGE = 25;
const REFRESH_S = 3;

function select(name, label, options, value) {
  return [
    h("label", { for: `f-${name}` }, label),
    h("select", { id: `f-${name}`, name },
      h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: o === value }, o.replaceAll("_", " ")))),
  ];
}

function href(params) {
  const q = new URLSearchParams([...params].filter(([, v]) => v));
  const s = q.toString();
  return s ? `batches?${s}` : "./";
}

function row(b) {
  const link = `batches/${encodeURIComponent(b.id)}`;
  const dur = between(b.created_at, b.finished_at);
  return h("tr", { dataset: { id: b.id } },
    h("td", { "data-label": "Batch" }, h("a", { href: link, "data-link": true, class: "mono", title: b.id }, b.id.slice(0, 8))),
    h("td", { "data-label": "Type" }, b.type),
    h("td", { "data-label": "Status" }, badge(b.status)),
    h("td", { "data-label": "Queue" }, b.queue),
    h("td", { "data-label": "Progress", class: "progress-cell" },
      progressBar(b),
      h("span", { class: "pct" }, `${b.percentage}%`)),
    h("td", { "data-label": "Jobs", class: "num counts" }, h("span", {},
      h("span", { class: "c-completed", title: "completed" }, num(b.completed)), " / ",
      h("span", { class: "c-failed", title: "failed" }, num(b.failed)), " / ",
      h("span", { class: "c-cancelled", title: "cancelled" }, num(b.cancelled)), " of ",
      h("span", { title: "total" }, num(b.total)))),
    h("td", { "data-label": "Age", class: "num" }, ago(b.created_at)),
    h("td", { "data-label": "Duration", class: "num" }, b.finished_at ? duration(dur) : `${duration(dur)} so far`),
  );
}

export function batchesPage(main, { params, signal }) {
  document.title = "Batches · batchq";
  const status = params.get("status") || "";
  const queue = params.get("queue") || "";
  const type = params.get("type") || "";
  const before = params.get("before") || "";
  const trail = (params.get("trail") || "").split(",").filter(Boolean); // the `before` of earlier pages

  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter batches" },
    h("div", { class: "field" }, select("status", "Status", BATCH_STATUSES, status)),
    h("div", { class: "field" },
      h("label", { for: "f-queue" }, "Queue"),
      h("input", { id: "f-queue", name: "queue", value: queue, list: "queue-names", autocomplete: "off", placeholder: "any" }),
      h("datalist", { id: "queue-names" })),
    h("div", { class: "field" }, select("type", "Type", ["parallel", "chain"], type)),
    h("div", { class: "field buttons" }, h("button", { type: "submit" }, "Filter")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(form);
    go(href([["status", f.get("status")], ["queue", f.get("queue").trim()], ["type", f.get("type")]]));
  });
  for (const sel of form.querySelectorAll("select")) sel.addEventListener("change", () => form.requestSubmit());

  const body = h("tbody");
  const table = h("table", { class: "grid batches" },
    h("caption", { class: "sr-only" }, "Batches, newest first"),
    h("thead", {}, h("tr", {}, ["Batch", "Type", "Status", "Queue", "Progress", "Completed / failed / cancelled", "Age", "Duration"]
      .map((t, i) => h("th", { scope: "col", class: i >= 5 ? "num" : null }, t)))),
    body);
  const empty = h("p", { class: "muted", hidden: true }, "No batches here.");
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const pager = h("nav", { class: "pager", "aria-label": "Pages of batches" });
  main.append(h("h1", {}, "Batches"), form, error, h("div", { class: "table-wrap" }, table), empty, pager);

  api("/v1/queues", { signal }).then((r) => {
    form.querySelector("#queue-names").append(...r.queues.map((q) => h("option", { value: q.name })));
  }).catch(() => {});

  const base = [["status", status], ["queue", queue], ["type", type]];
  const render = (page) => {
    renderIfChanged(body, page.batches, (list) => list.map(row));
    empty.hidden = page.batches.length > 0;
    // `trail` holds the `before` of each earlier page ("-": the first page).
    const back = trail.at(-1);
    const newer = trail.length || before
      ? h("a", { href: href([...base, ["before", back && back !== "-" ? back : ""], ["trail", trail.slice(0, -1).join(",")]]), "data-link": true, rel: "prev" }, "← Newer")
      : h("span", { class: "muted", "aria-disabled": "true" }, "← Newer");
    const older = page.next
      ? h("a", { href: href([...base, ["before", page.next], ["trail", [...trail, before || "-"].join(",")]]), "data-link": true, rel: "next" }, "Older →")
      : h("span", { class: "muted", "aria-disabled": "true" }, "Older →");
    renderIfChanged(pager, [trail.length, before, page.next], () => [newer, older]);
  };

  const query = new URLSearchParams([["limit", String(PAGE)], ...base, ["before", before]].filter(([, v]) => v));
  every(REFRESH_S, signal, async () => {
    const page = await api(`/v1/batches?${query}`, { signal });
    error.hidden = true;
    render(page);
    // The ages and running durations move on even when nothing else changed.
    for (const tr of body.rows) {
      const b = page.batches.find((x) => x.id === tr.dataset.id);
      if (!b) continue;
      tr.cells[6].textContent = ago(b.created_at);
      if (!b.finished_at) tr.cells[7].textContent = `${duration(between(b.created_at, null))} so far`;
    }
  }, (err) => {
    error.textContent = `Could not load the batches: ${err}`;
    error.hidden = false;
  });
}

// One batch: its counters live (the event stream, and a read every few seconds), its context,
// a chain's steps, a saga's compensations, its jobs paged by the server, its events and its
// callbacks; and the actions: cancel, retry every failed job, retry the ticked ones.

import { api, ApiError, batchEvents } from "./api.js";
import { session } from "./app.js";
import {
  badge, between, confirmAction, duration, every, h, jsonBlock, num, progressBar, renderIfChanged, setProgress, sleep, time, toast,
} from "./dom.js";

const JOB_STATUSES = ["waiting", "queued", "running", "completed", "failed", "cancelled"];
const COUNTERS = ["total", "waiting", "queued", "running", "completed", "failed", "cancelled"];
const PAGE = 50;
const STEPS_SHOWN = 100;
const EVENTS_KEPT = 200;
const REFRESH_S = 2;

const enc = encodeURIComponent;
const finished = (b) => !["running", "compensating"].includes(b.status);

function jobsPath(id, view) {
  const q = new URLSearchParams({ kind: view.kind, limit: String(PAGE), offset: String(view.offset) });
  if (view.status) q.set("status", view.status);
  return `/v1/batches/${enc(id)}/jobs?${q}`;
}

function section(title, id, ...children) {
  return h("section", { "aria-labelledby": id, class: "card" }, h("h2", { id }, title), ...children);
}

function eventText(e) {
  const d = e.data || {};
  switch (e.type) {
    case "started": return `${num(d.total)} jobs (${d.type})`;
    case "progress": return `${d.percentage}%: ${num(d.completed)} completed, ${num(d.failed)} failed, ${num(d.cancelled)} cancelled of ${num(d.total)}`;
    case "job_failed": case "compensation_failed": return `${d.job_id} ${d.name}: ${d.error ?? ""}`;
    case "job_retrying": return `${d.job_id} ${d.name}: attempt ${d.attempt} failed (${d.error ?? ""}); again in ${duration(d.delay_s)}`;
    case "compensating": return (d.jobs || []).map((j) => `${j.name} for ${j.original_job_id}`).join(", ");
    case "status": return d.status;
    case "jobs_added": return `${num(d.count)} added (total ${num(d.total)})`;
    case "retried": return `${num(d.count)} failed jobs retried${d.job_ids ? `: ${d.job_ids.join(", ")}` : ""}`;
    default: return "total" in d ? `${num(d.completed)} completed, ${num(d.failed)} failed, ${num(d.cancelled)} cancelled of ${num(d.total)}` : "";
  }
}

export async function batchPage(main, { id, signal }) {
  document.title = `Batch ${id.slice(0, 8)} · batchq`;
  const view = { status: "", kind: "job", offset: 0 };
  // Ask for the batch and its first page of jobs at once, while the key's scopes are looked up.
  const first = { batch: api(`/v1/batches/${enc(id)}`, { signal }), jobs: api(jobsPath(id, view), { signal }) };
  first.batch.catch(() => {});
  first.jobs.catch(() => {});
  await session.ready;
  if (signal.aborted) return;
  const canAct = session.canAct;
  let batch = null;
  const selected = new Set(); // ticked failed jobs, across pages
  const opened = new Set(); // jobs whose details are open
  let lastEventId = 0;
  let streaming = false;

  // ---- the skeleton: built once, filled in place ------------------------------------------
  const heading = h("h1", {}, "Batch ", h("span", { class: "mono" }, id));
  const statusBadge = h("span");
  const meta = h("p", { class: "meta" });
  const bar = progressBar({ total: 0, completed: 0, failed: 0, cancelled: 0, percentage: 0 }, { large: true });
  const pct = h("span", { class: "big-pct num" }, "0%");
  const counters = Object.fromEntries(COUNTERS.map((c) => [c, h("dd", { class: "num" }, "0")]));
  const comps = h("p", { class: "muted small" });
  const times = h("dl", { class: "times" });
  const batchError = h("div", { class: "error-box", role: "note", hidden: true });
  const loadError = h("p", { class: "error", role: "alert", hidden: true });

  const cancelBtn = h("button", { type: "button", class: "danger", hidden: true }, "Cancel batch");
  const retryAllBtn = h("button", { type: "button", hidden: true }, "Retry all failed jobs");
  const retrySelBtn = h("button", { type: "button", hidden: true, disabled: true }, "Retry selected (0)");
  const actionError = h("p", { class: "error", role: "alert", hidden: true });
  const actions = canAct
    ? h("div", { class: "actions", role: "group", "aria-label": "Actions" }, cancelBtn, retryAllBtn, retrySelBtn)
    : h("p", { class: "muted small actions" }, "This key cannot cancel or retry: that needs the produce scope.");

  const contextBox = h("div");
  const stepsBox = h("div");
  const compsBox = h("div");
  const jobsBody = h("tbody");
  const jobsInfo = h("span", { class: "num", "aria-live": "polite" });
  const pager = h("div", { class: "pager" });
  const eventsList = h("ol", { class: "events", reversed: true });
  const callbacksBox = h("div");

  const statusSel = h("select", { id: "job-status" }, h("option", { value: "" }, "any"));
  const kindSel = h("select", { id: "job-kind" }, ["job", "compensation", "callback"].map((k) => h("option", { value: k }, `${k}s`)));
  statusSel.addEventListener("change", () => { view.status = statusSel.value; view.offset = 0; loadJobs(); });
  kindSel.addEventListener("change", () => { view.kind = kindSel.value; view.offset = 0; loadJobs(); });

  const stepsSection = section("Chain steps", "h-steps", h("p", { class: "muted small" }, "In the order they run."), stepsBox);
  const compsSection = section("Compensations", "h-comps",
    h("p", { class: "muted small" }, "The saga's undo steps, in the order they ran."), compsBox);
  stepsSection.hidden = compsSection.hidden = true;

  main.append(
    h("div", { class: "title-row" }, heading, statusBadge),
    meta,
    loadError,
    h("section", { class: "card summary", "aria-label": "Progress" },
      h("div", { class: "bar-row" }, bar, pct),
      h("dl", { class: "counters" }, COUNTERS.map((c) => h("div", { class: `counter c-${c}` }, h("dt", {}, c), counters[c]))),
      comps, times, actions, actionError),
    batchError,
    section("Context", "h-context", contextBox),
    stepsSection,
    compsSection,
    section("Jobs", "h-jobs",
      h("div", { class: "filters" },
        h("div", { class: "field" }, h("label", { for: "job-kind" }, "Kind"), kindSel),
        h("div", { class: "field" }, h("label", { for: "job-status" }, "Status"), statusSel),
        h("div", { class: "field grow" }, jobsInfo)),
      h("div", { class: "table-wrap" },
        h("table", { class: "grid jobs" },
          h("caption", { class: "sr-only" }, "Jobs of the batch"),
          h("thead", {}, h("tr", {},
            canAct ? h("th", { scope: "col", class: "tick" }, h("span", { class: "sr-only" }, "Select")) : null,
            ["#", "Name", "Status", "Attempts", "Started", "Duration", "Details"]
              .map((t) => h("th", { scope: "col", class: ["#", "Attempts", "Duration"].includes(t) ? "num" : null }, t)))),
          jobsBody)),
      pager),
    section("Events", "h-events", eventsList),
    section("Callbacks", "h-callbacks", callbacksBox),
  );

  // ---- the batch ---------------------------------------------------------------------------
  function renderBatch(b) {
    statusBadge.replaceChildren(badge(b.status));
    meta.replaceChildren(
      `${b.type === "chain" ? "Chain" : "Parallel batch"} on queue `, h("strong", {}, b.queue),
      ` · ${b.failure_policy.replaceAll("_", " ")}`,
      b.max_concurrency ? ` · at most ${num(b.max_concurrency)} at once` : "",
      b.tenant ? ` · tenant ${b.tenant}` : "");
    setProgress(bar, b);
    pct.textContent = `${b.percentage}%`;
    for (const c of COUNTERS) counters[c].textContent = num(b[c]);
    const cp = b.compensations || {};
    const compTotal = (cp.open || 0) + (cp.completed || 0) + (cp.failed || 0) + (cp.cancelled || 0);
    comps.textContent = compTotal
      ? `Compensations: ${num(cp.open)} open, ${num(cp.completed)} completed, ${num(cp.failed)} failed, ${num(cp.cancelled)} cancelled`
      : "";
    renderIfChanged(times, [b.created_at, b.finished_at, b.finished_at ? 0 : Math.floor(Date.now() / 1000)], () => [
      h("div", {}, h("dt", {}, "Created"), h("dd", {}, time(b.created_at))),
      h("div", {}, h("dt", {}, "Finished"), h("dd", {}, time(b.finished_at))),
      h("div", {}, h("dt", {}, "Duration"), h("dd", { class: "num" }, duration(between(b.created_at, b.finished_at)))),
    ]);
    if (b.error) {
      batchError.replaceChildren(h("strong", {}, "Failed: "), `${b.error.job_id} ${b.error.name}: `, h("span", { class: "mono" }, b.error.error ?? ""));
    }
    batchError.hidden = !b.error;
    const retryable = b.failed > 0 && !["cancelled", "compensating"].includes(b.status);
    cancelBtn.hidden = finished(b);
    retryAllBtn.hidden = !retryable;
    retryAllBtn.textContent = `Retry all failed jobs (${num(b.failed)})`;
    retrySelBtn.hidden = !retryable;
    updateSelection();
    renderIfChanged(contextBox, b.context, (ctx) => [
      h("p", { class: "muted small" }, b.type === "chain"
        ? "Accumulated: the context passed along the chain, with every step's updates merged in."
        : "Shared: merged into every job's arguments."),
      Object.keys(ctx || {}).length ? jsonBlock(ctx, { label: "Context" }) : h("p", { class: "muted" }, "Empty."),
    ]);
    stepsSection.hidden = b.type !== "chain";
    compsSection.hidden = compTotal === 0;
    renderStatusOptions(b);
  }

  function renderStatusOptions(b) {
    const counts = view.kind === "job" ? b : null;
    renderIfChanged(statusSel, [view.kind, JOB_STATUSES.map((s) => counts?.[s])], () => [
      h("option", { value: "" }, counts ? `any (${num(b.total)})` : "any"),
      JOB_STATUSES.map((s) => h("option", { value: s }, counts ? `${s} (${num(counts[s])})` : s)),
    ]);
    statusSel.value = view.status;
  }

  async function loadBatch(pending) {
    const b = await (pending ?? api(`/v1/batches/${enc(id)}`, { signal }));
    const changed = JSON.stringify(b) !== JSON.stringify(batch);
    batch = b;
    loadError.hidden = true;
    renderBatch(b);
    return changed;
  }

  // ---- jobs --------------------------------------------------------------------------------
  function jobTotal() {
    if (!batch) return null;
    if (view.kind === "job") return view.status ? batch[view.status] : batch.total;
    if (view.kind === "compensation" && !view.status) {
      const c = batch.compensations;
      return c.open + c.completed + c.failed + c.cancelled;
    }
    return null; // not counted by the API: page on until a short page
  }

  function jobDetails(j, cols) {
    const history = h("div", {}, h("p", { class: "muted small" }, "Loading attempts…"));
    api(`/v1/batches/${enc(id)}/jobs/${enc(j.id)}`, { signal }).then((full) => {
      history.replaceChildren(full.attempt_history.length
        ? h("table", { class: "grid attempts" },
          h("caption", {}, "Attempts"),
          h("thead", {}, h("tr", {}, ["#", "Status", "Worker", "Started", "Finished", "Error"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, full.attempt_history.map((a) => h("tr", {},
            h("td", { "data-label": "#", class: "num" }, String(a.attempt)),
            h("td", { "data-label": "Status" }, badge(a.status)),
            h("td", { "data-label": "Worker", class: "mono small" }, a.worker ?? "—"),
            h("td", { "data-label": "Started" }, time(a.started_at)),
            h("td", { "data-label": "Finished" }, time(a.finished_at)),
            h("td", { "data-label": "Error", class: "mono small" }, a.error ?? "")))))
        : h("p", { class: "muted small" }, "No attempt yet."));
    }).catch((err) => history.replaceChildren(h("p", { class: "error" }, String(err))));
    return h("tr", { class: "details-row", id: `details-${j.id}` },
      h("td", { colspan: String(cols) },
        h("div", { class: "job-details" },
          h("div", {}, h("h3", {}, "Arguments"), jsonBlock(j.args, { label: "Arguments" })),
          j.status === "completed" ? h("div", {}, h("h3", {}, "Result"), jsonBlock(j.result, { label: "Result" })) : null,
          j.error ? h("div", {}, h("h3", {}, "Error"), h("pre", { class: "error-text" }, j.error)) : null,
          j.original_job_id ? h("p", {}, `Undoes ${j.original_job_id}.`) : null,
          h("p", { class: "small" }, "Queued ", time(j.queued_at), " · started ", time(j.started_at), " · finished ", time(j.finished_at),
            ` · timeout ${j.timeout_s} s`),
          history)));
  }

  function jobRows(jobs) {
    const cols = canAct ? 8 : 7;
    return jobs.flatMap((j) => {
      const isOpen = opened.has(j.id);
      const tick = canAct
        ? h("td", { class: "tick", "data-label": "Select" }, j.status === "failed" && retrySelBtn.hidden === false
          ? h("input", {
            type: "checkbox", checked: selected.has(j.id), "aria-label": `Select ${j.id} to retry`,
            onchange: (e) => { if (e.target.checked) selected.add(j.id); else selected.delete(j.id); updateSelection(); },
          })
          : null)
        : null;
      const toggle = h("button", {
        type: "button", class: "link", "aria-expanded": String(isOpen), "aria-controls": `details-${j.id}`,
        onclick: () => { if (opened.has(j.id)) opened.delete(j.id); else opened.add(j.id); jobsBody.dataset.sig = ""; renderJobs(lastJobs); },
      }, isOpen ? "Hide" : "Show");
      const row = h("tr", { dataset: { id: j.id, status: j.status } },
        tick,
        h("td", { "data-label": "#", class: "num" }, String(j.position)),
        h("td", { "data-label": "Name" }, h("div", {}, h("span", { class: "name" }, j.name), j.error ? h("div", { class: "row-error" }, j.error) : null)),
        h("td", { "data-label": "Status" }, badge(j.status)),
        h("td", { "data-label": "Attempts", class: "num" }, `${j.attempts} / ${j.max_attempts}`),
        h("td", { "data-label": "Started" }, time(j.started_at)),
        h("td", { "data-label": "Duration", class: "num" }, j.started_at ? duration(between(j.started_at, j.finished_at)) : "—"),
        h("td", { "data-label": "Details" }, toggle));
      return isOpen ? [row, jobDetails(j, cols)] : [row];
    });
  }

  let lastJobs = [];
  function renderJobs(jobs) {
    lastJobs = jobs;
    // A ticked job that is no longer failed (retried meanwhile) cannot be retried again.
    for (const j of jobs) if (j.status !== "failed") selected.delete(j.id);
    updateSelection();
    renderIfChanged(jobsBody, [jobs, [...opened], canAct && !retrySelBtn.hidden], () =>
      jobs.length ? jobRows(jobs) : h("tr", {}, h("td", { colspan: "8", class: "muted" }, "No jobs here.")));
    const total = jobTotal();
    const first = jobs.length ? view.offset + 1 : 0;
    const last = view.offset + jobs.length;
    jobsInfo.textContent = !jobs.length && view.offset === 0 ? "No jobs" : total === null ? `Jobs ${num(first)}–${num(last)}` : `Jobs ${num(first)}–${num(last)} of ${num(total)}`;
    const pages = total === null ? null : Math.max(1, Math.ceil(total / PAGE));
    const page = Math.floor(view.offset / PAGE) + 1;
    const hasNext = total === null ? jobs.length === PAGE : view.offset + PAGE < total;
    renderIfChanged(pager, [view.offset, pages, hasNext], () => {
      const goTo = (n) => { view.offset = (n - 1) * PAGE; loadJobs(); };
      const input = h("input", { type: "number", min: "1", max: pages ? String(pages) : null, value: String(page), id: "job-page", class: "page-input" });
      return [
        h("button", { type: "button", disabled: view.offset === 0, onclick: () => goTo(page - 1) }, "← Previous"),
        h("form", { class: "page-form", onsubmit: (e) => { e.preventDefault(); const n = Number(input.value); if (n >= 1) goTo(pages ? Math.min(n, pages) : n); } },
          h("label", { for: "job-page" }, "Page"), input, pages ? h("span", {}, ` of ${num(pages)}`) : null),
        h("button", { type: "button", disabled: !hasNext, onclick: () => goTo(page + 1) }, "Next →"),
      ];
    });
  }

  let jobsToken = 0;
  async function showJobs(token, pending) {
    const r = await pending;
    if (token !== jobsToken) return; // a newer page was asked for meanwhile
    if (batch) renderStatusOptions(batch);
    renderJobs(r.jobs);
  }

  function loadJobs() {
    return showJobs(++jobsToken, api(jobsPath(id, view), { signal }));
  }

  function updateSelection() {
    retrySelBtn.textContent = `Retry selected (${num(selected.size)})`;
    retrySelBtn.disabled = selected.size === 0;
  }

  // ---- chain steps, compensations, callbacks ---------------------------------------------
  async function loadSteps() {
    const r = await api(`/v1/batches/${enc(id)}/jobs?kind=job&limit=${STEPS_SHOWN}`, { signal });
    renderIfChanged(stepsBox, r.jobs.map((j) => [j.position, j.name, j.status]), () => [
      h("ol", { class: "steps" }, r.jobs.map((j) => h("li", { class: `step s-${j.status}` },
        h("span", { class: "num muted" }, `${j.position + 1}.`), h("span", { class: "name" }, j.name), badge(j.status)))),
      batch.total > STEPS_SHOWN ? h("p", { class: "muted small" }, `The first ${STEPS_SHOWN} of ${num(batch.total)} steps; all are in the jobs table.`) : null,
    ]);
  }

  async function loadCompensations() {
    const r = await api(`/v1/batches/${enc(id)}/jobs?kind=compensation&limit=1000`, { signal });
    const order = (j) => (j.started_at ? Date.parse(j.started_at) : Infinity);
    const ran = [...r.jobs].sort((a, b) => order(a) - order(b) || a.position - b.position);
    renderIfChanged(compsBox, ran.map((j) => [j.id, j.status, j.started_at, j.error]), () =>
      h("ol", { class: "steps" }, ran.map((j) => h("li", { class: `step s-${j.status}` },
        h("span", { class: "name" }, j.name), h("span", { class: "muted small" }, ` undoes ${j.original_job_id ?? "?"}`), badge(j.status),
        j.started_at ? h("span", { class: "small" }, time(j.started_at)) : null,
        j.error ? h("div", { class: "row-error" }, j.error) : null))));
  }

  let callbacksPending = true;
  async function loadCallbacks() {
    const { webhooks } = await api(`/v1/batches/${enc(id)}/callbacks`, { signal });
    callbacksPending = webhooks.some((w) => w.status === "pending");
    renderIfChanged(callbacksBox, webhooks, () => webhooks.length
      ? h("div", { class: "table-wrap" }, h("table", { class: "grid callbacks" },
        h("caption", { class: "sr-only" }, "Webhook deliveries"),
        h("thead", {}, h("tr", {}, ["Event", "URL", "Status", "Deliveries"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, webhooks.map((w) => h("tr", {},
          h("td", { "data-label": "Event" }, w.event_type),
          h("td", { "data-label": "URL", class: "mono small url" }, w.url),
          h("td", { "data-label": "Status" }, badge(w.status)),
          h("td", { "data-label": "Deliveries" }, w.deliveries.length
            ? h("ol", { class: "deliveries" }, w.deliveries.map((d) => h("li", {},
              h("span", { class: `code ${d.status_code >= 200 && d.status_code < 300 ? "ok" : "bad"}` }, d.status_code ? String(d.status_code) : "no answer"),
              ` ${time(d.at).textContent}${d.duration_ms !== undefined ? ` · ${d.duration_ms} ms` : ""}${d.error ? ` · ${d.error}` : ""}`)))
            : h("span", { class: "muted" }, "not sent yet")))))))
      : h("p", { class: "muted" }, "No callbacks for this batch."));
  }

  // ---- live --------------------------------------------------------------------------------
  // The batch and the jobs page are asked for together; the batch is shown first (the jobs
  // table's tick boxes and totals depend on it).
  async function loadAll(pending = {}) {
    const token = ++jobsToken;
    const jobs = pending.jobs ?? api(jobsPath(id, view), { signal });
    jobs.catch(() => {});
    await loadBatch(pending.batch);
    await showJobs(token, jobs);
    // For measuring: when the first page of jobs is in the page (tests/test_dashboard.py reads it).
    if (pending.jobs) performance.mark("batchq:first-jobs-shown");
    await loadOthers();
  }

  async function loadRest() {
    await Promise.all([loadJobs(), loadOthers()]);
  }

  async function loadOthers() {
    await Promise.all([
      batch.type === "chain" ? loadSteps() : null,
      compsSection.hidden ? null : loadCompensations(),
      callbacksPending || finished(batch) ? loadCallbacks() : null,
    ]);
  }

  function addEvent(e) {
    lastEventId = Math.max(lastEventId, e.id);
    eventsList.prepend(h("li", { class: `event e-${e.type}` },
      h("span", { class: "when" }, time(e.at)), " ", h("span", { class: "type" }, e.type.replaceAll("_", " ")), " ",
      h("span", { class: "what" }, eventText(e))));
    while (eventsList.children.length > EVENTS_KEPT) eventsList.lastElementChild.remove();
  }

  let soon = null;
  function refreshSoon() {
    soon ??= sleep(0.25, signal).then(() => { soon = null; return signal.aborted ? null : loadAll(); }).catch(() => {});
  }

  async function follow() {
    if (streaming) return;
    streaming = true;
    try {
      for await (const e of batchEvents(id, lastEventId, signal)) {
        addEvent(e);
        refreshSoon();
      }
    } catch (err) {
      if (!signal.aborted) console.warn("event stream:", err);
    } finally {
      streaming = false;
    }
    if (!signal.aborted) refreshSoon(); // the stream ends with the batch: show the end at once
  }

  async function act(question, yes, call, done) {
    if (!(await confirmAction(question, yes))) return;
    actionError.hidden = true;
    let reply;
    try {
      reply = await call();
    } catch (err) {
      actionError.textContent = err instanceof ApiError ? `The API refused: ${err}` : `The request failed: ${err}`;
      actionError.hidden = false;
      return;
    }
    toast(done(reply));
    selected.clear();
    follow(); // a retried batch runs again: follow its events from where they stopped
    await loadAll().catch(() => {}); // the next refresh tries again
  }

  cancelBtn.addEventListener("click", () => act(
    `Cancel batch ${id}? Nothing more of it will run.`, "Cancel batch",
    () => api(`/v1/batches/${enc(id)}/cancel`, { method: "POST" }),
    () => "Batch cancelled"));
  retryAllBtn.addEventListener("click", () => act(
    `Retry all ${num(batch.failed)} failed jobs of batch ${id}?`, "Retry all",
    () => api(`/v1/batches/${enc(id)}/retry`, { method: "POST" }),
    (r) => `${num(r.retried)} ${r.retried === 1 ? "job" : "jobs"} retried`));
  retrySelBtn.addEventListener("click", () => {
    const ids = [...selected];
    return act(`Retry ${ids.length === 1 ? ids[0] : `${num(ids.length)} jobs`}?`, "Retry",
      () => api(`/v1/batches/${enc(id)}/jobs/retry`, { method: "POST", body: { job_ids: ids } }),
      (r) => `${num(r.retried)} ${r.retried === 1 ? "job" : "jobs"} retried`);
  });

  (async () => {
    try {
      await loadAll(first);
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status === 404) {
        main.replaceChildren(h("h1", {}, "No such batch"), h("p", {}, `There is no batch ${id} here.`),
          h("p", {}, h("a", { href: "./", "data-link": true }, "Back to the batches")));
        return;
      }
      loadError.textContent = `Could not load the batch: ${err}`;
      loadError.hidden = false;
    }
    follow();
    let quiet = 0;
    await sleep(REFRESH_S, signal);
    every(REFRESH_S, signal, async () => {
      const changed = await loadBatch();
      // A finished batch changes only when retried (here or elsewhere): then follow it again.
      if (!finished(batch) && !streaming) follow();
      // While it runs, its jobs move without the batch changing; once it ended, they do not.
      if (changed || !finished(batch) || callbacksPending || ++quiet % 5 === 0) await loadRest();
    }, (err) => {
      loadError.textContent = `Could not refresh the batch: ${err}`;
      loadError.hidden = false;
    });
  })();
}

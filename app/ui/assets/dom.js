// Small pieces of the page: elements, formats, the progress bar, JSON, dialogs.
// Every text that comes from the API goes in as text (never as HTML).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export const fmt = new Intl.NumberFormat("en");
export const num = (n) => fmt.format(n ?? 0);

export function ms(iso) {
  return iso ? Date.parse(iso) : null;
}

// "4 s", "3 min 20 s", "2 h 5 min", "3 d 4 h"
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function between(startIso, endIso) {
  const start = ms(startIso);
  if (start === null) return null;
  return ((ms(endIso) ?? Date.now()) - start) / 1000;
}

export function ago(iso) {
  const s = between(iso, null);
  return s === null ? "—" : `${duration(s)} ago`;
}

export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso }, d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }));
}

export function badge(status) {
  return h("span", { class: `badge s-${status || "none"}` }, (status || "—").replaceAll("_", " "));
}

// A bar in three segments (completed, failed, cancelled) over the total, with a text twin for
// screen readers. Segments change width in place: nothing around them moves.
export function progressBar(b, { large = false } = {}) {
  const bar = h("div", { class: `bar${large ? " large" : ""}`, role: "img" },
    h("span", { class: "seg completed" }), h("span", { class: "seg failed" }), h("span", { class: "seg cancelled" }));
  setProgress(bar, b);
  return bar;
}

export function setProgress(bar, b) {
  const total = b.total || 0;
  const part = (n) => (total ? `${(100 * n) / total}%` : "0%");
  const [c, f, x] = bar.children;
  c.style.width = part(b.completed);
  f.style.width = part(b.failed);
  x.style.width = part(b.cancelled);
  bar.setAttribute("aria-label",
    `${b.percentage ?? 0}% done: ${num(b.completed)} completed, ${num(b.failed)} failed, ${num(b.cancelled)} cancelled of ${num(total)}`);
  bar.title = bar.getAttribute("aria-label");
}

export function jsonBlock(value, { label = "JSON", openBelow = 600 } = {}) {
  const text = value === undefined ? "—" : JSON.stringify(value, null, 2);
  const pre = h("pre", { class: "json", tabindex: "0", "aria-label": label }, text);
  if (text.length <= openBelow) return pre;
  const lines = text.split("\n").length;
  return h("details", { class: "json-details" }, h("summary", {}, `${label}: ${num(lines)} lines (${num(text.length)} characters)`), pre);
}

// Replace a container's content only when the data it shows changed, keeping the open state of
// its <details> (so a live refresh never closes what the user opened).
export function renderIfChanged(container, data, render) {
  const sig = JSON.stringify(data);
  if (container.dataset.sig === sig) return false;
  const open = new Set([...container.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key));
  container.dataset.sig = sig;
  container.replaceChildren(...[render(data)].flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  for (const d of container.querySelectorAll("details[data-key]")) if (open.has(d.dataset.key)) d.open = true;
  return true;
}

export function confirmAction(text, yes = "Confirm") {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yes;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true }));
}

let toastTimer;
export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("shown"), 4000);
}

export const sleep = (s, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, s * 1000);
  signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
});

// Run `step` now and then every `seconds` while the page shows (paused in a hidden tab) until
// `signal` aborts; a step that throws is reported through `onError` and the loop goes on.
export async function every(seconds, signal, step, onError) {
  while (!signal.aborted) {
    if (!document.hidden) {
      try {
        await step();
      } catch (err) {
        if (signal.aborted) return;
        onError?.(err);
      }
    }
    await sleep(seconds, signal);
  }
}

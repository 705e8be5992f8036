// The public /v1 API, seen from the page: the key, JSON calls, and a batch's event stream.
//
// The key (when the API asks for one) lives in sessionStorage: it goes with the tab, never to
// disk for good, and is sent as "Authorization: Bearer <key>". EventSource cannot send that
// header, so the event stream is read with fetch and a streaming body reader.

const KEY = "batchq.key";
export const apiRoot = new URL("../", document.baseURI); // the page is at <root>/ui/

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || "http_error";
    this.field = error?.field;
  }
  toString() {
    return `${this.status} ${this.code}: ${this.message}`;
  }
}

export const auth = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set key(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
};

let asking = null; // one prompt for every request refused at once

function askForKey(refused) {
  if (!asking) {
    const dialog = document.getElementById("key-dialog");
    const reason = document.getElementById("key-reason");
    reason.textContent = refused
      ? `The key was refused (${refused}). Enter another one.`
      : "This batchq asks for an API key.";
    asking = new Promise((resolve) => {
      const form = document.getElementById("key-form");
      form.addEventListener("submit", () => {
        auth.key = form.elements.key.value.trim();
        // A new key may belong to another tenant with other scopes: start the page afresh.
        location.reload();
        resolve();
      }, { once: true });
      dialog.addEventListener("cancel", (e) => e.preventDefault()); // nothing works without one
      dialog.showModal();
    });
  }
  return asking;
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const key = auth.key;
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorOf(response) {
  const body = await response.json().catch(() => null);
  return new ApiError(response.status, body?.error);
}

async function send(path, init) {
  const sent = auth.key;
  const response = await fetch(new URL(path.replace(/^\//, ""), apiRoot), init);
  if (response.status === 401) {
    const err = await errorOf(response);
    // Only the key this request carried was refused: a late answer to a request sent before
    // the user typed a key must not throw the new one away.
    const refused = Boolean(sent) && auth.key === sent;
    if (refused || !auth.key) {
      auth.key = null;
      await askForKey(refused ? err.message : null);
    }
    return new Promise(() => {}); // the page reloads with the new key
  }
  return response;
}

// GET or POST a JSON call; resolves to the reply, throws ApiError for an error reply.
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await send(path, init);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

// The events of a batch after event id `after`, as they come, until the batch ends (the
// server closes the stream then) or `signal` aborts.
export async function* batchEvents(batchId, after, signal) {
  const path = `/v1/batches/${encodeURIComponent(batchId)}/events?after=${after}`;
  const response = await send(path, { signal, headers: headers({ Accept: "text/event-stream" }) });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
        if (data.length) yield JSON.parse(data.join("\n"));
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// Who the key is: {tenant, scopes}, or null when this server has no GET /v1/me (then every
// action is offered, and a refusal of the API is shown as it comes).
export async function whoAmI() {
  try {
    return await api("/v1/me");
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) return null;
    throw err;
  }
}

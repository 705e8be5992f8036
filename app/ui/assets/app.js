// The dashboard: who the key is, which page the address names, and moving between pages
// without reloading. Pages: batches (the list), batches/<id> (one batch), queues.

import { auth, whoAmI } from "./api.js";
import { h } from "./dom.js";
import { batchesPage } from "./batches.js";
import { batchPage } from "./batch.js";
import { queuesPage } from "./queues.js";

const main = document.getElementById("main");
const basePath = new URL(document.baseURI).pathname; // ".../ui/"
let current = null; // AbortController of the page on show

// What the key may do. `me` is null on a server without GET /v1/me: everything is offered
// and the API's refusals are shown as they come.
// `ready` settles once GET /v1/me answered (pages that offer actions wait for it).
export const session = { me: null, canAct: true, ready: null };

function route() {
  const path = location.pathname.startsWith(basePath) ? location.pathname.slice(basePath.length) : "";
  const params = new URLSearchParams(location.search);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "batches" && parts[1]) return { name: "batch", page: batchPage, id: parts[1], params };
  if (parts[0] === "queues") return { name: "queues", page: queuesPage, params };
  if (parts.length === 0 || parts[0] === "batches") return { name: "batches", page: batchesPage, params };
  return { name: "missing", page: missingPage, params };
}

function missingPage(main) {
  document.title = "Not found · batchq";
  main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "./", "data-link": true }, "Back to the batches")));
}

export function show() {
  current?.abort();
  current = new AbortController();
  const r = route();
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === (r.name === "batch" ? "batches" : r.name)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  r.page(main, { ...r, signal: current.signal });
}

// Go to a page of the dashboard (a path relative to /ui/) without reloading.
export function go(path, { replace = false, focus = true } = {}) {
  const url = new URL(path, document.baseURI);
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  show();
  if (focus) {
    main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", show);

document.getElementById("forget-key").addEventListener("click", () => {
  auth.key = null;
  location.reload();
});

async function lookUpKey() {
  const forget = document.getElementById("forget-key");
  forget.hidden = !auth.key;
  try {
    session.me = await whoAmI(); // asks for a key first when the API wants one
  } catch (err) {
    console.warn("GET /v1/me:", err); // the page's own calls will show what is wrong
    return;
  }
  forget.hidden = !auth.key;
  if (session.me) {
    const scopes = session.me.scopes || [];
    session.canAct = scopes.includes("produce") || scopes.includes("admin");
    const tenant = document.getElementById("tenant");
    const limits = session.canAct ? "" : scopes.includes("read") ? " (read only)" : " (may not read batches)";
    tenant.textContent = `Tenant: ${session.me.tenant}${limits}`;
    tenant.title = `Scopes: ${scopes.join(", ") || "none"}`;
    tenant.hidden = false;
  }
  document.body.dataset.canAct = String(session.canAct);
}

session.ready = lookUpKey();
show(); // the page asks for its data meanwhile

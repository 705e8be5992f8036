"""The dashboard (/ui) in a real browser: headless Debian Chromium driven by Playwright, against a
real `batchq serve` process and real `batchq worker` processes.

Chromium comes from Debian's packages (scripts/browser.sh installs it when missing; this module
runs the same script if it still is); Playwright's own browser downloads are never used. Every
wait is a deadline (Playwright's `expect` retries until its timeout), never a sleep. The page
talks to the API like any client, so these tests also show the public /v1 API is enough.

`test_screenshots` takes the shots of README's Dashboard section into build/screenshots/ (ignored by
git, so a test run leaves the tree clean); `BATCHQ_SCREENSHOTS=docs/screenshots` refreshes README's.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright  # a test extra: never skipped for want of it

from conftest import BACKENDS
from processes import FAST, ROOT, Processes, clean_env, serve, wait_for


pytestmark = pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")

CHROMIUM = "/usr/bin/chromium"
# As root, in a closed network: no sandbox, and no background connections to Google's hosts.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(os.environ.get("BATCHQ_SCREENSHOTS") or ROOT / "build" / "screenshots")
SERVER = dict(FAST, BATCHQ_WEBHOOK_BACKOFF_BASE_S="0.1", BATCHQ_WEBHOOK_BACKOFF_MAX_S="0.2")

expect.set_options(timeout=30_000)


def public_routes() -> list[tuple[str, re.Pattern[str]]]:
    """(method, path pattern) of every operation in openapi/openapi.json, plus GET /v1/me: the
    public route of scoped keys, which the page asks for and tolerates missing (404)."""
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    routes = [("GET", re.compile(r"/v1/me"))]
    for path, operations in spec["paths"].items():
        pattern = re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)))
        routes += [(method.upper(), pattern) for method in operations]
    return routes


PUBLIC = public_routes()


def private_calls(requests: list[tuple[str, str]], base: str) -> list[str]:
    """The requests of the page that are neither its own files (/ui/...) nor public API operations."""
    wrong = []
    for method, url in requests:
        assert url.startswith(base + "/"), f"the page fetched from elsewhere: {url}"
        path = url[len(base):].split("?")[0]
        if path.startswith("/ui/") and method == "GET":
            continue
        if not any(m == method and p.fullmatch(path) for m, p in PUBLIC):
            wrong.append(f"{method} {path}")
    return wrong


def ensure_chromium() -> None:
    if not Path(CHROMIUM).exists():
        done = subprocess.run(["bash", str(ROOT / "scripts" / "browser.sh")], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0 and Path(CHROMIUM).exists(), f"could not install Debian's chromium:\n{done.stdout}{done.stderr}"


class Dash:
    """A running server (and a worker on the `default` queue) and a client of its API."""

    def __init__(self, url: str, procs: Processes, headers: dict[str, str] | None = None):
        self.url = url
        self.procs = procs
        self.api = httpx.Client(base_url=url, timeout=300, headers=headers or {})

    def ui(self, path: str = "") -> str:
        return f"{self.url}/ui/{path}"

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        r = self.api.post("/v1/batches", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def wait_status(self, batch_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict | None:
            batch = self.api.get(f"/v1/batches/{batch_id}").json()
            return batch if batch["status"] in statuses else None

        return wait_for(reached, timeout, f"batch {batch_id} to be {statuses}", self.procs)  # type: ignore[return-value]

    def worker(self, name: str, *queues: str, concurrency: int = 4) -> None:
        args = [a for q in queues for a in ("--queue", q)]
        self.procs.start(name, "worker", "examples.registry:registry", "--api-url", self.url, "--poll-wait", "1",
                         "--concurrency", str(concurrency), *args)


def start_dash(tmp: Path, **settings: str) -> Dash:
    procs = Processes(tmp, clean_env(**SERVER, **settings))
    url = serve(procs, tmp)
    dash = Dash(url, procs, {"Authorization": f"Bearer {settings['BATCHQ_API_TOKEN']}"} if "BATCHQ_API_TOKEN" in settings else None)
    dash.worker("worker", "default")
    return dash


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ensure_chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    dash = start_dash(tmp_path_factory.mktemp("dashboard"))
    try:
        yield dash
    finally:
        dash.procs.stop_all()
        dash.api.close()


def open_page(browser: Any, viewport: dict[str, int] = DESKTOP) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page, errors


@pytest.fixture
def page(browser: Any, dash: Dash) -> Iterator[Any]:
    """A fresh browser tab (its own session storage). The test fails on an uncaught script error,
    and on any request of the page that is not its own file or a public API operation."""
    context, page, errors = open_page(browser)
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"script errors on the page: {errors}\n{dash.procs.output()}"
    assert requests and not private_calls(requests, dash.url), private_calls(requests, dash.url)


def badge(page: Any) -> Any:
    return page.locator(".title-row .badge")


def counter(page: Any, name: str) -> Any:
    return page.locator(f".counter.c-{name} dd")


def confirm(page: Any, expected_text: str | None = None) -> None:
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    if expected_text:
        expect(dialog).to_contain_text(expected_text)
    dialog.locator("#confirm-yes").click()
    expect(dialog).to_be_hidden()


# A screen reader's basics: one h1, every control and image named, every table captioned.
UNNAMED = """() => {
  const named = (el) => (el.labels && el.labels.length) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby")
    || el.getAttribute("title") || el.textContent.trim() || el.getAttribute("alt") !== null;
  const visible = (el) => el.getClientRects().length > 0;
  return {
    h1: document.querySelectorAll("h1").length,
    unnamed: [...document.querySelectorAll("button, input, select, a, img")].filter((el) => visible(el) && !named(el))
      .map((el) => el.outerHTML.slice(0, 80)),
    uncaptioned: [...document.querySelectorAll("table")].filter((t) => !t.caption).length,
  };
}"""


def assert_accessible_basics(page: Any) -> None:
    found = page.evaluate(UNNAMED)
    assert found == {"h1": 1, "unnamed": [], "uncaptioned": 0}, found


def job_rows(page: Any) -> Any:
    return page.locator("table.jobs tbody tr[data-id]")


# ---- batches: live progress, failures and retries, cancel, refusals, paging -----------------


def test_a_new_batch_shows_up_and_its_bar_reaches_100_percent_without_reloading(page: Any, dash: Dash):
    page.goto(dash.ui())
    expect(page.get_by_role("heading", name="Batches")).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    # No worker serves queue `live` yet: the batch waits at 0 % until one starts.
    batch = dash.create({"jobs": [{"name": "Sleep", "args": {"seconds": 0.05}} for _ in range(24)], "queue": "live",
                         "context": {"customer": "acme"}})
    row = page.locator(f"tr[data-id='{batch['id']}']")
    expect(row).to_be_visible()  # the list refreshes by itself
    expect(row).to_contain_text("running")
    row.get_by_role("link").click()
    expect(page).to_have_url(dash.ui(f"batches/{batch['id']}"))
    expect(badge(page)).to_have_text("running")
    expect(page.locator(".big-pct")).to_have_text("0%")
    expect(counter(page, "total")).to_have_text("24")
    expect(page.locator("#h-context").locator("..")).to_contain_text('"customer": "acme"')
    below = page.locator("#h-context").bounding_box()

    dash.worker("worker-live", "live")
    expect(page.locator(".big-pct")).to_have_text("100%", timeout=90_000)
    expect(badge(page)).to_have_text("completed")
    expect(counter(page, "completed")).to_have_text("24")
    expect(counter(page, "running")).to_have_text("0")
    expect(page.locator(".events li").first).to_contain_text("completed")
    expect(page.locator(".bar.large .seg.completed")).to_have_attribute("style", re.compile(r"width: 100%"))
    assert page.evaluate("window.__sameDocument") is True  # never reloaded
    assert page.locator("#h-context").bounding_box() == below  # the counters changed, nothing below them moved


def test_a_failed_jobs_error_is_shown_and_it_is_retried_from_the_page(page: Any, dash: Dash):
    batch = dash.create({"jobs": [{"name": "Echo", "args": {"n": i}} for i in range(3)]
                         + [{"name": "FailOnce", "args": {"message": f"card {i} declined"}} for i in range(2)],
                         "failure_policy": "allow_failures"})
    dash.wait_status(batch["id"], "completed_with_failures")
    page.goto(dash.ui(f"batches/{batch['id']}"))
    expect(badge(page)).to_have_text("completed with failures")
    page.get_by_label("Status", exact=True).select_option("failed")
    expect(page.locator("#h-jobs").locator("..")).to_contain_text("Jobs 1–2 of 2")
    rows = job_rows(page)
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator(".row-error")).to_have_text("PermanentError: card 0 declined")
    rows.nth(0).get_by_role("button", name="Show").click()
    details = page.locator(".details-row")
    expect(details).to_contain_text('"message": "card 0 declined"')  # its arguments
    expect(details.locator("table.attempts tbody tr")).to_have_count(1)  # and its one attempt
    expect(details.locator("table.attempts")).to_contain_text("PermanentError: card 0 declined")

    # Retry the ticked one: it runs again (its second attempt succeeds), the other stays failed.
    first_id = rows.nth(0).get_attribute("data-id")
    rows.nth(0).get_by_role("checkbox").check()
    page.get_by_role("button", name="Retry selected (1)").click()
    confirm(page, first_id)
    expect(page.locator("#toast")).to_have_text("1 job retried")
    expect(counter(page, "completed")).to_have_text("4")
    expect(counter(page, "failed")).to_have_text("1")
    expect(badge(page)).to_have_text("completed with failures")
    job = dash.api.get(f"/v1/batches/{batch['id']}/jobs/{first_id}").json()
    assert job["status"] == "completed" and job["attempts"] == 2, job

    # Retry every failed job (the one left).
    page.get_by_role("button", name="Retry all failed jobs (1)").click()
    confirm(page)
    expect(badge(page)).to_have_text("completed")
    expect(counter(page, "failed")).to_have_text("0")
    expect(page.get_by_role("button", name=re.compile("Retry all"))).to_be_hidden()
    assert dash.api.get(f"/v1/batches/{batch['id']}").json()["completed"] == 5


def test_a_batch_is_cancelled_from_the_page(page: Any, dash: Dash):
    batch = dash.create({"jobs": ["A", "B", "C"], "queue": "nobody"})  # no worker serves `nobody`
    page.goto(dash.ui(f"batches/{batch['id']}"))
    expect(badge(page)).to_have_text("running")
    page.get_by_role("button", name="Cancel batch").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text(batch["id"])
    dialog.get_by_role("button", name="Keep it").click()  # asked, and said no: nothing happens
    expect(dialog).to_be_hidden()
    assert dash.api.get(f"/v1/batches/{batch['id']}").json()["status"] == "running"
    page.get_by_role("button", name="Cancel batch").click()
    confirm(page)
    expect(badge(page)).to_have_text("cancelled")
    expect(counter(page, "cancelled")).to_have_text("3")
    expect(page.get_by_role("button", name="Cancel batch")).to_be_hidden()
    assert dash.api.get(f"/v1/batches/{batch['id']}").json()["status"] == "cancelled"


def test_a_refused_action_shows_the_apis_message(page: Any, dash: Dash):
    # 409: the batch was cancelled elsewhere while the question was on the screen.
    batch = dash.create({"jobs": ["A"], "queue": "nobody"})
    page.goto(dash.ui(f"batches/{batch['id']}"))
    page.get_by_role("button", name="Cancel batch").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    assert dash.api.post(f"/v1/batches/{batch['id']}/cancel").status_code == 200
    confirm(page)
    alert = page.locator(".summary [role=alert]")
    expect(alert).to_contain_text("409 conflict")
    expect(alert).to_contain_text(f"batch {batch['id']} is already cancelled")

    # 422: the ticked job was retried elsewhere, so it is no longer a failed job.
    batch = dash.create({"jobs": [{"name": "FailOnce"}, {"name": "FailOnce"}], "failure_policy": "allow_failures"})
    dash.wait_status(batch["id"], "completed_with_failures")
    page.goto(dash.ui(f"batches/{batch['id']}"))
    rows = job_rows(page)
    expect(rows.nth(0).get_by_role("checkbox")).to_be_visible()
    job_id = rows.nth(0).get_attribute("data-id")
    rows.nth(0).get_by_role("checkbox").check()
    page.get_by_role("button", name="Retry selected (1)").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    assert dash.api.post(f"/v1/batches/{batch['id']}/jobs/retry", json={"job_ids": [job_id]}).status_code == 200
    confirm(page)
    alert = page.locator(".summary [role=alert]")
    expect(alert).to_contain_text("422 validation_error")
    expect(alert).to_contain_text(f"not failed jobs of batch {batch['id']}: {job_id}")


def test_paging_through_1000_jobs(page: Any, dash: Dash):
    batch = dash.create({"job": "Noop", "items": list(range(1000)), "queue": "paging"})  # nobody runs them
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/jobs?" in r.url else None)
    page.goto(dash.ui(f"batches/{batch['id']}"))
    info = page.locator("#h-jobs").locator("..").locator(".filters .grow")
    expect(info).to_have_text("Jobs 1–50 of 1,000")
    rows = job_rows(page)
    expect(rows).to_have_count(50)
    expect(rows.first.locator("td").nth(1)).to_have_text("0")
    page.get_by_role("button", name="Next →").click()
    expect(info).to_have_text("Jobs 51–100 of 1,000")
    expect(rows.first.locator("td").nth(1)).to_have_text("50")
    page.get_by_label("Page", exact=True).fill("20")
    page.get_by_label("Page", exact=True).press("Enter")
    expect(info).to_have_text("Jobs 951–1,000 of 1,000")
    expect(rows.last.locator("td").nth(1)).to_have_text("999")
    expect(page.get_by_role("button", name="Next →")).to_be_disabled()
    page.get_by_role("button", name="← Previous").click()
    expect(info).to_have_text("Jobs 901–950 of 1,000")
    page.get_by_label("Status", exact=True).select_option("completed")
    expect(info).to_have_text("No jobs")
    expect(page.locator("table.jobs tbody")).to_contain_text("No jobs here.")
    assert asked and all(re.search(r"[?&]limit=(50|100)(&|$)", u) for u in asked), asked  # one page at a time


def test_the_list_filters_pages_and_the_queues_update_live(page: Any, dash: Dash):
    made = [dash.create({"jobs": ["Noop"], "queue": "many"})["id"] for _ in range(28)]
    made += [dash.create({"type": "chain", "jobs": ["Noop", "Noop"], "queue": "many"})["id"] for _ in range(2)]
    page.goto(dash.ui("?queue=many"))
    rows = page.locator("table.batches tbody tr")
    expect(rows).to_have_count(25)
    expect(rows.first).to_have_attribute("data-id", made[-1])  # newest first
    page.get_by_role("link", name="Older →").click()
    expect(rows).to_have_count(5)
    expect(rows.last).to_have_attribute("data-id", made[0])
    page.get_by_role("link", name="← Newer").click()
    expect(rows).to_have_count(25)
    page.get_by_label("Type").select_option("chain")
    expect(rows).to_have_count(2)
    expect(page).to_have_url(re.compile(r"type=chain"))
    page.get_by_label("Status").select_option("failed")
    expect(page.get_by_text("No batches here.")).to_be_visible()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Queues").click()
    many = page.locator("table.queues tbody tr").filter(has=page.get_by_role("rowheader", name="many"))
    expect(many.locator("td").nth(0)).to_have_text("30")  # 28 + 2 chains' first steps
    expect(many.locator("td").nth(3)).not_to_have_text("—")  # the oldest message's age
    dash.worker("worker-many", "many")
    # Drained, seen without reloading (an empty queue that nothing declared leaves the list).
    page.wait_for_function("""() => ![...document.querySelectorAll("table.queues tbody tr")]
        .some((tr) => tr.cells[0].textContent.startsWith("many") && tr.cells[1].textContent !== "0")""", timeout=60_000)
    for batch_id in made:
        dash.wait_status(batch_id, "completed")


def test_callback_deliveries_show_their_status_codes(page: Any, dash: Dash):
    codes = [500]

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(codes.pop(0) if codes else 200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        batch = dash.create({"jobs": ["Noop"], "on_complete": {"url": url}})
        page.goto(dash.ui(f"batches/{batch['id']}"))
        callbacks = page.locator("table.callbacks")
        expect(callbacks.locator("tbody tr")).to_have_count(1)
        expect(callbacks).to_contain_text("delivered")
        expect(callbacks.locator(".deliveries li")).to_have_count(2)
        expect(callbacks.locator(".code")).to_have_text(["500", "200"])
    finally:
        server.shutdown()


# ---- keys -------------------------------------------------------------------------------------


def test_the_page_asks_for_a_key_and_keeps_it_for_the_session(browser: Any, tmp_path: Path):
    dash = start_dash(tmp_path, BATCHQ_API_TOKEN="s3cret-dashboard-key")
    context, page, errors = open_page(browser)
    try:
        batch = dash.create({"jobs": ["Noop"]})
        page.goto(dash.ui())
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("asks for an API key")
        page.get_by_label("Key", exact=True).fill("wrong")
        page.get_by_role("button", name="Use this key").click()
        expect(dialog).to_contain_text("The key was refused")
        page.get_by_label("Key", exact=True).fill("s3cret-dashboard-key")
        page.get_by_role("button", name="Use this key").click()
        expect(page.locator(f"tr[data-id='{batch['id']}']")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('batchq.key')") == "s3cret-dashboard-key"
        assert page.evaluate("localStorage.length") == 0  # never kept beyond the session
        page.goto(dash.ui(f"batches/{batch['id']}"))  # a new load in the same tab: no question
        expect(badge(page)).to_have_text("completed")
        expect(dialog).to_be_hidden()
        page.get_by_role("button", name="Forget key").click()
        expect(dialog).to_be_visible()
    finally:
        context.close()
        dash.procs.stop_all()
    assert not errors, errors


# Keys of the tenant "acme" with one scope each (BATCHQ_API_KEYS); the API token is an admin of the
# tenant "default" (the workers and the test use it).
READ_KEY, PRODUCE_KEY, WORK_KEY = "acme-read-key-0123456789", "acme-produce-key-0123456789", "acme-work-key-0123456789"
SCOPED_KEYS = [{"key": READ_KEY, "tenant": "acme", "scopes": ["read"]},
               {"key": PRODUCE_KEY, "tenant": "acme", "scopes": ["produce"]},
               {"key": WORK_KEY, "tenant": "acme", "scopes": ["work"]}]


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url)
    page.get_by_label("Key", exact=True).fill(key)
    page.get_by_role("button", name="Use this key").click()


def test_a_key_sees_its_tenant_only_and_the_actions_its_scopes_allow(browser: Any, tmp_path: Path):
    dash = start_dash(tmp_path, BATCHQ_API_KEYS=json.dumps(SCOPED_KEYS), BATCHQ_API_TOKEN="admin-token-0123456789")
    acme = httpx.Client(base_url=dash.url, headers={"Authorization": f"Bearer {PRODUCE_KEY}"})
    opened = []
    try:
        r = acme.post("/v1/batches", json={"jobs": ["A", "B"], "queue": "nobody"})
        assert r.status_code == 201, r.text
        ours = r.json()
        theirs = dash.create({"jobs": ["A"], "queue": "nobody"})  # the tenant "default"
        assert httpx.get(f"{dash.url}/v1/me", headers={"Authorization": f"Bearer {READ_KEY}"}).json()["scopes"] == ["read"]

        # read: the tenant's batches, no action.
        context, page, errors = open_page(browser)
        opened.append((context, errors))
        sign_in(page, dash.ui(), READ_KEY)
        expect(page.locator("#tenant")).to_have_text("Tenant: acme (read only)")
        expect(page.locator(f"tr[data-id='{ours['id']}']")).to_be_visible()
        expect(page.locator("table.batches tbody tr")).to_have_count(1)  # not the other tenant's
        page.goto(dash.ui(f"batches/{ours['id']}"))
        expect(badge(page)).to_have_text("running")
        expect(page.locator(".summary")).to_contain_text("This key cannot cancel or retry")
        expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)
        expect(page.get_by_role("checkbox")).to_have_count(0)
        page.goto(dash.ui(f"batches/{theirs['id']}"))
        expect(page.get_by_role("heading", name="No such batch")).to_be_visible()

        # produce: the actions.
        context, page, errors = open_page(browser)
        opened.append((context, errors))
        sign_in(page, dash.ui(f"batches/{ours['id']}"), PRODUCE_KEY)
        expect(page.locator("#tenant")).to_have_text("Tenant: acme")
        page.get_by_role("button", name="Cancel batch").click()
        confirm(page)
        expect(badge(page)).to_have_text("cancelled")

        # work only: may not read batches; the API's 403 is shown.
        context, page, errors = open_page(browser)
        opened.append((context, errors))
        sign_in(page, dash.ui(), WORK_KEY)
        expect(page.locator("#tenant")).to_have_text("Tenant: acme (may not read batches)")
        expect(page.get_by_role("alert")).to_contain_text("403 forbidden: this key lacks the `read` scope")
    finally:
        for context, _ in opened:
            context.close()
        acme.close()
        dash.procs.stop_all()
    assert not [e for _, errors in opened for e in errors]


# ---- a batch of 100,000 jobs -------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_a_batch_of_100000_jobs_renders_one_page_of_jobs(page: Any, dash: Dash):
    started = time.monotonic()
    batch = dash.create({"job": "Noop", "items": list(range(100_000)), "queue": "huge"})  # nobody runs them
    created_s = time.monotonic() - started
    jobs_replies: list[Any] = []
    page.on("response", lambda r: jobs_replies.append(r) if "/jobs?" in r.url else None)
    page.goto(dash.ui())  # the script and styles are loaded once, as a user arriving from the list would
    expect(page.get_by_role("heading", name="Batches")).to_be_visible()
    started = time.monotonic()
    page.goto(dash.ui(f"batches/{batch['id']}"))
    info = page.locator("#h-jobs").locator("..").locator(".filters .grow")
    expect(info).to_have_text("Jobs 1–50 of 100,000")
    expect(job_rows(page)).to_have_count(50)
    expect(counter(page, "total")).to_have_text("100,000")
    load_s = time.monotonic() - started
    shown_ms = page.evaluate("performance.getEntriesByName('batchq:first-jobs-shown')[0].startTime")
    print(f"\n100,000 jobs: batch created in {created_s:.2f} s; its page had its first page of jobs {shown_ms / 1000:.3f} s"
          f" after navigation began (seen by the test after {load_s:.3f} s)")
    assert jobs_replies
    for reply in jobs_replies:
        assert re.search(r"[?&]limit=50(&|$)", reply.url), reply.url
        assert len(reply.json()["jobs"]) <= 50
    assert len(page.locator("table.jobs tbody tr").all()) == 50
    page.get_by_label("Page", exact=True).fill("2000")
    page.get_by_label("Page", exact=True).press("Enter")
    expect(info).to_have_text("Jobs 99,951–100,000 of 100,000")
    assert dash.api.post(f"/v1/batches/{batch['id']}/cancel").status_code == 200  # leave no 100,000 messages behind


# ---- screenshots for the README ---------------------------------------------------------------


@pytest.mark.timeout(300)
def test_screenshots(browser: Any, tmp_path: Path):
    """Desktop and phone shots of the three pages, on a server of their own with a few batches."""
    dash = start_dash(tmp_path)
    try:
        api = dash.api
        saga = dash.create({"type": "chain", "context": {"order": 1042, "total": 0},
                            "jobs": [{"name": "Add", "args": {"value": v}, "compensation": {"name": "Echo", "args": {"undo": v}}}
                                     for v in (10, 20, 30)] + [{"name": "Fail", "args": {"permanent": True, "message": "payment gateway down"}}]})
        mixed = dash.create({"jobs": [{"name": "Echo", "args": {"n": i}} for i in range(45)]
                             + [{"name": "FailOnce", "args": {"message": f"card {i} declined"}} for i in range(3)],
                             "failure_policy": "allow_failures", "context": {"customer": "acme", "upload": "2026-11/uploads.csv"}})
        done = dash.create({"job": "Echo", "items": list(range(60))})
        for b in (saga, mixed, done):
            dash.wait_status(b["id"], "completed", "completed_with_failures", "failed")
        cancelled = dash.create({"jobs": ["Noop"] * 5, "queue": "emails"})
        api.post(f"/v1/batches/{cancelled['id']}/cancel")
        dash.create({"job": "Noop", "items": list(range(1200)), "queue": "imports"})
        # Still running while the shots are taken (about a minute).
        running = dash.create({"jobs": [{"name": "Sleep", "args": {"seconds": 1}} for _ in range(400)], "queue": "images",
                               "max_concurrency": 8})
        dash.worker("worker-images", "images", concurrency=8)
        wait_for(lambda: api.get(f"/v1/batches/{running['id']}").json()["percentage"] >= 10, 120, "the images batch to get going",
                 dash.procs)

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            context, page, errors = open_page(browser, viewport)
            try:
                page.goto(dash.ui())
                expect(page.locator("table.batches tbody tr")).to_have_count(6)
                assert_accessible_basics(page)
                page.screenshot(path=SCREENSHOTS / f"batches-{name}.png", full_page=True)
                page.goto(dash.ui(f"batches/{mixed['id']}"))
                page.get_by_label("Status", exact=True).select_option("failed")
                expect(job_rows(page)).to_have_count(3)
                job_rows(page).first.get_by_role("button", name="Show").click()
                expect(page.locator(".details-row table.attempts")).to_be_visible()
                assert_accessible_basics(page)
                page.screenshot(path=SCREENSHOTS / f"batch-{name}.png", full_page=True)
                page.goto(dash.ui(f"batches/{saga['id']}"))
                expect(page.locator("#h-comps").locator("..").locator(".step")).to_have_count(3)
                page.screenshot(path=SCREENSHOTS / f"saga-{name}.png", full_page=True)
                page.goto(dash.ui("queues"))
                for queue in ("imports", "images"):
                    expect(page.get_by_role("rowheader", name=queue)).to_be_visible()
                assert_accessible_basics(page)
                page.screenshot(path=SCREENSHOTS / f"queues-{name}.png", full_page=True)
            finally:
                context.close()
            assert not errors, errors
    finally:
        dash.procs.stop_all()
        dash.api.close()
    print(f"\nscreenshots in {SCREENSHOTS}")

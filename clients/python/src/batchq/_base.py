"""What the sync and async clients share: the API URLs, the retry rules, and each endpoint's request.

Failover: a client may know several API URLs (replicas, or one URL per zone). Requests go to
the current one; a connection error or a 502/503/504 moves the client on to the next, and
the request is tried there at once. Once every URL failed in a round, the client waits
(exponential backoff with jitter, at least the `Retry-After` of a 503) and starts another
round, as long as the call's retry budget lasts.

What may be sent again: a request that never reached a server (connect error) or that a
server refused with 503 or 429; and any request of a call marked idempotent (reads, claims,
heartbeats, starts and reports, which the server de-duplicates per attempt) after any
transport error or 5xx. Other writes (create, add jobs, cancel, retry) are not re-sent when
the answer was lost, because the server may have done them.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from batchq._version import __version__

log = logging.getLogger("batchq.client")

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_REPORT_RETRY_S = 300.0
SWITCH_STATUSES = frozenset({502, 503, 504})
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)  # the server never saw the request


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """"a,b" or ["a", "b,c"] -> ["a", "b", "c"]: trimmed, no trailing slash, no repeats."""
    items = [urls] if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for item in items:
        for url in str(item).split(","):
            url = url.strip().rstrip("/")
            if not url:
                continue
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"an API URL starts with http:// or https://, got {url!r}")
            if url not in out:
                out.append(url)
    if not out:
        raise ValueError("give at least one API URL")
    return out


class Urls:
    """The API URLs a client knows and the one requests go to now."""

    def __init__(self, urls: str | Sequence[str]):
        self.all = parse_urls(urls)
        self._current = 0

    def current(self) -> tuple[int, str]:
        return self._current, self.all[self._current]

    def failed(self, index: int) -> None:
        """Move on from a URL that failed (unless another request already did)."""
        if self._current == index:
            self._current = (index + 1) % len(self.all)


def seg(value: str) -> str:
    """A path segment: ids are opaque strings, so quote what a path cannot hold."""
    return quote(str(value), safe="")


@dataclass(frozen=True)
class Call:
    """One endpoint call: the request, and how it may be retried."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    body: Any = None
    has_body: bool = False
    headers: Mapping[str, str] | None = None
    idempotent: bool = False  # safe to send again after a lost answer
    retry_s: float = 0.0  # keep trying (backoff between rounds) for this long; 0: one round over the URLs
    timeout_s: float | None = None
    accept: frozenset[int] = field(default_factory=frozenset)  # non-2xx statuses that are answers, not errors

    def request_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.params:
            kw["params"] = {k: v for k, v in self.params.items() if v is not None}
        if self.has_body:
            kw["json"] = self.body
        if self.headers:
            kw["headers"] = dict(self.headers)
        if self.timeout_s is not None:
            kw["timeout"] = self.timeout_s
        return kw


class Attempts:
    """One call's way through the URLs: where to send next, and how long to wait first."""

    def __init__(self, call: Call, urls: Urls, backoff_base_s: float, backoff_max_s: float):
        self.call = call
        self.urls = urls
        self.deadline = time.monotonic() + call.retry_s
        self.delay = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.tried: set[int] = set()

    def target(self) -> tuple[int, str]:
        index, base = self.urls.current()
        return index, base + self.call.path

    def after_error(self, index: int, exc: Exception) -> float | None:
        """Seconds to wait before trying again after a transport error, or None to give up."""
        retryable = isinstance(exc, NOT_SENT) or self.call.idempotent
        wait = self._next(index, switch=True, retryable=retryable, retry_after=None)
        self._tell(index, f"{type(exc).__name__}: {exc or 'no detail'}", wait)
        return wait

    def after_response(self, index: int, response: httpx.Response) -> float | None:
        """Seconds to wait before trying again after an error status, or None to give up."""
        status = response.status_code
        if status in SWITCH_STATUSES:
            retryable = status == 503 or self.call.idempotent
            wait = self._next(index, switch=True, retryable=retryable, retry_after=_retry_after(response))
        elif status == 429:
            wait = self._next(index, switch=False, retryable=True, retry_after=_retry_after(response))
        elif status >= 500:  # e.g. the store was briefly away: same URL, later
            wait = self._next(index, switch=False, retryable=self.call.idempotent, retry_after=None)
        else:
            return None  # a 4xx answer does not change by asking again
        self._tell(index, f"HTTP {status}", wait)
        return wait

    def _tell(self, index: int, problem: str, wait: float | None) -> None:
        if wait is None:
            return  # the caller raises: it is the caller's to report
        where = self.urls.all[index]
        if wait == 0:
            log.info("%s %s%s: %s; trying %s", self.call.method, where, self.call.path, problem, self.urls.current()[1])
        else:
            log.warning("%s %s%s: %s; retrying in %.1fs", self.call.method, where, self.call.path, problem, wait)

    def _next(self, index: int, switch: bool, retryable: bool, retry_after: float | None) -> float | None:
        if switch:
            self.urls.failed(index)
        self.tried.add(index)
        if not retryable:
            return None
        if switch and self.urls.current()[0] not in self.tried:
            return 0.0  # another URL not tried in this round: go at once
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        wait = random.uniform(self.delay / 2, self.delay)  # jitter: workers do not come back in step
        self.delay = min(self.delay * 2, self.backoff_max_s)
        if retry_after is not None:
            wait = max(wait, retry_after)
        self.tried.clear()  # a new round
        return min(wait, remaining)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def default_headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    out = {"User-Agent": f"batchq-python/{__version__}"}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    out.update(headers or {})
    return out


def definition(body: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A batch definition from a dict and/or keyword fields (the keywords win)."""
    out = dict(body or {})
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def idempotency(key: str | None) -> dict[str, str] | None:
    return {"Idempotency-Key": key} if key else None


def start_items(attempts: Iterable[tuple[str, int] | tuple[str, int, str] | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """(job id, attempt[, delivery]) or {"job_id", "attempt", "delivery"?}: the delivery (a stream
    entry id) lets a start repeated for the same message get the same lease back."""
    items = []
    for a in attempts:
        if isinstance(a, Mapping):
            item = {"job_id": a["job_id"], "attempt": int(a["attempt"])}
            if a.get("delivery"):
                item["delivery"] = str(a["delivery"])
        else:
            item = {"job_id": a[0], "attempt": int(a[1])}
            if len(a) > 2 and a[2]:
                item["delivery"] = str(a[2])
        items.append(item)
    return items


class Endpoints:
    """Every endpoint as a Call; the clients send them and type the replies."""

    def __init__(self, report_retry_s: float):
        self.report_retry_s = report_retry_s

    # ---- batches ------------------------------------------------------------------------

    def create_batch(self, body: dict[str, Any], idempotency_key: str | None) -> Call:
        return Call("POST", "/v1/batches", body=body, has_body=True, headers=idempotency(idempotency_key))

    def create_chain(self, body: dict[str, Any], idempotency_key: str | None) -> Call:
        return Call("POST", "/v1/chains", body=body, has_body=True, headers=idempotency(idempotency_key))

    def list_batches(
        self, status: str | None, queue: str | None, limit: int | None, before: str | None, type: str | None = None  # noqa: A002
    ) -> Call:
        params = {"status": status, "queue": queue, "type": type, "limit": limit, "before": before}
        return Call("GET", "/v1/batches", params=params, idempotent=True)

    def get_batch(self, batch_id: str) -> Call:
        return Call("GET", f"/v1/batches/{seg(batch_id)}", idempotent=True)

    def progress(self, batch_id: str) -> Call:
        return Call("GET", f"/v1/batches/{seg(batch_id)}/progress", idempotent=True)

    def list_jobs(self, batch_id: str, status: str | None, kind: str | None, limit: int | None, offset: int | None) -> Call:
        params = {"status": status, "kind": kind, "limit": limit, "offset": offset}
        return Call("GET", f"/v1/batches/{seg(batch_id)}/jobs", params=params, idempotent=True)

    def get_job(self, batch_id: str, job_id: str) -> Call:
        return Call("GET", f"/v1/batches/{seg(batch_id)}/jobs/{seg(job_id)}", idempotent=True)

    def results(self, batch_id: str) -> Call:
        return Call("GET", f"/v1/batches/{seg(batch_id)}/results", idempotent=True)

    def add_jobs(self, batch_id: str, jobs: list[Any], idempotency_key: str | None) -> Call:
        return Call("POST", f"/v1/batches/{seg(batch_id)}/jobs", body={"jobs": list(jobs)}, has_body=True,
                    headers=idempotency(idempotency_key))

    def cancel(self, batch_id: str) -> Call:
        return Call("POST", f"/v1/batches/{seg(batch_id)}/cancel")

    def retry(self, batch_id: str) -> Call:
        return Call("POST", f"/v1/batches/{seg(batch_id)}/retry")

    def retry_jobs(self, batch_id: str, job_ids: Iterable[str]) -> Call:
        return Call("POST", f"/v1/batches/{seg(batch_id)}/jobs/retry", body={"job_ids": list(job_ids)}, has_body=True)

    def events(self, batch_id: str, after: int) -> Call:
        return Call("GET", f"/v1/batches/{seg(batch_id)}/events", params={"stream": "false", "after": after}, idempotent=True)

    def event_stream(self, batch_id: str, after: int) -> Call:
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = str(after)
        # The server sends a keep-alive comment well within the read timeout while a batch is quiet.
        return Call("GET", f"/v1/batches/{seg(batch_id)}/events", headers=headers, idempotent=True, timeout_s=60.0)

    def callbacks(self, batch_id: str) -> Call:
        return Call("GET", f"/v1/batches/{seg(batch_id)}/callbacks", idempotent=True)

    # ---- queues and workers -------------------------------------------------------------

    def queues(self) -> Call:
        return Call("GET", "/v1/queues", idempotent=True)

    def claim(self, queue: str, max_messages: int, wait_s: float, worker: str | None) -> Call:
        # A lost claim answer only delays its messages until their leases run out: resend.
        body = {"max": max_messages, "wait_s": wait_s, "worker": worker}
        return Call("POST", f"/v1/queues/{seg(queue)}/claim", body=body, has_body=True, idempotent=True,
                    timeout_s=wait_s + 30)

    def queue_streams(self, queue: str) -> Call:
        return Call("GET", f"/v1/queues/{seg(queue)}/streams", idempotent=True)

    def start(self, job_id: str, attempt: int, worker: str | None) -> Call:
        return Call("POST", f"/v1/jobs/{seg(job_id)}/start", body={"attempt": attempt, "worker": worker}, has_body=True,
                    idempotent=True, retry_s=self.report_retry_s)

    def start_many(self, items: list[dict[str, Any]], worker: str | None) -> Call:
        return Call("POST", "/v1/starts", body={"attempts": items, "worker": worker}, has_body=True,
                    idempotent=True, retry_s=self.report_retry_s)

    def heartbeat(self, job_id: str, attempt: int, lease: str | None) -> Call:
        # One round per beat: the next beat tries again, and the lease has slack.
        return Call("POST", f"/v1/jobs/{seg(job_id)}/heartbeat", body={"attempt": attempt, "lease": lease}, has_body=True,
                    idempotent=True)

    def complete(self, job_id: str, attempt: int, lease: str | None, result: Any, context: dict[str, Any] | None) -> Call:
        body: dict[str, Any] = {"attempt": attempt, "lease": lease, "result": result}
        if context is not None:
            body["context"] = context
        return Call("POST", f"/v1/jobs/{seg(job_id)}/complete", body=body, has_body=True, idempotent=True,
                    retry_s=self.report_retry_s)

    def fail(self, job_id: str, attempt: int, lease: str | None, error: str, retryable: bool) -> Call:
        body = {"attempt": attempt, "lease": lease, "error": error, "retryable": retryable}
        return Call("POST", f"/v1/jobs/{seg(job_id)}/fail", body=body, has_body=True, idempotent=True,
                    retry_s=self.report_retry_s)

    def report_many(self, reports: list[Any]) -> Call:
        return Call("POST", "/v1/reports", body={"reports": list(reports)}, has_body=True, idempotent=True,
                    retry_s=self.report_retry_s)

    # ---- system -------------------------------------------------------------------------

    def health(self) -> Call:
        return Call("GET", "/healthz", idempotent=True)

    def ready(self) -> Call:
        return Call("GET", "/readyz", idempotent=True, accept=frozenset({503}))

    def me(self) -> Call:
        return Call("GET", "/v1/me", idempotent=True)

    def webhook_secret(self) -> Call:
        return Call("GET", "/v1/webhook-secret", idempotent=True)


class SseParser:
    """Server-sent events, line by line: `feed` returns an event's JSON data when one ends."""

    def __init__(self) -> None:
        self.data: list[str] = []
        self.last_id: str | None = None

    def feed(self, line: str) -> Any | None:
        if line == "":
            if not self.data:
                return None
            text, self.data = "\n".join(self.data), []
            return json.loads(text)
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self.data.append(value)
        elif name == "id":
            self.last_id = value
        return None

    @property
    def after(self) -> int:
        return int(self.last_id) if self.last_id and self.last_id.isdigit() else 0

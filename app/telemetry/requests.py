"""Every HTTP request: an id, its log fields, and its latency by route template.

A pure ASGI middleware (no task of its own, so the context variables it sets are the ones
the route and uvicorn's access line see). The request id is the client's `X-Request-Id`
when it sent a plain one, else a new one; it is sent back as `X-Request-Id`, and a 500
quotes it.
"""
from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.telemetry.logs import bind, bound
from app.telemetry.metrics import Metrics, status_class

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestTelemetry:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _PLAIN_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # unless a response starts

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("x-request-id", request_id)
                bind(**_route_fields(scope))  # for uvicorn's access line, logged as this goes out
            await send(message)

        started = time.perf_counter()
        self.metrics.requests_in_progress.inc()
        try:
            with bound(request_id=request_id):
                await self.app(scope, receive, answer)
        finally:
            self.metrics.requests_in_progress.dec()
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request_seconds.labels(method, route, status_class(status)).observe(time.perf_counter() - started)


def _route_fields(scope: Scope) -> dict[str, str | None]:
    params = scope.get("path_params") or {}
    caller = (scope.get("state") or {}).get("caller")
    job_id = params.get("job_id")
    batch_id = params.get("batch_id") or (job_id.rpartition(".")[0] if isinstance(job_id, str) and "." in job_id else None)
    return {"batch_id": batch_id, "job_id": job_id, "tenant": getattr(caller, "tenant", None)}

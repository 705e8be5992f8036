"""The worker side of the HTTP protocol (claim / starts / heartbeat / reports / add jobs)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

log = logging.getLogger(__name__)


class Rejected(Exception):
    """The API refused a report with 404/409: the attempt is stale, cancelled or unknown."""

    def __init__(self, status: int, text: str):
        super().__init__(f"{status}: {text}")
        self.status = status


class ApiClient:
    def __init__(
        self,
        api_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 60.0,
        max_connections: int = 100,
        api_token: str | None = None,
    ):
        self.http = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            transport=transport,
            headers={"Authorization": f"Bearer {api_token}"} if api_token else None,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def _post(self, url: str, body: dict[str, Any], retries: int = 0) -> dict[str, Any]:
        """POST; 404/409 raise Rejected, other errors are retried `retries` times with backoff."""
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                r = await self.http.post(url, json=body)
                if r.status_code in (404, 409):
                    raise Rejected(r.status_code, r.text)
                r.raise_for_status()
                return r.json()
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if attempt == retries or _client_error(exc):
                    raise
                log.warning("POST %s failed (%s); retrying in %.1fs", url, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def claim(self, queue: str, max_messages: int, wait_s: float, worker: str) -> list[dict[str, Any]]:
        reply = await self._post(f"/v1/queues/{queue}/claim", {"max": max_messages, "wait_s": wait_s, "worker": worker})
        return reply["messages"]

    async def start_many(self, attempts: list[tuple[str, int]], worker: str) -> dict[str, Any]:
        body = {"attempts": [{"job_id": j, "attempt": a} for j, a in attempts], "worker": worker}
        return await self._post("/v1/starts", body, retries=2)

    async def heartbeat(self, msg: dict[str, Any]) -> dict[str, Any]:
        return await self._post(f"/v1/jobs/{msg['job_id']}/heartbeat", _report(msg))

    async def reports(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several outcomes in one call (retried: reports are idempotent per attempt)."""
        reply = await self._post("/v1/reports", {"reports": items}, retries=5)
        return reply["results"]

    async def add_jobs(self, batch_id: str, jobs: list[Any]) -> dict[str, Any]:
        # Not retried: adding jobs twice would run them twice.
        r = await self.http.post(f"/v1/batches/{batch_id}/jobs", json={"jobs": jobs})
        if r.status_code >= 400:
            raise RuntimeError(f"adding jobs to batch {batch_id} failed: {r.status_code} {r.text}")
        return r.json()


def _report(msg: dict[str, Any]) -> dict[str, Any]:
    return {"attempt": msg["attempt"], "lease": msg.get("lease")}


def _client_error(exc: Exception) -> bool:
    """A 4xx other than 404/409 (already Rejected) will not get better by retrying."""
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500

"""What a handler sees (JobContext) and what it may return or raise."""
from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the job fails without further attempts."""


@dataclass
class JobResult:
    """Return this to report a context update (merged into a chain's context) with the result."""

    result: Any = None
    context: dict[str, Any] | None = None


# (batch_id, jobs, idempotency key) -> the API's reply
AddJobs = Callable[[str, list[Any], str], Awaitable[dict[str, Any]]]


@dataclass
class JobContext:
    job_id: str
    batch_id: str
    attempt: int
    name: str
    kind: str
    position: int
    queue: str
    context: dict[str, Any]
    compensation: dict[str, Any] | None
    lease: str | None
    timeout_s: float | None
    lease_expires_at: float | None  # Unix seconds, whatever form the message gave
    message: dict[str, Any] = field(repr=False)
    _add_jobs: AddJobs = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _added: int = field(default=0, repr=False)

    @classmethod
    def from_message(cls, message: Mapping[str, Any], add_jobs: AddJobs, loop: asyncio.AbstractEventLoop) -> "JobContext":
        return cls(
            job_id=message["job_id"],
            batch_id=message["batch_id"],
            attempt=int(message["attempt"]),
            name=message["name"],
            kind=message.get("kind", "job"),
            position=message.get("position", 0),
            queue=message.get("queue", "default"),
            context=dict(message.get("context") or {}),
            compensation=message.get("compensation") or (message.get("args") or {}).get("_compensation"),
            lease=message.get("lease"),
            timeout_s=message.get("timeout_s"),
            lease_expires_at=epoch_seconds(message.get("lease_expires_at")),
            message=dict(message),
            _add_jobs=add_jobs,
            _loop=loop,
        )

    def _idempotency_key(self) -> str:
        # The n-th add of this attempt: a resent request is the same add, a new attempt adds anew.
        self._added += 1
        return f"{self.job_id}/{self.attempt}/add/{self._added}"

    async def add_jobs_async(self, jobs: list[Any]) -> dict[str, Any]:
        """Append jobs to this job's batch (for async handlers); returns the API's reply as is."""
        return await self._add_jobs(self.batch_id, jobs, self._idempotency_key())

    def add_jobs(self, jobs: list[Any], timeout: float = 30.0) -> dict[str, Any]:
        """Append jobs to this job's batch (for sync handlers, which run in a worker thread).

        The request runs on the worker's event loop, so the same client (and an in-process
        ASGI transport in tests) serves sync and async handlers alike.
        """
        if _on_loop_thread(self._loop):
            raise RuntimeError("ctx.add_jobs() would block the event loop: use `await ctx.add_jobs_async(...)`")
        future: concurrent.futures.Future[dict[str, Any]] = asyncio.run_coroutine_threadsafe(
            self._adding(jobs, self._idempotency_key()), self._loop
        )
        return future.result(timeout)

    async def _adding(self, jobs: list[Any], key: str) -> dict[str, Any]:
        return await self._add_jobs(self.batch_id, jobs, key)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop in this thread: a worker thread
        return False


def epoch_seconds(value: Any) -> float | None:
    """A time as Unix seconds: from a number, or from an RFC 3339 string ("2026-11-27T10:00:00Z")."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()

"""Sends attempts' outcomes to POST /v1/reports, coalescing those that finish together.

A report is sent at once when the line is free; reports finishing while earlier ones are
on their way go together in the next call. Nothing waits on a timer, so a lone job is
reported as fast as with /complete, and a busy worker makes far fewer calls.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from batchq.client import AsyncClient
from batchq.errors import BatchqError, Conflict, NotFound
from batchq.models import ReportItem, ReportOutcome

log = logging.getLogger(__name__)


class Reporter:
    def __init__(self, client: AsyncClient, max_batch: int = 100, max_in_flight: int = 2):
        self.client = client
        self.max_batch = max_batch
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queue: list[tuple[ReportItem, asyncio.Future[ReportOutcome]]] = []
        self._wakeup = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()
        self._pump = asyncio.create_task(self._run(), name="batchq-reporter")

    @property
    def backlog(self) -> int:
        """Reports waiting for a call (not yet sent)."""
        return len(self._queue)

    async def report(self, item: ReportItem) -> ReportOutcome:
        """Send one report; returns the API's outcome, raises NotFound / Conflict when it was refused.

        The call is retried (other URLs, backoff) for the client's `report_retry_s`: reports
        are idempotent per attempt, so a report whose answer was lost is safely sent again.
        """
        future: asyncio.Future[ReportOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._slots.acquire()
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                task = asyncio.create_task(self._send(batch))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)

    async def _send(self, batch: list[tuple[ReportItem, asyncio.Future[ReportOutcome]]]) -> None:
        try:
            outcomes = await self.client.report_many([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiting report learns of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), outcome in zip(batch, outcomes):
                if future.done():
                    continue
                if outcome.get("status_code") == 200:
                    future.set_result(outcome)
                else:
                    future.set_exception(refusal(outcome))
        finally:
            self._slots.release()

    async def close(self) -> None:
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)


def refusal(outcome: ReportOutcome | dict[str, Any]) -> BatchqError:
    """The error a refused item of /v1/reports or /v1/starts would have raised on its own."""
    status = int(outcome.get("status_code") or 409)
    error = outcome.get("error") or {}
    code = str(error.get("code", "conflict")) if isinstance(error, dict) else "conflict"
    message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    cls = {404: NotFound, 409: Conflict}.get(status, BatchqError)
    return cls(status, code, message)

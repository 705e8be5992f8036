"""Live event streams that cost the store next to nothing while they wait.

A stream reads the store only when its batch has new events. It learns that at once when a
commit in this process wrote some (the store's `on_events`), and from one query per process
every `check_s` that asks for the last event id of every batch being followed (other API
processes' commits). A hundred idle streams therefore cost one small query a second.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from app.domain.models import Event
from app.store.base import Store
from app.store.unreachable import unreachable

log = logging.getLogger(__name__)
KEEP_ALIVE_S = 15.0


@dataclass
class _Watch:
    followers: int = 0
    head: int = 0  # the last event id known to exist
    news: asyncio.Event = field(default_factory=asyncio.Event)


class EventHub:
    def __init__(self, store: Store, check_s: float):
        self.store = store
        self.check_s = check_s
        self._watches: dict[str, _Watch] = {}
        self._checker: asyncio.Task | None = None

    def notify(self, batch_ids: set[str]) -> None:
        """These batches have new events (a commit of this process wrote them)."""
        for batch_id in batch_ids:
            watch = self._watches.get(batch_id)
            if watch is not None:
                watch.news.set()

    async def follow(self, batch_id: str, after: int, until: float) -> AsyncIterator[list[Event]]:
        """The batch's events after `after` as they come, until the batch has ended and all were
        given, or the loop time `until` passes. An empty list is a keep-alive tick."""
        watch = self._watches.setdefault(batch_id, _Watch())
        watch.followers += 1
        self._start_checker()
        loop = asyncio.get_running_loop()
        try:
            cursor = after
            while loop.time() < until:
                watch.news.clear()
                # The batch before its events: if it had ended by then, its last events are
                # stored already and this read gets them all.
                batch = await self.store.get_batch(batch_id)
                while events := await self.store.events_after(batch_id, cursor, 500):
                    cursor = events[-1].id or cursor
                    watch.head = max(watch.head, cursor)
                    yield events
                if batch is None or batch.finished:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.news.wait(), min(KEEP_ALIVE_S, max(0.0, until - loop.time())))
                if not watch.news.is_set():
                    yield []
        finally:
            watch.followers -= 1
            if watch.followers == 0:
                del self._watches[batch_id]

    def _start_checker(self) -> None:
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check(), name="batchq-event-hub")

    async def _check(self) -> None:
        """While streams follow batches: one query every check_s for their last event ids."""
        while self._watches:
            await asyncio.sleep(self.check_s)
            try:
                heads = await self.store.event_heads(list(self._watches))
            except Exception as exc:  # noqa: BLE001 - the streams carry on; the next round retries
                if not unreachable(exc):
                    log.exception("event hub: reading the last event ids failed")
                continue
            for batch_id, head in heads.items():
                watch = self._watches.get(batch_id)
                if watch is not None and head > watch.head:
                    watch.head = head
                    watch.news.set()

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker

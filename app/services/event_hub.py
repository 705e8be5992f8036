"""Live event streams that cost the store next to nothing while they wait.

A stream reads the store only when its batch has new events. It learns that at once when a
commit in this process wrote some (the store's `on_events`), and from one query per process
every `check_s` that asks for the last event id of every batch being followed (other API
processes' commits). Streams of one batch woken by the same news share one read of it. Five
hundred idle streams therefore cost one small query a second, and news reaches them all for
the price of one read.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from app.domain.models import Batch, Event
from app.store.base import Store
from app.store.unreachable import unreachable

log = logging.getLogger(__name__)
KEEP_ALIVE_S = 15.0
PAGE = 500


Read = tuple[Batch | None, list[Event]]


@dataclass
class _Watch:
    followers: int = 0
    head: int = 0  # the last event id known to exist
    news: asyncio.Event = field(default_factory=asyncio.Event)
    # Bumped with each piece of news: a read started after the bump sees what the news was
    # about, so streams asking for the same cursor at the same generation may share it.
    generation: int = 0
    reads: dict[tuple[int, int], asyncio.Future[Read]] = field(default_factory=dict)

    def wake(self) -> None:
        self.generation += 1
        self.reads = {}
        self.news.set()  # wakes every stream waiting on this generation's news
        self.news = asyncio.Event()


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
                watch.wake()

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
                # The news to wait for after this read: set by the next wake, whoever reads.
                news, seen = watch.news, watch.generation
                batch, events = await self._read(watch, batch_id, cursor, seen)
                while events:
                    cursor = events[-1].id or cursor
                    watch.head = max(watch.head, cursor)
                    yield events
                    events = await self.store.events_after(batch_id, cursor, PAGE) if len(events) == PAGE else []
                if batch is None or batch.finished:
                    return
                # Wait for news; a quiet stretch is a keep-alive tick, not a read.
                while not news.is_set() and loop.time() < until:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(news.wait(), min(KEEP_ALIVE_S, max(0.0, until - loop.time())))
                    if not news.is_set():
                        yield []
        finally:
            watch.followers -= 1
            if watch.followers == 0:
                del self._watches[batch_id]

    async def _read(self, watch: _Watch, batch_id: str, cursor: int, generation: int) -> Read:
        key = (cursor, generation)
        read = watch.reads.get(key)
        if read is None:
            read = watch.reads[key] = asyncio.ensure_future(self._fetch(batch_id, cursor))
            # A failed read is not shared with those who come later: they try again.
            read.add_done_callback(lambda done: _forget_failed(watch, key, done))
        # Shielded: a stream whose client left must not cancel the read the others wait on.
        return await asyncio.shield(read)

    async def _fetch(self, batch_id: str, cursor: int) -> Read:
        # The batch before its events: if it had ended by then, its last events are stored
        # already and this read gets them all.
        batch = await self.store.get_batch(batch_id)
        return batch, await self.store.events_after(batch_id, cursor, PAGE)

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
                    watch.wake()

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker


def _forget_failed(watch: _Watch, key: tuple[int, int], read: asyncio.Future[Read]) -> None:
    if read.cancelled() or read.exception() is not None:
        watch.reads.pop(key, None)

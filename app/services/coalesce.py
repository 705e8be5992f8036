"""Work on one batch that arrives while such work runs goes together in the next run.

A busy batch gets starts and reports from many workers at once. Run as they come, each call
would be a transaction of its own, waiting on the others for the batch. Instead, calls that
arrive while one runs wait for it and then run as one: fewer, larger transactions (a group
commit done by the application), each caller still getting the outcomes of its own items, in
its own order. An idle batch's call runs at once.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Out = TypeVar("Out")

Run = Callable[[str, list[Item]], Awaitable[list[Out]]]  # batch id, items -> one outcome per item


class Coalescer(Generic[Item, Out]):
    def __init__(self, run: Run[Item, Out]):
        self._run = run
        self._waiting: dict[str, list[tuple[list[Item], asyncio.Future[list[Out]]]]] = {}
        self._draining: dict[str, asyncio.Task[None]] = {}

    async def __call__(self, batch_id: str, items: list[Item]) -> list[Out]:
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(batch_id, []).append((items, future))
        if batch_id not in self._draining:
            self._draining[batch_id] = asyncio.create_task(self._drain(batch_id))
        return await future

    async def _drain(self, batch_id: str) -> None:
        """Run what waits for the batch, all of it at a time, until nothing waits."""
        try:
            while calls := self._waiting.pop(batch_id, None):
                items = [item for own, _ in calls for item in own]
                try:
                    outcomes = await self._run(batch_id, items)
                except BaseException as exc:  # each caller gets what a call of its own would have
                    for _, future in calls:
                        if not future.done():
                            future.set_exception(exc) if isinstance(exc, Exception) else future.cancel()
                    if not isinstance(exc, Exception):
                        raise
                    continue
                first = 0
                for own, future in calls:
                    if not future.done():  # (a caller that went away)
                        future.set_result(outcomes[first : first + len(own)])
                    first += len(own)
        finally:
            del self._draining[batch_id]
            for _, future in self._waiting.pop(batch_id, []):  # only when cancelled midway
                future.cancel()

"""The SQL queue: the store's outbox table *is* the queue.

Claiming takes due rows with `FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite serialises
writers) and hides them for claim_timeout_s; ack deletes them. A message whose fetcher
died becomes visible again, and the store drops any duplicate when it is started.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import delete, func, select, update

from app.broker.base import Broker, Delivery
from app.dispatch.loops import wait_event
from app.store import sql_schema as t
from app.store.sql import SqlStore


class SqlQueueBroker(Broker):
    needs_relay = False

    def __init__(self, store: SqlStore, claim_timeout_s: float, poll_interval_s: float):
        self.store = store
        self.claim_timeout_s = claim_timeout_s
        self.poll_interval_s = poll_interval_s
        self._wakeups: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def notify(self, queues: set[str]) -> None:
        for queue in queues:
            if queue in self._wakeups:
                self._wakeups[queue].set()

    async def _claim(self, queue: str, max_messages: int) -> list[Delivery]:
        now = time.time()
        due = (
            select(t.messages.c.id)
            .where(t.messages.c.queue == queue, t.messages.c.available_at <= now)
            .order_by(t.messages.c.available_at, t.messages.c.id)
            .limit(max_messages)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(t.messages)
            .where(t.messages.c.id.in_(due.scalar_subquery()))
            .values(available_at=now + self.claim_timeout_s, deliveries=t.messages.c.deliveries + 1)
            .returning(t.messages.c.id, t.messages.c.payload)
        )
        async with self.store.engine.begin() as conn:
            rows = list(await conn.execute(stmt))
        rows.sort(key=lambda r: r.id)
        return [Delivery(queue=queue, message=r.payload, token=r.id) for r in rows]

    async def fetch(self, queue: str, max_messages: int, wait_s: float, consumer: str) -> list[Delivery]:
        deadline = time.monotonic() + wait_s
        wakeup = self._wakeups[queue]
        while True:
            wakeup.clear()
            found = await self._claim(queue, max_messages)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            # Local commits wake us at once; other processes' commits within a poll.
            await wait_event(wakeup, min(remaining, self.poll_interval_s))

    async def ack(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            async with self.store.engine.begin() as conn:
                await conn.execute(delete(t.messages).where(t.messages.c.id.in_([d.token for d in deliveries])))

    async def queue_stats(self, now: float) -> dict[str, dict[str, Any]]:
        stmt = select(t.messages.c.queue, func.count(), func.min(t.messages.c.available_at)).group_by(t.messages.c.queue)
        stats: dict[str, dict[str, Any]] = {}
        async with self.store.engine.connect() as conn:
            for queue, depth, oldest in await conn.execute(stmt):
                stats[queue] = {"depth": depth, "oldest_age_s": max(0.0, now - oldest) if oldest else 0.0}
        return stats

"""The SQL queue: the store's outbox table *is* the queue.

Claiming takes due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite serialises
writers) and hides them for claim_timeout_s; ack deletes them. A message whose fetcher
died becomes visible again, and the store refuses any duplicate when it is started.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from app.broker.base import Broker, Delivery
from app.clock import Clock
from app.dispatch.loops import wait_any
from app.store.capabilities import MessageTable


class SqlQueueBroker(Broker):
    needs_relay = False

    def __init__(self, table: MessageTable, claim_timeout_s: float, poll_interval_s: float, clock: Clock):
        self.table = table
        self.clock = clock
        self.claim_timeout_s = claim_timeout_s
        self.poll_interval_s = poll_interval_s
        self._wakeups: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._any = asyncio.Event()

    def notify(self, queues: set[str]) -> None:
        if "*" in queues:
            self._any.set()
        for queue in queues:
            if queue in self._wakeups:
                self._wakeups[queue].set()

    async def fetch(self, tenant: str, queue: str, max_messages: int, wait_s: float, consumer: str) -> list[Delivery]:
        deadline = time.monotonic() + wait_s
        wakeup = self._wakeups[queue]
        while True:
            wakeup.clear()
            found = await self.table.claim_messages(tenant, queue, max_messages, self.claim_timeout_s, self.clock())
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return [Delivery(tenant, queue, m.payload(), row_id) for row_id, m in found]
            # Local commits wake us at once; other processes' commits within a poll.
            await wait_any((wakeup, self._any), min(remaining, self.poll_interval_s))
            self._any.clear()

    async def ack(self, deliveries: list[Delivery]) -> None:
        await self.table.delete_messages([d.token for d in deliveries])

    async def queue_stats(self, tenant: str | None, now: float) -> dict[str, dict[str, Any]]:
        return await self.table.message_stats(tenant, now)

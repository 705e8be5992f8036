"""Outbox relay: moves due messages from the SQL outbox to Redis Streams.

Rows are taken with SKIP LOCKED, published, then deleted in the same transaction. A crash
after publishing but before the commit publishes them again: the store's attempt check
drops such a duplicate when a worker starts it, so nothing doubles and nothing is lost.
"""
from __future__ import annotations

import time

from sqlalchemy import delete, select

from app.broker.base import Broker
from app.store import sql_schema as t
from app.store.sql import SqlStore


class OutboxRelay:
    def __init__(self, store: SqlStore, broker: Broker, batch_size: int = 500):
        self.store = store
        self.broker = broker
        self.batch_size = batch_size

    async def step(self) -> int:
        due = (
            select(t.messages.c.id, t.messages.c.queue, t.messages.c.payload)
            .where(t.messages.c.available_at <= time.time())
            .order_by(t.messages.c.id)
            .limit(self.batch_size)
            .with_for_update(skip_locked=True)
        )
        async with self.store.write_engine.begin() as conn:
            rows = list(await conn.execute(due))
            if not rows:
                return 0
            await self.broker.publish([(r.queue, r.payload) for r in rows])
            await conn.execute(delete(t.messages).where(t.messages.c.id.in_([r.id for r in rows])))
        return len(rows)

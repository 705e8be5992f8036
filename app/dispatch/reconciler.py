"""The reconciler: the store is the truth, the broker only carries work.

Every round (on every replica; each round's work is bounded) it asks the store for queued
jobs whose message was due more than a grace period ago and has left the outbox, and asks
the broker since when its oldest message for that queue has been waiting. A job whose
message was due before that — before anything the queue still holds, with a grace period
for the relay's lag — has lost its message (a stream deleted, trimmed, or lost on a
failover): its message is written again. A job that merely waits behind a backlog is
never touched (its message is younger than the queue's oldest one), and a duplicate of a
message that was not lost after all is refused when a worker starts it.

On the Redis store the same walk also repairs the shared indexes (outbox, leases,
webhooks, listings) that a process which died right after a commit left behind.
"""
from __future__ import annotations

import logging
from collections import defaultdict

from app.broker.base import Broker
from app.services.orchestrator import Orchestrator
from app.domain.models import Message
from app.store.capabilities import Reconciliation

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, store: Reconciliation, broker: Broker, orchestrator: Orchestrator, grace_s: float, limit: int = 500):
        self.store = store
        self.broker = broker
        self.orchestrator = orchestrator
        self.grace_s = grace_s
        self.limit = limit

    async def step(self) -> int:
        now = self.orchestrator.clock()
        candidates = await self.store.stale_queued(now, self.grace_s, self.limit)
        by_queue: dict[tuple[str, str], list[Message]] = defaultdict(list)
        for job in candidates:
            by_queue[(job.tenant, job.queue)].append(job)
        lost: dict[str, list[tuple[int, int]]] = defaultdict(list)
        cutoffs: dict[str, float] = {}
        for (tenant, queue), jobs in by_queue.items():
            oldest = await self.broker.oldest(tenant, queue)
            cutoff = min(now, oldest if oldest is not None else now) - self.grace_s
            for job in jobs:
                if job.available_at < cutoff:
                    lost[job.batch_id].append((job.position, job.attempt))
                    cutoffs[job.batch_id] = max(cutoffs.get(job.batch_id, cutoff), cutoff)
        again = 0
        for batch_id, attempts in lost.items():
            again += await self.orchestrator.republish(batch_id, attempts, cutoffs[batch_id])
        if again:
            log.warning("reconciler: wrote again %d messages the broker no longer had", again)
        return again

"""Lease reaper: a running attempt whose lease ran out counts as failed (and is retried)."""
from __future__ import annotations

import time

from app.services.orchestrator import Orchestrator
from app.store.base import Store


class LeaseReaper:
    def __init__(self, store: Store, orchestrator: Orchestrator, batch_size: int = 200):
        self.store = store
        self.orchestrator = orchestrator
        self.batch_size = batch_size

    async def step(self) -> int:
        expired = await self.store.expired_attempts(time.time(), self.batch_size)
        done = 0
        for job_id, attempt in expired:
            # Each expiry re-checks the lease under the batch lock, so replicas may race here.
            if await self.orchestrator.expire(job_id, attempt):
                done += 1
        return done

"""Lease reaper: a running attempt whose lease ran out counts as failed (and is retried)."""
from __future__ import annotations

from app.services.orchestrator import Orchestrator
from app.store.base import Store


class LeaseReaper:
    def __init__(self, store: Store, orchestrator: Orchestrator, batch_size: int = 200):
        self.store = store
        self.orchestrator = orchestrator
        self.batch_size = batch_size

    async def step(self) -> int:
        done = 0
        for batch_id, positions in (await self.store.expired_leases(self.orchestrator.clock(), self.batch_size)).items():
            # Each expiry is checked again inside the batch's operation, so replicas may race here.
            done += await self.orchestrator.expire(batch_id, positions)
        return done

"""Handing messages to HTTP workers: fetch from the broker, start each attempt, ack.

A message whose attempt can no longer start (the batch was cancelled, the job already
ran, a duplicate delivery) is acked and dropped; the worker never sees it.
"""
from __future__ import annotations

import time
from typing import Any

from app.broker.base import Broker
from app.services.orchestrator import Orchestrator


class Claims:
    def __init__(self, broker: Broker, orchestrator: Orchestrator, consumer: str):
        self.broker = broker
        self.orchestrator = orchestrator
        self.consumer = consumer

    async def claim(self, tenant: str, queue: str, max_messages: int, wait_s: float, worker: str | None) -> list[dict[str, Any]]:
        deadline = time.monotonic() + wait_s
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            deliveries = await self.broker.fetch(tenant, queue, max_messages, remaining, self.consumer)
            started: list[dict[str, Any]] = []
            if deliveries:
                # Stale or duplicate deliveries are refused by the store: dropped here.
                started, _refused = await self.orchestrator.start_many(
                    tenant, [(d.message["job_id"], int(d.message["attempt"])) for d in deliveries], worker
                )
            # Ack only after the attempts are recorded: a crash before this redelivers.
            await self.broker.ack(deliveries)
            if started or time.monotonic() >= deadline:
                return started

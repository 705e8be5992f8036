"""Handing messages to HTTP workers: fetch from the broker, start each attempt, ack.

A message whose attempt can no longer start (the batch was cancelled, the job already
ran, a duplicate delivery) is acked and dropped; the worker never sees it.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.broker.base import Broker, Delivery
from app.services.orchestrator import Orchestrator


class Claims:
    def __init__(self, broker: Broker, orchestrator: Orchestrator, consumer: str):
        self.broker = broker
        self.orchestrator = orchestrator
        self.consumer = consumer

    async def claim(
        self, tenant: str, queue: str, max_messages: int, wait_s: float, worker: str | None
    ) -> tuple[list[dict[str, Any]], Callable[[], Awaitable[None]]]:
        """Started messages, and the ack to call once the worker has them (after the answer is
        sent): a process that dies before answering leaves them to be delivered again, and the
        start of that same delivery hands out the same lease (rules.lease_for)."""
        deadline = time.monotonic() + wait_s
        settled: list[Delivery] = []
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            deliveries = await self.broker.fetch(tenant, queue, max_messages, remaining, self.consumer)
            started: list[dict[str, Any]] = []
            if deliveries:
                # Stale or duplicate deliveries are refused by the store: dropped with the rest.
                started, _refused = await self.orchestrator.start_many(
                    tenant, [(d.message["job_id"], int(d.message["attempt"]), d.id) for d in deliveries],
                    worker,
                )
                settled += deliveries
            if started or time.monotonic() >= deadline:
                return started, functools.partial(self.broker.ack, settled)
            if settled:  # refused ones only: nothing to answer, settle them now
                await self.broker.ack(settled)
                settled = []

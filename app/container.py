"""Wires settings to a store, a broker, the orchestrator and the background loops."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from app.broker.base import Broker
from app.config import Settings
from app.dispatch.loops import run_forever
from app.dispatch.reaper import LeaseReaper
from app.dispatch.webhooks import WebhookSender
from app.services.claims import Claims
from app.services.orchestrator import Orchestrator
from app.store.base import Store

log = logging.getLogger(__name__)


def build_store(settings: Settings) -> Store:
    if settings.store_kind == "redis":
        from app.store.redis import RedisStore

        return RedisStore(Redis.from_url(settings.database_url, decode_responses=True), settings)
    from app.store.sql import SqlStore

    return SqlStore(settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow)


def build_broker(settings: Settings, store: Store) -> Broker:
    if settings.broker_kind == "redis":
        from app.broker.redis_streams import RedisStreamsBroker

        return RedisStreamsBroker(
            Redis.from_url(settings.broker_url, decode_responses=True), settings.redis_prefix, settings.claim_timeout_s
        )
    from app.broker.sql_queue import SqlQueueBroker
    from app.store.sql import SqlStore

    if not isinstance(store, SqlStore):
        raise ValueError("the SQL queue broker needs a SQL store; use BATCHQ_BROKER_URL=redis://… with a Redis store")
    return SqlQueueBroker(store, settings.claim_timeout_s, settings.poll_interval_s)


@dataclass
class Services:
    settings: Settings
    store: Store
    broker: Broker
    orchestrator: Orchestrator
    claims: Claims
    webhooks: WebhookSender
    tasks: list[asyncio.Task] = field(default_factory=list)
    relay_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, background: bool | None = None) -> None:
        await self.store.init()
        await self.broker.init()
        if self.settings.background if background is None else background:
            self.start_background()

    def start_background(self) -> None:
        s = self.settings
        reaper = LeaseReaper(self.store, self.orchestrator)
        self.stopping.clear()
        loops = [
            run_forever("lease-reaper", reaper.step, s.reaper_interval_s, self.stopping),
            run_forever("webhooks", self.webhooks.step, s.poll_interval_s, self.stopping),
        ]
        if s.sql_retention_s is not None and hasattr(self.store, "purge_finished"):
            loops.append(run_forever("retention", self._purge_step, max(1.0, s.reaper_interval_s), self.stopping))
        if self.broker.needs_relay:
            loops.append(run_forever("relay", self._relay_step(), s.poll_interval_s, self.stopping, self.relay_wakeup))
        self.tasks = [asyncio.create_task(loop) for loop in loops]

    async def _purge_step(self) -> int:
        """SQL retention: finished batches older than BATCHQ_SQL_RETENTION_S go."""
        return await self.store.purge_finished(time.time() - self.settings.sql_retention_s)  # type: ignore[attr-defined, operator]

    def _relay_step(self):  # noqa: ANN202
        from app.dispatch.relay import OutboxRelay
        from app.store.sql import SqlStore

        if isinstance(self.store, SqlStore):
            return OutboxRelay(self.store, self.broker).step
        return self.store.relay_step  # type: ignore[attr-defined]  # Redis store: delayed messages

    async def stop(self) -> None:
        # Ask the loops to end after their current round; cancel any that do not in time.
        self.stopping.set()
        if self.tasks:
            _done, late = await asyncio.wait(self.tasks, timeout=10)
            for task in late:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        await self.webhooks.close()
        await self.broker.close()
        await self.store.close()


def build_services(settings: Settings) -> Services:
    store = build_store(settings)
    broker = build_broker(settings, store)
    orchestrator = Orchestrator(store, settings)
    consumer = f"api-{socket.gethostname()}-{os.getpid()}-{id(store):x}"
    services = Services(
        settings=settings,
        store=store,
        broker=broker,
        orchestrator=orchestrator,
        claims=Claims(broker, orchestrator, consumer),
        webhooks=WebhookSender(store, settings),
    )

    def on_enqueue(queues: set[str]) -> None:
        broker.notify(queues)
        services.relay_wakeup.set()

    store.on_enqueue = on_enqueue  # type: ignore[attr-defined]
    return services

"""Wires settings to a store, a broker, the orchestrator and the background loops."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.broker.base import Broker
from app.clock import Clock
from app.config import Settings
from app.dispatch.loops import run_forever
from app.dispatch.reaper import LeaseReaper
from app.dispatch.reconciler import Reconciler
from app.dispatch.webhooks import WebhookSender
from app.redis_client import connect
from app.services.claims import Claims
from app.services.event_hub import EventHub
from app.services.orchestrator import Orchestrator
from app.store.base import Store
from app.telemetry.metrics import Metrics
from app.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


def build_store(settings: Settings) -> Store:
    if settings.store_kind == "redis":
        from app.store.redis import RedisStore

        redis = connect(settings.database_url, settings.redis_cluster, settings.redis_max_connections,
                        settings.redis_pool_timeout_s)  # fmt: skip
        return RedisStore(redis, settings)
    from app.store.sql import SqlStore

    return SqlStore(settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow,
                    move_budget=settings.moves_per_step())  # fmt: skip


def build_broker(settings: Settings, store: Store, clock: Clock) -> Broker:
    if settings.broker_kind == "redis":
        from app.broker.redis_streams import RedisStreamsBroker

        return RedisStreamsBroker(
            connect(settings.broker_url, settings.redis_cluster), settings.redis_prefix, settings.claim_timeout_s,
            settings.partitions,
        )
    from app.broker.sql_queue import SqlQueueBroker

    if store.message_table is None:
        raise ValueError("the SQL queue broker needs a SQL store; use BATCHQ_BROKER_URL=redis://… with a Redis store")
    return SqlQueueBroker(store.message_table, settings.claim_timeout_s, settings.poll_interval_s, clock)


@dataclass
class Services:
    settings: Settings
    store: Store
    broker: Broker
    orchestrator: Orchestrator
    claims: Claims
    webhooks: WebhookSender
    clock: Clock
    events: EventHub
    metrics: Metrics
    tracing: Tracing
    tasks: list[asyncio.Task] = field(default_factory=list)
    relay_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, background: bool | None = None) -> None:
        await self.store.init()
        await self.broker.init()
        if self.settings.background if background is None else background:
            self.start_background()

    def loops(self) -> list[tuple[str, Callable[[], Awaitable[int]], float, asyncio.Event | None]]:
        """The background loops this store and broker need: (name, step, idle seconds, wakeup)."""
        s, store = self.settings, self.store
        loops: list[tuple[str, Callable[[], Awaitable[int]], float, asyncio.Event | None]] = [
            ("lease-reaper", LeaseReaper(store, self.orchestrator).step, s.reaper_interval_s, None),
            ("webhooks", self.webhooks.step, s.poll_interval_s, None),
        ]
        if s.sql_retention_s is not None and store.retention is not None:
            retention = store.retention
            loops.append(("retention", lambda: retention.purge_finished(self.clock() - s.sql_retention_s), 1.0, None))  # type: ignore[operator]
        if store.reconciliation is not None:
            reconciler = Reconciler(store.reconciliation, self.broker, self.orchestrator, s.reconcile_grace_s)
            loops.append(("reconciler", reconciler.step, s.reconcile_interval_s, None))
        if self.broker.needs_relay:
            if store.outbox is None:
                raise ValueError(f"{type(store).__name__} has no outbox to relay to {type(self.broker).__name__}")
            outbox = store.outbox
            loops.append(("relay", lambda: outbox.relay_outbox(self.broker.publish, self.clock()), s.poll_interval_s, self.relay_wakeup))
        return loops

    def start_background(self) -> None:
        self.stopping.clear()
        self.tasks = [
            asyncio.create_task(run_forever(name, step, idle, self.stopping, wakeup)) for name, step, idle, wakeup in self.loops()
        ]

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
        await self.events.close()
        await self.broker.close()
        await self.store.close()


def build_services(settings: Settings, metrics: Metrics | None = None, tracing: Tracing | None = None) -> Services:
    clock = Clock()
    metrics = metrics or Metrics(settings)
    tracing = tracing or Tracing()
    store = build_store(settings)
    tracing.trace_store(store)
    broker = build_broker(settings, store, clock)
    orchestrator = Orchestrator(store, settings, clock, metrics, tracing)
    consumer = f"api-{socket.gethostname()}-{os.getpid()}-{id(store):x}"
    services = Services(
        settings=settings,
        store=store,
        broker=broker,
        orchestrator=orchestrator,
        claims=Claims(broker, orchestrator, consumer),
        webhooks=WebhookSender(store, settings, clock, tracing=tracing),
        clock=clock,
        events=EventHub(store, settings.sse_check_s),
        metrics=metrics,
        tracing=tracing,
    )

    def on_enqueue(queues: set[str]) -> None:
        broker.notify(queues)
        services.relay_wakeup.set()

    store.on_enqueue = on_enqueue  # type: ignore[attr-defined]
    store.on_events = services.events.notify  # type: ignore[attr-defined]
    return services

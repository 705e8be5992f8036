"""Redis Streams broker: one stream per tenant and queue, one consumer group ("workers") each.

Workers read with XREADGROUP (directly, or through the API's claim endpoint). An entry
read but never acked (its reader died) is taken over with XAUTOCLAIM after
claim_timeout_s. Ack is XACK + XDEL, so a stream holds exactly its unacked entries.
A stream or group that has gone (deleted by hand, lost on failover) is made again on the
spot by whoever meets its absence; the store's reconciler republishes what it held.
"""
from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.broker.base import Broker, Delivery
from app.domain.models import Message

GROUP = "workers"
MAX_BLOCK_S = 2.0  # longest single XREADGROUP block; long-polls loop over several


def stream_key(prefix: str, tenant: str, queue: str) -> str:
    return f"{prefix}:stream:{tenant}:{queue}"


def queues_key(prefix: str) -> str:
    """A set of "tenant/queue": every queue that has had a message."""
    return f"{prefix}:queues"


class RedisStreamsBroker(Broker):
    needs_relay = True

    def __init__(self, redis: Redis, prefix: str, claim_timeout_s: float):
        self.redis = redis
        self.prefix = prefix
        self.claim_timeout_s = claim_timeout_s

    async def close(self) -> None:
        await self.redis.aclose()

    def streams(self, tenant: str, queue: str) -> list[str]:
        return [stream_key(self.prefix, tenant, queue)]

    async def _make_group(self, key: str) -> None:
        try:
            await self.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def publish(self, messages: list[Message]) -> None:
        if not messages:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in messages:
                pipe.xadd(stream_key(self.prefix, m.tenant, m.queue), {"m": json.dumps(m.payload())})
            for name in {f"{m.tenant}/{m.queue}" for m in messages}:
                pipe.sadd(queues_key(self.prefix), name)
            await pipe.execute()

    async def fetch(self, tenant: str, queue: str, max_messages: int, wait_s: float, consumer: str) -> list[Delivery]:
        key = stream_key(self.prefix, tenant, queue)
        try:
            entries = await self._read(key, max_messages, wait_s, consumer)
        except ResponseError as exc:
            # NOGROUP: the stream or its group is gone; UNBLOCKED: it went while we waited on it.
            if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                raise
            await self._make_group(key)
            entries = await self._read(key, max_messages, 0, consumer)
        return [Delivery(tenant=tenant, queue=queue, message=json.loads(fields["m"]), token=entry_id) for entry_id, fields in entries]

    async def _read(self, key: str, max_messages: int, wait_s: float, consumer: str) -> list[Any]:
        # First take over entries whose reader died before acking them.
        claimed = await self.redis.xautoclaim(
            key, GROUP, consumer, min_idle_time=int(self.claim_timeout_s * 1000), start_id="0-0", count=max_messages
        )
        entries = [e for e in claimed[1] if e and e[1]]
        if entries:
            return entries
        # BLOCK 0 means "forever", and a block longer than the client's socket timeout
        # (5 s by default in redis-py) fails: block 1 ms .. MAX_BLOCK_S, callers loop.
        block = max(1, int(min(wait_s, MAX_BLOCK_S) * 1000)) if wait_s > 0 else None
        reply = await self.redis.xreadgroup(GROUP, consumer, {key: ">"}, count=max_messages, block=block)
        return [e for _stream, items in (reply or []) for e in items]

    async def ack(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in deliveries:
                key = stream_key(self.prefix, d.tenant, d.queue)
                pipe.xack(key, GROUP, d.token)
                pipe.xdel(key, d.token)
            await pipe.execute()

    async def oldest(self, tenant: str, queue: str) -> float | None:
        """When the oldest entry still in the queue's stream was added (None: it is empty)."""
        first = await self.redis.xrange(stream_key(self.prefix, tenant, queue), count=1)
        return int(first[0][0].split("-")[0]) / 1000 if first else None

    async def queue_stats(self, tenant: str | None, now: float) -> dict[str, dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = {}
        for name in sorted(await self.redis.smembers(queues_key(self.prefix))):
            owner, _, queue = name.partition("/")
            if tenant is not None and owner != tenant:
                continue
            key = stream_key(self.prefix, owner, queue)
            depth = await self.redis.xlen(key)
            oldest = await self.oldest(owner, queue) if depth else None
            entry = stats.setdefault(queue, {"depth": 0, "oldest_age_s": 0.0})
            entry["depth"] += depth
            if oldest is not None:
                entry["oldest_age_s"] = max(entry["oldest_age_s"], max(0.0, now - oldest))
        return stats

    async def healthy(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:  # noqa: BLE001
            return False

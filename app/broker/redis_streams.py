"""Redis Streams broker: one stream per queue, one consumer group ("workers") per stream.

Workers read with XREADGROUP (directly, or through the API's claim endpoint). An entry
read but never acked (its reader died) is taken over with XAUTOCLAIM after
claim_timeout_s. Ack is XACK + XDEL, so streams hold only undelivered work.
"""
from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.broker.base import Broker, Delivery

GROUP = "workers"
MAX_BLOCK_S = 2.0  # longest single XREADGROUP block; long-polls loop over several


def stream_key(prefix: str, queue: str) -> str:
    return f"{prefix}:stream:{queue}"


def queues_key(prefix: str) -> str:
    return f"{prefix}:queues"


class RedisStreamsBroker(Broker):
    needs_relay = True

    def __init__(self, redis: Redis, prefix: str, claim_timeout_s: float):
        self.redis = redis
        self.prefix = prefix
        self.claim_timeout_s = claim_timeout_s
        self._groups: set[str] = set()

    async def close(self) -> None:
        await self.redis.aclose()

    def streams(self, queue: str) -> list[str]:
        return [stream_key(self.prefix, queue)]

    async def _ensure_group(self, queue: str) -> str:
        key = stream_key(self.prefix, queue)
        if key not in self._groups:
            try:
                await self.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            await self.redis.sadd(queues_key(self.prefix), queue)
            self._groups.add(key)
        return key

    async def publish(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue, payload in messages:
                await self._ensure_group(queue)
                pipe.xadd(stream_key(self.prefix, queue), {"m": json.dumps(payload)})
            await pipe.execute()

    async def fetch(self, queue: str, max_messages: int, wait_s: float, consumer: str) -> list[Delivery]:
        key = await self._ensure_group(queue)
        # First take over entries whose reader died before acking them.
        claimed = await self.redis.xautoclaim(
            key, GROUP, consumer, min_idle_time=int(self.claim_timeout_s * 1000), start_id="0-0", count=max_messages
        )
        entries = [e for e in claimed[1] if e and e[1]]
        if not entries:
            # BLOCK 0 means "forever", and a block longer than the client's socket timeout
            # (5 s by default in redis-py) fails: block 1 ms .. MAX_BLOCK_S, callers loop.
            block = max(1, int(min(wait_s, MAX_BLOCK_S) * 1000)) if wait_s > 0 else None
            reply = await self.redis.xreadgroup(GROUP, consumer, {key: ">"}, count=max_messages, block=block)
            entries = [e for _stream, items in (reply or []) for e in items]
        return [Delivery(queue=queue, message=json.loads(fields["m"]), token=entry_id) for entry_id, fields in entries]

    async def ack(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in deliveries:
                key = stream_key(self.prefix, d.queue)
                pipe.xack(key, GROUP, d.token)
                pipe.xdel(key, d.token)
            await pipe.execute()

    async def queue_stats(self, now: float) -> dict[str, dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = {}
        for queue in sorted(await self.redis.smembers(queues_key(self.prefix))):
            key = stream_key(self.prefix, queue)
            depth = await self.redis.xlen(key)
            oldest = 0.0
            if depth:
                first = await self.redis.xrange(key, count=1)
                if first:
                    oldest = max(0.0, now - int(first[0][0].split("-")[0]) / 1000)
            stats[queue] = {"depth": depth, "oldest_age_s": oldest}
        return stats

    async def healthy(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:  # noqa: BLE001
            return False

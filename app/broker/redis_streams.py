"""Redis Streams broker: streams per tenant and queue, one consumer group ("workers") each.

A queue is one stream, `{prefix}:stream:{tenant}:{queue}`, or — spread over N partitions
(BATCHQ_QUEUE_PARTITIONS, or `partitions` of a queue in BATCHQ_QUEUES) — N streams: that
one and `…:{queue}#1` … `#N-1`. On a Redis Cluster each stream hashes to its own slot, so
a hot queue's partitions land on several masters. A message goes to the partition of its
job id (CRC-32, so every process agrees; an attempt of a job again goes the same way).

Workers read with XREADGROUP (directly, or through the API's claim endpoint), one stream
per command, so that no command spans two slots. A fetch starts at the next partition in
turn (round robin), takes what is there from each until it has enough, and when none has
anything, blocks on one of them for a slice of MAX_BLOCK_S (the next fetch blocks on the
next one): a lone message waits at most a slice. An entry read but never acked (its reader
died) is taken over with XAUTOCLAIM after claim_timeout_s (each stream looked at at most
every AUTOCLAIM_EVERY_S). Ack is XACK + XDEL, so a stream holds exactly its unacked entries.
A stream or group that has gone (deleted by hand, lost on failover) is made again on the
spot by whoever meets its absence; the store's reconciler republishes what it held.
"""
from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from app.broker.base import Broker, Delivery
from app.domain.models import Message
from app.redis_client import AnyRedis
from app.store.redis_keys import queues_key, stream_key
from app.store.unreachable import unreachable

__all__ = ["GROUP", "RedisStreamsBroker", "partition_of", "queues_key", "stream_key"]

GROUP = "workers"
MAX_BLOCK_S = 2.0  # longest single XREADGROUP block; long-polls loop over several
MIN_SLICE_S = 0.2  # shortest block on one partition while all are empty
AUTOCLAIM_EVERY_S = 1.0
ACK_TRIES = 5  # within about a second


def partition_of(job_id: str, partitions: int) -> int:
    return zlib.crc32(job_id.encode()) % partitions if partitions > 1 else 0


class RedisStreamsBroker(Broker):
    needs_relay = True

    def __init__(self, redis: AnyRedis, prefix: str, claim_timeout_s: float, partitions: Callable[[str], int] = lambda _: 1):
        self.redis = redis
        self.prefix = prefix
        self.claim_timeout_s = claim_timeout_s
        self.partitions = partitions
        self._turn: dict[tuple[str, str], int] = defaultdict(int)
        self._autoclaim_at: dict[str, float] = {}

    async def close(self) -> None:
        await self.redis.aclose()

    def streams(self, tenant: str, queue: str) -> list[str]:
        return [stream_key(self.prefix, tenant, queue, p) for p in range(self.partitions(queue))]

    def _rotated(self, tenant: str, queue: str) -> list[str]:
        streams = self.streams(tenant, queue)
        turn = self._turn[(tenant, queue)] = (self._turn[(tenant, queue)] + 1) % len(streams)
        return streams[turn:] + streams[:turn]

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
                payload = m.payload()
                partition = partition_of(payload["job_id"], self.partitions(m.queue))
                pipe.xadd(stream_key(self.prefix, m.tenant, m.queue, partition), {"m": json.dumps(payload)})
            for name in {f"{m.tenant}/{m.queue}" for m in messages}:
                pipe.sadd(queues_key(self.prefix), name)
            await pipe.execute()

    async def fetch(self, tenant: str, queue: str, max_messages: int, wait_s: float, consumer: str) -> list[Delivery]:
        keys = self._rotated(tenant, queue)
        found: list[tuple[str, Any]] = []
        for key in keys:  # first, entries whose reader died before acking them
            if len(found) < max_messages:
                found += [(key, e) for e in await self._autoclaim(key, max_messages - len(found), consumer)]
        block_s = min(wait_s, max(MAX_BLOCK_S / len(keys), MIN_SLICE_S))
        for i, key in enumerate(keys):
            if len(found) >= max_messages:
                break
            # Only the last stream blocks, and only when none had anything.
            block = block_s if i == len(keys) - 1 and not found else 0.0
            found += [(key, e) for e in await self._read(key, max_messages - len(found), block, consumer)]
        return [
            Delivery(tenant=tenant, queue=queue, message=json.loads(fields["m"]), token=entry_id, stream=key)
            for key, (entry_id, fields) in found
        ]

    async def _autoclaim(self, key: str, count: int, consumer: str) -> list[Any]:
        now = time.monotonic()
        if self._autoclaim_at.get(key, 0.0) > now:
            return []
        self._autoclaim_at[key] = now + AUTOCLAIM_EVERY_S
        try:
            claimed = await self.redis.xautoclaim(
                key, GROUP, consumer, min_idle_time=int(self.claim_timeout_s * 1000), start_id="0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return []  # no group yet: nothing was read from it (the read below makes it)
        return [e for e in claimed[1] if e and e[1]]

    async def _read(self, key: str, count: int, block_s: float, consumer: str) -> list[Any]:
        try:
            return await self._xreadgroup(key, count, block_s, consumer)
        except ResponseError as exc:
            # NOGROUP: the stream or its group is gone; UNBLOCKED: it went while we waited on it.
            if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                raise
            await self._make_group(key)
            return await self._xreadgroup(key, count, 0.0, consumer)

    async def _xreadgroup(self, key: str, count: int, block_s: float, consumer: str) -> list[Any]:
        # BLOCK 0 means "forever", and a block longer than the client's socket timeout
        # (5 s by default in redis-py) fails: block 1 ms .. MAX_BLOCK_S, callers loop.
        block = ["BLOCK", max(1, int(min(block_s, MAX_BLOCK_S) * 1000))] if block_s > 0 else []
        command = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, *block, "STREAMS", key, ">"]
        reply = await self.redis.execute_command(*command, **await self._node_of(key))
        pairs = reply.items() if isinstance(reply, dict) else (reply or [])  # RESP3 answers a dict
        return [e for _stream, items in pairs for e in items]

    async def _node_of(self, key: str) -> dict[str, Any]:
        """On a cluster, XREADGROUP goes straight to the key's master: left to itself,
        redis-py asks one fixed node where its keys are (COMMAND GETKEYS, as they follow
        STREAMS), an extra round trip per read, and every read fails while that node is down
        even after its replica has taken over."""
        if not isinstance(self.redis, RedisCluster):
            return {}
        await self.redis.initialize()
        return {"target_nodes": self.redis.get_node_from_key(key)}

    async def ack(self, deliveries: list[Delivery]) -> None:
        """XACK + XDEL, tried again a few times on a cut connection: an entry left unacked is
        taken over after claim_timeout_s by another reader, whose start of the same delivery
        gets the same lease, so the job would run twice if it is still running then."""
        if not deliveries:
            return
        for attempt in range(ACK_TRIES):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for d in deliveries:
                        key = d.stream or stream_key(self.prefix, d.tenant, d.queue)
                        pipe.xack(key, GROUP, d.token)
                        pipe.xdel(key, d.token)
                    await pipe.execute()
                return
            except Exception as exc:
                if attempt == ACK_TRIES - 1 or not unreachable(exc):
                    raise
                await asyncio.sleep(0.05 * 2**attempt)

    async def oldest(self, tenant: str, queue: str) -> float | None:
        """When the oldest entry still in any of the queue's streams was added (None: all
        are empty). Over all partitions: a message still held is never taken for lost."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.streams(tenant, queue):
                pipe.xrange(key, count=1)
            firsts = await pipe.execute()
        times = [int(first[0][0].split("-")[0]) / 1000 for first in firsts if first]
        return min(times) if times else None

    async def queue_stats(self, tenant: str | None, now: float) -> dict[str, dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = {}
        for name in sorted(await self.redis.smembers(queues_key(self.prefix))):
            owner, _, queue = name.partition("/")
            if tenant is not None and owner != tenant:
                continue
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in self.streams(owner, queue):
                    pipe.xlen(key)
                depth = sum(await pipe.execute())
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

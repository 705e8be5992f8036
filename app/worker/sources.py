"""Where a worker gets its messages: the API's claim endpoint, or the Redis streams directly.

Both return messages that are already started (they carry a `lease`).
"""
from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx

from app.worker.client import ApiClient

log = logging.getLogger(__name__)


class Source(Protocol):
    async def fetch(self, queue: str, max_messages: int, wait_s: float) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class ClaimSource:
    """HTTP long-poll claim: the API fetches, starts and acks for us."""

    def __init__(self, client: ApiClient, worker_id: str):
        self.client = client
        self.worker_id = worker_id

    async def fetch(self, queue: str, max_messages: int, wait_s: float) -> list[dict[str, Any]]:
        return await self.client.claim(queue, max_messages, wait_s, self.worker_id)

    async def close(self) -> None:
        pass


class StreamSource:
    """XREADGROUP on the queue's stream (group "workers"), then POST /v1/starts, then XACK+XDEL.

    An entry whose start could not be reached stays unacked: after claim_timeout_s another
    consumer takes it over (XAUTOCLAIM), so a network blip or a crash loses nothing.
    """

    def __init__(self, client: ApiClient, worker_id: str, broker_url: str, prefix: str, claim_timeout_s: float):
        from redis.asyncio import Redis

        from app.broker.redis_streams import RedisStreamsBroker

        self.client = client
        self.worker_id = worker_id
        self.broker = RedisStreamsBroker(Redis.from_url(broker_url, decode_responses=True), prefix, claim_timeout_s)

    async def fetch(self, queue: str, max_messages: int, wait_s: float) -> list[dict[str, Any]]:
        deliveries = await self.broker.fetch("default", queue, max_messages, wait_s, self.worker_id)
        if not deliveries:
            return []
        attempts = [(d.message["job_id"], int(d.message["attempt"])) for d in deliveries]
        try:
            reply = await self.client.start_many(attempts, self.worker_id)
        except httpx.HTTPError as exc:
            # Not acked: the entries stay pending and are redelivered after claim_timeout_s.
            log.warning("could not start %d messages (%s); they will be redelivered", len(deliveries), exc)
            return []
        for refused in reply["refused"]:  # stale, duplicate or cancelled
            log.info("dropping job %s attempt %s: %s", refused["job_id"], refused["attempt"], refused["error"])
        # Started and refused ones alike are settled: ack them all.
        await self.broker.ack(deliveries)
        return reply["messages"]

    async def close(self) -> None:
        await self.broker.close()

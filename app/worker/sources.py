"""Where a worker gets its messages: the API's claim endpoint, or the Redis streams directly.

Both return messages that are already started (they carry a `lease`).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import httpx

from app.worker.client import ApiClient, Rejected

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
    """XREADGROUP on the queue's stream (group "workers"), then /start, then XACK+XDEL.

    An entry whose /start could not be reached stays unacked: after claim_timeout_s another
    consumer takes it over (XAUTOCLAIM), so a network blip or a crash loses nothing.
    """

    def __init__(self, client: ApiClient, worker_id: str, broker_url: str, prefix: str, claim_timeout_s: float):
        from redis.asyncio import Redis

        from app.broker.redis_streams import RedisStreamsBroker

        self.client = client
        self.worker_id = worker_id
        self.broker = RedisStreamsBroker(Redis.from_url(broker_url, decode_responses=True), prefix, claim_timeout_s)

    async def fetch(self, queue: str, max_messages: int, wait_s: float) -> list[dict[str, Any]]:
        deliveries = await self.broker.fetch(queue, max_messages, wait_s, self.worker_id)
        outcomes = await asyncio.gather(*(self._start(d.message) for d in deliveries))
        # Ack what was started or refused; an unreachable /start stays pending for redelivery.
        await self.broker.ack([d for d, (_msg, settled) in zip(deliveries, outcomes) if settled])
        return [msg for msg, _settled in outcomes if msg is not None]

    async def _start(self, msg: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """(started message or None, whether the entry can be acked)."""
        try:
            return await self.client.start(msg["job_id"], int(msg["attempt"]), self.worker_id), True
        except Rejected as exc:
            log.info("dropping job %s attempt %s: %s", msg.get("job_id"), msg.get("attempt"), exc)
            return None, True  # stale, duplicate or cancelled
        except httpx.HTTPError as exc:
            log.warning("could not start job %s (%s); it will be redelivered", msg.get("job_id"), exc)
            return None, False

    async def close(self) -> None:
        await self.broker.close()

"""The Redis store's installation values (app.store.capabilities.Installation): one key each, no TTL."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from app.store.capabilities import Installation
from app.store.redis_keys import Keys


class RedisInstallation(Installation):
    def __init__(self, redis: Redis, keys: Keys, call: Callable[[Awaitable[Any]], Awaitable[Any]],
                 durable: Callable[..., Awaitable[Any]] | None = None):
        self.redis = redis
        self.keys = keys
        self.call = call  # awaits a Redis command (app.store.redis._g: keeps cancellations)
        # runs a command answered once the replicas wanted have it (RedisStore._durable)
        self.durable = durable

    async def installation_value(self, name: str, make: Callable[[], str]) -> str:
        key = self.keys.installation(name)
        value = await self.call(self.redis.get(key))
        if value is None:  # the first replica's value stays
            if self.durable is not None:
                await self.durable(key, "SET", key, make(), "NX")
            else:
                await self.call(self.redis.set(key, make(), nx=True))
            value = await self.call(self.redis.get(key))
        assert value is not None
        return value

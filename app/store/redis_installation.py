"""The Redis store's installation values (app.store.capabilities.Installation): one key each, no TTL."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from app.store.capabilities import Installation
from app.store.redis_keys import Keys


class RedisInstallation(Installation):
    def __init__(self, redis: Redis, keys: Keys, call: Callable[[Awaitable[Any]], Awaitable[Any]]):
        self.redis = redis
        self.keys = keys
        self.call = call  # awaits a Redis command (app.store.redis._g: keeps cancellations)

    async def installation_value(self, name: str, make: Callable[[], str]) -> str:
        key = self.keys.installation(name)
        value = await self.call(self.redis.get(key))
        if value is None:
            await self.call(self.redis.set(key, make(), nx=True))  # the first replica's value stays
            value = await self.call(self.redis.get(key))
        assert value is not None
        return value

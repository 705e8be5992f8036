"""Writes that nothing could rebuild are answered only once a replica has them.

Redis replicates asynchronously: a master that dies can take with it writes it had already
acknowledged, and the replica promoted in its place never saw them. With
BATCHQ_REDIS_WAIT_REPLICAS = n ≥ 1 the store follows each such write with `WAIT n
timeout` *on the same connection* (WAIT waits for the last write of its own connection),
and answers only when n replicas have it. Which writes: a batch's commit (its state),
the reconciler's work list (`active`, from which every other shared index is rebuilt)
and Idempotency-Key records. The other shared indexes, the streams and the gauges are
not waited for: the reconciler rebuilds the indexes and republishes lost messages.

When fewer replicas confirm in time, the operation is answered 503 (`NotReplicated`) if
the master has that many replicas online (one lags: retry), and accepted with a
warning if it has not (a master promoted a moment ago runs without a replica until the
old one comes back; like Redis's own `min-replicas-to-write 0`, batchq keeps working).
Such a master's writes then wait only for the replicas it has (none: no WAIT), looked up
again every RECHECK_S, so that each write does not sit out the timeout.
A 503 does not say the write was lost: a report or start sent again is recognised as
the same one, a creation repeated with its Idempotency-Key returns the first batch.

On a cluster the write and its WAIT go down one connection of the key's master
(ClusterNode.execute_pipeline); a redirection or a dropped connection makes the client
learn the cluster's shape again and try again, as redis-py does for single commands.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.redis_client import RETRIES, AnyRedis
from app.store.unreachable import NotReplicated

log = logging.getLogger(__name__)

Command = Sequence[Any]  # ("NAME", arg, …)
RETRY = (AskError, TryAgainError, ClusterDownError, SlotNotCoveredError, RedisConnectionError, RedisTimeoutError)
WARN_EVERY_S = 60.0
RECHECK_S = 1.0  # how long a master found short of replicas is believed so


class Replicas:
    def __init__(self, redis: AnyRedis, wanted: int, timeout_ms: int):
        self.redis = redis
        self.wanted = wanted
        self.timeout_ms = timeout_ms
        self.cluster = isinstance(redis, RedisCluster)
        self._warned: dict[str, float] = {}
        self._short_of: dict[str, tuple[int, float]] = {}  # master -> (replicas online, when seen)

    async def script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a script; with replicas wanted, answer once they have its writes."""
        if not self.wanted:
            return await script(keys=keys, args=args)
        for _ in range(2):
            try:
                return (await self.write(keys[0], [("EVALSHA", script.sha, len(keys), *keys, *args)]))[0]
            except NoScriptError:  # a master promoted since the script was loaded
                script.sha = await self.redis.script_load(script.script)
        raise NoScriptError("the script could not be loaded")

    async def write(self, key: str, commands: list[Command]) -> list[Any]:
        """Send commands on `key`'s master (every key they name shares its slot), then WAIT."""
        wanted = await self._wanted_on(key)
        if not wanted:
            return await self._send(key, list(commands))
        *replies, acked = await self._send(key, [*commands, ("WAIT", wanted, self.timeout_ms)])
        if int(acked) < wanted:
            await self._short(key, int(acked))
        return replies

    async def _wanted_on(self, key: str) -> int:
        """The replicas to wait for on key's master: fewer while it is known to have fewer."""
        if not self.wanted or not self._short_of:
            return self.wanted
        name = await self._master(key)
        if name not in self._short_of:
            return self.wanted
        online, seen = self._short_of[name]
        if time.monotonic() - seen > RECHECK_S:
            online = await self._online(key)
            if online >= self.wanted:
                del self._short_of[name]
                log.info("Redis master %s has replicas again: its writes wait for them", name)
                return self.wanted
            self._short_of[name] = (online, time.monotonic())
        return min(self.wanted, online)

    async def _master(self, key: str) -> str:
        if not self.cluster:
            return "redis"
        await self.redis.initialize()  # type: ignore[union-attr]
        return str(self.redis.get_node_from_key(key).name)  # type: ignore[union-attr]

    async def _online(self, key: str) -> int:
        """How many replicas key's master has online now (one still loading its first copy
        is online but cannot confirm anything yet)."""
        if self.cluster:
            node = self.redis.get_node_from_key(key)  # type: ignore[union-attr]
            info = await self.redis.info("replication", target_nodes=node)  # type: ignore[call-arg]
        else:
            info = await self.redis.info("replication")
        replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return sum(1 for r in replicas if r.get("state") == "online")

    async def _send(self, key: str, commands: list[Command]) -> list[Any]:
        if not self.cluster:
            pipe: Pipeline = self.redis.pipeline(transaction=False)  # type: ignore[assignment]
            async with pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return await pipe.execute()
        cluster: RedisCluster = self.redis  # type: ignore[assignment]
        delay = 0.05
        for attempt in range(RETRIES + 1):
            try:
                await cluster.initialize()
                node = cluster.get_node_from_key(key)
                stack = [PipelineCommand(i, *command) for i, command in enumerate(commands)]
                await node.execute_pipeline(stack)
                for cmd in stack:
                    if isinstance(cmd.result, Exception):
                        raise cmd.result
                return [cmd.result for cmd in stack]
            except RETRY:
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(random.uniform(0, delay))
                await cluster.nodes_manager.initialize()  # learn the cluster's shape again
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    async def _short(self, key: str, acked: int) -> None:
        """Fewer replicas confirmed than wanted: 503 if that many are online, else go on."""
        name = await self._master(key)
        online = await self._online(key)
        if acked < min(self.wanted, online):  # a replica is there but lags: the client retries
            raise NotReplicated(f"{acked} replicas of {online} confirmed a write within {self.timeout_ms} ms")
        now = time.monotonic()
        self._short_of[name] = (online, now)
        if now - self._warned.get(name, float("-inf")) > WARN_EVERY_S:
            self._warned[name] = now
            log.warning("Redis master %s has %d replicas online, fewer than BATCHQ_REDIS_WAIT_REPLICAS=%d: "
                        "its writes are not replicated until one is back", name, online, self.wanted)

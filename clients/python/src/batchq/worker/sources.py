"""Where a worker gets its messages: the API's claim endpoint, or the Redis streams directly.

Both return messages that are already started (they carry a `lease`).
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from batchq.client import AsyncClient
from batchq.errors import ApiUnreachable, BatchqError, Conflict
from batchq.models import Message

log = logging.getLogger("batchq.worker")

MAX_BLOCK_S = 2.0  # longest single XREADGROUP block: a long-poll is several short ones
MIN_SLICE_S = 0.2  # shortest block on one group of streams while all are empty
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
STREAM_SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)
AUTOCLAIM_EVERY_S = 1.0  # look for entries whose reader died at most this often per stream
ACK_TRIES = 5  # within about a second


class Source(Protocol):
    async def fetch(self, queue: str, max_messages: int, wait_s: float) -> list[Message]: ...

    async def close(self) -> None: ...


class ClaimSource:
    """HTTP long-poll claim: the API fetches, starts and acks for us."""

    def __init__(self, client: AsyncClient, worker_id: str):
        self.client = client
        self.worker_id = worker_id

    async def fetch(self, queue: str, max_messages: int, wait_s: float) -> list[Message]:
        return await self.client.claim(queue, max=max_messages, wait_s=wait_s, worker=self.worker_id)

    async def close(self) -> None:
        pass


def connect_redis(url: str) -> Any:
    """A client for `url` (str answers): one node, or a Redis Cluster named
    `redis+cluster://host:port,host:port,…` (any node will do; the client learns the rest)."""
    try:
        from redis.asyncio import Redis
        from redis.asyncio.cluster import ClusterNode, RedisCluster
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError("reading the Redis streams directly needs redis: pip install 'batchq[redis]'") from None
    if not url.startswith(CLUSTER_SCHEMES):
        return Redis.from_url(url, decode_responses=True)
    from urllib.parse import unquote, urlsplit

    scheme, rest = url.split("://", 1)
    hosts = rest.split("/", 1)[0]
    userinfo, _, hosts = hosts.rpartition("@")
    nodes = [urlsplit(f"redis://{part}") for part in hosts.split(",")]
    user, _, password = userinfo.partition(":")
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    return RedisCluster(
        startup_nodes=[ClusterNode(n.hostname or "127.0.0.1", n.port or 6379) for n in nodes],
        decode_responses=True, ssl=scheme.startswith("rediss"),
        username=unquote(user) or None, password=unquote(password) or None,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=10),  # through a failover
    )  # fmt: skip


class StreamSource:
    """XREADGROUP on a queue's streams, then POST /v1/starts, then XACK + XDEL.

    The API names the streams and the consumer group (GET /v1/queues/{queue}/streams,
    asked again every `refresh_s`), so a reader needs no key prefix and follows a queue split
    over several streams (partitions), which it reads in turn, starting with another one each
    time. On a Redis Cluster (`redis+cluster://…`) each partition is read with its own command
    (streams in different slots cannot share one); when all are empty, the read blocks on one
    of them for a slice of MAX_BLOCK_S, the next on the next one. An entry whose start could not
    be reached stays unacked: after claim_timeout_s a consumer takes it over (XAUTOCLAIM), so
    a network blip or a crash loses nothing. A stream or group that was deleted is made again
    on the spot (NOGROUP), never remembered as existing.
    """

    def __init__(self, client: AsyncClient, worker_id: str, broker_url: str, claim_timeout_s: float,
                 refresh_s: float = 30.0):
        self.client = client
        self.worker_id = worker_id
        self.claim_timeout_s = claim_timeout_s
        self.refresh_s = refresh_s
        self.redis = connect_redis(broker_url)
        self.cluster = broker_url.startswith(CLUSTER_SCHEMES)
        self.fallback = ClaimSource(client, worker_id)
        self._queues: dict[str, QueueStreams] = {}

    async def fetch(self, queue: str, max_messages: int, wait_s: float) -> list[Message]:
        streams = self._queues.get(queue)
        if streams is None:
            streams = self._queues[queue] = QueueStreams(self, queue)
        await streams.refresh()
        if streams.claim_only:
            return await self.fallback.fetch(queue, max_messages, wait_s)
        return await streams.fetch(max_messages, wait_s)

    async def close(self) -> None:
        await self.redis.aclose()


Entry = tuple[str, str, dict[str, Any]]  # stream, entry id, fields


class QueueStreams:
    """The streams of one queue, and entries read from them but not yet handed out."""

    def __init__(self, source: StreamSource, queue: str):
        self.source = source
        self.redis = source.redis
        self.queue = queue
        self.group = "workers"
        self.streams: list[str] = []
        self.claim_only = False  # the API's broker has no streams: claim over HTTP
        self._refreshed_at = float("-inf")
        self._buffer: dict[str, deque[Entry]] = {}
        self._turn = 0
        self._autoclaim_at: dict[str, float] = {}

    async def refresh(self) -> None:
        now = time.monotonic()
        if now - self._refreshed_at < self.source.refresh_s:
            return
        self._refreshed_at = now
        try:
            info = await self.source.client.queue_streams(self.queue)
        except Conflict:
            if not self.claim_only:
                log.warning("the API serves queue %s without streams: claiming over HTTP instead", self.queue)
            self.claim_only = True
            return
        except (BatchqError, ApiUnreachable) as exc:
            if not self.streams:
                self._refreshed_at = float("-inf")
                raise
            log.warning("could not refresh the streams of queue %s (%s); reading %s", self.queue, exc, self.streams)
            return
        self.claim_only = False
        self.group = info.get("group") or "workers"
        streams = list(info.get("streams") or [])
        if streams != self.streams:
            log.info("queue %s: reading streams %s (group %s)", self.queue, ", ".join(streams) or "(none)", self.group)
        self.streams = streams

    async def fetch(self, max_messages: int, wait_s: float) -> list[Message]:
        if not self.streams:
            await asyncio.sleep(min(wait_s, 1.0))
            return []
        entries = self._take(max_messages)
        if len(entries) < max_messages:
            await self._autoclaim(max_messages - len(entries))
            entries += self._take(max_messages - len(entries))
        if not entries:
            await self._read(max_messages, wait_s)
            entries = self._take(max_messages)
        if not entries:
            return []
        return await self._start(entries)

    def _rotated(self) -> list[str]:
        """The streams, starting with a different one each time (fair reading of partitions)."""
        self._turn = (self._turn + 1) % len(self.streams)
        return self.streams[self._turn:] + self.streams[: self._turn]

    def _take(self, count: int) -> list[Entry]:
        """Up to `count` buffered entries, one stream after another in turn."""
        out: list[Entry] = []
        order = [s for s in self._rotated() if self._buffer.get(s)]
        while len(out) < count and order:
            for stream in list(order):
                queue = self._buffer[stream]
                if queue and len(out) < count:
                    out.append(queue.popleft())
                if not queue:
                    order.remove(stream)
        return out

    def _keep(self, stream: str, items: Any) -> int:
        kept = 0
        for item in items or []:
            if item and item[1]:  # a deleted entry comes back without fields
                self._buffer.setdefault(stream, deque()).append((stream, item[0], item[1]))
                kept += 1
        return kept

    async def _autoclaim(self, count: int) -> None:
        now = time.monotonic()
        idle_ms = int(self.source.claim_timeout_s * 1000)
        for stream in self._rotated():
            if count <= 0 or self._autoclaim_at.get(stream, 0.0) > now:
                continue
            self._autoclaim_at[stream] = now + AUTOCLAIM_EVERY_S
            reply = await self._grouped(functools.partial(
                self.redis.xautoclaim, stream, self.group, self.source.worker_id, min_idle_time=idle_ms,
                start_id="0-0", count=count))
            taken = self._keep(stream, reply[1])
            if taken:
                log.info("took over %d entries of %s whose reader went away", taken, stream, extra={"count": taken})
            count -= taken

    def _slot_groups(self) -> list[list[str]]:
        """The streams in turn, in groups one command may read: all of them on one node,
        those of one hash slot on a cluster."""
        streams = self._rotated()
        if not self.source.cluster:
            return [streams]
        from redis.crc import key_slot

        groups: dict[int, list[str]] = {}
        for stream in streams:
            groups.setdefault(key_slot(stream.encode()), []).append(stream)
        return list(groups.values())

    async def _read(self, count: int, wait_s: float) -> None:
        groups = self._slot_groups()
        # BLOCK 0 means "forever": block 1 ms .. MAX_BLOCK_S; the fetch loop asks again.
        slice_s = min(wait_s, max(MAX_BLOCK_S / len(groups), MIN_SLICE_S))
        for i, group in enumerate(groups):
            last = i == len(groups) - 1
            block = max(1, int(slice_s * 1000)) if last and wait_s > 0 else None  # only the last one waits
            command = ["XREADGROUP", "GROUP", self.group, self.source.worker_id, "COUNT", count,
                       *(["BLOCK", block] if block is not None else []), "STREAMS", *group, *[">"] * len(group)]
            reply = await self._grouped(functools.partial(self._execute, group[0], command))
            pairs = reply.items() if isinstance(reply, dict) else (reply or [])
            if sum(self._keep(str(stream), items) for stream, items in pairs):
                return

    async def _execute(self, key: str, command: list[Any]) -> Any:
        """On a cluster, straight to the key's master: left to itself, redis-py asks one fixed
        node where XREADGROUP's keys are (they follow STREAMS), a round trip more per read,
        and every read fails while that node is down, even after its replica took over."""
        if not self.source.cluster:
            return await self.redis.execute_command(*command)
        await self.redis.initialize()
        return await self.redis.execute_command(*command, target_nodes=self.redis.get_node_from_key(key))

    async def _grouped(self, op: Callable[[], Awaitable[Any]]) -> Any:
        """Run a stream command; when the stream or its group was deleted (NOGROUP, or UNBLOCKED
        for a read blocked on it), make them again and run it again."""
        from redis.exceptions import ResponseError

        try:
            return await op()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                raise
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        log.info("queue %s: created consumer group %s on %s", self.queue, self.group, ", ".join(self.streams))
        return await op()

    async def _start(self, entries: list[Entry]) -> list[Message]:
        usable: list[Entry] = []
        attempts: list[tuple[str, int, str]] = []
        for entry in entries:
            try:
                message = json.loads(entry[2]["m"])
                attempts.append((str(message["job_id"]), int(message["attempt"]), f"{entry[0]}/{entry[1]}"))
                usable.append(entry)
            except (KeyError, TypeError, ValueError):
                log.error("dropping unreadable entry %s of %s: %r", entry[1], entry[0], entry[2])
                await self._ack([entry])
        if not usable:
            return []
        try:
            reply = await self.source.client.start_many(attempts, worker=self.source.worker_id)
        except (BatchqError, ApiUnreachable) as exc:
            # Not acked: the entries stay pending and are taken over after claim_timeout_s.
            log.warning("could not start %d messages of %s (%s); they will be delivered again", len(usable), self.queue, exc)
            return []
        for refused in reply.get("refused", []):  # stale, duplicate or cancelled
            log.info("dropping job %s attempt %s: %s", refused.get("job_id"), refused.get("attempt"), refused.get("error"),
                     extra={"job_id": refused.get("job_id"), "attempt": refused.get("attempt")})
        # Started and refused ones alike are settled: ack them all.
        await self._ack(usable)
        return reply.get("messages", [])

    async def _ack(self, entries: list[Entry]) -> None:
        """XACK + XDEL, tried again a few times: an entry left unacked is taken over after
        claim_timeout_s by another reader, whose start of the same delivery gets the same
        lease (the job runs twice if it still runs then; if it has ended, it is refused)."""
        for attempt in range(ACK_TRIES):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for stream, entry_id, _ in entries:
                        pipe.xack(stream, self.group, entry_id)
                        pipe.xdel(stream, entry_id)
                    await pipe.execute()
                return
            except Exception as exc:  # noqa: BLE001 - a cut connection, a failover
                if attempt == ACK_TRIES - 1:
                    log.warning("could not ack %d entries of %s: %s", len(entries), self.queue, exc)
                    return
                await asyncio.sleep(0.05 * 2**attempt)

"""Redis store: all state in Redis, the same behaviour as the SQL store.

The rules run in Python (app.domain, app.services.engine), once for both stores: an
operation reads through a unit of work, buffers its writes, and one Lua script commits
them to its batch's keys (redis_scripts: the command language; redis_keys: the layout).
The lock discipline is app.store.base's: a LOCKED operation holds a lock field of the
batch, taken by a script, checked and released by its commit; OPTIMISTIC ones commit
FAST (guarded increments) or VERSIONED, and check every job they read.

What spans batches (listings, the outbox, lease and webhook indexes, gauges) is written
after a batch's commit, never inside it, so that one script touches one hash slot. A
process that dies in between leaves such an index behind; the reconciler repairs it from
the batches themselves, which are always right.
"""
from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from app.config import Settings
from app.domain.models import Attempt, Batch, Event, Job, Message, Webhook
from app.domain.states import JobKind, JobStatus
from app.redis_client import AnyRedis
from app.store import redis_codec as codec
from app.store import redis_scripts as lua
from app.store.base import (
    BatchExists,
    BulkMove,
    ChangeSet,
    Commit,
    Dispatch,
    Mode,
    NewJobs,
    Operation,
    Store,
    StoreBusy,
    UnitOfWork,
)
from app.store.capabilities import Idempotency, IdempotencyRecord, Publish
from app.store.redis_installation import RedisInstallation
from app.store.redis_keys import ALL, INDEX, SEP, Keys, zset_index
from app.store.redis_replicas import Replicas
from app.store.unreachable import unreachable

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK = 500  # members per command (Lua's unpack has a stack limit)
LOCK_TTL_MS = 15_000
LOCK_WAIT_S = 20.0
SPILL_TTL_S = 3600  # jobs written ahead of a commit that never came expire
RECONCILE_BATCHES = 50  # active batches one reconciliation round looks at
# An announced batch with no hash yet may still be committing (a big one writes its records
# first): only this long after its announcement is it a creation that never committed.
ANNOUNCED_GRACE_S = 60.0


async def _g(awaitable: Awaitable[T]) -> T:
    """Await a Redis call without losing a cancellation.

    redis-py sends commands through asyncio.wait_for when a socket timeout is set; on
    Python 3.11 wait_for swallows a cancellation that arrives as the send completes, so a
    background loop could never be stopped. A task still cancelling after the call had
    its CancelledError eaten: raise it.
    """
    result = await awaitable
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return result


def _fresh() -> float:
    """Now, made unique: two announcements never leave the same score."""
    return time.time() + random.uniform(0, 1e-6)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class RedisUnitOfWork(UnitOfWork):
    def __init__(self, store: RedisStore, mode: Mode, token: str | None = None):
        super().__init__(mode)
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.token = token  # the lock's, in LOCKED mode

    def _key(self, name: str) -> str:
        assert self.batch is not None
        return self.keys.of(self.batch.id, name)

    async def _read_batch(self, batch_id: str) -> Batch | None:
        return codec.decode_batch(await _g(self.redis.hgetall(self.keys.of(batch_id, "batch"))))

    async def _read_jobs(self, positions: list[int]) -> list[Job]:
        assert self.batch is not None
        return await self.store.read_jobs(self.batch.id, positions)

    async def _read_positions(self, kind: JobKind, statuses: list[JobStatus], limit: int | None) -> list[int]:
        stop = -1 if limit is None else limit - 1
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in statuses:
                pipe.zrange(self._key(f"z:{kind.value}:{status.value}"), 0, stop)
            replies = await _g(pipe.execute())
        return sorted({int(p) for reply in replies for p in reply})

    async def _read_attempt(self, position: int, attempt: int) -> Attempt | None:
        raw = await _g(self.redis.hget(self._key("att"), f"{position}.{attempt}"))
        return codec.decode_attempt(raw) if raw is not None else None

    async def _insert(self, new: NewJobs) -> None:
        """Write the records of jobs made in bulk ahead of the commit (a chunk at a time);
        listings see them only once the commit adds their positions to the zsets, and those
        of a commit that never comes expire (or are written over by the next add)."""
        assert self.batch is not None
        fixed, state = codec.new_job_records(self.batch.id, new)
        # A batch being created is not visible yet: its records expire unless its commit comes.
        ttl = [SPILL_TTL_S] if self._read is None else []
        for name, records in (("jobs", fixed), ("state", state)):
            await _g(self.store.hset_json_script(keys=[self._key(name)], args=[codec.dumps(dict(records)), *ttl]))


class Emitter:
    """Turns one change set into the commit script's commands (redis_scripts), one small
    method per kind of record. `moved` gathers the shared gauges' changes."""

    def __init__(self, cs: ChangeSet, uow: RedisUnitOfWork, now: float):
        self.cs = cs
        self.uow = uow
        self.now = repr(now)
        self.checks: list[list[str]] = []
        self.writes: list[list[str]] = []
        self.moved: dict[str, int] = defaultdict(int)

    def check(self, name: str, *args: Any) -> None:
        self.checks.append([name, *map(str, args)])

    def call(self, command: str, key: str, *args: Any) -> None:
        self.writes.append(["CALL", command, str(INDEX[key]), *map(str, args)])

    def zadd(self, key: str, pairs: list[Any]) -> None:
        for chunk in _chunks(pairs, 2 * CHUNK):
            self.call("ZADD", key, *chunk)

    def zrem(self, key: str, members: list[Any]) -> None:
        for chunk in _chunks(members, CHUNK):
            self.call("ZREM", key, *chunk)

    def args(self, budget: int, token: str) -> list[str]:
        """The script's ARGV (redis_scripts.COMMIT): the commit time, every command as one JSON
        argument, the jobs one script may edit, and the lock any rest waits under."""
        commands = codec.dumps([[str(part) for part in cmd] for cmd in self.checks + self.writes])
        return [self.now, commands, str(budget), token, str(LOCK_TTL_MS)]

    # ---- one method per kind of record -------------------------------------------------------

    def guard(self) -> None:
        cs, uow = self.cs, self.uow
        if cs.commit == Commit.NEW:
            self.check("NEW")
        elif cs.commit == Commit.LOCKED:
            self.check("LOCKED", uow.token)
        else:
            self.check("FREE")
            if cs.commit == Commit.VERSIONED:
                self.check("VERSION", cs.read_version)
            else:
                g = cs.fast_guard
                self.check("QUIET", g["d_open"], g["d_in_flight"], g["d_processed"])
        for position, (status, attempt) in cs.read_jobs.items():
            self.check("JOB", position, status.value, attempt)

    def batch(self) -> None:
        cs = self.cs
        batch = cs.batch
        fields = codec.batch_fields(batch)
        if cs.commit == Commit.FAST:
            for name, delta in cs.counts_delta.items():
                self.call("HINCRBY", "batch", name, delta)
            self.call("HSET", "batch", "ut", fields["ut"])  # FAST changes nothing else of it
        else:
            values = {**fields, **codec.counter_fields(batch)}
            self.call("HSET", "batch", *[x for kv in values.items() for x in kv])
        self.call("HINCRBY", "batch", "v", 1)

    def jobs(self) -> None:
        cs, uow = self.cs, self.uow
        # New jobs not written ahead (spilled ones left the change set) get their records here.
        fixed = [x for j in cs.new_jobs for x in (j.position, codec.encode_fixed(j))]
        state = [x for j in cs.new_jobs + cs.changed_jobs for x in (j.position, codec.encode_state(j))]
        for chunk in _chunks(fixed, 2 * CHUNK):
            self.call("HSET", "jobs", *chunk)
        for chunk in _chunks(state, 2 * CHUNK):
            self.call("HSET", "state", *chunk)
        zadd: dict[str, list[Any]] = defaultdict(list)
        zrem: dict[str, list[Any]] = defaultdict(list)
        for new in cs.inserted:
            self._inserted(new)
        for job in cs.new_jobs:
            status = job.status.value  # type: ignore[union-attr]
            for kind in (job.kind.value, ALL):
                for s in (status, None):
                    zadd[f"z:{kind}:{s or ALL}"] += [job.position, job.position]
            self._job_side_effects(job, None)
        for job in cs.changed_jobs:
            was = uow._job_read[job.position]
            assert was is not None and job.status is not None
            if was[0] != job.status:
                for kind in (job.kind.value, ALL):
                    zrem[f"z:{kind}:{was[0].value}"].append(job.position)
                    zadd[f"z:{kind}:{job.status.value}"] += [job.position, job.position]
            self._job_side_effects(job, was)
        for key, members in zrem.items():
            self.zrem(key, members)
        for key, pairs in zadd.items():
            self.zadd(key, pairs)

    def _inserted(self, new: NewJobs) -> None:
        """Jobs made in bulk (records written already): their positions join the zsets, the
        dispatched ones' messages the outbox, by ranges (no member list for 100,000 jobs)."""
        last = new.first + len(new.jobs) - 1
        split = new.first + new.queued  # positions before this are queued, the rest wait
        for kind in (JobKind.JOB.value, ALL):
            self.writes.append(["ZRANGE_ADD", str(zset_index(kind, None)), str(new.first), str(last)])
            if new.queued:
                self.writes.append(["ZRANGE_ADD", str(zset_index(kind, "queued")), str(new.first), str(split - 1)])
            if split <= last:
                self.writes.append(["ZRANGE_ADD", str(zset_index(kind, "waiting")), str(split), str(last)])
        start = new.first
        for i in range(1, new.queued + 1):  # runs of one queue among the dispatched ones
            if i == new.queued or new.jobs[i].queue != new.jobs[i - 1].queue:
                queue = new.jobs[i - 1].queue
                self.writes.append(["OUT_ADD", str(start), str(new.first + i - 1), "1", queue, repr(new.now)])
                self.moved[f"{queue}{SEP}queued"] += new.first + i - start
                start = new.first + i

    def _job_side_effects(self, job: Job, was: tuple[JobStatus, int] | None) -> None:
        """Leases, outbox, gauges and the user data of one written job."""
        old = was[0] if was else None
        new = job.status
        assert new is not None
        if new == JobStatus.RUNNING:
            self.call("ZADD", "lease", repr(job.lease_expires_at), job.position)
        elif old == JobStatus.RUNNING:
            self.call("ZREM", "lease", job.position)
        if old == JobStatus.QUEUED and (new != JobStatus.QUEUED or job.attempts != was[1]):  # type: ignore[index]
            self.call("ZREM", "out", codec.outbox_member(job.position, was[1], job.queue))  # type: ignore[index]
        if old != new or (was is not None and was[1] != job.attempts):
            for status, d in ((old, -1), (new, 1)):
                if status in (JobStatus.QUEUED, JobStatus.RUNNING):
                    self.moved[f"{job.queue}{SEP}{status.value}"] += d  # type: ignore[union-attr]
        if job.error is not None:
            self.call("HSET", "error", job.position, job.error)
        elif was is not None:
            self.call("HDEL", "error", job.position)
        if new == JobStatus.COMPLETED:
            self.call("HSET", "result", job.position, codec.dumps(job.result))
        if job.context_in is not None:
            self.call("HSET", "ctx", job.position, codec.dumps(job.context_in))

    def bulk(self) -> None:
        for op in self.cs.bulk:
            kind = op.kind.value
            if isinstance(op, BulkMove):
                for status in op.frm:
                    self.writes.append(["MOVE", str(zset_index(kind, status.value)), str(zset_index(ALL, status.value)),
                                        str(zset_index(kind, op.to.value)), str(zset_index(ALL, op.to.value)), op.to.value,
                                        repr(op.now), "1" if op.revive else "0", op.ended.value if op.ended else "",
                                        self.cs.batch.id])  # fmt: skip
            elif isinstance(op, Dispatch):
                self.writes.append(["DISPATCH", str(zset_index(kind, "waiting")), str(zset_index(ALL, "waiting")),
                                    str(zset_index(kind, "queued")), str(zset_index(ALL, "queued")), str(op.limit),
                                    repr(op.now)])  # fmt: skip

    def records(self) -> None:
        cs = self.cs
        for a in cs.attempts:
            self.call("HSET", "att", f"{a.position}.{a.attempt}", codec.encode_attempt(a))
        for m in cs.messages:
            self.call("ZADD", "out", repr(m.available_at), codec.outbox_member(m.position, m.attempt, m.queue))
        for e in cs.events:
            body = {"batch_id": e.batch_id, "type": e.type, "data": e.data, "created_at": e.created_at}
            self.writes.append(["EVENT", codec.dumps(body)])
        for w in cs.webhooks:
            self.call("HSET", "wh", w.id, codec.encode_webhook(w))
            self.call("RPUSH", "whl", w.id)
        if cs.webhooks:
            self.call("HINCRBY", "batch", "whp", len(cs.webhooks))  # webhooks still pending

    def lifetime(self, ttl: int) -> None:
        """A batch that ends expires with everything it owns; one that runs again persists."""
        cs = self.cs
        was = None if cs.commit == Commit.NEW else self.uow._read.status  # type: ignore[union-attr]
        if cs.batch.status.finished:
            self.writes.append(["TTL", str(ttl)])  # again on each late write (a callback job's report)
        elif was is None or was.finished:
            self.writes.append(["TTL", "-1"])  # a new batch's spilled records, or a retried batch
        if cs.commit == Commit.LOCKED:
            self.writes.append(["UNLOCK"])


class RedisStore(Store, Idempotency):
    def __init__(self, redis: AnyRedis, settings: Settings):
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.replicas = Replicas(redis, settings.redis_wait_replicas, settings.redis_wait_timeout_ms)
        self.on_enqueue: Callable[[set[str]], None] | None = None
        self.on_events: Callable[[set[str]], None] | None = None
        self.commit_script = redis.register_script(lua.COMMIT)
        self.lock_script = redis.register_script(lua.LOCK)
        self.unlock_script = redis.register_script(lua.UNLOCK)
        self.settle_script = redis.register_script(lua.SETTLE_INDEX)
        self.claim_hooks_script = redis.register_script(lua.CLAIM_HOOKS)
        self.hset_json_script = redis.register_script(lua.HSET_JSON)
        self.conflicts = 0  # optimistic commits that had to run again LOCKED (tests and metrics)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.idempotency = self
        self.outbox = self.reconciliation = self
        self.installation = RedisInstallation(redis, self.keys, _g, self._durable)  # type: ignore[arg-type]
        self._cursor = 0  # where this process's reconciliation walk of the active batches is

    def local_lock(self, batch_id: str) -> asyncio.Lock:
        """Operations of one process on one batch queue here rather than in Redis."""
        lock = self._locks.get(batch_id)
        if lock is None:
            lock = self._locks[batch_id] = asyncio.Lock()
        return lock

    async def init(self) -> None:
        for script in (self.commit_script, self.lock_script, self.unlock_script, self.settle_script, self.claim_hooks_script):
            script.sha = await _g(self.redis.script_load(script.script))

    async def close(self) -> None:
        await self.redis.aclose()

    # ---- operations ---------------------------------------------------------------------------

    async def run(self, batch_id: str | None, operation: Operation[T], optimistic: bool = False) -> T:
        if batch_id is None:
            uow = RedisUnitOfWork(self, Mode.LOCKED)
            result = await operation(uow)
            if uow.batch is not None:
                await self._announce(uow.batch)
                if not await self._commit(uow):
                    raise BatchExists(uow.batch.id)
            return result
        if optimistic:
            uow = RedisUnitOfWork(self, Mode.OPTIMISTIC)
            try:
                await uow.open(batch_id)
                result = await operation(uow)
                if uow.batch is None or not uow.has_writes or await self._commit(uow):
                    return result
            except Exception as exc:  # noqa: BLE001 - whatever it was, the LOCKED run decides
                log.debug("optimistic run of an operation on %s fell back: %r", batch_id, exc)
            self.conflicts += 1
        async with self.local_lock(batch_id):
            return await self._run_locked(batch_id, operation)

    async def _run_locked(self, batch_id: str, operation: Operation[T]) -> T:
        for _ in range(8):
            token = secrets.token_hex(8)
            raw = await self._lock(batch_id, token)
            if raw is not None and "pend" in raw:
                # An operation that died (or lost its lock) left moves waiting: finish them first.
                moved: dict[str, int] = defaultdict(int)
                await self._finish_moves(batch_id, token, moved)
                await _g(self.unlock_script(keys=[self.keys.of(batch_id, "batch")], args=[token]))
                batch = codec.decode_batch(raw)
                if batch is not None:
                    await self._moves_finished(batch, moved)
                continue
            uow = RedisUnitOfWork(self, Mode.LOCKED, token)
            try:
                if raw is not None:
                    uow.batch = codec.decode_batch(raw)
                    uow._read = codec.decode_batch(raw)
                result = await operation(uow)
                if uow.batch is None or not uow.has_writes:
                    return result
                if await self._commit(uow):
                    return result
            finally:
                if raw is not None:
                    await _g(self.unlock_script(keys=[self.keys.of(batch_id, "batch")], args=[token]))
            log.warning("lost the lock of batch %s before committing; running the operation again", batch_id)
        raise StoreBusy(f"batch {batch_id} stayed busy")

    async def _lock(self, batch_id: str, token: str) -> dict[str, str] | None:
        """Take the batch's lock and read it (None: no such batch)."""
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.001
        while True:
            reply = await _g(self.lock_script(keys=[self.keys.of(batch_id, "batch")], args=[token, LOCK_TTL_MS]))
            if reply[0] == -1:
                return None
            if reply[0] == 1:
                flat = reply[1]
                return dict(zip(flat[::2], flat[1::2]))
            if time.monotonic() > deadline:
                raise StoreBusy(f"batch {batch_id} stayed locked by another operation")
            await asyncio.sleep(min(delay, int(reply[1]) / 1000) * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.05)

    async def _commit(self, uow: RedisUnitOfWork) -> bool:
        cs = uow.changes()
        emit = Emitter(cs, uow, time.time())
        emit.guard()
        # The batch's own fields first: when the moves run out of budget, the rest waits in
        # the batch hash (a new batch's, too), which must hold the whole batch by then.
        emit.batch()
        emit.records()
        emit.jobs()
        emit.bulk()
        emit.lifetime(int(self.settings.finished_ttl_s))
        budget = self.settings.moves_per_step()
        token = uow.token or secrets.token_hex(8)
        keys = self.keys.batch_keys(cs.batch.id)
        reply = await _g(self.send_commit(keys, emit.args(budget, token)))
        if int(reply[0]) == 0:
            log.debug("commit on batch %s refused: %s", cs.batch.id, reply[1])
            return False
        _add_moved(emit.moved, reply)
        if int(reply[0]) == 2:  # committed; the rest of its moves follow, a budget at a time
            await self._finish_moves(cs.batch.id, token, emit.moved)
        await self._after_commit(cs, uow, emit.moved)
        return True

    async def _finish_moves(self, batch_id: str, token: str, moved: dict[str, int]) -> None:
        """Run the moves a commit left waiting (the batch's `pend`) to their end, under `token`."""
        args = ["", "", str(self.settings.moves_per_step()), token, str(LOCK_TTL_MS)]
        keys = self.keys.batch_keys(batch_id)
        while True:
            args[0] = repr(time.time())
            reply = await _g(self.send_commit(keys, args))
            if int(reply[0]) == 0:  # our lock ran out and another operation took the batch: it finishes them
                log.warning("batch %s: another operation finishes the moves left waiting (%s)", batch_id, reply[1])
                return
            _add_moved(moved, reply)
            if int(reply[0]) == 1:
                return

    async def _durable(self, key: str, *command: Any) -> Any:
        """One command on a key nothing could rebuild: with replicas wanted, answered once
        they have it (redis_replicas)."""
        if self.replicas.wanted:
            return (await _g(self.replicas.write(key, [command])))[0]
        return await _g(self.redis.execute_command(*command))

    async def send_commit(self, keys: list[str], args: list[str]) -> Any:
        """Run the commit script (answered once the replicas wanted have its writes)."""
        return await self.replicas.script(self.commit_script, keys, args)

    async def _announce(self, batch: Batch) -> None:
        """Before a new batch commits: the listings and the reconciler's work list know it
        (a listing skips an id whose batch does not exist)."""
        if self.replicas.wanted:
            await self._durable(self.keys.active, "ZADD", self.keys.active, _fresh(), batch.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            if not self.replicas.wanted:
                pipe.zadd(self.keys.active, {batch.id: _fresh()})
            for key in self.keys.listings(batch.tenant, batch.status.value, batch.queue):
                pipe.zadd(key, {batch.id: batch.created_at})
            await _g(pipe.execute())

    async def _moves_finished(self, batch: Batch, moved: dict[str, int]) -> None:
        """The shared indexes learn what finishing another operation's moves did."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(k.outbox_index, {batch.id: _fresh()})
            pipe.zadd(k.lease_index, {batch.id: _fresh()})
            self._count_queues(pipe, batch.tenant, moved)
            await _g(pipe.execute())

    def _count_queues(self, pipe: Any, tenant: str, moved: dict[str, int]) -> None:
        """The shared queue gauges move by what a commit's set-based commands moved."""
        for field, delta in moved.items():
            if delta:
                pipe.hincrby(self.keys.queue_counts, f"{tenant}{SEP}{field}", delta)

    async def _after_commit(self, cs: ChangeSet, uow: RedisUnitOfWork, moved: dict[str, int]) -> None:
        """The shared indexes learn what the commit did (best effort: the reconciler repairs)."""
        batch = cs.batch
        k = self.keys
        was = None if uow._read is None else uow._read.status
        try:
            if was is not None and was != batch.status and self.replicas.wanted:
                await self._durable(k.active, "ZADD", k.active, _fresh(), batch.id)  # the reconciler settles it again
            async with self.redis.pipeline(transaction=False) as pipe:
                # "Look at this batch now": a fresh score each time, so that a relay or reaper
                # that read the old one and found nothing leaves the entry (SETTLE_INDEX).
                if cs.messages or any(isinstance(op, Dispatch) for op in cs.bulk) or any(n.queued for n in cs.inserted):
                    pipe.zadd(k.outbox_index, {batch.id: _fresh()})
                if any(j.status == JobStatus.RUNNING for j in cs.changed_jobs):
                    pipe.zadd(k.lease_index, {batch.id: _fresh()})
                for w in cs.webhooks:
                    pipe.zadd(k.hooks_index, {f"{batch.id}\n{w.id}": w.next_attempt_at})
                self._count_queues(pipe, batch.tenant, moved)
                if was is not None and was != batch.status:
                    pipe.zrem(k.listing(batch.tenant, was.value), batch.id)
                    pipe.zrem(k.listing(None, was.value), batch.id)
                    pipe.zadd(k.listing(batch.tenant, batch.status.value), {batch.id: batch.created_at})
                    pipe.zadd(k.listing(None, batch.status.value), {batch.id: batch.created_at})
                    if not self.replicas.wanted:
                        pipe.zadd(k.active, {batch.id: _fresh()})  # the reconciler settles it again
                await _g(pipe.execute())
        except Exception as exc:  # noqa: BLE001 - the batch is committed; the reconciler repairs indexes
            if not unreachable(exc):
                log.exception("updating the shared indexes after a commit on batch %s failed", batch.id)
            else:  # a failover, a dropped connection: expected, one line
                log.warning("updating the shared indexes after a commit on batch %s failed: %r", batch.id, exc)
        if (cs.messages or cs.bulk or cs.inserted) and self.on_enqueue is not None:
            self.on_enqueue({m.queue for m in cs.messages} | {"*"})
        if cs.events and self.on_events is not None:
            self.on_events({batch.id})

    # ---- reads ----------------------------------------------------------------------------------

    async def read_jobs(self, batch_id: str, positions: list[int]) -> list[Job]:
        if not positions:
            return []
        fields = [str(p) for p in positions]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in ("jobs", "state", "error", "result", "ctx"):
                pipe.hmget(self.keys.of(batch_id, name), fields)
            fixed, state, error, result, ctx = await _g(pipe.execute())
        return [
            codec.decode_job(batch_id, p, fixed[i], state[i], error[i], result[i], ctx[i])
            for i, p in enumerate(positions)
            if fixed[i] is not None and state[i] is not None
        ]

    async def get_batch(self, batch_id: str) -> Batch | None:
        return codec.decode_batch(await _g(self.redis.hgetall(self.keys.of(batch_id, "batch"))))

    async def list_batches(
        self, tenant: str | None, status: str | None, queue: str | None, limit: int, before: str | None, kind: str | None = None
    ) -> list[Batch]:
        # Indexed by tenant with status or queue; the rest is filtered on the way (type: two values).
        index = self.keys.listing(tenant, status, None if status else queue)
        anchor = await self.get_batch(before) if before else None
        top = repr(anchor.created_at) if anchor is not None else "+inf"
        found: list[Batch] = []
        offset, page = 0, limit + 10
        while len(found) < limit:
            rows = await _g(self.redis.zrevrangebyscore(index, top, "-inf", start=offset, num=page, withscores=True))
            if not rows:
                break
            offset += len(rows)
            async with self.redis.pipeline(transaction=False) as pipe:
                for batch_id, _ in rows:
                    pipe.hgetall(self.keys.of(batch_id, "batch"))
                replies = await _g(pipe.execute())
            gone = []
            for (batch_id, score), raw in zip(rows, replies):
                batch = codec.decode_batch(raw)
                if batch is None:
                    if "d" not in raw and not raw:
                        gone.append(batch_id)
                    continue
                if anchor is not None and score == anchor.created_at and batch_id >= anchor.id:
                    continue
                if (tenant is not None and batch.tenant != tenant) or (status and batch.status != status) or (queue and batch.queue != queue) or (kind and batch.type != kind):
                    continue  # moved since the index was read
                found.append(batch)
                if len(found) == limit:
                    break
            if gone:  # expired, or a creation that never committed: drop from this index
                await _g(self.redis.zrem(index, *gone))
                offset -= len(gone)
            if len(rows) < page:
                break
        return found

    async def get_job(self, batch_id: str, position: int) -> Job | None:
        jobs = await self.read_jobs(batch_id, [position])
        return jobs[0] if jobs else None

    async def list_jobs(self, batch_id: str, status: str | None, kind: str | None, limit: int, offset: int) -> list[Job]:
        key = self.keys.of(batch_id, f"z:{kind or ALL}:{status or ALL}")
        positions = [int(p) for p in await _g(self.redis.zrange(key, offset, offset + limit - 1))]
        return await self.read_jobs(batch_id, positions)

    async def list_attempts(self, batch_id: str, position: int) -> list[Attempt]:
        job = await self.get_job(batch_id, position)
        if job is None or job.attempts == 0:
            return []
        raws = await _g(self.redis.hmget(self.keys.of(batch_id, "att"), [f"{position}.{n}" for n in range(1, job.attempts + 1)]))
        return [codec.decode_attempt(raw) for raw in raws if raw is not None]

    async def events_after(self, batch_id: str, after_id: int, limit: int) -> list[Event]:
        rows = await _g(self.redis.zrangebyscore(self.keys.of(batch_id, "ev"), f"({int(after_id)}", "+inf", start=0, num=limit))
        events = []
        for row in rows:
            id_, _, body = row.partition("\n")
            data = codec.json.loads(body)
            events.append(Event(id=int(id_), batch_id=data["batch_id"], type=data["type"], data=data["data"], created_at=data["created_at"]))
        return events

    async def event_heads(self, batch_ids: list[str]) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch_id in batch_ids:
                pipe.hget(self.keys.of(batch_id, "batch"), "seq")
            heads = await _g(pipe.execute())
        return {b: int(h) for b, h in zip(batch_ids, heads) if h is not None}

    async def list_webhooks(self, batch_id: str) -> list[Webhook]:
        ids = await _g(self.redis.lrange(self.keys.of(batch_id, "whl"), 0, -1))
        if not ids:
            return []
        raws = await _g(self.redis.hmget(self.keys.of(batch_id, "wh"), ids))
        return sorted((codec.decode_webhook(r) for r in raws if r is not None), key=lambda w: w.created_at)

    # ---- background work ------------------------------------------------------------------------

    async def _due_batches(self, index: str, now: float, limit: int) -> list[tuple[str, float]]:
        return await _g(self.redis.zrangebyscore(index, "-inf", repr(now), start=0, num=limit, withscores=True))

    async def _settle_index(self, index: str, batch_id: str, read: float, nxt: float | None) -> None:
        await _g(self.settle_script(keys=[index], args=[batch_id, repr(read), "" if nxt is None else repr(nxt)]))

    async def expired_leases(self, now: float, limit: int) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for batch_id, score in await self._due_batches(self.keys.lease_index, now, limit):
            key = self.keys.of(batch_id, "lease")
            expired = await _g(self.redis.zrangebyscore(key, "-inf", f"({now!r}", start=0, num=limit))
            if expired:
                found[batch_id] = [int(p) for p in expired]
                continue
            nxt = await _g(self.redis.zrange(key, 0, 0, withscores=True))
            await self._settle_index(self.keys.lease_index, batch_id, score, nxt[0][1] if nxt else None)
        return found

    async def relay_outbox(self, publish: Publish, now: float, limit: int = 500) -> int:
        """Publish due outbox messages, then drop them (a crash in between publishes them
        again; the attempt check refuses the duplicate at start)."""
        sent = 0
        for batch_id, score in await self._due_batches(self.keys.outbox_index, now, 20):
            key = self.keys.of(batch_id, "out")
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrangebyscore(key, "-inf", repr(now), start=0, num=limit, withscores=True)
                pipe.hget(self.keys.of(batch_id, "batch"), "tn")
                due, tenant = await _g(pipe.execute())
            if due and tenant is not None:
                messages = []
                for member, at in due:
                    position, attempt, queue = codec.parse_outbox_member(member)
                    messages.append(Message(tenant, queue, batch_id, position, attempt, at))
                await publish(messages)
                await _g(self.redis.zrem(key, *[m for m, _ in due]))
                sent += len(due)
            nxt = await _g(self.redis.zrange(key, 0, 0, withscores=True))
            await self._settle_index(self.keys.outbox_index, batch_id, score, nxt[0][1] if nxt else None)
        return sent

    async def claim_due_webhooks(self, now: float, limit: int, hold_s: float) -> list[Webhook]:
        members = await _g(self.claim_hooks_script(keys=[self.keys.hooks_index], args=[repr(now), limit, repr(now + hold_s)]))
        hooks = []
        for member in members:
            batch_id, _, hook_id = member.partition("\n")
            raw = await _g(self.redis.hget(self.keys.of(batch_id, "wh"), hook_id))
            if raw is None:  # its batch expired
                await _g(self.redis.zrem(self.keys.hooks_index, member))
                continue
            hook = codec.decode_webhook(raw)
            hook.next_attempt_at = now + hold_s
            hooks.append(hook)
        return hooks

    async def save_webhook(self, webhook: Webhook) -> None:
        key = self.keys.of(webhook.batch_id, "wh")
        member = f"{webhook.batch_id}\n{webhook.id}"
        if not await _g(self.redis.hexists(key, webhook.id)):
            await _g(self.redis.zrem(self.keys.hooks_index, member))
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, webhook.id, codec.encode_webhook(webhook))
            if webhook.status == "pending":
                pipe.zadd(self.keys.hooks_index, {member: webhook.next_attempt_at})
            else:  # it left `pending` (the sender only sends pending ones)
                pipe.zrem(self.keys.hooks_index, member)
                pipe.hincrby(self.keys.of(webhook.batch_id, "batch"), "whp", -1)
            await _g(pipe.execute())

    # ---- reconciliation ---------------------------------------------------------------------

    async def stale_queued(self, now: float, grace_s: float, limit: int) -> list[Message]:
        """Walk a slice of the active batches (a cursor per process): repair the shared indexes
        from each batch, settle the finished ones, and return their queued jobs whose message
        was due more than grace_s ago and has left the outbox."""
        ids = await _g(self.redis.zrange(self.keys.active, self._cursor, self._cursor + RECONCILE_BATCHES - 1, withscores=True))
        self._cursor = 0 if len(ids) < RECONCILE_BATCHES else self._cursor + len(ids)
        found: list[Message] = []
        for batch_id, score in ids:
            found += await self._reconcile(batch_id, score, now - grace_s, limit)
        return found[:limit]

    async def _reconcile(self, batch_id: str, score: float, before: float, limit: int) -> list[Message]:
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.of(batch_id, "batch"))
            pipe.zrange(k.of(batch_id, "out"), 0, 0, withscores=True)
            pipe.zrange(k.of(batch_id, "lease"), 0, 0, withscores=True)
            pipe.zrange(k.of(batch_id, "z:all:queued"), 0, limit - 1)
            raw, outbox, lease, queued = await _g(pipe.execute())
        batch = codec.decode_batch(raw)
        if batch is None:  # expired, a creation that never committed, or one still committing
            if score < time.time() - ANNOUNCED_GRACE_S:
                await self._settle_index(k.active, batch_id, score, None)
            return []
        if "pend" in raw and int(raw.get("lkx") or 0) < time.time() * 1000:
            # Moves a process that died left waiting (it may have been creating the batch, and
            # nothing else may come to finish them): finish them, as the next operation would.
            await self._run_locked(batch_id, _nothing)
        pending_hooks = int(raw.get("whp") or 0)
        async with self.redis.pipeline(transaction=False) as pipe:
            if outbox:
                pipe.zadd(k.outbox_index, {batch_id: outbox[0][1]}, nx=True)
            if lease:
                pipe.zadd(k.lease_index, {batch_id: lease[0][1]}, nx=True)
            for key in (k.listing(batch.tenant, batch.status.value), k.listing(None, batch.status.value)):
                pipe.zadd(key, {batch_id: batch.created_at}, nx=True)
            await _g(pipe.execute())
        if pending_hooks:
            for hook in (await self.list_webhooks(batch_id)):
                if hook.status == "pending":
                    await _g(self.redis.zadd(k.hooks_index, {f"{batch_id}\n{hook.id}": hook.next_attempt_at}, nx=True))
        if batch.finished and not outbox and not lease and not pending_hooks:
            await self._settle_index(k.active, batch_id, score, None)  # nothing of it is left to do
            return []
        due = [job for job in await self.read_jobs(batch_id, [int(p) for p in queued])
               if job.available_at is not None and job.available_at < before]
        if not due:
            return []
        # Only those whose message has left the outbox (looked up one by one: an outbox can
        # hold a 100,000-job add waiting for the relay, too much to read every round).
        members = [codec.outbox_member(job.position, job.attempts, job.queue) for job in due]
        in_outbox = await _g(self.redis.zmscore(k.of(batch_id, "out"), members))
        return [Message(batch.tenant, job.queue, batch_id, job.position, job.attempts, job.available_at)  # type: ignore[arg-type]
                for job, score in zip(due, in_outbox) if score is None]

    async def queue_counts(self, tenant: str | None) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for field, n in (await _g(self.redis.hgetall(self.keys.queue_counts))).items():
            owner, queue, status = field.split(SEP)
            if (tenant is None or owner == tenant) and int(n) > 0:
                entry = counts.setdefault(queue, {})
                entry[status] = entry.get(status, 0) + int(n)
        return counts

    async def healthy(self) -> bool:
        try:
            return bool(await _g(self.redis.ping()))
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    # ---- idempotency records --------------------------------------------------------------------

    async def idem_get(self, tenant: str, key: str, now: float) -> IdempotencyRecord | None:
        raw = await _g(self.redis.get(self.keys.idempotency(tenant, key)))
        return IdempotencyRecord(**codec.json.loads(raw)) if raw else None

    async def idem_claim(self, tenant: str, key: str, record: IdempotencyRecord, now: float) -> bool:
        ttl = max(1, int(record.expires_at - now))
        name = self.keys.idempotency(tenant, key)
        return bool(await self._durable(name, "SET", name, codec.dumps(record.__dict__), "NX", "EX", ttl))

    async def idem_finish(self, tenant: str, key: str, record: IdempotencyRecord | None) -> None:
        name = self.keys.idempotency(tenant, key)
        if record is None:
            await self._durable(name, "DEL", name)
        else:
            ttl = max(1, int(record.expires_at - time.time()))
            await self._durable(name, "SET", name, codec.dumps(record.__dict__), "EX", ttl)


async def _nothing(uow: UnitOfWork) -> None:
    return None


def _add_moved(moved: dict[str, int], reply: list[Any]) -> None:
    """Add the queue counts a commit script says it moved ({status, field, delta, …})."""
    for field, delta in zip(reply[1::2], reply[2::2]):
        moved[field] += int(delta)

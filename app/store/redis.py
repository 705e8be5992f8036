"""Redis store: all state in Redis, same behaviour as the SQL store.

Why optimistic concurrency (compare-and-set in Lua) rather than the rules in Lua: the
domain rules (app.domain + app.services.engine) exist once, in Python, and both stores
run them unchanged. An operation (`Store.run(fn)`) runs `fn(uow)` in Python against a
unit of work that reads from Redis, keeps an identity map, and *buffers* every write.
Commit is ONE Lua script (EVALSHA) that first checks that the version of every batch the
operation locked (`lock_batch`) is still the one it read, and only then applies all the
buffered writes atomically and bumps those versions. On a mismatch it writes nothing and
`run` re-runs `fn` from scratch on a fresh unit of work (jittered backoff, many tries).
Every state change of a batch goes through `lock_batch`, so two API processes reporting
the last two jobs of a batch at once cannot both finish it: the second one's commit
fails its check, re-runs, and sees the batch already finished.

Reads an operation made before it locked a batch (e.g. the job looked up to find its
batch) are dropped from the identity map when that batch is locked, so every record the
operation acts on was read after the version it checks at commit. An operation that
raises, or writes nothing, is still checked: if its batch changed under it, it is re-run
rather than answered from a torn read.

Key layout (P = settings.redis_prefix):
  P:batch:{id}                    hash {d: batch JSON, v: version}   (progress = 1 HGETALL)
  P:job:{id}                      job JSON
  P:attempts:{job_id}             hash {attempt no: attempt JSON}
  P:bjobs:{batch}:{kind}:{status} zset job ids scored by position; kind / status may be
                                  "all" (jobs_by_status / list_jobs are one ZRANGE)
  P:events:{batch}                zset "id\\n{event JSON}" scored by id; ids from P:event_seq
  P:webhooks:{batch}              list of webhook ids;  P:webhook:{id}  webhook JSON
  P:webhooks:due                  zset pending webhook ids scored by next_attempt_at
  P:leases                        zset "{job_id}:{n}" of running attempts by lease_expires_at
  P:delayed                       zset "{queue}\\n{payload}" of future messages by available_at
  P:batches:created | :status:{s} | :queue:{q} | :sq:{s}:{q}
                                  zsets of batch ids by created_at (list_batches)
  P:qcount:queued | :running      hash queue -> number of jobs in that status
  P:stream:{queue}, P:queues      the Redis Streams broker's keys (messages are XADDed
                                  there directly by the commit script)
A finished batch's keys (batch, jobs, attempts, events, webhooks, per-batch zsets) expire
after settings.finished_ttl_s; a retried batch that runs again loses the TTL. Index zsets
drop expired ids lazily when a listing meets them. No request path uses KEYS or SCAN.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from redis.asyncio import Redis

from app.broker.redis_streams import GROUP, queues_key, stream_key
from app.config import Settings
from app.domain.models import (
    Attempt,
    AttemptStatus,
    Batch,
    BatchStatus,
    Event,
    Job,
    JobKind,
    JobStatus,
    Webhook,
    ATTEMPT_FIELDS,
    BATCH_FIELDS,
    JOB_FIELDS,
    WEBHOOK_FIELDS,
)
from app.store.base import BufferingUnitOfWork, Store, UnitOfWork

log = logging.getLogger(__name__)
T = TypeVar("T")

ALL = "all"
MAX_TRIES = 200
CHUNK = 500  # members / pairs per multi-argument command (Lua's unpack has a stack limit)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _encode(obj: Any, names: list[str]) -> str:
    return _dumps({n: getattr(obj, n) for n in names})


def _decode(cls, names: list[str], raw: str, **extra: Any):  # noqa: ANN001, ANN202
    data = json.loads(raw)
    return cls(**{k: v for k, v in data.items() if k in names}, **extra)


async def _g(awaitable: Awaitable[T]) -> T:
    """Await a Redis call without losing a cancellation.

    redis-py sends commands through asyncio.wait_for when a socket timeout is set (the
    default in current redis-py); on Python 3.11 wait_for swallows a cancellation that
    arrives as the send completes, so a background loop could never be stopped. A task
    still marked as cancelling after the call had its CancelledError eaten: raise it.
    """
    result = await awaitable
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return result


def _num(x: float) -> str:
    return repr(float(x))


class Keys:
    def __init__(self, prefix: str):
        p = self.prefix = prefix
        self.job_prefix = f"{p}:job:"
        self.attempts_prefix = f"{p}:attempts:"
        self.webhook_prefix = f"{p}:webhook:"
        self.event_seq = f"{p}:event_seq"
        self.webhooks_due = f"{p}:webhooks:due"
        self.leases = f"{p}:leases"
        self.delayed = f"{p}:delayed"
        self.queues = queues_key(p)
        self.stream_prefix = stream_key(p, "")
        assert stream_key(p, "q") == self.stream_prefix + "q"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def attempts(self, job_id: str) -> str:
        return self.attempts_prefix + job_id

    def bjobs(self, batch_id: str, kind: str | None, status: str | None) -> str:
        return f"{self.prefix}:bjobs:{batch_id}:{kind or ALL}:{status or ALL}"

    def all_bjobs(self, batch_id: str) -> list[str]:
        return [self.bjobs(batch_id, k, s) for k in (*JobKind.ALL, ALL) for s in (*JobStatus.ALL, ALL)]

    def events(self, batch_id: str) -> str:
        return f"{self.prefix}:events:{batch_id}"

    def webhooks(self, batch_id: str) -> str:
        return f"{self.prefix}:webhooks:{batch_id}"

    def webhook(self, webhook_id: str) -> str:
        return self.webhook_prefix + webhook_id

    def batches(self, status: str | None, queue: str | None) -> str:
        if status and queue:
            return f"{self.prefix}:batches:sq:{status}:{queue}"
        if status:
            return f"{self.prefix}:batches:status:{status}"
        if queue:
            return f"{self.prefix}:batches:queue:{queue}"
        return f"{self.prefix}:batches:created"

    def batch_indexes(self, status: str, queue: str) -> list[str]:
        return [self.batches(status, None), self.batches(status, queue)]

    def qcount(self, status: str) -> str:
        return f"{self.prefix}:qcount:{status}"

    def lease_member(self, job_id: str, attempt: int) -> str:
        return f"{job_id}:{attempt}"


# Commit: check versions, then apply the buffered writes. ARGV: job / attempts / webhook
# key prefixes, event sequence key, then nchecks, (batch key, expected version or "" for
# "must not exist")*, then ncommands, (argc, command, args...)*. Commands are Redis
# commands, plus EVENT (events key, JSON: gets the next id), PUBLISH (stream key, queues
# key, queue, payload: XADD to a broker stream, creating its group) and SWEEP (ttl, the
# batch's all-jobs zset, its webhook list, other batch keys: set or clear the TTL of every
# key of one batch).
COMMIT_LUA = """
local job_p, att_p, wh_p, seq_key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local i = 5
local nchk = tonumber(ARGV[i]); i = i + 1
for _ = 1, nchk do
  local key, expect = ARGV[i], ARGV[i + 1]
  i = i + 2
  local v = redis.call('HGET', key, 'v')
  if expect == '' then
    if v then return {0, key} end
  elseif v ~= expect then
    return {0, key}
  end
end
local function set_ttl(key, ttl)
  if ttl > 0 then redis.call('EXPIRE', key, ttl) else redis.call('PERSIST', key) end
end
local ensured = {}
local ncmd = tonumber(ARGV[i]); i = i + 1
for _ = 1, ncmd do
  local argc = tonumber(ARGV[i])
  local op = ARGV[i + 1]
  if op == 'EVENT' then
    local id = redis.call('INCR', seq_key)
    redis.call('ZADD', ARGV[i + 2], id, id .. '\\n' .. ARGV[i + 3])
  elseif op == 'PUBLISH' then
    local skey = ARGV[i + 2]
    if not ensured[skey] then
      if redis.call('EXISTS', skey) == 0 then
        redis.call('XGROUP', 'CREATE', skey, '%(group)s', '0', 'MKSTREAM')
      end
      redis.call('SADD', ARGV[i + 3], ARGV[i + 4])
      ensured[skey] = true
    end
    redis.call('XADD', skey, '*', 'm', ARGV[i + 5])
  elseif op == 'SWEEP' then
    local ttl = tonumber(ARGV[i + 2])
    for _, id in ipairs(redis.call('ZRANGE', ARGV[i + 3], 0, -1)) do
      set_ttl(job_p .. id, ttl)
      set_ttl(att_p .. id, ttl)
    end
    for _, id in ipairs(redis.call('LRANGE', ARGV[i + 4], 0, -1)) do
      set_ttl(wh_p .. id, ttl)
    end
    for j = i + 3, i + argc do set_ttl(ARGV[j], ttl) end
  else
    redis.call(unpack(ARGV, i + 1, i + argc))
  end
  i = i + argc + 1
end
return {1}
""" % {"group": GROUP}

# Move due delayed messages to their streams. KEYS[1] delayed zset; ARGV: now, limit,
# stream key prefix, queues key.
RELAY_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local ensured = {}
for _, m in ipairs(due) do
  local nl = string.find(m, '\\n', 1, true)
  local q = string.sub(m, 1, nl - 1)
  local skey = ARGV[3] .. q
  if not ensured[skey] then
    if redis.call('EXISTS', skey) == 0 then
      redis.call('XGROUP', 'CREATE', skey, '%(group)s', '0', 'MKSTREAM')
    end
    redis.call('SADD', ARGV[4], q)
    ensured[skey] = true
  end
  redis.call('XADD', skey, '*', 'm', string.sub(m, nl + 1))
  redis.call('ZREM', KEYS[1], m)
end
return #due
""" % {"group": GROUP}

# Take due webhooks and hide them for hold_s. KEYS[1] due zset; ARGV: now, limit, hold
# until, webhook key prefix. Ids whose webhook expired are dropped.
CLAIM_WEBHOOKS_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('GET', ARGV[4] .. id)
  if body then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    out[#out + 1] = body
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# Save a webhook after a delivery attempt (keeping its TTL; never resurrecting an expired
# one). KEYS: webhook key, due zset. ARGV: JSON, next_attempt_at or "" (not pending), id.
SAVE_WEBHOOK_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
else
  redis.call('ZREM', KEYS[2], ARGV[3])
end
return 1
"""



class RedisUnitOfWork(BufferingUnitOfWork):
    def __init__(self, store: RedisStore):
        super().__init__()
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        # Batches: locked (existing, with the version and status read) or new.
        self._batches: dict[str, Batch] = {}
        self._batch_read: dict[str, tuple[int, str]] = {}
        self._new_batches: set[str] = set()
        self._dirty_batches: set[str] = set()
        # Jobs: identity map, the status as committed (None: new), and a (batch, kind) index.
        self._jobs: dict[str, Job] = {}
        self._job_read: dict[str, str | None] = {}
        self._by_bk: dict[tuple[str, str], dict[str, Job]] = defaultdict(dict)
        self._dirty_jobs: set[str] = set()
        self._attempts: dict[tuple[str, int], Attempt] = {}
        self._attempt_read: dict[tuple[str, int], str | None] = {}
        self._dirty_attempts: set[tuple[str, int]] = set()
        self.queues_touched: set[str] = set()
        self.held: list[asyncio.Lock] = []  # in-process batch locks, released after commit

    def release(self) -> None:
        for lock in self.held:
            lock.release()
        self.held.clear()

    # ---- identity map -----------------------------------------------------------------

    def _remember_job(self, job: Job, read_status: str | None) -> Job:
        old = self._jobs.get(job.id)
        if old is not None and old is not job:
            self._by_bk[(old.batch_id, old.kind)].pop(job.id, None)
        self._jobs[job.id] = job
        self._job_read[job.id] = read_status
        self._by_bk[(job.batch_id, job.kind)][job.id] = job
        return job

    def _evict(self, batch_id: str) -> list[str]:
        """Forget clean records of `batch_id` read before its lock; return the job ids."""
        evicted = []
        for kind in JobKind.ALL:
            for job_id in [j for j in self._by_bk.get((batch_id, kind), {}) if j not in self._dirty_jobs]:
                del self._by_bk[(batch_id, kind)][job_id]
                del self._jobs[job_id]
                del self._job_read[job_id]
                evicted.append(job_id)
        for key in [k for k, a in self._attempts.items() if a.batch_id == batch_id and k not in self._dirty_attempts]:
            del self._attempts[key]
            del self._attempt_read[key]
        return evicted

    # ---- reads ------------------------------------------------------------------------

    async def lock_batch(self, batch_id: str) -> Batch | None:
        if batch_id in self._batches:
            return self._batches[batch_id]
        # Operations of one process on one batch queue here instead of racing to a conflict
        # (the version check still arbitrates between processes).
        lock = self.store.local_lock(batch_id)
        await lock.acquire()
        self.held.append(lock)
        # Jobs this operation read before the lock are read again, with the batch, in one
        # round trip: what it acts on is then no older than the version it will check.
        stale = self._evict(batch_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.batch(batch_id))
            for job_id in stale:
                pipe.get(self.keys.job(job_id))
            raw, *jobs = await _g(pipe.execute())
        if not raw or "d" not in raw:
            return None
        version = int(raw.get("v", 0))
        batch = _decode(Batch, BATCH_FIELDS, raw["d"])
        self._batches[batch_id] = batch
        self._batch_read[batch_id] = (version, batch.status)
        for job_raw in jobs:
            if job_raw is not None:
                job = _decode(Job, JOB_FIELDS, job_raw)
                self._remember_job(job, job.status)
        return batch

    async def get_job(self, job_id: str) -> Job | None:
        if job_id in self._jobs:
            return self._jobs[job_id]
        raw = await _g(self.redis.get(self.keys.job(job_id)))
        if raw is None:
            return None
        job = _decode(Job, JOB_FIELDS, raw)
        return self._remember_job(job, job.status)

    async def get_jobs(self, job_ids: list[str]) -> dict[str, Job]:
        missing = list(dict.fromkeys(j for j in job_ids if j not in self._jobs))
        if missing:
            for raw in await _g(self.redis.mget([self.keys.job(j) for j in missing])):
                if raw is not None:
                    job = _decode(Job, JOB_FIELDS, raw)
                    self._remember_job(job, job.status)
        return {j: self._jobs[j] for j in job_ids if j in self._jobs}

    async def get_attempts(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], Attempt]:
        missing = list(dict.fromkeys(k for k in keys if k not in self._attempts))
        if missing:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, number in missing:
                    pipe.hget(self.keys.attempts(job_id), str(number))
                raws = await _g(pipe.execute())
            for key, raw in zip(missing, raws):
                if raw is not None:
                    found = self._attempts[key] = _decode(Attempt, ATTEMPT_FIELDS, raw)
                    self._attempt_read[key] = found.status
        return {k: self._attempts[k] for k in keys if k in self._attempts}

    async def get_attempt(self, job_id: str, attempt: int) -> Attempt | None:
        key = (job_id, attempt)
        if key in self._attempts:
            return self._attempts[key]
        raw = await _g(self.redis.hget(self.keys.attempts(job_id), str(attempt)))
        if raw is None:
            return None
        found = self._attempts[key] = _decode(Attempt, ATTEMPT_FIELDS, raw)
        self._attempt_read[key] = found.status
        return found

    async def jobs_by_status(
        self, batch_id: str, kind: str, statuses: Iterable[str], limit: int | None = None
    ) -> list[Job]:
        wanted = list(dict.fromkeys(statuses))
        wanted_set = set(wanted)
        if limit is not None and limit <= 0:
            return []
        local = self._by_bk.get((batch_id, kind), {})
        # Committed ids of jobs this operation has already moved out of `wanted` may come
        # back from the zsets: fetch that many more so that the limit still fills.
        moved_out = sum(1 for j in local if self._job_read.get(j) in wanted_set)
        stop = -1 if limit is None else limit + moved_out - 1
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in wanted:
                pipe.zrange(self.keys.bjobs(batch_id, kind, status), 0, stop, withscores=True)
            replies = await _g(pipe.execute())
        positions: dict[str, float] = {}
        for reply in replies:
            for job_id, score in reply:
                positions[job_id] = score
        for job_id, job in local.items():
            if job.status in wanted_set:
                positions[job_id] = job.position
        picked: list[str] = []
        for job_id in sorted(positions, key=positions.__getitem__):
            job = local.get(job_id)
            if job is not None and job.status not in wanted_set:
                continue
            picked.append(job_id)
            if limit is not None and len(picked) >= limit:
                break
        missing = [j for j in picked if j not in self._jobs]
        if missing:
            for start in range(0, len(missing), 1000):
                chunk = missing[start : start + 1000]
                for raw in await _g(self.redis.mget([self.keys.job(j) for j in chunk])):
                    if raw is not None:
                        job = _decode(Job, JOB_FIELDS, raw)
                        self._remember_job(job, job.status)
        found = []
        for job_id in picked:
            job = self._jobs.get(job_id)
            # A torn read (a concurrent commit) is caught by the version check at commit.
            if job is not None and job.status in wanted_set:
                found.append(job)
        return found

    # ---- writes (buffered) -------------------------------------------------------------

    async def add_batch(self, batch: Batch) -> None:
        self._batches[batch.id] = batch
        self._new_batches.add(batch.id)

    async def add_jobs(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._remember_job(job, None)
            self._dirty_jobs.add(job.id)

    async def add_attempt(self, attempt: Attempt) -> None:
        key = (attempt.job_id, attempt.attempt)
        self._attempts[key] = attempt
        self._attempt_read[key] = None
        self._dirty_attempts.add(key)

    async def save_batch(self, batch: Batch) -> None:
        if batch.id not in self._batches:
            raise RuntimeError(f"save_batch({batch.id}) without lock_batch")
        self._batches[batch.id] = batch
        if batch.id not in self._new_batches:
            self._dirty_batches.add(batch.id)

    async def save_job(self, job: Job) -> None:
        if self._jobs.get(job.id) is not job:
            self._remember_job(job, self._job_read.get(job.id, job.status))
        self._dirty_jobs.add(job.id)

    async def save_attempt(self, attempt: Attempt) -> None:
        key = (attempt.job_id, attempt.attempt)
        if key not in self._attempt_read:
            self._attempt_read[key] = attempt.status
        self._attempts[key] = attempt
        self._dirty_attempts.add(key)

    # ---- commit -----------------------------------------------------------------------

    @property
    def has_writes(self) -> bool:
        return bool(
            self._new_batches
            or self._dirty_batches
            or self._dirty_jobs
            or self._dirty_attempts
            or self._messages
            or self._events
            or self._webhooks
        )

    def _checks(self) -> list[tuple[str, str]]:
        checks = []
        for batch_id in self._batches:
            if batch_id in self._new_batches:
                checks.append((self.keys.batch(batch_id), ""))
            else:
                checks.append((self.keys.batch(batch_id), str(self._batch_read[batch_id][0])))
        return checks

    async def still_current(self) -> bool:
        """The batches this operation locked are unchanged (a read-only operation's check)."""
        existing = [b for b in self._batches if b not in self._new_batches]
        if not existing:
            return True
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch_id in existing:
                pipe.hget(self.keys.batch(batch_id), "v")
            versions = await _g(pipe.execute())
        return all(v is not None and int(v) == self._batch_read[b][0] for b, v in zip(existing, versions))

    def _owner(self, batch_id: str) -> str:
        if batch_id not in self._batches:
            raise RuntimeError(f"write to batch {batch_id} without lock_batch")
        return batch_id

    def build(self, now: float) -> tuple[list[tuple[str, str]], list[list[Any]]]:
        """The checks and the commands of the commit script."""
        k = self.keys
        cmds: list[list[Any]] = []
        zadd: dict[str, list[Any]] = defaultdict(list)
        zrem: dict[str, list[str]] = defaultdict(list)
        hincr: dict[tuple[str, str], int] = defaultdict(int)
        mset: list[str] = []
        written: dict[str, set[str]] = defaultdict(set)  # batch id -> keys written

        for batch_id, batch in self._batches.items():
            key = k.batch(batch_id)
            if batch_id in self._new_batches:
                cmds.append(["HSET", key, "d", _encode(batch, BATCH_FIELDS), "v", "0"])
                for idx in [k.batches(None, None), k.batches(None, batch.queue), *k.batch_indexes(batch.status, batch.queue)]:
                    zadd[idx] += [_num(batch.created_at), batch_id]
            else:
                if batch_id in self._dirty_batches:
                    cmds.append(["HSET", key, "d", _encode(batch, BATCH_FIELDS)])
                    old_status = self._batch_read[batch_id][1]
                    if old_status != batch.status:
                        for idx in k.batch_indexes(old_status, batch.queue):
                            zrem[idx].append(batch_id)
                        for idx in k.batch_indexes(batch.status, batch.queue):
                            zadd[idx] += [_num(batch.created_at), batch_id]
                cmds.append(["HINCRBY", key, "v", "1"])
            written[batch_id].add(key)

        for job_id in self._dirty_jobs:
            job = self._jobs[job_id]
            owner = written[self._owner(job.batch_id)]
            jkey = k.job(job_id)
            mset += [jkey, _encode(job, JOB_FIELDS)]
            owner.add(jkey)
            old, new = self._job_read.get(job_id), job.status
            if old == new:
                continue
            pos = _num(job.position)
            if old is None:
                for zkey in (k.bjobs(job.batch_id, job.kind, None), k.bjobs(job.batch_id, None, None)):
                    zadd[zkey] += [pos, job_id]
                    owner.add(zkey)
            else:
                for zkey in (k.bjobs(job.batch_id, job.kind, old), k.bjobs(job.batch_id, None, old)):
                    zrem[zkey].append(job_id)
                if old in JobStatus.ACTIVE:
                    hincr[(k.qcount(old), job.queue)] -= 1
            for zkey in (k.bjobs(job.batch_id, job.kind, new), k.bjobs(job.batch_id, None, new)):
                zadd[zkey] += [pos, job_id]
                owner.add(zkey)
            if new in JobStatus.ACTIVE:
                hincr[(k.qcount(new), job.queue)] += 1

        for key in self._dirty_attempts:
            attempt = self._attempts[key]
            owner = written[self._owner(attempt.batch_id)]
            akey = k.attempts(attempt.job_id)
            cmds.append(["HSET", akey, str(attempt.attempt), _encode(attempt, ATTEMPT_FIELDS)])
            owner.add(akey)
            member = k.lease_member(attempt.job_id, attempt.attempt)
            if attempt.status == AttemptStatus.RUNNING and attempt.lease_expires_at is not None:
                zadd[k.leases] += [_num(attempt.lease_expires_at), member]
            elif self._attempt_read.get(key) == AttemptStatus.RUNNING:
                zrem[k.leases].append(member)

        for event in self._events:
            ekey = k.events(self._owner(event.batch_id))
            body = {"batch_id": event.batch_id, "type": event.type, "data": event.data, "created_at": event.created_at}
            cmds.append(["EVENT", ekey, _dumps(body)])
            written[event.batch_id].add(ekey)

        for webhook in self._webhooks:
            owner = written[self._owner(webhook.batch_id)]
            wkey, lkey = k.webhook(webhook.id), k.webhooks(webhook.batch_id)
            mset += [wkey, _encode(webhook, WEBHOOK_FIELDS)]
            cmds.append(["RPUSH", lkey, webhook.id])
            if webhook.status == "pending":
                zadd[k.webhooks_due] += [_num(webhook.next_attempt_at), webhook.id]
            owner.update((wkey, lkey))

        for message in self._messages:
            payload = _dumps(message.payload)
            if message.available_at <= now:
                cmds.append(["PUBLISH", stream_key(k.prefix, message.queue), k.queues, message.queue, payload])
            else:
                zadd[k.delayed] += [_num(message.available_at), f"{message.queue}\n{payload}"]
            self.queues_touched.add(message.queue)

        for start in range(0, len(mset), 2 * CHUNK):
            cmds.append(["MSET", *mset[start : start + 2 * CHUNK]])
        for key, members in zrem.items():
            for start in range(0, len(members), CHUNK):
                cmds.append(["ZREM", key, *members[start : start + CHUNK]])
        for key, pairs in zadd.items():
            for start in range(0, len(pairs), 2 * CHUNK):
                cmds.append(["ZADD", key, *pairs[start : start + 2 * CHUNK]])
        for (key, field), delta in hincr.items():
            if delta:
                cmds.append(["HINCRBY", key, field, str(delta)])

        # Finished batches expire; a batch that runs again after it finished persists.
        ttl = int(self.store.settings.finished_ttl_s)
        for batch_id, batch in self._batches.items():
            was_finished = batch_id not in self._new_batches and self._batch_read[batch_id][1] in BatchStatus.FINISHED
            now_finished = batch.status in BatchStatus.FINISHED
            if now_finished and not was_finished:
                cmds.append(self._sweep(batch_id, ttl))
            elif was_finished and not now_finished:
                cmds.append(self._sweep(batch_id, -1))
            elif now_finished:
                for key in sorted(written.get(batch_id, ())):
                    cmds.append(["EXPIRE", key, str(ttl)])
        return self._checks(), cmds

    def _sweep(self, batch_id: str, ttl: int) -> list[Any]:
        k = self.keys
        return [
            "SWEEP",
            str(ttl),
            k.bjobs(batch_id, None, None),
            k.webhooks(batch_id),
            k.batch(batch_id),
            k.events(batch_id),
            *[z for z in k.all_bjobs(batch_id) if z != k.bjobs(batch_id, None, None)],
        ]

    async def commit(self) -> bool:
        checks, cmds = self.build(time.time())
        k = self.keys
        args: list[Any] = [k.job_prefix, k.attempts_prefix, k.webhook_prefix, k.event_seq, len(checks)]
        for key, version in checks:
            args += [key, version]
        args.append(len(cmds))
        for cmd in cmds:
            args.append(len(cmd))
            args += cmd
        reply = await _g(self.store.commit_script(keys=[], args=args))
        return int(reply[0]) == 1


class RedisStore(Store):
    def __init__(self, redis: Redis, settings: Settings):
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        # Called with the queue names a committed operation enqueued to (wakes long-polls).
        self.on_enqueue: Callable[[set[str]], None] | None = None
        self.commit_script = redis.register_script(COMMIT_LUA)
        self.relay_script = redis.register_script(RELAY_LUA)
        self.claim_webhooks_script = redis.register_script(CLAIM_WEBHOOKS_LUA)
        self.save_webhook_script = redis.register_script(SAVE_WEBHOOK_LUA)
        self.conflicts = 0  # commits re-run after a lost race (for tests and metrics)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def local_lock(self, batch_id: str) -> asyncio.Lock:
        lock = self._locks.get(batch_id)
        if lock is None:
            lock = self._locks[batch_id] = asyncio.Lock()
        return lock

    async def init(self) -> None:
        for script in (self.commit_script, self.relay_script, self.claim_webhooks_script, self.save_webhook_script):
            script.sha = await _g(self.redis.script_load(script.script))

    async def close(self) -> None:
        await self.redis.aclose()

    async def run(self, operation: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        for attempt in range(MAX_TRIES):
            uow = RedisUnitOfWork(self)
            try:
                try:
                    result = await operation(uow)
                except Exception:
                    # An answer computed from a torn read is no answer: re-run if the batch moved.
                    if await uow.still_current():
                        raise
                    ok = False
                else:
                    ok = await uow.commit() if uow.has_writes else await uow.still_current()
            finally:
                uow.release()
            if ok:
                if uow.queues_touched and self.on_enqueue is not None:
                    self.on_enqueue(uow.queues_touched)
                return result
            self.conflicts += 1
            await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** min(attempt, 10))))
        raise RuntimeError(f"operation gave up after {MAX_TRIES} conflicting attempts")

    # ---- reads ------------------------------------------------------------------------

    @staticmethod
    def _batch_from(raw: dict[str, str] | list[Any]) -> Batch | None:
        if isinstance(raw, list):  # HMGET d
            d = raw[0]
            return None if d is None else _decode(Batch, BATCH_FIELDS, d)
        if not raw or "d" not in raw:
            return None
        return _decode(Batch, BATCH_FIELDS, raw["d"])

    async def get_batch(self, batch_id: str) -> Batch | None:
        return self._batch_from(await _g(self.redis.hgetall(self.keys.batch(batch_id))))

    async def list_batches(self, status: str | None, queue: str | None, limit: int, before: str | None) -> list[Batch]:
        index = self.keys.batches(status, queue)
        anchor = await self.get_batch(before) if before else None
        top = _num(anchor.created_at) if anchor is not None else "+inf"
        found: list[Batch] = []
        offset = 0
        page = limit + 10
        while len(found) < limit:
            rows = await _g(self.redis.zrevrangebyscore(index, top, "-inf", start=offset, num=page, withscores=True))
            if not rows:
                break
            offset += len(rows)
            async with self.redis.pipeline(transaction=False) as pipe:
                for batch_id, _score in rows:
                    pipe.hmget(self.keys.batch(batch_id), ["d"])
                replies = await _g(pipe.execute())
            gone = []
            for (batch_id, score), raw in zip(rows, replies):
                batch = self._batch_from(raw)
                if batch is None:
                    gone.append(batch_id)
                    continue
                if anchor is not None and score == anchor.created_at and batch_id >= anchor.id:
                    continue
                if (status and batch.status != status) or (queue and batch.queue != queue):
                    continue  # moved since the index was read
                found.append(batch)
                if len(found) == limit:
                    break
            if gone:  # expired: drop from this index (the other indexes drop them when listed)
                await _g(self.redis.zrem(index, *gone))
                offset -= len(gone)
            if len(rows) < page:
                break
        return found

    async def get_job(self, job_id: str) -> Job | None:
        raw = await _g(self.redis.get(self.keys.job(job_id)))
        return None if raw is None else _decode(Job, JOB_FIELDS, raw)

    async def list_jobs(self, batch_id: str, status: str | None, kind: str | None, limit: int, offset: int) -> list[Job]:
        ids = await _g(self.redis.zrange(self.keys.bjobs(batch_id, kind, status), offset, offset + limit - 1))
        if not ids:
            return []
        raws = await _g(self.redis.mget([self.keys.job(j) for j in ids]))
        return [_decode(Job, JOB_FIELDS, raw) for raw in raws if raw is not None]

    async def list_attempts(self, job_id: str) -> list[Attempt]:
        raw = await _g(self.redis.hgetall(self.keys.attempts(job_id)))
        return [_decode(Attempt, ATTEMPT_FIELDS, raw[n]) for n in sorted(raw, key=int)]

    async def events_after(self, batch_id: str, after_id: int, limit: int) -> list[Event]:
        rows = await _g(self.redis.zrangebyscore(self.keys.events(batch_id), f"({int(after_id)}", "+inf", start=0, num=limit))
        events = []
        for row in rows:
            id_, _, body = row.partition("\n")
            data = json.loads(body)
            events.append(
                Event(id=int(id_), batch_id=data["batch_id"], type=data["type"], data=data["data"], created_at=data["created_at"])
            )
        return events

    async def list_webhooks(self, batch_id: str) -> list[Webhook]:
        ids = await _g(self.redis.lrange(self.keys.webhooks(batch_id), 0, -1))
        if not ids:
            return []
        raws = await _g(self.redis.mget([self.keys.webhook(i) for i in ids]))
        hooks = [_decode(Webhook, WEBHOOK_FIELDS, raw) for raw in raws if raw is not None]
        return sorted(hooks, key=lambda w: w.created_at)

    # ---- background work --------------------------------------------------------------

    async def expired_attempts(self, now: float, limit: int) -> list[tuple[str, int]]:
        members = await _g(self.redis.zrangebyscore(self.keys.leases, "-inf", f"({_num(now)}", start=0, num=limit))
        if not members:
            return []
        pairs = []
        for member in members:
            job_id, _, n = member.rpartition(":")
            pairs.append((job_id, int(n)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, n in pairs:
                pipe.hexists(self.keys.attempts(job_id), str(n))
            exists = await _g(pipe.execute())
        gone = [m for m, ok in zip(members, exists) if not ok]
        if gone:  # the batch expired with the attempt still running
            await _g(self.redis.zrem(self.keys.leases, *gone))
        return [p for p, ok in zip(pairs, exists) if ok]

    async def claim_due_webhooks(self, now: float, limit: int, hold_s: float) -> list[Webhook]:
        until = now + hold_s
        raws = await _g(self.claim_webhooks_script(
            keys=[self.keys.webhooks_due], args=[_num(now), limit, _num(until), self.keys.webhook_prefix]
        ))
        hooks = []
        for raw in raws:
            hook = _decode(Webhook, WEBHOOK_FIELDS, raw)
            hook.next_attempt_at = until
            hooks.append(hook)
        return hooks

    async def save_webhook(self, webhook: Webhook) -> None:
        due = _num(webhook.next_attempt_at) if webhook.status == "pending" else ""
        await _g(self.save_webhook_script(
            keys=[self.keys.webhook(webhook.id), self.keys.webhooks_due],
            args=[_encode(webhook, WEBHOOK_FIELDS), due, webhook.id],
        ))

    async def relay_step(self, batch_size: int = 500) -> int:
        """Move delayed messages (retry backoff) that are due to their streams."""
        k = self.keys
        return int(await _g(self.relay_script(keys=[k.delayed], args=[_num(time.time()), batch_size, k.stream_prefix, k.queues])))

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        """Queued / running jobs per queue."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in (JobStatus.QUEUED, JobStatus.RUNNING):
                pipe.hgetall(self.keys.qcount(status))
            replies = await _g(pipe.execute())
        counts: dict[str, dict[str, int]] = {}
        for status, reply in zip((JobStatus.QUEUED, JobStatus.RUNNING), replies):
            for queue, n in reply.items():
                if int(n) > 0:
                    counts.setdefault(queue, {})[status] = int(n)
        return counts

    async def healthy(self) -> bool:
        try:
            return bool(await _g(self.redis.ping()))
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False


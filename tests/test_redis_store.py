"""The Redis store's own guarantees (on Redis and on the Redis Cluster when those backends
are tested, and on Redis whatever the backend list).

Two API replicas on one key prefix, TTLs of finished batches, no KEYS on any path, and
O(1) progress reads.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest
from redis.asyncio.connection import AbstractConnection

from app.redis_client import AnyRedis
from app.store import redis_scripts as lua
from conftest import REDIS_STORE_BACKENDS, redis_client, start_api

TTL = 3600


@pytest.fixture(params=REDIS_STORE_BACKENDS)
def store_backend(request) -> str:  # noqa: ANN001
    return request.param


@pytest.fixture
async def replicas(tmp_path, store_backend):
    """Start apps that share one key prefix, like API replicas behind a load balancer."""
    prefix = f"batchq-test-{uuid.uuid4().hex[:12]}"
    stops = []

    async def start(**overrides):  # noqa: ANN202
        api, stop = await start_api(store_backend, tmp_path, prefix=prefix, **overrides)
        stops.append(stop)
        return api

    yield start
    for stop in reversed(stops):
        await stop()


@pytest.fixture
async def raw_redis(store_backend):
    client = redis_client(store_backend)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def sent_commands(monkeypatch):
    """Every command this process sends to Redis, by name (pipelines included)."""
    sent: Counter = Counter()
    original = AbstractConnection.pack_command

    def pack_command(self, *args):  # noqa: ANN001, ANN202
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        sent[name.split()[0].upper()] += 1
        return original(self, *args)

    monkeypatch.setattr(AbstractConnection, "pack_command", pack_command)
    return sent


async def completed_events(api, batch_id: str) -> int:
    events = (await api.get(f"/v1/batches/{batch_id}/events", params={"stream": "false"})).json()["events"]
    return sum(1 for e in events if e["type"] == "completed")


async def test_two_replicas_completing_the_last_two_jobs_finish_the_batch_once(replicas):
    a = await replicas()
    b = await replicas()
    store_a, _store_b = a.services.store, b.services.store

    # Realistic races: the last two reports of each batch arrive at once on two replicas.
    for _ in range(5):
        batch = await a.create({"jobs": ["J"] * 6, "on_complete": {"job": {"name": "Done"}}})
        msgs = await a.claim_until(6)
        for m in msgs[:4]:
            await (a if m["position"] % 2 else b).complete(m)
        r1, r2 = await asyncio.gather(
            a.post(f"/v1/jobs/{msgs[4]['job_id']}/complete", {"attempt": 1, "lease": msgs[4]["lease"], "result": 4}),
            b.post(f"/v1/jobs/{msgs[5]['job_id']}/complete", {"attempt": 1, "lease": msgs[5]["lease"], "result": 5}),
        )
        assert r1.status_code == r2.status_code == 200, (r1.text, r2.text)
        final = await b.batch(batch["id"])
        assert final["status"] == "completed"
        assert (final["completed"], final["failed"], final["waiting"], final["queued"], final["running"]) == (6, 0, 0, 0, 0)
        assert await completed_events(a, batch["id"]) == 1
        # on_complete ran once: exactly one callback job.
        callbacks = await a.jobs(batch["id"], kind="callback")
        assert len(callbacks) == 1
        (callback,) = await a.claim_until(1)
        await b.complete(callback)

    # The same race made deterministic: replica A has read the batch (the last two jobs
    # running) and is about to commit when replica B completes the other job.
    batch = await a.create({"jobs": ["X", "Y"]})
    x, y = sorted(await a.claim_until(2), key=lambda m: m["position"])
    original = store_a.send_commit
    b_done = asyncio.Event()
    calls = 0

    async def commit_after_b(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal calls
        calls += 1
        if calls == 1:
            await b_done.wait()
        return await original(*args, **kwargs)

    store_a.send_commit = commit_after_b
    conflicts_before = store_a.conflicts
    try:
        task = asyncio.create_task(a.complete(x, result="x"))
        while calls == 0:
            await asyncio.sleep(0.005)
        await b.complete(y, result="y")
        assert (await b.batch(batch["id"]))["status"] == "running"  # B was not last
        b_done.set()
        await task
    finally:
        store_a.send_commit = original
    assert store_a.conflicts == conflicts_before + 1  # A's first commit was refused and re-run
    final = await a.batch(batch["id"])
    assert final["status"] == "completed" and final["completed"] == 2 and final["queued"] + final["running"] == 0
    assert await completed_events(b, batch["id"]) == 1
    results = (await a.get(f"/v1/batches/{batch['id']}/results")).json()["results"]
    assert results == {x["job_id"]: "x", y["job_id"]: "y"}


async def batch_keys(raw: AnyRedis, prefix: str, batch_id: str) -> dict[str, int]:
    """TTL of every key that belongs to one batch (SCAN is fine in a test, never on a request)."""
    keys = {key: await raw.ttl(key) async for key in raw.scan_iter(match=f"{prefix}:{{{batch_id}}}:*", count=1000)}
    return {k: t for k, t in keys.items() if t != -2}  # -2: gone meanwhile (an outbox the relay emptied)


def test_the_keys_of_one_batch_share_a_cluster_slot():
    from redis.crc import key_slot

    from app.store.redis_keys import Keys

    keys = Keys("batchq").batch_keys(str(uuid.uuid4()))
    assert len({key_slot(k.encode()) for k in keys}) == 1


async def test_finished_batches_expire_and_running_ones_do_not(replicas, raw_redis):
    api = await replicas(finished_ttl_s=TTL)
    prefix = api.settings.redis_prefix
    done = await api.create(
        {
            "jobs": [{"name": "A", "max_attempts": 2}, ["B", "UndoB"]],
            "failure_policy": "allow_failures",
            "on_complete": {"url": "http://127.0.0.1:9/hook", "job": {"name": "Report"}},
            "on_event": {"url": "http://127.0.0.1:9/events"},
        }
    )
    running = await api.create({"jobs": ["C", "D"]})
    msgs = {m["name"]: m for m in await api.claim_until(4)}
    await api.fail(msgs["A"], "flaky")  # retried: a second attempt
    await api.fail(msgs["B"], "broken", retryable=False)  # compensated
    await api.complete(msgs["C"])
    for m in await api.claim_until(2):  # A's retry and UndoB
        await api.complete(m)
    assert (await api.batch(done["id"]))["status"] == "completed_with_failures"
    (report,) = await api.claim_until(1)  # the on_complete job, dispatched as it finished
    assert report["name"] == "Report"
    await api.complete(report)  # a write to an already finished batch keeps the TTL

    keys = await batch_keys(raw_redis, prefix, done["id"])
    kinds = {k.split("}:", 1)[1].split(":")[0] for k in keys}
    assert {"batch", "jobs", "state", "error", "result", "att", "ev", "wh", "whl", "z"} <= kinds, kinds
    for key, ttl in keys.items():
        assert TTL - 60 < ttl <= TTL, (key, ttl)

    keys = await batch_keys(raw_redis, prefix, running["id"])
    assert keys and all(ttl == -1 for ttl in keys.values()), {k: t for k, t in keys.items() if t != -1}
    # Shared keys (indexes, gauges, streams) never expire.
    for key in [f"{prefix}:list:default", f"{prefix}:active", f"{prefix}:qc", f"{prefix}:queues"]:
        assert await raw_redis.ttl(key) == -1, key
    # Listing still works and finds both.
    listed = {b["id"] for b in (await api.get("/v1/batches")).json()["batches"]}
    assert listed == {done["id"], running["id"]}


async def test_a_retried_finished_batch_loses_its_ttl_and_gets_it_back(replicas, raw_redis):
    api = await replicas(finished_ttl_s=TTL)
    prefix = api.settings.redis_prefix
    batch = await api.create({"jobs": ["Ok", "Bad"], "failure_policy": "allow_failures"})
    msgs = {m["name"]: m for m in await api.claim_until(2)}
    await api.complete(msgs["Ok"])
    await api.fail(msgs["Bad"], "nope")
    assert (await api.batch(batch["id"]))["status"] == "completed_with_failures"
    assert all(ttl > 0 for ttl in (await batch_keys(raw_redis, prefix, batch["id"])).values())

    r = await api.post(f"/v1/batches/{batch['id']}/retry")
    assert r.status_code == 200, r.text
    assert (await api.batch(batch["id"]))["status"] == "running"
    keys = await batch_keys(raw_redis, prefix, batch["id"])
    assert keys and all(ttl == -1 for ttl in keys.values()), {k: t for k, t in keys.items() if t != -1}

    (again,) = await api.claim_until(1)
    await api.complete(again)
    assert (await api.batch(batch["id"]))["status"] == "completed"
    keys = await batch_keys(raw_redis, prefix, batch["id"])
    assert all(TTL - 60 < ttl <= TTL for ttl in keys.values()), keys


async def test_expired_batches_disappear_from_listings(replicas, raw_redis):
    api = await replicas()
    prefix = api.settings.redis_prefix
    first = await api.create({"jobs": ["A"]})
    second = await api.create({"jobs": ["B"]})
    await raw_redis.delete(f"{prefix}:{{{first['id']}}}:batch")  # as if its TTL ran out
    listed = [b["id"] for b in (await api.get("/v1/batches")).json()["batches"]]
    assert listed == [second["id"]]
    assert await raw_redis.zscore(f"{prefix}:list:*", first["id"]) is None  # dropped lazily from the listing read
    assert (await api.get(f"/v1/batches/{first['id']}")).status_code == 404


async def test_no_keys_or_scan_on_any_path(replicas, sent_commands):
    api = await replicas(default_max_attempts=2)
    batch = await api.create(
        {"type": "chain", "jobs": [["A", "UndoA"], "B", "C"], "on_failure": {"url": "http://127.0.0.1:9/x"}}
    )
    par = await api.create({"jobs": ["P"] * 5, "max_concurrency": 2})
    msgs = await api.run_all(
        handler=lambda m: api.fail(m, "bad", retryable=False) if m["name"] == "B" else api.complete(m)
    )
    assert msgs
    for url in [
        f"/v1/batches/{batch['id']}",
        f"/v1/batches/{batch['id']}/progress",
        f"/v1/batches/{batch['id']}/jobs",
        f"/v1/batches/{batch['id']}/results",
        f"/v1/batches/{batch['id']}/callbacks",
        f"/v1/batches/{batch['id']}/events?stream=false",
        "/v1/batches?status=failed",
        "/v1/queues",
        "/metrics",
        "/readyz",
    ]:
        assert (await api.get(url)).status_code in (200, 404)
    await api.post(f"/v1/batches/{par['id']}/cancel")
    await asyncio.sleep(0.2)  # background loops: relay, reaper, webhooks
    assert sum(sent_commands.values()) > 50
    assert not {"KEYS", "SCAN"} & set(sent_commands), sent_commands
    for script in (lua.COMMIT, lua.LOCK, lua.UNLOCK, lua.SETTLE_INDEX, lua.CLAIM_HOOKS):
        assert "'KEYS'" not in script.upper() and "'SCAN'" not in script.upper()


async def test_progress_read_is_constant_in_batch_size(replicas, sent_commands):
    api = await replicas(background=False)
    costs = {}
    for size in (3, 2000):
        batch = await api.create({"jobs": ["J"] * size})
        url = f"/v1/batches/{batch['id']}/progress"
        await api.get(url)  # warm: connections open
        sent_commands.clear()
        r = await api.get(url)
        assert r.status_code == 200 and r.json()["total"] == size
        costs[size] = sum(sent_commands.values())
    assert costs[3] == costs[2000] == 1, costs  # one HGETALL


async def test_commits_wait_for_replicas_and_a_master_without_one_is_not_waited_for(replicas, sent_commands, caplog):
    """Commits are followed by WAIT on their connection. Asked for more replicas than a master
    has (a master whose replica just took over is in that state), the first write waits out
    the timeout and is accepted with a warning (once per master), and later writes wait only
    for the replicas the master has: none on the test's Redis, one on the test's cluster."""
    import logging
    import time

    caplog.set_level(logging.WARNING, logger="app.store.redis_replicas")
    api = await replicas(redis_wait_replicas=3, redis_wait_timeout_ms=200)  # more than any master here has
    started = time.monotonic()
    batch = await api.create({"jobs": ["A", "B"], "on_complete": {"job": {"name": "Report"}}})
    assert time.monotonic() - started >= 0.2  # the first commit waited for replicas
    sent_commands.clear()
    for msg in await api.claim_until(2):
        await api.complete(msg)
    (report,) = await api.claim_until(1)
    await api.complete(report)
    assert (await api.batch(batch["id"]))["status"] == "completed"
    warnings = [r for r in caplog.records if "replicas online" in r.getMessage()]
    assert 1 <= len(warnings) <= (1 if api.backend == "redis" else 3), caplog.text  # once per master
    if api.backend == "redis":
        assert sent_commands["WAIT"] == 0  # no replica at all: nothing to wait for
    else:
        assert sent_commands["WAIT"] > 0  # commits wait for the one replica each master has


async def test_moves_left_waiting_by_a_process_that_died_are_finished_by_the_next_operation(replicas, raw_redis):
    """A whole-batch move runs a few jobs per script (move_budget), the rest waiting in the
    batch's `pend` field under its lock. If the process dies in between, the next operation on
    the batch, once the lock has run out, finishes the moves before its own work: counts and
    job statuses agree again, and no operation commits on top of half-moved jobs."""
    dies = await replicas(move_budget=4, background=False)  # a dead process runs no loops
    lives = await replicas(move_budget=4)

    async def died(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        return None  # the process is gone before its next script

    batch = await dies.create({"jobs": ["A"] * 20})
    a, b = await dies.claim_until(2)
    dies.services.store._finish_moves = died
    await dies.fail(a, "bad", retryable=False)  # fail-fast: 18 jobs to cancel, 4 of them now
    key = dies.services.store.keys.of(batch["id"], "batch")
    assert await raw_redis.hexists(key, "pend")
    statuses = Counter(j["status"] for j in await lives.jobs(batch["id"]))
    assert statuses["cancelled"] < 18  # half-moved: what a reader may see meanwhile
    await raw_redis.hset(key, "lkx", 0)  # the dead process's lock runs out

    await lives.complete(b)  # a report cannot commit quietly over waiting moves: it finishes them first
    assert not await raw_redis.hexists(key, "pend") and not await raw_redis.hexists(key, "lk")
    final = await lives.batch(batch["id"])
    assert (final["status"], final["failed"], final["completed"], final["cancelled"]) == ("failed", 1, 1, 18), final
    statuses = Counter(j["status"] for j in await lives.jobs(batch["id"]))
    assert statuses == {"failed": 1, "completed": 1, "cancelled": 18}, statuses
    assert await lives.claim(max=20, wait_s=0.3) == []  # no message of a cancelled job is handed out


async def test_a_creation_left_half_done_by_a_process_that_died_is_finished_by_the_reconciler(replicas, raw_redis):
    """A big creation goes move_budget positions per script too (Redis runs one script at a
    time: a 100,000-job creation in one held every other batch half a second). The first
    script writes the whole batch; the rest of its positions and messages wait in its `pend`
    field. If the process dies in between, nobody may come to the batch (no message of it may
    have reached the queue yet): the reconciler's walk finishes it once its lock ran out."""
    # The dead process runs no loops; the live one's reconciler rounds are the test's own.
    dies = await replicas(move_budget=4, background=False)
    lives = await replicas(move_budget=4, reconcile_interval_s=3600)

    async def died(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        return None

    dies.services.store._finish_moves = died
    batch = await dies.create({"jobs": ["A"] * 20})
    key = dies.services.store.keys.of(batch["id"], "batch")
    assert await raw_redis.hexists(key, "pend")
    assert (await lives.batch(batch["id"]))["total"] == 20  # the batch itself is whole from the first script
    assert len(await lives.jobs(batch["id"])) < 20  # its positions are not all listed yet

    await lives.services.store.stale_queued(lives.services.clock(), 30.0, 100)  # a reconciler round: lock still held
    assert await raw_redis.hexists(key, "pend")
    await raw_redis.hset(key, "lkx", 0)  # the dead process's lock runs out
    await lives.services.store.stale_queued(lives.services.clock(), 30.0, 100)
    assert not await raw_redis.hexists(key, "pend") and not await raw_redis.hexists(key, "lk")
    assert Counter(j["status"] for j in await lives.jobs(batch["id"])) == {"queued": 20}
    assert len(await lives.run_all()) == 20
    await lives.wait_status(batch["id"], "completed")


async def test_the_reconciler_keeps_a_batch_it_meets_while_it_is_being_created(replicas, raw_redis):
    """A new batch is announced to the reconciler's list before its commit. A round that
    meets it in between (no batch hash yet) must not take it for a creation that never
    committed: dropped then, its lost messages would never be written again. Only an
    announcement older than a minute with no batch behind it is dropped."""
    api = await replicas(background=False)
    store = api.services.store
    now = time.time()
    await raw_redis.zadd(store.keys.active, {"being-created": now, "never-committed": now - 61})
    await store.stale_queued(api.services.clock(), 30.0, 100)
    assert await raw_redis.zrange(store.keys.active, 0, -1) == ["being-created"]

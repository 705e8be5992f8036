"""The worker runtime and SDK, run in-process against every backend (ASGI transport)."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from contextlib import asynccontextmanager

import httpx
import pytest

from app.broker.redis_streams import GROUP, stream_key
from batchq import JobContext, JobResult, Registry, Worker
from batchq.logs import JsonFormatter
from examples.registry import registry as examples
from conftest import BACKENDS, REDIS_URL, STREAM_BACKENDS, redis_client, redis_url

FINISHED = ("completed", "completed_with_failures", "failed", "cancelled")


def make_worker(api, registry: Registry, **kw) -> Worker:  # noqa: ANN001
    kw.setdefault("poll_wait_s", 0.1)
    return Worker("http://batchq.test", registry, transport=httpx.ASGITransport(app=api.app), **kw)


@asynccontextmanager
async def running(worker: Worker):
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop(timeout=5)


async def results_by_position(api, batch_id: str) -> dict[int, object]:  # noqa: ANN001
    jobs = await api.jobs(batch_id)
    results = (await api.get(f"/v1/batches/{batch_id}/results")).json()["results"]
    return {j["position"]: results[j["id"]] for j in jobs if j["id"] in results}


async def test_parallel_batch_is_run_by_handlers_concurrently(api):
    batch = await api.create({"jobs": [{"name": "Echo", "args": {"n": i}} for i in range(6)], "context": {"t": "x"}})
    async with running(make_worker(api, examples, concurrency=3)) as worker:
        done = await api.wait_status(batch["id"], *FINISHED)
    assert done["status"] == "completed" and done["completed"] == 6
    results = await results_by_position(api, batch["id"])
    assert results == {i: {"echo": {"n": i, "t": "x"}, "position": i, "attempt": 1} for i in range(6)}
    assert worker.stats.completed == 6


async def test_chain_context_flows_through_handlers(api):
    seen = []

    reg = Registry()

    @reg.job("Add")
    def add(args, ctx: JobContext):  # noqa: ANN001, ANN202
        seen.append(dict(ctx.context))
        total = ctx.context.get("total", 0) + args["value"]
        return JobResult(result=total, context={"total": total, f"step{ctx.position}": True})

    batch = await api.create(
        {"type": "chain", "jobs": [{"name": "Add", "args": {"value": v}} for v in (1, 2, 3)], "context": {"total": 10}}
    )
    async with running(make_worker(api, reg, concurrency=4)) as worker:
        done = await api.wait_status(batch["id"], *FINISHED)
    assert done["status"] == "completed" and worker.stats.completed == 3
    assert await results_by_position(api, batch["id"]) == {0: 11, 1: 13, 2: 16}
    # Step 3 saw what steps 1 and 2 put in the context.
    assert seen[2] == {"total": 13, "step0": True, "step1": True}
    assert done["context"] == {"total": 16, "step0": True, "step1": True, "step2": True}


async def test_raising_handler_is_retried_up_to_max_attempts_then_failed(api):
    calls = []
    reg = Registry()

    @reg.job("Flaky")
    async def flaky(args, ctx):  # noqa: ANN001, ANN202
        calls.append(ctx.attempt)
        raise ValueError(f"bad attempt {ctx.attempt}")

    batch = await api.create({"jobs": [{"name": "Flaky", "max_attempts": 3}]})
    async with running(make_worker(api, reg)):
        done = await api.wait_status(batch["id"], *FINISHED)
    assert done["status"] == "failed"
    (job,) = await api.jobs(batch["id"])
    assert calls == [1, 2, 3] and job["attempts"] == 3
    assert job["error"] == "ValueError: bad attempt 3"


async def test_permanent_error_is_not_retried(api):
    batch = await api.create({"jobs": [{"name": "Fail", "args": {"permanent": True, "message": "card declined"}, "max_attempts": 4}]})
    async with running(make_worker(api, examples)):
        done = await api.wait_status(batch["id"], *FINISHED)
    (job,) = await api.jobs(batch["id"])
    assert done["status"] == "failed"
    assert job["attempts"] == 1 and job["error"] == "PermanentError: card declined"


async def test_unknown_job_name_fails_without_retry(api):
    batch = await api.create({"jobs": [{"name": "NoSuchJob", "max_attempts": 3}, "Echo"], "failure_policy": "allow_failures"})
    async with running(make_worker(api, examples, concurrency=2)):
        done = await api.wait_status(batch["id"], *FINISHED)
    assert done["status"] == "completed_with_failures"
    (failed,) = await api.jobs(batch["id"], status="failed")
    assert failed["name"] == "NoSuchJob" and failed["attempts"] == 1
    assert "no handler for job 'NoSuchJob'" in failed["error"] and "Echo" in failed["error"]


async def test_handlers_grow_a_chain_at_run_time(api):
    reg = Registry()
    threads = []

    @reg.job("GrowSync")
    def grow_sync(args, ctx: JobContext):  # noqa: ANN001, ANN202
        threads.append(threading.current_thread() is not threading.main_thread())
        ctx.add_jobs([{"name": "GrowAsync", "args": {"from": ctx.job_id}}])
        return JobResult(result="sync", context={"grown": 1})

    @reg.job("GrowAsync")
    async def grow_async(args, ctx: JobContext):  # noqa: ANN001, ANN202
        await ctx.add_jobs_async(["Leaf"])
        return JobResult(result="async", context={"grown": ctx.context["grown"] + 1})

    @reg.job("Leaf")
    def leaf(args, ctx: JobContext):  # noqa: ANN001, ANN202
        return {"grown": ctx.context["grown"]}

    batch = await api.create({"type": "chain", "jobs": ["GrowSync"]})
    assert batch["total"] == 1
    async with running(make_worker(api, reg, concurrency=2)):
        done = await api.wait_status(batch["id"], *FINISHED)
    assert done["status"] == "completed" and done["total"] == 3 and done["completed"] == 3
    assert await results_by_position(api, batch["id"]) == {0: "sync", 1: "async", 2: {"grown": 2}}
    assert threads == [True]  # sync handlers run off the event loop


async def test_heartbeats_keep_a_long_job_alive_past_its_timeout(api):
    reg = Registry()

    @reg.job("Long")
    def long(args, ctx):  # noqa: ANN001, ANN202
        time.sleep(args["seconds"])  # a blocking handler: heartbeats must still go out
        return "done"

    # A 4 s job under a 3 s lease: the heartbeats (every 1 s) keep it, with room for a slow machine.
    batch = await api.create({"jobs": [{"name": "Long", "args": {"seconds": 4}, "timeout_s": 3, "max_attempts": 2}]})
    async with running(make_worker(api, reg)) as worker:
        done = await api.wait_status(batch["id"], *FINISHED)
    (job,) = await api.jobs(batch["id"])
    assert done["status"] == "completed" and job["attempts"] == 1
    assert worker.stats.abandoned == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the worker's own logic: one store will do
@pytest.mark.parametrize("prefetch", [0, 1])
async def test_prefetched_messages_wait_for_a_slot_with_their_leases_kept(api, prefetch):  # noqa: ANN001
    reg = Registry()
    running_now, most, release = [0], [0], asyncio.Event()

    @reg.job("Hold")
    async def hold(args, ctx):  # noqa: ANN001, ANN202
        running_now[0] += 1
        most[0] = max(most[0], running_now[0])
        if args["first"]:
            await release.wait()
        running_now[0] -= 1

    # A 3 s lease (heartbeats every 1 s); the second job waits 4.5 s for the first one's slot.
    batch = await api.create({"jobs": [{"name": "Hold", "args": {"first": i == 0}, "timeout_s": 3} for i in range(2)]})
    async with running(make_worker(api, reg, concurrency=1, prefetch=prefetch)) as worker:
        second = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            jobs = {j["position"]: j for j in await api.jobs(batch["id"])}
            first, second = jobs[0], jobs[1]
            if running_now[0] == 1 and (second["status"] == "running" or not prefetch):
                break
            await asyncio.sleep(0.05)
        assert running_now[0] == 1 and first["status"] == "running", jobs
        # Prefetched: started (its lease taken), but its handler waits for the one slot.
        assert second["status"] == ("running" if prefetch else "queued"), second
        await asyncio.sleep(4.5)  # past the second one's lease, had nothing kept it
        release.set()
        done = await api.wait_status(batch["id"], *FINISHED)
    assert done["status"] == "completed" and most[0] == 1, (done, most)
    assert [j["attempts"] for j in await api.jobs(batch["id"])] == [1, 1]
    assert worker.stats.completed == 2 and worker.stats.abandoned == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the worker's own logic: one store will do
async def test_an_attempt_handed_to_the_worker_twice_runs_once(api):
    """An entry read again (its consumer group made anew) may come back to the worker that
    holds it, with the same lease: it runs once."""
    reg = Registry()
    runs = []

    @reg.job("Once")
    async def once(args, ctx):  # noqa: ANN001, ANN202
        runs.append(ctx.job_id)
        await asyncio.sleep(0.2)  # still held when its copy arrives

    batch = await api.create({"jobs": ["Once"]})
    (msg,) = await api.claim_until(1)

    class Twice:  # hands the same started message out twice, then nothing
        def __init__(self) -> None:
            self.left = [[msg, dict(msg)]]

        async def fetch(self, queue: str, max_messages: int, wait_s: float) -> list[dict]:
            if self.left:
                return self.left.pop()
            await asyncio.sleep(wait_s)
            return []

        async def close(self) -> None:
            pass

    async with running(make_worker(api, reg, concurrency=2)) as worker:
        worker.source = Twice()
        done = await api.wait_status(batch["id"], *FINISHED)
    assert done["status"] == "completed" and runs == [msg["job_id"]], runs
    assert worker.stats.completed == 1


async def test_refused_heartbeat_makes_the_worker_abandon_the_job(api):
    reg = Registry()
    started, cancelled = asyncio.Event(), asyncio.Event()

    @reg.job("Forever")
    async def forever(args, ctx):  # noqa: ANN001, ANN202
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    batch = await api.create({"jobs": [{"name": "Forever", "timeout_s": 1.5}]})
    async with running(make_worker(api, reg)) as worker:
        await asyncio.wait_for(started.wait(), 10)
        assert (await api.post(f"/v1/batches/{batch['id']}/cancel")).status_code == 200
        await asyncio.wait_for(cancelled.wait(), 10)  # the next heartbeat got 409
    assert worker.stats.abandoned == 1 and worker.stats.completed == worker.stats.failed == 0
    assert (await api.batch(batch["id"]))["status"] == "cancelled"


async def test_one_worker_serves_several_queues(api):
    a = await api.create({"jobs": ["Echo", "Echo"], "queue": "alpha"})
    b = await api.create({"jobs": ["Noop"], "queue": "beta"})  # Noop takes only args
    async with running(make_worker(api, examples, queues=["alpha", "beta"], concurrency=2)):
        for batch in (a, b):
            assert (await api.wait_status(batch["id"], *FINISHED))["status"] == "completed"


@pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True)
async def test_worker_reads_redis_streams_directly(api):
    prefix = api.settings.redis_prefix
    par = await api.create({"jobs": [{"name": "Echo", "args": {"n": i}} for i in range(5)]})
    chain = await api.create({"type": "chain", "jobs": [{"name": "Add", "args": {"value": v}} for v in (1, 2, 3)]})
    worker = make_worker(api, examples, concurrency=3, broker_url=redis_url(api.backend))
    async with running(worker):
        for batch in (par, chain):
            assert (await api.wait_status(batch["id"], *FINISHED))["status"] == "completed"
    assert worker.stats.completed == 8
    assert (await api.batch(chain["id"]))["context"]["total"] == 6
    history = (await api.get(f"/v1/batches/{par['id']}/jobs/{(await api.jobs(par['id']))[0]['id']}")).json()
    assert history["attempt_history"][0]["worker"] == worker.worker_id
    # Every entry was acked and deleted: nothing is pending or left in the stream.
    redis = redis_client(api.backend)
    try:
        key = stream_key(prefix, "default", "default")
        assert await redis.xlen(key) == 0
        assert (await redis.xpending(key, GROUP))["pending"] == 0
    finally:
        await redis.aclose()


async def test_worker_sends_the_api_key_when_the_api_requires_one(api_factory):
    api = await api_factory(api_token="s3cret")
    api.client.headers["Authorization"] = "Bearer s3cret"
    batch = await api.create({"jobs": ["Echo"]})
    refused = make_worker(api, examples)
    async with running(refused):
        await asyncio.sleep(0.3)  # its claims get 401: nothing runs
    assert (await api.batch(batch["id"]))["completed"] == 0
    async with running(make_worker(api, examples, api_key="s3cret")):
        assert (await api.wait_status(batch["id"], *FINISHED))["status"] == "completed"


async def test_the_api_names_the_streams_a_direct_reader_reads(api):
    r = await api.get("/v1/queues/images/streams")
    if api.backend in STREAM_BACKENDS:
        assert r.status_code == 200, r.text
        assert r.json() == {"group": GROUP, "streams": [stream_key(api.settings.redis_prefix, "default", "images")]}
    else:
        assert r.status_code == 409 and "claim over HTTP" in r.json()["error"]["message"]


@pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True)
async def test_a_direct_reader_reads_every_partition_of_a_queue(api_factory, caplog):
    """A queue spread over three streams (partitions): the API names them all, the producer
    spreads the messages over them, the worker reads every one and makes the consumer group
    of each on the spot (NOGROUP)."""
    caplog.set_level(logging.INFO, logger="batchq.worker")
    api = await api_factory(queue_partitions=3)
    key = stream_key(api.settings.redis_prefix, "default", "default")
    streams = [key, f"{key}#1", f"{key}#2"]
    assert (await api.get("/v1/queues/default/streams")).json()["streams"] == streams
    batch = await api.create({"jobs": [{"name": "Echo", "args": {"n": i}} for i in range(30)]})
    redis = redis_client(api.backend)
    try:
        deadline = time.monotonic() + 10
        while sum([await redis.xlen(s) for s in streams]) < 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        lengths = [await redis.xlen(s) for s in streams]
        assert sum(lengths) == 30 and all(lengths), lengths  # 30 job ids: every partition has some
        worker = make_worker(api, examples, concurrency=2, broker_url=redis_url(api.backend))
        async with running(worker):
            assert (await api.wait_status(batch["id"], *FINISHED))["status"] == "completed"
        assert worker.stats.completed == 30
        assert any(r.getMessage().startswith("queue default: created consumer group") for r in caplog.records)
        for stream in streams:
            assert await redis.xlen(stream) == 0
            assert (await redis.xpending(stream, GROUP))["pending"] == 0
    finally:
        await redis.aclose()


@pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True)
async def test_a_direct_reader_recreates_a_deleted_stream_group(api, caplog):
    caplog.set_level(logging.INFO, logger="batchq.worker")
    key = stream_key(api.settings.redis_prefix, "default", "default")
    redis = redis_client(api.backend)
    worker = make_worker(api, examples, broker_url=redis_url(api.backend))
    try:
        async with running(worker):
            first = await api.create({"jobs": ["Echo"]})
            assert (await api.wait_status(first["id"], *FINISHED))["status"] == "completed"
            await redis.delete(key)  # the stream and its group are gone (a flush, a failover)
            second = await api.create({"jobs": ["Echo", "Echo"]})
            assert (await api.wait_status(second["id"], *FINISHED))["status"] == "completed"
        assert worker.stats.completed == 3
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        if api.backend == "pg-redis":  # the API publishes without making the group again: the reader does
            assert any(r.getMessage().startswith("queue default: created consumer group") for r in caplog.records)
    finally:
        await redis.aclose()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in STREAM_BACKENDS][:1], indirect=True)
async def test_a_direct_reader_claims_over_http_when_the_broker_has_no_streams(api):
    batch = await api.create({"jobs": ["Echo", "Echo"]})
    async with running(make_worker(api, examples, broker_url=REDIS_URL)) as worker:
        assert (await api.wait_status(batch["id"], *FINISHED))["status"] == "completed"
    assert worker.stats.completed == 2


async def test_job_starts_and_ends_are_logged_at_info_and_polls_at_debug(api, caplog):
    caplog.set_level(logging.DEBUG, logger="batchq")
    batch = await api.create({"jobs": ["Echo", {"name": "Fail", "args": {"permanent": True}}],
                              "failure_policy": "allow_failures"})
    async with running(make_worker(api, examples)) as worker:
        await api.wait_status(batch["id"], *FINISHED)
    jobs = {j["name"]: j for j in await api.jobs(batch["id"])}
    records = [r for r in caplog.records if r.name == "batchq.worker"]
    polls = [r for r in records if r.getMessage().startswith(("polling", "0 messages"))]
    assert polls and {r.levelno for r in polls} == {logging.DEBUG}
    for name, outcome in (("Echo", "completed"), ("Fail", "failed_permanently")):
        job = jobs[name]
        mine = [r for r in records if getattr(r, "job_id", None) == job["id"] and r.levelno == logging.INFO]
        assert [r.getMessage().split()[-1] for r in mine][0] == "started"
        (end,) = [r for r in mine if getattr(r, "outcome", None)]
        assert end.outcome == outcome and end.batch_id == batch["id"] and end.attempt == 1
        assert end.worker == worker.worker_id and end.job_name == name and end.duration_s >= 0
        line = json.loads(JsonFormatter().format(end))
        assert {"ts", "level", "logger", "message", "batch_id", "job_id", "attempt", "worker"} <= set(line)
        assert line["level"] == "INFO" and line["job_id"] == job["id"]

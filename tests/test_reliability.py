"""The store heals the broker: faults injected mid-batch lose nothing and reach no client as a 500.

Two API replicas and two workers (each given both API URLs) run a batch while a fault
strikes: the queue's stream is deleted, its consumer group destroyed, the store's
connections are cut again and again, or one replica is killed and restarted. Each time
the batch completes with every job, its callback fires once, no worker or client saw a
500, and the number of jobs that ran twice is printed (and is zero: nothing here forces
a job to run again).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from conftest import PG_DB, PG_URL, REDIS_URL, STREAM_BACKENDS
from processes import FAST, ROOT, free_port, wait_healthy
from receiver import Receiver

JOBS = 240
STREAM_DB = "redis://127.0.0.1:6379/3"  # the fault tests' own Redis database: CLIENT KILL touches no one else


def backend_env(backend: str, prefix: str) -> dict[str, str]:
    env = dict(FAST, BATCHQ_REDIS_PREFIX=prefix, BATCHQ_RECONCILE_INTERVAL_S="0.5", BATCHQ_RECONCILE_GRACE_S="2",
               BATCHQ_CLAIM_TIMEOUT_S="3", BATCHQ_ALLOW_PRIVATE_CALLBACKS="true")  # fmt: skip
    if backend == "pg-redis":
        env.update(BATCHQ_DATABASE_URL=PG_URL, BATCHQ_BROKER_URL=STREAM_DB)
    else:
        env.update(BATCHQ_DATABASE_URL=STREAM_DB, BATCHQ_BROKER_URL=STREAM_DB)
    return env


class Stack:
    """Two `batchq serve` replicas and two workers that know both."""

    def __init__(self, procs, tmp, backend: str):  # noqa: ANN001
        self.prefix = f"batchq-fault-{uuid.uuid4().hex[:10]}"
        self.runs = tmp / "runs.txt"
        self.runs.touch()
        self.p = procs(**backend_env(backend, self.prefix), FAULT_RUNS=str(self.runs))
        self.tmp = tmp
        self.ports = [free_port(), free_port()]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]

    def start_server(self, i: int) -> None:
        server = self.p.start(f"server-{i}", "serve", "--port", str(self.ports[i]), "--no-access-log", cwd=self.tmp)
        with httpx.Client(base_url=self.urls[i], timeout=10) as client:
            wait_healthy(client, server, self.p)

    def start(self) -> None:
        for i in (0, 1):
            self.start_server(i)
        for i in (0, 1):
            self.p.start(f"worker-{i}", "worker", "tests.fault_jobs:registry", "--api-url", ",".join(self.urls),
                         "--concurrency", "6", "--poll-wait", "1", cwd=ROOT)  # fmt: skip

    def logs(self) -> str:
        return self.p.output()

    def ran_twice(self) -> int:
        runs = Counter(line.split()[0] for line in self.runs.read_text().splitlines())
        return sum(n - 1 for n in runs.values())


async def run_with_fault(stack: Stack, fault, receiver: Receiver) -> dict:  # noqa: ANN001
    async with httpx.AsyncClient(base_url=stack.urls[1], timeout=30) as client:
        r = await client.post(
            "/v1/batches",
            json={"jobs": [{"name": "Work", "args": {"i": i}} for i in range(JOBS)], "on_complete": {"url": receiver.url}},
        )
        assert r.status_code == 201, r.text
        batch_id = r.json()["id"]
        seen_5xx: list[str] = []

        async def progress() -> dict:
            while True:
                reply = await client.get(f"/v1/batches/{batch_id}")
                if reply.status_code == 503:  # a client retries a 503 (Retry-After); a 500 would be a bug
                    await asyncio.sleep(0.2)
                    continue
                if reply.status_code >= 500:
                    seen_5xx.append(reply.text)
                assert reply.status_code == 200, reply.text
                return reply.json()

        deadline = time.monotonic() + 60
        while (await progress())["completed"] < JOBS // 3:
            assert time.monotonic() < deadline, stack.logs()
            await asyncio.sleep(0.1)
        await fault()
        deadline = time.monotonic() + 120
        while (batch := await progress())["status"] == "running":
            assert time.monotonic() < deadline, f"{batch}\n{stack.logs()}"
            await asyncio.sleep(0.2)
        assert not seen_5xx, seen_5xx
        return batch


def no_500_anywhere(stack: Stack) -> None:
    logs = stack.logs()
    for marker in ("unexpected error", " 500 ", "Internal Server Error", "Traceback"):
        assert marker not in logs, f"{marker!r} in the logs:\n{logs}"


async def delete_stream(stack: Stack) -> None:
    redis = Redis.from_url(STREAM_DB, decode_responses=True)
    try:
        deleted = 0
        async for key in redis.scan_iter(match=f"{stack.prefix}:stream:*"):
            deleted += await redis.delete(key)
        assert deleted
    finally:
        await redis.aclose()


async def destroy_group(stack: Stack) -> None:
    redis = Redis.from_url(STREAM_DB, decode_responses=True)
    try:
        async for key in redis.scan_iter(match=f"{stack.prefix}:stream:*"):
            await redis.xgroup_destroy(key, "workers")
    finally:
        await redis.aclose()


def cut_connections(backend: str):  # noqa: ANN201
    async def cut() -> None:
        """Cut the store's connections every 0.3 s for 5 s (while the batch runs on)."""
        deadline = time.monotonic() + 5
        if backend == "pg-redis":
            admin = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{PG_DB}")
            try:
                while time.monotonic() < deadline:
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", PG_DB
                    )
                    await asyncio.sleep(0.3)
            finally:
                await admin.close()
        else:
            redis = Redis.from_url(REDIS_URL, decode_responses=True)
            try:
                while time.monotonic() < deadline:
                    for client in await redis.client_list():
                        if client.get("db") == "3":
                            await redis.client_kill_filter(_id=client["id"])
                    await asyncio.sleep(0.3)
            finally:
                await redis.aclose()

    return cut


def restart_a_replica(stack: Stack):  # noqa: ANN201
    async def restart() -> None:
        """Kill replica 0 (SIGKILL: no graceful stop) and start it again a few seconds later."""
        for proc, log in stack.p.procs:
            if log.name == "server-0.log" and proc.poll() is None:
                proc.kill()
                proc.wait()
        await asyncio.sleep(3)
        await asyncio.to_thread(stack.start_server, 0)

    return restart


FAULTS = ["delete the stream", "destroy the consumer group", "cut the store's connections", "restart a replica"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True)
async def test_a_fault_mid_batch_loses_nothing(backend, fault, procs, tmp_path, capsys):
    stack = Stack(procs, tmp_path, backend)
    receiver = await Receiver().start()
    try:
        stack.start()
        inject = {
            "delete the stream": lambda: delete_stream(stack),
            "destroy the consumer group": lambda: destroy_group(stack),
            "cut the store's connections": cut_connections(backend),
            "restart a replica": restart_a_replica(stack),
        }[fault]
        batch = await run_with_fault(stack, inject, receiver)
        assert batch["status"] == "completed" and batch["completed"] == JOBS, f"{batch}\n{stack.logs()}"
        deadline = time.monotonic() + 30
        while not receiver.deliveries and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # a second completion event would have arrived by now
        events = {d.json["id"] for d in receiver.deliveries if d.json["type"] == "batch.completed"}
        assert len(events) == 1, receiver.deliveries
        twice = stack.ran_twice()
        with capsys.disabled():
            print(f"\n[{backend}] {fault}: {JOBS} jobs completed, {twice} ran twice")
        assert twice == 0, stack.logs()
        no_500_anywhere(stack)
    finally:
        await receiver.stop()
        redis = Redis.from_url(STREAM_DB)
        try:
            async for key in redis.scan_iter(match=f"{stack.prefix}:*", count=1000):
                await redis.delete(key)
        finally:
            await redis.aclose()


"""The store heals the broker: faults injected mid-batch lose nothing and reach no client as a 500.

Two API replicas and two workers (each given both API URLs) run a batch while a fault
strikes: the queue's stream is deleted, its consumer group destroyed, the store's
connections are cut again and again, or one replica is killed and restarted; on the Redis
Cluster, a master is killed (kill -9) and its replica takes over. Each time the batch
completes with every job, its callback fires once, no worker or client saw a 500, and the
number of jobs that ran twice is printed (and is zero: nothing here forces a job to run
again; a failover may, as delivery is at least once, and the test says how many did).
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
from redis.exceptions import ResponseError

from app.redis_client import AnyRedis, connect
from conftest import PG_DB, PG_URL, REDIS_URL, STREAM_BACKENDS, Cluster, cluster_url
from processes import FAST, ROOT, free_port, wait_healthy
from receiver import Receiver

JOBS = 240
STREAM_DB = "redis://127.0.0.1:6379/3"  # the fault tests' own Redis database: CLIENT KILL touches no one else


def backend_env(backend: str, prefix: str) -> dict[str, str]:
    env = dict(FAST, BATCHQ_REDIS_PREFIX=prefix, BATCHQ_RECONCILE_INTERVAL_S="0.5", BATCHQ_RECONCILE_GRACE_S="2",
               BATCHQ_CLAIM_TIMEOUT_S="3", BATCHQ_ALLOW_PRIVATE_CALLBACKS="true")  # fmt: skip
    if backend == "pg-redis":
        env.update(BATCHQ_DATABASE_URL=PG_URL, BATCHQ_BROKER_URL=STREAM_DB)
    elif backend == "redis-cluster":  # answered once a replica has it; the queue over 3 masters
        env.update(BATCHQ_DATABASE_URL=cluster_url(), BATCHQ_BROKER_URL=cluster_url(), BATCHQ_REDIS_WAIT_REPLICAS="1",
                   BATCHQ_QUEUE_PARTITIONS="3")  # fmt: skip
    else:
        env.update(BATCHQ_DATABASE_URL=STREAM_DB, BATCHQ_BROKER_URL=STREAM_DB)
    return env


def fault_redis(backend: str) -> AnyRedis:
    """The Redis the stack's streams live on."""
    return connect(cluster_url() if backend == "redis-cluster" else STREAM_DB)


class Stack:
    """Two `batchq serve` replicas and two workers that know both."""

    def __init__(self, procs, tmp, backend: str):  # noqa: ANN001
        self.backend = backend
        self.batch_id = ""
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
            # On the cluster the second worker reads the streams itself (the SDK's cluster client).
            direct = ["--broker-url", cluster_url()] if self.backend == "redis-cluster" and i == 1 else []
            self.p.start(f"worker-{i}", "worker", "tests.fault_jobs:registry", "--api-url", ",".join(self.urls),
                         "--concurrency", "6", "--poll-wait", "1", *direct, cwd=ROOT)  # fmt: skip

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
        batch_id = stack.batch_id = r.json()["id"]
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
    redis = fault_redis(stack.backend)
    try:
        deleted = 0
        async for key in redis.scan_iter(match=f"{stack.prefix}:stream:*"):
            deleted += await redis.delete(key)
        assert deleted
    finally:
        await redis.aclose()


async def destroy_group(stack: Stack) -> None:
    redis = fault_redis(stack.backend)
    try:
        async for key in redis.scan_iter(match=f"{stack.prefix}:stream:*"):
            try:
                await redis.xgroup_destroy(key, "workers")
            except ResponseError:  # a partition that no one has read yet: no group
                pass
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
        elif backend == "redis-cluster":  # the cluster serves this test alone: every client but us
            redis = fault_redis(backend)
            try:
                while time.monotonic() < deadline:
                    await redis.execute_command("CLIENT KILL", "TYPE", "normal", "SKIPME", "yes", target_nodes="all")
                    await asyncio.sleep(0.3)
            finally:
                await redis.aclose()
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


async def fail_over_a_master(stack: Stack) -> None:
    """kill -9 the master that holds the batch (its state, its commits); once its replica has
    taken over, the batch runs on a master without a replica for a while; then the old
    master comes back (as a replica of the new one)."""
    redis = fault_redis(stack.backend)
    try:
        key = f"{stack.prefix}:{{{stack.batch_id}}}:batch"
        await redis.initialize()  # type: ignore[union-attr]
        old = redis.get_node_from_key(key)  # type: ignore[union-attr]
        await cluster_script("kill", str(old.port))
        deadline = time.monotonic() + 60
        while True:  # ask a surviving master who serves the slot now
            assert time.monotonic() < deadline, "no replica took over"
            await asyncio.sleep(0.2)
            try:
                probe = connect(f"redis://127.0.0.1:{next(n.port for n in redis.get_primaries() if n.port != old.port)}")
                slot = await probe.execute_command("CLUSTER KEYSLOT", key)
                shards = await probe.execute_command("CLUSTER SLOTS")
                await probe.aclose()
            except Exception:  # noqa: BLE001 - the cluster is moving
                continue
            owner = next(s[2][1] for s in shards if s[0] <= slot <= s[1])
            if int(owner) != old.port:
                break
        # The batch goes on with the promoted master, which has no replica yet.
        done = await completed(stack)
        while await completed(stack) < min(JOBS, done + 20):
            assert time.monotonic() < deadline, "the batch did not go on after the failover"
            await asyncio.sleep(0.1)
        await cluster_script("restart", str(old.port))
        await cluster_script("wait")
    finally:
        await redis.aclose()


async def completed(stack: Stack) -> int:
    async with httpx.AsyncClient(base_url=stack.urls[0], timeout=30) as client:
        while (reply := await client.get(f"/v1/batches/{stack.batch_id}")).status_code == 503:
            await asyncio.sleep(0.2)
        assert reply.status_code == 200, reply.text
        return int(reply.json()["completed"])


async def cluster_script(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("bash", str(ROOT / "scripts" / "redis_cluster.sh"), *args, str(Cluster.base))
    assert await proc.wait() == 0, args


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
CASES = [(b, f) for b in STREAM_BACKENDS for f in FAULTS]
if "redis-cluster" in STREAM_BACKENDS:
    CASES.append(("redis-cluster", "fail over a master"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("backend", "fault"), CASES, indirect=["backend"])
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
            "fail over a master": lambda: fail_over_a_master(stack),
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
        if fault != "fail over a master":  # at least once: a failover may run a job again
            assert twice == 0, stack.logs()
        no_500_anywhere(stack)
    finally:
        await receiver.stop()
        redis = fault_redis(backend)
        try:
            async for key in redis.scan_iter(match=f"{stack.prefix}:*", count=1000):
                await redis.delete(key)
        finally:
            await redis.aclose()


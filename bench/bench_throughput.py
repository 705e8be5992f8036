"""Throughput benchmark with real processes: one `batchq serve`, W `batchq worker` processes.

Creates a parallel batch of N no-op jobs, runs it to the end and prints the batch creation
time, end-to-end jobs/s, and the latency of a progress read while running and when finished.
Uses its own database / key prefix and removes them afterwards. Run by hand:

    .venv/bin/python bench/bench_throughput.py --backend pg-redis --jobs 10000 --workers 4 --concurrency 32
    .venv/bin/python bench/bench_throughput.py --backend pg-redis --direct   # workers read the streams
    .venv/bin/python bench/bench_throughput.py --backend sqlite
    .venv/bin/python bench/bench_throughput.py --backend redis
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from app.cli import command_line

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("BATCHQ_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
PG_HOST = os.environ.get("BATCHQ_BENCH_PG_HOST", "postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BATCHQ_BENCH_REDIS", "redis://127.0.0.1:6379/0")
FINISHED = ("completed", "completed_with_failures", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def drop_redis_prefix(prefix: str) -> int:
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)
    removed = 0
    try:
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            removed += await redis.delete(key)
    finally:
        await redis.aclose()
    return removed


class Backend:
    """The settings of one backend, and how to set up and remove its storage."""

    def __init__(self, name: str, tmp: Path):
        self.name = name
        self.tmp = tmp
        self.prefix = f"batchq-bench-{uuid.uuid4().hex[:10]}"
        self.database = f"batchq_bench_{uuid.uuid4().hex[:10]}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHQ_")}
        env.update(BATCHQ_REDIS_PREFIX=self.prefix, BATCHQ_BACKGROUND="true")
        if self.name == "sqlite":
            env.update(BATCHQ_DATABASE_URL=f"sqlite+aiosqlite:///{self.tmp}/batchq.db", BATCHQ_BROKER_URL="sql")
        elif self.name == "pg-redis":
            env.update(BATCHQ_DATABASE_URL=f"postgresql+asyncpg://{PG_HOST}/{self.database}", BATCHQ_BROKER_URL=REDIS_URL)
        elif self.name == "pg-sql":
            env.update(BATCHQ_DATABASE_URL=f"postgresql+asyncpg://{PG_HOST}/{self.database}", BATCHQ_BROKER_URL="sql")
        elif self.name == "redis":
            env.update(BATCHQ_DATABASE_URL=REDIS_URL, BATCHQ_BROKER_URL=REDIS_URL)
        else:
            raise SystemExit(f"unknown backend {self.name}")
        return env

    @property
    def streams(self) -> bool:
        return self.name in ("pg-redis", "redis")

    def setup(self) -> None:
        if self.name.startswith("pg"):
            asyncio.run(pg_admin(f'CREATE DATABASE "{self.database}"'))

    def teardown(self) -> None:
        if self.name.startswith("pg"):
            asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        if self.streams:
            asyncio.run(drop_redis_prefix(self.prefix))


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def timed_get(client: httpx.Client, url: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = client.get(url)
    elapsed = time.perf_counter() - t0
    r.raise_for_status()
    return elapsed, r.json()


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="batchq-bench-"))
    backend = Backend(args.backend, tmp)
    env = backend.env()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    logs = []
    backend.setup()
    try:
        server_log = open(tmp / "server.log", "wb")
        logs.append(server_log)
        serve = [*command_line(), "serve", "--port", str(port), "--no-access-log", "--log-level", "warning"]
        if args.server_workers > 1:
            serve += ["--workers", str(args.server_workers)]
        server = subprocess.Popen(serve, cwd=tmp, env=env, stdout=server_log, stderr=subprocess.STDOUT)
        procs.append(server)
        client = httpx.Client(base_url=url, timeout=120)
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited ({server.returncode}):\n{(tmp / 'server.log').read_text()[-4000:]}")
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not become ready")
            time.sleep(0.1)

        direct = args.direct and backend.streams
        worker_cmd = [*command_line(), "worker", "bench.noop:registry", "--queue", "default", "--api-url", url,
                      "--concurrency", str(args.concurrency), "--log-level", "warning"]
        if direct:
            worker_cmd += ["--broker-url", REDIS_URL]  # the API names the streams
        for i in range(args.workers):
            log = open(tmp / f"worker-{i}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen(worker_cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(2.0)  # let the workers import and start polling

        body = {"type": "parallel", "jobs": ["Noop"] * args.jobs}
        t0 = time.perf_counter()
        r = client.post("/v1/batches", json=body)
        created = time.perf_counter() - t0
        r.raise_for_status()
        batch_id = r.json()["id"]

        running_reads: list[float] = []
        status = "running"
        while status not in FINISHED:
            elapsed, progress = timed_get(client, f"/v1/batches/{batch_id}/progress")
            status = progress["status"]
            if status not in FINISHED:
                running_reads.append(elapsed)
            if time.perf_counter() - t0 > args.timeout:
                raise SystemExit(f"not finished after {args.timeout}s: {progress}")
            time.sleep(args.read_interval)
        total = time.perf_counter() - t0
        finished_reads = [timed_get(client, f"/v1/batches/{batch_id}/progress")[0] for _ in range(args.reads)]

        print(f"backend: {args.backend}  jobs: {args.jobs}  workers: {args.workers} x concurrency {args.concurrency}  "
              f"fetch: {'redis streams (direct)' if direct else 'HTTP claim'}  api processes: {args.server_workers}")
        print(f"final status: {progress['status']}  completed: {progress['completed']}  failed: {progress['failed']}")
        print(f"batch creation:          {created:8.3f} s   ({args.jobs / created:,.0f} jobs/s)")
        print(f"end to end:              {total:8.3f} s   ({args.jobs / total:,.0f} jobs/s, from the create request to finished)")
        print(f"progress read, running:  median {statistics.median(running_reads) * 1000:7.2f} ms  (n={len(running_reads)})"
              if running_reads else "progress read, running:  (finished before the first read)")
        print(f"progress read, finished: median {statistics.median(finished_reads) * 1000:7.2f} ms  (n={len(finished_reads)})")
        client.close()
    finally:
        stop(procs[1:])  # workers first, then the server
        stop(procs[:1])
        for log in logs:
            log.close()
        backend.teardown()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["pg-redis", "pg-sql", "redis", "sqlite"], default="pg-redis")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=32, help="jobs at once per worker process")
    parser.add_argument("--direct", action="store_true", help="workers read the Redis streams directly")
    parser.add_argument("--server-workers", type=int, default=1, help="uvicorn processes of the API")
    parser.add_argument("--reads", type=int, default=50, help="progress reads on the finished batch")
    parser.add_argument("--read-interval", type=float, default=0.05, help="seconds between progress reads while running")
    parser.add_argument("--timeout", type=float, default=900)
    run(parser.parse_args())


if __name__ == "__main__":
    main()

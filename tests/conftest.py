"""Test harness: every behaviour test runs against every store × broker combination.

Backends (BATCHQ_TEST_BACKENDS, comma separated, default all):
  sqlite    SQLite store + SQL queue        (the embedded default)
  pg-sql    PostgreSQL store + SQL queue
  pg-redis  PostgreSQL store + Redis Streams
  redis     Redis store + Redis Streams
  redis-cluster
            Redis store + Redis Streams on a Redis Cluster (3 masters, 1 replica each),
            with BATCHQ_REDIS_WAIT_REPLICAS=1

PostgreSQL and Redis must be reachable (127.0.0.1:5432 db `test`, 127.0.0.1:6379); the
tests use their own database `batchq_test` and a fresh key prefix per test, and clean up.
The cluster is started for the session by scripts/redis_cluster.sh on free loopback ports
and removed at the end (or BATCHQ_TEST_REDIS_CLUSTER names one that is running).
"""
from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.redis_client import AnyRedis, connect

PG_ADMIN_DSN = os.environ.get("BATCHQ_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
# Each test run has its own database (dropped at the end), so two runs on one machine
# never truncate each other's tables.
PG_DB = os.environ.get("BATCHQ_TEST_PG_DB") or f"batchq_test_{uuid.uuid4().hex[:10]}"
PG_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
REDIS_URL = os.environ.get("BATCHQ_TEST_REDIS", "redis://127.0.0.1:6379/0")

ALL_BACKENDS = ["sqlite", "pg-sql", "pg-redis", "redis", "redis-cluster"]
BACKENDS = [b for b in os.environ.get("BATCHQ_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",") if b]
# Backends whose broker is Redis Streams (for tests of direct stream consumption):
# use with @pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True).
STREAM_BACKENDS = [b for b in BACKENDS if b in ("pg-redis", "redis", "redis-cluster")]
# Backends with the Redis store (tests of its own guarantees run on these; on "redis" at least).
REDIS_STORE_BACKENDS = [b for b in BACKENDS if b in ("redis", "redis-cluster")] or ["redis"]
# Backends with a SQL store (tests of its own guarantees: use with indirect=True).
SQL_STORE_BACKENDS = [b for b in BACKENDS if b in ("sqlite", "pg-sql", "pg-redis")]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Cluster:
    """The session's Redis Cluster (scripts/redis_cluster.sh), started when first needed."""

    url: str | None = os.environ.get("BATCHQ_TEST_REDIS_CLUSTER")
    # Its first port (scripts/redis_cluster.sh knows its nodes by it); stopped at the end
    # only when this session started it.
    base: int | None = int(url.split(",")[0].rsplit(":", 1)[1]) if url else None
    started = False

    @classmethod
    def start(cls) -> str:
        if cls.url is None:
            cls.base, cls.started = _free_port_range(6), True
            out = subprocess.run(["bash", f"{REPO}/scripts/redis_cluster.sh", "start", str(cls.base)],
                                 check=True, capture_output=True, text=True, timeout=120)  # fmt: skip
            cls.url = out.stdout.strip().splitlines()[-1]
        return cls.url

    @classmethod
    def stop(cls) -> None:
        if cls.started:
            subprocess.run(["bash", f"{REPO}/scripts/redis_cluster.sh", "stop", str(cls.base)], check=False, timeout=60)
            cls.base = cls.url = None
            cls.started = False


def _free_port_range(n: int) -> int:
    """A base port with n ports free after it, and their cluster bus ports (+10000)."""
    for _ in range(200):
        base = 20000 + int.from_bytes(os.urandom(2), "big") % 30000
        try:
            for port in [p for i in range(n) for p in (base + i, base + i + 10000)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free range of ports for the Redis Cluster")


def cluster_url() -> str:
    return Cluster.start()


def redis_url(backend: str) -> str:
    """The Redis a backend's store or broker lives on."""
    return cluster_url() if backend == "redis-cluster" else REDIS_URL


def redis_client(backend: str) -> AnyRedis:
    """A client of that Redis (one node, or the cluster), answering str."""
    return connect(redis_url(backend))


@pytest.fixture(scope="session", autouse=True)
def _redis_cluster():  # noqa: ANN202
    yield
    Cluster.stop()


def _pg_admin_dsn() -> str:
    return PG_ADMIN_DSN


async def _ensure_pg_database() -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_admin_dsn())
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DB)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{PG_DB}"')
    finally:
        await conn.close()


async def _reset_pg() -> None:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{PG_DB}")
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{r["tablename"]}"' for r in tables)
            # Another app of the same test may still be reading (its background loops): the
            # TRUNCATE's exclusive locks can deadlock with them, and PostgreSQL picks one to fail.
            for attempt in range(5):
                try:
                    await conn.execute(f"TRUNCATE {names} RESTART IDENTITY")
                    break
                except asyncpg.DeadlockDetectedError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _drop_redis_prefix(prefix: str, backend: str = "redis") -> None:
    redis = redis_client(backend)
    try:
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):  # every master of a cluster
            await redis.delete(key)
    finally:
        await redis.aclose()


async def _drop_pg_database() -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_ready():  # noqa: ANN201
    asyncio.run(_ensure_pg_database())
    yield
    asyncio.run(_drop_pg_database())


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"batchq-test-webhook-secret-32-by").decode()


def make_settings(backend: str, tmp_path, prefix: str, **overrides: Any) -> Settings:
    fast = dict(
        redis_prefix=prefix,
        poll_interval_s=0.02,
        reaper_interval_s=0.05,
        retry_backoff_base_s=0.05,
        retry_backoff_max_s=0.2,
        claim_timeout_s=2.0,
        webhook_backoff_base_s=0.05,
        webhook_backoff_max_s=0.2,
        webhook_timeout_s=2.0,
        webhook_secret=WEBHOOK_SECRET,
        # The tests' receivers listen on 127.0.0.1; tests of the address rule turn it back on.
        allow_private_callbacks=True,
        # Whole-batch moves of more than a few jobs go in several transactions (SQL) or scripts
        # (Redis), so every behaviour test of cancel, retry, fail-fast (and adds, on Redis)
        # runs them that way.
        move_budget=4,
    )
    fast.update(overrides)
    if backend == "sqlite":
        return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/batchq.db", broker_url="sql", **fast)
    if backend == "pg-sql":
        return Settings(database_url=PG_URL, broker_url="sql", **fast)
    if backend == "pg-redis":
        return Settings(database_url=PG_URL, broker_url=REDIS_URL, **fast)
    if backend == "redis":
        return Settings(database_url=REDIS_URL, broker_url=REDIS_URL, **fast)
    if backend == "redis-cluster":
        url = cluster_url()
        return Settings(database_url=url, broker_url=url, **{"redis_wait_replicas": 1, **fast})
    raise ValueError(backend)


class Api:
    """An in-process batchq (real store and broker) and an HTTP client for it."""

    def __init__(self, app, client: httpx.AsyncClient, backend: str, settings: Settings):
        self.app = app
        self.client = client
        self.backend = backend
        self.settings = settings

    @property
    def services(self):  # noqa: ANN201
        return self.app.state.services

    async def post(self, url: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(url, json=json, **kw)

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.get(url, **kw)

    async def create(self, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        r = await self.post("/v1/batches", body)
        assert r.status_code == expect, r.text
        return r.json()

    async def batch(self, batch_id: str) -> dict[str, Any]:
        r = await self.get(f"/v1/batches/{batch_id}")
        assert r.status_code == 200, r.text
        return r.json()

    async def jobs(self, batch_id: str, **params: Any) -> list[dict[str, Any]]:
        r = await self.get(f"/v1/batches/{batch_id}/jobs", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        return r.json()["jobs"]

    async def claim(self, queue: str = "default", max: int = 10, wait_s: float = 0.0) -> list[dict[str, Any]]:
        r = await self.post(f"/v1/queues/{queue}/claim", {"max": max, "wait_s": wait_s})
        assert r.status_code == 200, r.text
        return r.json()["messages"]

    async def claim_until(self, count: int, queue: str = "default", timeout: float = 10.0) -> list[dict[str, Any]]:
        """Claim until `count` messages arrived (a relay or a backoff may delay them)."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got += await self.claim(queue, max=count - len(got), wait_s=0.2)
        assert len(got) == count, f"expected {count} messages on {queue!r}, got {len(got)}: {got}"
        return got

    async def complete(self, msg: dict[str, Any], expect: int = 200, **body: Any) -> dict[str, Any]:
        r = await self.post(f"/v1/jobs/{msg['job_id']}/complete", {"attempt": msg["attempt"], "lease": msg.get("lease"), **body})
        assert r.status_code == expect, r.text
        return r.json()

    async def fail(self, msg: dict[str, Any], error: str = "boom", expect: int = 200, **body: Any) -> dict[str, Any]:
        r = await self.post(
            f"/v1/jobs/{msg['job_id']}/fail", {"attempt": msg["attempt"], "lease": msg.get("lease"), "error": error, **body}
        )
        assert r.status_code == expect, r.text
        return r.json()

    def advance(self, seconds: float) -> None:
        """Move this server's clock forward (leases, backoff): tests never sleep through a lease."""
        self.services.clock.advance(seconds)

    async def reap(self) -> int:
        """One round of the lease reaper, now (the background one runs too)."""
        from app.dispatch.reaper import LeaseReaper

        return await LeaseReaper(self.services.store, self.services.orchestrator).step()

    async def wait_status(self, batch_id: str, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            batch = await self.batch(batch_id)
            if batch["status"] in statuses:
                return batch
            if time.monotonic() > deadline:
                raise AssertionError(f"batch stayed {batch['status']}, wanted {statuses}: {batch}")
            await asyncio.sleep(0.02)

    async def run_all(self, handler=None, queue: str = "default", timeout: float = 10.0) -> list[dict[str, Any]]:  # noqa: ANN001
        """Act as a worker until the queue stays empty: complete every message (or call handler)."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        idle = 0
        while time.monotonic() < deadline and idle < 3:
            msgs = await self.claim(queue, max=50, wait_s=0.1)
            if not msgs:
                idle += 1
                continue
            idle = 0
            for msg in msgs:
                seen.append(msg)
                if handler is None:
                    await self.complete(msg)
                else:
                    await handler(msg)
        return seen


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:  # noqa: ANN001
    if request.param.startswith("pg"):
        request.getfixturevalue("pg_ready")
    return request.param


async def start_api(backend: str, tmp_path, prefix: str | None = None, tracer_provider: Any = None, **overrides: Any):  # noqa: ANN201
    """Start an app; a given `prefix` shares Redis keys with another app (two replicas); a given
    OpenTelemetry `tracer_provider` gets its spans."""
    prefix = prefix or f"batchq-test-{uuid.uuid4().hex[:12]}"
    if backend.startswith("pg"):
        await _reset_pg()
    settings = make_settings(backend, tmp_path, prefix, **overrides)
    app = create_app(settings, tracer_provider=tracer_provider)
    ctx = app.router.lifespan_context(app)
    await ctx.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://batchq.test", timeout=30)
    api = Api(app, client, backend, settings)

    async def stop() -> None:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
        if backend in ("pg-redis", "redis", "redis-cluster"):
            await _drop_redis_prefix(prefix, backend)

    return api, stop


@pytest.fixture
async def api(backend: str, tmp_path) -> AsyncIterator[Api]:
    api, stop = await start_api(backend, tmp_path)
    try:
        yield api
    finally:
        await stop()


@pytest.fixture
async def api_factory(backend: str, tmp_path):  # noqa: ANN201
    """Start an api with settings overrides: `api = await api_factory(default_max_attempts=3)`."""
    stops = []

    async def factory(**overrides: Any) -> Api:
        api, stop = await start_api(backend, tmp_path, **overrides)
        stops.append(stop)
        return api

    yield factory
    for stop in reversed(stops):
        await stop()


@pytest.fixture
def procs(tmp_path):  # noqa: ANN201
    """`procs(**BATCHQ_settings)` -> a Processes with that environment; all are ended afterwards."""
    from processes import Processes, clean_env

    made: list = []

    def make(**settings: str):  # noqa: ANN202
        p = Processes(tmp_path, clean_env(**settings))
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.stop_all()

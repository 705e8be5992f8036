"""What every benchmark here shares: a backend's settings and storage, a real `batchq serve`
process, `batchq worker` processes, and readings of CPU time, peak memory and store work taken
from /proc, PostgreSQL's statistics views and Redis's INFO (nothing is sampled by the server).

Benchmarks print figures; they assert nothing about time (tests never do either)."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli import command_line  # noqa: E402

PG_ADMIN = os.environ.get("BATCHQ_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
PG_HOST = os.environ.get("BATCHQ_BENCH_PG_HOST", "postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BATCHQ_BENCH_REDIS", "redis://127.0.0.1:6379/0")
BACKENDS = ("sqlite", "pg-sql", "pg-redis", "redis")
FINISHED = ("completed", "completed_with_failures", "failed", "cancelled")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg(sql: str) -> list[tuple]:
    async def go() -> list[tuple]:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(go())


def _redis_info(section: str) -> dict:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return dict(client.info(section))
    finally:
        client.close()


# ---- /proc readings ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident memory since start or since reset_peak_rss."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss(pid: int) -> None:
    """Linux resets VmHWM to the current RSS when 5 is written to clear_refs."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def pids_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@dataclass
class CpuMeter:
    """CPU seconds spent by groups of processes between start() and stop(). Store servers are
    read by process name (every postgres / redis-server process on the machine: run the
    benchmark alone)."""

    groups: dict[str, list[int]] = field(default_factory=dict)
    servers: tuple[str, ...] = ("postgres", "redis-server")
    _start: dict[int, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)

    def _all(self) -> dict[str, list[int]]:
        return {**self.groups, **{name: pids_named(name) for name in self.servers}}

    def start(self) -> None:
        self._start = {pid: cpu_seconds(pid) for pids in self._all().values() for pid in pids}

    def stop(self) -> dict[str, float]:
        self.spent = {
            group: sum(max(0.0, cpu_seconds(pid) - self._start.get(pid, 0.0)) for pid in pids)
            for group, pids in self._all().items()
        }
        return self.spent


# ---- store work --------------------------------------------------------------------------------


@dataclass
class StoreWork:
    """Counters of the store servers: PostgreSQL commits, index scans and rows written in the
    benchmark's database; Redis commands processed (all of the instance)."""

    database: str | None
    redis: bool
    _start: dict[str, int] = field(default_factory=dict)

    def read(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.database:
            rows = _pg(f"SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{self.database}'")
            out["pg_transactions"] = int(rows[0][0]) if rows else 0
            out["pg_index_scans"] = pg_index_scans(self.database)
        if self.redis:
            out["redis_commands"] = int(_redis_info("stats")["total_commands_processed"])
        return out

    def start(self) -> None:
        self._start = self.read()

    def stop(self) -> dict[str, int]:
        time.sleep(1.5)  # PostgreSQL publishes a backend's statistics within a second of its transactions
        return {k: v - self._start.get(k, 0) for k, v in self.read().items()}


def pg_index_scans(database: str) -> int:
    """pg_stat_all_tables is per database: connect to it to read the index scans."""

    async def go() -> int:
        import asyncpg

        conn = await asyncpg.connect(f"postgresql://{PG_HOST}/{database}")
        try:
            return int(await conn.fetchval("SELECT COALESCE(sum(idx_scan), 0) FROM pg_stat_user_tables"))
        finally:
            await conn.close()

    return asyncio.run(go())


# ---- backends, server and workers --------------------------------------------------------------


class Backend:
    """The settings of one backend combination, and how to make and remove its storage."""

    def __init__(self, name: str, tmp: Path):
        if name not in BACKENDS:
            raise SystemExit(f"unknown backend {name} (one of {', '.join(BACKENDS)})")
        self.name = name
        self.tmp = tmp
        self.prefix = f"batchq-bench-{uuid.uuid4().hex[:10]}"
        self.database = f"batchq_bench_{uuid.uuid4().hex[:10]}" if name.startswith("pg") else None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHQ_")}
        env.update(BATCHQ_REDIS_PREFIX=self.prefix, BATCHQ_BACKGROUND="true", BATCHQ_ALLOW_PRIVATE_CALLBACKS="true")
        if self.name == "sqlite":
            env.update(BATCHQ_DATABASE_URL=f"sqlite+aiosqlite:///{self.tmp}/batchq.db", BATCHQ_BROKER_URL="sql")
        elif self.name == "pg-redis":
            env.update(BATCHQ_DATABASE_URL=f"postgresql+asyncpg://{PG_HOST}/{self.database}", BATCHQ_BROKER_URL=REDIS_URL)
        elif self.name == "pg-sql":
            env.update(BATCHQ_DATABASE_URL=f"postgresql+asyncpg://{PG_HOST}/{self.database}", BATCHQ_BROKER_URL="sql")
        else:
            env.update(BATCHQ_DATABASE_URL=REDIS_URL, BATCHQ_BROKER_URL=REDIS_URL)
        return env

    @property
    def uses_redis(self) -> bool:
        return self.name in ("pg-redis", "redis")

    def setup(self) -> None:
        if self.database:
            _pg(f'CREATE DATABASE "{self.database}"')

    def teardown(self) -> None:
        if self.database:
            _pg(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        if self.uses_redis:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            try:
                for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
                    client.delete(key)
            finally:
                client.close()

    def work(self) -> StoreWork:
        return StoreWork(self.database, self.uses_redis)


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


@dataclass
class Service:
    """A running `batchq serve` (and its workers) on one backend; `api` is an HTTP client."""

    backend: Backend
    tmp: Path
    url: str
    server: subprocess.Popen
    api: httpx.Client
    workers: list[subprocess.Popen] = field(default_factory=list)
    logs: list = field(default_factory=list)

    def start_workers(self, count: int, concurrency: int, registry: str = "bench.noop:registry",
                      queue: str = "default", direct: bool = False) -> None:
        cmd = [*command_line(), "worker", registry, "--queue", queue, "--api-url", self.url,
               "--concurrency", str(concurrency), "--log-level", "warning"]
        if direct and self.backend.uses_redis:
            cmd += ["--broker-url", REDIS_URL]
        for _ in range(count):
            log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")
            self.logs.append(log)
            self.workers.append(subprocess.Popen(cmd, cwd=ROOT, env=self.backend.env(), stdout=log, stderr=subprocess.STDOUT))

    def stop_workers(self) -> None:
        stop(self.workers)
        self.workers = []

    def wait_finished(self, batch_id: str, timeout: float, interval: float = 0.1) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            progress = self.api.get(f"/v1/batches/{batch_id}/progress").json()
            if progress["status"] in FINISHED:
                return progress
            if time.monotonic() > deadline:
                raise SystemExit(f"batch {batch_id} not finished after {timeout} s: {progress}")
            time.sleep(interval)


@contextmanager
def service(backend_name: str, *, server_workers: int = 1, extra_env: dict[str, str] | None = None) -> Iterator[Service]:
    """A fresh backend and `batchq serve` on a free port, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="batchq-bench-"))
    backend = Backend(backend_name, tmp)
    backend.setup()
    procs: list[subprocess.Popen] = []
    logs = []
    svc: Service | None = None
    try:
        port = free_port()
        log = open(tmp / "server.log", "wb")
        logs.append(log)
        cmd = [*command_line(), "serve", "--port", str(port), "--no-access-log", "--log-level", "warning"]
        if server_workers > 1:
            cmd += ["--workers", str(server_workers)]
        env = {**backend.env(), **(extra_env or {})}
        server = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(server)
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited ({server.returncode}):\n{(tmp / 'server.log').read_text()[-4000:]}")
            try:
                if api.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not become ready")
            time.sleep(0.1)
        svc = Service(backend, tmp, f"http://127.0.0.1:{port}", server, api, logs=logs)
        yield svc
    finally:
        if svc is not None:
            svc.stop_workers()
            svc.api.close()
        stop(procs)
        for log in logs:
            log.close()
        backend.teardown()
        shutil.rmtree(tmp, ignore_errors=True)


def server_pids(server: subprocess.Popen) -> list[int]:
    """The API's processes: the server, and its children when uvicorn runs several."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
    kids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [server.pid, *kids]


def machine() -> str:
    cpus = os.cpu_count()
    load = os.getloadavg()[0]
    return f"{cpus} CPUs, load average {load:.2f} at start, Python {sys.version.split()[0]}"

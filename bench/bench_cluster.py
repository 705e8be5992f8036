"""One Redis node against a Redis Cluster of 3 masters (1 replica each), same run.

Starts its own Redis servers on free loopback ports (a single `redis-server`, and a cluster
made by scripts/redis_cluster.sh), so that nothing else on the machine counts in their
figures, then runs the same parallel batch of no-op jobs through one `batchq serve` and W
`batchq worker` processes on each shape:

  1 node            the Redis store and Redis Streams on one redis-server
  cluster           the same on the cluster (the store's keys spread by batch, the streams
                    by queue partition)
  cluster, WAIT 1   BATCHQ_REDIS_WAIT_REPLICAS=1: every commit answered once a replica has it
  ... partitions    BATCHQ_QUEUE_PARTITIONS=3: the queue over three streams (three masters)

and prints jobs/s end to end, Redis commands per job (INFO commandstats summed over the
masters, commands run inside the Lua scripts included; a cluster's replicas apply the same
writes again and are not counted), the commands that dominate, and the CPU seconds the Redis servers spent per 1,000 jobs. Run by hand:

    .venv/bin/python bench/bench_cluster.py --jobs 5000 --workers 2 --concurrency 16

On one small machine the cluster is not faster: its six servers share the same cores as the
API and the workers. What it buys is on separate machines (README, "Running at scale").
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, cpu_seconds, free_port, machine, service  # noqa: E402

from app.cli import command_line  # noqa: E402


def free_range(n: int) -> int:
    """A base port with n ports (and their cluster bus ports, +10000) free after it."""
    import socket

    for base in range(21000, 40000, 17):
        try:
            for port in [p for i in range(n) for p in (base + i, base + i + 10000)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise SystemExit("no free range of ports")


@dataclass
class Redis:
    """Redis servers of one shape: their URL, their masters' ports and processes."""

    url: str
    ports: list[int]
    stop_cmd: list[str]
    dir: Path | None = None
    masters: list[int] = field(default_factory=list)

    def pids(self) -> list[int]:
        assert self.dir is not None
        return [int(f.read_text()) for f in self.dir.glob("**/redis.pid")]

    def commandstats(self) -> Counter:
        """calls per command, summed over the masters (the servers that take the clients' commands)."""
        import redis

        out: Counter = Counter()
        for port in self.masters:
            client = redis.Redis(port=port)
            try:
                for name, stats in client.info("commandstats").items():
                    out[name.removeprefix("cmdstat_")] += int(stats["calls"])
            finally:
                client.close()
        return out

    def stop(self) -> None:
        subprocess.run(self.stop_cmd, check=False, capture_output=True)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def one_node() -> Redis:
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="batchq-bench-redis-"))
    subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                    "--dir", str(tmp), "--daemonize", "yes", "--pidfile", str(tmp / "redis.pid")], check=True)  # fmt: skip
    for _ in range(100):
        if (tmp / "redis.pid").exists():
            break
        time.sleep(0.05)
    pid = (tmp / "redis.pid").read_text().strip()
    return Redis(f"redis://127.0.0.1:{port}/0", [port], ["kill", pid], tmp, [port])


def cluster() -> Redis:
    base = free_range(6)
    script = str(ROOT / "scripts" / "redis_cluster.sh")
    out = subprocess.run(["bash", script, "start", str(base)], check=True, capture_output=True, text=True)
    url = out.stdout.strip().splitlines()[-1]
    nodes = subprocess.run(["redis-cli", "-p", str(base), "cluster", "nodes"], check=True, capture_output=True, text=True)
    # "<id> 127.0.0.1:7100@17100 myself,master - …": the masters' ports
    masters = [int(f[1].split(":")[1].split("@")[0]) for f in map(str.split, nodes.stdout.splitlines()) if "master" in f[2]]
    return Redis(url, list(range(base, base + 6)), ["bash", script, "stop", str(base)], Path(f"/tmp/batchq-cluster-{base}"), masters)


def run_shape(name: str, redis: Redis, args: argparse.Namespace, extra: dict[str, str]) -> dict:
    env = {"BATCHQ_DATABASE_URL": redis.url, "BATCHQ_BROKER_URL": redis.url, **extra}
    with service("redis", extra_env=env) as svc:
        worker_env = {**svc.backend.env(), **env}
        cmd = [*command_line(), "worker", "bench.noop:registry", "--api-url", svc.url,
               "--concurrency", str(args.concurrency), "--log-level", "warning"]  # fmt: skip
        if args.direct:
            cmd += ["--broker-url", redis.url]
        for i in range(args.workers):
            log = open(svc.tmp / f"worker-{i}.log", "wb")
            svc.logs.append(log)
            svc.workers.append(subprocess.Popen(cmd, cwd=ROOT, env=worker_env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(2.0)  # the workers import and start polling
        before, pids = redis.commandstats(), redis.pids()
        cpu0 = sum(cpu_seconds(p) for p in pids)
        t0 = time.perf_counter()
        r = svc.api.post("/v1/batches", json={"type": "parallel", "jobs": ["Noop"] * args.jobs})
        r.raise_for_status()
        progress = svc.wait_finished(r.json()["id"], timeout=args.timeout)
        elapsed = time.perf_counter() - t0
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        time.sleep(0.5)
        calls = redis.commandstats() - before
        calls.pop("info", None)  # the benchmark's own readings
        # Drop what this run left, so the next shape starts from empty servers.
        import redis as redis_py

        for port in redis.masters:
            redis_py.Redis(port=port).flushall()
        return {"name": name, "status": progress["status"], "completed": progress["completed"], "seconds": elapsed,
                "jobs_s": args.jobs / elapsed, "per_job": sum(calls.values()) / args.jobs,
                "top": calls.most_common(6) + [(n, calls[n]) for n in ("evalsha", "wait", "xreadgroup", "xadd")
                                        if n not in dict(calls.most_common(6))], "cpu_per_1000": cpu / args.jobs * 1000}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--direct", action="store_true", help="workers read the streams themselves")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    single, many = one_node(), cluster()
    try:
        shapes = [
            ("1 node", single, {}),
            ("cluster (3 masters)", many, {}),
            ("cluster, WAIT 1", many, {"BATCHQ_REDIS_WAIT_REPLICAS": "1"}),
            ("cluster, WAIT 1, 3 partitions", many, {"BATCHQ_REDIS_WAIT_REPLICAS": "1", "BATCHQ_QUEUE_PARTITIONS": "3"}),
        ]
        results = [run_shape(name, redis, args, extra) for name, redis, extra in shapes]
    finally:
        single.stop()
        many.stop()

    print(f"{machine()}; {args.jobs} no-op jobs, {args.workers} workers x {args.concurrency}, "
          f"{'direct stream readers' if args.direct else 'HTTP claim'}, one API process")
    print(f"{'shape':32} {'jobs/s':>8} {'commands/job':>13} {'Redis CPU s/1000 jobs':>22}")
    for r in results:
        flag = "" if r["status"] == "completed" and r["completed"] == args.jobs else f"  ({r['status']}, {r['completed']})"
        print(f"{r['name']:32} {r['jobs_s']:8,.0f} {r['per_job']:13.1f} {r['cpu_per_1000']:22.2f}{flag}")
    print("commands: INFO commandstats calls summed over the masters, those run inside Lua scripts included")
    for r in results:
        top = ", ".join(f"{name} {calls / args.jobs:.2f}" for name, calls in r["top"])
        print(f"  {r['name']}: per job {top}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

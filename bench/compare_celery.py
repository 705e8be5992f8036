"""batchq against a Celery chord, side by side in one run, on the same machine and Redis.

The same work for each: N no-op jobs in parallel, then one callback once all are done, on
2 worker processes x 16 threads / concurrent jobs.

  celery    chord(group(noop x N), done): Redis broker and result backend, threads pool
  batchq    a parallel batch of N `Noop` jobs with on_complete {job: Done}; workers read the
            Redis streams directly (pg-redis, redis) or claim over HTTP (pg-sql, sqlite)

Each figure: wall time from the first submission to the callback's end, jobs/s, and CPU time
per job summed over every process involved (API, workers, the submitting client, PostgreSQL and
Redis servers), with the store's work per job. Systems run one after the other, --rounds times
interleaved, and the best round of each is compared (the machine is shared).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/compare_celery.py                       # N = 10,000, 2 rounds
    .venv/bin/python bench/compare_celery.py --systems celery,pg-redis --jobs 2000 --rounds 1
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

from harness import REDIS_URL, ROOT, CpuMeter, StoreWork, machine, pids_named, server_pids, service, stop

CELERY_REDIS = REDIS_URL.rsplit("/", 1)[0] + "/14"
SYSTEMS = ("celery", "pg-redis", "redis", "pg-sql")


def run_celery(n: int, procs: int, threads: int) -> dict:
    import redis

    sys.path.insert(0, str(ROOT / "bench"))
    from celery import chord, group
    from celery_app import app, done, noop

    flush = redis.Redis.from_url(CELERY_REDIS)
    flush.flushdb()
    cmd = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "threads", "--concurrency", str(threads),
           "--loglevel", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", "bench"]
    workers = [subprocess.Popen([*cmd, "-n", f"bench{i}@%h"], cwd=ROOT / "bench", stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for i in range(procs)]
    try:
        # Warm: every worker has connected and runs tasks before the clock starts.
        chord(group(noop.s() for _ in range(procs * threads)))(done.s()).get(timeout=120)
        meter = CpuMeter(groups={"workers": [w.pid for w in workers]})
        work = StoreWork(None, True)
        work.start()
        meter.start()
        client_cpu = time.process_time()
        t0 = time.perf_counter()
        result = chord(group(noop.s() for _ in range(n)))(done.s())
        count = result.get(timeout=1800)
        elapsed = time.perf_counter() - t0
        cpu = meter.stop()
        cpu["client"] = time.process_time() - client_cpu
        assert count == n, count
        return {"seconds": elapsed, "cpu": cpu, "work": work.stop()}
    finally:
        stop(workers)
        flush.flushdb()
        flush.close()
        app.close()


def run_batchq(backend: str, n: int, procs: int, threads: int) -> dict:
    with service(backend) as svc:
        api = svc.api
        svc.start_workers(procs, threads, direct=True)
        warm = api.post("/v1/batches", json={"jobs": ["Noop"] * (procs * threads), "on_complete": {"job": {"name": "Done"}}})
        callback_done(svc, warm.json()["id"], 120)
        meter = CpuMeter(groups={"api": server_pids(svc.server), "workers": [w.pid for w in svc.workers]})
        work = svc.backend.work()
        work.start()
        meter.start()
        client_cpu = time.process_time()
        t0 = time.perf_counter()
        r = api.post("/v1/batches", json={"jobs": ["Noop"] * n, "on_complete": {"job": {"name": "Done"}}})
        r.raise_for_status()
        batch_id = r.json()["id"]
        callback_done(svc, batch_id, 1800)
        elapsed = time.perf_counter() - t0
        cpu = meter.stop()
        cpu["client"] = time.process_time() - client_cpu
        batch = api.get(f"/v1/batches/{batch_id}").json()
        assert batch["status"] == "completed" and batch["completed"] == n, batch
        return {"seconds": elapsed, "cpu": cpu, "work": work.stop()}


def callback_done(svc, batch_id: str, timeout: float) -> None:  # noqa: ANN001
    """Waits for the batch's callback job to complete (the end of a chord, in batchq)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = svc.api.get(f"/v1/batches/{batch_id}/jobs", params={"kind": "callback"}).json()["jobs"]
        if jobs and jobs[0]["status"] == "completed":
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"batch {batch_id}: no completed callback after {timeout} s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="celery,pg-redis,redis", help=f"comma-separated, of {', '.join(SYSTEMS)}")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=16, help="threads / concurrent jobs per worker process")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    print(f"compare_celery: {args.jobs:,} no-op jobs + 1 callback, {args.procs} worker processes x {args.threads}; {machine()}")
    if not pids_named("postgres"):
        print("(PostgreSQL's processes are not visible here: its CPU is not counted)")
    best: dict[str, dict] = {}
    for rnd in range(1, args.rounds + 1):
        for name in systems:
            r = run_celery(args.jobs, args.procs, args.threads) if name == "celery" else run_batchq(name, args.jobs, args.procs, args.threads)
            cpu = r["cpu"]
            per_job = {k: v / args.jobs * 1000 for k, v in cpu.items()}
            work = ", ".join(f"{k} {v / args.jobs:.2f}" for k, v in r["work"].items())
            print(f"round {rnd} {name:9} {r['seconds']:7.2f} s {args.jobs / r['seconds']:7.0f} jobs/s   CPU ms/job: total "
                  f"{sum(per_job.values()):.2f} (" + ", ".join(f"{k} {v:.2f}" for k, v in per_job.items()) + f")   per job: {work}",
                  flush=True)
            if name not in best or r["seconds"] < best[name]["seconds"]:
                best[name] = r
    if "celery" in best:
        base = args.jobs / best["celery"]["seconds"]
        print(f"\nbest rounds, against the Celery chord ({base:.0f} jobs/s):")
        for name, r in best.items():
            rate = args.jobs / r["seconds"]
            cpu = sum(r["cpu"].values()) / args.jobs * 1000
            print(f"  {name:9} {rate:7.0f} jobs/s  {rate / base:5.2f}x   CPU {cpu:.2f} ms/job")


if __name__ == "__main__":
    main()

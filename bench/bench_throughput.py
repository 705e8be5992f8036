"""End-to-end throughput and cost per job, from 1,000 to 100,000 jobs in one batch.

For each size, a parallel batch of N no-op jobs runs to its end on W worker processes x C
concurrent jobs, through a real `batchq serve`. Printed per size: jobs/s, CPU time per job of
each process group (API, workers, PostgreSQL, Redis) and the store's work per job. The cost per
job should stay flat as N grows (whole-batch work is set-based; a report touches its own jobs).

    .venv/bin/python bench/bench_throughput.py                                   # pg-redis, 4 x 16
    .venv/bin/python bench/bench_throughput.py --backend redis --sizes 1000,10000,100000
    .venv/bin/python bench/bench_throughput.py --backend pg-sql --workers 2 --concurrency 16 --sizes 10000
"""
from __future__ import annotations

import argparse
import time

from harness import BACKENDS, CpuMeter, machine, server_pids, service


def run_size(svc, n: int) -> dict:  # noqa: ANN001
    meter = CpuMeter(groups={"api": server_pids(svc.server), "workers": [w.pid for w in svc.workers]})
    work = svc.backend.work()
    work.start()
    meter.start()
    t0 = time.perf_counter()
    batch = svc.api.post("/v1/batches", json={"job": "Noop", "items": list(range(n))})
    batch.raise_for_status()
    progress = svc.wait_finished(batch.json()["id"], timeout=3600, interval=0.2)
    elapsed = time.perf_counter() - t0
    cpu = meter.stop()
    assert progress["status"] == "completed" and progress["completed"] == n, progress
    return {"seconds": elapsed, "cpu": cpu, "work": work.stop()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="pg-redis", choices=BACKENDS)
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated batch sizes")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent jobs per worker process")
    parser.add_argument("--http", action="store_true", help="workers claim over HTTP even where they could read streams")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"bench_throughput: {args.backend}, {args.workers} worker processes x {args.concurrency}; {machine()}")
    with service(args.backend) as svc:
        svc.start_workers(args.workers, args.concurrency, direct=not args.http)
        run_size(svc, args.workers * args.concurrency)  # warm: every worker connected
        for n in sizes:
            r = run_size(svc, n)
            cpu = " ".join(f"{k} {1000 * v / n:.2f}" for k, v in r["cpu"].items() if v)
            work = ", ".join(f"{k} {v / n:.2f}" for k, v in r["work"].items())
            print(f"{n:>7} jobs  {r['seconds']:7.2f} s  {n / r['seconds']:6.0f} jobs/s   "
                  f"CPU ms/job: total {1000 * sum(r['cpu'].values()) / n:.2f} ({cpu})   per job: {work}", flush=True)


if __name__ == "__main__":
    main()

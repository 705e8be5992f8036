"""Whole-batch operations on a big batch, through a real `batchq serve` process:

  create   POST /v1/batches with N jobs (time, the API process's peak memory above its idle RSS)
  fail     one job fails for good: the fail-fast batch cancels the other N-1 in that report
  retry    POST /v1/batches/{id}/retry: the failed job and the N-1 it cancelled run again
  add      POST /v1/batches/{id}/jobs with N more jobs (and the size of its reply)
  cancel   POST /v1/batches/{id}/cancel of the 2N open jobs

All along, another client creates one-job batches one after the other (20 ms apart): the
slowest of those during each operation shows how long that operation held up other batches
(second table).

With --under-load (stores with streams), also: a batch of M jobs runs on 2 worker processes x 16
and is cancelled once a tenth has completed: how long the cancel takes while reports land, and
how many jobs it cancelled.

    .venv/bin/python bench/bench_bulk.py                       # every backend, N = 100,000
    .venv/bin/python bench/bench_bulk.py --backend redis --jobs 100000 --under-load
"""
from __future__ import annotations

import argparse
import json
import threading
import time

import httpx
from harness import BACKENDS, machine, peak_rss_mb, reset_peak_rss, rss_mb, service


def timed(fn):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def ok(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 300:
        raise SystemExit(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}")
    return r


class Prober:
    """Creates one-job batches one after the other on its own connection, and tells how long
    the slowest of them took during each operation."""

    def __init__(self, url: str):
        self.client = httpx.Client(base_url=url, timeout=600)
        self.probes: list[tuple[float, float]] = []  # (sent, answered), perf_counter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.perf_counter()
            ok(self.client.post("/v1/batches", json={"jobs": ["Other"], "queue": "probe"}))
            self.probes.append((sent, time.perf_counter()))
            time.sleep(0.02)  # a light load: it shows holds, and barely slows what it measures

    def held(self, spans: dict[str, tuple[float, float]]) -> dict[str, tuple[float, int]]:
        """For each span of time, the slowest creation and how many there were; a creation
        counts in the span it overlapped most (one held up by an operation may be answered
        during the next)."""
        held = {name: (0.0, 0) for name in spans}
        for sent, answered in self.probes:
            overlap = {name: min(answered, end) - max(sent, start) for name, (start, end) in spans.items()}
            name = max(overlap, key=overlap.__getitem__)
            if overlap[name] > 0:
                slowest, count = held[name]
                held[name] = (max(slowest, answered - sent), count + 1)
        return held

    def __enter__(self) -> Prober:
        self._thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


PHASES = ["create", "fail", "retry", "add", "cancel"]


def bulk(backend: str, n: int) -> dict:
    row: dict = {"backend": backend}
    with service(backend) as svc, Prober(svc.url) as probe:
        api, pid = svc.api, svc.server.pid
        json_body = {"content-type": "application/json"}

        spans = {}

        def run(phase: str, request):  # noqa: ANN001, ANN202
            start = time.perf_counter()
            r = ok(request())
            spans[phase] = (start, time.perf_counter())
            row[f"{phase}_s"] = spans[phase][1] - start
            return r

        body = json.dumps({"jobs": ["Noop"] * n, "failure_policy": "fail_fast"}).encode()
        api.post("/v1/batches", json={"jobs": ["Warm"], "queue": "warm"})  # first request: imports, pools
        idle = rss_mb(pid)
        reset_peak_rss(pid)
        r = run("create", lambda: api.post("/v1/batches", content=body, headers=json_body))
        row["create_peak_mb"] = peak_rss_mb(pid) - idle
        row["idle_rss_mb"] = idle
        batch_id = r.json()["id"]

        claimed = []
        while not claimed:
            claimed = ok(api.post("/v1/queues/default/claim", json={"max": 1, "wait_s": 5})).json()["messages"]
        job = claimed[0]
        report = {"attempt": job["attempt"], "lease": job["lease"], "error": "bench", "retryable": False}
        run("fail", lambda: api.post(f"/v1/jobs/{job['job_id']}/fail", json=report))
        row["fail_cancelled"] = ok(api.get(f"/v1/batches/{batch_id}")).json()["cancelled"]

        run("retry", lambda: api.post(f"/v1/batches/{batch_id}/retry"))

        add = json.dumps({"jobs": ["Noop"] * n}).encode()
        reset_peak_rss(pid)
        r = run("add", lambda: api.post(f"/v1/batches/{batch_id}/jobs", content=add, headers=json_body))
        row["add_peak_mb"] = peak_rss_mb(pid) - idle
        row["add_reply_kb"] = len(r.content) / 1024

        r = run("cancel", lambda: api.post(f"/v1/batches/{batch_id}/cancel"))
        row["cancelled"] = r.json()["cancelled"]
        time.sleep(0.5)  # creations held up by the cancel get their answers
        row["held"] = probe.held(spans)
    return row


def under_load(backend: str, m: int) -> dict:
    with service(backend) as svc:
        api = svc.api
        svc.start_workers(2, 16)
        batch_id = ok(api.post("/v1/batches", json={"jobs": ["Noop"] * m})).json()["id"]
        deadline = time.monotonic() + 300
        while ok(api.get(f"/v1/batches/{batch_id}/progress")).json()["completed"] < m // 10:
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not get going")
            time.sleep(0.05)
        elapsed, r = timed(lambda: ok(api.post(f"/v1/batches/{batch_id}/cancel")))
        after = r.json()
        return {"backend": backend, "jobs": m, "cancel_s": elapsed, "completed": after["completed"], "cancelled": after["cancelled"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="repeat for several (default: all)")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--under-load", action="store_true", help="also cancel a batch while workers report")
    parser.add_argument("--load-jobs", type=int, default=20_000)
    args = parser.parse_args()
    backends = args.backend or list(BACKENDS)
    print(f"bench_bulk: N = {args.jobs:,} jobs; {machine()}")
    print(f"{'backend':10} {'create':>8} {'peak MB':>8} {'fail→cancel':>12} {'retry':>7} {'add':>7} {'peak MB':>8} "
          f"{'add reply':>10} {'cancel 2N':>10}")
    rows = []
    for name in backends:
        r = bulk(name, args.jobs)
        rows.append(r)
        print(f"{name:10} {r['create_s']:7.2f}s {r['create_peak_mb']:7.0f}  {r['fail_s']:10.2f}s  {r['retry_s']:6.2f}s "
              f"{r['add_s']:6.2f}s {r['add_peak_mb']:7.0f}  {r['add_reply_kb']:7.1f} kB {r['cancel_s']:8.2f}s", flush=True)
        assert r["fail_cancelled"] == args.jobs - 1 and r["cancelled"] == 2 * args.jobs, r
    print("\nanother client's one-job creations meanwhile: the slowest during each operation (and how many)")
    print(f"{'backend':10}" + "".join(f"{phase:>16}" for phase in PHASES))
    for r in rows:
        print(f"{r['backend']:10}" + "".join(f"{r['held'][p][0]:9.2f}s ({r['held'][p][1]:3})" for p in PHASES))
    if args.under_load:
        print(f"\ncancel while 2 worker processes x 16 report (a batch of {args.load_jobs:,}, cancelled at 10 % done)")
        for name in backends:
            r = under_load(name, args.load_jobs)
            print(f"{name:10} cancel {r['cancel_s']:6.2f}s  completed {r['completed']:,}  cancelled {r['cancelled']:,}", flush=True)


if __name__ == "__main__":
    main()

"""What idle event streams cost, through a real `batchq serve` process.

A batch nobody works on is followed by C clients on GET /v1/batches/{id}/events (SSE). For
--seconds with no clients, then the same with C clients connected and idle, it measures the
API's CPU and the store's work (PostgreSQL transactions and index scans, Redis commands): the
streams wait on a notification, so C idle clients should cost the store next to nothing. Then
one change to the batch (a cancel) must reach every client: the time until the last has it.

    .venv/bin/python bench/bench_sse.py                          # every backend, 500 clients
    .venv/bin/python bench/bench_sse.py --backend pg-sql --clients 200 --seconds 10
"""
from __future__ import annotations

import argparse
import asyncio
import threading
import time

import httpx
from harness import BACKENDS, CpuMeter, machine, server_pids, service


class Followers:
    """C SSE clients in one asyncio loop on a thread: counts connected clients and when each
    saw the batch's `cancelled` event."""

    def __init__(self, url: str, batch_id: str, count: int):
        self.url, self.batch_id, self.count = url, batch_id, count
        self.connected = 0
        self.cancelled_at: list[float] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.future = asyncio.run_coroutine_threadsafe(self._run(), self.loop)

    async def _follow(self, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", f"/v1/batches/{self.batch_id}/events") as r:
            if r.status_code != 200:
                raise SystemExit(f"GET events: {r.status_code} {(await r.aread())[:300]!r}")
            self.connected += 1
            async for line in r.aiter_lines():
                if line == "event: cancelled":
                    self.cancelled_at.append(time.perf_counter())
                    return

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.count + 10)
        async with httpx.AsyncClient(base_url=self.url, timeout=None, limits=limits) as client:
            await asyncio.gather(*(self._follow(client) for _ in range(self.count)))

    def wait_connected(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.connected < self.count:
            if self.future.done():
                self.future.result()  # raises what went wrong
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.connected} of {self.count} streams connected")
            time.sleep(0.1)

    def wait_all_cancelled(self, timeout: float = 60) -> None:
        self.future.result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def idle_cost(svc, seconds: float) -> dict[str, float]:  # noqa: ANN001
    meter = CpuMeter(groups={"api": server_pids(svc.server)})
    work = svc.backend.work()
    work.start()
    meter.start()
    time.sleep(seconds)
    cpu = meter.stop()
    out = {k: v / seconds for k, v in work.stop().items()}
    out["api_cpu_pct"] = 100 * cpu["api"] / seconds
    return out


def run(backend: str, clients: int, seconds: float) -> dict:
    with service(backend) as svc:
        batch = svc.api.post("/v1/batches", json={"jobs": ["Noop"], "queue": "nobody"}).json()
        quiet = idle_cost(svc, seconds)
        followers = Followers(svc.url, batch["id"], clients)
        followers.wait_connected()
        time.sleep(2)  # past the streams' first reads
        busy = idle_cost(svc, seconds)
        t0 = time.perf_counter()
        svc.api.post(f"/v1/batches/{batch['id']}/cancel").raise_for_status()
        followers.wait_all_cancelled()
        reached = len(followers.cancelled_at)
        last = max(followers.cancelled_at) - t0 if followers.cancelled_at else float("nan")
        return {"quiet": quiet, "followed": busy, "reached": reached, "last_s": last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="repeat for several (default: all)")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    print(f"bench_sse: {args.clients} idle SSE clients on one batch, {args.seconds:g} s each way; {machine()}")
    print(f"{'backend':10} {'clients':>7}  {'API CPU':>7}  {'pg tx/s':>8}  {'pg idx/s':>8}  {'redis cmd/s':>11}   one change reaches all")
    for backend in args.backend or BACKENDS:
        r = run(backend, args.clients, args.seconds)
        for label, n in (("quiet", 0), ("followed", args.clients)):
            m = r[label]
            print(f"{backend:10} {n:>7}  {m['api_cpu_pct']:>6.1f}%  {m.get('pg_transactions', 0):>8.1f}  "
                  f"{m.get('pg_index_scans', 0):>8.1f}  {m.get('redis_commands', 0):>11.1f}", end="")
            print(f"   {r['reached']} of {args.clients} in {r['last_s']:.2f} s" if n else "")


if __name__ == "__main__":
    main()

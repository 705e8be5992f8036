"""What scripts/container_test.sh asks of a running compose stack, from the host, with the
standard library only: both replicas ready, keys required (the worker's may only work queues),
a chain and a parallel batch of the example registry's `Add` jobs run by the compose worker
with the right results; with --failover, a chain through the one replica left running.

    python3 scripts/container_check.py --api URL --api URL --token KEY --worker-key KEY --worker-host HOST
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

FINISHED = ("completed", "completed_with_failures", "failed", "cancelled")


class Api:
    def __init__(self, url: str, token: str | None):
        self.url, self.token = url.rstrip("/"), token

    def call(self, method: str, path: str, body: Any = None, token: bool = True) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if token and self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def check(self, what: str, ok: bool, detail: Any = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"  {'ok  ' if ok else 'FAIL'} {what}" + ("" if ok or detail == "" else f": {detail}"), flush=True)
        return ok


def wait_finished(api: Api, batch_id: str, deadline_s: float) -> dict:
    end = time.monotonic() + deadline_s
    while True:
        status, batch = api.call("GET", f"/v1/batches/{batch_id}")
        if status == 200 and batch["status"] in FINISHED or time.monotonic() > end:
            return batch
        time.sleep(0.3)


def workers_of(api: Api, batch_id: str, total: int) -> set[str]:
    """The workers named by every attempt of the batch's jobs."""
    seen = set()
    for position in range(total):
        _, job = api.call("GET", f"/v1/batches/{batch_id}/jobs/{batch_id}.{position}")
        seen |= {a["worker"].split(":")[0] for a in job.get("attempt_history", [])}
    return seen


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", action="append", required=True, help="a replica's URL (give both)")
    parser.add_argument("--token", required=True, help="an admin key")
    parser.add_argument("--worker-key", required=True, help="the worker's key (scope work)")
    parser.add_argument("--worker-host", required=True, help="the worker container's host name")
    parser.add_argument("--results", help="write {passed, failed} here")
    parser.add_argument("--deadline", type=float, default=120)
    parser.add_argument("--failover", action="store_true",
                        help="only a chain on the one replica given (the other one has been stopped)")
    args = parser.parse_args()
    replicas = [Api(url, args.token) for url in args.api]
    first, second = replicas[0], replicas[-1]
    c = Checks()
    if args.failover:
        failover(c, first, args)
    else:
        everything(c, first, second, replicas, args)
    if args.results:
        with open(args.results, "w") as out:
            json.dump({"passed": c.passed, "failed": c.failed}, out)
    return 1 if c.failed else 0


def failover(c: Checks, api: Api, args: argparse.Namespace) -> None:
    print(f"a chain through {api.url} alone: the worker, told both replicas, moves on to this one:", flush=True)
    status, chain = api.call("POST", "/v1/chains", {
        "jobs": [{"name": "Add", "args": {"value": v}} for v in (5, 6)], "context": {"total": 1}})
    if c.check("created (201)", status == 201, (status, chain)):
        done = wait_finished(api, chain["id"], args.deadline)
        c.check("completed with context total 12", done["status"] == "completed" and done.get("context") == {"total": 12},
                done)
        workers = workers_of(api, chain["id"], 2)
        c.check(f"run by the compose worker ({args.worker_host})", workers == {args.worker_host}, workers)


def everything(c: Checks, first: Api, second: Api, replicas: list[Api], args: argparse.Namespace) -> None:

    print("replicas:", flush=True)
    for api in replicas:
        status, body = api.call("GET", "/readyz", token=False)
        c.check(f"{api.url}/readyz answers 200 with store and broker up", status == 200 and body["store"] and body["broker"],
                (status, body))
        status, body = api.call("GET", "/v1/batches?limit=1", token=False)
        c.check(f"{api.url}/v1 refuses a call without a key (401)", status == 401, (status, body))
    status, body = Api(first.url, args.worker_key).call("POST", "/v1/batches", {"type": "parallel", "jobs": ["Add"]})
    c.check("the worker's key may not create a batch (403)", status == 403, (status, body))

    print("a chain of Add jobs (context total 10, +2 +3 +4), created on the first replica:", flush=True)
    status, chain = first.call("POST", "/v1/chains", {
        "jobs": [{"name": "Add", "args": {"value": v}} for v in (2, 3, 4)], "context": {"total": 10}})
    if c.check("created (201)", status == 201, (status, chain)):
        done = wait_finished(second, chain["id"], args.deadline)  # read back through the other replica
        c.check("completed", done["status"] == "completed", done)
        c.check("context total 19", done.get("context") == {"total": 19}, done.get("context"))
        _, results = first.call("GET", f"/v1/batches/{chain['id']}/results")
        expected = {f"{chain['id']}.{i}": t for i, t in enumerate((12, 15, 19))}
        c.check("results 12, 15, 19 in order", results.get("results") == expected, results)
        workers = workers_of(first, chain["id"], 3)
        c.check(f"run by the compose worker ({args.worker_host})", workers == {args.worker_host}, workers)
        print(f"    chain {chain['id']}: {done['status']}, context {done.get('context')}", flush=True)

    n = 40
    print(f"a parallel batch of {n} Add jobs (context total 1000, values 1..{n}), created on the second replica:", flush=True)
    status, batch = second.call("POST", "/v1/batches", {
        "type": "parallel", "jobs": [{"name": "Add", "args": {"value": v}} for v in range(1, n + 1)],
        "context": {"total": 1000}})
    if c.check("created (201)", status == 201, (status, batch)):
        done = wait_finished(first, batch["id"], args.deadline)
        c.check(f"completed, {n} of {n} jobs", done["status"] == "completed" and done["completed"] == n, done)
        c.check("context unchanged (a parallel batch's context is read-only)", done.get("context") == {"total": 1000},
                done.get("context"))
        _, results = second.call("GET", f"/v1/batches/{batch['id']}/results")
        expected = {f"{batch['id']}.{i}": 1001 + i for i in range(n)}
        c.check("every result is 1000 + its value", results.get("results") == expected, results)
        workers = workers_of(second, batch["id"], n)
        c.check(f"run by the compose worker ({args.worker_host})", workers == {args.worker_host}, workers)
        print(f"    batch {batch['id']}: {done['status']}, {done['completed']}/{done['total']} completed", flush=True)


if __name__ == "__main__":
    sys.exit(main())

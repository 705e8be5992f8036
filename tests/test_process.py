"""End to end with real processes: `batchq serve` and `batchq worker examples.registry:registry`.

Runs a batch and a chain through a real server and worker over HTTP, then SIGKILLs a worker
in the middle of a job and shows a second worker process running it again once the lease
expired. Once on the embedded default (SQLite + SQL queue, in a temporary directory) and once
on PostgreSQL + Redis Streams with workers reading the streams directly.
"""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from app.cli import command_line
from conftest import BACKENDS, PG_DB, REDIS_URL, _drop_redis_prefix
from processes import FAST, ROOT, Processes, finished, serve, wait_for


def results_by_position(client: httpx.Client, batch_id: str) -> dict[int, object]:
    jobs = client.get(f"/v1/batches/{batch_id}/jobs", params={"limit": 1000}).json()["jobs"]
    results = client.get(f"/v1/batches/{batch_id}/results").json()["results"]
    return {j["position"]: results[j["id"]] for j in jobs}


def run_scenario(procs: Processes, server_cwd: Path, worker_args: list[str]) -> None:
    url = serve(procs, server_cwd)
    with httpx.Client(base_url=url, timeout=10) as client:
        worker_cmd = ["worker", "examples.registry:registry", "--queue", "default", "--api-url", url, "--poll-wait", "1"]
        first = procs.start("worker-1", *worker_cmd, "--concurrency", "4", *worker_args)

        # A parallel batch and a chain, run by the worker process.
        r = client.post("/v1/batches", json={"jobs": [{"name": "Echo", "args": {"n": i}} for i in range(5)]})
        assert r.status_code == 201, r.text
        par = r.json()["id"]
        r = client.post("/v1/chains", json={"jobs": [{"name": "Add", "args": {"value": v}} for v in (1, 2, 3)], "context": {"total": 100}})
        assert r.status_code == 201, r.text
        chain = r.json()["id"]
        assert finished(client, par, procs)["status"] == "completed", procs.output()
        assert {p: res["echo"]["n"] for p, res in results_by_position(client, par).items()} == {i: i for i in range(5)}
        done = finished(client, chain, procs)
        assert done["status"] == "completed" and done["context"]["total"] == 106
        assert results_by_position(client, chain) == {0: 101, 1: 103, 2: 106}

        # SIGKILL the worker in the middle of a job: once the lease (timeout_s) runs out the
        # job is delivered again, and a second worker process runs attempt 2.
        r = client.post("/v1/batches", json={"jobs": [{"name": "Sleep", "args": {"seconds": 1.5}, "timeout_s": 1.0, "max_attempts": 2}]})
        assert r.status_code == 201, r.text
        slow = r.json()["id"]

        def running_job() -> dict | None:
            jobs = client.get(f"/v1/batches/{slow}/jobs").json()["jobs"]
            return jobs[0] if jobs[0]["status"] == "running" else None

        job = wait_for(running_job, 20, "the Sleep job to run", procs)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = procs.start("worker-2", *worker_cmd, *worker_args)
        done = finished(client, slow, procs)
        assert done["status"] == "completed", procs.output()
        detail = client.get(f"/v1/batches/{slow}/jobs/{job['id']}").json()
        history = detail["attempt_history"]
        assert [h["status"] for h in history] == ["expired", "completed"], history
        assert f":{first.pid}:" in history[0]["worker"] and f":{second.pid}:" in history[1]["worker"]
        assert detail["result"]["attempt"] == 2


@pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")
def test_real_server_and_workers_on_the_embedded_default(procs, tmp_path):
    # No database settings: the server creates and migrates ./batchq.db in its directory.
    data = tmp_path / "data"
    data.mkdir()
    run_scenario(procs(**FAST), data, [])
    assert (data / "batchq.db").exists()


@pytest.mark.skipif("pg-redis" not in BACKENDS, reason="pg-redis backend not selected")
def test_real_server_and_stream_workers_on_postgres_and_redis(procs, pg_ready):
    prefix = f"batchq-proc-{uuid.uuid4().hex[:12]}"
    p = procs(
        **FAST,
        BATCHQ_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}",
        BATCHQ_BROKER_URL=REDIS_URL,
        BATCHQ_REDIS_PREFIX=prefix,
    )
    try:
        run_scenario(p, ROOT, ["--broker-url", REDIS_URL])  # the API names the streams
    finally:
        p.stop_all()
        asyncio.run(_drop_redis_prefix(prefix))


@pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")
def test_events_stream_live_from_a_real_server(procs, tmp_path):
    """Over a real socket each event arrives as it happens, not when the batch ends."""
    data = tmp_path / "sse"
    data.mkdir()
    p = procs(**FAST)
    url = serve(p, data)
    with httpx.Client(base_url=url, timeout=10) as client:
        batch = client.post("/v1/batches", json={"jobs": ["A", "B"]}).json()
        seen: list[str] = []
        arrived = threading.Event()

        def follow() -> None:
            with httpx.Client(base_url=url, timeout=30) as sse:
                with sse.stream("GET", f"/v1/batches/{batch['id']}/events") as response:
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            seen.append(json.loads(line[5:])["type"])
                            arrived.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert arrived.wait(10), p.output()
        assert seen == ["started"]  # delivered while the batch is still running
        messages = client.post("/v1/queues/default/claim", json={"max": 2, "wait_s": 5}).json()["messages"]
        for msg in messages:
            arrived.clear()
            assert client.post(f"/v1/jobs/{msg['job_id']}/complete", json={"attempt": 1, "lease": msg["lease"]}).status_code == 200
            assert arrived.wait(10), p.output()
        reader.join(10)
        assert not reader.is_alive(), "the stream should end with the batch"
        assert seen == ["started", "progress", "progress", "completed"]


@pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")
def test_batch_cli_creates_follows_and_reads_a_batch(procs, tmp_path):
    data = tmp_path / "cli"
    data.mkdir()
    p = procs(**FAST)
    url = serve(p, data)
    definition = tmp_path / "batch.json"
    definition.write_text(json.dumps({"type": "chain", "jobs": [{"name": "Add", "args": {"value": 5}}]}))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*command_line(), "batch", *args, "--api-url", url], capture_output=True, text=True,
                              timeout=60, env=p.env)

    created = cli("create", str(definition))
    assert created.returncode == 0, created.stderr
    batch_id = json.loads(created.stdout)["id"]
    p.start("worker", "worker", "examples.registry:registry", "--api-url", url, "--poll-wait", "1")
    watched = cli("watch", batch_id)  # follows the events until the batch ends
    assert watched.returncode == 0, watched.stderr + p.output()
    kinds = [line.split()[1] for line in watched.stdout.splitlines()]
    assert kinds[0] == "started" and kinds[-1] == "completed"
    results = json.loads(cli("results", batch_id).stdout)
    assert list(results["results"].values()) == [5] and results["context"] == {"total": 5}
    missing = cli("get", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: not_found: ") and len(missing.stderr.splitlines()) == 1, missing.stderr

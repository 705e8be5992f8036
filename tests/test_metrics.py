"""Prometheus metrics at /metrics, read with prometheus_client's own parser.

In-process after real batches on every backend; then `batchq serve --workers 2` as a real
process, where the counts of both server processes add up whichever process is scraped.
"""
from __future__ import annotations

import asyncio
import glob
import os
import re
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from conftest import BACKENDS, PG_DB, REDIS_URL, _drop_redis_prefix, cluster_url
from processes import FAST, free_port, wait_for, wait_healthy

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """{(sample name, sorted labels): value} of a scrape."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(api) -> Samples:  # noqa: ANN001
    r = await api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return parse(r.text)


async def test_a_scrape_after_batches_counts_them_with_bounded_labels(api):
    par = await api.create({"jobs": ["A", "B", "C"], "failure_policy": "allow_failures"})
    chain = (await api.post("/v1/chains", {"jobs": ["S1", "S2"]})).json()
    msgs = {m["name"]: m for m in await api.claim_until(4)}  # A, B, C and the chain's first step
    await api.complete(msgs["A"])
    await api.complete(msgs["A"])  # a duplicate
    await api.fail(msgs["B"], "x")
    await api.complete(msgs["C"])
    await api.complete(msgs["S1"])
    (s2,) = await api.claim_until(1)
    await api.complete(s2)
    await api.wait_status(par["id"], "completed_with_failures")
    await api.wait_status(chain["id"], "completed")
    assert (await api.get(f"/v1/batches/{uuid.uuid4()}")).status_code == 404
    assert (await api.get("/no/such/route")).status_code == 404

    m = await scrape(api)
    assert value(m, "batchq_batches_created_total", type="parallel") == 1
    assert value(m, "batchq_batches_created_total", type="chain") == 1
    assert value(m, "batchq_messages_delivered_total") == 5
    assert value(m, "batchq_reports_total", outcome="completed", result="completed") == 4
    assert value(m, "batchq_reports_total", outcome="completed", result="duplicate") == 1
    assert value(m, "batchq_reports_total", outcome="failed", result="failed") == 1
    # Histograms: one observation per started attempt, per report applied, per batch ended.
    assert value(m, "batchq_queue_wait_seconds_count", queue="default") == 5
    assert value(m, "batchq_job_run_seconds_count", queue="default", outcome="completed") == 4
    assert value(m, "batchq_job_run_seconds_count", queue="default", outcome="failed") == 1
    assert value(m, "batchq_batch_duration_seconds_count", type="parallel", status="completed_with_failures") == 1
    assert value(m, "batchq_batch_duration_seconds_count", type="chain", status="completed") == 1
    assert value(m, "batchq_batch_duration_seconds_bucket", type="chain", status="completed", le="+Inf") == 1
    # Requests by route template, method and status class.
    requests = "batchq_http_request_duration_seconds_count"
    assert value(m, requests, method="POST", route="/v1/batches", status="2xx") == 1
    assert value(m, requests, method="POST", route="/v1/chains", status="2xx") == 1
    assert value(m, requests, method="POST", route="/v1/jobs/{job_id}/complete", status="2xx") == 5
    assert value(m, requests, method="POST", route="/v1/jobs/{job_id}/fail", status="2xx") == 1
    assert value(m, requests, method="GET", route="/v1/batches/{batch_id}", status="4xx") == 1
    assert value(m, requests, method="GET", route="unmatched", status="4xx") == 1
    # Queue gauges, read from the store and broker at scrape time.
    assert value(m, "batchq_queue_depth", queue="default") == 0
    assert value(m, "batchq_jobs_in_flight", queue="default") == 0
    assert ("batchq_queue_oldest_age_seconds", (("queue", "default"),)) in m
    # No label holds an id.
    labels = {v for (_, pairs) in m for _, v in pairs}
    assert not [v for v in labels if par["id"] in v or chain["id"] in v or re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", v)]


async def test_queue_gauges_count_waiting_and_running_jobs(api):
    await api.create({"jobs": ["A", "B", "C"], "queue": "reports"})
    (m,) = await api.claim_until(1, queue="reports")

    async def relayed() -> Samples:  # the relay publishes the messages (Redis Streams)
        for _ in range(200):
            samples = await scrape(api)
            if value(samples, "batchq_queue_depth", queue="reports") == 2:
                return samples
            await asyncio.sleep(0.05)
        raise AssertionError(samples)

    samples = await relayed()
    assert value(samples, "batchq_jobs_in_flight", queue="reports") == 1
    assert value(samples, "batchq_jobs_queued", queue="reports") == 2
    await api.complete(m)


async def test_undeclared_queues_beyond_the_limit_share_one_label(api_factory):
    api = await api_factory(metrics_max_queues=1, queues={"critical": {}})
    for queue in ("critical", "q1", "q2", "q3"):
        await api.create({"jobs": ["A"], "queue": queue})
    m = await scrape(api)
    queued = {dict(labels)["queue"]: v for (name, labels), v in m.items() if name == "batchq_jobs_queued"}
    assert queued == {"default": 0, "critical": 1, "q1": 1, "_other": 2}  # declared ones always by name
    for queue in ("critical", "q1", "q2", "q3"):
        await api.complete((await api.claim_until(1, queue=queue))[0])
    m = await scrape(api)
    waits = {dict(labels)["queue"]: v for (name, labels), v in m.items() if name == "batchq_queue_wait_seconds_count"}
    assert waits == {"critical": 1, "q1": 1, "_other": 2}


# ---- several server processes ------------------------------------------------------------


def backend_env(backend: str, tmp_path: Path, prefix: str) -> dict[str, str]:
    if backend == "sqlite":
        return {"BATCHQ_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/batchq.db", "BATCHQ_BROKER_URL": "sql"}
    if backend == "redis-cluster":
        return {"BATCHQ_DATABASE_URL": cluster_url(), "BATCHQ_BROKER_URL": cluster_url(), "BATCHQ_REDIS_PREFIX": prefix,
                "BATCHQ_REDIS_WAIT_REPLICAS": "1"}  # fmt: skip
    pg = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
    return {
        "pg-sql": {"BATCHQ_DATABASE_URL": pg, "BATCHQ_BROKER_URL": "sql"},
        "pg-redis": {"BATCHQ_DATABASE_URL": pg, "BATCHQ_BROKER_URL": REDIS_URL, "BATCHQ_REDIS_PREFIX": prefix},
        "redis": {"BATCHQ_DATABASE_URL": REDIS_URL, "BATCHQ_BROKER_URL": REDIS_URL, "BATCHQ_REDIS_PREFIX": prefix},
    }[backend]


def per_process(path: Path, name: str, **labels: str) -> dict[int, float]:
    """One sample's value in each process's own files of a multiprocess directory."""
    files: dict[int, list[str]] = defaultdict(list)
    for file in glob.glob(str(path / "*.db")):
        files[int(re.search(r"_(\d+)\.db$", file).group(1))].append(file)  # type: ignore[union-attr]
    out = {}
    for pid, mine in files.items():
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for metric in MultiProcessCollector.merge(mine) for s in metric.samples}  # fmt: skip
        out[pid] = value(samples, name, **labels)
    return out


def call(url: str, method: str, path: str, **kw) -> httpx.Response:  # noqa: ANN003
    """One request on a new connection (so that either server process may take it)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.request(method, path, **kw)


def test_serve_with_two_processes_adds_up_the_counts_of_both(procs, backend, tmp_path):
    prefix = f"batchq-metrics-{uuid.uuid4().hex[:12]}"
    shared = tmp_path / "prom"
    p = procs(**FAST, **backend_env(backend, tmp_path, prefix), PROMETHEUS_MULTIPROC_DIR=str(shared))
    port = free_port()
    server = p.start("server", "serve", "--port", str(port), "--workers", "2", "--no-access-log", cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            wait_healthy(client, server, p)
        created: list[str] = []
        creations = "batchq_http_request_duration_seconds_count"
        labels = dict(method="POST", route="/v1/batches", status="2xx")

        def both_created() -> bool:  # until each process has taken some creations
            r = call(url, "POST", "/v1/batches", json={"jobs": ["A", "B"], "queue": prefix})
            assert r.status_code == 201, r.text
            created.append(r.json()["id"])
            counts = per_process(shared, creations, **labels)
            return len(created) >= 6 and len([n for n in counts.values() if n > 0]) == 2

        wait_for(both_created, 120, "both server processes to take creations", p)
        done: set[str] = set()

        def all_done() -> bool:
            r = call(url, "POST", f"/v1/queues/{prefix}/claim", json={"max": 20, "wait_s": 0.5})
            for msg in r.json()["messages"]:
                ok = call(url, "POST", f"/v1/jobs/{msg['job_id']}/complete", json={"attempt": msg["attempt"], "lease": msg["lease"]})
                assert ok.status_code == 200, ok.text
                done.add(msg["job_id"])
            return len(done) == 2 * len(created)

        wait_for(all_done, 120, "every job to be run", p)
        wait_for(lambda: all(call(url, "GET", f"/v1/batches/{b}").json()["status"] == "completed" for b in created),
                 60, "every batch to complete", p)  # fmt: skip

        counts = per_process(shared, creations, **labels)
        assert len(counts) >= 2 and sum(counts.values()) == len(created), counts
        for _ in range(6):  # whichever process answers, it shows both processes' counts
            m = parse(call(url, "GET", "/metrics").text)
            assert value(m, "batchq_batches_created_total", type="parallel") == len(created)
            assert value(m, creations, **labels) == len(created)
            assert value(m, "batchq_messages_delivered_total") == 2 * len(created)
            assert value(m, "batchq_reports_total", outcome="completed", result="completed") == 2 * len(created)
            assert value(m, "batchq_job_run_seconds_count", queue=prefix, outcome="completed") == 2 * len(created)
            assert value(m, "batchq_batch_duration_seconds_count", type="parallel", status="completed") == len(created)
            assert value(m, "batchq_http_requests_in_progress") == 1  # this scrape, counted once
    finally:
        p.stop_all()
        if backend in ("pg-redis", "redis", "redis-cluster"):
            asyncio.run(_drop_redis_prefix(prefix, backend))


@pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")
def test_serve_makes_and_removes_a_metrics_directory_for_its_processes(procs, tmp_path):
    p = procs(**FAST, BATCHQ_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/batchq.db")
    p.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    server = p.start("server", "serve", "--port", str(port), "--workers", "2", cwd=tmp_path)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        wait_healthy(client, server, p)
        found = re.search(r"metrics of 2 processes kept in (\S+?)\"?$", p.log("server"), re.M)
        assert found, p.output()
        directory = found.group(1)
        assert os.path.isdir(directory) and glob.glob(os.path.join(directory, "*.db"))
        assert client.get("/metrics").status_code == 200
    p.stop("server")
    assert not os.path.exists(directory)

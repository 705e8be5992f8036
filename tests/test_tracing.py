"""OpenTelemetry (the `otel` extra): one trace shows a batch's creation, each job's run in the
worker, the server's span of each report, the webhook delivery and the callback job.

In-process, with the SDK's in-memory exporter; and without the extra, nothing of it is
imported and the caller's traceparent reaches the workers as it came.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from batchq import Worker
from conftest import BACKENDS, start_api
from examples.registry import registry as examples
from receiver import Receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def exporter():  # noqa: ANN201
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    exporter.provider = provider
    yield exporter
    provider.shutdown()


@pytest.fixture
async def receiver():  # noqa: ANN201
    r = await Receiver().start()
    yield r
    await r.stop()


async def wait_for_spans(exporter, done, timeout: float = 20.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while not done(exporter.get_finished_spans()):
        assert time.monotonic() < deadline, [s.name for s in exporter.get_finished_spans()]
        await asyncio.sleep(0.05)
    return exporter.get_finished_spans()


async def test_one_trace_holds_creation_job_runs_reports_and_callbacks(backend, tmp_path, exporter, receiver):
    api, stop = await start_api(backend, tmp_path, tracer_provider=exporter.provider)
    worker = Worker("http://batchq.test", examples, transport=httpx.ASGITransport(app=api.app), poll_wait_s=0.1,
                    concurrency=2, tracer_provider=exporter.provider)  # fmt: skip
    try:
        r = await api.post(
            "/v1/batches",
            {"jobs": [{"name": "Echo", "args": {"n": 1}}, {"name": "Echo", "args": {"n": 2}}],
             "on_complete": {"url": receiver.url, "job": {"name": "Noop"}}},
            headers={"traceparent": CALLER},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        batch = r.json()
        await worker.start()
        await api.wait_status(batch["id"], "completed")
        (delivery,) = await receiver.wait_for(1)

        def everything(spans) -> bool:  # noqa: ANN001
            names = [s.name for s in spans if s.context.trace_id == int(TRACE_ID, 16)]
            return names.count("batchq.job Echo") == 2 and "batchq.job Noop" in names and names.count("batchq.report") == 3

        spans = await wait_for_spans(exporter, everything)
    finally:
        await worker.stop(timeout=5)
        await stop()

    trace = [s for s in spans if s.context.trace_id == int(TRACE_ID, 16)]
    by_id = {s.context.span_id: s for s in trace}

    def parent_of(span):  # noqa: ANN001, ANN202
        return by_id.get(span.parent.span_id) if span.parent else None

    # The creating request continues the caller's trace; the store operation is inside it.
    (create,) = [s for s in trace if s.name == "POST /v1/batches"]
    assert create.kind == SpanKind.SERVER and create.parent.span_id == int(CALLER_SPAN, 16)
    assert create.attributes["http.route"] == "/v1/batches" and create.attributes["http.response.status_code"] == 201
    (store,) = [s for s in trace if s.name == "store.create_batch"]
    assert parent_of(store) is create and store.attributes["batchq.batch_id"] == batch["id"]

    # Each job's run in the worker (the callback job's too) is a child of the creation.
    runs = [s for s in trace if s.name.startswith("batchq.job ")]
    assert len(runs) == 3 and all(parent_of(s) is create and s.kind == SpanKind.CONSUMER for s in runs)
    assert {s.attributes["batchq.batch_id"] for s in runs} == {batch["id"]}
    assert {s.attributes["batchq.outcome"] for s in runs} == {"completed"}
    # The server's span of each report is a child of that job's run.
    reports = [s for s in trace if s.name == "batchq.report"]
    assert sorted(parent_of(s).attributes["batchq.job_id"] for s in reports) == sorted(s.attributes["batchq.job_id"] for s in runs)
    assert {s.attributes["batchq.result"] for s in reports} == {"completed"}
    assert all(s.links and s.links[0].context.trace_id != int(TRACE_ID, 16) for s in reports)  # the /v1/reports request

    # The webhook delivery, and the receiver is handed its span as traceparent.
    (hook,) = [s for s in trace if s.name == "batchq.webhook batch.completed"]
    assert parent_of(hook) is create and hook.kind == SpanKind.CLIENT and hook.attributes["http.response.status_code"] == 200
    assert delivery.headers["traceparent"] == f"00-{TRACE_ID}-{hook.context.span_id:016x}-01"


async def test_a_batch_created_without_a_trace_starts_one_at_the_request(backend, tmp_path, exporter):
    api, stop = await start_api(backend, tmp_path, tracer_provider=exporter.provider)
    try:
        batch = await api.create({"jobs": ["A"]})
        (msg,) = await api.claim_until(1)
        await api.complete(msg)
        await api.batch(batch["id"])
    finally:
        await stop()
    (create,) = [s for s in exporter.get_finished_spans() if s.name == "POST /v1/batches"]
    assert create.parent is None
    assert msg["traceparent"].startswith(f"00-{create.context.trace_id:032x}-{create.context.span_id:016x}-")
    assert batch["id"] in msg["job_id"]
    # Store operations and reads within a request are spans of its trace.
    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    assert {"store.create_batch", "store.start", "store.report", "store.get_batch"} <= names
    (read,) = [s for s in spans if s.name == "GET /v1/batches/{batch_id}"]
    assert [s.name for s in spans if s.parent is not None and s.parent.span_id == read.context.span_id] == ["store.get_batch"]


async def test_tracing_off_makes_no_spans_and_keeps_the_callers_traceparent(backend, tmp_path, exporter):
    api, stop = await start_api(backend, tmp_path, tracer_provider=exporter.provider, tracing=False)
    try:
        r = await api.post("/v1/batches", {"jobs": ["A"]}, headers={"traceparent": CALLER})
        assert r.status_code == 201
        (msg,) = await api.claim_until(1)
        await api.complete(msg, traceparent=CALLER)
    finally:
        await stop()
    assert exporter.get_finished_spans() == ()
    assert msg["traceparent"] == CALLER


# Run in a fresh interpreter where the OpenTelemetry SDK cannot be imported (as without the
# extra): a batch created with a traceparent hands it to the worker unchanged.
WITHOUT_THE_EXTRA = """
import asyncio, sys
sys.modules["opentelemetry.sdk"] = None  # what an install without the `otel` extra looks like
import httpx
from app.config import Settings
from app.main import create_app

async def main():
    app = create_app(Settings(database_url="sqlite+aiosqlite:///{db}", broker_url="sql"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            r = await client.post("/v1/batches", json={{"jobs": ["A"]}}, headers={{"traceparent": "{caller}"}})
            assert r.status_code == 201, r.text
            for _ in range(100):
                messages = (await client.post("/v1/queues/default/claim", json={{"max": 1}})).json()["messages"]
                if messages:
                    break
                await asyncio.sleep(0.05)
            assert messages[0]["traceparent"] == "{caller}", messages
    loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.startswith(("opentelemetry.sdk", "app.telemetry.otel")))
    assert loaded == [], loaded
    print("ok")

asyncio.run(main())
"""


@pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")
def test_without_the_extra_nothing_of_it_is_imported(tmp_path):
    script = WITHOUT_THE_EXTRA.format(db=tmp_path / "batchq.db", caller=CALLER)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr

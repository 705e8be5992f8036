"""The SDK's clients against a real server: every endpoint, through AsyncClient (in-process,
every backend) and Client (a real `batchq serve` process); failover and retries."""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import httpx
import pytest

from batchq import ApiUnreachable, AsyncClient, BatchqError, Client, Conflict, NotFound
from batchq.models import FINISHED
from conftest import BACKENDS, STREAM_BACKENDS
from processes import FAST, free_port, serve


async def call(value: Any) -> Any:
    """The reply of a sync or an async client's method."""
    return await value if inspect.isawaitable(value) else value


async def collect(iterable: Any) -> list[Any]:
    if hasattr(iterable, "__aiter__"):
        return [item async for item in iterable]
    return list(iterable)


async def claim_until(client: Any, queue: str, count: int, timeout: float = 20.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += await call(client.claim(queue, max=count - len(got), wait_s=0.5, worker="sdk-test"))
    assert len(got) == count, f"expected {count} messages on {queue}, got {got}"
    return got


async def until_status(client: Any, batch_id: str, *statuses: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        batch = await call(client.get_batch(batch_id))
        if batch["status"] in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch stayed {batch['status']}, wanted {statuses}"
        await asyncio.sleep(0.05)


async def exercise_every_endpoint(client: Any, streams: bool) -> None:
    """One user's session touching every endpoint, with the replies checked."""
    assert (await call(client.health()))["status"] == "ok"
    assert (await call(client.ready()))["status"] == "ok"
    me = await call(client.me())  # no API keys configured: the default tenant, every scope
    assert me["tenant"] == "default" and "admin" in me["scopes"] and me["queues"] is None, me
    secrets = await call(client.webhook_secret())
    assert secrets["secrets"] and all(s.startswith("whsec_") for s in secrets["secrets"]), secrets

    # A parallel batch, created from a dict plus keywords (the keywords win).
    batch = await call(client.create_batch(
        {"jobs": ["One", "Two", "Three"], "context": {"t": 1}, "queue": "other"},
        queue="sdk", failure_policy="allow_failures", idempotency_key="sdk-test-1",
        on_event={"url": "http://127.0.0.1:9/hook", "events": ["completed"]},
    ))
    bid = batch["id"]
    assert batch["status"] == "running" and batch["total"] == 3 and batch["queue"] == "sdk"
    chain = await call(client.create_chain(jobs=[{"name": "Step", "args": {"value": 1}}, "Last"], queue="sdk-chain"))
    assert chain["type"] == "chain" and chain["total"] == 2

    page = await call(client.list_batches(limit=1))
    assert [b["id"] for b in page["batches"]] == [chain["id"]] and page["next"] == chain["id"]
    older = await call(client.list_batches(before=page["next"], queue="sdk"))
    assert [b["id"] for b in older["batches"]] == [bid]
    assert [b["id"] for b in (await call(client.list_batches(type="parallel", queue="sdk")))["batches"]] == [bid]
    assert (await call(client.list_batches(status="running", limit=500)))["batches"]
    assert (await call(client.get_batch(bid)))["context"] == {"t": 1}
    progress = await call(client.progress(bid))
    assert progress["batch_id"] == bid and progress["total"] == 3 and progress["percentage"] == 0
    assert "sdk" in {q["name"] for q in (await call(client.queues()))["queues"]}
    if streams:
        info = await call(client.queue_streams("sdk"))
        assert info["group"] == "workers" and len(info["streams"]) == 1
    else:
        with pytest.raises(Conflict) as refused:
            await call(client.queue_streams("sdk"))
        assert refused.value.status_code == 409 and "claim over HTTP" in refused.value.message

    # Worker side: claim, heartbeat, complete (twice: the second is a duplicate), fail, many reports.
    one, two, three = sorted(await claim_until(client, "sdk", 3), key=lambda m: m["position"])
    assert one["args"]["t"] == 1 and one["lease"] and one["lease_expires_at"]
    beat = await call(client.heartbeat(one["job_id"], one["attempt"], one["lease"]))
    assert beat["job_id"] == one["job_id"] and beat["lease_expires_at"]
    done = await call(client.complete(one["job_id"], one["attempt"], one["lease"], result={"n": 1}))
    assert done["status"] == "completed" and done["duplicate"] is False
    again = await call(client.complete(one["job_id"], one["attempt"], one["lease"], result={"n": 1}))
    assert again["duplicate"] is True
    failed = await call(client.fail(two["job_id"], two["attempt"], two["lease"], error="boom", retryable=False))
    assert failed["status"] == "failed"
    outcomes = await call(client.report_many([
        {"job_id": three["job_id"], "attempt": three["attempt"], "lease": three["lease"], "outcome": "completed", "result": 3},
        {"job_id": "no-such-job", "attempt": 1, "lease": "x", "outcome": "completed"},
    ]))
    assert [o["status_code"] for o in outcomes] == [200, 404]
    assert (await until_status(client, bid, *FINISHED))["status"] == "completed_with_failures"

    # Steering: retry the batch, start the new attempt directly (as a stream reader does).
    retried = await call(client.retry(bid))
    assert retried["retried"] == 1 and retried["batch"]["status"] == "running"
    (job,) = (await call(client.list_jobs(bid, status="queued")))["jobs"]
    started = await call(client.start(two["job_id"], job["attempts"], worker="sdk-test"))
    assert started["attempt"] == 2 and started["lease"]
    again_started = await call(client.start_many([(two["job_id"], 2)], worker="sdk-test"))
    assert again_started["messages"] == [] and again_started["refused"][0]["status_code"] == 409
    await call(client.fail(two["job_id"], 2, started["lease"], error="again", retryable=False))
    await until_status(client, bid, *FINISHED)
    retried = await call(client.retry_jobs(bid, [two["job_id"]]))
    assert retried["retried"] == 1
    with pytest.raises(BatchqError) as invalid:
        await call(client.retry_jobs(bid, ["no-such-job"]))
    assert invalid.value.status_code == 422 and invalid.value.code == "validation_error"
    (third,) = await claim_until(client, "sdk", 1)
    assert third["job_id"] == two["job_id"] and third["attempt"] == 3
    await call(client.complete(third["job_id"], 3, third["lease"], result="finally"))
    assert (await until_status(client, bid, *FINISHED))["status"] == "completed"

    # Reading what happened.
    results = await call(client.results(bid))
    assert results["results"] == {one["job_id"]: {"n": 1}, two["job_id"]: "finally", three["job_id"]: 3}
    jobs = await call(client.list_jobs(bid, kind="job", limit=2, offset=1))
    assert [j["position"] for j in jobs["jobs"]] == [1, 2] and jobs["offset"] == 1
    detail = await call(client.get_job(bid, two["job_id"]))
    assert [a["status"] for a in detail["attempt_history"]] == ["failed", "failed", "completed"]
    events = (await call(client.events(bid)))["events"]
    assert events[0]["type"] == "started" and events[-1]["type"] == "completed"
    streamed = await collect(client.stream_events(bid))  # the batch has ended: history, then the end
    assert [e["id"] for e in streamed] == [e["id"] for e in events]
    later = await collect(client.stream_events(bid, after=events[-2]["id"]))
    assert [e["id"] for e in later] == [events[-1]["id"]]
    assert len((await call(client.events(bid, after=events[-2]["id"])))["events"]) == 1
    webhooks = (await call(client.callbacks(bid)))["webhooks"]
    assert len(webhooks) == 1 and webhooks[0]["event_type"].endswith("completed")  # on_event, events ["completed"]

    # A chain: add a job while it runs, cancel it; its worker's report is then refused.
    (step,) = await claim_until(client, "sdk-chain", 1)
    added = await call(client.add_jobs(chain["id"], ["Extra"], idempotency_key="sdk-test-2"))
    assert added["batch"]["total"] == 3 and added["job_ids"] == [f"{chain['id']}.2"]
    assert (await call(client.cancel(chain["id"])))["status"] == "cancelled"
    with pytest.raises(Conflict):
        await call(client.add_jobs(chain["id"], ["TooLate"]))
    with pytest.raises(Conflict) as late:
        await call(client.complete(step["job_id"], step["attempt"], step["lease"]))
    assert late.value.code == "conflict"

    with pytest.raises(NotFound) as missing:
        await call(client.get_batch("00000000-0000-0000-0000-000000000000"))
    assert missing.value.status_code == 404 and missing.value.code == "not_found"


async def test_async_client_covers_every_endpoint(api):
    async with AsyncClient("http://batchq.test", transport=httpx.ASGITransport(app=api.app)) as client:
        await exercise_every_endpoint(client, streams=api.backend in STREAM_BACKENDS)


@pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")
async def test_sync_client_covers_every_endpoint_against_a_real_server(procs, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    url = serve(procs(**FAST), data)
    with Client(url) as client:
        await exercise_every_endpoint(client, streams=False)


class Flaky(httpx.AsyncBaseTransport):
    """In front of the in-process app: a host that refuses connections, and 503s on demand."""

    def __init__(self, app: Any, unavailable: int = 0, retry_after: str | None = None):
        self.inner = httpx.ASGITransport(app=app)
        self.unavailable = unavailable
        self.retry_after = retry_after
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.url.host} {request.url.path}")
        if request.url.host == "dead.test":
            raise httpx.ConnectError("connection refused", request=request)
        if self.unavailable > 0:
            self.unavailable -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(503, headers=headers, json={"error": {"code": "unavailable", "message": "restarting"}})
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("backend", ["sqlite"] if "sqlite" in BACKENDS else BACKENDS[:1], indirect=True)
async def test_the_client_fails_over_to_the_next_url_and_stays_there(api):
    flaky = Flaky(api.app)
    async with AsyncClient(["http://dead.test", "http://live.test"], transport=flaky) as client:
        batch = await client.create_batch(jobs=["A"])  # not sent to dead.test: safe to send again
        assert (await client.get_batch(batch["id"]))["id"] == batch["id"]
        assert client.api_url == "http://live.test"
    assert flaky.seen == ["dead.test /v1/batches", "live.test /v1/batches", f"live.test /v1/batches/{batch['id']}"]

    async with AsyncClient("http://dead.test", transport=flaky) as alone:
        with pytest.raises(ApiUnreachable) as unreachable:
            await alone.get_batch(batch["id"])
    assert "cannot reach the batchq API at http://dead.test" in str(unreachable.value)


@pytest.mark.parametrize("backend", ["sqlite"] if "sqlite" in BACKENDS else BACKENDS[:1], indirect=True)
async def test_reports_wait_out_503s_and_honour_retry_after(api):
    batch = await api.create({"jobs": ["A"]})
    (msg,) = await api.claim_until(1)
    flaky = Flaky(api.app, unavailable=3, retry_after="0.3")
    async with AsyncClient("http://api.test", transport=flaky, report_retry_s=30, backoff_base_s=0.01) as client:
        began = time.monotonic()
        done = await client.complete(msg["job_id"], msg["attempt"], msg["lease"], result=1)
        waited = time.monotonic() - began
    assert done["status"] == "completed" and len(flaky.seen) == 4
    assert waited >= 0.9  # three waits of Retry-After (0.3 s), not the 10 ms backoff
    assert (await api.wait_status(batch["id"], "completed"))["status"] == "completed"

    # Without a retry budget a read gives up after one round and raises the 503.
    flaky.unavailable = 5
    async with AsyncClient("http://api.test", transport=flaky) as client:
        with pytest.raises(BatchqError) as unavailable:
            await client.get_batch(batch["id"])
    assert unavailable.value.status_code == 503 and unavailable.value.message == "restarting"


async def test_an_unreachable_api_raises_after_the_retry_budget():
    port = free_port()  # nothing listens there
    async with AsyncClient(f"http://127.0.0.1:{port}", report_retry_s=0.5, backoff_base_s=0.05) as client:
        began = time.monotonic()
        with pytest.raises(ApiUnreachable):
            await client.complete("job", 1, "lease")
        assert time.monotonic() - began >= 0.4  # kept trying for the budget

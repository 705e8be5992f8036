"""on_complete / on_failure callbacks: signed webhooks with retries, callback jobs, exactly once."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from batchq.webhooks import WebhookVerificationError, verify

from app.main import create_app
from conftest import WEBHOOK_SECRET
from receiver import Receiver

OTHER_SECRET = "whsec_" + "b3RoZXItc2VjcmV0LW9mLXR3ZW50eS1mb3VyIGJ5dGVz"


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_on_complete_webhook_is_signed_and_carries_the_summary(api, receiver):
    batch = await api.create(
        {"jobs": ["A", "B"], "on_complete": {"url": receiver.url, "headers": {"X-Tenant": "acme"}}}
    )
    for m in await api.claim_until(2):
        await api.complete(m)
    (delivery,) = await receiver.wait_for(1)
    body = delivery.json
    assert body["type"] == "batch.completed" and body["batch_id"] == batch["id"] and body["status"] == "completed"
    assert body["data"]["total"] == 2 and body["data"]["completed"] == 2 and body["id"]
    h = delivery.headers
    assert h["x-tenant"] == "acme" and h["webhook-id"] == body["id"] and h["x-batchq-event"] == "batch.completed"
    assert verify(WEBHOOK_SECRET, h, delivery.body) == body
    with pytest.raises(WebhookVerificationError):
        verify(OTHER_SECRET, h, delivery.body)
    hooks = await _wait_hooks(api, batch["id"], lambda w: w[0]["status"] == "delivered")
    assert hooks[0]["attempts"] == 1 and hooks[0]["deliveries"][0]["status_code"] == 200


async def _wait_hooks(api, batch_id, done, timeout=10.0):  # noqa: ANN001, ANN202
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        hooks = (await api.get(f"/v1/batches/{batch_id}/callbacks")).json()["webhooks"]
        if hooks and done(hooks):
            return hooks
        assert asyncio.get_running_loop().time() < deadline, hooks
        await asyncio.sleep(0.05)


async def test_on_failure_webhook_is_retried_with_backoff_until_2xx(api, receiver):
    receiver.statuses = [500, 503]
    batch = await api.create({"jobs": ["A"], "on_failure": {"url": receiver.url}, "on_complete": {"url": receiver.url}})
    (m,) = await api.claim_until(1)
    await api.fail(m, "kaput")
    deliveries = await receiver.wait_for(3)
    assert len({d.json["id"] for d in deliveries}) == 1  # the same event, retried
    body = deliveries[-1].json
    assert body["type"] == "batch.failed" and body["data"]["error"]["error"] == "kaput"
    hooks = await _wait_hooks(api, batch["id"], lambda w: w[0]["status"] == "delivered")
    assert len(hooks) == 1  # on_complete did not fire
    attempts = hooks[0]["deliveries"]
    assert [a.get("status_code") for a in attempts] == [500, 503, 200]
    assert attempts[1]["at"] > attempts[0]["at"] and attempts[2]["at"] > attempts[1]["at"]


async def test_unreachable_receiver_is_recorded_and_given_up_without_blocking(api_factory):
    api = await api_factory(webhook_max_attempts=3)
    batch = await api.create({"jobs": ["A"], "on_complete": {"url": "http://127.0.0.1:9/down"}})
    (m,) = await api.claim_until(1)
    await api.complete(m)  # the report returns; delivery happens in the background
    assert (await api.batch(batch["id"]))["status"] == "completed"
    hooks = await _wait_hooks(api, batch["id"], lambda w: w[0]["status"] == "failed")
    assert hooks[0]["attempts"] == 3 and all(d["error"] for d in hooks[0]["deliveries"])


async def test_callback_job_runs_on_the_batch_queue_with_the_summary(api):
    batch = await api.create(
        {
            "jobs": ["A"],
            "queue": "reports",
            "on_complete": {"job": {"name": "SendReport", "args": {"to": "ops"}}},
            "on_failure": {"job": {"name": "PageOncall"}},
        }
    )
    (m,) = await api.claim_until(1, queue="reports")
    await api.complete(m)
    (cb,) = await api.claim_until(1, queue="reports")
    assert cb["name"] == "SendReport" and cb["kind"] == "callback"
    assert cb["args"]["to"] == "ops" and cb["args"]["batch"]["status"] == "completed"
    await api.complete(cb)
    final = await api.batch(batch["id"])
    assert final["status"] == "completed" and final["total"] == 1  # callbacks are not batch jobs
    assert await api.claim("reports") == []


async def test_event_webhook_receives_the_batch_life(api, receiver):
    batch = await api.create(
        {"jobs": ["A", "B"], "failure_policy": "allow_failures", "on_event": {"url": receiver.url}}
    )
    a, b = await api.claim_until(2)
    await api.fail(a, "bad")
    await api.complete(b)
    deliveries = await receiver.wait_for(5)
    types = [d.json["type"] for d in deliveries]
    assert types[0] == "batch.started"
    assert "batch.job_failed" in types and types.count("batch.completed_with_failures") == 1
    failed = next(d.json for d in deliveries if d.json["type"] == "batch.job_failed")
    assert failed["data"]["job_id"] == a["job_id"] and failed["data"]["error"] == "bad"
    assert all(d.json["batch_id"] == batch["id"] for d in deliveries)


async def test_event_webhook_carries_its_custom_headers_and_follows_its_filter(api, receiver):
    hook = {"url": receiver.url, "headers": {"X-Tenant": "acme", "X-Route": "events"}, "events": ["job_failed", "failed"]}
    batch = await api.create({"jobs": ["A"], "on_event": hook})
    (a,) = await api.claim_until(1)
    await api.fail(a, "bad")
    await receiver.wait_for(2)
    await asyncio.sleep(0.3)  # a delivery the filter should have stopped would have had time to arrive
    deliveries = sorted(receiver.deliveries, key=lambda d: d.json["created_at"])
    assert sorted(d.json["type"] for d in deliveries) == ["batch.failed", "batch.job_failed"]
    for d in deliveries:
        assert d.headers["x-tenant"] == "acme" and d.headers["x-route"] == "events"
        assert verify(WEBHOOK_SECRET, d.headers, d.body) == d.json
    assert (await api.batch(batch["id"]))["on_event"]["headers"] == {"X-Tenant": "acme", "X-Route": "events"}


async def test_callback_fires_exactly_once_when_last_jobs_finish_concurrently_on_two_api_processes(api, receiver):
    """Two API instances (separate engines / connections) complete the last two jobs at once."""
    other = create_app(api.settings)
    async with other.router.lifespan_context(other):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://other") as client2:
            batches = []
            for _ in range(8):
                batches.append(
                    await api.create(
                        {
                            "jobs": ["A", "B"],
                            "on_complete": {"url": receiver.url, "job": {"name": "Done"}},
                        }
                    )
                )
            msgs = await api.claim_until(16)
            by_batch: dict[str, list] = {}
            for m in msgs:
                by_batch.setdefault(m["batch_id"], []).append(m)

            async def report(client, m):  # noqa: ANN001, ANN202
                r = await client.post(f"/v1/jobs/{m['job_id']}/complete", json={"attempt": m["attempt"], "lease": m["lease"]})
                assert r.status_code == 200, r.text

            await asyncio.gather(
                *(coro for pair in by_batch.values() for coro in (report(api.client, pair[0]), report(client2, pair[1])))
            )
    await receiver.wait_for(8)
    await asyncio.sleep(0.3)  # a second event would have had time to arrive
    # One completion event per batch. (Delivery itself is at least once: a sender stopped
    # between POST and bookkeeping re-sends the *same* event id, which receivers dedupe.)
    events_per_batch: dict[str, set[str]] = {}
    for d in receiver.deliveries:
        assert d.json["type"] == "batch.completed"
        events_per_batch.setdefault(d.json["batch_id"], set()).add(d.headers["webhook-id"])
    assert {k: len(v) for k, v in events_per_batch.items()} == {b["id"]: 1 for b in batches}
    hooks = [(await api.get(f"/v1/batches/{b['id']}/callbacks")).json()["webhooks"] for b in batches]
    assert [len(h) for h in hooks] == [1] * len(batches)
    callback_jobs = await api.claim_until(8)
    assert sorted(c["batch_id"] for c in callback_jobs) == sorted(b["id"] for b in batches)
    for b in batches:
        events = (await api.get(f"/v1/batches/{b['id']}/events", params={"stream": "false"})).json()["events"]
        assert [e["type"] for e in events].count("completed") == 1
        final = await api.batch(b["id"])
        assert final["completed"] == 2 and final["status"] == "completed"


def test_signature_scheme_is_standard_webhooks_hmac_over_id_timestamp_and_body():
    import base64
    import hashlib
    import hmac

    from app.dispatch.webhooks import signed_headers
    from app.domain.models import Webhook

    body = json.dumps({"a": 1}).encode()
    hook = Webhook(id="ev_1", batch_id="b", event_type="batch.completed", url="http://x.test/", headers={}, body={})
    headers = signed_headers(hook, body, [WEBHOOK_SECRET], 1700000000)
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, b"ev_1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == "v1," + expected
    assert headers["webhook-id"] == "ev_1" and headers["webhook-timestamp"] == "1700000000"


async def test_a_retried_batch_fires_callbacks_again_at_its_new_end(api, receiver):
    batch = await api.create({"jobs": ["A"], "on_complete": {"url": receiver.url}, "on_failure": {"url": receiver.url}})
    (a,) = await api.claim_until(1)
    await api.fail(a, "first try")
    await receiver.wait_for(1)
    assert (await api.post(f"/v1/batches/{batch['id']}/retry")).status_code == 200
    (a2,) = await api.claim_until(1)
    await api.complete(a2)
    deliveries = await receiver.wait_for(2)
    assert [d.json["type"] for d in deliveries] == ["batch.failed", "batch.completed"]
    assert deliveries[0].json["id"] != deliveries[1].json["id"]

"""Who may do what: API keys with scopes and tenants, and leases as proof (issue 9)."""
from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from conftest import STREAM_BACKENDS, redis_client

KEYS = {
    "acme-app": {"tenant": "acme", "scopes": ["produce"]},
    "acme-dash": {"tenant": "acme", "scopes": ["read"]},
    "acme-worker": {"tenant": "acme", "scopes": ["work"]},
    "acme-img": {"tenant": "acme", "scopes": ["work"], "queues": ["images"]},
    "umbrella-app": {"tenant": "umbrella", "scopes": ["produce", "work"]},
    "ops": {"tenant": "ops", "scopes": ["admin"]},
}


def api_keys() -> list[dict]:
    keys = []
    for name, spec in KEYS.items():
        key = f"{name}-0123456789abcdef"
        if name == "acme-dash":  # only its digest in the configuration
            keys.append({"key_sha256": hashlib.sha256(key.encode()).hexdigest(), **spec})
        else:
            keys.append({"key": key, **spec})
    return keys


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}-0123456789abcdef"}


@pytest.fixture
async def secured(api_factory):
    from app.config import ApiKey

    return await api_factory(api_keys=[ApiKey(**k) for k in api_keys()])


async def create(api, who: str, body: dict, expect: int = 201) -> dict:
    r = await api.post("/v1/batches", body, headers=as_(who))
    assert r.status_code == expect, r.text
    return r.json()


async def claim(api, who: str, queue: str = "default", max: int = 10) -> list[dict]:
    r = await api.post(f"/v1/queues/{queue}/claim", {"max": max, "wait_s": 0.3}, headers=as_(who))
    assert r.status_code == 200, r.text
    return r.json()["messages"]


async def test_no_key_or_an_unknown_key_is_401_with_www_authenticate(secured):
    for headers in ({}, {"Authorization": "Bearer not-a-key-of-this-api"}, {"Authorization": "Basic eDp5"}):
        r = await secured.post("/v1/batches", {"jobs": ["A"]}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert (await secured.get("/v1/batches")).status_code == 401
    # Health, readiness and metrics stay open.
    for url in ("/healthz", "/readyz", "/metrics"):
        assert (await secured.get(url)).status_code == 200


async def test_scopes_decide_what_a_key_may_do(secured):
    batch = await create(secured, "acme-app", {"jobs": ["A"]})
    assert batch["tenant"] == "acme"
    # read: reads, but does not write.
    assert (await secured.get(f"/v1/batches/{batch['id']}", headers=as_("acme-dash"))).status_code == 200
    r = await secured.post(f"/v1/batches/{batch['id']}/cancel", headers=as_("acme-dash"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden" and "produce" in r.json()["error"]["message"]
    await create(secured, "acme-dash", {"jobs": ["A"]}, expect=403)
    # work: works, but neither reads batches nor creates them.
    assert (await secured.get(f"/v1/batches/{batch['id']}", headers=as_("acme-worker"))).status_code == 403
    await create(secured, "acme-worker", {"jobs": ["A"]}, expect=403)
    (msg,) = await claim(secured, "acme-worker")
    # produce: no work.
    r = await secured.post("/v1/queues/default/claim", {"max": 1}, headers=as_("acme-app"))
    assert r.status_code == 403
    r = await secured.post(f"/v1/jobs/{msg['job_id']}/complete", {"attempt": 1, "lease": msg["lease"]}, headers=as_("acme-app"))
    assert r.status_code == 403
    r = await secured.post(f"/v1/jobs/{msg['job_id']}/complete", {"attempt": 1, "lease": msg["lease"]}, headers=as_("acme-worker"))
    assert r.status_code == 200
    me = (await secured.get("/v1/me", headers=as_("acme-app"))).json()
    assert me == {"tenant": "acme", "scopes": ["produce", "read"], "queues": None}


async def test_another_tenants_batch_is_not_found_anywhere(secured):
    mine = await create(secured, "acme-app", {"jobs": ["A", "B"], "on_event": {"url": "http://127.0.0.1:9/x"}})
    theirs = await create(secured, "umbrella-app", {"jobs": ["C"]})
    bid = mine["id"]
    job = f"{bid}.0"
    for method, url, body in [
        ("GET", f"/v1/batches/{bid}", None),
        ("GET", f"/v1/batches/{bid}/progress", None),
        ("GET", f"/v1/batches/{bid}/jobs", None),
        ("GET", f"/v1/batches/{bid}/jobs/{job}", None),
        ("GET", f"/v1/batches/{bid}/results", None),
        ("GET", f"/v1/batches/{bid}/events?stream=false", None),
        ("GET", f"/v1/batches/{bid}/events", None),
        ("GET", f"/v1/batches/{bid}/callbacks", None),
        ("POST", f"/v1/batches/{bid}/jobs", {"jobs": ["X"]}),
        ("POST", f"/v1/batches/{bid}/cancel", None),
        ("POST", f"/v1/batches/{bid}/retry", None),
        ("POST", f"/v1/batches/{bid}/jobs/retry", {"job_ids": [job]}),
    ]:
        r = await secured.client.request(method, url, json=body, headers=as_("umbrella-app"))
        assert r.status_code == 404, (url, r.text)
    listed = (await secured.get("/v1/batches", headers=as_("umbrella-app"))).json()["batches"]
    assert [b["id"] for b in listed] == [theirs["id"]]
    # The admin sees every tenant.
    listed = (await secured.get("/v1/batches", headers=as_("ops"))).json()["batches"]
    assert {b["id"] for b in listed} == {bid, theirs["id"]}
    # The owner still can.
    assert (await secured.get(f"/v1/batches/{bid}", headers=as_("acme-dash"))).status_code == 200


async def test_queues_are_per_tenant(secured):
    acme = await create(secured, "acme-app", {"jobs": ["A", "B"], "queue": "shared"})
    umbrella = await create(secured, "umbrella-app", {"jobs": ["C"], "queue": "shared"})
    got = await claim(secured, "umbrella-app", "shared")
    assert [m["batch_id"] for m in got] == [umbrella["id"]]
    got = await claim(secured, "acme-worker", "shared")
    assert {m["batch_id"] for m in got} == {acme["id"]} and len(got) == 2
    # A worker of one tenant cannot report, start or heartbeat another tenant's job.
    m = got[0]
    for url, body in [
        (f"/v1/jobs/{m['job_id']}/complete", {"attempt": 1, "lease": m["lease"]}),
        (f"/v1/jobs/{m['job_id']}/heartbeat", {"attempt": 1, "lease": m["lease"]}),
        (f"/v1/jobs/{m['job_id']}/start", {"attempt": 1}),
    ]:
        assert (await secured.post(url, body, headers=as_("umbrella-app"))).status_code == 404
    queues = {q["name"]: q for q in (await secured.get("/v1/queues", headers=as_("acme-dash"))).json()["queues"]}
    assert queues["shared"]["running"] == 2  # acme's two, not umbrella's


async def test_a_work_key_may_be_limited_to_some_queues(secured):
    batch = await create(secured, "acme-app", {"jobs": ["A", {"name": "Thumb", "queue": "images"}]})
    assert (await secured.post("/v1/queues/default/claim", {"max": 1}, headers=as_("acme-img"))).status_code == 403
    (img,) = await claim(secured, "acme-img", "images")
    (other,) = await claim(secured, "acme-worker", "default")
    r = await secured.post(f"/v1/jobs/{other['job_id']}/complete", {"attempt": 1, "lease": other["lease"]}, headers=as_("acme-img"))
    assert r.status_code == 403
    r = await secured.post(
        "/v1/reports",
        {"reports": [{"job_id": j["job_id"], "attempt": 1, "lease": j["lease"], "outcome": "completed"} for j in (img, other)]},
        headers=as_("acme-img"),
    )
    assert [x["status_code"] for x in r.json()["results"]] == [200, 403]
    assert (await secured.get(f"/v1/batches/{batch['id']}", headers=as_("acme-dash"))).json()["completed"] == 1
    me = (await secured.get("/v1/me", headers=as_("acme-img"))).json()
    assert me["queues"] == ["images"] and me["scopes"] == ["work"]


@pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True)
async def test_direct_stream_readers_read_their_tenants_streams(secured):
    acme = await create(secured, "acme-app", {"jobs": ["A"], "queue": "shared"})
    await create(secured, "umbrella-app", {"jobs": ["B"], "queue": "shared"})
    r = await secured.get("/v1/queues/shared/streams", headers=as_("acme-worker"))
    (stream,) = r.json()["streams"]
    assert "acme" in stream
    redis = redis_client(secured.backend)
    try:
        entries = []
        for _ in range(200):  # the relay publishes within moments
            entries = await redis.xrange(stream)
            if entries:
                break
            await asyncio.sleep(0.05)
        assert [json.loads(e[1]["m"])["batch_id"] for e in entries] == [acme["id"]]
    finally:
        await redis.aclose()


async def test_the_old_single_token_is_a_key_with_every_scope(api_factory):
    api = await api_factory(api_token="s3cret-token-0123456789")
    assert (await api.post("/v1/batches", {"jobs": ["A"]})).status_code == 401
    auth = {"Authorization": "Bearer s3cret-token-0123456789"}
    assert (await api.post("/v1/batches", {"jobs": ["A"]}, headers=auth)).status_code == 201
    assert (await api.post("/v1/queues/default/claim", {"max": 1, "wait_s": 1}, headers=auth)).status_code == 200
    assert (await api.get("/v1/me", headers=auth)).json()["scopes"] == ["admin", "produce", "read", "work"]


async def test_the_contract_is_public_by_default_and_for_key_holders_when_closed(api_factory):
    from app.config import ApiKey

    api = await api_factory(api_keys=[ApiKey(key="k-0123456789abcdef", scopes=["read"])], public_docs=False)
    assert (await api.get("/openapi.json")).status_code == 401
    assert (await api.get("/openapi.json", headers={"Authorization": "Bearer k-0123456789abcdef"})).status_code == 200
    assert (await api.get("/docs")).status_code == 404
    open_api = await api_factory()
    assert (await open_api.get("/openapi.json")).status_code == 200
    spec = (await open_api.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_a_report_must_carry_the_live_attempts_lease(api):
    batch = await api.create({"jobs": ["A"]})
    (msg,) = await api.claim_until(1)
    url = f"/v1/jobs/{msg['job_id']}"
    r = await api.post(f"{url}/complete", {"attempt": 1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "lease"
    r = await api.post(f"{url}/heartbeat", {"attempt": 1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "lease"
    r = await api.post("/v1/reports", {"reports": [{"job_id": msg["job_id"], "attempt": 1, "outcome": "completed"}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "reports[0].lease"
    for body in ({"attempt": 1, "lease": "0" * 32}, {"attempt": 1, "lease": msg["lease"][:-1] + "x"}):
        assert (await api.post(f"{url}/complete", body)).status_code == 409
        assert (await api.post(f"{url}/fail", {**body, "error": "x"})).status_code == 409
        assert (await api.post(f"{url}/heartbeat", body)).status_code == 409
    after = await api.batch(batch["id"])
    assert (after["running"], after["completed"], after["failed"]) == (1, 0, 0)  # nothing changed
    await api.complete(msg)
    assert (await api.batch(batch["id"]))["status"] == "completed"

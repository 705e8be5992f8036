"""Values exactly as sent, bounded input, one error shape, idempotent creation (issue 8)."""
from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from app.main import create_app

DEEP = {
    "keep": None,
    "nested": {"z": None, "f": False, "zero": 0, "empty": "", "list": [], "obj": {}, "deeper": [None, [None, {}], {"n": None}]},
    "big": 2**60 + 1,
    "float": 0.1,
    "neg": -0.0,
    "unicode": "naïve — ✓",
}


async def nothing_written(api) -> None:
    assert (await api.get("/v1/batches")).json()["batches"] == []


async def test_values_arrive_exactly_as_sent(api):
    batch = await api.create(
        {"type": "chain", "jobs": [{"name": "A", "args": DEEP}, "B"], "context": {"c": None, "d": {"e": None}}}
    )
    (a,) = await api.claim_until(1)
    assert {k: a["args"][k] for k in DEEP} == DEEP
    assert a["context"] == {"c": None, "d": {"e": None}}
    # A context update that sets a key to null sets it to null; a null result is a result.
    await api.complete(a, result=DEEP, context={"c": 1, "d": None, "new": None})
    (b,) = await api.claim_until(1)
    assert b["context"] == {"c": 1, "d": None, "new": None}
    await api.complete(b, result=None)
    results = (await api.get(f"/v1/batches/{batch['id']}/results")).json()
    assert results["results"] == {a["job_id"]: DEEP, b["job_id"]: None}
    assert results["context"] == {"c": 1, "d": None, "new": None}
    job = (await api.get(f"/v1/batches/{batch['id']}/jobs/{a['job_id']}")).json()
    assert job["args"] == DEEP and job["result"] == DEEP


async def test_items_and_added_jobs_keep_their_values(api):
    items = [None, False, 0, "", [], {}, {"k": None}]
    batch = await api.create({"job": "Item", "items": items})
    added = await api.post(f"/v1/batches/{batch['id']}/jobs", {"jobs": [{"name": "More", "args": {"x": None, "y": [None]}}]})
    assert added.status_code == 201, added.text
    msgs = sorted(await api.claim_until(len(items) + 1), key=lambda m: m["position"])
    assert [m["args"]["item"] for m in msgs[:-1]] == items
    assert msgs[-1]["args"]["x"] is None and msgs[-1]["args"]["y"] == [None]


@pytest.mark.parametrize(
    "raw, field",
    [
        (b'{"jobs": [{"name": "A", "args": {"x": NaN}}]}', "jobs[0].args.x"),
        (b'{"jobs": ["A"], "context": {"deep": [1, {"y": Infinity}]}}', "context.deep[1].y"),
        (b'{"jobs": ["A"], "context": {"n": -Infinity}}', "context.n"),
        (b'{"jobs": ["A"], "context": {"huge": 1e400}}', "context.huge"),
        (b'{"jobs": [{"name": "A", "args": {"s": "a\\u0000b"}}]}', "jobs[0].args.s"),
        (b'{"jobs": [{"name": "A", "args": {"k\\u0000": 1}}]}', "jobs[0].args"),
        (b'{"jobs": ["A\\u0000"]}', "jobs[0]"),
    ],
)
async def test_values_json_cannot_hold_are_422_naming_the_place(api, raw, field):
    r = await api.post("/v1/batches", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == {**r.json()["error"], "code": "validation_error", "field": field}
    await nothing_written(api)


async def test_reports_holding_values_json_cannot_hold_are_refused(api):
    batch = await api.create({"jobs": ["A"]})
    (m,) = await api.claim_until(1)
    body = b'{"attempt": 1, "lease": "%s", "result": {"r": NaN}}' % m["lease"].encode()
    r = await api.post(f"/v1/jobs/{m['job_id']}/complete", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "result.r"
    assert (await api.batch(batch["id"]))["running"] == 1


@pytest.mark.parametrize(
    "raw, status, code",
    [
        (b"{not json", 400, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
        (b'{"jobs": ["A"], "context": {"n": ' + b"9" * 5000 + b"}}", 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_json"),
        (b"[1, 2]", 422, "validation_error"),
    ],
)
async def test_bodies_that_cannot_be_read_are_400(api, raw, status, code):
    r = await api.post("/v1/batches", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    await nothing_written(api)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"jobs": ["A"], "max_concurrency": 2**63}, "max_concurrency"),
        ({"jobs": ["A"], "max_concurrency": 2**31}, "max_concurrency"),
        ({"jobs": ["A"], "max_concurrency": "3"}, "max_concurrency"),
        ({"jobs": ["A"], "max_attempts": 101}, "max_attempts"),
        ({"jobs": ["A"], "max_attempts": 2.0}, "max_attempts"),
        ({"jobs": ["A"], "timeout_s": 1e-300}, "timeout_s"),
        ({"jobs": ["A"], "timeout_s": 86401}, "timeout_s"),
        ({"jobs": [{"name": "A", "timeout_s": 0}]}, "jobs[0].timeout_s"),
        ({"jobs": [{"name": "A", "max_attempts": 10**30}]}, "jobs[0].max_attempts"),
        ({"jobs": ["A"], "failure_policy": "sometimes"}, "failure_policy"),
        ({"jobs": ["A"], "on_event": {"url": "http://example.com/h", "events": ["nope"]}}, "on_event.events[0]"),
        ({"jobs": ["A"], "type": 1}, "type"),
        ({"jobs": ["A"], "extra": 1}, "extra"),
    ],
)
async def test_numbers_and_names_out_of_range_are_422_naming_the_field(api, body, field):
    r = await api.post("/v1/batches", body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field and r.json()["error"]["code"] == "validation_error"
    await nothing_written(api)


async def test_query_and_report_numbers_are_bounded(api):
    batch = await api.create({"jobs": ["A"]})
    bid = batch["id"]
    for url, field in [
        (f"/v1/batches/{bid}/jobs?offset={2**63}", "offset"),
        (f"/v1/batches/{bid}/jobs?limit=0", "limit"),
        (f"/v1/batches/{bid}/jobs?limit=1001", "limit"),
        (f"/v1/batches/{bid}/jobs?status=bogus", "status"),
        (f"/v1/batches/{bid}/jobs?kind=bogus", "kind"),
        (f"/v1/batches/{bid}/events?stream=false&after={10**20}", "after"),
        ("/v1/batches?status=bogus", "status"),
        ("/v1/batches?limit=501", "limit"),
    ]:
        r = await api.get(url)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (url, r.text)
    for value in ("x", str(10**20)):
        r = await api.get(f"/v1/batches/{bid}/events?stream=false", headers={"Last-Event-ID": value})
        assert r.status_code == 422 and r.json()["error"]["field"] == "Last-Event-ID", r.text
    (m,) = await api.claim_until(1)
    for attempt in (10**30, 0, "1"):
        r = await api.post(f"/v1/jobs/{m['job_id']}/complete", {"attempt": attempt, "lease": m["lease"]})
        assert r.status_code == 422 and r.json()["error"]["field"] == "attempt", r.text
    r = await api.post("/v1/queues/default/claim", {"max": 1, "wait_s": 31})
    assert r.status_code == 422 and r.json()["error"]["field"] == "wait_s"
    assert (await api.batch(bid))["running"] == 1


async def test_a_body_over_the_limit_is_413_and_never_read(api_factory):
    api = await api_factory(max_body_bytes=4096)
    big = {"jobs": ["A"], "context": {"blob": "x" * 5000}}
    r = await api.post("/v1/batches", big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", r.text

    async def chunks():  # no Content-Length: the limit holds while reading
        yield b'{"jobs": ["A"], "context": {"blob": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}'

    r = await api.post("/v1/batches", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", r.text
    await nothing_written(api)
    assert (await api.post("/v1/batches", {"jobs": ["A"]})).status_code == 201


async def test_adding_jobs_past_the_batch_limit_is_refused(api_factory):
    api = await api_factory(max_batch_jobs=5)
    batch = await api.create({"jobs": ["A"] * 4})
    r = await api.post(f"/v1/batches/{batch['id']}/jobs", {"jobs": ["B", "C"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "jobs"
    assert (await api.batch(batch["id"]))["total"] == 4
    r = await api.post("/v1/batches", {"jobs": ["A"] * 6})
    assert r.status_code == 422 and r.json()["error"]["field"] == "jobs"


async def test_every_error_has_the_one_shape(api):
    def shaped(r: httpx.Response, status: int, code: str) -> None:
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code and isinstance(err["message"], str) and err["message"]

    shaped(await api.get("/v1/nowhere"), 404, "not_found")
    r = await api.client.delete("/v1/batches")
    shaped(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"] and "POST" in r.headers["allow"]
    shaped(await api.post("/v1/batches", content=b"jobs=A", headers={"content-type": "application/x-www-form-urlencoded"}),
           415, "unsupported_media_type")  # fmt: skip
    shaped(await api.post("/v1/batches", content=b'{"jobs": ["A"]}', headers={"content-type": "text/plain"}), 415,
           "unsupported_media_type")  # fmt: skip
    batch = await api.create({"jobs": ["A"]})
    await api.post(f"/v1/batches/{batch['id']}/cancel")
    shaped(await api.post(f"/v1/batches/{batch['id']}/cancel"), 409, "conflict")
    shaped(await api.get("/v1/batches/nope/jobs/nope.1"), 404, "not_found")


async def test_an_unexpected_error_is_a_500_with_a_request_id_in_the_log(api, caplog, monkeypatch):
    async def broken(*_a, **_k):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(api.services.store, "get_batch", broken)
    caplog.set_level(logging.ERROR, logger="batchq.api")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app, raise_app_exceptions=False), base_url="http://batchq.test"
    ) as client:
        r = await client.get("/v1/batches/some-id")
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["code"] == "internal_error" and err["request_id"] in err["message"]
    assert "disk caught fire" not in r.text  # no internals leak to the client
    (record,) = [rec for rec in caplog.records if err["request_id"] in rec.getMessage()]
    assert record.exc_info and "disk caught fire" in str(record.exc_info[1])


async def test_the_same_idempotency_key_creates_one_batch(api):
    body = {"jobs": ["A", "B"], "context": {"order": 1}}
    key = {"Idempotency-Key": "order-1-create"}
    first = await api.post("/v1/batches", body, headers=key)
    again = await api.post("/v1/batches", {"context": {"order": 1}, "jobs": ["A", "B"]}, headers=key)  # same, reordered
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    other = await api.post("/v1/batches", {**body, "context": {"order": 2}}, headers=key)
    assert other.status_code == 422 and other.json()["error"]["field"] == "Idempotency-Key"
    assert [b["id"] for b in (await api.get("/v1/batches")).json()["batches"]] == [first.json()["id"]]
    # Another key is another batch; a refused request leaves its key free.
    assert (await api.post("/v1/batches", body, headers={"Idempotency-Key": "order-2"})).json()["id"] != first.json()["id"]
    bad = await api.post("/v1/batches", {"jobs": []}, headers={"Idempotency-Key": "order-3"})
    assert bad.status_code == 422
    assert (await api.post("/v1/batches", body, headers={"Idempotency-Key": "order-3"})).status_code == 201


async def test_one_idempotency_key_sent_at_once_to_two_api_processes_creates_one_batch(api):
    other = create_app(api.settings)
    async with other.router.lifespan_context(other):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://other") as client2:
            body = {"jobs": ["A"], "context": {"n": 7}}
            key = {"Idempotency-Key": "race-1"}
            replies = await asyncio.gather(
                *[(api.client if i % 2 else client2).post("/v1/batches", json=body, headers=key) for i in range(10)]
            )
    assert {r.status_code for r in replies} == {201}
    assert len({r.json()["id"] for r in replies}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in replies) == 1
    assert len((await api.get("/v1/batches")).json()["batches"]) == 1


async def test_adding_jobs_with_an_idempotency_key_adds_them_once(api):
    batch = await api.create({"jobs": ["A"]})
    url = f"/v1/batches/{batch['id']}/jobs"
    key = {"Idempotency-Key": "add-1"}
    first = await api.post(url, {"jobs": ["B", "C"]}, headers=key)
    again = await api.post(url, {"jobs": ["B", "C"]}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["job_ids"] == first.json()["job_ids"] and again.headers["idempotent-replayed"] == "true"
    assert (await api.batch(batch["id"]))["total"] == 3
    r = await api.post(url, {"jobs": ["D"]}, headers=key)
    assert r.status_code == 422 and r.json()["error"]["field"] == "Idempotency-Key"
    r = await api.post("/v1/batches", {"jobs": ["A"]}, headers={"Idempotency-Key": "bad key with spaces"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "Idempotency-Key"

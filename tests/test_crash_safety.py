"""A crash anywhere between broker and store loses nothing and doubles nothing."""
from __future__ import annotations

import asyncio

import pytest

from conftest import BACKENDS, STREAM_BACKENDS


async def test_message_fetched_by_a_process_that_died_is_delivered_again(api_factory):
    api = await api_factory(claim_timeout_s=0.3)
    batch = await api.create({"jobs": ["Survivor"]})
    # An API process fetches the message from the broker and dies before starting it.
    fetched = []
    for _ in range(50):
        fetched = await api.services.broker.fetch("default", "default", 10, 0.1, "crashed-process")
        if fetched:
            break
    assert len(fetched) == 1
    # After the claim timeout the message is visible again and runs normally.
    (msg,) = await api.claim_until(1, timeout=10)
    assert msg["job_id"] == fetched[0].message["job_id"] and msg["attempt"] == 1
    await api.complete(msg)
    assert (await api.batch(batch["id"]))["status"] == "completed"


async def test_duplicate_delivery_of_one_attempt_runs_once(api):
    batch = await api.create({"jobs": ["Once"]})
    (msg,) = await api.claim_until(1)
    # The same attempt delivered again (e.g. a relay that published twice) is refused at start.
    r = await api.post(f"/v1/jobs/{msg['job_id']}/start", {"attempt": msg["attempt"]})
    assert r.status_code == 409
    await api.complete(msg)
    assert (await api.batch(batch["id"]))["completed"] == 1


async def test_state_survives_an_api_restart(api):
    """Everything is in the store: a new API process carries on where the old one stopped."""
    from app.main import create_app
    import httpx

    batch = await api.create({"type": "chain", "jobs": ["One", "Two"]})
    (one,) = await api.claim_until(1)
    fresh = create_app(api.settings)
    async with fresh.router.lifespan_context(fresh):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fresh), base_url="http://fresh") as c:
            r = await c.post(f"/v1/jobs/{one['job_id']}/complete", json={"attempt": 1, "lease": one["lease"], "context": {"a": 1}})
            assert r.status_code == 200
            msgs = []
            for _ in range(100):
                r = await c.post("/v1/queues/default/claim", json={"max": 1, "wait_s": 0.1})
                msgs = r.json()["messages"]
                if msgs:
                    break
            assert msgs and msgs[0]["name"] == "Two" and msgs[0]["context"] == {"a": 1}
            r = await c.post(f"/v1/jobs/{msgs[0]['job_id']}/complete", json={"attempt": 1, "lease": msgs[0]["lease"]})
            assert r.status_code == 200
    await asyncio.sleep(0)
    assert (await api.batch(batch["id"]))["status"] == "completed"


@pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True)
async def test_stream_long_polls_outlast_the_redis_socket_timeout(api):
    # Longer than redis-py's 5 s socket timeout: the claim loops over short blocks.
    assert await api.claim(max=1, wait_s=6) == []
    # A wait that rounds to 0 ms must not become BLOCK 0 ("forever").
    assert await api.services.broker.fetch("default", "default", 1, 0.0004, "probe") == []


async def test_starting_many_deliveries_reports_each_refusal(api):
    await api.create({"jobs": ["A", "B"]})
    (a,) = await api.claim_until(1)  # A is started (running); B is still queued
    jobs = await api.jobs(a["batch_id"])
    b_id = next(j["id"] for j in jobs if j["name"] == "B")
    r = await api.post(
        "/v1/starts",
        {"attempts": [{"job_id": b_id, "attempt": 1}, {"job_id": a["job_id"], "attempt": 1},
                      {"job_id": "00000000-0000-0000-0000-000000000000.0", "attempt": 1}], "worker": "w1"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["job_id"] for m in body["messages"]] == [b_id] and body["messages"][0]["lease"]
    assert [(x["job_id"], x["status_code"]) for x in body["refused"]] == [
        (a["job_id"], 409), ("00000000-0000-0000-0000-000000000000.0", 404)]


@pytest.mark.parametrize("backend", [b for b in ("sqlite", "pg-sql", "pg-redis") if b in BACKENDS], indirect=True)
async def test_sql_retention_removes_finished_batches_and_all_they_own(api_factory):
    from sqlalchemy import func, select

    from app.store import sql_schema as t

    api = await api_factory(sql_retention_s=0.3)
    done = await api.create({"jobs": ["A"], "on_complete": {"job": {"name": "Report"}}})
    running = await api.create({"jobs": ["B"], "queue": "other"})
    (a,) = await api.claim_until(1)
    await api.complete(a)
    for _ in range(200):
        if (await api.get(f"/v1/batches/{done['id']}")).status_code == 404:
            break
        await asyncio.sleep(0.05)
    assert (await api.get(f"/v1/batches/{done['id']}")).status_code == 404
    assert (await api.batch(running["id"]))["status"] == "running"  # unfinished batches stay
    async with api.services.store.engine.connect() as conn:
        for table in (t.jobs, t.attempts, t.events, t.webhooks):
            n = (await conn.execute(select(func.count()).select_from(table).where(table.c.batch_id == done["id"]))).scalar()
            assert n == 0, table.name


@pytest.mark.parametrize("backend", [b for b in ("pg-redis",) if b in BACKENDS], indirect=True)
async def test_outbox_rows_of_a_process_that_died_before_relaying_are_published_by_another(api_factory):
    """The message is committed with the batch; whichever process relays next publishes it."""
    import httpx

    from app.main import create_app

    dead = await api_factory(background=False)  # no relay runs in this process
    batch = await dead.create({"jobs": ["Kept"]})
    assert await dead.claim(max=1, wait_s=0.3) == []  # nothing reached the stream
    survivor = create_app(dead.settings.model_copy(update={"background": True}))
    async with survivor.router.lifespan_context(survivor):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=survivor), base_url="http://s") as c:
            msgs = []
            for _ in range(50):
                msgs = (await c.post("/v1/queues/default/claim", json={"max": 1, "wait_s": 0.2})).json()["messages"]
                if msgs:
                    break
            assert msgs and msgs[0]["batch_id"] == batch["id"]
            assert (await c.post(f"/v1/jobs/{msgs[0]['job_id']}/complete", json={"attempt": 1, "lease": msgs[0]["lease"]})).status_code == 200
    assert (await dead.batch(batch["id"]))["status"] == "completed"


async def test_a_start_whose_answer_was_lost_is_handed_out_again_by_its_delivery(api):
    await api.create({"jobs": ["A"]})
    (queued,) = [j for j in await api.jobs((await api.get("/v1/batches")).json()["batches"][0]["id"])]
    item = {"job_id": queued["id"], "attempt": 1, "delivery": "default/1700000000000-0"}
    first = (await api.post("/v1/starts", {"attempts": [item], "worker": "w-1"})).json()
    again = (await api.post("/v1/starts", {"attempts": [item], "worker": "w-1"})).json()
    assert first["messages"] and again["messages"] and not again["refused"]
    assert again["messages"][0]["lease"] == first["messages"][0]["lease"]
    other = (await api.post("/v1/starts", {"attempts": [{**item, "delivery": "default/1700000000001-0"}]})).json()
    assert other["messages"] == [] and other["refused"][0]["status_code"] == 409  # a duplicate message is refused
    # The same entry read again by another worker (its consumer group made anew) is refused while
    # the first one may still run it; once the entry could have been taken over, it is handed out.
    copy = (await api.post("/v1/starts", {"attempts": [item], "worker": "w-2"})).json()
    assert copy["messages"] == [] and copy["refused"][0]["status_code"] == 409, copy
    api.advance(api.settings.claim_timeout_s + 1)
    taken_over = (await api.post("/v1/starts", {"attempts": [item], "worker": "w-2"})).json()
    assert taken_over["messages"][0]["lease"] == first["messages"][0]["lease"], taken_over
    await api.complete(first["messages"][0])


async def test_a_process_that_started_a_claim_and_died_before_answering_strands_nothing(api_factory):
    api = await api_factory(claim_timeout_s=1)
    batch = await api.create({"jobs": ["Kept"]})
    # A process takes the message and starts its attempt, then dies before it answers or acks.
    fetched = []
    for _ in range(100):
        fetched = await api.services.broker.fetch("default", "default", 10, 0.1, "died")
        if fetched:
            break
    d = fetched[0]
    started, _ = await api.services.orchestrator.start_many(
        None, [(d.message["job_id"], d.message["attempt"], d.id)], "lost-worker"
    )
    assert (await api.batch(batch["id"]))["running"] == 1
    # The message is delivered again; its start hands out the lease the dead process made.
    api.advance(2)
    (msg,) = await api.claim_until(1, timeout=20)
    assert msg["lease"] == started[0]["lease"]
    await api.complete(msg)
    assert (await api.batch(batch["id"]))["status"] == "completed"

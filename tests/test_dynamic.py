"""Dynamic job addition, progressive batches, named queues and live events (issue 4)."""
from __future__ import annotations

import json

import pytest


async def test_chain_appends_added_jobs_after_its_tail_with_accumulated_context(api):
    batch = await api.create({"type": "chain", "jobs": ["First", "Second"]})
    (first,) = await api.claim_until(1)
    r = await api.post(f"/v1/batches/{batch['id']}/jobs", {"jobs": ["Third", {"name": "Fourth", "args": {"n": 4}}]})
    assert r.status_code == 201, r.text
    assert r.json()["batch"]["total"] == 4 and r.json()["job_ids"] == [f"{batch['id']}.2", f"{batch['id']}.3"]
    assert await api.claim() == []  # still one step at a time
    await api.complete(first, context={"from_first": 1})
    names = []
    for i in range(3):
        (m,) = await api.claim_until(1)
        names.append(m["name"])
        await api.complete(m, result=m["name"], context={f"k{i}": i})
    assert names == ["Second", "Third", "Fourth"]
    final = await api.batch(batch["id"])
    assert final["status"] == "completed" and final["total"] == 4 and final["percentage"] == 100.0
    assert final["context"] == {"from_first": 1, "k0": 0, "k1": 1, "k2": 2}


async def test_chain_added_job_sees_context_as_it_stands_when_it_starts(api):
    batch = await api.create({"type": "chain", "jobs": ["Grow"]})
    (m,) = await api.claim_until(1)
    await api.post(f"/v1/batches/{batch['id']}/jobs", {"jobs": ["Grown"]})
    await api.complete(m, context={"size": 2})
    (grown,) = await api.claim_until(1)
    assert grown["context"] == {"size": 2} and grown["args"]["size"] == 2


async def test_chain_of_one_job_grows_to_three_at_run_time(api):
    batch = await api.create({"type": "chain", "jobs": ["Seed"]})
    results = []
    for i in range(3):
        (m,) = await api.claim_until(1)
        if i < 2:  # each job adds the next one from inside the run
            r = await api.post(f"/v1/batches/{batch['id']}/jobs", {"jobs": [{"name": f"Grown{i}", "args": {"i": i}}]})
            assert r.status_code == 201
        await api.complete(m, result=i)
        results.append(m["name"])
    assert results == ["Seed", "Grown0", "Grown1"]
    final = await api.batch(batch["id"])
    assert final["status"] == "completed" and final["total"] == 3
    assert sorted((await api.get(f"/v1/batches/{batch['id']}/results")).json()["results"].values()) == [0, 1, 2]


async def test_parallel_added_jobs_dispatch_at_once_and_batch_waits_for_them(api):
    batch = await api.create({"jobs": ["A"]})
    (a,) = await api.claim_until(1)
    r = await api.post(f"/v1/batches/{batch['id']}/jobs", {"jobs": [["B", "UndoB"], "C"]})
    assert r.status_code == 201
    added = await api.claim_until(2)
    assert {m["name"] for m in added} == {"B", "C"}
    await api.complete(a)
    mid = await api.batch(batch["id"])
    assert mid["status"] == "running" and mid["total"] == 3 and mid["percentage"] == pytest.approx(33.33)
    for m in added:
        await api.complete(m)
    assert (await api.batch(batch["id"]))["status"] == "completed"


async def test_adding_to_a_finished_batch_is_409_naming_its_status(api):
    batch = await api.create({"jobs": ["A"]})
    (a,) = await api.claim_until(1)
    await api.complete(a)
    r = await api.post(f"/v1/batches/{batch['id']}/jobs", {"jobs": ["Late"]})
    assert r.status_code == 409 and "completed" in r.json()["error"]["message"]
    cancelled = await api.create({"jobs": ["A"]})
    await api.post(f"/v1/batches/{cancelled['id']}/cancel")
    r = await api.post(f"/v1/batches/{cancelled['id']}/jobs", {"jobs": ["Late"]})
    assert r.status_code == 409 and "cancelled" in r.json()["error"]["message"]
    r = await api.post(f"/v1/batches/{batch['id']}/jobs", {"jobs": []})
    assert r.status_code == 422 and r.json()["error"]["field"] == "jobs"
    r = await api.post("/v1/batches/00000000-0000-0000-0000-000000000000/jobs", {"jobs": ["X"]})
    assert r.status_code == 404


ITEMS = [None, False, 0, "", [], {}, "last"]


async def test_progressive_batch_keeps_n_in_flight_and_treats_every_item_as_a_value(api):
    batch = await api.create({"type": "parallel", "job": "Import", "items": ITEMS, "max_concurrency": 2})
    assert batch["total"] == len(ITEMS) and batch["queued"] == 2
    seen = []
    while True:
        msgs = await api.claim(max=10, wait_s=0.3)
        if not msgs:
            break
        assert len(msgs) <= 2
        progress = await api.batch(batch["id"])
        assert progress["queued"] + progress["running"] <= 2
        for m in msgs:
            seen.append(m["args"]["item"])
            assert "item" in m["args"]
            await api.complete(m, result={"item": m["args"]["item"]})
    assert seen == ITEMS  # every value, in order, nulls and falsy ones included
    final = await api.batch(batch["id"])
    assert final["status"] == "completed" and final["completed"] == len(ITEMS)
    results = (await api.get(f"/v1/batches/{batch['id']}/results")).json()["results"]
    assert sorted(json.dumps(r["item"]) for r in results.values()) == sorted(json.dumps(i) for i in ITEMS)


async def test_progressive_one_at_a_time(api):
    batch = await api.create({"job": "Step", "items": [1, 2, 3], "max_concurrency": 1})
    order = []
    for _ in range(3):
        msgs = await api.claim_until(1)
        assert await api.claim() == []
        order.append(msgs[0]["args"]["item"])
        await api.complete(msgs[0])
    assert order == [1, 2, 3]
    assert (await api.batch(batch["id"]))["status"] == "completed"


async def test_progressive_cancel_stops_feeding_and_retry_respects_the_limit(api):
    batch = await api.create(
        {"job": "Work", "items": list(range(6)), "max_concurrency": 2, "failure_policy": "allow_failures"}
    )
    first = await api.claim_until(2)
    for m in first:
        await api.fail(m, "bad")
    second = await api.claim_until(2)
    for m in second:
        await api.complete(m)
    # Retry the two failed ones while two others are in flight: the limit still holds.
    third = await api.claim_until(2)
    r = await api.post(f"/v1/batches/{batch['id']}/retry")
    assert r.status_code == 200
    assert (lambda b: b["queued"] + b["running"])(await api.batch(batch["id"])) == 2
    assert await api.claim() == []
    r = await api.post(f"/v1/batches/{batch['id']}/cancel")
    assert r.status_code == 200
    for m in third:
        await api.complete(m, expect=409)
    assert await api.claim(max=10, wait_s=0.2) == []
    final = await api.batch(batch["id"])
    assert final["status"] == "cancelled" and final["completed"] == 2


async def test_named_queue_routes_jobs_and_per_job_queue_overrides(api):
    batch = await api.create({"jobs": ["A", {"name": "B", "queue": "gpu"}], "queue": "imports"})
    assert batch["queue"] == "imports"
    assert await api.claim("default") == []
    (a,) = await api.claim_until(1, queue="imports")
    (b,) = await api.claim_until(1, queue="gpu")
    assert (a["name"], a["queue"], b["name"], b["queue"]) == ("A", "imports", "B", "gpu")


async def test_queue_listing_shows_depth_in_flight_and_age(api):
    await api.create({"jobs": ["A", "B", "C"], "queue": "reports"})
    (m,) = await api.claim_until(1, queue="reports")
    import asyncio

    await asyncio.sleep(0.3)  # let a relay publish and age accumulate
    queues = {q["name"]: q for q in (await api.get("/v1/queues")).json()["queues"]}
    reports = queues["reports"]
    assert reports["running"] == 1 and reports["queued"] == 2
    assert reports["depth"] == 2 and reports["oldest_age_s"] > 0
    metrics = (await api.get("/metrics")).text
    assert 'batchq_queue_depth{queue="reports"} 2' in metrics
    await api.complete(m)


async def test_declared_queues_defaults_and_undeclared_refused_when_configured(api_factory):
    api = await api_factory(
        queues={"critical": {"visibility_timeout_s": 5, "max_attempts": 4}}, allow_undeclared_queues=False
    )
    batch = await api.create({"jobs": ["A"], "queue": "critical"})
    (m,) = await api.claim_until(1, queue="critical")
    assert m["max_attempts"] == 4 and m["timeout_s"] == 5
    r = await api.post("/v1/batches", {"jobs": ["A"], "queue": "elsewhere"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "queue" and "elsewhere" in r.json()["error"]["message"]
    r = await api.post("/v1/batches", {"jobs": ["A", {"name": "B", "queue": "nope"}], "queue": "critical"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "jobs[1].queue"
    assert [b["id"] for b in (await api.get("/v1/batches")).json()["batches"]] == [batch["id"]]
    r = await api.post("/v1/batches", {"jobs": ["A"]})  # "default" is always served
    assert r.status_code == 201
    queues = {q["name"]: q for q in (await api.get("/v1/queues")).json()["queues"]}
    assert queues["critical"]["declared"] is True


def _parse_sse(text: str) -> list[dict]:
    events = []
    for frame in text.split("\n\n"):
        fields = {}
        for line in frame.splitlines():
            if line and not line.startswith(":") and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        if "data" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


async def test_events_stream_history_progress_steps_and_last_event_id(api):
    batch = await api.create({"jobs": ["J"] * 20, "failure_policy": "allow_failures"})
    msgs = await api.claim_until(20)
    await api.fail(msgs[0], "bad row", retryable=False)
    for m in msgs[1:]:
        await api.complete(m)
    r = await api.get(f"/v1/batches/{batch['id']}/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _parse_sse(r.text)
    types = [e["event"] for e in events]
    assert types[0] == "started" and types[-1] == "completed_with_failures"
    failed = next(e for e in events if e["event"] == "job_failed")["data"]["data"]
    assert failed["job_id"] == msgs[0]["job_id"] and failed["name"] == "J" and failed["error"] == "bad row"
    assert "args" in failed
    steps = [e["data"]["data"]["percentage"] for e in events if e["event"] == "progress"]
    assert steps == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    # A client that reconnects with Last-Event-ID gets only what came after.
    cut = events[5]["id"]
    r = await api.get(f"/v1/batches/{batch['id']}/events", headers={"Last-Event-ID": str(cut)})
    later = _parse_sse(r.text)
    assert [e["id"] for e in later] == [e["id"] for e in events if e["id"] > cut]


async def test_progress_is_announced_again_after_a_one_job_batch_is_retried(api):
    batch = await api.create({"jobs": ["Only"]})
    (m,) = await api.claim_until(1)
    await api.fail(m, "first try")
    assert (await api.post(f"/v1/batches/{batch['id']}/retry")).status_code == 200
    (m2,) = await api.claim_until(1)
    await api.complete(m2)
    events = (await api.get(f"/v1/batches/{batch['id']}/events", params={"stream": "false"})).json()["events"]
    assert [e["type"] for e in events] == ["started", "job_failed", "progress", "failed", "retried", "progress", "completed"]
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert [(p["percentage"], p["failed"], p["completed"]) for p in progress] == [(100.0, 1, 0), (100.0, 0, 1)]


async def test_events_stream_follows_a_running_batch_live(api):
    import asyncio

    batch = await api.create({"jobs": ["A", "B"]})

    async def work():
        await asyncio.sleep(0.2)
        for m in await api.claim_until(2):
            await asyncio.sleep(0.1)
            await api.complete(m)

    task = asyncio.create_task(work())
    seen = []
    async with api.client.stream("GET", f"/v1/batches/{batch['id']}/events") as response:
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk
            seen = _parse_sse(buffer)
            if seen and seen[-1]["event"] == "completed":
                break
    await task
    assert [e["event"] for e in seen] == ["started", "progress", "progress", "completed"]


async def test_metrics_count_deliveries_reports_and_expired_leases(api):
    await api.create({"jobs": ["A", "B", {"name": "C", "timeout_s": 5}], "failure_policy": "allow_failures"})
    msgs = {m["name"]: m for m in await api.claim_until(3)}
    await api.complete(msgs["A"])
    await api.complete(msgs["A"])  # a duplicate
    await api.fail(msgs["B"], "x")
    api.advance(6)  # C's lease runs out
    await api.wait_status(msgs["C"]["batch_id"], "completed_with_failures")
    text = (await api.get("/metrics")).text
    assert 'batchq_batches_created_total{type="parallel"} 1' in text
    assert "batchq_messages_delivered_total 3" in text
    assert 'batchq_reports_total{outcome="completed",result="completed"} 1' in text
    assert 'batchq_reports_total{outcome="completed",result="duplicate"} 1' in text
    assert 'batchq_reports_total{outcome="failed",result="failed"} 1' in text
    assert "batchq_leases_expired_total 1" in text


async def test_many_streams_of_one_batch_share_each_read_of_the_store(api):
    """Streams of one batch woken by the same news read the store once between them, and an
    idle stream does not read it at all (its keep-alives are not reads)."""
    import asyncio

    store = api.services.store
    reads = 0
    real_events_after = store.events_after

    async def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal reads
        reads += 1
        return await real_events_after(*args, **kwargs)

    store.events_after = counted
    batch = await api.create({"jobs": ["A", "B"]})
    followers = 30
    seen: list[list[str]] = [[] for _ in range(followers)]

    async def follow(i: int) -> None:
        async with api.client.stream("GET", f"/v1/batches/{batch['id']}/events") as response:
            buffer = ""
            async for chunk in response.aiter_text():
                buffer += chunk
                seen[i] = [e["event"] for e in _parse_sse(buffer)]
                if seen[i] and seen[i][-1] == "completed":
                    return

    streams = [asyncio.create_task(follow(i)) for i in range(followers)]
    # (The in-process transport hands a response over when it ends: wait on the hub instead.)
    hub = api.services.events
    deadline = asyncio.get_running_loop().time() + 30
    while (watch := hub._watches.get(batch["id"])) is None or watch.followers < followers:
        assert asyncio.get_running_loop().time() < deadline, "the streams did not start"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    before = reads
    for m in await api.claim_until(2):
        await api.complete(m)
    await asyncio.wait_for(asyncio.gather(*streams), 30)
    assert all(s == ["started", "progress", "progress", "completed"] for s in seen), seen
    # Two reports are at most a few pieces of news, each read once for all 30 streams.
    assert reads - before <= 6, reads - before

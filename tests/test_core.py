"""Parallel batches, chains, results, progress and the delivery contract (issue 2)."""
from __future__ import annotations

import asyncio

import pytest


async def test_parallel_batch_runs_all_jobs_with_merged_args(api):
    batch = await api.create(
        {
            "type": "parallel",
            "jobs": ["Ping", {"name": "Resize", "args": {"size": 2, "shared": "mine"}}, {"name": "Resize", "args": {"size": 3}}],
            "context": {"shared": "ctx", "tenant": "acme"},
        }
    )
    assert batch["status"] == "running" and batch["total"] == 3 and batch["queued"] == 3 and batch["waiting"] == 0
    msgs = await api.claim_until(3)
    by_pos = {m["position"]: m for m in msgs}
    assert by_pos[0]["name"] == "Ping"
    assert by_pos[0]["args"] == {"shared": "ctx", "tenant": "acme", "batch_id": batch["id"], "job_position": 0}
    # A job's own args win over the shared context.
    assert by_pos[1]["args"]["shared"] == "mine" and by_pos[1]["args"]["size"] == 2
    assert by_pos[2]["args"]["shared"] == "ctx" and by_pos[2]["args"]["tenant"] == "acme"
    for m in msgs:
        assert m["batch_id"] == batch["id"] and m["attempt"] == 1 and m["lease"]
    for m in msgs[:2]:
        await api.complete(m, result={"pos": m["position"]})
    mid = await api.batch(batch["id"])
    assert (mid["status"], mid["completed"], mid["running"]) == ("running", 2, 1)
    await api.complete(msgs[2], result=None)
    done = await api.batch(batch["id"])
    assert done["status"] == "completed" and done["percentage"] == 100.0 and done["finished_at"]


async def test_chain_accumulates_context_step_by_step(api):
    batch = await api.create({"type": "chain", "jobs": ["StepA", "StepB", "StepC"], "context": {"order": 42}})
    seen = []
    for i, key in enumerate(["a", "b", "c"]):
        (msg,) = await api.claim_until(1)
        assert msg["position"] == i
        # Only one step at a time.
        assert await api.claim(max=10) == []
        seen.append(msg)
        await api.complete(msg, result=i, context={key: i})
    assert seen[2]["context"] == {"order": 42, "a": 0, "b": 1}
    assert seen[2]["args"]["a"] == 0 and seen[2]["args"]["b"] == 1
    final = await api.batch(batch["id"])
    assert final["status"] == "completed"
    assert final["context"] == {"order": 42, "a": 0, "b": 1, "c": 2}


async def test_chains_endpoint_is_sugar_for_type_chain(api):
    r = await api.post("/v1/chains", {"jobs": ["One", "Two"]})
    assert r.status_code == 201, r.text
    assert r.json()["type"] == "chain" and r.json()["queued"] == 1 and r.json()["waiting"] == 1


async def test_results_per_job_and_per_batch_including_null(api):
    batch = await api.create({"jobs": ["A", "B", "C"]})
    msgs = await api.claim_until(3)
    values = {0: {"x": [1, 2]}, 1: None, 2: "text"}
    for m in msgs:
        await api.complete(m, result=values[m["position"]])
    r = await api.get(f"/v1/batches/{batch['id']}/results")
    results = r.json()["results"]
    assert len(results) == 3
    by_job = {m["job_id"]: values[m["position"]] for m in msgs}
    assert results == by_job
    null_job = next(m["job_id"] for m in msgs if m["position"] == 1)
    one = (await api.get(f"/v1/batches/{batch['id']}/jobs/{null_job}")).json()
    assert "result" in one and one["result"] is None and one["status"] == "completed"
    assert one["attempt_history"][0]["status"] == "completed"


async def test_progress_counts_and_percentage(api):
    batch = await api.create({"jobs": ["J"] * 4, "failure_policy": "allow_failures"})
    msgs = await api.claim_until(4)
    await api.complete(msgs[0])
    await api.fail(msgs[1], "bad input")
    p = (await api.get(f"/v1/batches/{batch['id']}/progress")).json()
    assert p == {
        **p,
        "status": "running",
        "type": "parallel",
        "total": 4,
        "completed": 1,
        "failed": 1,
        "running": 2,
        "queued": 0,
        "waiting": 0,
        "percentage": 50.0,
    }
    await api.complete(msgs[2])
    await api.complete(msgs[3])
    assert (await api.batch(batch["id"]))["status"] == "completed_with_failures"


async def test_repeated_report_is_a_noop_and_stale_attempt_is_409(api):
    batch = await api.create({"jobs": ["A", "B"], "failure_policy": "allow_failures"})
    a, b = await api.claim_until(2)
    first = await api.complete(a, result=1)
    again = await api.complete(a, result=2)
    assert first["duplicate"] is False and again["duplicate"] is True
    assert (await api.batch(batch["id"]))["completed"] == 1
    job = (await api.get(f"/v1/batches/{batch['id']}/jobs/{a['job_id']}")).json()
    assert job["result"] == 1  # the repeat changed nothing
    # A fail for an attempt that completed, an unknown attempt, a wrong lease: all 409.
    await api.fail(a, "late", expect=409)
    await api.complete({**b, "attempt": 7}, expect=409)
    r = await api.post(f"/v1/jobs/{b['job_id']}/complete", {"attempt": b["attempt"], "lease": "not-the-lease"})
    assert r.status_code == 409
    await api.fail(b, "x")
    await api.fail(b, "x")  # repeated fail: no-op
    assert (await api.batch(batch["id"]))["failed"] == 1
    r = await api.post("/v1/jobs/00000000-0000-0000-0000-000000000000.0/complete", {"attempt": 1, "lease": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_failed_attempts_are_retried_with_backoff_up_to_max_attempts(api):
    batch = await api.create({"jobs": [{"name": "Flaky", "max_attempts": 3}]})
    attempts = []
    for _ in range(3):
        (msg,) = await api.claim_until(1)
        attempts.append(msg["attempt"])
        await api.fail(msg, f"failure {msg['attempt']}")
    assert attempts == [1, 2, 3]
    final = await api.batch(batch["id"])
    assert final["status"] == "failed" and final["failed"] == 1
    job = (await api.jobs(batch["id"]))[0]
    assert job["attempts"] == 3 and job["error"] == "failure 3"
    history = (await api.get(f"/v1/batches/{batch['id']}/jobs/{job['id']}")).json()["attempt_history"]
    assert [h["status"] for h in history] == ["failed", "failed", "failed"]
    # Backoff: each retry was queued no earlier than the previous failure.
    assert history[1]["queued_at"] >= history[0]["finished_at"]


async def test_not_retryable_failure_skips_remaining_attempts(api):
    batch = await api.create({"jobs": [{"name": "Strict", "max_attempts": 5}]})
    (msg,) = await api.claim_until(1)
    await api.fail(msg, "invalid card", retryable=False)
    assert (await api.batch(batch["id"]))["status"] == "failed"
    assert (await api.jobs(batch["id"]))[0]["attempts"] == 1


async def test_expired_lease_delivers_the_job_again(api_factory):
    api = await api_factory()
    batch = await api.create({"jobs": [{"name": "Slow", "max_attempts": 2, "timeout_s": 30}]})
    (first,) = await api.claim_until(1)
    # The worker "dies": no report. Once its lease has run out, the reaper expires it and
    # the job comes back.
    api.advance(31)
    await api.reap()
    (second,) = await api.claim_until(1, timeout=10)
    assert second["job_id"] == first["job_id"] and second["attempt"] == 2
    # The dead worker's late report is refused; the live one's is taken.
    await api.complete(first, expect=409)
    await api.complete(second, result="ok")
    assert (await api.batch(batch["id"]))["status"] == "completed"
    history = (await api.get(f"/v1/batches/{batch['id']}/jobs/{first['job_id']}")).json()["attempt_history"]
    assert [h["status"] for h in history] == ["expired", "completed"]


async def test_heartbeat_extends_the_lease(api):
    batch = await api.create(
        {"jobs": [{"name": "Long", "timeout_s": 30}, {"name": "Idle", "timeout_s": 30}], "failure_policy": "allow_failures"}
    )
    msg, idle = sorted(await api.claim_until(2), key=lambda m: m["position"])
    for _ in range(3):  # 60 s of work, a heartbeat every 20 s
        api.advance(20)
        r = await api.post(f"/v1/jobs/{msg['job_id']}/heartbeat", {"attempt": 1, "lease": msg["lease"]})
        assert r.status_code == 200, r.text
        assert r.json()["lease_expires_at"] > msg["lease_expires_at"]
        await api.reap()
    # The job that sent no heartbeat lost its lease; the other kept it.
    await api.complete(idle, expect=409)
    await api.complete(msg)
    assert (await api.batch(batch["id"]))["status"] == "completed_with_failures"
    assert (await api.jobs(batch["id"]))[0]["attempts"] == 1


async def test_long_poll_claim_waits_for_a_message(api):
    async def later():
        await asyncio.sleep(0.3)
        await api.create({"jobs": ["Late"]})

    task = asyncio.create_task(later())
    msgs = await api.claim(max=1, wait_s=5)
    await task
    assert len(msgs) == 1 and msgs[0]["name"] == "Late"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"type": "parallel", "jobs": []}, "jobs"),
        ({"type": "nope", "jobs": ["A"]}, "type"),
        ({"jobs": [{"name": "A", "args": [1, 2]}]}, "jobs[0].args"),
        ({"jobs": ["A"], "context": "x"}, "context"),
        ({"jobs": [""]}, "jobs[0]"),
        ({"jobs": ["A", {"name": "   "}]}, "jobs[1].name"),
        ({"jobs": [{"name": 5}]}, "jobs[0].name"),
        ({"jobs": ["A"], "queue": "bad queue!"}, "queue"),
        ({}, "jobs"),
        ({"job": "Import"}, "items"),
        ({"jobs": [{"name": "A", "max_attempts": 0}]}, "jobs[0].max_attempts"),
        ({"type": "chain", "jobs": ["A"], "max_concurrency": 2}, "max_concurrency"),
        ({"jobs": ["A"], "max_concurrency": 0}, "max_concurrency"),
        ({"items": [1, 2]}, "job"),
    ],
)
async def test_invalid_definitions_are_422_naming_the_field_and_write_nothing(api, body, field):
    r = await api.post("/v1/batches", body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["field"] == field, err
    assert field.split("[")[0] in err["message"]
    listed = (await api.get("/v1/batches")).json()["batches"]
    assert listed == []


async def test_unknown_ids_are_404_with_one_error_shape(api):
    for url in ["/v1/batches/nope", "/v1/batches/nope/progress", "/v1/batches/nope/results", "/v1/batches/nope/jobs"]:
        r = await api.get(url)
        assert r.status_code == 404 and set(r.json()["error"]) >= {"code", "message"}
    r = await api.post("/v1/batches", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json" and r.json()["error"]["field"] == "body"


async def test_list_batches_filters_and_paginates(api):
    ids = [(await api.create({"jobs": ["A"], "queue": q}))["id"] for q in ["q1", "q2", "q1"]]
    page1 = (await api.get("/v1/batches", params={"limit": 2})).json()
    assert [b["id"] for b in page1["batches"]] == [ids[2], ids[1]] and page1["next"] == ids[1]
    page2 = (await api.get("/v1/batches", params={"limit": 2, "before": page1["next"]})).json()
    assert [b["id"] for b in page2["batches"]] == [ids[0]]
    q1 = (await api.get("/v1/batches", params={"queue": "q1"})).json()["batches"]
    assert {b["id"] for b in q1} == {ids[0], ids[2]}
    chain = (await api.post("/v1/chains", {"jobs": ["A"], "queue": "q1"})).json()["id"]
    chains = (await api.get("/v1/batches", params={"type": "chain"})).json()["batches"]
    assert [b["id"] for b in chains] == [chain]
    parallel = (await api.get("/v1/batches", params={"type": "parallel", "queue": "q1", "limit": 1})).json()
    assert [b["id"] for b in parallel["batches"]] == [ids[2]]
    older = (await api.get("/v1/batches", params={"type": "parallel", "queue": "q1", "before": parallel["next"]})).json()
    assert [b["id"] for b in older["batches"]] == [ids[0]]
    assert (await api.get("/v1/batches", params={"type": "dag"})).json()["error"]["field"] == "type"
    assert (await api.get("/v1/batches", params={"status": "bogus"})).status_code == 422


async def test_many_reports_in_one_call_each_with_its_own_outcome(api):
    batch = await api.create({"jobs": ["A", "B", "C", "D"], "failure_policy": "allow_failures"})
    a, b, c, d = sorted(await api.claim_until(4), key=lambda m: m["position"])
    await api.complete(d)
    r = await api.post(
        "/v1/reports",
        {
            "reports": [
                {"job_id": a["job_id"], "attempt": 1, "lease": a["lease"], "outcome": "completed", "result": {"a": 1}},
                {"job_id": b["job_id"], "attempt": 1, "lease": b["lease"], "outcome": "failed", "error": "bad", "retryable": False},
                {"job_id": c["job_id"], "attempt": 5, "lease": c["lease"], "outcome": "completed"},
                {"job_id": d["job_id"], "attempt": 1, "lease": d["lease"], "outcome": "completed"},
                {"job_id": "00000000-0000-0000-0000-000000000000.0", "attempt": 1, "lease": "x", "outcome": "completed"},
                {"job_id": a["job_id"], "attempt": 1, "lease": a["lease"], "outcome": "completed", "result": {"a": 2}},
            ]
        },
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status_code"] for x in results] == [200, 200, 409, 200, 404, 200]
    assert results[3]["duplicate"] is True and results[5]["duplicate"] is True
    assert results[1]["status"] == "failed"
    mid = await api.batch(batch["id"])
    assert (mid["completed"], mid["failed"], mid["total"] - mid["completed"] - mid["failed"]) == (2, 1, 1)
    assert (await api.get(f"/v1/batches/{batch['id']}/jobs/{a['job_id']}")).json()["result"] == {"a": 1}
    await api.complete(c)
    assert (await api.batch(batch["id"]))["status"] == "completed_with_failures"
    bad = await api.post("/v1/reports", {"reports": [{"job_id": a["job_id"], "attempt": 1, "outcome": "failed"}]})
    assert bad.status_code == 422 and bad.json()["error"]["field"].startswith("reports[0]")


async def test_retry_backoff_delays_the_next_attempt_on_the_server_clock(api_factory):
    api = await api_factory(retry_backoff_base_s=100, retry_backoff_max_s=250)
    batch = await api.create({"jobs": [{"name": "Flaky", "max_attempts": 4}]})
    (msg,) = await api.claim_until(1)
    # The real clock moves on too: each check keeps a margin of 30 s of it either side.
    for attempt, delay in [(2, 100), (3, 200), (4, 250)]:  # base, doubled, capped
        await api.fail(msg, f"failure {attempt - 1}")
        assert await api.claim(max=1, wait_s=0.3) == []  # not at once
        api.advance(delay - 30)
        assert await api.claim(max=1, wait_s=0.3) == []  # nor before its backoff has passed
        api.advance(60)
        (msg,) = await api.claim_until(1)
        assert msg["attempt"] == attempt
    await api.complete(msg)
    events = (await api.get(f"/v1/batches/{batch['id']}/events", params={"stream": "false"})).json()["events"]
    assert [e["data"]["delay_s"] for e in events if e["type"] == "job_retrying"] == [100, 200, 250]
    history = (await api.get(f"/v1/batches/{batch['id']}/jobs/{msg['job_id']}")).json()["attempt_history"]
    assert [h["status"] for h in history] == ["failed", "failed", "failed", "completed"]
    assert (await api.batch(batch["id"]))["status"] == "completed"


async def test_a_creation_that_breaks_off_midway_leaves_nothing(api):
    """Creation is atomic: jobs and messages written in bulk before the request broke off are
    gone with it (on PostgreSQL the bulk COPY once committed on its own, and a worker started
    jobs of a batch that did not exist)."""
    import uuid

    import pytest

    from app.domain.definitions import JobSpec
    from app.domain.models import Callbacks
    from app.domain.states import BatchType
    from app.services.engine import CHUNK

    batch_id = str(uuid.uuid4())

    def specs():  # noqa: ANN202
        for i in range(CHUNK + 10):  # a first chunk is written before the break
            yield JobSpec(name="A", args={"i": i})
        raise RuntimeError("the request broke off")

    with pytest.raises(RuntimeError):
        await api.services.orchestrator.create_batch(
            tenant="default", type_=BatchType.PARALLEL, specs=specs(), context={}, queue=None,
            failure_policy=None, max_concurrency=None, callbacks=Callbacks(), defaults={},
            count=CHUNK + 20, batch_id=batch_id,
        )  # fmt: skip
    assert (await api.get(f"/v1/batches/{batch_id}")).status_code == 404
    assert await api.services.store.list_jobs(batch_id, None, None, 10, 0) == []
    assert await api.claim(max=10, wait_s=0.5) == []

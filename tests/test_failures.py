"""Compensation, failure policies, cancel and retry (issue 3)."""
from __future__ import annotations

import pytest


async def _events(api, batch_id: str, type_: str | None = None) -> list[dict]:  # noqa: ANN001
    r = await api.get(f"/v1/batches/{batch_id}/events", params={"stream": "false"})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["events"] if type_ in (None, e["type"])]


async def test_parallel_failed_job_runs_its_compensation(api):
    batch = await api.create(
        {
            "jobs": [
                ["ChargeCard", "RefundCard"],
                {"name": "Reserve", "args": {"sku": "x"}, "compensation": {"name": "Release", "args": {"why": "undo"}}},
                "Notify",
            ],
            "context": {"order": 7},
            "failure_policy": "allow_failures",
        }
    )
    msgs = {m["name"]: m for m in await api.claim_until(3)}
    await api.complete(msgs["ChargeCard"])
    await api.fail(msgs["Reserve"], "out of stock")
    (comp,) = await api.claim_until(1)
    assert comp["name"] == "Release" and comp["kind"] == "compensation"
    # The compensation runs beside Notify: the batch is still running, not compensating.
    mid = await api.batch(batch["id"])
    assert (mid["status"], mid["running"], mid["compensations"]["open"]) == ("running", 1, 1)
    info = comp["args"]["_compensation"]
    assert info["batch_id"] == batch["id"]
    assert info["original_job_id"] == msgs["Reserve"]["job_id"]
    assert info["original_job_name"] == "Reserve"
    assert info["error"] == "out of stock"
    assert info["context"] == {"order": 7}
    assert comp["args"]["why"] == "undo"
    # The batch waits for the compensation too.
    await api.complete(msgs["Notify"])
    assert (await api.batch(batch["id"]))["status"] == "compensating"  # only the compensation is left
    assert [e["data"] for e in await _events(api, batch["id"], "status")] == [{"status": "compensating"}]
    await api.complete(comp)
    final = await api.batch(batch["id"])
    assert final["status"] == "completed_with_failures"
    assert final["compensations"] == {"open": 0, "completed": 1, "failed": 0, "cancelled": 0}
    assert final["completed"] == 2 and final["failed"] == 1


async def test_chain_failure_compensates_completed_steps_in_reverse(api):
    batch = await api.create(
        {
            "type": "chain",
            "jobs": [["Book", "Unbook"], ["Pay", "Refund"], "Log", ["Ship", "Unship"], ["Email", "Unemail"]],
            "context": {"trip": 1},
        }
    )
    steps = {}
    for name, ctx in [("Book", {"booking": "B1"}), ("Pay", {"payment": "P1"}), ("Log", None)]:
        (m,) = await api.claim_until(1)
        assert m["name"] == name
        steps[name] = m
        await api.complete(m, context=ctx)
    (ship,) = await api.claim_until(1)
    await api.fail(ship, "carrier down")
    assert (await api.batch(batch["id"]))["status"] == "compensating"
    order = []
    for _ in range(2):
        (comp,) = await api.claim_until(1)
        assert await api.claim() == []  # one compensation at a time
        order.append(comp)
        await api.complete(comp)
    assert [c["name"] for c in order] == ["Refund", "Unbook"]  # reverse order of completion
    refund = order[0]["args"]["_compensation"]
    assert refund["original_job_id"] == steps["Pay"]["job_id"] and refund["error"] == "carrier down"
    # The context as it stood when Pay ran (after Book, before Pay's own update).
    assert refund["context"] == {"trip": 1, "booking": "B1"}
    final = await api.batch(batch["id"])
    assert final["status"] == "failed" and final["cancelled"] == 1 and final["failed"] == 1
    assert final["error"]["job_id"] == ship["job_id"]
    email = [j for j in await api.jobs(batch["id"]) if j["name"] == "Email"][0]
    assert email["status"] == "cancelled"
    assert await api.claim() == []  # the failed step's own compensation (Unship) does not run


async def test_failing_compensation_is_retried_recorded_and_does_not_block_the_rest(api):
    batch = await api.create(
        {
            "type": "chain",
            "jobs": [
                {"name": "A", "compensation": "UndoA"},
                {"name": "B", "compensation": {"name": "UndoB", "max_attempts": 2}},
                "C",
            ],
        }
    )
    for _ in range(2):
        (m,) = await api.claim_until(1)
        await api.complete(m)
    (c,) = await api.claim_until(1)
    await api.fail(c, "nope")
    (undo_b,) = await api.claim_until(1)
    assert undo_b["name"] == "UndoB" and undo_b["max_attempts"] == 2
    await api.fail(undo_b, "refund api down")
    (undo_b2,) = await api.claim_until(1)
    assert undo_b2["name"] == "UndoB" and undo_b2["attempt"] == 2
    await api.fail(undo_b2, "refund api still down")
    (undo_a,) = await api.claim_until(1)
    assert undo_a["name"] == "UndoA"
    await api.complete(undo_a)
    final = await api.batch(batch["id"])
    assert final["status"] == "failed"
    assert final["compensations"] == {"open": 0, "completed": 1, "failed": 1, "cancelled": 0}
    comps = await api.jobs(batch["id"], kind="compensation")
    assert {(j["name"], j["status"]) for j in comps} == {("UndoB", "failed"), ("UndoA", "completed")}
    undo_b_job = next(j for j in comps if j["name"] == "UndoB")
    assert undo_b_job["error"] == "refund api still down" and undo_b_job["attempts"] == 2


async def test_fail_fast_cancels_jobs_not_yet_started(api):
    batch = await api.create({"jobs": ["A", "B", "C", "D"], "max_concurrency": 2})
    a, b = await api.claim_until(2)
    await api.fail(a, "bad")
    # B is still running; C and D were never dispatched and never will be.
    mid = await api.batch(batch["id"])
    assert mid["status"] == "running" and mid["cancelled"] == 2 and mid["error"]["job_id"] == a["job_id"]
    await api.complete(b)
    assert await api.claim() == []
    final = await api.batch(batch["id"])
    assert (final["status"], final["completed"], final["failed"], final["cancelled"]) == ("failed", 1, 1, 2)


async def test_fail_fast_drops_queued_messages(api):
    batch = await api.create({"jobs": ["A", "B", "C"]})
    (a,) = await api.claim_until(1)
    await api.fail(a, "bad")
    # B and C were queued before the failure: a worker claiming now gets nothing.
    assert await api.claim(max=10, wait_s=0.3) == []
    final = await api.batch(batch["id"])
    assert (final["status"], final["failed"], final["cancelled"]) == ("failed", 1, 2)


async def test_allow_failures_runs_everything_and_reports_counts(api):
    batch = await api.create({"jobs": ["A", "B", "C"], "failure_policy": "allow_failures"})
    msgs = await api.claim_until(3)
    await api.fail(msgs[0], "e1")
    await api.fail(msgs[1], "e2")
    await api.complete(msgs[2])
    final = await api.batch(batch["id"])
    assert (final["status"], final["completed"], final["failed"]) == ("completed_with_failures", 1, 2)


async def test_cancel_stops_dispatch_and_refuses_reports(api):
    batch = await api.create({"jobs": ["A", "B", "C", "D"], "max_concurrency": 2})
    a, b = await api.claim_until(2)
    r = await api.post(f"/v1/batches/{batch['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["cancelled"] == 4
    await api.complete(a, expect=409)
    r = await api.post(f"/v1/jobs/{b['job_id']}/heartbeat", {"attempt": b["attempt"], "lease": b["lease"]})
    assert r.status_code == 409
    assert await api.claim(max=10, wait_s=0.2) == []
    again = await api.post(f"/v1/batches/{batch['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]["message"]
    unknown = await api.post("/v1/batches/00000000-0000-0000-0000-000000000000/cancel")
    assert unknown.status_code == 404


async def test_cancel_drops_messages_already_queued(api):
    batch = await api.create({"jobs": ["A", "B"]})
    await api.post(f"/v1/batches/{batch['id']}/cancel")
    assert await api.claim(max=10, wait_s=0.3) == []
    assert (await api.batch(batch["id"]))["status"] == "cancelled"


async def test_failed_jobs_list_has_details(api):
    batch = await api.create(
        {"jobs": [{"name": "A", "args": {"n": 1}}, "B"], "failure_policy": "allow_failures"}
    )
    msgs = {m["name"]: m for m in await api.claim_until(2)}
    await api.fail(msgs["A"], "exploded")
    await api.complete(msgs["B"])
    failed = await api.jobs(batch["id"], status="failed")
    assert len(failed) == 1
    job = failed[0]
    assert job["id"] == msgs["A"]["job_id"] and job["name"] == "A" and job["args"] == {"n": 1}
    assert job["error"] == "exploded" and job["attempts"] == 1 and job["status"] == "failed" and job["finished_at"]


async def test_retry_all_failed_jobs_brings_a_failed_batch_to_completed(api):
    batch = await api.create({"jobs": ["A", "B", "C"], "max_concurrency": 2})
    msgs = {m["name"]: m for m in await api.claim_until(2)}
    await api.complete(msgs["A"])
    await api.fail(msgs["B"], "transient")
    # C had not started, so fail-fast cancelled it.
    assert (await api.batch(batch["id"]))["status"] == "failed"
    r = await api.post(f"/v1/batches/{batch['id']}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["retried"] == 1
    running = r.json()["batch"]
    assert running["status"] == "running" and running["failed"] == 0 and running["cancelled"] == 0
    again = await api.claim_until(2)
    assert {m["name"] for m in again} == {"B", "C"}
    b = next(m for m in again if m["name"] == "B")
    assert b["attempt"] == 2
    for m in again:
        await api.complete(m)
    final = await api.batch(batch["id"])
    assert (final["status"], final["completed"], final["failed"]) == ("completed", 3, 0)


@pytest.mark.parametrize("limit", [None, 1], ids=["all-at-once", "one-at-a-time"])
async def test_retry_all_gives_failed_and_cancelled_jobs_a_fresh_budget(api, limit):  # noqa: ANN001
    """Without a concurrency limit the SQL store revives and dispatches in one pass; with one,
    the revived jobs wait for their slots. Either way: the next attempt number, a fresh
    attempt budget, no error left, the waiting one dispatched when a slot frees."""
    spec: dict = {"jobs": [{"name": "A", "max_attempts": 2}, "B"]}
    if limit:
        spec["max_concurrency"] = limit
    batch = await api.create(spec)
    (a,) = await api.claim_until(1)  # the lowest position first: A
    assert a["name"] == "A"
    await api.fail(a, "gone", retryable=False)  # fail-fast: B, not started, is cancelled
    failed = await api.batch(batch["id"])
    assert (failed["status"], failed["failed"], failed["cancelled"]) == ("failed", 1, 1), failed
    r = await api.post(f"/v1/batches/{batch['id']}/retry")
    assert r.status_code == 200, r.text
    jobs = {j["name"]: j for j in await api.jobs(batch["id"])}
    assert jobs["A"]["status"] == "queued" and jobs["A"]["attempts"] == 2 and jobs["A"]["error"] is None, jobs["A"]
    assert jobs["A"]["finished_at"] is None
    assert jobs["B"]["status"] == ("waiting" if limit else "queued"), jobs["B"]
    # A's budget of two attempts starts again: a failure of attempt 2 is tried once more.
    claimed = {m["name"]: m for m in await api.claim_until(1 if limit else 2)}
    again = claimed["A"]
    assert again["attempt"] == 2
    await api.fail(again, "still gone")
    detail = (await api.get(f"/v1/batches/{batch['id']}/jobs/{again['job_id']}")).json()
    assert (detail["status"], detail["attempts"], detail["error"]) == ("queued", 3, "still gone"), detail


async def test_retry_chosen_jobs_and_422_naming_bad_ids(api):
    batch = await api.create({"jobs": ["A", "B", "C"], "failure_policy": "allow_failures"})
    msgs = {m["name"]: m for m in await api.claim_until(3)}
    await api.fail(msgs["A"], "x")
    await api.fail(msgs["B"], "y")
    r = await api.post(f"/v1/batches/{batch['id']}/jobs/retry", {"job_ids": [msgs["A"]["job_id"], msgs["C"]["job_id"]]})
    # C is running, not failed: nothing is retried and the error names it.
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == "job_ids" and msgs["C"]["job_id"] in err["message"] and msgs["A"]["job_id"] not in err["message"]
    assert (await api.batch(batch["id"]))["failed"] == 2
    r = await api.post(f"/v1/batches/{batch['id']}/jobs/retry", {"job_ids": [msgs["A"]["job_id"]]})
    assert r.status_code == 200 and r.json()["retried"] == 1
    (a2,) = await api.claim_until(1)
    assert a2["job_id"] == msgs["A"]["job_id"] and a2["attempt"] == 2
    await api.complete(a2)
    await api.complete(msgs["C"])
    final = await api.batch(batch["id"])
    assert (final["status"], final["completed"], final["failed"]) == ("completed_with_failures", 2, 1)


async def test_retry_refused_for_cancelled_batch_and_batch_without_failures(api):
    batch = await api.create({"jobs": ["A"]})
    r = await api.post(f"/v1/batches/{batch['id']}/retry")
    assert r.status_code == 409
    await api.post(f"/v1/batches/{batch['id']}/cancel")
    r = await api.post(f"/v1/batches/{batch['id']}/retry")
    assert r.status_code == 409 and "cancelled" in r.json()["error"]["message"]


async def test_bad_compensation_and_callback_input_is_422(api):
    for body, field in [
        ({"jobs": [["A", ""]]}, "jobs[0][1]"),
        ({"jobs": [{"name": "A", "compensation": ""}]}, "jobs[0].compensation"),
        ({"jobs": [{"name": "A", "compensation": {"name": ""}}]}, "jobs[0].compensation.name"),
        ({"jobs": ["A"], "on_complete": {"url": "ftp://example.com/x"}}, "on_complete.url"),
        ({"jobs": ["A"], "on_failure": {}}, "on_failure"),
    ]:
        r = await api.post("/v1/batches", body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["field"].startswith(field), (body, r.json())
    assert (await api.get("/v1/batches")).json()["batches"] == []


async def test_fail_fast_does_not_retry_other_jobs_once_the_batch_is_failing(api):
    batch = await api.create({"jobs": [{"name": "A"}, {"name": "B", "max_attempts": 3}]})
    a, b = sorted(await api.claim_until(2), key=lambda m: m["position"])
    await api.fail(a, "fatal")
    await api.fail(b, "transient")  # would be retried, but the batch has already failed fast
    assert await api.claim(max=5, wait_s=0.3) == []
    final = await api.batch(batch["id"])
    assert (final["status"], final["failed"]) == ("failed", 2)


async def test_retrying_a_failed_chain_resumes_at_the_failed_step_with_its_context(api):
    batch = await api.create({"type": "chain", "jobs": ["A", "B", "C"]})
    (a,) = await api.claim_until(1)
    await api.complete(a, context={"from_a": 1})
    (b,) = await api.claim_until(1)
    await api.fail(b, "down")
    failed = await api.batch(batch["id"])
    assert (failed["status"], failed["failed"], failed["cancelled"]) == ("failed", 1, 1)
    r = await api.post(f"/v1/batches/{batch['id']}/retry")
    assert r.status_code == 200 and r.json()["batch"]["status"] == "running"
    (b2,) = await api.claim_until(1)
    assert (b2["name"], b2["attempt"], b2["context"]) == ("B", 2, {"from_a": 1})
    assert await api.claim() == []  # still one step at a time
    await api.complete(b2, context={"from_b": 2})
    (c,) = await api.claim_until(1)
    assert c["name"] == "C" and c["context"] == {"from_a": 1, "from_b": 2}
    await api.complete(c)
    final = await api.batch(batch["id"])
    assert (final["status"], final["completed"], final["failed"], final["cancelled"]) == ("completed", 3, 0, 0)


async def test_chain_compensates_three_or_more_steps_newest_first_and_says_it_is_compensating(api):
    batch = await api.create(
        {"type": "chain", "jobs": [["Book", "Unbook"], ["Pay", "Refund"], ["Ship", "Unship"], ["Email", "Unemail"], "Last"]}
    )
    steps = {}
    for name in ["Book", "Pay", "Ship", "Email"]:
        (m,) = await api.claim_until(1)
        assert m["name"] == name
        steps[name] = m
        await api.complete(m, context={name: True})
    (last,) = await api.claim_until(1)
    await api.fail(last, "no stock")
    assert (await api.batch(batch["id"]))["status"] == "compensating"
    # Entering compensating is announced as a status event, after the compensations are listed.
    types = [e["type"] for e in await _events(api, batch["id"])]
    assert types[-3:] == ["compensating", "progress", "status"]
    assert [e["data"] for e in await _events(api, batch["id"], "status")] == [{"status": "compensating"}]
    listed = (await _events(api, batch["id"], "compensating"))[0]["data"]["jobs"]
    assert [j["name"] for j in listed] == ["Unemail", "Unship", "Refund", "Unbook"]
    order = []
    for _ in range(4):
        (comp,) = await api.claim_until(1)
        assert await api.claim() == []  # one at a time
        order.append(comp)
        await api.complete(comp)
    assert [c["name"] for c in order] == ["Unemail", "Unship", "Refund", "Unbook"]
    originals = [c["args"]["_compensation"]["original_job_id"] for c in order]
    assert originals == [steps[n]["job_id"] for n in ["Email", "Ship", "Pay", "Book"]]
    final = await api.batch(batch["id"])
    assert final["status"] == "failed"
    assert final["compensations"] == {"open": 0, "completed": 4, "failed": 0, "cancelled": 0}


async def test_cancel_leaves_no_job_waiting_queued_or_running_and_the_counters_show_it(api):
    batch = await api.create(
        {
            "jobs": [["A", "UndoA"], ["B", "UndoB"], "C", "D", "E", "F", "G", "H"],
            "max_concurrency": 4,
            "failure_policy": "allow_failures",
        }
    )
    msgs = {m["name"]: m for m in await api.claim_until(4)}
    await api.fail(msgs["A"], "bad")  # UndoA is queued; a slot frees: E is queued
    await api.fail(msgs["B"], "bad")  # UndoB, F
    msgs.update({m["name"]: m for m in await api.claim_until(4)})
    await api.complete(msgs["UndoA"])
    await api.complete(msgs["E"])  # G is queued, H still waits
    mid = await api.batch(batch["id"])
    assert (mid["waiting"], mid["queued"], mid["running"], mid["compensations"]["open"]) == (1, 1, 3, 1)
    r = await api.post(f"/v1/batches/{batch['id']}/cancel")
    assert r.status_code == 200, r.text
    for view in (r.json(), await api.batch(batch["id"])):
        assert view["status"] == "cancelled" and view["finished_at"]
        assert (view["waiting"], view["queued"], view["running"]) == (0, 0, 0)
        assert (view["cancelled"], view["failed"], view["completed"], view["total"]) == (5, 2, 1, 8)
        assert view["compensations"] == {"open": 0, "completed": 1, "failed": 0, "cancelled": 1}
    for status in ("waiting", "queued", "running"):
        assert await api.jobs(batch["id"], status=status) == []
    statuses = {j["name"]: j["status"] for j in await api.jobs(batch["id"])}
    assert statuses == {
        "A": "failed", "B": "failed", "C": "cancelled", "D": "cancelled", "E": "completed", "F": "cancelled",
        "G": "cancelled", "H": "cancelled", "UndoA": "completed", "UndoB": "cancelled",
    }  # fmt: skip
    history = (await api.get(f"/v1/batches/{batch['id']}/jobs/{msgs['C']['job_id']}")).json()["attempt_history"]
    assert [h["status"] for h in history] == ["cancelled"]
    await api.complete(msgs["C"], expect=409)
    await api.complete(msgs["UndoB"], expect=409)
    assert await api.claim(max=10, wait_s=0.3) == []  # G's message was dropped


async def test_cancel_during_a_saga_cancels_its_open_compensations(api):
    batch = await api.create({"type": "chain", "jobs": [["A", "UndoA"], ["B", "UndoB"], ["C", "UndoC"], "D"]})
    for _ in range(3):
        (m,) = await api.claim_until(1)
        await api.complete(m)
    (d,) = await api.claim_until(1)
    await api.fail(d, "down")
    (undo_c,) = await api.claim_until(1)  # running; UndoB and UndoA wait their turn
    mid = await api.batch(batch["id"])
    assert (mid["status"], mid["compensations"]["open"]) == ("compensating", 3)
    r = await api.post(f"/v1/batches/{batch['id']}/cancel")
    assert r.status_code == 200, r.text
    final = await api.batch(batch["id"])
    assert final["status"] == "cancelled"
    assert final["compensations"] == {"open": 0, "completed": 0, "failed": 0, "cancelled": 3}
    comps = await api.jobs(batch["id"], kind="compensation")
    assert {j["name"]: j["status"] for j in comps} == {"UndoC": "cancelled", "UndoB": "cancelled", "UndoA": "cancelled"}
    await api.complete(undo_c, expect=409)
    assert await api.claim(max=10, wait_s=0.3) == []  # no further compensation starts


async def test_fail_fast_parallel_batch_compensates_then_waits_for_its_running_jobs(api):
    batch = await api.create({"jobs": [["A", "UndoA"], "B"]})
    msgs = {m["name"]: m for m in await api.claim_until(2)}
    await api.fail(msgs["A"], "bad")
    # Failing fast: only the undoing matters now, though B still runs.
    assert (await api.batch(batch["id"]))["status"] == "compensating"
    (undo,) = await api.claim_until(1)
    await api.complete(undo)
    mid = await api.batch(batch["id"])
    assert (mid["status"], mid["running"], mid["compensations"]["completed"]) == ("running", 1, 1)
    await api.complete(msgs["B"])
    final = await api.batch(batch["id"])
    assert (final["status"], final["completed"], final["failed"]) == ("failed", 1, 1)
    statuses = [e["data"]["status"] for e in await _events(api, batch["id"], "status")]
    assert statuses == ["compensating", "running"]


async def test_whole_batch_moves_span_many_chunks(api):
    """Fail-fast, retry-all and cancel of a batch bigger than a store's chunk (1,000 jobs on
    Redis) move every job, keep the counts exact and leave no message behind."""
    n = 2600
    batch = await api.create({"job": "Noop", "items": list(range(n)), "max_concurrency": 1500})
    running = await api.claim_until(3)
    await api.fail(running[0], "bad")  # 1,497 queued and 1,100 waiting are cancelled with it
    mid = await api.batch(batch["id"])
    assert (mid["failed"], mid["running"], mid["cancelled"], mid["queued"], mid["waiting"]) == (1, 2, n - 3, 0, 0)
    for msg in running[1:]:
        await api.complete(msg)
    assert (await api.batch(batch["id"]))["status"] == "failed"
    assert await api.claim(max=100, wait_s=0.3) == []

    r = await api.post(f"/v1/batches/{batch['id']}/retry")
    # The failed job is retried; the jobs its failure cancelled come back with it.
    assert r.status_code == 200 and r.json()["retried"] == 1, r.text
    again = await api.batch(batch["id"])
    assert (again["status"], again["completed"], again["queued"], again["waiting"]) == ("running", 2, 1500, n - 1502)

    r = await api.post(f"/v1/batches/{batch['id']}/cancel")
    assert r.status_code == 200, r.text
    final = await api.batch(batch["id"])
    assert (final["status"], final["completed"], final["cancelled"], final["queued"], final["waiting"]) == (
        "cancelled", 2, n - 2, 0, 0,
    )
    assert await api.claim(max=100, wait_s=0.3) == []
    statuses = {j["status"] for j in await api.jobs(batch["id"], limit=1000, offset=1000)}
    assert statuses == {"cancelled"}

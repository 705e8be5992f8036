"""The engine and the orchestrator over an in-memory store (tests/unit/memory.py): no server.

Each scenario also checks the one invariant of the counts: a batch's counts equal the number
of its stored jobs in each status, per kind.
"""
from __future__ import annotations

from collections import Counter

import pytest

from app.domain.definitions import JobSpec
from app.domain.errors import Conflict, Invalid, NotFound
from app.domain.models import CompensationSpec
from app.domain.states import AttemptStatus, BatchStatus, BatchType, FailurePolicy, JobKind, JobStatus
from memory import Core

CHAIN, ALLOW = BatchType.CHAIN, FailurePolicy.ALLOW_FAILURES
BS, JS = BatchStatus, JobStatus


def comp(name: str, undo: str, **kw) -> JobSpec:  # noqa: ANN003
    return JobSpec(name=name, compensation=CompensationSpec(name=undo), **kw)


def consistent(core: Core, batch_id: str) -> None:
    batch = core.batch(batch_id)
    for kind, counts in ((JobKind.JOB, batch.jobs), (JobKind.COMPENSATION, batch.comps)):
        stored = Counter(j.status.value for j in core.jobs(batch_id, kind))
        assert counts.as_dict() == {s.value: stored.get(s.value, 0) for s in JobStatus}, kind


def types(core: Core, batch_id: str) -> list[str]:
    return [e.type for e in core.events(batch_id)]


def by_name(msgs: list[dict]) -> dict[str, dict]:
    return {m["name"]: m for m in msgs}


# ---- creating and dispatching ------------------------------------------------------------------


async def test_parallel_batch_dispatches_everything_and_completes():
    core = Core()
    b = await core.create(["A", "B", "C"])
    assert (b.status, b.jobs.queued, b.jobs.waiting) == (BS.RUNNING, 3, 0)
    assert types(core, b.id) == ["started"] and core.events(b.id)[0].data == {"total": 3, "type": "parallel"}
    msgs = await core.claim()
    assert [m["position"] for m in msgs] == [0, 1, 2] and core.batch(b.id).jobs.running == 3
    for m in msgs:
        await core.complete(m, result=m["position"])
        consistent(core, b.id)
    final = core.batch(b.id)
    assert (final.status, final.jobs.completed, final.finished_at) == (BS.COMPLETED, 3, core.clock.now)
    assert types(core, b.id) == ["started", "progress", "progress", "progress", "completed"]
    assert [j.result for j in core.jobs(b.id)] == [0, 1, 2]


async def test_max_concurrency_keeps_n_in_flight_lowest_positions_first():
    core = Core()
    b = await core.create(["J"] * 5, limit=2)
    assert (b.jobs.queued, b.jobs.waiting) == (2, 3)
    order = []
    while msgs := await core.claim():
        assert len(msgs) <= 2 and core.batch(b.id).jobs.in_flight <= 2
        for m in msgs:
            order.append(m["position"])
            await core.complete(m)
            consistent(core, b.id)
    assert order == [0, 1, 2, 3, 4] and core.batch(b.id).status == BS.COMPLETED


async def test_a_chain_runs_one_step_at_a_time_and_merges_context():
    core = Core()
    b = await core.create(["A", comp("B", "UndoB"), "C"], type_=CHAIN, context={"n": 0})
    assert (b.jobs.queued, b.jobs.waiting) == (1, 2)
    seen = []
    for i in range(3):
        (m,) = await core.claim()
        assert await core.claim() == []
        seen.append(m)
        await core.complete(m, context={f"k{i}": i})
    assert [m["name"] for m in seen] == ["A", "B", "C"]
    assert seen[2]["context"] == {"n": 0, "k0": 0, "k1": 1}
    assert core.batch(b.id).context == {"n": 0, "k0": 0, "k1": 1, "k2": 2}
    # Only a step with a compensation keeps the context it started with.
    assert [j.context_in for j in core.jobs(b.id)] == [None, {"n": 0, "k0": 0}, None]


async def test_a_parallel_batch_merges_no_context():
    core = Core()
    b = await core.create([comp("A", "UndoA")], context={"n": 0})
    (m,) = await core.claim()
    await core.complete(m, context={"x": 1})
    assert core.batch(b.id).context == {"n": 0} and core.jobs(b.id)[0].context_in is None


async def test_progress_is_announced_at_each_new_step_and_not_twice():
    core = Core()
    b = await core.create(["J"] * 20, policy=ALLOW)
    msgs = await core.claim()
    for i, m in enumerate(msgs):
        await (core.fail(m, retryable=False) if i == 3 else core.complete(m))
    steps = [e.data["percentage"] for e in core.events(b.id, "progress")]
    assert steps == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    last = core.events(b.id, "progress")[-1].data
    assert (last["completed"], last["failed"], last["status"]) == (19, 1, "running")


# ---- retries ---------------------------------------------------------------------------------------


async def test_a_failed_attempt_is_retried_after_its_backoff():
    core = Core(retry_backoff_base_s=10.0, retry_backoff_max_s=25.0)
    b = await core.create([JobSpec(name="Flaky", max_attempts=5)])
    delays = []
    for attempt in range(1, 5):
        (m,) = await core.claim()
        assert m["attempt"] == attempt
        failed_at = core.clock.now
        await core.fail(m, f"failure {attempt}")
        job = core.jobs(b.id)[0]
        delay = core.events(b.id, "job_retrying")[-1].data["delay_s"]
        delays.append(delay)
        assert (job.status, job.attempts, job.queued_at, job.available_at) == (JS.QUEUED, attempt + 1, failed_at, failed_at + delay)
        # The failed attempt's lease, worker and start are gone with it.
        assert (job.lease, job.lease_expires_at, job.started_at, job.worker) == (None, None, None, None)
        core.clock.advance(delay - 0.5)
        assert await core.claim() == []  # not before its backoff has passed
        core.clock.advance(1.0)
    assert delays == [10.0, 20.0, 25.0, 25.0]
    retrying = core.events(b.id, "job_retrying")[0].data
    assert (retrying["attempt"], retrying["error"], retrying["name"]) == (2, "failure 1", "Flaky")
    (m,) = await core.claim()
    await core.fail(m, "last")
    job = core.jobs(b.id)[0]
    assert (job.status, job.attempts, job.error, core.batch(b.id).status) == (JS.FAILED, 5, "last", BS.FAILED)
    history = await core.store.list_attempts(b.id, 0)
    assert [a.status for a in history] == [AttemptStatus.FAILED] * 5
    assert [a.error for a in history] == ["failure 1", "failure 2", "failure 3", "failure 4", "last"]


async def test_not_retryable_and_last_attempt_fail_for_good():
    core = Core()
    b = await core.create([JobSpec(name="A", max_attempts=3), JobSpec(name="B", max_attempts=2)], policy=ALLOW)
    a, bb = await core.claim()
    await core.fail(a, "invalid", retryable=False)
    await core.fail(bb)
    (bb2,) = await core.claim()
    assert bb2["attempt"] == 2
    await core.fail(bb2)
    assert [(j.status, j.attempts) for j in core.jobs(b.id)] == [(JS.FAILED, 1), (JS.FAILED, 2)]
    assert core.batch(b.id).status == BS.COMPLETED_WITH_FAILURES
    consistent(core, b.id)


async def test_an_expired_lease_counts_as_a_failed_attempt():
    core = Core()
    b = await core.create([JobSpec(name="Slow", max_attempts=2, timeout_s=30.0), JobSpec(name="Ok", timeout_s=30.0)])
    slow, ok = await core.claim()
    core.clock.advance(29)
    assert await core.orc.expire(b.id, [0, 1]) == 0  # not yet
    await core.orc.heartbeat(None, ok["job_id"], 1, ok["lease"])
    core.clock.advance(2)
    assert await core.orc.expire(b.id, [0, 1]) == 1  # the heartbeat kept the other one
    (again,) = await core.claim()
    assert (again["job_id"], again["attempt"]) == (slow["job_id"], 2)
    with pytest.raises(Conflict):
        await core.complete(slow)
    assert [a.status for a in await core.store.list_attempts(b.id, 0)] == [AttemptStatus.EXPIRED]
    assert await core.orc.expire("nope", [0]) == 0


# ---- fail fast, allow failures -----------------------------------------------------------------------


async def test_fail_fast_cancels_what_has_not_started_and_retries_nothing_more():
    core = Core()
    b = await core.create(
        [JobSpec(name="A"), JobSpec(name="B", max_attempts=3), "C", "D", "E"], limit=3,
        callbacks={"on_failure": {"job": {"name": "Page"}}, "on_complete": {"job": {"name": "Report"}}},
    )  # fmt: skip
    a, bb = await core.claim(max=2)  # C stays queued, D and E wait
    await core.fail(a, "fatal")
    mid = core.batch(b.id)
    assert (mid.status, mid.jobs.running, mid.jobs.cancelled, mid.jobs.failed) == (BS.RUNNING, 1, 3, 1)
    assert mid.error is not None and (mid.error.job_id, mid.error.error) == (a["job_id"], "fatal")
    consistent(core, b.id)
    await core.fail(bb, "transient")  # would be retried, but the batch is failing fast
    final = core.batch(b.id)
    assert (final.status, final.jobs.failed, final.jobs.cancelled) == (BS.FAILED, 2, 3)
    assert final.error.job_id == a["job_id"]  # the first failure stays the batch's error
    (callback,) = await core.claim()
    assert callback["name"] == "Page" and callback["kind"] == "callback"
    assert callback["args"]["batch"]["status"] == "failed" and callback["args"]["batch"]["error"]["error"] == "fatal"
    assert types(core, b.id).count("failed") == 1 and types(core, b.id).count("job_failed") == 2
    consistent(core, b.id)


async def test_allow_failures_runs_everything_and_calls_on_complete():
    core = Core()
    b = await core.create(
        ["A", "B", "C"], policy=ALLOW, callbacks={"on_complete": {"job": {"name": "Report", "args": {"to": "ops"}}}}
    )
    a, bb, c = await core.claim()
    await core.fail(a, "e1")
    assert core.batch(b.id).error is None
    await core.complete(bb)
    await core.complete(c)
    final = core.batch(b.id)
    assert (final.status, final.jobs.completed, final.jobs.failed) == (BS.COMPLETED_WITH_FAILURES, 2, 1)
    (callback,) = await core.claim()
    assert (callback["name"], callback["args"]["to"]) == ("Report", "ops")
    assert callback["args"]["batch"]["status"] == "completed_with_failures"
    await core.complete(callback)
    assert core.batch(b.id).jobs.total == 3 and core.batch(b.id).status == BS.COMPLETED_WITH_FAILURES


# ---- sagas -----------------------------------------------------------------------------------------------


async def test_a_chain_compensates_its_completed_steps_newest_first_one_at_a_time():
    core = Core()
    jobs = [comp("Book", "Unbook"), comp("Pay", "Refund"), "Log", comp("Ship", "Unship"), comp("Email", "Unemail"), "Last"]
    b = await core.create(jobs, type_=CHAIN, context={"trip": 1}, callbacks={"on_failure": {"job": {"name": "Page"}}})
    steps = {}
    for name in ["Book", "Pay", "Log", "Ship"]:
        (m,) = await core.claim()
        steps[name] = m
        await core.complete(m, context={name: True})
    (email,) = await core.claim()
    await core.fail(email, "smtp down")
    batch = core.batch(b.id)
    assert (batch.status, batch.comps.queued, batch.comps.waiting) == (BS.COMPENSATING, 1, 2)
    assert (batch.jobs.failed, batch.jobs.cancelled) == (1, 1)
    assert types(core, b.id)[-4:] == ["job_failed", "compensating", "progress", "status"]
    assert core.events(b.id, "status")[-1].data == {"status": "compensating"}
    announced = core.events(b.id, "compensating")[0].data["jobs"]
    assert [(j["name"], j["original_job_id"]) for j in announced] == [
        ("Unship", steps["Ship"]["job_id"]), ("Refund", steps["Pay"]["job_id"]), ("Unbook", steps["Book"]["job_id"])
    ]  # fmt: skip
    order = []
    for _ in range(3):
        (m,) = await core.claim()
        assert await core.claim() == []  # one at a time
        order.append(m)
        consistent(core, b.id)
        await (core.fail(m, "no refund", retryable=False) if m["name"] == "Refund" else core.complete(m))
    assert [m["name"] for m in order] == ["Unship", "Refund", "Unbook"]
    unship = order[0]["args"]["_compensation"]
    assert unship == {
        "batch_id": b.id, "original_job_id": steps["Ship"]["job_id"], "original_job_name": "Ship", "original_args": {},
        "error": "smtp down", "failed_job_id": email["job_id"], "context": {"trip": 1, "Book": True, "Pay": True, "Log": True},
    }  # fmt: skip
    assert order[2]["args"]["_compensation"]["context"] == {"trip": 1}
    final = core.batch(b.id)
    assert (final.status, final.comps.completed, final.comps.failed, final.comps.open) == (BS.FAILED, 2, 1, 0)
    assert types(core, b.id).count("compensation_failed") == 1 and types(core, b.id)[-1] == "failed"
    (page,) = await core.claim()
    assert page["name"] == "Page"
    consistent(core, b.id)


async def test_a_failing_compensation_is_retried_with_its_own_budget():
    core = Core()
    b = await core.create([JobSpec(name="A", compensation=CompensationSpec(name="UndoA", max_attempts=2)), "B"], type_=CHAIN)
    (a,) = await core.claim()
    await core.complete(a)
    (bb,) = await core.claim()
    await core.fail(bb)
    (undo,) = await core.claim()
    assert undo["max_attempts"] == 2
    await core.fail(undo, "down")  # the batch is failing fast, but the undoing keeps its tries
    (undo2,) = await core.claim()
    assert undo2["attempt"] == 2 and core.batch(b.id).status == BS.COMPENSATING
    await core.fail(undo2, "still down")
    assert (core.batch(b.id).status, core.batch(b.id).comps.failed) == (BS.FAILED, 1)


async def test_a_parallel_failure_compensates_beside_the_other_jobs():
    core = Core()
    b = await core.create([comp("Charge", "Refund"), comp("Reserve", "Release"), "Notify"], policy=ALLOW, context={"o": 7})
    msgs = by_name(await core.claim())
    await core.complete(msgs["Charge"])
    await core.fail(msgs["Reserve"], "out of stock")
    # The compensation runs beside Notify: the batch is still running.
    batch = core.batch(b.id)
    assert (batch.status, batch.comps.queued) == (BS.RUNNING, 1) and "status" not in types(core, b.id)
    (release,) = await core.claim()
    assert release["name"] == "Release" and release["args"]["_compensation"]["context"] == {"o": 7}
    await core.complete(msgs["Notify"])
    # Only the compensation is left: compensating, announced once.
    assert core.batch(b.id).status == BS.COMPENSATING
    assert [e.data for e in core.events(b.id, "status")] == [{"status": "compensating"}]
    await core.complete(release)
    final = core.batch(b.id)
    assert (final.status, final.comps.completed, final.jobs.failed) == (BS.COMPLETED_WITH_FAILURES, 1, 1)
    assert len(core.events(b.id, "status")) == 1  # the end is its own event, not a status one
    consistent(core, b.id)


async def test_a_fail_fast_parallel_batch_compensates_while_its_last_jobs_run():
    core = Core()
    b = await core.create([comp("A", "UndoA"), "B"])
    msgs = by_name(await core.claim())
    await core.fail(msgs["A"])
    assert core.batch(b.id).status == BS.COMPENSATING  # failing: only the undoing matters now
    (undo,) = await core.claim()
    await core.complete(undo)
    assert core.batch(b.id).status == BS.RUNNING  # the undoing is done; B still runs
    await core.complete(msgs["B"])
    assert core.batch(b.id).status == BS.FAILED
    assert [e.data["status"] for e in core.events(b.id, "status")] == ["compensating", "running"]


# ---- cancel --------------------------------------------------------------------------------------------


async def test_cancel_leaves_nothing_open_and_counts_it():
    core = Core()
    b = await core.create([comp("A", "UndoA"), comp("B", "UndoB"), "C", "D", "E", "F", "G", "H"], limit=4, policy=ALLOW)
    msgs = by_name(await core.claim())
    await core.fail(msgs["A"])  # UndoA is queued; a slot frees: E is queued
    await core.fail(msgs["B"])  # UndoB, F
    msgs.update(by_name(await core.claim()))
    await core.complete(msgs["UndoA"])
    await core.complete(msgs["E"])  # G is queued, H waits
    before = core.batch(b.id)
    assert (before.jobs.waiting, before.jobs.queued, before.jobs.running, before.comps.running) == (1, 1, 3, 1)
    batch = await core.orc.cancel(None, b.id)
    assert batch.status == BS.CANCELLED and batch.finished_at == core.clock.now
    assert (batch.jobs.open, batch.jobs.in_flight, batch.comps.open, batch.comps.in_flight) == (0, 0, 0, 0)
    assert (batch.jobs.cancelled, batch.jobs.failed, batch.jobs.completed) == (5, 2, 1)
    assert (batch.comps.cancelled, batch.comps.completed) == (1, 1)
    assert core.batch(b.id).jobs == batch.jobs and core.batch(b.id).comps == batch.comps
    consistent(core, b.id)
    statuses = {j.name: j.status for j in core.jobs(b.id)}
    assert statuses == {"A": JS.FAILED, "B": JS.FAILED, "C": JS.CANCELLED, "D": JS.CANCELLED, "E": JS.COMPLETED,
                        "F": JS.CANCELLED, "G": JS.CANCELLED, "H": JS.CANCELLED, "UndoA": JS.COMPLETED,
                        "UndoB": JS.CANCELLED}  # fmt: skip
    assert all(j.finished_at == core.clock.now for j in core.jobs(b.id) if j.name in "CDFGH")
    # The running attempts end as cancelled; G's message is dropped.
    for name in ("C", "UndoB"):
        history = await core.store.list_attempts(b.id, msgs[name]["position"])
        assert [a.status for a in history] == [AttemptStatus.CANCELLED]
    assert core.store.messages == [] and await core.claim() == []
    summary = core.events(b.id, "cancelled")[0].data
    assert (summary["cancelled"], summary["running"], summary["compensations"]["open"]) == (5, 0, 0)
    assert types(core, b.id)[-1] == "cancelled" and "status" not in types(core, b.id)
    for name in ("C", "UndoB"):
        with pytest.raises(Conflict):
            await core.complete(msgs[name])
    with pytest.raises(Conflict):
        await core.orc.cancel(None, b.id)
    with pytest.raises(NotFound):
        await core.orc.cancel(None, "nope")


async def test_cancel_drops_waiting_and_queued_jobs_and_their_messages():
    core = Core()
    b = await core.create(["A", "B", "C"], limit=2)
    batch = await core.orc.cancel(None, b.id)
    assert (batch.jobs.waiting, batch.jobs.queued, batch.jobs.cancelled) == (0, 0, 3)
    assert core.store.messages == [] and await core.claim() == []
    assert core.events(b.id, "cancelled")[0].data["cancelled"] == 3
    consistent(core, b.id)


async def test_a_cancelled_chain_saga_starts_no_further_compensation():
    core = Core()
    b = await core.create([comp("A", "UndoA"), comp("B", "UndoB"), "C"], type_=CHAIN)
    for _ in range(2):
        (m,) = await core.claim()
        await core.complete(m)
    (c,) = await core.claim()
    await core.fail(c)
    (undo_b,) = await core.claim()
    batch = await core.orc.cancel(None, b.id)
    assert (batch.comps.open, batch.comps.cancelled) == (0, 2)
    with pytest.raises(Conflict):
        await core.complete(undo_b)
    assert await core.claim() == [] and core.batch(b.id).status == BS.CANCELLED


# ---- retry by hand -------------------------------------------------------------------------------------


async def test_retry_revives_failed_and_cancelled_jobs_with_a_fresh_budget():
    core = Core()
    b = await core.create([JobSpec(name="A"), JobSpec(name="B", max_attempts=2), "C", "D"], limit=2)
    a, bb = await core.claim()
    await core.fail(bb, "transient")
    (bb2,) = await core.claim()
    await core.fail(bb2, "transient again")  # C and D are cancelled
    await core.complete(a)
    failed = core.batch(b.id)
    assert (failed.status, failed.jobs.failed, failed.jobs.cancelled, failed.finished_at) == (BS.FAILED, 1, 2, core.clock.now)
    core.clock.advance(5)
    batch, retried = await core.orc.retry(None, b.id, None)
    assert retried == 1 and (batch.status, batch.error, batch.finished_at) == (BS.RUNNING, None, None)
    assert (batch.jobs.queued, batch.jobs.waiting, batch.jobs.failed, batch.jobs.cancelled) == (2, 1, 0, 0)
    assert core.events(b.id, "retried")[0].data == {"count": 1}
    consistent(core, b.id)
    again = by_name(await core.claim())
    assert (again["B"]["attempt"], again["C"]["attempt"]) == (3, 1)
    await core.fail(again["B"])  # a fresh budget of two attempts
    (b4,) = await core.claim()
    assert b4["attempt"] == 4
    await core.complete(b4)
    await core.complete(again["C"])
    (d,) = await core.claim()
    await core.complete(d)
    job_b = core.jobs(b.id)[1]
    assert (job_b.status, job_b.attempt_base, core.batch(b.id).status) == (JS.COMPLETED, 2, BS.COMPLETED)
    assert core.batch(b.id).finished_at == core.clock.now


async def test_retry_announces_progress_again():
    core = Core()
    b = await core.create(["Only"])
    (m,) = await core.claim()
    await core.fail(m)
    await core.orc.retry(None, b.id, None)
    (m2,) = await core.claim()
    await core.complete(m2)
    assert [e.data["percentage"] for e in core.events(b.id, "progress")] == [100.0, 100.0]
    assert types(core, b.id) == ["started", "job_failed", "progress", "failed", "retried", "progress", "completed"]


async def test_retry_of_chosen_jobs_and_what_is_refused():
    core = Core()
    b = await core.create(["A", "B", "C"], policy=ALLOW)
    a, bb, c = await core.claim()
    await core.fail(a, "x")
    await core.fail(bb, "y")
    with pytest.raises(Invalid) as refused:
        await core.orc.retry(None, b.id, [a["job_id"], c["job_id"], "junk", f"{b.id}.99"])
    assert refused.value.field == "job_ids" and a["job_id"] not in refused.value.message
    assert c["job_id"] in refused.value.message and "junk" in refused.value.message
    batch, retried = await core.orc.retry(None, b.id, [a["job_id"], a["job_id"]])
    assert retried == 1 and (batch.jobs.failed, batch.jobs.queued) == (1, 1)
    assert core.events(b.id, "retried")[0].data == {"count": 1, "job_ids": [a["job_id"]]}
    job_a = core.jobs(b.id)[0]
    assert (job_a.attempt_base, job_a.error, job_a.finished_at) == (1, None, None)
    consistent(core, b.id)
    (a2,) = await core.claim()
    await core.complete(a2)
    await core.complete(c)
    assert core.batch(b.id).status == BS.COMPLETED_WITH_FAILURES


async def test_retry_refused_when_cancelled_compensating_or_nothing_failed():
    core = Core()
    b = await core.create(["A"])
    with pytest.raises(Conflict, match="no failed jobs"):
        await core.orc.retry(None, b.id, None)
    await core.orc.cancel(None, b.id)
    with pytest.raises(Conflict, match="cancelled"):
        await core.orc.retry(None, b.id, None)
    chain = await core.create([comp("A", "UndoA"), "B"], type_=CHAIN)
    (m,) = await core.claim()
    await core.complete(m)
    (m,) = await core.claim()
    await core.fail(m)
    with pytest.raises(Conflict, match="compensating"):
        await core.orc.retry(None, chain.id, None)


# ---- adding jobs --------------------------------------------------------------------------------------


async def test_added_jobs_dispatch_within_the_limit_and_are_refused_once_it_ends():
    core = Core(max_batch_jobs=4)
    b = await core.create(["A"], limit=2)
    batch, positions, _ = await core.orc.add_jobs(None, b.id, [JobSpec(name="B"), JobSpec(name="C")], 2)
    assert list(positions) == [1, 2] and (batch.jobs.queued, batch.jobs.waiting) == (2, 1)
    assert core.events(b.id, "jobs_added")[0].data == {"count": 2, "first_position": 1, "total": 3}
    with pytest.raises(Invalid):
        await core.orc.add_jobs(None, b.id, [JobSpec(name="D"), JobSpec(name="E")], 2)
    while msgs := await core.claim():
        for m in msgs:
            await core.complete(m)
    assert core.batch(b.id).status == BS.COMPLETED
    with pytest.raises(Conflict, match="completed"):
        await core.orc.add_jobs(None, b.id, [JobSpec(name="Late")], 1)


async def test_no_jobs_are_added_to_a_failing_or_compensating_batch():
    core = Core()
    b = await core.create(["A", "B"])
    a, _ = await core.claim()
    await core.fail(a)
    with pytest.raises(Conflict, match="failing"):
        await core.orc.add_jobs(None, b.id, [JobSpec(name="C")], 1)
    p = await core.create([comp("A", "UndoA"), "B"], policy=ALLOW)
    msgs = by_name(await core.claim(p.id))
    await core.fail(msgs["A"])
    await core.complete(msgs["B"])
    assert core.batch(p.id).status == BS.COMPENSATING
    with pytest.raises(Conflict, match="failing"):
        await core.orc.add_jobs(None, p.id, [JobSpec(name="C")], 1)


# ---- events and webhooks ----------------------------------------------------------------------------


async def test_on_event_webhooks_carry_their_headers_and_follow_the_filter():
    core = Core()
    hook = {"url": "http://hooks.test/e", "headers": {"X-Tenant": "acme"}, "events": ["job_failed", "completed_with_failures"]}
    b = await core.create(["A", "B"], policy=ALLOW, callbacks={"on_event": hook, "on_complete": {"url": "http://hooks.test/c"}})
    a, bb = await core.claim()
    await core.fail(a, "bad")
    await core.complete(bb)
    hooks = core.store.webhooks
    assert [(w.event_type, w.url) for w in hooks] == [
        ("batch.job_failed", "http://hooks.test/e"),
        ("batch.completed_with_failures", "http://hooks.test/e"),
        ("batch.completed_with_failures", "http://hooks.test/c"),
    ]
    assert hooks[0].headers == {"X-Tenant": "acme"} and hooks[2].headers == {}
    body = hooks[0].body
    assert (body["id"], body["type"], body["batch_id"], body["status"]) == (hooks[0].id, "batch.job_failed", b.id, "running")
    assert body["data"]["error"] == "bad" and hooks[0].next_attempt_at == core.clock.now
    assert hooks[1].body["data"]["failed"] == 1 and hooks[1].body["status"] == "completed_with_failures"


async def test_on_event_without_a_filter_gets_every_event():
    core = Core()
    b = await core.create(["A"], callbacks={"on_event": {"url": "http://hooks.test/e"}})
    (m,) = await core.claim()
    await core.complete(m)
    assert [w.event_type for w in core.store.webhooks] == ["batch." + t for t in types(core, b.id)]
    assert types(core, b.id) == ["started", "progress", "completed"]


# ---- what workers are told ------------------------------------------------------------------------------


async def test_reports_of_stale_attempts_and_wrong_leases_are_refused_repeats_are_noops():
    core = Core()
    b = await core.create([JobSpec(name="A", max_attempts=2), "B"], policy=ALLOW)
    a, bb = await core.claim()
    first = await core.complete(bb, result=1)
    again = await core.complete(bb, result=2)
    assert (first["duplicate"], again["duplicate"], core.jobs(b.id)[1].result) == (False, True, 1)
    with pytest.raises(Conflict):
        await core.fail(bb)  # that attempt completed
    with pytest.raises(Conflict, match="lease"):
        await core.complete({**a, "lease": "not-it"})
    with pytest.raises(Conflict):
        await core.complete({**a, "attempt": 7})
    await core.fail(a, "once")
    repeated = await core.fail(a, "once")  # the failed attempt, repeated, after its retry was dispatched
    assert (repeated["duplicate"], repeated["job_id"], repeated["attempts"]) == (True, a["job_id"], 2), repeated
    (a2,) = await core.claim()
    with pytest.raises(Conflict, match="failed"):
        await core.complete(a)  # attempt 1 failed: its late completion is refused
    await core.complete(a2)
    assert core.batch(b.id).jobs.completed == 2
    with pytest.raises(NotFound):
        await core.complete({**a2, "job_id": "nope.0"})


async def test_a_delivery_starts_once():
    core = Core()
    b = await core.create(["A"])
    (msg,) = core.due()
    started = await core.orc.start(None, msg.payload()["job_id"], 1, worker="w1")
    assert started["attempt"] == 1 and core.jobs(b.id)[0].worker == "w1"
    with pytest.raises(Conflict):
        await core.orc.start(None, msg.payload()["job_id"], 1)
    job = core.jobs(b.id)[0]
    assert (job.status, job.started_at, job.lease_expires_at) == (JS.RUNNING, core.clock.now, core.clock.now + 60.0)


async def test_jobs_made_in_several_chunks_take_consecutive_positions():
    from app.services.engine import CHUNK

    core = Core()
    n = CHUNK + 3
    b = await core.create([JobSpec(name=f"J{i}") for i in range(n)])
    assert [(j.position, j.name) for j in core.jobs(b.id)] == [(i, f"J{i}") for i in range(n)]
    assert core.batch(b.id).next_position == n
    consistent(core, b.id)

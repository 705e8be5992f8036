"""What the engine writes beside statuses: job defaults, positions, events, summaries, webhooks, callbacks."""
from __future__ import annotations

import pytest

from app.domain.definitions import JobSpec
from app.domain.errors import Invalid
from app.domain.models import CompensationSpec
from app.domain.rules import rfc3339
from app.domain.states import BatchStatus, BatchType, FailurePolicy, JobKind, JobStatus
from memory import Core

CHAIN, ALLOW = BatchType.CHAIN, FailurePolicy.ALLOW_FAILURES


async def test_job_defaults_come_from_the_job_the_request_the_queue_then_the_settings():
    core = Core(queues={"critical": {"visibility_timeout_s": 5, "max_attempts": 4}}, default_max_attempts=2,
                default_visibility_timeout_s=30)  # fmt: skip
    specs = [JobSpec(name="Own", max_attempts=7, timeout_s=9), JobSpec(name="Queue", queue="critical"), JobSpec(name="Plain")]
    b = await core.create(specs)
    assert [(j.queue, j.max_attempts, j.timeout_s) for j in core.jobs(b.id)] == [
        ("default", 7, 9), ("critical", 4, 5), ("default", 2, 30)
    ]  # fmt: skip
    b = await core.create(specs, queue="critical", defaults={"max_attempts": 3, "timeout_s": 11})
    assert [(j.queue, j.max_attempts, j.timeout_s) for j in core.jobs(b.id)] == [
        ("critical", 7, 9), ("critical", 3, 11), ("critical", 3, 11)
    ]  # fmt: skip
    half = await core.create([JobSpec(name="A", queue="critical")], defaults={"timeout_s": 11})
    assert [(j.max_attempts, j.timeout_s) for j in core.jobs(half.id)] == [(4, 11)]


async def test_undeclared_queues_are_refused_when_configured_naming_the_field():
    core = Core(queues={"critical": {}}, allow_undeclared_queues=False)
    assert (await core.create(["A"], queue="critical")).queue == "critical"
    assert (await core.create([JobSpec(name="A", queue="default")])).jobs.queued == 1  # always served
    with pytest.raises(Invalid) as refused:
        await core.create(["A", JobSpec(name="B", queue="elsewhere")])
    assert refused.value.field == "jobs[1].queue" and "elsewhere" in refused.value.message
    with pytest.raises(Invalid) as refused:
        await core.create(["A"], queue="nope")
    assert refused.value.field == "queue"
    assert Core().settings.allow_undeclared_queues and (await Core().create(["A"], queue="any")).queue == "any"


async def test_every_job_compensation_and_callback_takes_the_next_position():
    core = Core()
    b = await core.create([JobSpec(name="A", compensation=CompensationSpec("UndoA")), "B", "C"], type_=CHAIN,
                          callbacks={"on_failure": {"job": {"name": "Page"}}})  # fmt: skip
    (a,) = await core.claim()
    await core.complete(a)
    (bb,) = await core.claim()
    await core.fail(bb)
    (undo,) = await core.claim()
    await core.complete(undo)
    (page,) = await core.claim()
    assert [(j.position, j.name, j.kind) for j in core.jobs(b.id)] == [
        (0, "A", JobKind.JOB), (1, "B", JobKind.JOB), (2, "C", JobKind.JOB),
        (3, "UndoA", JobKind.COMPENSATION), (4, "Page", JobKind.CALLBACK),
    ]  # fmt: skip
    assert (undo["job_id"], page["job_id"], core.batch(b.id).next_position) == (f"{b.id}.3", f"{b.id}.4", 5)
    _, positions, _ = await core.orc.add_jobs(None, (await core.create(["X"])).id, [JobSpec(name="Y")], 1)
    assert positions == [1]


async def test_a_compensation_job_inherits_from_the_job_it_undoes():
    core = Core()
    spec = JobSpec(name="Reserve", args={"sku": "x"}, queue="stock", max_attempts=3, timeout_s=12,
                   compensation=CompensationSpec("Release", args={"why": "undo"}))  # fmt: skip
    b = await core.create([spec, JobSpec(name="Other", compensation=CompensationSpec("UndoOther", max_attempts=5))], policy=ALLOW)
    msgs = await core.claim()
    for m in msgs:
        for attempt in range(3 if m["name"] == "Reserve" else 1):
            if attempt:
                (m,) = await core.claim(b.id, max=1)
            await core.fail(m, "gone")
    release, undo_other = core.jobs(b.id, JobKind.COMPENSATION)
    assert (release.name, release.queue, release.max_attempts, release.timeout_s, release.args) == (
        "Release", "stock", 3, 12, {"why": "undo"})  # fmt: skip
    assert (release.original_position, release.kind, release.status) == (0, JobKind.COMPENSATION, JobStatus.QUEUED)
    assert (undo_other.max_attempts, undo_other.original_position) == (5, 1)
    assert release.compensation_info == {
        "batch_id": b.id, "original_job_id": f"{b.id}.0", "original_job_name": "Reserve", "original_args": {"sku": "x"},
        "error": "gone", "failed_job_id": f"{b.id}.0", "context": {},
    }  # fmt: skip
    announced = core.events(b.id, "compensating")
    assert [e.data for e in announced] == [
        {"jobs": [{"job_id": f"{b.id}.2", "name": "Release", "original_job_id": f"{b.id}.0"}]},
        {"jobs": [{"job_id": f"{b.id}.3", "name": "UndoOther", "original_job_id": f"{b.id}.1"}]},
    ]


async def test_a_chain_failure_with_nothing_to_undo_fails_at_once():
    core = Core()
    b = await core.create(["A", "B"], type_=CHAIN)
    (a,) = await core.claim()
    await core.complete(a)
    (bb,) = await core.claim()
    await core.fail(bb)
    assert core.batch(b.id).status == BatchStatus.FAILED and core.batch(b.id).comps.total == 0
    assert "compensating" not in [e.type for e in core.events(b.id)] and "status" not in [e.type for e in core.events(b.id)]


async def test_events_carry_the_job_summary_and_the_batch_summary():
    core = Core(retry_backoff_base_s=2.0)
    b = await core.create([JobSpec(name="A", args={"n": 1}, max_attempts=2), "B"])
    core.clock.advance(3)
    a, bb = await core.claim()
    await core.fail(a, "first")
    assert core.events(b.id, "job_retrying")[0].data == {
        "job_id": a["job_id"], "name": "A", "kind": "job", "args": {"n": 1}, "error": "first", "attempts": 2,
        "attempt": 2, "delay_s": 2.0,
    }  # fmt: skip
    core.clock.advance(2)
    (a2,) = await core.claim()
    await core.fail(a2, "second")
    assert core.events(b.id, "job_failed")[0].data == {
        "job_id": a["job_id"], "name": "A", "kind": "job", "args": {"n": 1}, "error": "second", "attempts": 2,
    }  # fmt: skip
    await core.complete(bb)
    end = core.events(b.id, "failed")[0]
    assert end.created_at == core.clock.now
    assert end.data == {
        "batch_id": b.id, "status": "failed", "type": "parallel", "total": 2, "waiting": 0, "queued": 0, "running": 0,
        "completed": 1, "failed": 1, "cancelled": 0, "percentage": 100.0,
        "compensations": {"open": 0, "completed": 0, "failed": 0, "cancelled": 0},
        "error": {"job_id": a["job_id"], "name": "A", "error": "second"}, "finished_at": rfc3339(core.clock.now),
    }  # fmt: skip
    assert core.batch(b.id).updated_at == core.clock.now and core.batch(b.id).created_at == core.clock.now - 5


async def test_a_completed_batch_summary_has_no_error():
    core = Core()
    b = await core.create(["A"], callbacks={"on_complete": {"url": "http://hooks.test/done", "headers": {"X-K": "v"}}})
    (a,) = await core.claim()
    core.clock.advance(1)
    await core.complete(a)
    (hook,) = core.store.webhooks
    assert (hook.event_type, hook.url, hook.headers, hook.status, hook.attempts) == (
        "batch.completed", "http://hooks.test/done", {"X-K": "v"}, "pending", 0)  # fmt: skip
    assert (hook.next_attempt_at, hook.created_at, hook.batch_id) == (core.clock.now, core.clock.now, b.id)
    assert hook.body == {
        "id": hook.id, "type": "batch.completed", "batch_id": b.id, "status": "completed",
        "data": {**core.events(b.id, "completed")[0].data}, "created_at": rfc3339(core.clock.now),
    }  # fmt: skip
    assert hook.body["data"]["error"] is None and hook.body["data"]["finished_at"] == rfc3339(core.clock.now)
    assert len(hook.id) == 36 and hook.id != b.id


async def test_each_webhook_is_its_own_event():
    core = Core()
    b = await core.create(["A"], callbacks={"on_event": {"url": "http://hooks.test/e"}, "on_complete": {"url": "http://hooks.test/c"}})
    (a,) = await core.claim()
    await core.complete(a)
    ids = [w.id for w in core.store.webhooks]
    assert len(ids) == 4 and len(set(ids)) == 4 and all(len(i) == 36 for i in ids) and len(b.id) == 36


async def test_callback_webhook_and_job_together_and_only_the_right_one():
    core = Core(default_max_attempts=3, default_visibility_timeout_s=40)
    both = {"url": "http://hooks.test/f", "job": {"name": "Page", "args": {"to": "ops"}}}
    b = await core.create([JobSpec(name="A", max_attempts=1)], queue="jobs",
                          callbacks={"on_failure": both, "on_complete": {"job": {"name": "Report"}}})  # fmt: skip
    (a,) = await core.claim()
    await core.fail(a)
    assert [w.event_type for w in core.store.webhooks] == ["batch.failed"]
    (page,) = [j for j in core.jobs(b.id) if j.kind == JobKind.CALLBACK]
    assert (page.name, page.queue, page.max_attempts, page.timeout_s, page.status) == ("Page", "jobs", 3, 40, JobStatus.QUEUED)
    assert page.args == {"to": "ops", "batch": core.events(b.id, "failed")[0].data}
    assert core.batch(b.id).jobs.total == 1 and core.batch(b.id).comps.total == 0


async def test_a_big_batch_is_written_in_chunks_each_job_once():
    core = Core()
    b = await core.create(["J"] * 6500, limit=10)
    jobs = core.jobs(b.id)
    assert [j.position for j in jobs] == list(range(6500))
    assert sum(j.status == JobStatus.QUEUED for j in jobs) == 10 and core.batch(b.id).jobs.waiting == 6490
    _, positions, _ = await core.orc.add_jobs(None, b.id, [JobSpec(name="K")] * 2500, 2500)
    assert positions == list(range(6500, 9000)) and len(core.jobs(b.id)) == 9000


async def test_a_start_records_the_lease_and_keeps_a_chain_steps_context_only():
    core = Core()
    b = await core.create([JobSpec(name="A", compensation=CompensationSpec("UndoA"), timeout_s=20)], type_=CHAIN,
                          context={"c": 1})  # fmt: skip
    (a,) = await core.claim()
    job = core.jobs(b.id)[0]
    assert (job.lease, job.lease_expires_at, job.started_at, job.context_in) == (a["lease"], core.clock.now + 20, core.clock.now, {"c": 1})
    assert a["lease_expires_at"] == rfc3339(core.clock.now + 20)
    core.clock.advance(15)
    beat = await core.orc.heartbeat(None, a["job_id"], 1, a["lease"])
    assert beat["lease_expires_at"] == rfc3339(core.clock.now + 20)
    core.clock.advance(10)
    assert await core.orc.expire(b.id, [0]) == 0  # the heartbeat moved the lease on
    await core.complete(a)
    assert core.jobs(b.id)[0].finished_at == core.clock.now


async def test_a_retry_delay_restarts_with_the_fresh_budget():
    core = Core(retry_backoff_base_s=4.0, retry_backoff_max_s=100.0)
    b = await core.create([JobSpec(name="A", max_attempts=2)])
    (a,) = await core.claim()
    await core.fail(a)
    core.clock.advance(4)
    (a,) = await core.claim()
    await core.fail(a)
    await core.orc.retry(None, b.id, None)
    (a,) = await core.claim()
    await core.fail(a)
    # Attempt 3 is the first of a new budget: its retry waits the base again, not 4 · base.
    assert [e.data["delay_s"] for e in core.events(b.id, "job_retrying")] == [4.0, 4.0]

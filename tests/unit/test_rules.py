"""The pure rules of app.domain.rules: dispatch slots, progress, final and live status, quiet, backoff."""
from __future__ import annotations

import pytest

from app.domain.models import Batch, Failure
from app.domain.rules import (
    start_again,
    lease_for,
    backoff_delay,
    concurrency_limit,
    dispatch_slots,
    failing,
    final_status,
    live_status,
    merge_context,
    percentage,
    progress,
    progress_step,
    quiet,
    rfc3339,
)
from app.domain.states import BatchStatus, BatchType, Counts, FailurePolicy

BS = BatchStatus
FAIL_FAST, ALLOW = FailurePolicy.FAIL_FAST, FailurePolicy.ALLOW_FAILURES


def make(
    type_: BatchType = BatchType.PARALLEL,
    status: BatchStatus = BS.RUNNING,
    policy: FailurePolicy = FAIL_FAST,
    limit: int | None = None,
    error: bool = False,
    comps: Counts | None = None,
    **jobs: int,
) -> Batch:
    return Batch(
        id="b", type=type_, queue="default", status=status, failure_policy=policy, max_concurrency=limit,
        error=Failure("b.0", "J", "boom") if error else None, jobs=Counts(**jobs), comps=comps or Counts(),
    )  # fmt: skip


# ---- dispatch ---------------------------------------------------------------------------------


def test_concurrency_limit_chain_is_one_parallel_is_its_max_concurrency():
    assert concurrency_limit(make(BatchType.CHAIN)) == 1
    assert concurrency_limit(make(BatchType.CHAIN, limit=5)) == 1
    assert concurrency_limit(make(limit=3)) == 3
    assert concurrency_limit(make()) is None


def test_failing_is_a_fail_fast_batch_with_an_error():
    assert failing(make(error=True))
    assert not failing(make(error=True, policy=ALLOW))
    assert not failing(make())
    assert not failing(make(policy=ALLOW))


@pytest.mark.parametrize(
    "batch, slots",
    [
        (make(waiting=5), 5),  # no limit: every waiting job
        (make(waiting=1), 1),
        (make(limit=3, waiting=1, queued=1), 1),
        (make(BatchType.CHAIN, waiting=1), 1),
        (make(waiting=0, queued=3), 0),
        (make(limit=3, waiting=5), 3),
        (make(limit=3, waiting=5, queued=1, running=1), 1),  # queued and running both hold a slot
        (make(limit=3, waiting=5, queued=2), 1),
        (make(limit=3, waiting=5, running=2), 1),
        (make(limit=3, waiting=2, running=0), 2),  # fewer waiting than free slots
        (make(limit=3, waiting=5, queued=3), 0),
        (make(limit=3, waiting=5, running=4), 0),  # over the limit (lowered): never negative
        (make(limit=3, waiting=5, completed=7, failed=2, cancelled=1), 3),  # finished jobs free their slot
        (make(BatchType.CHAIN, waiting=3), 1),
        (make(BatchType.CHAIN, waiting=3, running=1), 0),
        (make(BatchType.CHAIN, waiting=3, queued=1), 0),
        (make(BatchType.CHAIN, waiting=3, completed=2), 1),
        (make(waiting=5, error=True), 0),  # failing fast: nothing more is dispatched
        (make(waiting=5, error=True, policy=ALLOW), 5),  # allow_failures goes on
        (make(status=BS.COMPENSATING, waiting=5), 0),
        (make(status=BS.CANCELLED, waiting=5), 0),
        (make(status=BS.FAILED, waiting=5), 0),
    ],
)
def test_dispatch_slots(batch, slots):
    assert dispatch_slots(batch) == slots


# ---- progress ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts, pct, step",
    [
        (Counts(), 100.0, 10),  # an empty batch is done
        (Counts(waiting=3), 0.0, 0),
        (Counts(running=1), 0.0, 0),  # one job, not done
        (Counts(completed=1), 100.0, 10),
        (Counts(waiting=1, queued=1, running=1, completed=1), 25.0, 2),  # waiting, queued, running: all open
        (Counts(completed=1, failed=1, cancelled=1, running=1), 75.0, 7),  # every finished status counts
        (Counts(running=2, cancelled=1), 33.33, 3),
        (Counts(running=1, completed=2), 66.67, 6),
        (Counts(running=9, completed=1), 10.0, 1),  # exactly on a step
        (Counts(running=11, completed=1), 8.33, 0),
        (Counts(running=1, completed=9), 90.0, 9),
        (Counts(running=1, completed=199), 99.5, 9),  # 99.5 % is not the end
        (Counts(failed=4), 100.0, 10),
    ],
)
def test_percentage_and_progress_step(counts, pct, step):
    assert percentage(counts) == pct
    assert progress_step(counts) == step


def test_progress_view():
    b = make(BatchType.CHAIN, waiting=1, running=1, completed=2, comps=Counts(queued=1, completed=2, failed=3, cancelled=4))
    assert progress(b) == {
        "batch_id": "b", "status": "running", "type": "chain", "total": 4, "waiting": 1, "queued": 0, "running": 1,
        "completed": 2, "failed": 0, "cancelled": 0, "percentage": 50.0,
        "compensations": {"open": 1, "completed": 2, "failed": 3, "cancelled": 4},
    }  # fmt: skip


# ---- the batch's status -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch, final",
    [
        (make(completed=3), BS.COMPLETED),
        (make(), BS.COMPLETED),
        (make(completed=2, cancelled=1), BS.COMPLETED),  # cancelled alone is no failure
        (make(completed=2, failed=1), BS.FAILED),
        (make(completed=2, failed=1, policy=ALLOW), BS.COMPLETED_WITH_FAILURES),
        (make(failed=1, policy=ALLOW), BS.COMPLETED_WITH_FAILURES),
        (make(completed=2, waiting=1), None),
        (make(completed=2, queued=1), None),
        (make(completed=2, running=1), None),
        (make(failed=1, running=1), None),  # fail_fast still waits for running jobs
        (make(failed=1, comps=Counts(waiting=1)), None),  # and for its compensations
        (make(failed=1, comps=Counts(queued=1)), None),
        (make(failed=1, comps=Counts(running=1)), None),
        (make(failed=1, comps=Counts(completed=1, failed=1, cancelled=1)), BS.FAILED),
        (make(completed=1, comps=Counts(failed=2)), BS.COMPLETED),  # failed compensations do not fail it
    ],
)
def test_final_status(batch, final):
    assert final_status(batch) == final


@pytest.mark.parametrize(
    "batch, live",
    [
        (make(running=1), BS.RUNNING),
        (make(running=1, comps=Counts(completed=1)), BS.RUNNING),  # no open compensation
        # allow_failures: compensations run beside other jobs while any is open ...
        (make(policy=ALLOW, running=1, comps=Counts(running=1)), BS.RUNNING),
        (make(policy=ALLOW, waiting=1, comps=Counts(queued=1)), BS.RUNNING),
        (make(policy=ALLOW, queued=1, comps=Counts(waiting=1)), BS.RUNNING),
        # ... and only compensations are left: compensating.
        (make(policy=ALLOW, failed=1, comps=Counts(running=1)), BS.COMPENSATING),
        (make(policy=ALLOW, failed=1, comps=Counts(waiting=1)), BS.COMPENSATING),
        (make(policy=ALLOW, failed=1, comps=Counts(queued=1)), BS.COMPENSATING),
        # A failing fail-fast batch compensates even while its last jobs still run.
        (make(error=True, running=1, comps=Counts(queued=1)), BS.COMPENSATING),
        (make(error=True, running=1), BS.RUNNING),
        (make(error=True, policy=ALLOW, running=1, comps=Counts(queued=1)), BS.RUNNING),
    ],
)
def test_live_status(batch, live):
    assert live_status(batch) == live


# ---- quiet: may a report commit without the batch lock? -----------------------------------------


def delta(**kw: int) -> Counts:
    return Counts(**kw)


DONE = delta(running=-1, completed=1)  # a running job completed
STARTED = delta(queued=-1, running=1)


@pytest.mark.parametrize(
    "status, error, counts, change, expected",
    [
        (BS.RUNNING, False, Counts(running=50, completed=10), DONE, True),  # one of many, no step crossed
        (BS.RUNNING, False, Counts(queued=5, running=5), STARTED, True),
        (BS.COMPENSATING, False, Counts(running=50, completed=10), DONE, False),  # not plainly running
        (BS.FAILED, False, Counts(running=50, completed=10), DONE, False),
        (BS.RUNNING, True, Counts(running=50, completed=10), DONE, False),  # a failure already
        # A slot frees while jobs wait: one must be dispatched.
        (BS.RUNNING, False, Counts(waiting=1, running=50, completed=10), DONE, False),
        # Jobs wait but no slot frees (a start): quiet.
        (BS.RUNNING, False, Counts(waiting=1, queued=5, running=50, completed=10), STARTED, True),
        # Nothing would be open after it: the batch ends.
        (BS.RUNNING, False, Counts(running=1, completed=100), DONE, False),
        (BS.RUNNING, False, Counts(running=2, completed=100), DONE, True),
        # A 10 % step is crossed (an event): 9/20 -> 10/20.
        (BS.RUNNING, False, Counts(running=11, completed=9), DONE, False),
        (BS.RUNNING, False, Counts(running=11, completed=8), DONE, True),  # 8/19 -> 9/19 stays in step 4
        (BS.RUNNING, False, Counts(completed=5), delta(), False),  # nothing open
        (BS.RUNNING, False, Counts(running=10, completed=10), DONE, True),  # 10/20 -> 11/20 stays in step 5
    ],
)
def test_quiet_on_its_edges(status, error, counts, change, expected):
    before = counts.copy()
    assert quiet(status, error, counts, change) is expected
    assert counts == before  # it only reads


# ---- backoff ----------------------------------------------------------------------------------


def test_backoff_base_doubling_cap_and_zero():
    assert [backoff_delay(n, 1.0, 300.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert [backoff_delay(n, 10.0, 25.0) for n in range(1, 5)] == [10.0, 20.0, 25.0, 25.0]
    assert backoff_delay(3, 10.0, 40.0) == 40.0  # exactly on the cap
    assert backoff_delay(1, 0.5, 300.0) == 0.5
    assert backoff_delay(0, 1.0, 300.0) == 0.0  # no failed attempt yet
    assert backoff_delay(-1, 1.0, 300.0) == 0.0
    assert backoff_delay(3, 0.0, 300.0) == 0.0  # backoff off
    assert backoff_delay(3, -1.0, 300.0) == 0.0
    assert backoff_delay(40, 1.0, 300.0) == 300.0


# ---- small pieces -------------------------------------------------------------------------------


def test_merge_context_is_shallow_and_keeps_nulls():
    ctx = {"a": 1, "b": {"x": 1}}
    assert merge_context(ctx, None) is ctx
    assert merge_context(ctx, {}) is ctx
    merged = merge_context(ctx, {"b": {"y": 2}, "c": None})
    assert merged == {"a": 1, "b": {"y": 2}, "c": None} and ctx == {"a": 1, "b": {"x": 1}}


def test_rfc3339():
    assert rfc3339(None) is None
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1.5) == "1970-01-01T00:00:01.500000Z"


def test_a_lease_is_32_hex_digits_the_same_for_the_same_delivery():
    from app.domain.models import Job

    batch = Batch(id="b", type=BatchType.PARALLEL, queue="default", lease_key="k" * 32)
    job = Job(batch_id="b", position=3, name="A", queue="default", attempts=2)
    lease = lease_for(batch, job, "stream/1-0")
    assert len(lease) == 32 and int(lease, 16) >= 0
    assert lease_for(batch, job, "stream/1-0") == lease != lease_for(batch, job, "stream/2-0")
    assert len(lease_for(batch, job, None)) == 32


def test_a_started_delivery_starts_again_for_its_own_worker_or_once_it_could_be_taken_over():
    from app.domain.models import Job

    job = Job(batch_id="b", position=0, name="A", queue="default", attempts=1, worker="w-1", started_at=100.0)
    assert start_again(job, "w-1", 100.5, 30)  # its answer was lost: the same worker asks again
    assert not start_again(job, "w-2", 129.9, 30)  # a copy read by another worker while it may still run
    assert start_again(job, "w-2", 130.0, 30)  # unacked for the claim timeout: taken over
    assert not start_again(job, None, 100.5, 30)  # no name: only once it could have been taken over

"""The transition tables and the one place a status changes (app.domain.states): pure, no server."""
from __future__ import annotations

import itertools

import pytest

from app.domain.models import Batch, Job
from app.domain.states import (
    BATCH_MOVES,
    COUNT_FIELDS,
    COUNTED,
    JOB_MOVES,
    BatchStatus,
    BatchType,
    Counts,
    IllegalMove,
    JobKind,
    JobStatus,
    check_job_move,
    move_batch,
    move_job,
    move_jobs,
)

W, Q, R, C, F, X = (JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED,
                    JobStatus.CANCELLED)  # fmt: skip
BS = BatchStatus

# The contract, written out again by hand: a change to the tables must change this list too.
ALLOWED_JOB_MOVES = {
    (None, W), (W, Q), (Q, R), (R, C), (R, F), (R, Q), (W, X), (Q, X), (R, X), (F, W), (X, W),
}  # fmt: skip
ALLOWED_BATCH_MOVES = {
    (BS.RUNNING, BS.COMPENSATING), (BS.RUNNING, BS.COMPLETED), (BS.RUNNING, BS.COMPLETED_WITH_FAILURES),
    (BS.RUNNING, BS.FAILED), (BS.RUNNING, BS.CANCELLED), (BS.COMPENSATING, BS.COMPLETED_WITH_FAILURES),
    (BS.COMPENSATING, BS.FAILED), (BS.COMPENSATING, BS.CANCELLED), (BS.COMPENSATING, BS.RUNNING), (BS.FAILED, BS.RUNNING),
    (BS.COMPLETED_WITH_FAILURES, BS.RUNNING),
}  # fmt: skip
EVERY_JOB_PAIR = list(itertools.product([None, *JobStatus], JobStatus))
EVERY_BATCH_PAIR = list(itertools.product(BatchStatus, BatchStatus))


def batch(status: BatchStatus = BS.RUNNING, **counts: int) -> Batch:
    return Batch(id="b", type=BatchType.PARALLEL, queue="default", status=status, jobs=Counts(**counts))


def job(status: JobStatus | None, kind: JobKind = JobKind.JOB) -> Job:
    return Job(batch_id="b", position=0, name="J", queue="default", kind=kind, status=status)


def test_tables_are_exactly_the_documented_moves():
    assert set(JOB_MOVES) == ALLOWED_JOB_MOVES
    assert set(BATCH_MOVES) == ALLOWED_BATCH_MOVES
    assert all(why for why in [*JOB_MOVES.values(), *BATCH_MOVES.values()])


def test_statuses_finished_or_not():
    assert [s for s in JobStatus if s.finished] == [C, F, X]
    assert [s for s in BatchStatus if not s.finished] == [BS.RUNNING, BS.COMPENSATING]
    # A finished batch moves only when retried (back to running).
    assert all(to == BS.RUNNING for frm, to in BATCH_MOVES if frm.finished)
    assert COUNTED == (JobKind.JOB, JobKind.COMPENSATION)
    assert COUNT_FIELDS == ["waiting", "queued", "running", "completed", "failed", "cancelled"]


@pytest.mark.parametrize("frm, to", EVERY_JOB_PAIR)
def test_every_job_move_is_allowed_or_refused_by_the_table(frm, to):
    b = batch(**({frm.value: 1} if frm else {}))
    j = job(frm)
    if (frm, to) in ALLOWED_JOB_MOVES:
        check_job_move(frm, to)
        move_job(b, j, to)
        assert j.status == to and b.jobs[to] == 1 and b.jobs.total == 1
        if frm is not None:
            assert b.jobs[frm] == 0
    else:
        with pytest.raises(IllegalMove, match="cannot move"):
            check_job_move(frm, to)
        with pytest.raises(IllegalMove):
            move_job(b, j, to)
        # A refused move changes nothing.
        assert j.status == frm and b.jobs.as_dict() == batch(**({frm.value: 1} if frm else {})).jobs.as_dict()


@pytest.mark.parametrize("frm, to", EVERY_BATCH_PAIR)
def test_every_batch_move_is_allowed_or_refused_by_the_table(frm, to):
    b = batch(frm)
    b.finished_at = 5.0 if frm.finished else None
    if (frm, to) in ALLOWED_BATCH_MOVES:
        move_batch(b, to, now=7.0)
        assert b.status == to
        # A finished batch gets its end time, a revived one loses it.
        assert b.finished_at == (7.0 if to.finished else None)
    else:
        with pytest.raises(IllegalMove, match="cannot move"):
            move_batch(b, to, now=7.0)
        assert b.status == frm and b.finished_at == (5.0 if frm.finished else None)


def test_counts_move_with_the_job_per_kind():
    b = batch()
    comp = job(None, JobKind.COMPENSATION)
    own = job(None)
    callback = job(None, JobKind.CALLBACK)
    for j in (comp, own, callback):
        move_job(b, j, W)
        move_job(b, j, Q)
    assert b.jobs.as_dict() == {**Counts().as_dict(), "queued": 1}
    assert b.comps.as_dict() == {**Counts().as_dict(), "queued": 1}
    # A callback job is not counted anywhere, but its status still changes and is checked.
    assert callback.status == Q and b.jobs.total == 1 and b.comps.total == 1
    with pytest.raises(IllegalMove):
        move_job(b, callback, C)
    move_job(b, comp, R)
    move_job(b, comp, C)
    assert (b.comps.queued, b.comps.running, b.comps.completed, b.jobs.queued) == (0, 0, 1, 1)


def test_move_jobs_moves_n_counts_and_refuses_more_than_a_status_holds():
    b = batch(waiting=5, failed=2)
    move_jobs(b, JobKind.JOB, W, Q, 3)
    assert (b.jobs.waiting, b.jobs.queued) == (2, 3)
    move_jobs(b, JobKind.JOB, W, Q, 2)  # exactly what is there
    assert (b.jobs.waiting, b.jobs.queued) == (0, 5)
    move_jobs(b, JobKind.JOB, W, Q, 0)  # nothing is a move too
    assert (b.jobs.waiting, b.jobs.queued) == (0, 5)
    with pytest.raises(IllegalMove, match="cannot move 3"):
        move_jobs(b, JobKind.JOB, F, W, 3)
    assert (b.jobs.failed, b.jobs.waiting) == (2, 0)  # unchanged
    with pytest.raises(IllegalMove):
        move_jobs(b, JobKind.JOB, Q, R, -1)
    with pytest.raises(IllegalMove):
        move_jobs(b, JobKind.JOB, Q, W, 1)  # not in the table
    assert b.jobs.as_dict() == {**Counts().as_dict(), "queued": 5, "failed": 2}


def test_move_jobs_per_kind_and_new_jobs():
    b = batch(waiting=1)
    b.comps = Counts(waiting=2)
    with pytest.raises(IllegalMove):
        move_jobs(b, JobKind.COMPENSATION, W, Q, 3)
    move_jobs(b, JobKind.COMPENSATION, W, Q, 2)
    assert (b.comps.waiting, b.comps.queued, b.jobs.waiting, b.jobs.queued) == (0, 2, 1, 0)
    move_jobs(b, JobKind.JOB, None, W, 4)  # created: no source status to take from
    assert b.jobs.waiting == 5 and b.jobs.total == 5
    move_jobs(b, JobKind.CALLBACK, W, Q, 7)  # not counted: nothing to check or move
    assert b.jobs.as_dict() == {**Counts().as_dict(), "waiting": 5}


def test_counts_views():
    c = Counts(waiting=1, queued=2, running=4, completed=8, failed=16, cancelled=32)
    assert (c.open, c.in_flight, c.processed, c.total) == (7, 6, 56, 63)
    assert c[JobStatus.RUNNING] == 4 and c[JobStatus.CANCELLED] == 32
    copy = c.copy()
    copy.add(JobStatus.QUEUED, 3)
    assert (copy.queued, c.queued) == (5, 2)
    c.add(JobStatus.FAILED, -16)
    assert c.failed == 0 and c.as_dict()["failed"] == 0 and list(c.as_dict()) == COUNT_FIELDS

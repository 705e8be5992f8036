"""Statuses, the moves between them, and the one place a status changes.

A reader who wants to know "how can a job become queued again?" reads JOB_MOVES. A batch
keeps a count of its jobs in each status (`Counts`); `move_job` and `move_jobs` are the only
code that changes a job's status, and they change the counts in the same step, so a batch's
counts always equal the number of its jobs in each status. Progress reads are then O(1).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.domain.models import Batch, Job


class BatchStatus(StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"  # only compensations (a saga's undoing) are left to run
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"  # allow_failures, and some failed
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (BatchStatus.RUNNING, BatchStatus.COMPENSATING)


class JobStatus(StrEnum):
    WAITING = "waiting"  # not dispatched yet: a later chain step, over max_concurrency, or retried
    QUEUED = "queued"  # its current attempt's message is on its way to a worker
    RUNNING = "running"  # a worker holds the current attempt's lease
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobKind(StrEnum):
    JOB = "job"  # one of the batch's own jobs: counts toward its progress
    COMPENSATION = "compensation"  # undoes a job of the batch (saga)
    CALLBACK = "callback"  # on_complete / on_failure callback job; not counted


class AttemptStatus(StrEnum):
    RUNNING = "running"  # the live attempt (held on the job itself)
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"  # the lease ran out: the worker died or hung
    CANCELLED = "cancelled"  # its batch was cancelled while it ran


class BatchType(StrEnum):
    PARALLEL = "parallel"
    CHAIN = "chain"


class FailurePolicy(StrEnum):
    FAIL_FAST = "fail_fast"
    ALLOW_FAILURES = "allow_failures"


W, Q, R = JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING
C, F, X = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED

# Every move a job can make, and why. (None: the job is being created.)
JOB_MOVES: dict[tuple[JobStatus | None, JobStatus], str] = {
    (None, W): "created",
    (W, Q): "dispatched: an attempt's message is written",
    (Q, R): "started: a worker took the attempt's lease",
    (R, C): "its worker reported it done",
    (R, F): "failed for good: no attempts left, not retryable, or its batch is failing fast",
    (R, Q): "retried: a new attempt after a failed or expired one",
    (W, X): "cancelled before it was dispatched (batch cancelled, or failing fast)",
    (Q, X): "cancelled before a worker started it",
    (R, X): "cancelled while running (batch cancelled); its lease is refused from then on",
    (F, W): "revived by a retry of the batch",
    (X, W): "revived by a retry of a fail-fast batch (it had been cancelled by the failure)",
}

BS = BatchStatus
# Every move a batch can make. A finished batch moves only when retried.
BATCH_MOVES: dict[tuple[BatchStatus, BatchStatus], str] = {
    (BS.RUNNING, BS.COMPENSATING): "a saga is undoing work and nothing else is left to run",
    (BS.RUNNING, BS.COMPLETED): "every job completed",
    (BS.RUNNING, BS.COMPLETED_WITH_FAILURES): "every job ended; some failed (allow_failures)",
    (BS.RUNNING, BS.FAILED): "a job failed (fail_fast)",
    (BS.RUNNING, BS.CANCELLED): "cancelled by a client",
    (BS.COMPENSATING, BS.COMPLETED_WITH_FAILURES): "the compensations ended (allow_failures)",
    (BS.COMPENSATING, BS.FAILED): "the compensations ended (fail_fast)",
    (BS.COMPENSATING, BS.CANCELLED): "cancelled by a client",
    (BS.COMPENSATING, BS.RUNNING): "a failing batch's compensations ended while its last jobs still run",
    (BS.FAILED, BS.RUNNING): "retried",
    (BS.COMPLETED_WITH_FAILURES, BS.RUNNING): "retried",
}


class IllegalMove(Exception):
    """A move the tables above do not allow: a bug, never a client's mistake."""


@dataclass
class Counts:
    """How many jobs of one kind a batch has in each status."""

    waiting: int = 0
    queued: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    def __getitem__(self, status: JobStatus) -> int:
        return getattr(self, status.value)

    def add(self, status: JobStatus, n: int) -> None:
        setattr(self, status.value, getattr(self, status.value) + n)

    @property
    def total(self) -> int:
        return self.open + self.processed

    @property
    def open(self) -> int:
        return self.waiting + self.queued + self.running

    @property
    def in_flight(self) -> int:
        return self.queued + self.running

    @property
    def processed(self) -> int:
        return self.completed + self.failed + self.cancelled

    def copy(self) -> Counts:
        return Counts(**self.as_dict())

    def as_dict(self) -> dict[str, int]:
        return {s.value: self[s] for s in JobStatus}


COUNTED = (JobKind.JOB, JobKind.COMPENSATION)
COUNT_FIELDS = [f.name for f in fields(Counts)]


def check_job_move(frm: JobStatus | None, to: JobStatus) -> None:
    if (frm, to) not in JOB_MOVES:
        raise IllegalMove(f"a job cannot move from {frm} to {to}")


def move_job(batch: Batch, job: Job, to: JobStatus) -> None:
    """Change one job's status and its batch's counts together."""
    frm = job.status
    check_job_move(frm, to)
    counts = batch.counts(job.kind)
    if counts is not None:
        if frm is not None:
            counts.add(frm, -1)
        counts.add(to, 1)
    job.status = to


def move_jobs(batch: Batch, kind: JobKind, frm: JobStatus | None, to: JobStatus, n: int) -> None:
    """The counts side of a set-based move of n jobs (the store moves the rows)."""
    check_job_move(frm, to)
    if n < 0 or (frm is not None and kind in COUNTED and batch.counts(kind)[frm] < n):  # type: ignore[index]
        raise IllegalMove(f"cannot move {n} {kind} jobs from {frm}")
    counts = batch.counts(kind)
    if counts is not None:
        if frm is not None:
            counts.add(frm, -n)
        counts.add(to, n)


def move_batch(batch: Batch, to: BatchStatus, now: float) -> None:
    """Change a batch's status; a finished batch gets its end time, a revived one loses it."""
    if (batch.status, to) not in BATCH_MOVES:
        raise IllegalMove(f"a batch cannot move from {batch.status} to {to}")
    batch.status = to
    batch.finished_at = now if to.finished else None

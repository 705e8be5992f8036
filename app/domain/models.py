"""The batch model: plain records, no I/O. Stores map them to rows / hashes."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


class BatchStatus:
    PENDING = "pending"
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED = "failed"
    CANCELLED = "cancelled"

    FINISHED = frozenset({COMPLETED, COMPLETED_WITH_FAILURES, FAILED, CANCELLED})
    ALL = (PENDING, RUNNING, COMPENSATING, COMPLETED, COMPLETED_WITH_FAILURES, FAILED, CANCELLED)


class JobStatus:
    PENDING = "pending"  # not dispatched yet (chain step waiting, concurrency limit, retry)
    QUEUED = "queued"  # a message for the current attempt is on its way to a worker
    RUNNING = "running"  # a worker holds the current attempt's lease
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    ACTIVE = frozenset({QUEUED, RUNNING})
    FINISHED = frozenset({COMPLETED, FAILED, CANCELLED})
    ALL = (PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)


class JobKind:
    JOB = "job"  # counts toward the batch
    COMPENSATION = "compensation"  # undoes a job of the batch (saga)
    CALLBACK = "callback"  # on_complete / on_failure callback job

    ALL = (JOB, COMPENSATION, CALLBACK)


class AttemptStatus:
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"  # lease ran out: the worker died or hung
    CANCELLED = "cancelled"

    ACTIVE = frozenset({QUEUED, RUNNING})


class BatchType:
    PARALLEL = "parallel"
    CHAIN = "chain"


class FailurePolicy:
    FAIL_FAST = "fail_fast"
    ALLOW_FAILURES = "allow_failures"


@dataclass
class Batch:
    id: str
    type: str
    queue: str
    status: str = BatchStatus.PENDING
    context: dict[str, Any] = field(default_factory=dict)
    failure_policy: str = FailurePolicy.FAIL_FAST
    max_concurrency: int | None = None
    callbacks: dict[str, Any] = field(default_factory=dict)  # on_complete / on_failure / on_event
    # Maintained counters of kind=job jobs: a progress read never scans jobs.
    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    waiting: int = 0  # pending: not dispatched yet
    in_flight: int = 0  # queued or running
    # Compensation jobs not yet finished, and the tallies of those that did.
    comp_open: int = 0
    comp_completed: int = 0
    comp_failed: int = 0
    next_position: int = 0
    finish_seq: int = 0  # order in which jobs completed, for reverse compensation
    progress_step: int = 0  # last 10% step announced as an event
    error: dict[str, Any] | None = None  # the failure that failed the batch
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in BatchStatus.FINISHED

    @property
    def processed(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def unfinished(self) -> int:
        return self.total - self.processed


@dataclass
class Job:
    id: str
    batch_id: str
    position: int
    name: str
    queue: str
    kind: str = JobKind.JOB
    args: dict[str, Any] = field(default_factory=dict)
    compensation: dict[str, Any] | None = None  # {"name", "args"}
    max_attempts: int = 1
    timeout_s: float = 60.0
    status: str = JobStatus.PENDING
    attempts: int = 0  # attempts dispatched so far
    attempt_base: int = 0  # attempts before the last manual retry (budget restarts there)
    error: str | None = None
    result: Any = None
    context_in: dict[str, Any] | None = None  # context the job ran with; kept only when a compensation may need it
    original_job_id: str | None = None  # for compensation jobs
    compensation_info: dict[str, Any] | None = None  # for compensation jobs: the _compensation block
    finish_seq: int | None = None
    cancel_reason: str | None = None
    created_at: float = 0.0
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def attempts_left(self) -> int:
        return self.max_attempts - (self.attempts - self.attempt_base)


@dataclass
class Attempt:
    job_id: str
    attempt: int
    batch_id: str
    status: str = AttemptStatus.QUEUED
    lease: str | None = None
    lease_expires_at: float | None = None
    queued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    worker: str | None = None


@dataclass
class Message:
    """One delivery intent: written with the state change that causes it (outbox)."""

    queue: str
    job_id: str
    attempt: int
    payload: dict[str, Any]
    available_at: float


@dataclass
class Event:
    batch_id: str
    type: str
    data: dict[str, Any]
    created_at: float
    id: int | None = None


@dataclass
class Webhook:
    """One webhook to deliver; its delivery attempts are recorded in `deliveries`."""

    id: str
    batch_id: str
    event_type: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: str = "pending"  # pending | delivered | failed
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = 0.0
    delivered_at: float | None = None


def record_fields(cls) -> list[str]:
    return [f.name for f in fields(cls)]


# Field names of each record: how stores map records to rows and JSON.
BATCH_FIELDS = record_fields(Batch)
JOB_FIELDS = record_fields(Job)
ATTEMPT_FIELDS = record_fields(Attempt)
WEBHOOK_FIELDS = record_fields(Webhook)

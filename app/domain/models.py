"""The batch model: plain records, no I/O. Stores map them to rows / hashes.

A job is addressed by its batch and its position in it; its public id says both
(`<batch_id>.<position>`), so any report names the batch it changes without a lookup.
Timestamps are Unix seconds (floats) inside; the API shows them as RFC 3339.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from app.domain.states import COUNTED, AttemptStatus, BatchStatus, BatchType, Counts, FailurePolicy, JobKind, JobStatus

JobKey = tuple[str, int]  # (batch id, position)


def job_id(batch_id: str, position: int) -> str:
    return f"{batch_id}.{position}"


def parse_job_id(value: str) -> JobKey | None:
    """The (batch id, position) a job id names, or None if it names none."""
    batch_id, dot, position = value.rpartition(".")
    if not dot or not batch_id or not position.isdigit() or len(position) > 9:
        return None
    return batch_id, int(position)


@dataclass
class CompensationSpec:
    """What undoes a job: a job name, its own args, its own attempt budget (default: the job's)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    max_attempts: int | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> CompensationSpec | None:
        return None if data is None else cls(**data)


@dataclass
class CallbackJob:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Callback:
    """A webhook, a callback job, or both. `events` filters on_event (None: every event)."""

    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    job: CallbackJob | None = None
    events: list[str] | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Callback | None:
        if data is None:
            return None
        job = data.get("job")
        return cls(
            url=data.get("url"),
            headers=dict(data.get("headers") or {}),
            job=CallbackJob(**job) if job else None,
            events=data.get("events"),
        )


@dataclass
class Callbacks:
    on_complete: Callback | None = None
    on_failure: Callback | None = None
    on_event: Callback | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Callbacks:
        data = data or {}
        return cls(**{k: Callback.of(data.get(k)) for k in ("on_complete", "on_failure", "on_event")})

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Failure:
    """The failure that failed a fail-fast batch."""

    job_id: str
    name: str
    error: str | None


@dataclass
class Batch:
    id: str
    type: BatchType
    queue: str
    tenant: str = "default"
    status: BatchStatus = BatchStatus.RUNNING
    context: dict[str, Any] = field(default_factory=dict)
    failure_policy: FailurePolicy = FailurePolicy.FAIL_FAST
    max_concurrency: int | None = None
    callbacks: Callbacks = field(default_factory=Callbacks)
    error: Failure | None = None
    jobs: Counts = field(default_factory=Counts)  # the batch's own jobs, by status
    comps: Counts = field(default_factory=Counts)  # its compensation jobs, by status
    next_position: int = 0
    traceparent: str | None = None  # W3C trace context of the request that created it
    # Makes each delivery's lease (rules.lease_for): never shown, so leases cannot be guessed.
    lease_key: str = ""
    # Idempotency-Keys of recent add-jobs requests: key -> {"hash", "first", "count", "at"}.
    adds: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0  # bumped by every committed change (optimistic checks)
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status.finished

    def counts(self, kind: JobKind) -> Counts | None:
        if kind == JobKind.JOB:
            return self.jobs
        if kind == JobKind.COMPENSATION:
            return self.comps
        return None


@dataclass
class Job:
    batch_id: str
    position: int
    name: str
    queue: str
    kind: JobKind = JobKind.JOB
    args: dict[str, Any] = field(default_factory=dict)
    compensation: CompensationSpec | None = None
    max_attempts: int = 1
    timeout_s: float = 60.0
    status: JobStatus | None = None  # None until created (move_job sets it)
    attempts: int = 0  # number of the current (or last) attempt
    attempt_base: int = 0  # attempts before the last retry by hand (the budget restarts there)
    available_at: float | None = None  # queued: when its message is due (retry backoff)
    # The live attempt (while running): its lease and who holds it.
    lease: str | None = None
    lease_expires_at: float | None = None
    started_at: float | None = None
    worker: str | None = None
    error: str | None = None
    result: Any = None
    context_in: dict[str, Any] | None = None  # a chain step's context when it ran (its compensation is told)
    original_position: int | None = None  # a compensation: the job it undoes
    compensation_info: dict[str, Any] | None = None  # a compensation: the `_compensation` block
    created_at: float = 0.0
    queued_at: float | None = None
    finished_at: float | None = None

    @property
    def id(self) -> str:
        return job_id(self.batch_id, self.position)

    @property
    def key(self) -> JobKey:
        return (self.batch_id, self.position)

    @property
    def counted(self) -> bool:
        return self.kind in COUNTED

    @property
    def attempts_left(self) -> int:
        return self.max_attempts - (self.attempts - self.attempt_base)


@dataclass
class Attempt:
    """An attempt that ended (the running one, and the one that completed its job, live on the job)."""

    batch_id: str
    position: int
    attempt: int
    status: AttemptStatus
    worker: str | None = None
    error: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class Message:
    """A delivery intent, written with the state change that causes it (the outbox).

    It carries only the attempt's address: the worker gets the whole message when it
    starts the attempt, built from the store's current state.
    """

    tenant: str
    queue: str
    batch_id: str
    position: int
    attempt: int
    available_at: float

    def payload(self) -> dict[str, Any]:
        return {"job_id": job_id(self.batch_id, self.position), "batch_id": self.batch_id, "attempt": self.attempt}


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


def record_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


ATTEMPT_FIELDS = record_fields(Attempt)
WEBHOOK_FIELDS = record_fields(Webhook)

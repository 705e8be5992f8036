"""The API's JSON replies as TypedDicts: at run time each is the JSON dict as received.

They give static typing (and editor completion) without a parsing layer that would break
when the server adds a field: every reply model is `total=False`, so a field the server
drops or has not filled is not a type error, and extra keys are kept as they came.
Timestamps are strings (RFC 3339) as the API sends them.
"""
from __future__ import annotations

from typing import Any, Literal, TypedDict

BatchStatus = Literal["running", "compensating", "completed", "completed_with_failures", "failed", "cancelled"]
JobStatus = Literal["waiting", "queued", "running", "completed", "failed", "cancelled"]
JobKind = Literal["job", "compensation", "callback"]

FINISHED: frozenset[str] = frozenset({"completed", "completed_with_failures", "failed", "cancelled"})
"""Batch statuses that do not change any more (unless the batch is retried)."""


class Compensations(TypedDict, total=False):
    open: int  # waiting, queued or running
    completed: int
    failed: int
    cancelled: int


class Failure(TypedDict, total=False):
    """The failure that failed a fail-fast batch."""

    job_id: str
    name: str
    error: str | None


class Progress(TypedDict, total=False):
    """GET /v1/batches/{id}/progress: maintained counters, O(1) to read."""

    batch_id: str
    status: BatchStatus
    type: Literal["parallel", "chain"]
    total: int  # the batch's own jobs (compensations and callbacks not counted)
    waiting: int  # not dispatched yet (a later chain step, over max_concurrency, retried)
    queued: int  # a message is on its way to a worker
    running: int  # a worker holds the lease
    completed: int
    failed: int
    cancelled: int
    percentage: float
    compensations: Compensations


class Batch(TypedDict, total=False):
    """A batch with its progress (POST /v1/batches, GET /v1/batches/{id}); lists and
    replies of cancel / retry / add jobs carry it without `context`."""

    id: str
    tenant: str
    status: BatchStatus
    type: Literal["parallel", "chain"]
    total: int
    waiting: int
    queued: int
    running: int
    completed: int
    failed: int
    cancelled: int
    percentage: float
    compensations: Compensations
    queue: str
    context: dict[str, Any]
    failure_policy: Literal["fail_fast", "allow_failures"]
    max_concurrency: int | None
    on_complete: dict[str, Any] | None
    on_failure: dict[str, Any] | None
    on_event: dict[str, Any] | None
    error: Failure | None
    created_at: str
    updated_at: str
    finished_at: str | None


class BatchPage(TypedDict, total=False):
    batches: list[Batch]
    next: str | None  # the `before` of the next page


class Job(TypedDict, total=False):
    id: str
    batch_id: str
    position: int
    kind: JobKind
    name: str
    queue: str
    args: dict[str, Any]
    compensation: Any
    status: JobStatus
    attempts: int
    max_attempts: int
    timeout_s: float | None
    error: str | None
    result: Any  # present once completed
    original_job_id: str  # a compensation: the job it undoes
    created_at: str
    queued_at: str | None
    started_at: str | None
    finished_at: str | None


class Attempt(TypedDict, total=False):
    attempt: int
    status: str
    worker: str | None
    error: str | None
    queued_at: str | None
    started_at: str | None
    finished_at: str | None
    lease_expires_at: str | None


class JobDetail(Job, total=False):
    """GET /v1/batches/{id}/jobs/{job_id}: the job with every attempt."""

    attempt_history: list[Attempt]


class JobPage(TypedDict, total=False):
    jobs: list[Job]
    limit: int
    offset: int


class Results(TypedDict, total=False):
    batch_id: str
    status: BatchStatus
    context: dict[str, Any]
    results: dict[str, Any]  # job id -> result (a null result stays null)


class RetryReply(TypedDict, total=False):
    batch: Batch
    retried: int  # how many jobs run again


class AddJobsReply(TypedDict, total=False):
    batch: Batch
    added: int
    job_ids: list[str]


class Event(TypedDict, total=False):
    id: int
    type: str
    batch_id: str
    data: dict[str, Any]
    at: str


class EventPage(TypedDict, total=False):
    events: list[Event]


class Webhook(TypedDict, total=False):
    id: str
    event_type: str
    url: str
    status: str
    attempts: int
    last_error: str | None
    deliveries: list[dict[str, Any]]
    created_at: str
    delivered_at: str | None


class CallbacksPage(TypedDict, total=False):
    webhooks: list[Webhook]


class QueueInfo(TypedDict, total=False):
    name: str
    declared: bool
    depth: int
    queued: int
    running: int
    oldest_age_s: float


class QueuesPage(TypedDict, total=False):
    queues: list[QueueInfo]


class StreamsInfo(TypedDict, total=False):
    """GET /v1/queues/{queue}/streams: what a direct Redis reader reads."""

    group: str
    streams: list[str]


class Message(TypedDict, total=False):
    """One delivery (attempt) of a job, as a worker receives it (openapi/message.schema.json)."""

    job_id: str
    batch_id: str
    attempt: int
    name: str
    kind: JobKind
    args: dict[str, Any]
    context: dict[str, Any]
    position: int
    queue: str
    timeout_s: float | None
    max_attempts: int | None
    compensation: dict[str, Any]
    lease: str
    lease_expires_at: str  # RFC 3339
    traceparent: str  # W3C trace context of the request that created the batch


class Refusal(TypedDict, total=False):
    """One refused item of a many-at-once call, with the status a single call would get."""

    job_id: str
    attempt: int
    status_code: int
    error: dict[str, Any]


class StartsReply(TypedDict, total=False):
    messages: list[Message]
    refused: list[Refusal]


class HeartbeatReply(TypedDict, total=False):
    job_id: str
    attempt: int
    lease_expires_at: str


class ReportReply(TypedDict, total=False):
    job_id: str
    status: JobStatus
    attempts: int
    duplicate: bool


class ReportItem(TypedDict, total=False):
    """One outcome for POST /v1/reports."""

    job_id: str
    attempt: int
    lease: str
    outcome: Literal["completed", "failed"]
    result: Any
    context: dict[str, Any]
    error: str
    retryable: bool
    traceparent: str  # W3C: the worker's span of this attempt (its report joins the batch's trace)


class ReportOutcome(TypedDict, total=False):
    """Each report's own outcome: status_code 200, or 404/409 with `error`."""

    job_id: str
    attempt: int
    status_code: int
    status: JobStatus
    attempts: int
    duplicate: bool
    error: dict[str, Any]


class Health(TypedDict, total=False):
    status: str


class Readiness(TypedDict, total=False):
    status: str
    store: bool
    broker: bool


class Caller(TypedDict, total=False):
    """Who the API key is: its tenant, its scopes and the queues it may work (None: any)."""

    tenant: str
    scopes: list[str]
    queues: list[str] | None


class WebhookSecrets(TypedDict, total=False):
    """The secrets deliveries are signed with (whsec_<base64>); generated: made by this installation."""

    secrets: list[str]
    generated: bool

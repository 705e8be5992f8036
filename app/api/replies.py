"""The API's replies as pydantic models: they make the OpenAPI document the contract.

Every time is an RFC 3339 string. Every error is ErrorOut, with the statuses each route
documents (ERRORS). Replies may gain fields in later versions: clients ignore unknown ones.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

BatchStatusName = Literal["running", "compensating", "completed", "completed_with_failures", "failed", "cancelled"]
JobStatusName = Literal["waiting", "queued", "running", "completed", "failed", "cancelled"]
JobKindName = Literal["job", "compensation", "callback"]
Time = str  # RFC 3339


class ErrorBody(BaseModel):
    code: str = Field(description="what went wrong, e.g. validation_error, not_found, conflict")
    message: str = Field(description="for people; names the field when there is one")
    field: str | None = Field(default=None, description="the place in the request, e.g. jobs[3].args.x")
    request_id: str | None = Field(default=None, description="on a 500: quote it to the operator")


class ErrorOut(BaseModel):
    error: ErrorBody


_DESCRIPTIONS = {
    400: "The body is not JSON that can be read.",
    401: "No key, or an unknown one (see WWW-Authenticate).",
    403: "The key lacks the scope (or the queue) this needs.",
    404: "No such batch or job (or it belongs to another tenant).",
    409: "The batch or attempt is in a state that refuses this.",
    413: "The body is larger than BATCHQ_MAX_BODY_BYTES.",
    415: "The body is not sent as application/json.",
    422: "A field is invalid: `field` names it; nothing was written.",
    503: "The store is busy or unreachable: retry after Retry-After seconds.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route: the error statuses it can answer, in the one error shape."""
    return {s: {"model": ErrorOut, "description": _DESCRIPTIONS[s]} for s in statuses}


# What every /v1 route can answer; routes with a body add 400/413/415.
READ_ERRORS = errors(401, 403, 404, 422, 503)
WRITE_ERRORS = errors(400, 401, 403, 404, 409, 413, 415, 422, 503)


class Compensations(BaseModel):
    open: int = Field(description="waiting, queued or running")
    completed: int
    failed: int
    cancelled: int


class Failure(BaseModel):
    job_id: str
    name: str
    error: str | None


class Progress(BaseModel):
    batch_id: str
    status: BatchStatusName
    type: Literal["parallel", "chain"]
    total: int = Field(description="the batch's own jobs (compensations and callbacks are not counted)")
    waiting: int = Field(description="not dispatched yet: a later chain step, over max_concurrency, or retried")
    queued: int = Field(description="a message is on its way to a worker")
    running: int = Field(description="a worker holds the lease")
    completed: int
    failed: int
    cancelled: int
    percentage: float = Field(description="completed + failed + cancelled, of total")
    compensations: Compensations


class CallbackJobOut(BaseModel):
    name: str
    args: dict[str, Any]


class CallbackOut(BaseModel):
    url: str | None = None
    headers: dict[str, str] = {}
    job: CallbackJobOut | None = None
    events: list[str] | None = None


class BatchSummary(BaseModel):
    """A batch without its context."""

    id: str
    tenant: str
    type: Literal["parallel", "chain"]
    status: BatchStatusName
    queue: str
    total: int
    waiting: int
    queued: int
    running: int
    completed: int
    failed: int
    cancelled: int
    percentage: float
    compensations: Compensations
    failure_policy: Literal["fail_fast", "allow_failures"]
    max_concurrency: int | None
    on_complete: CallbackOut | None
    on_failure: CallbackOut | None
    on_event: CallbackOut | None
    error: Failure | None = Field(description="the failure that failed a fail-fast batch")
    created_at: Time
    updated_at: Time
    finished_at: Time | None


class Batch(BatchSummary):
    context: dict[str, Any] = Field(description="shared input; a chain's accumulated context")


class BatchPage(BaseModel):
    batches: list[BatchSummary]
    next: str | None = Field(description="pass as `before` for the next page")


class CompensationOut(BaseModel):
    name: str
    args: dict[str, Any]
    max_attempts: int | None


class Job(BaseModel):
    id: str = Field(description="<batch_id>.<position>")
    batch_id: str
    position: int
    kind: JobKindName
    name: str
    queue: str
    args: dict[str, Any]
    compensation: CompensationOut | None
    status: JobStatusName
    attempts: int
    max_attempts: int
    timeout_s: float
    error: str | None
    result: Any = Field(default=None, description="present once completed (null is a result)")
    original_job_id: str | None = Field(default=None, description="a compensation: the job it undoes")
    created_at: Time
    queued_at: Time | None
    started_at: Time | None
    finished_at: Time | None


class Attempt(BaseModel):
    attempt: int
    status: Literal["running", "completed", "failed", "expired", "cancelled"]
    worker: str | None
    error: str | None
    queued_at: Time | None
    started_at: Time | None
    finished_at: Time | None
    lease_expires_at: Time | None = None


class JobDetail(Job):
    attempt_history: list[Attempt]


class JobPage(BaseModel):
    jobs: list[Job]
    limit: int
    offset: int


class Results(BaseModel):
    batch_id: str
    status: BatchStatusName
    context: dict[str, Any]
    results: dict[str, Any] = Field(description="job id -> result, for completed jobs")


class JobsAdded(BaseModel):
    batch: BatchSummary
    added: int
    job_ids: list[str]


class Retried(BaseModel):
    batch: BatchSummary
    retried: int = Field(description="how many jobs run again")


class Event(BaseModel):
    id: int
    type: str
    batch_id: str
    data: dict[str, Any]
    at: Time


class EventPage(BaseModel):
    events: list[Event]


class Delivery(BaseModel):
    attempt: int
    at: Time
    status_code: int | None = None
    error: str | None = None
    duration_ms: float | None = None


class WebhookOut(BaseModel):
    id: str
    event_type: str
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    deliveries: list[Delivery]
    created_at: Time
    delivered_at: Time | None


class Callbacks(BaseModel):
    webhooks: list[WebhookOut]


class QueueOut(BaseModel):
    name: str
    declared: bool
    depth: int = Field(description="messages in the broker")
    queued: int = Field(description="jobs the store has queued")
    running: int
    oldest_age_s: float


class Queues(BaseModel):
    queues: list[QueueOut]


class Streams(BaseModel):
    group: str
    streams: list[str]


class Message(BaseModel):
    """A started attempt (openapi/message.schema.json has its full description)."""

    job_id: str
    batch_id: str
    attempt: int
    lease: str
    lease_expires_at: Time
    name: str
    kind: JobKindName
    args: dict[str, Any]
    context: dict[str, Any]
    position: int
    queue: str
    timeout_s: float
    max_attempts: int
    compensation: dict[str, Any] | None = None
    traceparent: str | None = None


class Claimed(BaseModel):
    messages: list[Message]


class Refusal(BaseModel):
    job_id: str
    attempt: int
    status_code: int
    error: ErrorBody


class Started(BaseModel):
    messages: list[Message]
    refused: list[Refusal]


class Heartbeat(BaseModel):
    job_id: str
    attempt: int
    lease_expires_at: Time


class Reported(BaseModel):
    job_id: str
    status: JobStatusName
    attempts: int
    duplicate: bool = Field(description="the same report again: it changed nothing")


class ReportOutcome(BaseModel):
    job_id: str
    attempt: int
    status_code: int = Field(description="200, or what a single report would have got (404, 409, 403)")
    status: JobStatusName | None = None
    attempts: int | None = None
    duplicate: bool | None = None
    error: ErrorBody | None = None


class ReportOutcomes(BaseModel):
    results: list[ReportOutcome]


class WebhookSecrets(BaseModel):
    secrets: list[str] = Field(description="every delivery carries one `v1,…` signature per secret (whsec_<base64>)")
    generated: bool = Field(description="true: generated for this installation and kept in its store, none being configured")


class Me(BaseModel):
    tenant: str
    scopes: list[str]
    queues: list[str] | None = None


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: Literal["ok", "unavailable"]
    store: bool
    broker: bool

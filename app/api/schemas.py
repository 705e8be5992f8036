"""Request bodies of the v1 API (with app.api.replies, they make the OpenAPI document).

Strict: no field is coerced from another type ("3" is not a number), unknown fields are
refused, and every number has a documented range. Values inside `args`, `context`, results
and items are kept exactly as sent (nulls included).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from app.api.callback_fields import CallbackHeaders, CallbackUrl
from app.domain.models import Callback, CallbackJob, Callbacks
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
QueueName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


EventType = Literal[
    "started", "progress", "job_failed", "job_retrying", "compensating", "compensation_failed", "status",
    "jobs_added", "retried", "completed", "completed_with_failures", "failed", "cancelled",
]  # fmt: skip
WorkerName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x20-\x7e]+$", description="for the attempt history")]


class CompensationIn(Strict):
    name: Name
    args: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int | None = Field(default=None, ge=1, le=100)  # default: the job's own


def _form(value: Any) -> str:
    """Which form a job / compensation was given in (errors then concern that form only)."""
    if isinstance(value, str):
        return "form:name"
    if isinstance(value, list):
        return "form:pair"
    return "form:object"


# A compensation is "Name" or {name, args?}.
CompensationField = Annotated[
    Annotated[Name, Tag("form:name")] | Annotated[CompensationIn, Tag("form:object")],
    Discriminator(_form),
]


class JobObjectIn(Strict):
    name: Name
    args: dict[str, Any] = Field(default_factory=dict)
    compensation: CompensationField | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    timeout_s: float | None = Field(default=None, ge=1, le=86400)
    queue: QueueName | None = None




# A job is "Name", ["Name", "CompensationName"] or {name, args?, compensation?, ...}.
JobIn = Annotated[
    Annotated[Name, Tag("form:name")]
    | Annotated[list[Name], Field(min_length=1, max_length=2), Tag("form:pair")]
    | Annotated[JobObjectIn, Tag("form:object")],
    Discriminator(_form),
]


class WebhookIn(Strict):
    url: CallbackUrl
    headers: CallbackHeaders = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def http_only(cls, v: AnyHttpUrl) -> AnyHttpUrl:
        if v.scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return v


class CallbackJobIn(Strict):
    name: Name
    args: dict[str, Any] = Field(default_factory=dict)


class CallbackIn(Strict):
    """A webhook, a callback job, or both."""

    url: CallbackUrl | None = None
    headers: CallbackHeaders = Field(default_factory=dict)
    job: CallbackJobIn | None = None

    @model_validator(mode="after")
    def one_target(self) -> "CallbackIn":
        if self.url is None and self.job is None:
            raise ValueError("give a url, a job, or both")
        if self.url is not None and self.url.scheme not in ("http", "https"):
            raise ValueError("url must be http(s)")
        return self


class EventHookIn(WebhookIn):
    events: list[EventType] | None = Field(default=None, min_length=1, description="the event types to send (default: all)")


class BatchIn(Strict):
    type: Literal["parallel", "chain"] = "parallel"
    jobs: list[JobIn] | None = Field(default=None, min_length=1, max_length=100_000)
    # Shorthand: one job name and a list of items, one job per item (`item` argument).
    job: Name | None = None
    items: list[Any] | None = Field(default=None, min_length=1, max_length=100_000)
    context: dict[str, Any] = Field(default_factory=dict)
    queue: QueueName | None = None
    failure_policy: Literal["fail_fast", "allow_failures"] | None = None
    max_concurrency: int | None = Field(default=None, ge=1, le=1_000_000)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    timeout_s: float | None = Field(default=None, ge=1, le=86400)
    on_complete: CallbackIn | None = None
    on_failure: CallbackIn | None = None
    on_event: EventHookIn | None = None

    def callback_urls(self) -> dict[str, AnyHttpUrl | None]:
        """Each callback URL by the field that gave it."""
        hooks = {"on_complete": self.on_complete, "on_failure": self.on_failure, "on_event": self.on_event}
        return {f"{name}.url": hook.url for name, hook in hooks.items() if hook is not None}

    def shape_error(self) -> tuple[str, str] | None:
        """(field, message) when jobs / job / items do not fit together."""
        if self.jobs is None and self.job is None:
            if self.items is not None:
                return "job", "`items` needs `job`, the job name to run for each item"
            return "jobs", "give `jobs`, or `job` with `items`"
        if self.jobs is not None and (self.job is not None or self.items is not None):
            return "jobs", "give either `jobs` or `job` with `items`, not both"
        if self.job is not None and self.items is None:
            return "items", "`job` needs `items`"
        if self.type == "chain" and self.max_concurrency is not None:
            return "max_concurrency", "a chain runs one job at a time; max_concurrency is for parallel batches"
        return None


class ChainIn(BatchIn):
    type: Literal["chain"] = "chain"


class AddJobsIn(Strict):
    jobs: list[JobIn] = Field(min_length=1, max_length=100_000)


class RetryJobsIn(Strict):
    job_ids: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(min_length=1, max_length=100_000)


class ClaimIn(Strict):
    max: int = Field(default=1, ge=1, le=100)
    wait_s: float = Field(default=0.0, ge=0, le=30, description="long-poll up to this many seconds")
    worker: WorkerName | None = None


Delivery = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$",
               description="the stream entry id the message came with: a start repeated for it gets the same lease")
]  # fmt: skip


class StartIn(Strict):
    attempt: Attempt
    worker: WorkerName | None = None
    delivery: Delivery | None = None


class StartItemIn(Strict):
    job_id: str = Field(min_length=1, max_length=80)
    attempt: Attempt
    delivery: Delivery | None = None


class StartManyIn(Strict):
    attempts: list[StartItemIn] = Field(min_length=1, max_length=100)
    worker: WorkerName | None = None


Attempt = Annotated[int, Field(ge=1, le=1_000_000, description="the attempt number the message carried")]
Lease = Annotated[str, Field(min_length=1, max_length=64, description="the lease the started message carried")]


TraceParent = Annotated[
    str, Field(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
               description="W3C trace context of the worker's span of this attempt (the report joins the batch's trace)")
]  # fmt: skip


class ReportIn(Strict):
    attempt: Attempt
    lease: Lease


class CompleteIn(ReportIn):
    result: Any = None
    context: dict[str, Any] | None = None
    traceparent: TraceParent | None = None


class FailIn(ReportIn):
    error: str = Field(min_length=1, max_length=20000)
    retryable: bool = True
    traceparent: TraceParent | None = None


class ReportItemIn(Strict):
    """One attempt's outcome, for reporting many at once."""

    job_id: str = Field(min_length=1, max_length=80)
    attempt: Attempt
    lease: Lease
    outcome: Literal["completed", "failed"]
    result: Any = None
    context: dict[str, Any] | None = None
    error: str | None = Field(default=None, min_length=1, max_length=20000)
    retryable: bool = True
    traceparent: TraceParent | None = None

    @model_validator(mode="after")
    def failure_has_error(self) -> "ReportItemIn":
        if self.outcome == "failed" and not self.error:
            raise ValueError("a failed report needs an `error`")
        return self


class ReportsIn(Strict):
    reports: list[ReportItemIn] = Field(min_length=1, max_length=500)


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


def callbacks_of(body: BatchIn) -> Callbacks:
    """The callbacks of a definition as the domain's value objects."""

    def one(cb: CallbackIn | EventHookIn | None) -> Callback | None:
        if cb is None:
            return None
        job = getattr(cb, "job", None)
        return Callback(
            url=str(cb.url) if cb.url is not None else None,
            headers=dict(cb.headers),
            job=CallbackJob(job.name, job.args) if job is not None else None,
            events=getattr(cb, "events", None),
        )

    return Callbacks(on_complete=one(body.on_complete), on_failure=one(body.on_failure), on_event=one(body.on_event))

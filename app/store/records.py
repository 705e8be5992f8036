"""Records <-> flat dicts of plain values: SQL rows and Redis JSON use the same mapping.

A batch's counts are flat fields (`jobs_waiting`, `comps_failed`, …) so that stores can
change them with atomic increments.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from app.domain.models import Batch, Callbacks, CompensationSpec, Failure, Job
from app.domain.states import COUNT_FIELDS, BatchStatus, BatchType, Counts, FailurePolicy, JobKind, JobStatus

COUNTER_FIELDS = [f"{group}_{name}" for group in ("jobs", "comps") for name in COUNT_FIELDS]

BATCH_FIELDS = [
    "id", "tenant", "type", "queue", "status", "context", "failure_policy", "max_concurrency",
    "callbacks", "error", *COUNTER_FIELDS, "next_position", "traceparent", "adds", "version",
    "created_at", "updated_at", "finished_at",
]  # fmt: skip
# Fields of a batch other than its counts and version: what an optimistic commit compares.
BATCH_STATE_FIELDS = [f for f in BATCH_FIELDS if f not in COUNTER_FIELDS and f != "version"]

JOB_FIELDS = [
    "batch_id", "position", "kind", "name", "queue", "args", "compensation", "max_attempts",
    "timeout_s", "status", "attempts", "attempt_base", "available_at", "lease", "lease_expires_at",
    "started_at", "worker", "error", "result", "context_in", "original_position",
    "compensation_info", "created_at", "queued_at", "finished_at",
]  # fmt: skip
# What a job never changes after it is created.
JOB_FIXED = {"batch_id", "position", "kind", "name", "queue", "args", "compensation", "max_attempts", "timeout_s",
             "original_position", "compensation_info", "created_at"}  # fmt: skip
JOB_MUTABLE = [f for f in JOB_FIELDS if f not in JOB_FIXED]


def batch_row(batch: Batch) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": batch.id,
        "tenant": batch.tenant,
        "type": batch.type.value,
        "queue": batch.queue,
        "status": batch.status.value,
        "context": batch.context,
        "failure_policy": batch.failure_policy.value,
        "max_concurrency": batch.max_concurrency,
        "callbacks": batch.callbacks.as_dict(),
        "error": asdict(batch.error) if batch.error else None,
        "next_position": batch.next_position,
        "traceparent": batch.traceparent,
        "adds": batch.adds or None,
        "version": batch.version,
        "created_at": batch.created_at,
        "updated_at": batch.updated_at,
        "finished_at": batch.finished_at,
    }
    row.update(counter_values(batch))
    return row


def counter_values(batch: Batch) -> dict[str, int]:
    values = {f"jobs_{k}": v for k, v in batch.jobs.as_dict().items()}
    values.update({f"comps_{k}": v for k, v in batch.comps.as_dict().items()})
    return values


def batch_from(row: dict[str, Any]) -> Batch:
    return Batch(
        id=row["id"],
        tenant=row["tenant"],
        type=BatchType(row["type"]),
        queue=row["queue"],
        status=BatchStatus(row["status"]),
        context=row["context"],
        failure_policy=FailurePolicy(row["failure_policy"]),
        max_concurrency=row["max_concurrency"],
        callbacks=Callbacks.of(row["callbacks"]),
        error=Failure(**row["error"]) if row["error"] else None,
        jobs=Counts(**{k: int(row[f"jobs_{k}"]) for k in COUNT_FIELDS}),
        comps=Counts(**{k: int(row[f"comps_{k}"]) for k in COUNT_FIELDS}),
        next_position=int(row["next_position"]),
        traceparent=row["traceparent"],
        adds=row["adds"] or {},
        version=int(row["version"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )


def job_row(job: Job) -> dict[str, Any]:
    row = {name: getattr(job, name) for name in JOB_FIELDS}
    row["kind"] = job.kind.value
    row["status"] = job.status.value if job.status is not None else None
    row["compensation"] = asdict(job.compensation) if job.compensation else None
    return row


def job_from(row: dict[str, Any]) -> Job:
    values = {name: row[name] for name in JOB_FIELDS}
    values["kind"] = JobKind(values["kind"])
    values["status"] = JobStatus(values["status"])
    values["compensation"] = CompensationSpec.of(values["compensation"])
    return Job(**values)

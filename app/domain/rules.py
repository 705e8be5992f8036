"""Pure rules of the batch state machine: no I/O, shared by every store."""
from __future__ import annotations

import math
from typing import Any

from app.domain.models import Batch, BatchStatus, BatchType, FailurePolicy, Job, JobKind


def default_failure_policy(batch_type: str) -> str:
    return FailurePolicy.FAIL_FAST


def concurrency_limit(batch: Batch) -> int | None:
    """How many of the batch's jobs may be queued or running at once (None: no limit)."""
    if batch.type == BatchType.CHAIN:
        return 1
    return batch.max_concurrency


def dispatch_slots(batch: Batch) -> int:
    """How many more jobs may be dispatched now."""
    if batch.finished or batch.waiting <= 0 or failing(batch) or batch.status == BatchStatus.CANCELLED:
        return 0
    limit = concurrency_limit(batch)
    if limit is None:
        return batch.waiting
    return max(0, min(batch.waiting, limit - batch.in_flight))


def failing(batch: Batch) -> bool:
    """A fail-fast batch that has had a failure dispatches nothing more of its own jobs."""
    return batch.error is not None and batch.failure_policy == FailurePolicy.FAIL_FAST


def merge_context(context: dict[str, Any], update: dict[str, Any] | None) -> dict[str, Any]:
    """A step's context update is merged shallowly into the accumulated context."""
    if not update:
        return context
    return {**context, **update}


def job_arguments(batch: Batch, job: Job) -> dict[str, Any]:
    """Shared context, then the job's own args (which win), then the batch coordinates."""
    if job.kind == JobKind.JOB:
        return {**batch.context, **job.args, "batch_id": batch.id, "job_position": job.position}
    return {**job.args, "batch_id": batch.id}


def build_message(batch: Batch, job: Job, attempt: int) -> dict[str, Any]:
    """The message a worker receives (see openapi/message.schema.json)."""
    message: dict[str, Any] = {
        "job_id": job.id,
        "batch_id": batch.id,
        "attempt": attempt,
        "name": job.name,
        "kind": job.kind,
        "args": job_arguments(batch, job),
        "context": dict(batch.context),
        "position": job.position,
        "queue": job.queue,
        "timeout_s": job.timeout_s,
        "max_attempts": job.max_attempts,
    }
    if job.kind == JobKind.COMPENSATION and job.compensation_info is not None:
        message["args"]["_compensation"] = job.compensation_info
        message["compensation"] = job.compensation_info
    return message


def backoff_delay(failed_attempts: int, base: float, cap: float) -> float:
    """Exponential backoff before the next attempt: base, 2·base, 4·base … capped."""
    if base <= 0:
        return 0.0
    return min(cap, base * (2 ** max(0, failed_attempts - 1)))


def percentage(batch: Batch) -> float:
    if batch.total == 0:
        return 100.0
    return round(100.0 * batch.processed / batch.total, 2)


def progress_step(batch: Batch) -> int:
    """The 10% step the batch has reached (0..10)."""
    if batch.total == 0:
        return 10
    return math.floor(10 * batch.processed / batch.total)


def final_status(batch: Batch) -> str | None:
    """The status a batch ends with once nothing of it is open, else None."""
    if batch.waiting > 0 or batch.in_flight > 0 or batch.comp_open > 0:
        return None
    if batch.failed > 0 and batch.failure_policy == FailurePolicy.FAIL_FAST:
        return BatchStatus.FAILED
    if batch.failed > 0:
        return BatchStatus.COMPLETED_WITH_FAILURES
    return BatchStatus.COMPLETED


def live_status(batch: Batch) -> str:
    """Status of an unfinished batch: compensating while a saga is being undone."""
    if batch.comp_open > 0 and (failing(batch) or (batch.waiting == 0 and batch.in_flight == 0)):
        return BatchStatus.COMPENSATING
    return BatchStatus.RUNNING


def progress(batch: Batch) -> dict[str, Any]:
    return {
        "batch_id": batch.id,
        "status": batch.status,
        "type": batch.type,
        "total": batch.total,
        "completed": batch.completed,
        "failed": batch.failed,
        "cancelled": batch.cancelled,
        "pending": batch.unfinished,
        "in_flight": batch.in_flight,
        "percentage": percentage(batch),
        "compensations": {
            "open": batch.comp_open,
            "completed": batch.comp_completed,
            "failed": batch.comp_failed,
        },
    }

"""Pure rules of the batch state machine: no I/O, shared by every store."""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from datetime import datetime, timezone
from typing import Any

from app.domain.models import Batch, Job
from app.domain.states import BatchStatus, BatchType, Counts, FailurePolicy, JobKind


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds as the API shows every time: RFC 3339, UTC, e.g. 2026-11-27T14:44:56.123456Z."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def concurrency_limit(batch: Batch) -> int | None:
    """How many of the batch's jobs may be queued or running at once (None: no limit)."""
    if batch.type == BatchType.CHAIN:
        return 1
    return batch.max_concurrency


def failing(batch: Batch) -> bool:
    """A fail-fast batch that has had a failure dispatches and retries none of its own jobs."""
    return batch.error is not None and batch.failure_policy == FailurePolicy.FAIL_FAST


def dispatch_slots(batch: Batch) -> int:
    """How many waiting jobs may be dispatched now."""
    if batch.status != BatchStatus.RUNNING or batch.jobs.waiting <= 0 or failing(batch):
        return 0
    limit = concurrency_limit(batch)
    if limit is None:
        return batch.jobs.waiting
    return max(0, min(batch.jobs.waiting, limit - batch.jobs.in_flight))


def merge_context(context: dict[str, Any], update: dict[str, Any] | None) -> dict[str, Any]:
    """A chain step's context update is merged shallowly into the accumulated context.

    A key set to null stays, with the value null: the context holds exactly what was sent.
    """
    if not update:
        return context
    return {**context, **update}


def job_arguments(batch: Batch, job: Job) -> dict[str, Any]:
    """Shared context, then the job's own args (which win), then the batch coordinates."""
    if job.kind == JobKind.JOB:
        return {**batch.context, **job.args, "batch_id": batch.id, "job_position": job.position}
    args = {**job.args, "batch_id": batch.id}
    if job.kind == JobKind.COMPENSATION and job.compensation_info is not None:
        args["_compensation"] = job.compensation_info
    return args


def build_message(batch: Batch, job: Job) -> dict[str, Any]:
    """The message a worker gets for a started attempt (openapi/message.schema.json)."""
    message: dict[str, Any] = {
        "job_id": job.id,
        "batch_id": batch.id,
        "attempt": job.attempts,
        "lease": job.lease,
        "lease_expires_at": rfc3339(job.lease_expires_at),
        "name": job.name,
        "kind": job.kind.value,
        "args": job_arguments(batch, job),
        "context": batch.context,
        "position": job.position,
        "queue": job.queue,
        "timeout_s": job.timeout_s,
        "max_attempts": job.max_attempts,
    }
    if job.kind == JobKind.COMPENSATION and job.compensation_info is not None:
        message["compensation"] = job.compensation_info
    if batch.traceparent:
        message["traceparent"] = batch.traceparent
    return message


def lease_for(batch: Batch, job: Job, delivery: str | None) -> str:
    """The lease of a job's current attempt taken through one delivery of its message.

    The same delivery always yields the same lease, so an API process that started an attempt
    and died before answering (or whose store connection broke after the commit) does not
    strand it: the broker delivers that message again, and the start hands out the lease it
    had made. Another delivery of the same attempt (a duplicate) yields another lease and is
    refused. Without a delivery id, the lease is random.
    """
    if not delivery:
        return secrets.token_hex(16)
    text = f"{job.position}.{job.attempts}.{delivery}".encode()
    return hmac.new(batch.lease_key.encode(), text, hashlib.sha256).hexdigest()[:32]


def start_again(job: Job, worker: str | None, now: float, claim_timeout_s: float) -> bool:
    """May a delivery that started its (still running) attempt already start it again?

    Only the worker that started it (its answer was lost: it asks again), or anyone once the
    start is older than the broker's claim timeout (the entry stayed unacked that long: its
    first reader died, and the entry was taken over). A copy of the entry read again before
    that (a consumer group made anew from the start of its stream) is refused: the worker
    that got the first answer runs it, and a second one would run it too.
    """
    same_worker = worker is not None and job.worker == worker
    return same_worker or (job.started_at is not None and now - job.started_at >= claim_timeout_s)


def backoff_delay(failed_attempts: int, base: float, cap: float) -> float:
    """Exponential backoff before the next attempt: base, 2·base, 4·base … capped."""
    if base <= 0 or failed_attempts <= 0:
        return 0.0
    return min(cap, base * (2 ** (failed_attempts - 1)))


def percentage(counts: Counts) -> float:
    if counts.total == 0:
        return 100.0
    return round(100.0 * counts.processed / counts.total, 2)


def progress_step(counts: Counts) -> int:
    """The 10% step the batch has reached (0..10); a progress event marks each new step."""
    if counts.total == 0:
        return 10
    return math.floor(10 * counts.processed / counts.total)


def final_status(batch: Batch) -> BatchStatus | None:
    """The status a batch ends with once nothing of it is open, else None."""
    if batch.jobs.open > 0 or batch.comps.open > 0:
        return None
    if batch.jobs.failed > 0 and batch.failure_policy == FailurePolicy.FAIL_FAST:
        return BatchStatus.FAILED
    if batch.jobs.failed > 0:
        return BatchStatus.COMPLETED_WITH_FAILURES
    return BatchStatus.COMPLETED


def live_status(batch: Batch) -> BatchStatus:
    """Status of an unfinished batch: compensating while only a saga's undoing is left."""
    if batch.comps.open > 0 and (failing(batch) or batch.jobs.open == 0):
        return BatchStatus.COMPENSATING
    return BatchStatus.RUNNING


def quiet(status: BatchStatus, has_error: bool, counts: Counts, delta: Counts) -> bool:
    """True when moving the batch's own jobs by `delta` needs no batch-wide decision.

    Such a change (a report of one of many jobs) may commit without the batch lock, as an
    atomic increment guarded by this condition on the *current* counts; the stores check the
    same condition in SQL (sql_statements.FAST_GUARD) and Lua (redis_scripts.FAST_GUARD).
    Not quiet: the batch is not plainly running, nothing is open after it (the batch ends),
    a slot frees while jobs wait (one must be dispatched), or a 10% step is crossed (an event).
    """
    after = Counts(**{k: v + delta.as_dict()[k] for k, v in counts.as_dict().items()})
    return (
        status == BatchStatus.RUNNING
        and not has_error
        and (counts.waiting == 0 or delta.in_flight >= 0)
        and after.open > 0
        and progress_step(counts) == progress_step(after)
    )


def progress(batch: Batch) -> dict[str, Any]:
    """A batch's progress, from its counts (the progress endpoint and the progress events)."""
    jobs, comps = batch.jobs, batch.comps
    return {
        "batch_id": batch.id,
        "status": batch.status.value,
        "type": batch.type.value,
        "total": jobs.total,
        **jobs.as_dict(),
        "percentage": percentage(jobs),
        "compensations": {"open": comps.open, "completed": comps.completed, "failed": comps.failed,
                          "cancelled": comps.cancelled},
    }  # fmt: skip

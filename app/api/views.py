"""How records look in API replies."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from app.domain import rules
from app.domain.models import Attempt, Batch, Event, Job, JobStatus, Webhook


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def batch_view(batch: Batch) -> dict[str, Any]:
    view = {"id": batch.id, **rules.progress(batch)}
    view.pop("batch_id")
    view.update(
        {
            "queue": batch.queue,
            "context": batch.context,
            "failure_policy": batch.failure_policy,
            "max_concurrency": batch.max_concurrency,
            "on_complete": batch.callbacks.get("on_complete"),
            "on_failure": batch.callbacks.get("on_failure"),
            "on_event": batch.callbacks.get("on_event"),
            "error": batch.error,
            "created_at": iso(batch.created_at),
            "updated_at": iso(batch.updated_at),
            "finished_at": iso(batch.finished_at),
        }
    )
    return view


def job_view(job: Job) -> dict[str, Any]:
    view = {
        "id": job.id,
        "batch_id": job.batch_id,
        "position": job.position,
        "kind": job.kind,
        "name": job.name,
        "queue": job.queue,
        "args": job.args,
        "compensation": job.compensation,
        "status": job.status,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "timeout_s": job.timeout_s,
        "error": job.error,
        "created_at": iso(job.created_at),
        "queued_at": iso(job.queued_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "failed_at": iso(job.finished_at) if job.status == JobStatus.FAILED else None,
    }
    if job.status == JobStatus.COMPLETED:
        view["result"] = job.result
    if job.original_job_id:
        view["original_job_id"] = job.original_job_id
    if job.cancel_reason:
        view["cancel_reason"] = job.cancel_reason
    return view


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "status": attempt.status,
        "worker": attempt.worker,
        "error": attempt.error,
        "queued_at": iso(attempt.queued_at),
        "started_at": iso(attempt.started_at),
        "finished_at": iso(attempt.finished_at),
        "lease_expires_at": iso(attempt.lease_expires_at),
    }


def event_view(event: Event) -> dict[str, Any]:
    return {"id": event.id, "type": event.type, "batch_id": event.batch_id, "data": event.data, "at": iso(event.created_at)}


def webhook_view(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "event_type": webhook.event_type,
        "url": webhook.url,
        "status": webhook.status,
        "attempts": webhook.attempts,
        "last_error": webhook.last_error,
        "deliveries": webhook.deliveries,
        "created_at": iso(webhook.created_at),
        "delivered_at": iso(webhook.delivered_at),
    }

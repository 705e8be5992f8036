"""How records look in API replies. Every time is an RFC 3339 string."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from app.domain import rules
from app.domain.models import Attempt, Batch, Event, Job, Webhook
from app.domain.rules import rfc3339
from app.domain.states import AttemptStatus, JobStatus


def batch_summary(batch: Batch) -> dict[str, Any]:
    """A batch without its context (lists and replies that do not need it stay small)."""
    view = {"id": batch.id, **rules.progress(batch)}
    del view["batch_id"]
    callbacks = batch.callbacks.as_dict()
    view.update(
        {
            "tenant": batch.tenant,
            "queue": batch.queue,
            "failure_policy": batch.failure_policy.value,
            "max_concurrency": batch.max_concurrency,
            "on_complete": callbacks.get("on_complete"),
            "on_failure": callbacks.get("on_failure"),
            "on_event": callbacks.get("on_event"),
            "error": asdict(batch.error) if batch.error else None,
            "created_at": rfc3339(batch.created_at),
            "updated_at": rfc3339(batch.updated_at),
            "finished_at": rfc3339(batch.finished_at),
        }
    )
    return view


def batch_view(batch: Batch) -> dict[str, Any]:
    return {**batch_summary(batch), "context": batch.context}


def job_view(job: Job) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id,
        "batch_id": job.batch_id,
        "position": job.position,
        "kind": job.kind.value,
        "name": job.name,
        "queue": job.queue,
        "args": job.args,
        "compensation": asdict(job.compensation) if job.compensation else None,
        "status": job.status.value if job.status else None,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "timeout_s": job.timeout_s,
        "error": job.error,
        "created_at": rfc3339(job.created_at),
        "queued_at": rfc3339(job.queued_at),
        "started_at": rfc3339(job.started_at),
        "finished_at": rfc3339(job.finished_at),
    }
    if job.status == JobStatus.COMPLETED:
        view["result"] = job.result
    if job.original_position is not None:
        view["original_job_id"] = f"{job.batch_id}.{job.original_position}"
    return view


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "status": attempt.status.value if isinstance(attempt.status, AttemptStatus) else attempt.status,
        "worker": attempt.worker,
        "error": attempt.error,
        "queued_at": rfc3339(attempt.queued_at),
        "started_at": rfc3339(attempt.started_at),
        "finished_at": rfc3339(attempt.finished_at),
    }


def attempt_history(job: Job, ended: list[Attempt]) -> list[dict[str, Any]]:
    """Every attempt of a job: the ended ones, then the live one while it runs, or the one that
    completed it (the job's record holds both: neither is stored apart)."""
    views = [attempt_view(a) for a in ended]
    if job.status == JobStatus.COMPLETED:
        views.append(attempt_view(Attempt(job.batch_id, job.position, job.attempts, AttemptStatus.COMPLETED, job.worker,
                                          None, job.queued_at, job.started_at, job.finished_at)))  # fmt: skip
    if job.status == JobStatus.RUNNING:
        live = attempt_view(
            Attempt(job.batch_id, job.position, job.attempts, AttemptStatus.RUNNING, job.worker, None, job.queued_at, job.started_at)
        )
        live["lease_expires_at"] = rfc3339(job.lease_expires_at)
        views.append(live)
    return views


def event_view(event: Event) -> dict[str, Any]:
    return {"id": event.id, "type": event.type, "batch_id": event.batch_id, "data": event.data, "at": rfc3339(event.created_at)}


def webhook_view(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "event_type": webhook.event_type,
        "url": webhook.url,
        "status": webhook.status,
        "attempts": webhook.attempts,
        "last_error": webhook.last_error,
        "deliveries": [{**d, "at": rfc3339(d["at"]) if isinstance(d.get("at"), (int, float)) else d.get("at")} for d in webhook.deliveries],
        "created_at": rfc3339(webhook.created_at),
        "delivered_at": rfc3339(webhook.delivered_at),
    }

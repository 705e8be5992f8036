"""The steps every operation shares: dispatch, finish a job, run sagas, end the batch.

All functions here run inside one store operation (a `UnitOfWork`) on a batch that the
operation has locked. They apply the pure rules of app.domain.rules and write the
consequences (job and attempt records, outbox messages, events, webhooks) through the
unit of work, so a state change and everything it causes commit together or not at all.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from app.domain import rules
from app.domain.definitions import JobSpec
from app.domain.errors import Invalid
from app.domain.models import (
    Attempt,
    AttemptStatus,
    Batch,
    BatchStatus,
    BatchType,
    Event,
    FailurePolicy,
    Job,
    JobKind,
    JobStatus,
    Message,
    Webhook,
)
from app.store.base import UnitOfWork


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Step:
    """What one operation works with: its unit of work, the settings and its clock."""

    uow: UnitOfWork
    settings: Settings
    now: float

    # ---- jobs -------------------------------------------------------------------------

    def resolve_queue(self, name: str, field: str) -> str:
        if name in self.settings.queues or self.settings.allow_undeclared_queues or name == "default":
            return name
        raise Invalid(f"queue {name!r} is not declared (see BATCHQ_QUEUES)", field=field)

    def new_jobs(self, batch: Batch, specs: list[JobSpec], defaults: dict[str, Any], field: str = "jobs") -> list[Job]:
        jobs = []
        for index, spec in enumerate(specs):
            queue = self.resolve_queue(spec.queue, f"{field}[{index}].queue") if spec.queue else batch.queue
            qcfg = self.settings.queue_config(queue)
            max_attempts = (
                spec.max_attempts
                or defaults.get("max_attempts")
                or (qcfg.max_attempts if qcfg else None)
                or self.settings.default_max_attempts
            )
            timeout = (
                spec.timeout_s
                or defaults.get("timeout_s")
                or (qcfg.visibility_timeout_s if qcfg else None)
                or self.settings.default_visibility_timeout_s
            )
            jobs.append(
                Job(
                    id=new_id(),
                    batch_id=batch.id,
                    position=batch.next_position,
                    name=spec.name,
                    queue=queue,
                    args=spec.args,
                    compensation=spec.compensation,
                    max_attempts=max_attempts,
                    timeout_s=timeout,
                    created_at=self.now,
                )
            )
            batch.next_position += 1
        return jobs

    async def dispatch(self, batch: Batch, job: Job, delay: float = 0.0) -> None:
        """Start a new attempt of `job`: attempt record + outbox message, one change."""
        if job.status == JobStatus.PENDING and job.kind == JobKind.JOB:
            batch.waiting -= 1
            batch.in_flight += 1
        job.attempts += 1
        job.status = JobStatus.QUEUED
        job.queued_at = self.now
        if job.compensation is not None and job.kind == JobKind.JOB:
            job.context_in = dict(batch.context)  # what its compensation will be told
        await self.uow.add_attempt(
            Attempt(job_id=job.id, attempt=job.attempts, batch_id=batch.id, queued_at=self.now)
        )
        await self.uow.save_job(job)
        await self.uow.enqueue(
            Message(
                queue=job.queue,
                job_id=job.id,
                attempt=job.attempts,
                payload=rules.build_message(batch, job, job.attempts),
                available_at=self.now + delay,
            )
        )

    async def fill(self, batch: Batch, candidates: list[Job] | None = None) -> None:
        """Dispatch as many waiting jobs as the batch's concurrency allows, in order."""
        slots = rules.dispatch_slots(batch)
        if slots <= 0:
            return
        if candidates is None:
            candidates = await self.uow.jobs_by_status(batch.id, JobKind.JOB, [JobStatus.PENDING], limit=slots)
        for job in candidates[:slots]:
            await self.dispatch(batch, job)

    # ---- job outcomes -----------------------------------------------------------------

    async def job_completed(self, batch: Batch, job: Job, result: Any, context_update: dict | None) -> None:
        job.status = JobStatus.COMPLETED
        job.result = result
        job.finished_at = self.now
        batch.finish_seq += 1
        job.finish_seq = batch.finish_seq
        await self.uow.save_job(job)
        if job.kind == JobKind.JOB:
            batch.in_flight -= 1
            batch.completed += 1
            if batch.type == BatchType.CHAIN:
                batch.context = rules.merge_context(batch.context, context_update)
            await self.progressed(batch)
            await self.fill(batch)
        elif job.kind == JobKind.COMPENSATION:
            batch.comp_open -= 1
            batch.comp_completed += 1
            await self.next_compensation(batch)
        await self.settle(batch)

    async def job_failed(self, batch: Batch, job: Job, error: str) -> None:
        """The job failed for good: no attempts left, or not retryable."""
        job.status = JobStatus.FAILED
        job.error = error
        job.finished_at = self.now
        await self.uow.save_job(job)
        if job.kind == JobKind.COMPENSATION:
            batch.comp_open -= 1
            batch.comp_failed += 1
            await self.event(batch, "compensation_failed", self.job_summary(job))
            await self.next_compensation(batch)
        elif job.kind == JobKind.JOB:
            batch.in_flight -= 1
            batch.failed += 1
            await self.event(batch, "job_failed", self.job_summary(job))
            if batch.type == BatchType.PARALLEL and job.compensation is not None:
                await self.start_compensations(batch, [job], job, sequential=False)
            if not rules.failing(batch) and batch.failure_policy == FailurePolicy.FAIL_FAST:
                batch.error = {"job_id": job.id, "name": job.name, "error": error}
                await self.cancel_unstarted(batch, reason="fail_fast")
                if batch.type == BatchType.CHAIN:
                    done = await self.uow.jobs_by_status(batch.id, JobKind.JOB, [JobStatus.COMPLETED])
                    undo = sorted((j for j in done if j.compensation), key=lambda j: j.finish_seq or 0, reverse=True)
                    await self.start_compensations(batch, undo, job, sequential=True)
            await self.progressed(batch)
            await self.fill(batch)
        await self.settle(batch)

    async def attempt_failed(self, batch: Batch, job: Job, attempt: Attempt, error: str, retryable: bool) -> None:
        """One attempt failed: retry with backoff while attempts remain, else fail the job."""
        job.error = error
        # A batch's own job gets no more tries once the batch is failing fast: that work is
        # not wanted now. Compensations (the undoing) keep theirs.
        unwanted = job.kind == JobKind.JOB and rules.failing(batch)
        if retryable and job.attempts_left > 0 and not batch.finished and not unwanted:
            failed_attempts = job.attempts - job.attempt_base
            delay = rules.backoff_delay(
                failed_attempts, self.settings.retry_backoff_base_s, self.settings.retry_backoff_max_s
            )
            await self.dispatch(batch, job, delay=delay)
            await self.event(
                batch, "job_retrying", {**self.job_summary(job), "attempt": job.attempts, "delay_s": delay}
            )
            return
        await self.job_failed(batch, job, error)

    @staticmethod
    def job_summary(job: Job) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "name": job.name,
            "kind": job.kind,
            "args": job.args,
            "error": job.error,
            "attempts": job.attempts,
        }

    async def cancel_unstarted(self, batch: Batch, reason: str) -> None:
        """Cancel the batch's own jobs that no worker has started: waiting or queued."""
        for job in await self.uow.jobs_by_status(batch.id, JobKind.JOB, [JobStatus.PENDING, JobStatus.QUEUED]):
            if job.status == JobStatus.QUEUED:
                batch.in_flight -= 1
                await self.cancel_attempt(job)
            else:
                batch.waiting -= 1
            job.status = JobStatus.CANCELLED
            job.cancel_reason = reason
            job.finished_at = self.now
            batch.cancelled += 1
            await self.uow.save_job(job)

    async def cancel_attempt(self, job: Job) -> None:
        attempt = await self.uow.get_attempt(job.id, job.attempts)
        if attempt is not None and attempt.status in AttemptStatus.ACTIVE:
            attempt.status = AttemptStatus.CANCELLED
            attempt.finished_at = self.now
            await self.uow.save_attempt(attempt)

    # ---- sagas ------------------------------------------------------------------------

    async def start_compensations(self, batch: Batch, originals: list[Job], trigger: Job, sequential: bool) -> None:
        """Create the compensation jobs for `originals` (in that order) and start them.

        Sequential (a chain): one after another, each when the previous has ended.
        """
        comps = []
        for original in originals:
            spec = original.compensation or {}
            comps.append(
                Job(
                    id=new_id(),
                    batch_id=batch.id,
                    position=batch.next_position,
                    name=spec["name"],
                    queue=original.queue,
                    kind=JobKind.COMPENSATION,
                    args=dict(spec.get("args") or {}),
                    max_attempts=spec.get("max_attempts") or original.max_attempts,
                    timeout_s=original.timeout_s,
                    original_job_id=original.id,
                    compensation_info={
                        "batch_id": batch.id,
                        "original_job_id": original.id,
                        "original_job_name": original.name,
                        "original_args": original.args,
                        "error": trigger.error,
                        "failed_job_id": trigger.id,
                        "context": original.context_in if original.context_in is not None else dict(batch.context),
                    },
                    created_at=self.now,
                )
            )
            batch.next_position += 1
        if not comps:
            return
        batch.comp_open += len(comps)
        await self.uow.add_jobs(comps)
        await self.event(
            batch,
            "compensating",
            {"jobs": [{"job_id": c.id, "name": c.name, "original_job_id": c.original_job_id} for c in comps]},
        )
        for comp in comps[:1] if sequential else comps:
            await self.dispatch(batch, comp)

    async def next_compensation(self, batch: Batch) -> None:
        """In a chain's saga, start the next compensation once the previous one ended."""
        if batch.type != BatchType.CHAIN or batch.status == BatchStatus.CANCELLED:
            return
        active = await self.uow.jobs_by_status(batch.id, JobKind.COMPENSATION, JobStatus.ACTIVE, limit=1)
        if active:
            return
        nxt = await self.uow.jobs_by_status(batch.id, JobKind.COMPENSATION, [JobStatus.PENDING], limit=1)
        if nxt:
            await self.dispatch(batch, nxt[0])

    # ---- batch life -------------------------------------------------------------------

    async def progressed(self, batch: Batch) -> None:
        """Announce every 10% step reached (and the end), once each."""
        step = rules.progress_step(batch)
        if step > batch.progress_step:
            batch.progress_step = step
            await self.event(batch, "progress", rules.progress(batch))
        elif step < batch.progress_step:  # a retry moved the batch back
            batch.progress_step = step

    async def settle(self, batch: Batch) -> None:
        """Move the batch to its next status; on its end, fire callbacks exactly once.

        Exactly once holds because this runs under the batch lock and only the
        operation that sees the batch unfinished can finish it.
        """
        batch.updated_at = self.now
        if batch.finished:
            await self.uow.save_batch(batch)
            return
        final = rules.final_status(batch)
        if final is None:
            live = rules.live_status(batch)
            if live != batch.status:
                batch.status = live
                if live == BatchStatus.COMPENSATING:
                    await self.event(batch, "status", {"status": live})
        else:
            batch.status = final
            batch.finished_at = self.now
            await self.event(batch, final, self.batch_summary(batch))
            await self.callbacks(batch, "on_failure" if final == BatchStatus.FAILED else "on_complete")
        await self.uow.save_batch(batch)

    def batch_summary(self, batch: Batch) -> dict[str, Any]:
        summary = rules.progress(batch)
        summary["error"] = batch.error
        summary["finished_at"] = batch.finished_at
        return summary

    async def callbacks(self, batch: Batch, which: str) -> None:
        callback = batch.callbacks.get(which)
        if not callback:
            return
        summary = self.batch_summary(batch)
        if callback.get("url"):
            await self.webhook(batch, callback["url"], callback.get("headers") or {}, f"batch.{batch.status}", summary)
        if callback.get("job"):
            spec = callback["job"]
            job = Job(
                id=new_id(),
                batch_id=batch.id,
                position=batch.next_position,
                name=spec["name"],
                queue=batch.queue,
                kind=JobKind.CALLBACK,
                args={**(spec.get("args") or {}), "batch": summary},
                max_attempts=self.settings.default_max_attempts,
                timeout_s=self.settings.default_visibility_timeout_s,
                created_at=self.now,
            )
            batch.next_position += 1
            await self.uow.add_jobs([job])
            await self.dispatch(batch, job)

    async def event(self, batch: Batch, type_: str, data: dict[str, Any]) -> None:
        await self.uow.add_event(Event(batch_id=batch.id, type=type_, data=data, created_at=self.now))
        hook = batch.callbacks.get("on_event")
        if hook and (not hook.get("events") or type_ in hook["events"]):
            await self.webhook(batch, hook["url"], hook.get("headers") or {}, f"batch.{type_}", data)

    async def webhook(self, batch: Batch, url: str, headers: dict, event_type: str, data: dict[str, Any]) -> None:
        event_id = new_id()
        body = {
            "id": event_id,
            "type": event_type,
            "batch_id": batch.id,
            "status": batch.status,
            "data": data,
            "created_at": self.now,
        }
        await self.uow.add_webhook(
            Webhook(
                id=event_id,
                batch_id=batch.id,
                event_type=event_type,
                url=url,
                headers=headers,
                body=body,
                next_attempt_at=self.now,
                created_at=self.now,
            )
        )

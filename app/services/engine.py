"""The steps every operation shares: make jobs, dispatch, finish a job, run sagas, end the batch.

All of this runs inside one store operation on one batch (`Step.uow.batch`). It applies
the pure rules of app.domain and writes the consequences (jobs, attempt records, outbox
messages, events, webhooks) through the unit of work, so a state change and everything it
causes commit together or not at all. Statuses change only through app.domain.states.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from app.config import Settings
from app.domain import rules
from app.domain.definitions import JobSpec
from app.domain.errors import Invalid
from app.domain.models import Attempt, Batch, Callback, Event, Failure, Job, Message, Webhook
from app.domain.states import (
    AttemptStatus,
    BatchStatus,
    BatchType,
    FailurePolicy,
    JobKind,
    JobStatus,
    move_batch,
    move_job,
    move_jobs,
)
from app.store.base import BulkMove, Dispatch, NewJob, NewJobs, UnitOfWork

CHUNK = 5000  # jobs made and written at a time


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Step:
    """What one operation works with: its unit of work, the settings, its clock."""

    uow: UnitOfWork
    settings: Settings
    now: float
    announced: int = field(init=False)  # the 10% step last announced

    def __post_init__(self) -> None:
        self.announced = rules.progress_step(self.uow.batch.jobs) if self.uow.batch is not None else 0

    @property
    def batch(self) -> Batch:
        assert self.uow.batch is not None
        return self.uow.batch

    # ---- making jobs ----------------------------------------------------------------------

    def resolve_queue(self, name: str, field_: str) -> str:
        if name in self.settings.queues or self.settings.allow_undeclared_queues or name == "default":
            return name
        raise Invalid(f"queue {name!r} is not declared (see BATCHQ_QUEUES)", field=field_)

    async def add_jobs(self, specs: Iterable[JobSpec], count: int, defaults: dict[str, Any], field_: str = "jobs") -> range:
        """Append `count` jobs of the batch's own kind, set-based; those its concurrency allows
        are dispatched at once (jobs that were waiting already go first). They are written in
        chunks as they are read, so a 100,000-job batch is never built whole in memory."""
        await self.fill()
        batch = self.batch
        first = batch.next_position
        batch.next_position += count
        move_jobs(batch, JobKind.JOB, None, JobStatus.WAITING, count)
        to_queue = min(count, rules.dispatch_slots(batch))
        move_jobs(batch, JobKind.JOB, JobStatus.WAITING, JobStatus.QUEUED, to_queue)
        chunk: list[NewJob] = []
        made = 0
        for index, spec in enumerate(specs):
            chunk.append(self.job_values(spec, defaults, f"{field_}[{index}]"))
            if len(chunk) == CHUNK:
                await self._insert(first + made, chunk, to_queue - made)
                made += len(chunk)
                chunk = []
        if chunk:
            await self._insert(first + made, chunk, to_queue - made)
            made += len(chunk)
        assert made == count, f"{made} jobs made, {count} announced"
        return range(first, first + count)

    async def _insert(self, first: int, chunk: list[NewJob], queued_left: int) -> None:
        await self.uow.insert_jobs(NewJobs(first, chunk, max(0, min(len(chunk), queued_left)), self.now))

    def job_values(self, spec: JobSpec, defaults: dict[str, Any], field_: str) -> NewJob:
        """A job's values, with the job's own first, then the batch's, the queue's and the service's defaults."""
        queue = self.resolve_queue(spec.queue, f"{field_}.queue") if spec.queue else self.batch.queue
        qcfg = self.settings.queue_config(queue)
        return NewJob(
            spec.name,
            queue,
            spec.args,
            spec.compensation,
            spec.max_attempts
            or defaults.get("max_attempts")
            or (qcfg.max_attempts if qcfg else None)
            or self.settings.default_max_attempts,
            spec.timeout_s
            or defaults.get("timeout_s")
            or (qcfg.visibility_timeout_s if qcfg else None)
            or self.settings.default_visibility_timeout_s,
        )

    # ---- dispatching ------------------------------------------------------------------------

    def dispatch(self, job: Job, delay: float = 0.0) -> None:
        """Start the job's next attempt: it is queued and its message goes in the outbox."""
        move_job(self.batch, job, JobStatus.QUEUED)
        job.attempts += 1
        job.queued_at = self.now
        job.available_at = self.now + delay
        job.lease = job.lease_expires_at = job.started_at = job.worker = None
        self.uow.save_job(job)
        self.uow.enqueue(Message(self.batch.tenant, job.queue, job.batch_id, job.position, job.attempts, job.available_at))

    def requeue(self, job: Job) -> None:
        """The same attempt's message again (its first one was lost): the job stays queued."""
        job.available_at = self.now
        self.uow.save_job(job)
        self.uow.enqueue(Message(self.batch.tenant, job.queue, job.batch_id, job.position, job.attempts, self.now))

    async def fill(self) -> None:
        """Dispatch as many waiting jobs as the batch's concurrency allows, lowest positions first."""
        slots = rules.dispatch_slots(self.batch)
        if slots > 0:
            self._dispatch_waiting(JobKind.JOB, slots)

    def _dispatch_waiting(self, kind: JobKind, n: int) -> None:
        move_jobs(self.batch, kind, JobStatus.WAITING, JobStatus.QUEUED, n)
        self.uow.bulk(Dispatch(kind, n, self.now))

    def move_all(self, kind: JobKind, frm: Iterable[JobStatus], to: JobStatus, **how: Any) -> int:
        """Move every job of `kind` in `frm` to `to`, set-based; returns how many moved."""
        counts = self.batch.counts(kind)
        assert counts is not None
        sources = tuple(s for s in frm if counts[s] > 0)
        moved = 0
        for status in sources:
            moved += counts[status]
            move_jobs(self.batch, kind, status, to, counts[status])
        if sources:
            self.uow.bulk(BulkMove(kind, sources, to, self.now, **how))
        return moved

    # ---- job outcomes -----------------------------------------------------------------------

    def start(self, job: Job, lease: str, worker: str | None) -> None:
        """A worker takes the job's queued attempt under a fresh lease."""
        move_job(self.batch, job, JobStatus.RUNNING)
        job.lease = lease
        job.lease_expires_at = self.now + job.timeout_s
        job.started_at = self.now
        job.worker = worker
        if job.compensation is not None and job.kind == JobKind.JOB and self.batch.type == BatchType.CHAIN:
            # What its compensation will be told. A chain runs one step at a time, so the
            # context cannot change between this step's dispatch and its start.
            job.context_in = dict(self.batch.context)
        self.uow.save_job(job)

    def _end_attempt(self, job: Job, status: AttemptStatus, error: str | None = None) -> None:
        self.uow.add_attempt(
            Attempt(job.batch_id, job.position, job.attempts, status, job.worker, error, job.queued_at, job.started_at, self.now)
        )

    async def job_completed(self, job: Job, result: Any, context_update: dict | None) -> None:
        # No attempt record: a completed attempt is always the job's last (a completed job
        # never runs again), and the job's own record holds it (app.api.views.attempt_history).
        batch = self.batch
        move_job(batch, job, JobStatus.COMPLETED)
        job.result = result
        job.finished_at = self.now
        self.uow.save_job(job)
        if job.kind == JobKind.JOB:
            if batch.type == BatchType.CHAIN:
                batch.context = rules.merge_context(batch.context, context_update)
            self.progressed()
            await self.fill()
        elif job.kind == JobKind.COMPENSATION:
            self.next_compensation()
        self.settle()

    async def attempt_failed(self, job: Job, error: str, retryable: bool, ended: AttemptStatus) -> None:
        """One attempt failed (or its lease expired): retry with backoff while attempts remain."""
        self._end_attempt(job, ended, error)
        job.error = error
        # A batch's own job gets no more tries once the batch is failing fast: that work is
        # not wanted now. Compensations (the undoing) keep theirs.
        unwanted = job.kind == JobKind.JOB and rules.failing(self.batch)
        if retryable and job.attempts_left > 0 and not self.batch.finished and not unwanted:
            delay = rules.backoff_delay(
                job.attempts - job.attempt_base, self.settings.retry_backoff_base_s, self.settings.retry_backoff_max_s
            )
            self.dispatch(job, delay=delay)
            self.event("job_retrying", {**self.job_summary(job), "attempt": job.attempts, "delay_s": delay})
            return
        await self.job_failed(job, error)

    async def job_failed(self, job: Job, error: str) -> None:
        """The job failed for good: no attempts left, or not retryable."""
        batch = self.batch
        move_job(batch, job, JobStatus.FAILED)
        job.error = error
        job.finished_at = self.now
        self.uow.save_job(job)
        if job.kind == JobKind.COMPENSATION:
            self.event("compensation_failed", self.job_summary(job))
            self.next_compensation()
        elif job.kind == JobKind.JOB:
            self.event("job_failed", self.job_summary(job))
            if batch.type == BatchType.PARALLEL and job.compensation is not None:
                self.start_compensations([job], job, sequential=False)
            if batch.error is None and batch.failure_policy == FailurePolicy.FAIL_FAST:
                batch.error = Failure(job.id, job.name, error)
                self.move_all(JobKind.JOB, (JobStatus.WAITING, JobStatus.QUEUED), JobStatus.CANCELLED)
                if batch.type == BatchType.CHAIN:
                    # Undo the completed steps, newest first (a chain completes in position order).
                    done = await self.uow.jobs_in(JobKind.JOB, [JobStatus.COMPLETED])
                    undo = [j for j in reversed(done) if j.compensation is not None]
                    self.start_compensations(undo, job, sequential=True)
            self.progressed()
            await self.fill()
        self.settle()

    @staticmethod
    def job_summary(job: Job) -> dict[str, Any]:
        return {"job_id": job.id, "name": job.name, "kind": job.kind.value, "args": job.args, "error": job.error,
                "attempts": job.attempts}  # fmt: skip

    # ---- sagas --------------------------------------------------------------------------------

    def start_compensations(self, originals: list[Job], trigger: Job, sequential: bool) -> None:
        """Make the compensation jobs of `originals` (in that order) and start them.

        Sequential (a chain): one after another, each when the previous one has ended.
        """
        batch = self.batch
        comps = []
        for original in originals:
            spec = original.compensation
            assert spec is not None
            comp = Job(
                batch_id=batch.id,
                position=batch.next_position,
                name=spec.name,
                queue=original.queue,
                kind=JobKind.COMPENSATION,
                args=dict(spec.args),
                max_attempts=spec.max_attempts or original.max_attempts,
                timeout_s=original.timeout_s,
                original_position=original.position,
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
            batch.next_position += 1
            move_job(batch, comp, JobStatus.WAITING)
            comps.append(comp)
        if not comps:
            return
        for comp in comps[:1] if sequential else comps:
            self.dispatch(comp)
        for comp in comps:
            self.uow.save_job(comp)
        self.event("compensating", {"jobs": [{"job_id": c.id, "name": c.name, "original_job_id": c.compensation_info["original_job_id"]}  # type: ignore[index]
                                              for c in comps]})  # fmt: skip

    def next_compensation(self) -> None:
        """In a chain's saga, start the next compensation once the previous one ended."""
        batch = self.batch
        if batch.type != BatchType.CHAIN or batch.status == BatchStatus.CANCELLED:
            return
        if batch.comps.in_flight == 0 and batch.comps.waiting > 0:
            self._dispatch_waiting(JobKind.COMPENSATION, 1)

    # ---- batch life -----------------------------------------------------------------------------

    def progressed(self) -> None:
        """Announce each new 10% step (and the end); a retry that moves the batch back re-arms it."""
        step = rules.progress_step(self.batch.jobs)
        if step > self.announced:
            self.event("progress", rules.progress(self.batch))
        self.announced = step

    def settle(self) -> None:
        """Move the batch to its next status; at its end, fire its callbacks exactly once.

        Exactly once holds because only the operation that sees the batch unfinished can
        finish it, and every operation's commit checks that nothing changed under it.
        """
        batch = self.batch
        batch.updated_at = self.now
        if batch.finished:
            return
        final = rules.final_status(batch)
        if final is None:
            live = rules.live_status(batch)
            if live != batch.status:
                move_batch(batch, live, self.now)
                self.event("status", {"status": live.value})
            return
        move_batch(batch, final, self.now)
        self.event(final.value, self.summary())
        self.callbacks(batch.callbacks.on_failure if final == BatchStatus.FAILED else batch.callbacks.on_complete)

    def summary(self) -> dict[str, Any]:
        view = rules.progress(self.batch)
        view["error"] = asdict(self.batch.error) if self.batch.error else None
        view["finished_at"] = rules.rfc3339(self.batch.finished_at)
        return view

    def callbacks(self, callback: Callback | None) -> None:
        if callback is None:
            return
        batch = self.batch
        summary = self.summary()
        if callback.url:
            self.webhook(callback, f"batch.{batch.status.value}", summary)
        if callback.job:
            job = Job(
                batch_id=batch.id,
                position=batch.next_position,
                name=callback.job.name,
                queue=batch.queue,
                kind=JobKind.CALLBACK,
                args={**callback.job.args, "batch": summary},
                max_attempts=self.settings.default_max_attempts,
                timeout_s=self.settings.default_visibility_timeout_s,
                created_at=self.now,
            )
            batch.next_position += 1
            move_job(batch, job, JobStatus.WAITING)
            self.dispatch(job)

    def event(self, type_: str, data: dict[str, Any]) -> None:
        self.uow.add_event(Event(batch_id=self.batch.id, type=type_, data=data, created_at=self.now))
        hook = self.batch.callbacks.on_event
        if hook is not None and hook.url and (not hook.events or type_ in hook.events):
            self.webhook(hook, f"batch.{type_}", data)

    def webhook(self, target: Callback, event_type: str, data: dict[str, Any]) -> None:
        assert target.url is not None
        batch = self.batch
        event_id = new_id()
        body = {
            "id": event_id,
            "type": event_type,
            "batch_id": batch.id,
            "status": batch.status.value,
            "data": data,
            "created_at": rules.rfc3339(self.now),
        }
        self.uow.add_webhook(
            Webhook(
                id=event_id,
                batch_id=batch.id,
                event_type=event_type,
                url=target.url,
                headers=_with_trace(target.headers, batch.traceparent),
                body=body,
                next_attempt_at=self.now,
                created_at=self.now,
            )
        )


def _with_trace(headers: dict[str, str], traceparent: str | None) -> dict[str, str]:
    """A webhook's headers, with the batch's W3C traceparent unless the callback set its own."""
    if not traceparent or any(k.lower() == "traceparent" for k in headers):
        return dict(headers)
    return {"traceparent": traceparent, **headers}

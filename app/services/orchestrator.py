"""Every state change batchq makes, each one atomic store operation.

The API routers and the background loops call these methods and nothing else that writes.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from app.domain import rules
from app.domain.definitions import JobSpec
from app.domain.errors import Conflict, DomainError, Invalid, NotFound
from app.domain.models import Attempt, AttemptStatus, Batch, BatchStatus, Job, JobKind, JobStatus
from app.services.engine import Step, new_id
from app.services.metrics import Metrics
from app.store.base import Store, UnitOfWork


@dataclass
class Report:
    """What a worker says of one attempt: it completed (result, context) or failed (error)."""

    job_id: str
    attempt: int
    lease: str | None
    outcome: str  # "completed" | "failed"
    result: Any = None
    context: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = True


class Orchestrator:
    def __init__(self, store: Store, settings: Settings, clock=time.time):  # noqa: ANN001
        self.store = store
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()

    def _step(self, uow: UnitOfWork) -> Step:
        return Step(uow=uow, settings=self.settings, now=self.clock())

    @staticmethod
    async def _locked_batch(uow: UnitOfWork, batch_id: str) -> Batch:
        batch = await uow.lock_batch(batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} not found")
        return batch

    # ---- clients ----------------------------------------------------------------------

    async def create_batch(
        self,
        *,
        type_: str,
        specs: list[JobSpec],
        context: dict[str, Any],
        queue: str | None,
        failure_policy: str | None,
        max_concurrency: int | None,
        callbacks: dict[str, Any],
        defaults: dict[str, Any],
    ) -> Batch:
        async def op(uow: UnitOfWork) -> Batch:
            step = self._step(uow)
            batch = Batch(
                id=new_id(),
                type=type_,
                queue=step.resolve_queue(queue or "default", "queue"),
                status=BatchStatus.RUNNING,
                context=context,
                failure_policy=failure_policy or rules.default_failure_policy(type_),
                max_concurrency=max_concurrency,
                callbacks=callbacks,
                created_at=step.now,
                updated_at=step.now,
            )
            jobs = step.new_jobs(batch, specs, defaults)
            batch.total = batch.waiting = len(jobs)
            await uow.add_batch(batch)
            await uow.add_jobs(jobs)
            await step.event(batch, "started", {"total": batch.total, "type": batch.type})
            await step.fill(batch, candidates=jobs)
            await step.settle(batch)
            return batch

        batch = await self.store.run(op)
        self.metrics.inc("batchq_batches_created_total", type=batch.type)
        return batch

    async def add_jobs(self, batch_id: str, specs: list[JobSpec]) -> tuple[Batch, list[Job]]:
        async def op(uow: UnitOfWork) -> tuple[Batch, list[Job]]:
            step = self._step(uow)
            batch = await self._locked_batch(uow, batch_id)
            if batch.finished:
                raise Conflict(f"batch {batch_id} is {batch.status}; jobs can only be added to a running batch")
            if rules.failing(batch) or batch.status == BatchStatus.COMPENSATING:
                raise Conflict(f"batch {batch_id} is failing ({batch.status}); no jobs can be added")
            jobs = step.new_jobs(batch, specs, {})
            batch.total += len(jobs)
            batch.waiting += len(jobs)
            await uow.add_jobs(jobs)
            await step.event(batch, "jobs_added", {"job_ids": [j.id for j in jobs], "total": batch.total})
            # A chain's added jobs sit after its tail; fill() dispatches in position order.
            await step.fill(batch)
            await step.progressed(batch)
            await step.settle(batch)
            return batch, jobs

        return await self.store.run(op)

    async def cancel(self, batch_id: str) -> Batch:
        async def op(uow: UnitOfWork) -> Batch:
            step = self._step(uow)
            batch = await self._locked_batch(uow, batch_id)
            if batch.finished:
                raise Conflict(f"batch {batch_id} is already {batch.status}")
            for kind in JobKind.ALL:
                open_ = [JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING]
                for job in await uow.jobs_by_status(batch.id, kind, open_):
                    if job.status != JobStatus.PENDING:
                        await step.cancel_attempt(job)
                    job.status = JobStatus.CANCELLED
                    job.cancel_reason = "cancelled"
                    job.finished_at = step.now
                    await uow.save_job(job)
                    if kind == JobKind.JOB:
                        batch.cancelled += 1
            batch.waiting = batch.in_flight = batch.comp_open = 0
            batch.status = BatchStatus.CANCELLED
            batch.finished_at = step.now
            await step.event(batch, "cancelled", step.batch_summary(batch))
            await step.settle(batch)
            return batch

        return await self.store.run(op)

    async def retry(self, batch_id: str, job_ids: list[str] | None) -> tuple[Batch, list[str]]:
        """Run failed jobs again (all of them, or the chosen ones) with a fresh attempt budget."""

        async def op(uow: UnitOfWork) -> tuple[Batch, list[str]]:
            step = self._step(uow)
            batch = await self._locked_batch(uow, batch_id)
            if batch.status == BatchStatus.CANCELLED:
                raise Conflict(f"batch {batch_id} is cancelled; it cannot be retried")
            if batch.status == BatchStatus.COMPENSATING:
                raise Conflict(f"batch {batch_id} is compensating; retry once it has ended")
            if job_ids is None:
                chosen = await uow.jobs_by_status(batch.id, JobKind.JOB, [JobStatus.FAILED])
                if not chosen:
                    raise Conflict(f"batch {batch_id} has no failed jobs")
            else:
                chosen, wrong = [], []
                for job_id in dict.fromkeys(job_ids):
                    job = await uow.get_job(job_id)
                    ok = job is not None and job.batch_id == batch.id and job.kind == JobKind.JOB
                    if ok and job.status == JobStatus.FAILED:
                        chosen.append(job)
                    else:
                        wrong.append(job_id)
                if wrong:
                    raise Invalid(f"not failed jobs of batch {batch_id}: {', '.join(wrong)}", field="job_ids")
            revived = list(chosen)
            if batch.error is not None:
                # The failure that stopped a fail-fast batch is being retried: the jobs it
                # cancelled run again too, so the batch can still complete.
                revived += await self._cancelled_by_failure(uow, batch)
                batch.error = None
            for job in revived:
                if job.status == JobStatus.FAILED:
                    batch.failed -= 1
                else:
                    batch.cancelled -= 1
                job.status = JobStatus.PENDING
                job.attempt_base = job.attempts
                job.finished_at = None
                job.cancel_reason = None
                await uow.save_job(job)
            batch.waiting += len(revived)
            if batch.finished:
                batch.status = BatchStatus.RUNNING
                batch.finished_at = None
            await step.event(batch, "retried", {"job_ids": [j.id for j in chosen]})
            await step.progressed(batch)
            await step.fill(batch)
            await step.settle(batch)
            return batch, [j.id for j in chosen]

        return await self.store.run(op)

    @staticmethod
    async def _cancelled_by_failure(uow: UnitOfWork, batch: Batch) -> list[Job]:
        cancelled = await uow.jobs_by_status(batch.id, JobKind.JOB, [JobStatus.CANCELLED])
        return [j for j in cancelled if j.cancel_reason == "fail_fast"]

    # ---- workers ----------------------------------------------------------------------

    @staticmethod
    async def _lock_owners(uow: UnitOfWork, job_ids: list[str]) -> tuple[dict[str, Batch], dict[str, Job]]:
        """Lock the batches of these jobs, then read the jobs (so the reads are current)."""
        job_ids = list(dict.fromkeys(job_ids))
        batches: dict[str, Batch] = {}
        if len(job_ids) == 1:
            batch = await uow.lock_batch_of_job(job_ids[0])
            if batch is not None:
                batches[batch.id] = batch
        else:
            owners = await uow.get_jobs(job_ids)
            # Always in id order, so that two multi-batch operations cannot deadlock.
            for batch_id in sorted({job.batch_id for job in owners.values()}):
                locked = await uow.lock_batch(batch_id)
                if locked is not None:
                    batches[batch_id] = locked
        return batches, await uow.get_jobs(job_ids)

    @staticmethod
    async def _job_and_batch(uow: UnitOfWork, job_id: str) -> tuple[Job, Batch]:
        batches, jobs = await Orchestrator._lock_owners(uow, [job_id])
        job = jobs.get(job_id)
        batch = batches.get(job.batch_id) if job is not None else None
        if batch is None or job is None:
            raise NotFound(f"job {job_id} not found")
        return job, batch

    async def start(self, job_id: str, attempt_no: int, worker: str | None = None) -> dict[str, Any]:
        """A worker takes a delivered attempt: it becomes running under a fresh lease."""
        started, refused = await self.start_many([(job_id, attempt_no)], worker)
        if refused:
            raise refused[0][2]
        return started[0]

    async def start_many(
        self, deliveries: list[tuple[str, int]], worker: str | None = None
    ) -> tuple[list[dict[str, Any]], list[tuple[str, int, DomainError]]]:
        """Start several delivered attempts in one operation (one claim of a worker).

        Returns the started messages (in delivery order) and, for each of the others,
        (job_id, attempt, why): stale, duplicate or cancelled deliveries are refused, never run.
        """

        async def op(uow: UnitOfWork) -> tuple[list[dict[str, Any]], list[tuple[str, int, DomainError]]]:
            step = self._step(uow)
            refused: list[tuple[str, int, DomainError]] = []
            batches, jobs = await self._lock_owners(uow, [job_id for job_id, _ in deliveries])
            attempts = await uow.get_attempts(list(dict.fromkeys(deliveries)))
            started: list[dict[str, Any]] = []
            for job_id, attempt_no in deliveries:
                job = jobs.get(job_id)
                batch = batches.get(job.batch_id) if job is not None else None
                if job is None or batch is None:
                    refused.append((job_id, attempt_no, NotFound(f"job {job_id} not found")))
                    continue
                attempt = attempts.get((job_id, attempt_no))
                if attempt is None:
                    refused.append((job_id, attempt_no, Conflict(f"job {job_id} has no attempt {attempt_no}")))
                    continue
                if (
                    attempt.status != AttemptStatus.QUEUED
                    or job.status != JobStatus.QUEUED
                    or job.attempts != attempt_no
                ):
                    why = Conflict(f"attempt {attempt_no} of job {job_id} is {attempt.status}; it cannot start")
                    refused.append((job_id, attempt_no, why))
                    continue
                attempt.status = AttemptStatus.RUNNING
                attempt.lease = secrets.token_hex(16)
                attempt.lease_expires_at = step.now + job.timeout_s
                attempt.started_at = step.now
                attempt.worker = worker
                job.status = JobStatus.RUNNING
                job.started_at = step.now
                await uow.save_attempt(attempt)
                await uow.save_job(job)
                message = rules.build_message(batch, job, attempt_no)
                message["lease"] = attempt.lease
                message["lease_expires_at"] = attempt.lease_expires_at
                started.append(message)
            for batch in batches.values():
                batch.updated_at = step.now
                await uow.save_batch(batch)
            return started, refused

        started, refused = await self.store.run(op)
        self.metrics.inc("batchq_messages_delivered_total", len(started))
        return started, refused

    @staticmethod
    def _check_lease(attempt, lease: str | None) -> None:  # noqa: ANN001
        if lease is not None and attempt.lease is not None and lease != attempt.lease:
            raise Conflict(f"lease does not match attempt {attempt.attempt} of job {attempt.job_id}")

    async def heartbeat(self, job_id: str, attempt_no: int, lease: str | None) -> dict[str, Any]:
        async def op(uow: UnitOfWork) -> dict[str, Any]:
            step = self._step(uow)
            job, batch = await self._job_and_batch(uow, job_id)
            attempt = await uow.get_attempt(job_id, attempt_no)
            if attempt is None or attempt.status != AttemptStatus.RUNNING:
                state = attempt.status if attempt else "unknown"
                raise Conflict(f"attempt {attempt_no} of job {job_id} is {state}; stop working on it")
            self._check_lease(attempt, lease)
            attempt.lease_expires_at = step.now + job.timeout_s
            await uow.save_attempt(attempt)
            batch.updated_at = step.now
            await uow.save_batch(batch)
            return {"job_id": job_id, "attempt": attempt_no, "lease_expires_at": attempt.lease_expires_at}

        return await self.store.run(op)

    async def complete(
        self, job_id: str, attempt_no: int, lease: str | None, result: Any, context: dict | None
    ) -> dict[str, Any]:
        return await self._report_one(Report(job_id, attempt_no, lease, "completed", result=result, context=context))

    async def fail(self, job_id: str, attempt_no: int, lease: str | None, error: str, retryable: bool) -> dict[str, Any]:
        return await self._report_one(Report(job_id, attempt_no, lease, "failed", error=error, retryable=retryable))

    async def _report_one(self, report: Report) -> dict[str, Any]:
        (outcome,) = await self.report_many([report])
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    async def report_many(self, reports: list[Report]) -> list[dict[str, Any] | DomainError]:
        """Apply workers' reports in one operation, each with its own outcome.

        A refused report (unknown job, stale attempt, wrong lease) does not stop the others.
        """

        async def op(uow: UnitOfWork) -> list[dict[str, Any] | DomainError]:
            step = self._step(uow)
            batches, jobs = await self._lock_owners(uow, [r.job_id for r in reports])
            attempts = await uow.get_attempts(list(dict.fromkeys((r.job_id, r.attempt) for r in reports)))
            outcomes: list[dict[str, Any] | DomainError] = []
            for report in reports:
                job = jobs.get(report.job_id)
                batch = batches.get(job.batch_id) if job is not None else None
                if job is None or batch is None:
                    outcomes.append(NotFound(f"job {report.job_id} not found"))
                    continue
                try:
                    outcome = await self._apply(step, batch, job, attempts.get((report.job_id, report.attempt)), report)
                except Conflict as refused:
                    outcomes.append(refused)
                else:
                    outcomes.append(outcome)
            return outcomes

        outcomes = await self.store.run(op)
        for report, outcome in zip(reports, outcomes):
            if isinstance(outcome, DomainError):
                self.metrics.inc("batchq_reports_total", outcome=report.outcome, result="refused")
            else:
                result = "duplicate" if outcome["duplicate"] else outcome["status"]
                self.metrics.inc("batchq_reports_total", outcome=report.outcome, result=result)
        return outcomes

    async def _apply(self, step: Step, batch: Batch, job: Job, attempt: Attempt | None, report: Report) -> dict[str, Any]:
        if attempt is None:
            raise Conflict(f"job {job.id} has no attempt {report.attempt}")
        done = AttemptStatus.COMPLETED if report.outcome == "completed" else AttemptStatus.FAILED
        if attempt.status == done:  # the same report again: nothing more to do
            return {"job_id": job.id, "status": job.status, "attempts": job.attempts, "duplicate": True}
        if attempt.status not in AttemptStatus.ACTIVE:
            raise Conflict(f"attempt {report.attempt} of job {job.id} is {attempt.status}; its report is refused")
        self._check_lease(attempt, report.lease)
        attempt.status = done
        attempt.finished_at = step.now
        if report.outcome == "completed":
            await step.uow.save_attempt(attempt)
            await step.job_completed(batch, job, report.result, report.context)
        else:
            attempt.error = report.error
            await step.uow.save_attempt(attempt)
            await step.attempt_failed(batch, job, attempt, report.error or "failed", report.retryable)
        return {"job_id": job.id, "status": job.status, "attempts": job.attempts, "duplicate": False}

    async def expire(self, job_id: str, attempt_no: int) -> bool:
        """The lease of a running attempt ran out: count it as a failed attempt."""

        async def op(uow: UnitOfWork) -> bool:
            step = self._step(uow)
            job, batch = await self._job_and_batch(uow, job_id)
            attempt = await uow.get_attempt(job_id, attempt_no)
            if attempt is None or attempt.status != AttemptStatus.RUNNING:
                return False
            if attempt.lease_expires_at is None or attempt.lease_expires_at >= step.now:
                return False  # a heartbeat arrived in the meantime
            error = f"lease expired after {job.timeout_s:g}s without a report (worker died or hung)"
            attempt.status = AttemptStatus.EXPIRED
            attempt.error = error
            attempt.finished_at = step.now
            await uow.save_attempt(attempt)
            await step.attempt_failed(batch, job, attempt, error, retryable=True)
            return True

        try:
            expired = await self.store.run(op)
        except NotFound:
            return False
        self.metrics.inc("batchq_leases_expired_total", int(expired))
        return expired

"""Every state change batchq makes, each one atomic store operation on one batch.

The API routers and the background loops call these methods and nothing else that writes.
`tenant` is the caller's tenant; None means every tenant (an admin, or a background loop).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from app.config import Settings
from app.domain import rules
from app.domain.definitions import JobSpec
from app.domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from app.domain.models import Batch, Callbacks, Job, parse_job_id
from app.domain.states import AttemptStatus, BatchStatus, BatchType, FailurePolicy, JobKind, JobStatus, move_batch, move_job
from app.services.coalesce import Coalescer
from app.services.engine import Step, new_id
from app.store.base import Operation, Store, UnitOfWork
from app.telemetry.logs import bind, bound
from app.telemetry.metrics import Measures, Metrics
from app.telemetry.tracing import Tracing

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Report:
    """What a worker says of one attempt: it completed (result, context) or failed (error)."""

    job_id: str
    attempt: int
    lease: str
    outcome: str  # "completed" | "failed"
    result: Any = None
    context: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = True
    traceparent: str | None = None  # the worker's span of this attempt (W3C), if it traces


Refusal = tuple[str, int, DomainError]  # job id, attempt, why
Queues = frozenset[str] | None  # the queues a `work` key may work (None: all of its tenant's)
Delivery = tuple[str, int, str | None]  # job id, attempt, the broker's id of this delivery (if any)


class _Start(NamedTuple):
    """One delivery to start, with what its caller may do."""

    position: int  # in its batch (_per_batch fills it in from the job id)
    job_id: str
    attempt: int
    delivery: str | None
    tenant: str | None
    worker: str | None
    queues: Queues


class _Apply(NamedTuple):
    """One report to apply, with what its caller may do."""

    position: int  # in its batch (_per_batch fills it in from the job id)
    report: Report
    tenant: str | None
    queues: Queues

    @property
    def job_id(self) -> str:
        return self.report.job_id


Item = TypeVar("Item", _Start, _Apply)
Outcome = dict[str, Any] | DomainError  # an item's answer, or why it was refused


def _owned(batch: Batch | None, tenant: str | None, batch_id: str) -> Batch:
    """The batch, if it exists and the caller's tenant may see it (another tenant's is 404)."""
    if batch is None or (tenant is not None and batch.tenant != tenant):
        raise NotFound(f"batch {batch_id} not found")
    return batch


def _by_batch(items: Iterable[Any], job_id_of) -> tuple[dict[str, list[tuple[int, Any]]], list[Any]]:  # noqa: ANN001
    """Group items by the batch their job id names; items naming no job come back apart."""
    groups: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    unknown = []
    for item in items:
        key = parse_job_id(job_id_of(item))
        if key is None:
            unknown.append(item)
        else:
            groups[key[0]].append((key[1], item))
    return groups, unknown


class Orchestrator:
    def __init__(
        self, store: Store, settings: Settings, clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None, tracing: Tracing | None = None,
    ):  # fmt: skip
        self.store = store
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or Metrics(settings)
        self.tracing = tracing or Tracing()
        # Starts and reports of a batch that arrive while others run go together in the next operation.
        self._starts: Coalescer[_Start, Outcome] = Coalescer(self._start_in)
        self._reports: Coalescer[_Apply, Outcome] = Coalescer(self._apply_in)

    def _step(self, uow: UnitOfWork) -> Step:
        return Step(uow=uow, settings=self.settings, now=self.clock())

    async def _run(
        self, name: str, batch_id: str | None, op: Operation[T], optimistic: bool = False,
        measures: Measures | None = None, log_batch_id: str | None = None,
    ) -> T:  # fmt: skip
        """store.run(batch_id, op) in a span named `name`, with the batch's log fields, keeping
        the measures of the try that committed (the end of the batch among them)."""
        measures = measures or Measures(self.metrics)

        async def tried(uow: UnitOfWork) -> T:
            measures.start_try()
            was_finished = uow.batch is not None and uow.batch.finished
            if uow.batch is not None:
                bind(tenant=uow.batch.tenant)
            result = await op(uow)
            if uow.batch is not None and uow.batch.finished and not was_finished:
                measures.batch_ended(uow.batch)
            return result

        attributes = {"batchq.batch_id": batch_id or log_batch_id, "batchq.optimistic": optimistic}
        with bound(batch_id=batch_id or log_batch_id), self.tracing.child_span(f"store.{name}", attributes):
            result = await self.store.run(batch_id, tried, optimistic)
            measures.record()
            for batch in measures.ended:
                took = (batch.finished_at or self.clock()) - batch.created_at
                log.info("batch %s %s after %.3fs", batch.id, batch.status.value, took, extra={"tenant": batch.tenant})
        return result

    # ---- reads ----------------------------------------------------------------------------

    async def batch(self, tenant: str | None, batch_id: str) -> Batch:
        return _owned(await self.store.get_batch(batch_id), tenant, batch_id)

    async def job(self, tenant: str | None, batch_id: str, job_id: str) -> Job:
        key = parse_job_id(job_id)
        await self.batch(tenant, batch_id)
        job = await self.store.get_job(batch_id, key[1]) if key is not None and key[0] == batch_id else None
        if job is None:
            raise NotFound(f"job {job_id} not found in batch {batch_id}")
        return job

    # ---- clients ----------------------------------------------------------------------------

    async def create_batch(
        self,
        *,
        tenant: str,
        type_: BatchType,
        specs: Iterable[JobSpec],
        context: dict[str, Any],
        queue: str | None,
        failure_policy: FailurePolicy | None,
        max_concurrency: int | None,
        callbacks: Callbacks,
        defaults: dict[str, Any],
        count: int,
        traceparent: str | None = None,
        batch_id: str | None = None,
    ) -> Batch:
        batch_id = batch_id or new_id()

        async def op(uow: UnitOfWork) -> Batch:
            now = self.clock()
            batch = Batch(
                id=batch_id,
                lease_key=secrets.token_hex(16),
                type=type_,
                queue=queue or "default",
                tenant=tenant,
                context=context,
                failure_policy=failure_policy or FailurePolicy.FAIL_FAST,
                max_concurrency=max_concurrency,
                callbacks=callbacks,
                traceparent=traceparent,
                created_at=now,
                updated_at=now,
            )
            uow.create(batch)
            step = Step(uow=uow, settings=self.settings, now=now)
            step.resolve_queue(batch.queue, "queue")
            await step.add_jobs(specs, count, defaults)
            step.event("started", {"total": batch.jobs.total, "type": batch.type.value})
            step.announced = rules.progress_step(batch.jobs)
            step.settle()
            return batch

        with bound(tenant=tenant):
            batch = await self._run("create_batch", None, op, log_batch_id=batch_id)
            self.metrics.batches_created.labels(batch.type.value).inc()
            log.info("batch %s created: %s, %d jobs, queue %s", batch.id, batch.type.value, batch.jobs.total, batch.queue,
                     extra={"batch_id": batch.id})  # fmt: skip
        return batch

    async def add_jobs(
        self, tenant: str | None, batch_id: str, specs: Iterable[JobSpec], count: int,
        key: str | None = None, digest: str | None = None,
    ) -> tuple[Batch, list[int], bool]:
        """Append jobs; with an Idempotency-Key, a repeat of the same add adds nothing and gets
        the same job ids (the batch records its recent keys, atomically with the add)."""

        async def op(uow: UnitOfWork) -> tuple[Batch, list[int], bool]:
            batch = _owned(uow.batch, tenant, batch_id)
            step = self._step(uow)
            ttl = self.settings.idempotency_ttl_s
            prior = batch.adds.get(key) if key else None
            if prior is not None and step.now - prior["at"] < ttl:
                if prior["hash"] != digest:
                    raise Invalid("this Idempotency-Key was used with a different request", field="Idempotency-Key")
                return batch, list(range(prior["first"], prior["first"] + prior["count"])), True
            if batch.finished:
                raise Conflict(f"batch {batch_id} is {batch.status}; jobs can only be added to a running batch")
            if rules.failing(batch) or batch.status == BatchStatus.COMPENSATING:
                raise Conflict(f"batch {batch_id} is failing ({batch.status}); no jobs can be added")
            if batch.jobs.total + count > self.settings.max_batch_jobs:
                raise Invalid(
                    f"a batch holds at most {self.settings.max_batch_jobs} jobs; it has {batch.jobs.total}", field="jobs"
                )
            positions = await step.add_jobs(specs, count, {})
            if key:
                recent = sorted((v["at"], k) for k, v in batch.adds.items() if step.now - v["at"] < ttl)[-999:]
                batch.adds = {k: batch.adds[k] for _, k in recent}
                batch.adds[key] = {"hash": digest, "first": positions[0], "count": len(positions), "at": step.now}
            step.event("jobs_added", {"count": len(positions), "first_position": positions[0], "total": batch.jobs.total})
            step.progressed()
            step.settle()
            return batch, positions, False

        return await self._run("add_jobs", batch_id, op)

    async def cancel(self, tenant: str | None, batch_id: str) -> Batch:
        async def op(uow: UnitOfWork) -> Batch:
            batch = _owned(uow.batch, tenant, batch_id)
            step = self._step(uow)
            if batch.finished:
                raise Conflict(f"batch {batch_id} is already {batch.status}")
            open_ = (JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING)
            for kind in (JobKind.JOB, JobKind.COMPENSATION):
                step.move_all(kind, open_, JobStatus.CANCELLED, ended=AttemptStatus.CANCELLED)
            move_batch(batch, BatchStatus.CANCELLED, step.now)
            step.event("cancelled", step.summary())
            step.settle()
            return batch

        return await self._run("cancel", batch_id, op)

    async def retry(self, tenant: str | None, batch_id: str, job_ids: list[str] | None) -> tuple[Batch, int]:
        """Run failed jobs again (all of them, or the chosen ones) with a fresh attempt budget."""

        async def op(uow: UnitOfWork) -> tuple[Batch, int]:
            batch = _owned(uow.batch, tenant, batch_id)
            step = self._step(uow)
            if batch.status == BatchStatus.CANCELLED:
                raise Conflict(f"batch {batch_id} is cancelled; it cannot be retried")
            if batch.status == BatchStatus.COMPENSATING:
                raise Conflict(f"batch {batch_id} is compensating; retry once it has ended")
            if job_ids is None:
                if batch.jobs.failed == 0:
                    raise Conflict(f"batch {batch_id} has no failed jobs")
                retried = step.move_all(JobKind.JOB, (JobStatus.FAILED,), JobStatus.WAITING, revive=True)
            else:
                chosen = await self._failed_jobs(uow, batch, job_ids)
                for job in chosen:
                    move_job(batch, job, JobStatus.WAITING)
                    job.attempt_base = job.attempts
                    job.error = job.finished_at = job.available_at = None
                    uow.save_job(job)
                retried = len(chosen)
            if batch.error is not None:
                # The failure that stopped a fail-fast batch is being retried: the jobs it
                # cancelled run again too, so the batch can still complete.
                step.move_all(JobKind.JOB, (JobStatus.CANCELLED,), JobStatus.WAITING, revive=True)
                batch.error = None
            if batch.finished:
                move_batch(batch, BatchStatus.RUNNING, step.now)
            step.event("retried", {"count": retried, **({"job_ids": list(dict.fromkeys(job_ids))} if job_ids else {})})
            step.progressed()
            await step.fill()
            step.settle()
            return batch, retried

        batch, retried = await self._run("retry", batch_id, op)
        log.info("batch %s: %d failed jobs run again", batch_id, retried)
        return batch, retried

    @staticmethod
    async def _failed_jobs(uow: UnitOfWork, batch: Batch, job_ids: list[str]) -> list[Job]:
        keys = {job_id: parse_job_id(job_id) for job_id in dict.fromkeys(job_ids)}
        jobs = await uow.get_jobs(k[1] for k in keys.values() if k is not None and k[0] == batch.id)
        chosen, wrong = [], []
        for job_id, key in keys.items():
            job = jobs.get(key[1]) if key is not None and key[0] == batch.id else None
            if job is not None and job.kind == JobKind.JOB and job.status == JobStatus.FAILED:
                chosen.append(job)
            else:
                wrong.append(job_id)
        if wrong:
            raise Invalid(f"not failed jobs of batch {batch.id}: {', '.join(wrong)}", field="job_ids")
        return chosen

    # ---- workers ---------------------------------------------------------------------------

    async def start(
        self, tenant: str | None, job_id: str, attempt: int, worker: str | None = None, queues: Queues = None,
        delivery: str | None = None,
    ) -> dict[str, Any]:
        """A worker takes a delivered attempt: it becomes running under the delivery's lease."""
        with bound(job_id=job_id, attempt=attempt):
            started, refused = await self.start_many(tenant, [(job_id, attempt, delivery)], worker, queues)
        if refused:
            raise refused[0][2]
        return started[0]

    async def start_many(
        self, tenant: str | None, deliveries: list[Delivery], worker: str | None = None, queues: Queues = None
    ) -> tuple[list[dict[str, Any]], list[Refusal]]:
        """Start delivered attempts (one operation per batch, shared with the starts other
        callers make meanwhile: app.services.coalesce). Stale, duplicate or cancelled
        deliveries are refused, never run; the started messages keep the delivery order.

        A delivery that started its attempt already (its answer was lost: see rules.lease_for)
        gets the same started message again."""
        outcomes = await _per_batch(
            [_Start(-1, *delivery, tenant, worker, queues) for delivery in deliveries], self._starts
        )
        started: list[dict[str, Any]] = []
        refused: list[Refusal] = []
        seen: set[str] = set()
        for (job_id, attempt, _), outcome in zip(deliveries, outcomes):
            if isinstance(outcome, DomainError):
                refused.append((job_id, attempt, outcome))
            elif job_id not in seen:  # each job once (a delivery repeated in one call), in delivery order
                seen.add(job_id)
                started.append(outcome)
        self.metrics.messages_delivered.inc(len(started))
        return started, refused

    async def _start_in(self, batch_id: str, items: list[_Start]) -> list[Outcome]:
        """One operation starting `items` of one batch: for each, its started message or why not."""
        measures = Measures(self.metrics)

        async def op(uow: UnitOfWork) -> list[Outcome]:
            out: list[Outcome] = []
            batch = uow.batch
            step = self._step(uow) if batch is not None else None
            for item, job in await _jobs_of(uow, items):
                if isinstance(job, DomainError):
                    out.append(job)
                    continue
                assert batch is not None and step is not None  # (a job was found in it)
                if (
                    item.delivery and job.status == JobStatus.RUNNING and job.attempts == item.attempt
                    and job.lease == rules.lease_for(batch, job, item.delivery)
                ):  # fmt: skip
                    if rules.start_again(job, item.worker, step.now, self.settings.claim_timeout_s):
                        out.append(rules.build_message(batch, job))  # this delivery started it: its answer was lost
                    else:
                        out.append(Conflict(f"attempt {item.attempt} of job {item.job_id} was started through this "
                                            "delivery by another worker; it runs there"))  # fmt: skip
                elif job.status != JobStatus.QUEUED or job.attempts != item.attempt:
                    state = job.status if job.attempts == item.attempt else f"superseded by attempt {job.attempts}"
                    out.append(Conflict(f"attempt {item.attempt} of job {item.job_id} is {state}; it cannot start"))
                else:
                    measures.queue_wait(job, step.now)
                    step.start(job, rules.lease_for(batch, job, item.delivery), item.worker)
                    out.append(rules.build_message(batch, job))
            return out

        return await self._run("start", batch_id, op, optimistic=True, measures=measures)

    async def heartbeat(
        self, tenant: str | None, job_id: str, attempt: int, lease: str, queues: Queues = None
    ) -> dict[str, Any]:
        key = parse_job_id(job_id)
        if key is None:
            raise NotFound(f"job {job_id} not found")

        async def op(uow: UnitOfWork) -> dict[str, Any]:
            job = await self._job_of(uow, tenant, key[1], job_id)
            if queues is not None and job.queue not in queues:
                raise _not_your_queue(job)
            if job.status != JobStatus.RUNNING or job.attempts != attempt:
                state = job.status if job.attempts == attempt else f"superseded by attempt {job.attempts}"
                raise Conflict(f"attempt {attempt} of job {job_id} is {state}; stop working on it")
            _check_lease(job, lease)
            job.lease_expires_at = self.clock() + job.timeout_s
            uow.save_job(job)
            return {"job_id": job_id, "attempt": attempt, "lease_expires_at": rules.rfc3339(job.lease_expires_at)}

        with bound(job_id=job_id, attempt=attempt):
            return await self._run("heartbeat", key[0], op, optimistic=True)

    @staticmethod
    async def _job_of(uow: UnitOfWork, tenant: str | None, position: int, job_id: str) -> Job:
        if uow.batch is None or (tenant is not None and uow.batch.tenant != tenant):
            raise NotFound(f"job {job_id} not found")
        job = (await uow.get_jobs([position])).get(position)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    async def report(self, tenant: str | None, report: Report, queues: Queues = None) -> dict[str, Any]:
        with bound(job_id=report.job_id, attempt=report.attempt):
            (outcome,) = await self.report_many(tenant, [report], queues)
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    async def report_many(
        self, tenant: str | None, reports: list[Report], queues: Queues = None
    ) -> list[dict[str, Any] | DomainError]:
        """Apply workers' reports, one operation per batch, each report with its own outcome.

        A refused report (unknown job, stale attempt, wrong lease) does not stop the others.
        """
        began = time.time_ns()
        ordered = await _per_batch([_Apply(-1, report, tenant, queues) for report in reports], self._reports)
        for report, outcome in zip(reports, ordered):
            result = "refused" if isinstance(outcome, DomainError) else "duplicate" if outcome["duplicate"] else outcome["status"]
            self.metrics.reports.labels(report.outcome, result).inc()
            log.debug("report %s of job %s attempt %s: %s", report.outcome, report.job_id, report.attempt, result,
                      extra={"batch_id": report.job_id.rpartition(".")[0], "job_id": report.job_id, "attempt": report.attempt})  # fmt: skip
        self.tracing.reports(reports, ordered, began)
        return ordered

    async def _apply_in(self, batch_id: str, items: list[_Apply]) -> list[Outcome]:
        """One operation applying `items` of one batch: for each, its outcome or why it was refused.

        A refused report (unknown job, stale attempt, wrong lease) does not stop the others."""
        measures = Measures(self.metrics)

        async def op(uow: UnitOfWork) -> list[Outcome]:
            out: list[Outcome] = []
            step = self._step(uow) if uow.batch is not None else None
            for item, job in await _jobs_of(uow, items):
                if isinstance(job, DomainError):
                    out.append(job)
                    continue
                assert step is not None  # (a job was found in its batch)
                try:
                    out.append(await self._apply(step, job, item.report, measures))
                except Conflict as refused:
                    out.append(refused)
            return out

        return await self._run("report", batch_id, op, optimistic=True, measures=measures)

    async def _apply(self, step: Step, job: Job, report: Report, measures: Measures) -> dict[str, Any]:
        done = JobStatus.COMPLETED if report.outcome == "completed" else JobStatus.FAILED
        if job.attempts == report.attempt and job.status == JobStatus.RUNNING:
            _check_lease(job, report.lease)
            measures.job_run(job, step.now, report.outcome)
            if report.outcome == "completed":
                await step.job_completed(job, report.result, report.context)
            else:
                await step.attempt_failed(job, report.error or "failed", report.retryable, AttemptStatus.FAILED)
            return {"job_id": job.id, "status": job.status.value, "attempts": job.attempts, "duplicate": False}
        # Not the live attempt: a repeat of a report already applied is a no-op, the rest is refused.
        if job.attempts == report.attempt and job.status == done:
            return {"job_id": job.id, "status": job.status.value, "attempts": job.attempts, "duplicate": True}
        if 0 < report.attempt < job.attempts:
            record = await step.uow.attempt_record(job.position, report.attempt)
            if record is not None and record.status.value == done.value:
                return {"job_id": job.id, "status": job.status.value, "attempts": job.attempts, "duplicate": True}
            state = record.status.value if record is not None else f"superseded by attempt {job.attempts}"
            raise Conflict(f"attempt {report.attempt} of job {job.id} is {state}; its report is refused")
        state = job.status.value if job.attempts == report.attempt else "unknown"
        raise Conflict(f"attempt {report.attempt} of job {job.id} is {state}; its report is refused")

    async def republish(self, batch_id: str, attempts: list[tuple[int, int]], before: float) -> int:
        """Write again the messages of queued attempts whose message was due before `before`
        and has gone (the reconciler found it missing from the broker). A duplicate of one
        that was not lost after all is refused when a worker starts it."""

        async def op(uow: UnitOfWork) -> int:
            if uow.batch is None:
                return 0
            step = self._step(uow)
            jobs = await uow.get_jobs(p for p, _ in attempts)
            again = 0
            for position, attempt in attempts:
                job = jobs.get(position)
                if job is None or job.status != JobStatus.QUEUED or job.attempts != attempt:
                    continue  # started (or moved on) meanwhile
                if job.available_at is not None and job.available_at >= before:
                    continue
                step.requeue(job)
                again += 1
            return again

        again = await self._run("republish", batch_id, op, optimistic=True)
        self.metrics.messages_republished.inc(again)
        return again

    async def expire(self, batch_id: str, positions: list[int]) -> int:
        """Running attempts whose lease ran out count as failed attempts (and are retried)."""

        async def op(uow: UnitOfWork) -> list[tuple[str, int, float]]:
            if uow.batch is None:
                return []
            step = self._step(uow)
            expired = []
            for job in (await uow.get_jobs(positions)).values():
                if job.status != JobStatus.RUNNING or job.lease_expires_at is None or job.lease_expires_at >= step.now:
                    continue  # reported, or a heartbeat arrived in the meantime
                error = f"lease expired after {job.timeout_s:g}s without a report (worker died or hung)"
                expired.append((job.id, job.attempts, job.timeout_s))
                await step.attempt_failed(job, error, retryable=True, ended=AttemptStatus.EXPIRED)
            return expired

        expired = await self._run("expire", batch_id, op, optimistic=True)
        self.metrics.leases_expired.inc(len(expired))
        for job_id, attempt, timeout_s in expired:
            log.info("job %s: the lease of attempt %s ran out after %gs without a report", job_id, attempt, timeout_s,
                     extra={"batch_id": batch_id, "job_id": job_id, "attempt": attempt})  # fmt: skip
        return len(expired)


async def _per_batch(items: list[Item], run: Coalescer[Item, Outcome]) -> list[Outcome]:
    """Each item's outcome, in order: those naming a job go to `run`, one call per batch (with
    the position filled in), side by side; the rest are 404."""
    groups, unknown = _by_batch(enumerate(items), lambda ix: ix[1].job_id)
    outcomes: dict[int, Outcome] = {i: NotFound(f"job {item.job_id} not found") for i, item in unknown}

    async def in_batch(batch_id: str, members: list[tuple[int, tuple[int, Item]]]) -> None:
        answers = await run(batch_id, [item._replace(position=position) for position, (_, item) in members])
        for (_, (i, _)), outcome in zip(members, answers):
            outcomes[i] = outcome

    await _each(in_batch(b, members) for b, members in groups.items())
    return [outcomes[i] for i in range(len(items))]


async def _jobs_of(uow: UnitOfWork, items: list[Item]) -> list[tuple[Item, Job | DomainError]]:
    """The job each item names, or why its caller may not touch it: 404 when the batch or the
    job does not exist or is another tenant's, 403 when the caller's key may not work its queue."""
    batch = uow.batch
    jobs = await uow.get_jobs(item.position for item in items) if batch is not None else {}
    found: list[tuple[Item, Job | DomainError]] = []
    for item in items:
        job = jobs.get(item.position)
        if batch is None or job is None or (item.tenant is not None and batch.tenant != item.tenant):
            found.append((item, NotFound(f"job {item.job_id} not found")))
        elif item.queues is not None and job.queue not in item.queues:
            found.append((item, _not_your_queue(job)))
        else:
            found.append((item, job))
    return found


async def _each(operations: Iterable[Awaitable[T]]) -> list[T]:
    """The operations on several batches side by side; a lone one (the usual case) is awaited
    as it is, without the task gather would make for it."""
    pending = list(operations)
    if len(pending) == 1:
        return [await pending[0]]
    return list(await asyncio.gather(*pending))


def _not_your_queue(job: Job) -> Forbidden:
    return Forbidden(f"this key may not work queue {job.queue!r} (job {job.id})")


def _check_lease(job: Job, lease: str) -> None:
    """A report or heartbeat must carry the live attempt's lease (compared in constant time)."""
    if job.lease is None or not hmac.compare_digest(lease.encode(), job.lease.encode()):
        raise Conflict(f"lease does not match attempt {job.attempts} of job {job.id}")

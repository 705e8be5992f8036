"""An in-memory store for millisecond tests of the engine and the orchestrator (a test double).

Records are copied in and out (jobs shallowly: the engine replaces their fields, never edits
them in place), so an operation sees only what was committed. It implements the store port
(app.store.base) the plainest way: one process, no concurrency,
so every operation commits. What it keeps and how it applies a change set mirror the SQL
store (app/store/sql.py, sql_statements.bulk_move / dispatch), in the same order. The
behaviour suite stays on the real stores; this only lets the pure core be tested without them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.domain.definitions import JobSpec
from app.domain.models import Attempt, Batch, Callbacks, Event, Job, Message, Webhook
from app.domain.states import BatchType, FailurePolicy, JobKind, JobStatus
from app.services.orchestrator import Orchestrator, Report
from app.store.base import BulkMove, ChangeSet, Mode, Operation, Store, T, UnitOfWork


class MemoryUnitOfWork(UnitOfWork):
    def __init__(self, store: MemoryStore, mode: Mode) -> None:
        super().__init__(mode)
        self.store = store

    async def _read_batch(self, batch_id: str) -> Batch | None:
        return copy.deepcopy(self.store.batches.get(batch_id))

    def _stored(self) -> dict[int, Job]:
        assert self.batch is not None
        return self.store.jobs.get(self.batch.id, {})

    async def _read_jobs(self, positions: list[int]) -> list[Job]:
        stored = self._stored()
        return [copy.copy(stored[p]) for p in positions if p in stored]

    async def _read_positions(self, kind: JobKind, statuses: list[JobStatus], limit: int | None) -> list[int]:
        found = sorted(p for p, j in self._stored().items() if j.kind == kind and j.status in statuses)
        return found if limit is None else found[:limit]

    async def _read_attempt(self, position: int, attempt: int) -> Attempt | None:
        assert self.batch is not None
        return self.store.attempts.get((self.batch.id, position, attempt))

    async def _spill(self, jobs: list[Job]) -> None:
        assert self.batch is not None
        self.store.insert_jobs(self.batch.id, jobs)


@dataclass
class MemoryStore(Store):
    batches: dict[str, Batch] = field(default_factory=dict)
    jobs: dict[str, dict[int, Job]] = field(default_factory=dict)  # batch id -> position -> job
    attempts: dict[tuple[str, int, int], Attempt] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)  # the outbox
    events: list[Event] = field(default_factory=list)
    webhooks: list[Webhook] = field(default_factory=list)
    commits: list[ChangeSet] = field(default_factory=list)

    async def init(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def run(self, batch_id: str | None, operation: Operation[T], optimistic: bool = False) -> T:
        uow = MemoryUnitOfWork(self, Mode.OPTIMISTIC if optimistic and batch_id is not None else Mode.LOCKED)
        if batch_id is not None:
            await uow.open(batch_id)
        result = await operation(uow)
        if uow.batch is not None and uow.has_writes:
            self._commit(uow.changes())
        return result

    def _commit(self, cs: ChangeSet) -> None:
        self.commits.append(cs)
        batch = cs.batch
        self.insert_jobs(batch.id, cs.new_jobs)
        stored = self.jobs[batch.id]
        for job in cs.changed_jobs:
            assert job.position in stored, f"job {job.id} changed but never written"
            stored[job.position] = copy.copy(job)
        for op in cs.bulk:
            if isinstance(op, BulkMove):
                self._bulk_move(batch, op)
            else:
                waiting = sorted(p for p, j in stored.items() if j.kind == op.kind and j.status == JobStatus.WAITING)
                for p in waiting[: op.limit]:
                    job = stored[p]
                    job.status, job.attempts, job.queued_at, job.available_at = JobStatus.QUEUED, job.attempts + 1, op.now, op.now
                    self.messages.append(Message(batch.tenant, job.queue, batch.id, p, job.attempts, op.now))
        for attempt in cs.attempts:
            self.attempts[(attempt.batch_id, attempt.position, attempt.attempt)] = attempt
        self.messages += copy.deepcopy(cs.messages)
        for event in cs.events:
            self.events.append(copy.deepcopy(event))
            self.events[-1].id = len(self.events)
        self.webhooks += copy.deepcopy(cs.webhooks)
        saved = copy.deepcopy(batch)
        saved.version += 1
        self.batches[batch.id] = saved

    def insert_jobs(self, batch_id: str, jobs: list[Job]) -> None:
        """New jobs; a position written twice is refused, as the SQL primary key refuses it."""
        stored = self.jobs.setdefault(batch_id, {})
        for job in jobs:
            assert job.position not in stored, f"job {job.id} written twice"
            stored[job.position] = copy.copy(job)

    def _bulk_move(self, batch: Batch, op: BulkMove) -> None:
        for job in self.jobs[batch.id].values():
            if job.kind != op.kind or job.status not in op.frm:
                continue
            if job.status == JobStatus.RUNNING and op.ended is not None:
                self.attempts[(batch.id, job.position, job.attempts)] = Attempt(
                    batch.id, job.position, job.attempts, op.ended, job.worker, None, job.queued_at, job.started_at, op.now
                )
            if job.status == JobStatus.QUEUED:
                self.messages = [m for m in self.messages if (m.batch_id, m.position) != (batch.id, job.position)]
            job.status, job.lease, job.lease_expires_at, job.available_at = op.to, None, None, None
            if op.revive:
                job.attempt_base, job.error, job.finished_at = job.attempts, None, None
            elif op.to.finished:
                job.finished_at = op.now

    # ---- reads ------------------------------------------------------------------------------

    async def get_batch(self, batch_id: str) -> Batch | None:
        return copy.deepcopy(self.batches.get(batch_id))

    async def list_batches(self, tenant, status, queue, limit, before):  # noqa: ANN001, ANN201
        raise NotImplementedError

    async def get_job(self, batch_id: str, position: int) -> Job | None:
        return copy.deepcopy(self.jobs.get(batch_id, {}).get(position))

    async def list_jobs(self, batch_id: str, status: str | None, kind: str | None, limit: int, offset: int) -> list[Job]:
        jobs = [j for _, j in sorted(self.jobs.get(batch_id, {}).items())]
        jobs = [j for j in jobs if (status is None or j.status == status) and (kind is None or j.kind == kind)]
        return copy.deepcopy(jobs[offset : offset + limit])

    async def list_attempts(self, batch_id: str, position: int) -> list[Attempt]:
        return [a for (b, p, _), a in sorted(self.attempts.items()) if (b, p) == (batch_id, position)]

    async def events_after(self, batch_id: str, after_id: int, limit: int) -> list[Event]:
        return [e for e in self.events if e.batch_id == batch_id and (e.id or 0) > after_id][:limit]

    async def list_webhooks(self, batch_id: str) -> list[Webhook]:
        return [w for w in self.webhooks if w.batch_id == batch_id]

    async def expired_leases(self, now: float, limit: int) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for batch_id, jobs in self.jobs.items():
            for p, j in sorted(jobs.items()):
                if j.status == JobStatus.RUNNING and j.lease_expires_at is not None and j.lease_expires_at < now:
                    found.setdefault(batch_id, []).append(p)
        return found

    async def claim_due_webhooks(self, now, limit, hold_s):  # noqa: ANN001, ANN201
        raise NotImplementedError

    async def save_webhook(self, webhook: Webhook) -> None:
        raise NotImplementedError

    async def queue_counts(self, tenant: str | None) -> dict[str, dict[str, int]]:
        raise NotImplementedError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Core:
    """The orchestrator over a memory store, with a worker's helpers (the unit tests' `api`)."""

    def __init__(self, **settings: Any) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.settings = Settings(**{"retry_backoff_base_s": 0.0, **settings})
        self.orc = Orchestrator(self.store, self.settings, self.clock)

    async def create(
        self,
        jobs: list[str | JobSpec],
        type_: BatchType = BatchType.PARALLEL,
        policy: FailurePolicy | None = None,
        limit: int | None = None,
        context: dict[str, Any] | None = None,
        callbacks: dict[str, Any] | None = None,
        queue: str | None = None,
        defaults: dict[str, Any] | None = None,
    ) -> Batch:
        specs = [JobSpec(name=j) if isinstance(j, str) else j for j in jobs]
        return await self.orc.create_batch(
            tenant="default", type_=type_, specs=specs, context=context or {}, queue=queue, failure_policy=policy,
            max_concurrency=limit, callbacks=Callbacks.of(callbacks), defaults=defaults or {},
        )  # fmt: skip

    def due(self, batch_id: str | None = None, max: int | None = None) -> list[Message]:
        """Messages whose time has come (a broker would hand them out), taken off the outbox."""
        now = self.clock()
        due = [m for m in self.store.messages if m.available_at <= now and batch_id in (None, m.batch_id)][:max]
        self.store.messages = [m for m in self.store.messages if m not in due]
        return due

    async def claim(self, batch_id: str | None = None, max: int | None = None) -> list[dict[str, Any]]:
        """Start the due attempts, as a worker's claim does (refused ones are dropped)."""
        due = self.due(batch_id, max)
        started, _ = await self.orc.start_many(None, [(m.payload()["job_id"], m.attempt) for m in due])
        return started

    async def complete(self, msg: dict[str, Any], result: Any = None, context: dict | None = None) -> dict[str, Any]:
        report = Report(msg["job_id"], msg["attempt"], msg["lease"], "completed", result=result, context=context)
        return await self.orc.report(None, report)

    async def fail(self, msg: dict[str, Any], error: str = "boom", retryable: bool = True) -> dict[str, Any]:
        report = Report(msg["job_id"], msg["attempt"], msg["lease"], "failed", error=error, retryable=retryable)
        return await self.orc.report(None, report)

    def batch(self, batch_id: str) -> Batch:
        return self.store.batches[batch_id]

    def jobs(self, batch_id: str, kind: JobKind | None = None) -> list[Job]:
        return [j for _, j in sorted(self.store.jobs[batch_id].items()) if kind is None or j.kind == kind]

    def events(self, batch_id: str, type_: str | None = None) -> list[Event]:
        return [e for e in self.store.events if e.batch_id == batch_id and type_ in (None, e.type)]

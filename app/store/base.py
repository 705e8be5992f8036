"""The Store port: every backend (SQL, Redis) implements it; the services use only it.

Every state change is one *operation* on one batch: `Store.run(batch_id, fn)` calls
`fn(uow)` with a unit of work whose `batch` is loaded, and commits what `fn` wrote in one
atomic change. The unit of work keeps the records it loaded (an identity map), buffers
every write, and at commit hands the store one change set. `fn` must do nothing but read
and write through the unit of work, so that it can be run again.

How an operation is kept from racing another one on the same batch (the lock discipline):

- LOCKED: the batch is locked for the whole operation (SELECT … FOR UPDATE; a lock field
  in Redis taken by a script and checked at commit). Client operations (create, add jobs,
  cancel, retry) run this way, and so does any operation whose optimistic commit failed,
  so every operation finishes.
- OPTIMISTIC: worker operations (start, report, heartbeat, expire) read without the batch
  lock and then commit one of two ways:
  * FAST, when all they changed of the batch are its counts and the change is quiet
    (`rules.quiet`: the report of one of many jobs): the counts move by atomic increments,
    guarded by that same condition on the current counts. Reports of one batch then run
    side by side; only the rare batch-wide decisions (the end, a failure, a chain's next
    step, a freed slot, a 10% step) take the batch, exactly once.
  * VERSIONED, otherwise: the commit applies only if the batch's version is still the one
    read (every commit bumps it).
  Either way the commit also checks that every job the operation read is still in the
  status and attempt it read (SQL reads them FOR UPDATE; Redis compares in the script).
  A failed check writes nothing, and the operation runs again LOCKED.

Set-based moves of many jobs (BulkMove, Dispatch) may go a chunk at a time where one writer
holds up every batch (SQLite, Redis: the move budget): the rest waits in a journal in the
batch (sql_journal, the Redis `pend` field), and whoever opens the batch next, or the
reconciler, finishes it before anything else commits on that batch.

Operations touch exactly one batch, so on Redis every key one operation writes shares a
hash slot. Jobs are addressed by (batch id, position).
"""
from __future__ import annotations

import copy
import enum
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.domain import rules
from app.domain.models import Attempt, Batch, CompensationSpec, Event, Job, Message, Webhook
from app.domain.states import AttemptStatus, BatchStatus, Counts, JobKind, JobStatus
from app.store.capabilities import Idempotency, Installation, MessageTable, Outbox, Reconciliation, Retention
from app.store.records import BATCH_STATE_FIELDS, batch_row

T = TypeVar("T")


class Mode(enum.Enum):
    LOCKED = "locked"
    OPTIMISTIC = "optimistic"


class Commit(enum.Enum):
    """How a change set is committed (see the module docstring)."""

    NEW = "new"  # a batch created by this operation
    LOCKED = "locked"
    FAST = "fast"
    VERSIONED = "versioned"


@dataclass
class BulkMove:
    """Move every job of `kind` in `frm` statuses to `to`, set-based (the counts moved already).

    `revive`: a retry by hand (the attempt budget restarts, the last error is cleared).
    Running jobs that move get an attempt record with `ended` as its status.
    """

    kind: JobKind
    frm: tuple[JobStatus, ...]
    to: JobStatus
    now: float
    revive: bool = False
    ended: AttemptStatus | None = None


@dataclass
class Dispatch:
    """Dispatch the `limit` waiting jobs of `kind` with the lowest positions (the counts moved already).

    Each gets its next attempt, due now.
    """

    kind: JobKind
    limit: int
    now: float


@dataclass(slots=True)
class NewJob:
    """What a job made in bulk holds (app.services.engine.Step.add_jobs resolved its defaults)."""

    name: str
    queue: str
    args: dict[str, Any]
    compensation: CompensationSpec | None
    max_attempts: int
    timeout_s: float


@dataclass
class NewJobs:
    """Jobs of the batch's own kind made in bulk, at positions first, first + 1, …; the first
    `queued` of them are dispatched (attempt 1, due `now`), the rest wait."""

    first: int
    jobs: list[NewJob]
    queued: int
    now: float

    @property
    def positions(self) -> range:
        return range(self.first, self.first + len(self.jobs))


@dataclass
class ChangeSet:
    """Everything one operation writes, as the store commits it."""

    commit: Commit
    batch: Batch
    read_version: int
    counts_delta: dict[str, int]  # flat counter field -> change (jobs_completed: +1, …)
    new_jobs: list[Job]
    inserted: list[NewJobs]  # jobs made in bulk (the store wrote or keeps their records)
    changed_jobs: list[Job]
    read_jobs: dict[int, tuple[JobStatus, int]]  # every job read: its status and attempt as read
    bulk: list[BulkMove | Dispatch]
    attempts: list[Attempt]
    messages: list[Message]
    events: list[Event]
    webhooks: list[Webhook]

    @property
    def fast_guard(self) -> dict[str, int]:
        """The parameters of the FAST guard (rules.quiet, checked on the current counts)."""
        d = self.counts_delta
        return {
            "d_open": d.get("jobs_waiting", 0) + d.get("jobs_queued", 0) + d.get("jobs_running", 0),
            "d_in_flight": d.get("jobs_queued", 0) + d.get("jobs_running", 0),
            "d_processed": d.get("jobs_completed", 0) + d.get("jobs_failed", 0) + d.get("jobs_cancelled", 0),
        }


class UnitOfWork(ABC):
    """Reads and writes of one operation on one batch. Reads see the operation's own writes."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.batch: Batch | None = None
        self._read: Batch | None = None  # the batch as read (None: created here)
        self._jobs: dict[int, Job] = {}  # identity map by position
        self._job_read: dict[int, tuple[JobStatus, int] | None] = {}
        self._dirty: dict[int, Job] = {}
        self._bulk: list[BulkMove | Dispatch] = []
        self._inserted: list[NewJobs] = []
        self._attempts: list[Attempt] = []
        self._messages: list[Message] = []
        self._events: list[Event] = []
        self._webhooks: list[Webhook] = []

    # ---- what each store provides -------------------------------------------------------

    @abstractmethod
    async def _read_batch(self, batch_id: str) -> Batch | None:
        """The batch (locked first in LOCKED mode)."""

    @abstractmethod
    async def _read_jobs(self, positions: list[int]) -> list[Job]:
        """Jobs of this batch by position (current: locked, or checked at commit)."""

    @abstractmethod
    async def _read_positions(self, kind: JobKind, statuses: list[JobStatus], limit: int | None) -> list[int]:
        """Committed positions of jobs of `kind` in `statuses`, in position order."""

    @abstractmethod
    async def _read_attempt(self, position: int, attempt: int) -> Attempt | None:
        """An ended attempt of a job of this batch (to recognise a repeated report)."""

    async def _insert(self, new: NewJobs) -> None:  # noqa: B027 - optional
        """Write the records of jobs made in bulk now, or keep them for the commit."""

    # ---- reads -----------------------------------------------------------------------------

    async def open(self, batch_id: str) -> Batch | None:
        batch = await self._read_batch(batch_id)
        if batch is not None:
            self.batch = batch
            self._read = copy.deepcopy(batch)
        return batch

    def create(self, batch: Batch) -> None:
        self.batch = batch

    async def get_jobs(self, positions: Iterable[int]) -> dict[int, Job]:
        wanted = list(dict.fromkeys(positions))
        missing = [p for p in wanted if p not in self._jobs and p not in self._job_read]
        if missing:
            for job in await self._read_jobs(missing):
                self._remember(job)
            for p in missing:
                self._job_read.setdefault(p, None)  # read and absent: nothing to check
        return {p: self._jobs[p] for p in wanted if p in self._jobs}

    async def jobs_in(self, kind: JobKind, statuses: Iterable[JobStatus], limit: int | None = None) -> list[Job]:
        """Jobs of `kind` in `statuses`, in position order, as this operation sees them."""
        wanted = set(statuses)
        positions = set(await self._read_positions(kind, sorted(wanted), None if limit is None else limit + len(self._dirty)))
        positions.update(p for p, j in self._jobs.items() if j.kind == kind and j.status in wanted)
        found = await self.get_jobs(sorted(positions))
        jobs = [j for _, j in sorted(found.items()) if j.kind == kind and j.status in wanted]
        return jobs if limit is None else jobs[:limit]

    async def attempt_record(self, position: int, attempt: int) -> Attempt | None:
        return await self._read_attempt(position, attempt)

    def _remember(self, job: Job) -> None:
        self._jobs[job.position] = job
        assert job.status is not None
        self._job_read[job.position] = (job.status, job.attempts)

    # ---- writes (buffered) -----------------------------------------------------------------

    async def insert_jobs(self, new: NewJobs) -> None:
        """Jobs made in bulk (a chunk of a batch's creation, or of an add): set-based, never
        one Job record each (the counts moved already)."""
        self._inserted.append(new)
        await self._insert(new)

    def save_job(self, job: Job) -> None:
        self._jobs[job.position] = job
        self._dirty[job.position] = job

    def add_attempt(self, attempt: Attempt) -> None:
        self._attempts.append(attempt)

    def enqueue(self, message: Message) -> None:
        self._messages.append(message)

    def add_event(self, event: Event) -> None:
        self._events.append(event)

    def add_webhook(self, webhook: Webhook) -> None:
        self._webhooks.append(webhook)

    def bulk(self, op: BulkMove | Dispatch) -> None:
        """A set-based move (its counts were moved by the domain). Loaded jobs it may move are
        forgotten, so that later reads see them as the move leaves them."""
        for position, job in list(self._jobs.items()):
            if job.kind == op.kind and position not in self._dirty:
                del self._jobs[position]
        self._bulk.append(op)

    # ---- commit ------------------------------------------------------------------------------

    def changes(self) -> ChangeSet:
        batch = self.batch
        assert batch is not None
        new_jobs = [j for p, j in self._dirty.items() if self._job_read.get(p) is None]
        changed = [j for p, j in self._dirty.items() if self._job_read.get(p) is not None]
        read_jobs = {p: r for p, r in self._job_read.items() if r is not None}
        if self._read is None:
            kind, read_version, delta = Commit.NEW, -1, {}
        else:
            delta = _counts_delta(self._read, batch)
            read_version = self._read.version
            if self.mode == Mode.LOCKED:
                kind = Commit.LOCKED
            elif self._quiet(batch, delta, new_jobs):
                kind = Commit.FAST
            else:
                kind = Commit.VERSIONED
        return ChangeSet(
            commit=kind,
            batch=batch,
            read_version=read_version,
            counts_delta=delta,
            new_jobs=new_jobs,
            inserted=self._inserted,
            changed_jobs=changed,
            read_jobs=read_jobs,
            bulk=self._bulk,
            attempts=self._attempts,
            messages=self._messages,
            events=self._events,
            webhooks=self._webhooks,
        )

    def _quiet(self, batch: Batch, delta: dict[str, int], new_jobs: list[Job]) -> bool:
        read = self._read
        assert read is not None
        if new_jobs or self._inserted or self._bulk or any(v for k, v in delta.items() if k.startswith("comps_")):
            return False
        before, after = batch_row(read), batch_row(batch)
        if any(before[f] != after[f] for f in BATCH_STATE_FIELDS if f != "updated_at"):
            return False
        if any(j.kind != JobKind.JOB for j in self._dirty.values()):
            return False
        job_delta = Counts(**{k[5:]: v for k, v in delta.items() if k.startswith("jobs_")})
        return rules.quiet(read.status, read.error is not None, read.jobs, job_delta)

    @property
    def has_writes(self) -> bool:
        if self._read is None:
            return True
        return bool(
            self._dirty or self._inserted or self._bulk or self._attempts or self._messages or self._events or self._webhooks
            or batch_row(self._read) != batch_row(self.batch)  # type: ignore[arg-type]
        )


def _counts_delta(before: Batch, after: Batch) -> dict[str, int]:
    delta = {}
    for group, b, a in (("jobs", before.jobs, after.jobs), ("comps", before.comps, after.comps)):
        for status, n in a.as_dict().items():
            if n != b.as_dict()[status]:
                delta[f"{group}_{status}"] = n - b.as_dict()[status]
    return delta


class StoreBusy(Exception):
    """An operation could not get its batch in time (it stays unchanged): answered as 503."""


class BatchExists(Exception):
    """A batch with the id a creation chose exists already (an Idempotency-Key's batch)."""


Operation = Callable[[UnitOfWork], Awaitable[T]]


class Store(ABC):
    # Optional capabilities (app.store.capabilities); None where a store lacks one.
    outbox: Outbox | None = None
    message_table: MessageTable | None = None
    retention: Retention | None = None
    reconciliation: Reconciliation | None = None
    idempotency: Idempotency
    installation: Installation

    @abstractmethod
    async def init(self) -> None:
        """Connect, and create or migrate the schema when that is allowed."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def run(self, batch_id: str | None, operation: Operation[T], optimistic: bool = False) -> T:
        """Run `operation` on one batch (None: it creates one) and commit it atomically."""

    # Reads (no lock; each is a consistent snapshot of one record or page).
    @abstractmethod
    async def get_batch(self, batch_id: str) -> Batch | None: ...

    @abstractmethod
    async def list_batches(
        self, tenant: str | None, status: str | None, queue: str | None, limit: int, before: str | None, kind: str | None = None
    ) -> list[Batch]:
        """Newest first; `before` is the id of the last batch of the previous page; tenant None: all;
        kind: the batch type (parallel/chain) or None: both."""

    @abstractmethod
    async def get_job(self, batch_id: str, position: int) -> Job | None: ...

    @abstractmethod
    async def list_jobs(
        self, batch_id: str, status: str | None, kind: str | None, limit: int, offset: int
    ) -> list[Job]: ...

    @abstractmethod
    async def list_attempts(self, batch_id: str, position: int) -> list[Attempt]: ...

    @abstractmethod
    async def events_after(self, batch_id: str, after_id: int, limit: int) -> list[Event]: ...

    @abstractmethod
    async def list_webhooks(self, batch_id: str) -> list[Webhook]: ...

    @abstractmethod
    async def event_heads(self, batch_ids: list[str]) -> dict[str, int]:
        """The last event id of each batch (one round trip for them all)."""

    # Background work (safe with many API processes at once).
    @abstractmethod
    async def expired_leases(self, now: float, limit: int) -> dict[str, list[int]]:
        """{batch id: positions} of running jobs whose lease ran out."""

    @abstractmethod
    async def claim_due_webhooks(self, now: float, limit: int, hold_s: float) -> list[Webhook]:
        """Webhooks due for a delivery attempt, hidden from other senders for hold_s."""

    @abstractmethod
    async def save_webhook(self, webhook: Webhook) -> None: ...

    @abstractmethod
    async def queue_counts(self, tenant: str | None) -> dict[str, dict[str, int]]:
        """{queue: {"queued": n, "running": m}} over unfinished jobs."""

    async def healthy(self) -> bool:
        return True


def finished_statuses() -> list[str]:
    return [s.value for s in BatchStatus if s.finished]

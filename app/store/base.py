"""The Store interface: every backend (SQL, Redis) implements it, the services use only it.

A state change runs as one *operation*: `Store.run(fn)` calls `fn(uow)` inside one atomic
unit of work and retries it from the start when the backend reports a lost race. `fn`
must do nothing but read and write through the unit of work. Every operation first calls
`lock_batch`, which serialises all changes of one batch (a row lock in SQL, a version
check in Redis); that is what makes "the last two jobs finish at once" fire exactly once.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from app.domain.models import Attempt, Batch, Event, Job, Message, Webhook

T = TypeVar("T")


class UnitOfWork(ABC):
    """Reads and writes of one operation. Reads see this operation's own writes."""

    @abstractmethod
    async def lock_batch(self, batch_id: str) -> Batch | None: ...

    async def lock_batch_of_job(self, job_id: str) -> Batch | None:
        """Lock the batch a job belongs to (None if the job is unknown).

        Callers read the job only after this, so what they read is current.
        """
        job = await self.get_job(job_id)
        return await self.lock_batch(job.batch_id) if job is not None else None

    @abstractmethod
    async def get_job(self, job_id: str) -> Job | None: ...

    async def get_jobs(self, job_ids: list[str]) -> dict[str, Job]:
        """Several jobs at once (stores override this with one round trip)."""
        found = {}
        for job_id in job_ids:
            job = await self.get_job(job_id)
            if job is not None:
                found[job_id] = job
        return found

    @abstractmethod
    async def get_attempt(self, job_id: str, attempt: int) -> Attempt | None: ...

    async def get_attempts(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], Attempt]:
        """Several attempts at once (stores override this with one round trip)."""
        found = {}
        for job_id, number in keys:
            attempt = await self.get_attempt(job_id, number)
            if attempt is not None:
                found[(job_id, number)] = attempt
        return found

    @abstractmethod
    async def jobs_by_status(
        self, batch_id: str, kind: str, statuses: Iterable[str], limit: int | None = None
    ) -> list[Job]:
        """Jobs of one kind in the given statuses, in position order."""

    @abstractmethod
    async def add_batch(self, batch: Batch) -> None: ...

    @abstractmethod
    async def add_jobs(self, jobs: list[Job]) -> None: ...

    @abstractmethod
    async def add_attempt(self, attempt: Attempt) -> None: ...

    @abstractmethod
    async def save_batch(self, batch: Batch) -> None: ...

    @abstractmethod
    async def save_job(self, job: Job) -> None: ...

    @abstractmethod
    async def save_attempt(self, attempt: Attempt) -> None: ...

    @abstractmethod
    async def enqueue(self, message: Message) -> None:
        """Record a message in the same atomic change (the outbox)."""

    @abstractmethod
    async def add_event(self, event: Event) -> None: ...

    @abstractmethod
    async def add_webhook(self, webhook: Webhook) -> None: ...


class BufferingUnitOfWork(UnitOfWork):
    """A unit of work that keeps the messages, events and webhooks it writes until commit."""

    def __init__(self) -> None:
        self._messages: list[Message] = []
        self._events: list[Event] = []
        self._webhooks: list[Webhook] = []

    async def enqueue(self, message: Message) -> None:
        self._messages.append(message)

    async def add_event(self, event: Event) -> None:
        self._events.append(event)

    async def add_webhook(self, webhook: Webhook) -> None:
        self._webhooks.append(webhook)


class Store(ABC):
    @abstractmethod
    async def init(self) -> None:
        """Connect, and create or migrate the schema when that is allowed."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def run(self, operation: Callable[[UnitOfWork], Awaitable[T]]) -> T: ...

    # Reads (no lock; each is a consistent snapshot of one record or page).
    @abstractmethod
    async def get_batch(self, batch_id: str) -> Batch | None: ...

    @abstractmethod
    async def list_batches(
        self, status: str | None, queue: str | None, limit: int, before: str | None
    ) -> list[Batch]:
        """Newest first; `before` is the id of the last batch of the previous page."""

    @abstractmethod
    async def get_job(self, job_id: str) -> Job | None: ...

    @abstractmethod
    async def list_jobs(
        self, batch_id: str, status: str | None, kind: str | None, limit: int, offset: int
    ) -> list[Job]: ...

    @abstractmethod
    async def list_attempts(self, job_id: str) -> list[Attempt]: ...

    @abstractmethod
    async def events_after(self, batch_id: str, after_id: int, limit: int) -> list[Event]: ...

    @abstractmethod
    async def list_webhooks(self, batch_id: str) -> list[Webhook]: ...

    # Background work (safe with many API processes at once).
    @abstractmethod
    async def expired_attempts(self, now: float, limit: int) -> list[tuple[str, int]]:
        """(job_id, attempt) of running attempts whose lease ran out."""

    @abstractmethod
    async def claim_due_webhooks(self, now: float, limit: int, hold_s: float) -> list[Webhook]:
        """Webhooks due for a delivery attempt, hidden from other senders for hold_s."""

    @abstractmethod
    async def save_webhook(self, webhook: Webhook) -> None: ...

    @abstractmethod
    async def queue_counts(self) -> dict[str, dict[str, int]]:
        """{queue: {"queued": n, "running": m}} over unfinished jobs."""

    async def healthy(self) -> bool:
        return True


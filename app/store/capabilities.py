"""What some stores can do beyond the Store port, each declared as an interface.

The container asks a store for a capability (`store.outbox`, `store.message_table`, …)
instead of guessing from its class: a store that lacks one leaves it None.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from app.domain.models import Message

Publish = Callable[[list[Message]], Awaitable[None]]


class Outbox(Protocol):
    """Messages written with state changes, waiting to be published to a broker."""

    async def relay_outbox(self, publish: Publish, now: float, limit: int = 500) -> int: ...


class MessageTable(Protocol):
    """The outbox read as a queue (the SQL queue broker)."""

    async def claim_messages(
        self, tenant: str, queue: str, limit: int, hide_s: float, now: float
    ) -> list[tuple[int, Message]]: ...

    async def delete_messages(self, ids: list[int]) -> None: ...

    async def message_stats(self, tenant: str | None, now: float) -> dict[str, dict[str, Any]]: ...


class Reconciliation(Protocol):
    """The store finds the jobs whose messages a broker may have lost (app.dispatch.reconciler)."""

    async def stale_queued(self, now: float, grace_s: float, limit: int) -> list[Message]:
        """Queued jobs whose message (returned as it is owed) was due more than grace_s ago
        and has left the outbox."""


class Retention(Protocol):
    """Finished batches are deleted after a while (the Redis store expires them instead)."""

    async def purge_finished(self, finished_before: float, limit: int = 200) -> int: ...


@dataclass
class IdempotencyRecord:
    """The first request with an Idempotency-Key: its body's hash, the batch it made, its answer.

    `response` is None while that request is still running (the record is a claim).
    """

    request_hash: str
    batch_id: str
    status_code: int
    response: str | None
    expires_at: float


class Idempotency(ABC):
    @abstractmethod
    async def idem_get(self, tenant: str, key: str, now: float) -> IdempotencyRecord | None: ...

    @abstractmethod
    async def idem_claim(self, tenant: str, key: str, record: IdempotencyRecord, now: float) -> bool:
        """Hold the key with a pending record; False if a live record holds it already."""

    @abstractmethod
    async def idem_finish(self, tenant: str, key: str, record: IdempotencyRecord | None) -> None:
        """Store the answer (None: release the key, the request failed)."""


class Installation(ABC):
    """Values made once per installation and shared by every replica (the webhook secret
    generated when none is configured)."""

    @abstractmethod
    async def installation_value(self, name: str, make: Callable[[], str]) -> str:
        """The value stored under `name`; with none yet, `make()` is stored first. The first
        writer wins, so replicas starting at once all get the same value."""

"""The Broker interface: it only carries messages; the store decides what they mean.

A message is an attempt's address (`Message.payload()`: job id, batch id, attempt); the
worker gets the whole message when it starts the attempt. A fetched message stays
invisible to other consumers until it is acked or until `claim_timeout_s` passes, so a
consumer that dies between fetch and ack loses nothing.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from app.domain.models import Message


@dataclass
class Delivery:
    tenant: str
    queue: str
    message: dict[str, Any]  # {"job_id", "batch_id", "attempt"}
    token: Any  # what ack() needs: a row id, a stream entry id
    stream: str | None = None  # the stream it came from, for a broker with several per queue

    @property
    def id(self) -> str:
        """This delivery's name, from which the lease of the attempt it starts is made
        (rules.lease_for): the same entry delivered again has the same one."""
        return f"{self.stream or self.queue}/{self.token}"


class Broker(ABC):
    #: True when messages reach the broker only through a relay (they are not in the store).
    needs_relay: bool = False

    async def init(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def fetch(self, tenant: str, queue: str, max_messages: int, wait_s: float, consumer: str) -> list[Delivery]:
        """Up to max_messages due messages of one queue, waiting up to wait_s for the first."""

    @abstractmethod
    async def ack(self, deliveries: list[Delivery]) -> None: ...

    async def publish(self, messages: list[Message]) -> None:
        raise NotImplementedError(f"{type(self).__name__} takes messages from the store, not by publish")

    @abstractmethod
    async def queue_stats(self, tenant: str | None, now: float) -> dict[str, dict[str, Any]]:
        """{queue: {"depth": n, "oldest_age_s": s}} for every queue of the tenant (None: all)."""

    async def oldest(self, tenant: str, queue: str) -> float | None:
        """When the oldest message still in a queue was added (None: none, or the broker
        does not say). The reconciler trusts a queued job's message to be there while it is
        not older than this."""
        return None

    def streams(self, tenant: str, queue: str) -> list[str] | None:
        """Stream keys a direct reader of `queue` reads (None: this broker has no streams)."""
        return None

    def notify(self, queues: set[str]) -> None:
        """A local commit enqueued to these queues ("*": some queue) so long-polls wake at once."""

    async def healthy(self) -> bool:
        return True

"""The Broker interface: it only carries messages; the store decides what they mean.

A fetched message stays invisible to other consumers until it is acked or until
`claim_timeout_s` passes, so a consumer that dies between fetch and ack loses nothing.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass
class Delivery:
    queue: str
    message: dict[str, Any]
    token: Any  # what ack() needs: a row id, a stream entry id


class Broker(ABC):
    #: True when messages reach the broker only through the outbox relay.
    needs_relay: bool = False

    async def init(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def fetch(self, queue: str, max_messages: int, wait_s: float, consumer: str) -> list[Delivery]:
        """Up to max_messages due messages of one queue, waiting up to wait_s for the first."""

    @abstractmethod
    async def ack(self, deliveries: list[Delivery]) -> None: ...

    async def publish(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        raise NotImplementedError

    @abstractmethod
    async def queue_stats(self, now: float) -> dict[str, dict[str, Any]]:
        """{queue: {"depth": n, "oldest_age_s": s}} for every queue the broker knows."""

    def streams(self, queue: str) -> list[str] | None:
        """Stream keys a direct reader of `queue` reads (None: this broker has no streams)."""
        return None

    def notify(self, queues: set[str]) -> None:
        """A local commit enqueued to these queues (lets long-polls wake at once)."""

    async def healthy(self) -> bool:
        return True

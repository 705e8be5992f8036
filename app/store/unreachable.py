"""Which errors mean "the store or the broker did not answer" (a restart, a failover, a cut
connection): the API answers them with 503 and Retry-After, background loops log one line
and try again next round. Everything else is a bug and keeps its traceback."""
from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

UNREACHABLE: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError,
)  # fmt: skip


def unreachable(exc: BaseException) -> bool:
    return isinstance(exc, UNREACHABLE) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)

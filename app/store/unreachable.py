"""Which errors mean "the store or the broker did not answer" (a restart, a failover, a cut
connection): the API answers them with 503 and Retry-After, background loops log one line
and try again next round. Everything else is a bug and keeps its traceback."""
from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

UNREACHABLE: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError,
)  # fmt: skip


# Replies of a Redis that is there but cannot serve this moment: another client's script ran
# past the busy threshold, it is loading its data, or a cluster is moving a slot or failing over.
TRANSIENT_REPLIES = ("BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY")


def unreachable(exc: BaseException) -> bool:
    return (
        isinstance(exc, UNREACHABLE)
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        or (isinstance(exc, ResponseError) and str(exc).startswith(TRANSIENT_REPLIES))
    )

"""Which errors mean "the store or the broker did not answer" (a restart, a failover, a cut
connection): the API answers them with 503 and Retry-After, background loops log one line
and try again next round. Everything else is a bug and keeps its traceback."""
from __future__ import annotations

import os
import traceback

from redis.exceptions import AskError, ClusterError, ReadOnlyError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError


class NotReplicated(Exception):
    """Fewer replicas than BATCHQ_REDIS_WAIT_REPLICAS confirmed a write in time (app.store.redis_replicas)."""


# A Redis Cluster in the middle of a failover: no master for a slot yet (CLUSTERDOWN,
# MASTERDOWN, a slot not covered), redirections that did not settle, a demoted master.
CLUSTER_FAILOVER: tuple[type[BaseException], ...] = (
    ClusterError, SlotNotCoveredError, TryAgainError, AskError, ReadOnlyError, NotReplicated,
)  # fmt: skip

UNREACHABLE: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError,
    *CLUSTER_FAILOVER,
)  # fmt: skip


# Replies of a Redis that is there but cannot serve this moment: another client's script ran
# past the busy threshold, it is loading its data, or a cluster is moving a slot or failing over.
TRANSIENT_REPLIES = ("BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY")


def closed_under_a_write(exc: BaseException) -> bool:
    """redis-py's asyncio connections (8.1 still) let a write on a connection that was closed
    under it — the server cut it, or the cluster client closed its connections to learn the
    cluster's shape again — raise AttributeError or TypeError instead of ConnectionError
    (redis/redis-py#3546, #4287): a cut connection all the same. Told apart from a bug by
    where it was raised: in redis-py's connection code, or asyncio's below it."""
    if not isinstance(exc, (AttributeError, TypeError)):
        return False
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    return any(f.filename.endswith(os.path.join("redis", "asyncio", "connection.py")) for f in frames)


def unreachable(exc: BaseException) -> bool:
    return (
        isinstance(exc, UNREACHABLE)
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        or (isinstance(exc, ResponseError) and str(exc).startswith(TRANSIENT_REPLIES))
        or closed_under_a_write(exc)
    )

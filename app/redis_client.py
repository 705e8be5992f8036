"""Redis connections for the store and the broker: one node, or a Redis Cluster.

`redis://host:port/0` (or `rediss://`, `unix://`) is one node. A cluster is named by
`redis+cluster://host:port,host:port,…` (`rediss+cluster://` with TLS; user and password
as usual, `redis+cluster://user:pass@h1:7000,h2:7000`), or by a plain `redis://host:port`
with BATCHQ_REDIS_CLUSTER=true; any node will do, the client learns the others.

The cluster client follows MOVED and ASK itself and, on a connection error or a
CLUSTERDOWN (a master died and its replica is not promoted yet), learns the cluster's
shape again and retries with backoff for a few seconds (`RETRIES`); beyond that the
error reaches the API, which answers 503 with Retry-After.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)
# Retries of one command during a failover: full-jitter backoff from 50 ms up to 1 s each,
# a few seconds in all (a failover with cluster-node-timeout 2 s takes 3-4 s).
RETRIES = 10

AnyRedis = Redis | RedisCluster


def is_redis_url(url: str) -> bool:
    return url.startswith(SCHEMES)


def is_cluster(url: str, cluster_flag: bool = False) -> bool:
    return url.startswith(CLUSTER_SCHEMES) or (cluster_flag and url.startswith(("redis://", "rediss://")))


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The start-up nodes of a cluster URL and the connection options it carries."""
    scheme, rest = url.split("://", 1)
    userinfo, _, hosts = rest.rpartition("@") if "@" in rest.split("/", 1)[0] else ("", "", rest)
    hosts, _, tail = hosts.partition("/")
    nodes = []
    for part in hosts.split(","):
        parsed = urlsplit(f"redis://{part}")
        nodes.append((parsed.hostname or "127.0.0.1", parsed.port or 6379))
    options: dict[str, Any] = {"ssl": scheme.startswith("rediss")}
    if userinfo:
        user, _, password = userinfo.partition(":")
        options["username"] = unquote(user) or None
        options["password"] = unquote(password) or None
    if tail.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {tail!r}: {url}")
    return nodes, options


def connect(url: str, cluster: bool = False, max_connections: int | None = None,
            pool_timeout_s: float | None = None) -> AnyRedis:
    """A client for `url` that answers str (decode_responses). With max_connections, one
    node's pool makes a burst wait up to pool_timeout_s for a connection; a cluster's
    client has that many per node and refuses the excess (MaxConnectionsError)."""
    if not is_cluster(url, cluster):
        if max_connections is None:
            return Redis.from_url(url, decode_responses=True)
        pool = BlockingConnectionPool.from_url(url, decode_responses=True, max_connections=max_connections,
                                               timeout=pool_timeout_s)  # fmt: skip
        return Redis(connection_pool=pool)
    if url.startswith(("redis://", "rediss://")):
        url = url.replace("://", "+cluster://", 1)
    nodes, options = cluster_nodes(url)
    if max_connections is not None:
        options["max_connections"] = max_connections
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        decode_responses=True,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=RETRIES),
        **options,
    )

"""batchq for Python: the API client, the worker runtime and webhook verification.

    from batchq import Client, AsyncClient            # every endpoint, typed replies
    from batchq import Registry, JobResult, PermanentError, Worker
    from batchq.webhooks import verify                # Standard Webhooks signatures

Installing this package gives the `batchq` command (`batchq worker`, `batchq batch …`);
it never needs the server, which is the separate distribution `batchq-server`.
"""
from batchq._version import __version__
from batchq.client import AsyncClient, Client
from batchq.errors import ApiUnreachable, BatchqError, Conflict, NotFound, Unauthorized
from batchq.worker import JobContext, JobResult, PermanentError, Registry, Worker, WorkerStats, load_registry

__all__ = [
    "ApiUnreachable",
    "AsyncClient",
    "BatchqError",
    "Client",
    "Conflict",
    "JobContext",
    "JobResult",
    "NotFound",
    "PermanentError",
    "Registry",
    "Unauthorized",
    "Worker",
    "WorkerStats",
    "__version__",
    "load_registry",
]

"""batchq worker runtime and Python SDK.

    from app.worker import Registry, JobResult, PermanentError

    registry = Registry()

    @registry.job("Resize")
    def resize(args, ctx):
        return {"size": args["size"]}

Run it with `batchq worker mymodule:registry --queue default`, or in-process with
`Worker(api_url, registry, transport=...)`.
"""
from app.worker.context import JobContext, JobResult, PermanentError
from app.worker.registry import Registry, load_registry
from app.worker.runtime import Worker, WorkerStats

__all__ = ["JobContext", "JobResult", "PermanentError", "Registry", "Worker", "WorkerStats", "load_registry"]

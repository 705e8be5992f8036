"""The batchq worker runtime.

    from batchq import Registry, JobResult, PermanentError

    registry = Registry()

    @registry.job("Resize")
    def resize(args, ctx):
        return {"size": args["size"]}

Run it with `batchq worker mymodule:registry --queue default`, or in-process with
`Worker(api_url, registry)` and `await worker.run()` (or `start()` / `stop()`).
"""
from batchq.worker.context import JobContext, JobResult, PermanentError
from batchq.worker.registry import Registry, load_registry
from batchq.worker.runtime import Worker, WorkerStats

__all__ = ["JobContext", "JobResult", "PermanentError", "Registry", "Worker", "WorkerStats", "load_registry"]

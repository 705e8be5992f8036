"""The benchmarks' jobs: a no-op, and the callback that ends a batch (a chord's body in Celery)."""
from batchq import Registry

registry = Registry()


@registry.job("Noop")
async def noop(args: dict, ctx) -> None:  # noqa: ANN001
    return None


@registry.job("Done")
async def done(args: dict, ctx) -> None:  # noqa: ANN001
    return None

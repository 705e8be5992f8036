"""A registry with one no-op job, for the throughput benchmark."""
from batchq import Registry

registry = Registry()


@registry.job("Noop")
async def noop(args: dict, ctx) -> None:  # noqa: ANN001
    return None

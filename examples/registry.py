"""An example worker registry, used by the README and the end-to-end tests.

    batchq worker examples.registry:registry --queue default
"""
from __future__ import annotations

import asyncio
import time

from batchq import JobContext, JobResult, PermanentError, Registry

registry = Registry()


@registry.job("Echo")
def echo(args: dict, ctx: JobContext) -> dict:
    """Returns its own arguments (without the batch coordinates) and where it ran."""
    own = {k: v for k, v in args.items() if k not in ("batch_id", "job_position")}
    return {"echo": own, "position": ctx.position, "attempt": ctx.attempt}


@registry.job("Sleep")
async def sleep(args: dict, ctx: JobContext) -> dict:
    """Sleeps `seconds` (heartbeats keep the lease alive meanwhile)."""
    seconds = float(args.get("seconds", 1))
    started = time.time()
    await asyncio.sleep(seconds)
    return {"slept": seconds, "attempt": ctx.attempt, "started_at": started}


@registry.job("Add")
def add(args: dict, ctx: JobContext) -> JobResult:
    """Adds `value` to the chain's running `total` and passes the new total on in the context."""
    total = ctx.context.get("total", 0) + args.get("value", 1)
    return JobResult(result=total, context={"total": total})


@registry.job("Fail")
def fail(args: dict, ctx: JobContext) -> None:
    """Fails: retryably by default, permanently with {"permanent": true}."""
    message = args.get("message", "asked to fail")
    if args.get("permanent"):
        raise PermanentError(message)
    raise RuntimeError(message)


@registry.job("FailOnce")
def fail_once(args: dict, ctx: JobContext) -> dict:
    """Fails its first attempt for good; any later one (a retry of the batch or of the job) succeeds."""
    if ctx.attempt == 1:
        raise PermanentError(args.get("message", "failed on the first attempt"))
    return {"attempt": ctx.attempt}


@registry.job("Noop")
def noop(args: dict) -> None:
    return None

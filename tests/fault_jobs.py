"""The job the fault tests run: it writes one line per run, so a test can tell a job that ran twice."""
from __future__ import annotations

import asyncio
import os

from batchq import JobContext, Registry

registry = Registry()


@registry.job("Work")
async def work(args: dict, ctx: JobContext) -> int:
    with open(os.environ["FAULT_RUNS"], "a", encoding="utf-8") as runs:  # one short append: atomic
        runs.write(f"{ctx.job_id} {ctx.attempt}\n")
    await asyncio.sleep(float(args.get("s", 0.02)))
    return int(args["i"])

"""Work on one batch that arrives while such work runs goes together in the next run."""
from __future__ import annotations

import asyncio

import pytest

from app.services.coalesce import Coalescer


async def test_calls_that_arrive_while_one_runs_go_together_each_getting_its_own_outcomes():
    runs: list[tuple[str, list[int]]] = []
    gate = asyncio.Event()

    async def run(batch_id: str, items: list[int]) -> list[int]:
        runs.append((batch_id, list(items)))
        if len(runs) == 1:
            await gate.wait()  # the first run is busy while the others arrive
        return [item * 10 for item in items]

    coalesce = Coalescer(run)
    first = asyncio.create_task(coalesce("b1", [1]))
    await asyncio.sleep(0)
    later = [asyncio.create_task(coalesce("b1", items)) for items in ([2, 3], [4], [2])]
    other = asyncio.create_task(coalesce("b2", [5]))  # another batch does not wait for b1
    assert await other == [50]
    gate.set()
    assert await first == [10]
    assert [await t for t in later] == [[20, 30], [40], [20]]
    assert runs == [("b1", [1]), ("b2", [5]), ("b1", [2, 3, 4, 2])]


async def test_a_failed_run_fails_each_of_its_callers_and_the_next_run_goes_on():
    gate = asyncio.Event()
    calls = 0

    async def run(batch_id: str, items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
            return items
        if calls == 2:
            raise RuntimeError("store unreachable")
        return items

    coalesce = Coalescer(run)
    first = asyncio.create_task(coalesce("b", [1]))
    await asyncio.sleep(0)
    failing = [asyncio.create_task(coalesce("b", [i])) for i in (2, 3)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == [1]
    for task in failing:
        with pytest.raises(RuntimeError, match="store unreachable"):
            await task
    assert await coalesce("b", [4]) == [4]  # nothing left stuck behind the failure


async def test_a_caller_that_goes_away_does_not_stop_the_others():
    gate = asyncio.Event()

    async def run(batch_id: str, items: list[int]) -> list[int]:
        await gate.wait()
        return items

    coalesce = Coalescer(run)
    first = asyncio.create_task(coalesce("b", [1]))
    await asyncio.sleep(0)
    gone = asyncio.create_task(coalesce("b", [2]))
    stays = asyncio.create_task(coalesce("b", [3]))
    await asyncio.sleep(0)
    gone.cancel()
    gate.set()
    assert await first == [1] and await stays == [3]
    with pytest.raises(asyncio.CancelledError):
        await gone

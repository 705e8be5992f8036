"""Background loops: run a step again and again, sleeping between idle rounds, until told to stop."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.store.unreachable import unreachable

log = logging.getLogger(__name__)


async def run_forever(
    name: str,
    step: Callable[[], Awaitable[int]],
    idle_s: float,
    stopping: asyncio.Event,
    wakeup: asyncio.Event | None = None,
) -> None:
    """Call `step` (which returns how much it did) until `stopping` is set.

    Errors are logged, not fatal. The loop ends by itself when `stopping` is set (a round
    in progress finishes first) instead of relying on task cancellation alone.
    """
    while not stopping.is_set():
        try:
            done = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a background loop must survive a bad round
            if unreachable(exc):
                log.warning("%s: store or broker unreachable (%r); trying again", name, exc)
            else:
                log.exception("%s: round failed", name)
            done = 0
        if done:
            continue
        if wakeup is None:
            await wait_event(stopping, idle_s)
        else:
            await wait_any((wakeup, stopping), idle_s)
            wakeup.clear()


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` up to `timeout` seconds; True if it was set."""
    return await wait_any((event,), timeout)


async def wait_any(events: tuple[asyncio.Event, ...], timeout: float) -> bool:
    """Wait until one of `events` is set or `timeout` passes; True if one was set."""
    if any(e.is_set() for e in events):
        return True
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for waiter in waiters:
            waiter.cancel()

"""A small helper for background loops: run a step forever, sleep between idle rounds."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_forever(name: str, step: Callable[[], Awaitable[int]], idle_s: float, wakeup: asyncio.Event | None = None) -> None:
    """Call `step` (which returns how much it did) until cancelled; errors are logged, not fatal."""
    while True:
        try:
            done = await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a background loop must survive a bad round
            log.exception("%s: round failed", name)
            done = 0
        if done:
            continue
        if wakeup is None:
            await asyncio.sleep(idle_s)
            continue
        await wait_event(wakeup, idle_s)
        wakeup.clear()


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` up to `timeout` seconds; True if it was set.

    Uses asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
    cancellation that arrives just as the event is set, and the loop never stops.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False

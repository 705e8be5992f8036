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
        try:
            await asyncio.wait_for(wakeup.wait(), timeout=idle_s)
        except asyncio.TimeoutError:
            pass
        wakeup.clear()

"""The one clock of a server process, in Unix seconds.

Leases, backoff, due messages and webhooks all read it, so a test can move time forward
(`clock.advance(5)`) instead of sleeping through a lease, which no loaded machine times well.
"""
from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

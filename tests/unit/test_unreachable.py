"""Which store errors are "try again shortly" (503 with Retry-After) and which are bugs (500)."""
from __future__ import annotations

import pytest
from redis.exceptions import BusyLoadingError, ClusterDownError, ResponseError, TryAgainError

from app.store.unreachable import unreachable


@pytest.mark.parametrize("exc", [
    ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT."),
    BusyLoadingError("LOADING Redis is loading the dataset in memory"),
    TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
    ClusterDownError("CLUSTERDOWN The cluster is down"),
    ResponseError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
    ConnectionResetError(),
])  # fmt: skip
def test_a_store_that_cannot_serve_this_moment_is_transient(exc: BaseException) -> None:
    assert unreachable(exc)


@pytest.mark.parametrize("exc", [
    ResponseError("ERR Error running script: attempt to index a nil value"),
    ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ValueError("BUSY"),
])  # fmt: skip
def test_a_script_error_is_a_bug_not_a_blip(exc: BaseException) -> None:
    assert not unreachable(exc)

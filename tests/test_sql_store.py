"""The SQL store's own guarantees (SQLite and PostgreSQL, when those backends are tested)."""
from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from app.store import sql_schema as t
from conftest import SQL_STORE_BACKENDS


async def _journal(api, batch_id: str) -> str | None:  # noqa: ANN001
    async with api.services.store.engine.connect() as conn:
        return (await conn.execute(select(t.batches.c.pend).where(t.batches.c.id == batch_id))).scalar_one()


@pytest.mark.parametrize("backend", SQL_STORE_BACKENDS, indirect=True)
async def test_moves_left_by_a_process_that_died_are_finished_by_the_next_operation(api, monkeypatch):
    """A whole-batch move edits a few positions per transaction (move_budget, 4 in the tests),
    the rest waiting in the batch's journal. If the process dies in between, the next
    operation on the batch finishes the moves before its own work: counts and job statuses
    agree again, and nothing commits on top of half-moved jobs."""
    store = api.services.store
    batch = await api.create({"jobs": ["A"] * 20})
    a, b = await api.claim_until(2)

    async def died(batch_id: str) -> None:
        return None  # the process is gone before its next transaction

    monkeypatch.setattr(store, "_finish_moves", died)
    await api.fail(a, "bad", retryable=False)  # fail-fast: 18 jobs to cancel, positions 0-3 now
    assert await _journal(api, batch["id"]) is not None
    statuses = Counter(j["status"] for j in await api.jobs(batch["id"]))
    assert statuses["cancelled"] < 18  # half-moved: what a reader may see meanwhile
    monkeypatch.undo()

    await api.complete(b)  # a report cannot commit over waiting moves: it finishes them first
    assert await _journal(api, batch["id"]) is None
    final = await api.batch(batch["id"])
    assert (final["status"], final["failed"], final["completed"], final["cancelled"]) == ("failed", 1, 1, 18), final
    statuses = Counter(j["status"] for j in await api.jobs(batch["id"]))
    assert statuses == {"failed": 1, "completed": 1, "cancelled": 18}, statuses
    assert await api.claim(max=20, wait_s=0.3) == []  # no message of a cancelled job is handed out


@pytest.mark.parametrize("backend", SQL_STORE_BACKENDS, indirect=True)
async def test_the_reconciler_finishes_moves_nothing_else_would_come_for(api, monkeypatch):
    """A cancel whose process died mid-way, in a batch whose other jobs all wait for a slot:
    no message, lease or report will ever open that batch again. The reconciler's round
    finishes the moves."""
    store = api.services.store
    batch = await api.create({"jobs": ["A"] * 20, "max_concurrency": 2})

    async def died(batch_id: str) -> None:
        return None

    monkeypatch.setattr(store, "_finish_moves", died)
    cancelled = (await api.post(f"/v1/batches/{batch['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled" and await _journal(api, batch["id"]) is not None
    monkeypatch.undo()

    await store.stale_queued(api.services.clock(), 30.0, 100)
    assert await _journal(api, batch["id"]) is None
    assert Counter(j["status"] for j in await api.jobs(batch["id"])) == {"cancelled": 20}

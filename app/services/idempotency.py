"""Idempotency-Key on batch creation: the same key with the same body creates one batch.

The first request with a key holds it with a pending record naming the batch id it will
create; its repeats wait for it and get its answer again. A repeat whose body differs is
refused (422). If the first request's process died, a repeat takes over: when the batch
exists (the creation committed) it answers from it; when it does not, it creates it under
the same id, so that even a first request that was only slow cannot make a second batch
(the store refuses a second batch with one id).

(Adding jobs to a batch records its keys in the batch itself, atomically with the add:
see Orchestrator.add_jobs.)
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.domain.errors import Conflict, Invalid
from app.store.base import BatchExists
from app.store.capabilities import Idempotency, IdempotencyRecord

PENDING_S = 30.0  # a pending record older than this was left by a request that died
WAIT_S = 10.0  # how long a repeat waits for the first request's answer


def request_hash(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Replay(Exception):
    def __init__(self, status: int, body: str):
        self.status = status
        self.body = body


async def once(
    records: Idempotency,
    tenant: str,
    key: str,
    digest: str,
    ttl_s: float,
    new_id: Callable[[], str],
    create: Callable[[str], Awaitable[tuple[int, str]]],
    answer_from: Callable[[str], Awaitable[tuple[int, str] | None]],
    clock: Callable[[], float] = time.time,
) -> tuple[int, str, bool]:
    """Run `create(batch_id)` once per (tenant, key); returns (status, body, replayed).

    `answer_from(batch_id)` renders the answer from an existing batch (None: no such batch).
    """
    deadline = time.monotonic() + WAIT_S
    while True:
        now = clock()
        record = await records.idem_get(tenant, key, now)
        if record is None:
            claim = IdempotencyRecord(digest, new_id(), 0, None, now + ttl_s)
            if await records.idem_claim(tenant, key, claim, now):
                return *await _run(records, tenant, key, claim, ttl_s, create, answer_from, clock), False
            continue  # another request claimed it first
        if record.request_hash != digest:
            raise Invalid("this Idempotency-Key was used with a different request", field="Idempotency-Key")
        if record.response is not None:
            return record.status_code, record.response, True
        age = now - (record.expires_at - ttl_s)  # a pending record expires ttl_s after its claim
        if age < PENDING_S and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the first request is still at work
            continue
        if age < PENDING_S:
            raise Conflict("a request with this Idempotency-Key is still being processed; retry shortly")
        # The request holding the key died: finish its work, under the same batch id.
        answer = await answer_from(record.batch_id)
        if answer is not None:
            await records.idem_finish(tenant, key, _done(record, *answer, clock() + ttl_s))
            return *answer, True
        return *await _run(records, tenant, key, record, ttl_s, create, answer_from, clock), False


async def _run(
    records: Idempotency,
    tenant: str,
    key: str,
    claim: IdempotencyRecord,
    ttl_s: float,
    create: Callable[[str], Awaitable[tuple[int, str]]],
    answer_from: Callable[[str], Awaitable[tuple[int, str] | None]],
    clock: Callable[[], float],
) -> tuple[int, str]:
    try:
        status, body = await create(claim.batch_id)
    except BatchExists:
        # The request that held the key before us committed after all: answer from its batch.
        answer = await answer_from(claim.batch_id)
        assert answer is not None
        await records.idem_finish(tenant, key, _done(claim, *answer, clock() + ttl_s))
        return answer
    except Exception:
        await records.idem_finish(tenant, key, None)  # refused or failed: the key is free again
        raise
    await records.idem_finish(tenant, key, _done(claim, status, body, clock() + ttl_s))
    return status, body


def _done(record: IdempotencyRecord, status: int, body: str, expires_at: float) -> IdempotencyRecord:
    return IdempotencyRecord(record.request_hash, record.batch_id, status, body, expires_at)

"""SQL store (SQLAlchemy Core, async): PostgreSQL via asyncpg, SQLite via aiosqlite.

Every operation is one transaction that starts by locking its batch row
(`SELECT … FOR UPDATE` on PostgreSQL; SQLite transactions are `BEGIN IMMEDIATE`,
so writers are serialised anyway). Writes are buffered and flushed in bulk before the
next read and at commit, so creating a batch of 10,000 jobs is a handful of statements.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from functools import lru_cache

from sqlalchemy import bindparam, delete, event, func, select, text, tuple_, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.domain.models import (
    ATTEMPT_FIELDS,
    BATCH_FIELDS,
    JOB_FIELDS,
    WEBHOOK_FIELDS,
    Attempt,
    Batch,
    BatchStatus,
    Event,
    Job,
    JobStatus,
    Webhook,
)
from app.store import sql_schema as t
from app.store.base import BufferingUnitOfWork, Store, UnitOfWork

log = logging.getLogger(__name__)
T = TypeVar("T")



def _batch(row: Any) -> Batch:
    return Batch(**{f: row._mapping[f] for f in BATCH_FIELDS})


def _job(row: Any) -> Job:
    return Job(**{f: row._mapping[f] for f in JOB_FIELDS})


def _attempt(row: Any) -> Attempt:
    return Attempt(**{f: row._mapping[f] for f in ATTEMPT_FIELDS})


def _webhook(row: Any) -> Webhook:
    return Webhook(**{f: row._mapping[f] for f in WEBHOOK_FIELDS})


def _values(obj: Any, names: list[str]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


@lru_cache(maxsize=None)
def _update_stmt(table, key_cols: tuple[str, ...], names: tuple[str, ...]):
    """UPDATE … WHERE key = :_key, for executemany (built once per table)."""
    stmt = update(table)
    for key in key_cols:
        stmt = stmt.where(table.c[key] == bindparam(f"_{key}"))
    return stmt.values({n: bindparam(n) for n in names if n not in key_cols})


def _rows_for_update(objs: Iterable[Any], key_cols: list[str], names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for obj in objs:
        row = {n: getattr(obj, n) for n in names if n not in key_cols}
        row.update({f"_{k}": getattr(obj, k) for k in key_cols})
        rows.append(row)
    return rows


class SqlUnitOfWork(BufferingUnitOfWork):
    def __init__(self, conn: AsyncConnection):
        super().__init__()
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        self._jobs: dict[str, Job] = {}  # identity map
        self._attempts: dict[tuple[str, int], Attempt] = {}
        self._new_jobs: dict[str, Job] = {}
        self._new_attempts: dict[tuple[str, int], Attempt] = {}
        self._dirty_jobs: dict[str, Job] = {}
        self._dirty_attempts: dict[tuple[str, int], Attempt] = {}
        self._new_batches: list[Batch] = []
        self._dirty_batches: dict[str, Batch] = {}
        self.queues_touched: set[str] = set()

    async def flush(self) -> None:
        c = self.conn
        if self._new_batches:
            await c.execute(t.batches.insert(), [_values(b, BATCH_FIELDS) for b in self._new_batches])
            self._new_batches.clear()
        if self._dirty_batches:
            await c.execute(
                _update_stmt(t.batches, ("id",), tuple(BATCH_FIELDS)),
                _rows_for_update(self._dirty_batches.values(), ["id"], BATCH_FIELDS),
            )
            self._dirty_batches.clear()
        if self._new_jobs:
            await c.execute(t.jobs.insert(), [_values(j, JOB_FIELDS) for j in self._new_jobs.values()])
            self._new_jobs.clear()
        if self._dirty_jobs:
            await c.execute(
                _update_stmt(t.jobs, ("id",), tuple(JOB_FIELDS)), _rows_for_update(self._dirty_jobs.values(), ["id"], JOB_FIELDS)
            )
            self._dirty_jobs.clear()
        if self._new_attempts:
            await c.execute(t.attempts.insert(), [_values(a, ATTEMPT_FIELDS) for a in self._new_attempts.values()])
            self._new_attempts.clear()
        if self._dirty_attempts:
            await c.execute(
                _update_stmt(t.attempts, ("job_id", "attempt"), tuple(ATTEMPT_FIELDS)),
                _rows_for_update(self._dirty_attempts.values(), ["job_id", "attempt"], ATTEMPT_FIELDS),
            )
            self._dirty_attempts.clear()
        if self._messages:
            await c.execute(
                t.messages.insert(),
                [
                    {"queue": m.queue, "job_id": m.job_id, "attempt": m.attempt, "payload": m.payload,
                     "available_at": m.available_at, "deliveries": 0}
                    for m in self._messages
                ],
            )
            self.queues_touched.update(m.queue for m in self._messages)
            self._messages.clear()
        if self._events:
            await c.execute(
                t.events.insert(),
                [{"batch_id": e.batch_id, "type": e.type, "data": e.data, "created_at": e.created_at} for e in self._events],
            )
            self._events.clear()
        if self._webhooks:
            await c.execute(t.webhooks.insert(), [_values(w, WEBHOOK_FIELDS) for w in self._webhooks])
            self._webhooks.clear()

    async def lock_batch(self, batch_id: str) -> Batch | None:
        return await self._lock(t.batches.c.id == batch_id)

    async def lock_batch_of_job(self, job_id: str) -> Batch | None:
        owner = select(t.jobs.c.batch_id).where(t.jobs.c.id == job_id).scalar_subquery()
        return await self._lock(t.batches.c.id == owner)

    async def _lock(self, condition) -> Batch | None:  # noqa: ANN001
        await self.flush()
        stmt = select(t.batches).where(condition)
        if self.postgres:
            stmt = stmt.with_for_update()
        row = (await self.conn.execute(stmt)).first()
        if row is None:
            return None
        self._evict(row.id)
        return _batch(row)

    def _evict(self, batch_id: str) -> None:
        """Forget records of the batch read before its lock: they may predate the last change.

        (Flushed just before, so nothing of this operation's own is lost.)
        """
        for job_id in [j for j, job in self._jobs.items() if job.batch_id == batch_id]:
            del self._jobs[job_id]
        for key in [k for k, a in self._attempts.items() if a.batch_id == batch_id]:
            del self._attempts[key]

    async def get_jobs(self, job_ids: list[str]) -> dict[str, Job]:
        missing = [i for i in job_ids if i not in self._jobs]
        if missing:
            await self.flush()
            for row in await self.conn.execute(select(t.jobs).where(t.jobs.c.id.in_(missing))):
                self._jobs[row.id] = _job(row)
        return {i: self._jobs[i] for i in job_ids if i in self._jobs}

    async def get_attempts(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], Attempt]:
        missing = [k for k in keys if k not in self._attempts]
        if missing:
            await self.flush()
            stmt = select(t.attempts).where(
                tuple_(t.attempts.c.job_id, t.attempts.c.attempt).in_(missing)
            )
            for row in await self.conn.execute(stmt):
                self._attempts[(row.job_id, row.attempt)] = _attempt(row)
        return {k: self._attempts[k] for k in keys if k in self._attempts}

    async def get_job(self, job_id: str) -> Job | None:
        if job_id in self._jobs:
            return self._jobs[job_id]
        await self.flush()
        row = (await self.conn.execute(select(t.jobs).where(t.jobs.c.id == job_id))).first()
        if row is None:
            return None
        job = self._jobs[job_id] = _job(row)
        return job

    async def get_attempt(self, job_id: str, attempt: int) -> Attempt | None:
        key = (job_id, attempt)
        if key in self._attempts:
            return self._attempts[key]
        await self.flush()
        row = (
            await self.conn.execute(
                select(t.attempts).where(t.attempts.c.job_id == job_id, t.attempts.c.attempt == attempt)
            )
        ).first()
        if row is None:
            return None
        found = self._attempts[key] = _attempt(row)
        return found

    async def jobs_by_status(
        self, batch_id: str, kind: str, statuses: Iterable[str], limit: int | None = None
    ) -> list[Job]:
        await self.flush()
        stmt = (
            select(t.jobs)
            .where(t.jobs.c.batch_id == batch_id, t.jobs.c.kind == kind, t.jobs.c.status.in_(list(statuses)))
            .order_by(t.jobs.c.position)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        found = []
        for row in await self.conn.execute(stmt):
            job = self._jobs.get(row.id)
            if job is None:
                job = self._jobs[row.id] = _job(row)
            found.append(job)
        return found

    async def add_batch(self, batch: Batch) -> None:
        self._new_batches.append(batch)

    async def add_jobs(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._jobs[job.id] = self._new_jobs[job.id] = job

    async def add_attempt(self, attempt: Attempt) -> None:
        key = (attempt.job_id, attempt.attempt)
        self._attempts[key] = self._new_attempts[key] = attempt

    async def save_batch(self, batch: Batch) -> None:
        if batch not in self._new_batches:
            self._dirty_batches[batch.id] = batch

    async def save_job(self, job: Job) -> None:
        if job.id not in self._new_jobs:
            self._dirty_jobs[job.id] = job

    async def save_attempt(self, attempt: Attempt) -> None:
        key = (attempt.job_id, attempt.attempt)
        if key not in self._new_attempts:
            self._dirty_attempts[key] = attempt


def _is_retryable(exc: DBAPIError) -> bool:
    text_ = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(s in text_ for s in ("deadlock", "could not serialize", "database is locked", "serialization"))


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # noqa: ANN001
            # Let SQLAlchemy, not the driver, emit BEGIN, so that it can be BEGIN IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn):  # noqa: ANN001
            # Transactions that read and then write take the write lock up front, so two
            # of them never deadlock on a lock upgrade; plain reads stay concurrent (WAL).
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    # No pre-ping (it costs a round trip per transaction): a connection found dead is
    # invalidated and SqlStore.run retries the operation on a fresh one.
    return create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800)


class SqlStore(Store):
    def __init__(self, url: str, auto_migrate: bool = True, pool_size: int = 10, max_overflow: int = 20):
        self.url = url
        self.engine = make_engine(url, pool_size, max_overflow)
        # For transactions that read before they write (every store operation).
        self.write_engine = self.engine.execution_options(sqlite_immediate=True)
        self.auto_migrate = auto_migrate
        self.postgres = url.startswith("postgresql")
        # Called with the queue names a committed operation enqueued to (wakes long-polls).
        self.on_enqueue: Callable[[set[str]], None] | None = None

    async def init(self) -> None:
        if self.auto_migrate:
            from app.store.migrate import upgrade

            await upgrade(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def run(self, operation: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        for attempt in range(8):
            try:
                async with self.write_engine.begin() as conn:
                    uow = SqlUnitOfWork(conn)
                    result = await operation(uow)
                    await uow.flush()
                if uow.queues_touched and self.on_enqueue is not None:
                    self.on_enqueue(uow.queues_touched)
                return result
            except DBAPIError as exc:
                if not (_is_retryable(exc) or exc.connection_invalidated) or attempt == 7:
                    raise
                log.info("retrying after transient database error: %s", exc.orig)
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _first(self, stmt) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(stmt)).first()

    async def _all(self, stmt) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(stmt))

    async def get_batch(self, batch_id: str) -> Batch | None:
        row = await self._first(select(t.batches).where(t.batches.c.id == batch_id))
        return _batch(row) if row else None

    async def list_batches(self, status: str | None, queue: str | None, limit: int, before: str | None) -> list[Batch]:
        stmt = select(t.batches)
        if status:
            stmt = stmt.where(t.batches.c.status == status)
        if queue:
            stmt = stmt.where(t.batches.c.queue == queue)
        if before:
            anchor = await self.get_batch(before)
            if anchor is not None:
                stmt = stmt.where(
                    (t.batches.c.created_at < anchor.created_at)
                    | ((t.batches.c.created_at == anchor.created_at) & (t.batches.c.id < anchor.id))
                )
        stmt = stmt.order_by(t.batches.c.created_at.desc(), t.batches.c.id.desc()).limit(limit)
        return [_batch(r) for r in await self._all(stmt)]

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._first(select(t.jobs).where(t.jobs.c.id == job_id))
        return _job(row) if row else None

    async def list_jobs(self, batch_id: str, status: str | None, kind: str | None, limit: int, offset: int) -> list[Job]:
        stmt = select(t.jobs).where(t.jobs.c.batch_id == batch_id)
        if status:
            stmt = stmt.where(t.jobs.c.status == status)
        if kind:
            stmt = stmt.where(t.jobs.c.kind == kind)
        stmt = stmt.order_by(t.jobs.c.position).limit(limit).offset(offset)
        return [_job(r) for r in await self._all(stmt)]

    async def list_attempts(self, job_id: str) -> list[Attempt]:
        stmt = select(t.attempts).where(t.attempts.c.job_id == job_id).order_by(t.attempts.c.attempt)
        return [_attempt(r) for r in await self._all(stmt)]

    async def events_after(self, batch_id: str, after_id: int, limit: int) -> list[Event]:
        stmt = (
            select(t.events)
            .where(t.events.c.batch_id == batch_id, t.events.c.id > after_id)
            .order_by(t.events.c.id)
            .limit(limit)
        )
        return [Event(id=r.id, batch_id=r.batch_id, type=r.type, data=r.data, created_at=r.created_at) for r in await self._all(stmt)]

    async def list_webhooks(self, batch_id: str) -> list[Webhook]:
        stmt = select(t.webhooks).where(t.webhooks.c.batch_id == batch_id).order_by(t.webhooks.c.created_at)
        return [_webhook(r) for r in await self._all(stmt)]

    async def expired_attempts(self, now: float, limit: int) -> list[tuple[str, int]]:
        stmt = (
            select(t.attempts.c.job_id, t.attempts.c.attempt)
            .where(t.attempts.c.status == "running", t.attempts.c.lease_expires_at < now)
            .limit(limit)
        )
        return [(r.job_id, r.attempt) for r in await self._all(stmt)]

    async def claim_due_webhooks(self, now: float, limit: int, hold_s: float) -> list[Webhook]:
        due = (
            select(t.webhooks.c.id)
            .where(t.webhooks.c.status == "pending", t.webhooks.c.next_attempt_at <= now)
            .order_by(t.webhooks.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(t.webhooks)
            .where(t.webhooks.c.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=now + hold_s)
            .returning(*t.webhooks.c)
        )
        async with self.engine.begin() as conn:
            return [_webhook(r) for r in await conn.execute(stmt)]

    async def save_webhook(self, webhook: Webhook) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.webhooks).where(t.webhooks.c.id == webhook.id).values(_values(webhook, WEBHOOK_FIELDS))
            )

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        """Queued / running jobs per queue."""
        stmt = (
            select(t.jobs.c.queue, t.jobs.c.status, func.count())
            .where(t.jobs.c.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .group_by(t.jobs.c.queue, t.jobs.c.status)
        )
        counts: dict[str, dict[str, int]] = {}
        for queue, status, n in await self._all(stmt):
            counts.setdefault(queue, {})[status] = n
        return counts

    async def purge_finished(self, finished_before: float, limit: int = 200) -> int:
        """Delete up to `limit` batches that ended before `finished_before`, with all they own."""
        due = (
            select(t.batches.c.id)
            .where(t.batches.c.status.in_(list(BatchStatus.FINISHED)), t.batches.c.finished_at < finished_before)
            .limit(limit)
        )
        if self.postgres:
            due = due.with_for_update(skip_locked=True)  # replicas purge different batches
        async with self.write_engine.begin() as conn:
            ids = [r.id for r in await conn.execute(due)]
            if not ids:
                return 0
            job_ids = select(t.jobs.c.id).where(t.jobs.c.batch_id.in_(ids))
            await conn.execute(delete(t.messages).where(t.messages.c.job_id.in_(job_ids)))
            for table in (t.attempts, t.events, t.webhooks, t.jobs):
                await conn.execute(delete(table).where(table.c.batch_id.in_(ids)))
            await conn.execute(delete(t.batches).where(t.batches.c.id.in_(ids)))
        return len(ids)

    async def healthy(self) -> bool:
        try:
            await self._first(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False


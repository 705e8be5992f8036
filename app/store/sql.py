"""SQL store (SQLAlchemy Core, async): PostgreSQL via asyncpg, SQLite via aiosqlite.

An operation is one transaction (see app.store.base for the lock discipline). On
PostgreSQL a LOCKED operation starts with `SELECT … FOR UPDATE` of its batch; an
OPTIMISTIC one reads the batch plainly, locks only the jobs it reads, and writes the batch
last, so the batch row is held for one statement and the commit. SQLite transactions that
write begin IMMEDIATE, so its writers are serialised anyway.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, TypeVar

from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app import jsonx
from app.domain.models import Attempt, Batch, Event, Job, Message, Webhook
from app.domain.states import AttemptStatus, JobKind, JobStatus
from app.store import sql_schema as t
from app.store import sql_statements as q
from app.store.base import (
    BatchExists,
    Dispatch,
    NewJobs,
    ChangeSet,
    Commit,
    Mode,
    Operation,
    Store,
    StoreBusy,
    UnitOfWork,
    finished_statuses,
)
from app.store.capabilities import Idempotency, IdempotencyRecord
from app.store.sql_installation import SqlInstallation
from app.store.sql_journal import Journal
from app.domain.models import WEBHOOK_FIELDS
from app.store.records import batch_from, batch_row, job_from, job_row

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCKED_TRIES = 8
CHUNK = 5000  # rows per INSERT executemany


_dumps = jsonx.dumps


def _webhook(row: Any) -> Webhook:
    return Webhook(**{f: row._mapping[f] for f in WEBHOOK_FIELDS})


def _attempt(row: Any) -> Attempt:
    m = row._mapping
    values = {k: m[k] for k in ("batch_id", "position", "attempt", "worker", "error", "queued_at", "started_at", "finished_at")}
    return Attempt(**values, status=AttemptStatus(m["status"]))


class _Rollback(Exception):
    """An optimistic commit found its batch moved: undo everything, run again LOCKED."""


class _Unfinished(Exception):
    """The batch has moves of an earlier operation left to do (sql_journal): finish them, then run again."""


def _transient(exc: DBAPIError) -> bool:
    """Errors after which the same transaction would succeed if run again."""
    text_ = str(exc.orig if exc.orig is not None else exc).lower()
    return exc.connection_invalidated or any(
        s in text_
        for s in (
            "deadlock", "could not serialize", "serialization", "database is locked", "lock timeout",
            "locknotavailable", "connection was closed", "connection is closed", "terminating connection",
            "cannot perform operation: another operation is in progress", "connectiondoesnotexist",
        )
    )  # fmt: skip


class SqlUnitOfWork(UnitOfWork):
    def __init__(self, conn: AsyncConnection, mode: Mode, postgres: bool):
        super().__init__(mode)
        self.conn = conn
        self.postgres = postgres
        self.pend: str | None = None  # the batch's journal, as read

    async def _read_batch(self, batch_id: str) -> Batch | None:
        lock = self.postgres and self.mode == Mode.LOCKED
        # Waiting long for a lock means a LOCKED operation is at work: leave it the batch.
        timeout = "200ms" if self.postgres and self.mode == Mode.OPTIMISTIC else None
        row = (await self.conn.execute(*q.select_batch(batch_id, lock, timeout))).first()
        if row is None:
            return None
        self.pend = row.pend
        return batch_from(row._mapping)

    async def _read_jobs(self, positions: list[int]) -> list[Job]:
        assert self.batch is not None
        rows = await self.conn.execute(*q.select_jobs(self.batch.id, positions, self.postgres, self.postgres))
        return [job_from(r._mapping) for r in rows]

    async def _read_positions(self, kind: JobKind, statuses: list[JobStatus], limit: int | None) -> list[int]:
        assert self.batch is not None
        return list((await self.conn.execute(q.select_positions(self.batch.id, kind, statuses, limit))).scalars())

    async def _read_attempt(self, position: int, attempt: int) -> Attempt | None:
        assert self.batch is not None
        a = t.attempts.c
        stmt = select(t.attempts).where(a.batch_id == self.batch.id, a.position == position, a.attempt == attempt)
        row = (await self.conn.execute(stmt)).first()
        return _attempt(row) if row is not None else None

    async def _insert(self, new: NewJobs) -> None:
        """Jobs made in bulk go in at once (driver-level executemany, COPY on PostgreSQL), with
        the outbox rows of the dispatched ones: a 100,000-job batch is a few statements."""
        batch = self.batch
        assert batch is not None
        rows = []
        for i, job in enumerate(new.jobs):
            queued = i < new.queued
            rows.append((
                batch.id, new.first + i, "job", job.name, job.queue, _dumps(job.args),
                _dumps(asdict(job.compensation)) if job.compensation else None, job.max_attempts, float(job.timeout_s),
                "queued" if queued else "waiting", 1 if queued else 0, 0, new.now if queued else None, new.now,
                new.now if queued else None,
            ))  # fmt: skip
        await _copy(self.conn, "jobs", NEW_JOB_COLUMNS, rows)
        if new.queued:
            messages = [(batch.tenant, job.queue, batch.id, new.first + i, 1, new.now, 0) for i, job in enumerate(new.jobs[: new.queued])]
            await _copy(self.conn, "messages", MESSAGE_COLUMNS, messages)


NEW_JOB_COLUMNS = ["batch_id", "position", "kind", "name", "queue", "args", "compensation", "max_attempts", "timeout_s",
                   "status", "attempts", "attempt_base", "available_at", "created_at", "queued_at"]  # fmt: skip
MESSAGE_COLUMNS = ["tenant", "queue", "batch_id", "position", "attempt", "available_at", "deliveries"]


async def _copy(conn: AsyncConnection, table: str, columns: list[str], rows: list[tuple]) -> None:
    """Many rows at once on the operation's own connection, below SQLAlchemy's per-row work:
    COPY on PostgreSQL, executemany on SQLite. JSON columns come as text."""
    if conn.dialect.name == "postgresql":
        # SQLAlchemy's asyncpg adapter sends BEGIN with its first statement, not at begin():
        # a COPY straight on the driver before any would commit on its own, and a batch's
        # jobs and messages would be seen (and started) before the batch itself.
        await conn.exec_driver_sql("SELECT 1")
        raw = (await conn.get_raw_connection()).driver_connection
        await raw.copy_records_to_table(table, records=rows, columns=columns)
        return
    raw = (await conn.get_raw_connection()).driver_connection
    marks = ", ".join("?" for _ in columns)
    await raw.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


async def _insert_jobs(conn: AsyncConnection, jobs: list[Job]) -> None:
    for start in range(0, len(jobs), CHUNK):
        await conn.execute(t.jobs.insert(), [job_row(j) for j in jobs[start : start + CHUNK]])


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, json_serializer=_dumps)

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
    # invalidated and the operation runs again on a fresh one.
    # Custom plans for every statement: a plan cached while a batch's table was small (a
    # sequential scan) would otherwise outlive its growth until the next ANALYZE, and a
    # report's lookup of its jobs by primary key went from 0.1 ms to 200 ms at 100,000 jobs.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800, json_serializer=_dumps,
        connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}},
    )  # fmt: skip


class SqlStore(Store, Idempotency):
    def __init__(
        self, url: str, auto_migrate: bool = True, pool_size: int = 10, max_overflow: int = 20, move_budget: int = 0
    ):
        self.url = url
        # Jobs one transaction of a whole-batch move edits (0: all at once; see sql_journal).
        self.move_budget = move_budget
        self.engine = make_engine(url, pool_size, max_overflow)
        # For transactions that read before they write (every store operation).
        self.write_engine = self.engine.execution_options(sqlite_immediate=True)
        self.auto_migrate = auto_migrate
        self.postgres = url.startswith("postgresql")
        # Called with the queue names a committed operation enqueued to (wakes long-polls), and
        # with the batches it wrote events of (wakes their event streams).
        self.on_enqueue: Callable[[set[str]], None] | None = None
        self.on_events: Callable[[set[str]], None] | None = None
        self.idempotency = self
        self.outbox = self.message_table = self.retention = self.reconciliation = self
        self.installation = SqlInstallation(self.engine, self.write_engine)
        # SQLite has one writer, and its busy handler is no queue: a writer that polls for the
        # lock can lose it again and again to one that takes it back at once (a whole-batch
        # move's transactions, one after the other). Writers of this process take turns first.
        self._turns = None if self.postgres else asyncio.Lock()

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that reads before it writes (SQLite: after this process's earlier writers)."""
        if self._turns is None:
            async with self.write_engine.begin() as conn:
                yield conn
            return
        async with self._turns, self.write_engine.begin() as conn:
            yield conn

    async def init(self) -> None:
        if self.auto_migrate:
            from app.store.migrate import upgrade

            await upgrade(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    # ---- operations -------------------------------------------------------------------------

    async def run(self, batch_id: str | None, operation: Operation[T], optimistic: bool = False) -> T:
        if optimistic and batch_id is not None:
            try:
                done, result = await self._once(batch_id, operation, Mode.OPTIMISTIC)
                if done:
                    return result
            except Exception as exc:  # noqa: BLE001 - whatever it was, the LOCKED run decides
                log.debug("optimistic run of an operation on %s fell back: %r", batch_id, exc)
        for attempt in range(LOCKED_TRIES):
            try:
                done, result = await self._once(batch_id, operation, Mode.LOCKED)
            except _Unfinished:
                await self._finish_moves(batch_id)  # type: ignore[arg-type]
                continue
            except IntegrityError as exc:
                if batch_id is None:  # a creation under an id that is taken
                    raise BatchExists(str(exc.params)) from exc
                raise
            except DBAPIError as exc:
                if not _transient(exc) or attempt == LOCKED_TRIES - 1:
                    raise
                log.info("running an operation again after a transient database error: %s", exc.orig)
                await asyncio.sleep(0.02 * (attempt + 1))
                continue
            if done:
                return result
        raise StoreBusy(f"batch {batch_id} stayed busy")

    async def _once(self, batch_id: str | None, operation: Operation[T], mode: Mode) -> tuple[bool, Any]:
        try:
            async with self._writing() as conn:
                uow = SqlUnitOfWork(conn, mode, self.postgres)
                if batch_id is not None:
                    await uow.open(batch_id)
                    if uow.pend is not None:
                        raise _Unfinished
                result = await operation(uow)
                queues: set[str] = set()
                evented = unfinished = False
                if uow.batch is not None and uow.has_writes:
                    changes = uow.changes()
                    unfinished = await self._commit(conn, changes)
                    queues = {m.queue for m in changes.messages} | ({"*"} if changes.bulk or changes.inserted else set())
                    evented = bool(changes.events)
        except _Rollback:
            return False, None
        if queues and self.on_enqueue is not None:
            self.on_enqueue(queues)
        if evented and self.on_events is not None and uow.batch is not None:
            self.on_events({uow.batch.id})
        if unfinished:
            try:
                await self._finish_moves(uow.batch.id)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - the operation committed; whoever opens the batch next finishes
                log.warning("batch %s: moves left for the next operation on it to finish: %r", uow.batch.id, exc)  # type: ignore[union-attr]
        return True, result

    async def _finish_moves(self, batch_id: str) -> None:
        """Move the rest of a whole-batch operation's jobs (the batch's journal), a chunk of
        positions per transaction, so that other writers wait one chunk at most."""
        while True:
            async with self._writing() as conn:
                row = (await conn.execute(q.select_pend(batch_id, self.postgres))).first()
                if row is None or row.pend is None:
                    return
                journal = Journal.loads(row.pend)
                span = journal.advance(self.move_budget)
                for stmt in q.set_based(batch_id, row.tenant, journal.ops, journal.waiting_after, span):
                    await conn.execute(stmt)
                await conn.execute(q.set_pend(batch_id, None if journal.done else journal.dumps()))
            if self.on_enqueue is not None and any(isinstance(op, Dispatch) for op in journal.ops):
                self.on_enqueue({"*"})

    async def _commit(self, conn: AsyncConnection, cs: ChangeSet) -> bool:
        """Write the change set (raises _Rollback if an optimistic commit finds its batch
        moved); True when its whole-batch moves go on in further transactions."""
        batch = cs.batch
        if cs.commit == Commit.NEW:
            await conn.execute(t.batches.insert(), [batch_row(batch)])
        if cs.new_jobs:
            await _insert_jobs(conn, cs.new_jobs)
        if cs.changed_jobs:
            await conn.execute(q.update_job(), q.update_job_params([job_row(j) for j in cs.changed_jobs]))
        waiting_after = {JobKind.JOB: batch.jobs.waiting, JobKind.COMPENSATION: batch.comps.waiting}
        # More jobs than the move budget (SQLite: its one writer would hold up everyone): the first
        # chunk of positions now, the rest journaled for the next transactions.
        journal = span = None
        if 0 < self.move_budget < batch.next_position and cs.bulk and q.by_position(cs.bulk, waiting_after):
            journal = Journal(cs.bulk, waiting_after, 0, batch.next_position)
            span = journal.advance(self.move_budget)
        for stmt in q.set_based(batch.id, batch.tenant, cs.bulk, waiting_after, span):
            await conn.execute(stmt)
        if cs.attempts:
            await conn.execute(t.attempts.insert(), [a.__dict__ for a in cs.attempts])
        if cs.messages:
            await conn.execute(t.messages.insert(), [{**m.__dict__, "deliveries": 0} for m in cs.messages])
        if cs.events:
            rows = [{"batch_id": e.batch_id, "type": e.type, "data": e.data, "created_at": e.created_at} for e in cs.events]
            await conn.execute(t.events.insert(), rows)
        if cs.webhooks:
            await conn.execute(t.webhooks.insert(), [{f: getattr(w, f) for f in WEBHOOK_FIELDS} for w in cs.webhooks])
        # The batch last: on the optimistic paths this is where its row is locked.
        if cs.commit == Commit.FAST:
            stmt = q.fast_increment(batch.id, cs.counts_delta, cs.fast_guard, batch.updated_at)
            if (await conn.execute(*stmt)).rowcount != 1:
                raise _Rollback
        elif cs.commit in (Commit.LOCKED, Commit.VERSIONED):
            expect = cs.read_version if cs.commit == Commit.VERSIONED else None
            if (await conn.execute(*q.update_batch(batch_row(batch), expect))).rowcount != 1:
                raise _Rollback
        if journal is not None:
            await conn.execute(q.set_pend(batch.id, journal.dumps()))
        return journal is not None

    # ---- reads ------------------------------------------------------------------------------

    async def _all(self, stmt, params: dict[str, Any] | None = None) -> list[Any]:  # noqa: ANN001
        """A read, run again on a fresh connection when the first one was found dead."""
        for attempt in range(3):
            try:
                async with self.engine.connect() as conn:
                    return list(await conn.execute(stmt, params))
            except DBAPIError as exc:
                if not _transient(exc) or attempt == 2:
                    raise
                await asyncio.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _first(self, stmt, params: dict[str, Any] | None = None) -> Any:  # noqa: ANN001
        rows = await self._all(stmt, params)
        return rows[0] if rows else None

    async def get_batch(self, batch_id: str) -> Batch | None:
        row = await self._first(*q.select_batch(batch_id, lock=False))
        return batch_from(row._mapping) if row else None

    async def list_batches(
        self, tenant: str | None, status: str | None, queue: str | None, limit: int, before: str | None, kind: str | None = None
    ) -> list[Batch]:
        anchor = await self.get_batch(before) if before else None
        return [batch_from(r._mapping) for r in await self._all(q.list_batches(tenant, status, queue, kind, limit, anchor))]

    async def get_job(self, batch_id: str, position: int) -> Job | None:
        row = await self._first(*q.select_jobs(batch_id, [position], False, self.postgres))
        return job_from(row._mapping) if row else None

    async def list_jobs(self, batch_id: str, status: str | None, kind: str | None, limit: int, offset: int) -> list[Job]:
        return [job_from(r._mapping) for r in await self._all(q.list_jobs(batch_id, status, kind, limit, offset))]

    async def list_attempts(self, batch_id: str, position: int) -> list[Attempt]:
        a = t.attempts.c
        stmt = select(t.attempts).where(a.batch_id == batch_id, a.position == position).order_by(a.attempt)
        return [_attempt(r) for r in await self._all(stmt)]

    async def events_after(self, batch_id: str, after_id: int, limit: int) -> list[Event]:
        e = t.events.c
        stmt = select(t.events).where(e.batch_id == batch_id, e.id > after_id).order_by(e.id).limit(limit)
        return [Event(id=r.id, batch_id=r.batch_id, type=r.type, data=r.data, created_at=r.created_at) for r in await self._all(stmt)]

    async def event_heads(self, batch_ids: list[str]) -> dict[str, int]:
        e = t.events.c
        stmt = select(e.batch_id, func.max(e.id)).where(e.batch_id.in_(batch_ids)).group_by(e.batch_id)
        return {batch_id: head for batch_id, head in await self._all(stmt)}

    async def list_webhooks(self, batch_id: str) -> list[Webhook]:
        w = t.webhooks.c
        return [_webhook(r) for r in await self._all(select(t.webhooks).where(w.batch_id == batch_id).order_by(w.created_at))]

    # ---- background work --------------------------------------------------------------------

    async def expired_leases(self, now: float, limit: int) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for row in await self._all(q.expired_leases(now, limit)):
            found.setdefault(row.batch_id, []).append(row.position)
        return found

    async def claim_due_webhooks(self, now: float, limit: int, hold_s: float) -> list[Webhook]:
        w = t.webhooks.c
        due = select(w.id).where(w.status == "pending", w.next_attempt_at <= now).order_by(w.next_attempt_at).limit(limit)
        if self.postgres:
            due = due.with_for_update(skip_locked=True)
        stmt = update(t.webhooks).where(w.id.in_(due.scalar_subquery())).values(next_attempt_at=now + hold_s).returning(*t.webhooks.c)
        async with self._writing() as conn:
            return [_webhook(r) for r in await conn.execute(stmt)]

    async def save_webhook(self, webhook: Webhook) -> None:
        w = t.webhooks.c
        async with self._writing() as conn:
            await conn.execute(update(t.webhooks).where(w.id == webhook.id).values({f: getattr(webhook, f) for f in WEBHOOK_FIELDS}))

    async def stale_queued(self, now: float, grace_s: float, limit: int) -> list[Message]:
        """Reconciliation: queued jobs older than grace_s with no outbox row (their message has
        left the store: published, or lost with the broker), oldest first. First, the moves a
        process that died left in a batch's journal are finished: nothing else may come to
        that batch (its jobs may all be waiting, or failed and meant to run again)."""
        for (batch_id,) in await self._all(select(t.batches.c.id).where(t.batches.c.pend.is_not(None)).limit(limit)):
            await self._finish_moves(batch_id)
        return [
            Message(r.tenant, r.queue, r.batch_id, r.position, r.attempts, r.available_at)
            for r in await self._all(q.stale_queued(now - grace_s, limit))
        ]

    async def queue_counts(self, tenant: str | None) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for queue, status, n in await self._all(q.queue_counts(tenant)):
            counts.setdefault(queue, {})[status] = n
        return counts

    async def healthy(self) -> bool:
        try:
            await self._first(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    # ---- capabilities -----------------------------------------------------------------------

    async def purge_finished(self, finished_before: float, limit: int = 200) -> int:
        """Retention: delete up to `limit` batches that ended before `finished_before`, with all they own."""
        bc = t.batches.c
        due = select(bc.id).where(bc.status.in_(finished_statuses()), bc.finished_at < finished_before).limit(limit)
        if self.postgres:
            due = due.with_for_update(skip_locked=True)  # replicas purge different batches
        async with self._writing() as conn:
            ids = [r.id for r in await conn.execute(due)]
            if not ids:
                return 0
            for table in (t.messages, t.attempts, t.events, t.webhooks, t.jobs):
                await conn.execute(delete(table).where(table.c.batch_id.in_(ids)))
            await conn.execute(delete(t.batches).where(bc.id.in_(ids)))
        return len(ids)

    async def relay_outbox(self, publish: Callable[[list[Message]], Awaitable[None]], now: float, limit: int = 500) -> int:
        """Outbox relay: publish due messages and delete them, in one transaction.

        A crash after publishing but before the commit publishes them again: the attempt
        check drops such a duplicate when a worker starts it.
        """
        m = t.messages.c
        due = select(t.messages).where(m.available_at <= now).order_by(m.id).limit(limit)
        if self.postgres:
            due = due.with_for_update(skip_locked=True)
        async with self._writing() as conn:
            rows = list(await conn.execute(due))
            if not rows:
                return 0
            await publish([_message(r) for r in rows])
            await conn.execute(delete(t.messages).where(m.id.in_([r.id for r in rows])))
        return len(rows)

    async def claim_messages(self, tenant: str, queue: str, limit: int, hide_s: float, now: float) -> list[tuple[int, Message]]:
        """SQL queue: take due messages of a queue and hide them for hide_s (SKIP LOCKED)."""
        m = t.messages.c
        due = (
            select(m.id)
            .where(m.tenant == tenant, m.queue == queue, m.available_at <= now)
            .order_by(m.available_at, m.id)
            .limit(limit)
        )
        if self.postgres:
            due = due.with_for_update(skip_locked=True)
        stmt = (
            update(t.messages)
            .where(m.id.in_(due.scalar_subquery()))
            .values(available_at=now + hide_s, deliveries=m.deliveries + 1)
            .returning(*t.messages.c)
        )
        async with self._writing() as conn:
            rows = sorted(await conn.execute(stmt), key=lambda r: r.id)
        return [(r.id, _message(r)) for r in rows]

    async def delete_messages(self, ids: list[int]) -> None:
        if ids:
            async with self._writing() as conn:
                await conn.execute(delete(t.messages).where(t.messages.c.id.in_(ids)))

    async def message_stats(self, tenant: str | None, now: float) -> dict[str, dict[str, Any]]:
        from sqlalchemy import func

        m = t.messages.c
        stmt = select(m.queue, func.count(), func.min(m.available_at)).group_by(m.queue)
        if tenant is not None:
            stmt = stmt.where(m.tenant == tenant)
        return {
            queue: {"depth": depth, "oldest_age_s": max(0.0, now - oldest) if oldest else 0.0}
            for queue, depth, oldest in await self._all(stmt)
        }

    # ---- idempotency records ----------------------------------------------------------------

    async def idem_get(self, tenant: str, key: str, now: float) -> IdempotencyRecord | None:
        i = t.idempotency.c
        row = await self._first(select(t.idempotency).where(i.tenant == tenant, i.key == key, i.expires_at > now))
        if row is None:
            return None
        return IdempotencyRecord(row.request_hash, row.batch_id, row.status_code, row.response or None, row.expires_at)

    async def idem_claim(self, tenant: str, key: str, record: IdempotencyRecord, now: float) -> bool:
        i = t.idempotency.c
        try:
            async with self._writing() as conn:
                await conn.execute(delete(t.idempotency).where(i.tenant == tenant, i.key == key, i.expires_at <= now))
                await conn.execute(t.idempotency.insert().values(
                    tenant=tenant, key=key, request_hash=record.request_hash, batch_id=record.batch_id,
                    status_code=record.status_code, response=record.response or "", expires_at=record.expires_at,
                ))  # fmt: skip
        except IntegrityError:  # a live record holds the key (PostgreSQL: the other insert won)
            return False
        return True

    async def idem_finish(self, tenant: str, key: str, record: IdempotencyRecord | None) -> None:
        i = t.idempotency.c
        where = (i.tenant == tenant) & (i.key == key)
        async with self._writing() as conn:
            if record is None:
                await conn.execute(delete(t.idempotency).where(where))
            else:
                await conn.execute(update(t.idempotency).where(where).values(
                    status_code=record.status_code, response=record.response, expires_at=record.expires_at
                ))  # fmt: skip


def _message(row: Any) -> Message:
    m = row._mapping
    return Message(m["tenant"], m["queue"], m["batch_id"], m["position"], m["attempt"], m["available_at"])


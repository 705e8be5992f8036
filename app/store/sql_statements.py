"""Named SQL statements of the SQL store, each with what it is for (SQLAlchemy Core).

The store composes these; nothing else builds SQL. Statements that move many jobs are
set-based: cancelling or retrying 100,000 jobs is a handful of statements, not 100,000.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import ARRAY, Integer, and_, any_, bindparam, case, delete, func, insert, literal, or_, select, update

from app.domain.states import JobKind, JobStatus
from app.store import sql_schema as t
from app.store.base import BulkMove, Dispatch
from app.store.records import BATCH_FIELDS, COUNTER_FIELDS, JOB_MUTABLE

j, b = t.jobs.c, t.batches.c
Statement = tuple[Any, dict[str, Any]]  # a statement built once, and this call's parameters

# The statements of every start and report are built (and compiled) once and run with bound
# parameters: building a SQLAlchemy expression per call cost more than running it.


def select_batch(batch_id: str, lock: bool, lock_timeout: str | None = None) -> Statement:
    """The batch; locked (FOR UPDATE) when an operation runs LOCKED. With `lock_timeout`, the
    same statement sets the transaction's lock timeout (set_config(..., true) is SET LOCAL),
    which saves an optimistic operation a round trip."""
    params: dict[str, Any] = {"batch_id": batch_id}
    if lock_timeout is not None:
        params["lock_timeout"] = lock_timeout
    return _select_batch(lock, lock_timeout is not None), params


@lru_cache(maxsize=None)
def _select_batch(lock: bool, with_timeout: bool):  # noqa: ANN202
    columns = [t.batches, func.set_config("lock_timeout", bindparam("lock_timeout"), True)] if with_timeout else [t.batches]
    stmt = select(*columns).where(b.id == bindparam("batch_id"))
    return stmt.with_for_update() if lock else stmt


def select_jobs(batch_id: str, positions: list[int], lock: bool, postgres: bool) -> Statement:
    """Jobs of a batch by position, locked so that what an operation reads stays current."""
    return _select_jobs(lock, postgres), {"batch_id": batch_id, "positions": positions}


@lru_cache(maxsize=None)
def _select_jobs(lock: bool, postgres: bool):  # noqa: ANN202
    # One statement text for any number of positions on PostgreSQL (= ANY of an array), so
    # the driver prepares it once per connection.
    wanted = (
        j.position == any_(bindparam("positions", type_=ARRAY(Integer)))
        if postgres
        else j.position.in_(bindparam("positions", expanding=True))
    )
    stmt = select(t.jobs).where(j.batch_id == bindparam("batch_id"), wanted)
    return stmt.with_for_update() if lock else stmt


def select_positions(batch_id: str, kind: JobKind, statuses: list[JobStatus], limit: int | None):  # noqa: ANN201
    stmt = (
        select(j.position)
        .where(j.batch_id == batch_id, j.kind == kind.value, j.status.in_([s.value for s in statuses]))
        .order_by(j.position)
    )
    return stmt if limit is None else stmt.limit(limit)


@lru_cache(maxsize=None)
def update_job():  # noqa: ANN201
    """Write a job's changing fields (executemany)."""
    stmt = update(t.jobs).where(j.batch_id == bindparam("_batch_id"), j.position == bindparam("_position"))
    return stmt.values({name: bindparam(name) for name in JOB_MUTABLE})


def update_job_params(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**{n: r[n] for n in JOB_MUTABLE}, "_batch_id": r["batch_id"], "_position": r["position"]} for r in rows]


def update_batch(row: dict[str, Any], expect_version: int | None) -> Statement:
    """Write the whole batch and bump its version; with `expect_version`, only if unchanged (VERSIONED)."""
    params = {f"v_{name}": row[name] for name in _BATCH_WRITTEN}
    params["_id"] = row["id"]
    if expect_version is not None:
        params["_version"] = expect_version
    return _update_batch(expect_version is not None), params


_BATCH_WRITTEN = [name for name in BATCH_FIELDS if name not in ("id", "version")]


@lru_cache(maxsize=None)
def _update_batch(versioned: bool):  # noqa: ANN202
    values = {name: bindparam(f"v_{name}", type_=t.batches.c[name].type) for name in _BATCH_WRITTEN}
    stmt = update(t.batches).where(b.id == bindparam("_id")).values(**values, version=b.version + 1)
    return stmt.where(b.version == bindparam("_version")) if versioned else stmt


def fast_increment(batch_id: str, delta: dict[str, int], guard: dict[str, int], now: float) -> Statement:
    """FAST commit: move the counts by `delta` if the change is still quiet on the current counts.

    The WHERE clause is rules.quiet on the row's current values (see there): plainly running,
    no failure, no waiting job left without the slot it frees, something still open after it,
    and the same 10% step (an event) before and after. Integer division as in rules.progress_step.
    """
    names = tuple(sorted(delta))
    params: dict[str, Any] = {f"d_{name}": delta[name] for name in names}
    params.update(_id=batch_id, _now=now, d_open=guard["d_open"], d_processed=guard["d_processed"])
    return _fast_increment(names, guard["d_in_flight"] < 0), params


@lru_cache(maxsize=None)
def _fast_increment(names: tuple[str, ...], frees_a_slot: bool):  # noqa: ANN202
    total = sum((b[f"jobs_{s.value}"] for s in JobStatus), literal(0))
    open_ = b.jobs_waiting + b.jobs_queued + b.jobs_running
    processed = b.jobs_completed + b.jobs_failed + b.jobs_cancelled
    values = {name: b[name] + bindparam(f"d_{name}", type_=Integer) for name in names}
    d_open, d_processed = bindparam("d_open", type_=Integer), bindparam("d_processed", type_=Integer)
    conditions = [
        b.id == bindparam("_id"),
        b.status == "running",
        b.error.is_(None),
        b.pend.is_(None),  # no whole-batch move is half done
        open_ + d_open > 0,
        (processed * 10) // total == ((processed + d_processed) * 10) // total,
    ]
    if frees_a_slot:
        conditions.append(b.jobs_waiting == 0)
    return update(t.batches).where(*conditions).values(**values, version=b.version + 1, updated_at=bindparam("_now"))


# ---- set-based moves ------------------------------------------------------------------------


def select_pend(batch_id: str, lock: bool) -> Any:
    """The moves a batch's last whole-batch operation left to do (its journal), and its tenant."""
    stmt = select(b.pend, b.tenant).where(b.id == batch_id)
    return stmt.with_for_update() if lock else stmt


def set_pend(batch_id: str, pend: str | None) -> Any:
    return update(t.batches).where(b.id == batch_id).values(pend=pend)


Span = tuple[int, int] | None  # the positions [first, end) a chunk of a whole-batch move edits (None: all)


def _in_status(batch_id: str, kind: JobKind, statuses: tuple[JobStatus, ...], span: Span = None):  # noqa: ANN202
    where = and_(j.batch_id == batch_id, j.kind == kind.value, j.status.in_([s.value for s in statuses]))
    return where if span is None else and_(where, j.position >= span[0], j.position < span[1])


def bulk_move(batch_id: str, move: BulkMove, span: Span = None) -> list[Any]:
    """The statements of a BulkMove, in order."""
    stmts: list[Any] = []
    if JobStatus.RUNNING in move.frm and move.ended is not None:
        # The running ones' live attempts end: keep them in the history.
        stmts.append(
            insert(t.attempts).from_select(
                ["batch_id", "position", "attempt", "status", "worker", "queued_at", "started_at", "finished_at"],
                select(j.batch_id, j.position, j.attempts, literal(move.ended.value), j.worker, j.queued_at,
                       j.started_at, literal(move.now))
                .where(_in_status(batch_id, move.kind, (JobStatus.RUNNING,), span)),
            )  # fmt: skip
        )
    if JobStatus.QUEUED in move.frm:
        # Their messages will never be wanted: they leave the outbox (or the SQL queue).
        queued = select(j.position).where(_in_status(batch_id, move.kind, (JobStatus.QUEUED,), span))
        stmts.append(delete(t.messages).where(t.messages.c.batch_id == batch_id, t.messages.c.position.in_(queued)))
    values: dict[str, Any] = {"status": move.to.value, "lease": None, "lease_expires_at": None, "available_at": None}
    if move.revive:
        values.update(attempt_base=j.attempts, error=None, finished_at=None)
    elif move.to.finished:
        values["finished_at"] = move.now
    stmts.append(update(t.jobs).where(_in_status(batch_id, move.kind, move.frm, span)).values(**values))
    return stmts


def set_based(
    batch_id: str, tenant: str, ops: list[BulkMove | Dispatch], waiting_after: dict[JobKind, int], span: Span = None
) -> list[Any]:
    """The statements of an operation's set-based moves, in order; with a `span`, of the
    jobs in that range of positions only (for moves that go a chunk at a time, see
    `by_position`).

    A retry moves failed (and cancelled) jobs back to waiting, then dispatches the waiting
    ones. When that dispatch takes every waiting job (`waiting_after` is 0: no concurrency
    limit held any back), both are one pass over the rows: the revived jobs go straight to
    queued, which halves what retrying 100,000 jobs rewrites."""
    stmts: list[Any] = []
    joined: dict[JobKind, list[JobStatus]] = {}  # statuses revived, to go with their kind's dispatch
    for i, op in enumerate(ops):
        if isinstance(op, BulkMove) and waiting_after.get(op.kind) == 0 and _revival_then_dispatch(ops[i:], op.kind):
            joined.setdefault(op.kind, []).extend(op.frm)
        elif isinstance(op, Dispatch) and op.kind in joined:
            stmts += revive_and_dispatch(batch_id, tenant, op, tuple(joined.pop(op.kind)), span)
        elif isinstance(op, BulkMove):
            stmts += bulk_move(batch_id, op, span)
        else:
            stmts += dispatch(batch_id, tenant, op, span)
    return stmts


def by_position(ops: list[BulkMove | Dispatch], waiting_after: dict[JobKind, int]) -> bool:
    """Whether the moves may run a range of positions at a time: each job's outcome depends
    on that job alone. True unless a dispatch takes only some of the waiting jobs (a
    concurrency limit: which ones depends on all of them)."""
    dispatched = [op.kind for op in ops if isinstance(op, Dispatch)]
    return all(waiting_after.get(kind) == 0 and dispatched.count(kind) == 1 for kind in dispatched)


def _revival_then_dispatch(ops: list[BulkMove | Dispatch], kind: JobKind) -> bool:
    """The ops of `kind` are revivals to waiting (of jobs neither running nor queued), then
    one dispatch, the last op of that kind."""
    mine = [op for op in ops if op.kind == kind]
    revivals, last = mine[:-1], mine[-1]
    return isinstance(last, Dispatch) and all(
        isinstance(op, BulkMove) and op.revive and op.to == JobStatus.WAITING
        and not {JobStatus.RUNNING, JobStatus.QUEUED} & set(op.frm)
        for op in revivals
    )  # fmt: skip


def revive_and_dispatch(
    batch_id: str, tenant: str, op: Dispatch, revived: tuple[JobStatus, ...], span: Span = None
) -> list[Any]:
    """Every waiting job and every job in `revived` get their next attempt, due now; the revived
    ones as after a retry by hand (a fresh attempt budget, no error, not finished)."""
    every = (*revived, JobStatus.WAITING)
    outbox = insert(t.messages).from_select(
        ["tenant", "queue", "batch_id", "position", "attempt", "available_at", "deliveries"],
        select(literal(tenant), j.queue, j.batch_id, j.position, j.attempts + 1, literal(op.now), literal(0))
        .where(_in_status(batch_id, op.kind, every, span)),
    )
    fresh = j.status.in_([s.value for s in revived])
    values = {
        "status": JobStatus.QUEUED.value, "attempts": j.attempts + 1, "queued_at": op.now, "available_at": op.now,
        "lease": None, "lease_expires_at": None,
        "attempt_base": case((fresh, j.attempts), else_=j.attempt_base),
        "error": case((fresh, None), else_=j.error),
        "finished_at": case((fresh, None), else_=j.finished_at),
    }  # fmt: skip
    return [outbox, update(t.jobs).where(_in_status(batch_id, op.kind, every, span)).values(**values)]


def dispatch(batch_id: str, tenant: str, op: Dispatch, span: Span = None) -> list[Any]:
    """The statements of a Dispatch: outbox rows for the next attempts, then the jobs queued.

    Both pick the same jobs (the lowest waiting positions) inside one transaction. With a
    span, every waiting job in it (such a dispatch takes them all: `by_position`).
    """
    picked = select(j.position).where(_in_status(batch_id, op.kind, (JobStatus.WAITING,), span))
    if span is None:
        picked = picked.order_by(j.position).limit(op.limit)
    outbox = insert(t.messages).from_select(
        ["tenant", "queue", "batch_id", "position", "attempt", "available_at", "deliveries"],
        select(literal(tenant), j.queue, j.batch_id, j.position, j.attempts + 1, literal(op.now), literal(0))
        .where(j.batch_id == batch_id, j.position.in_(picked)),
    )
    values = {"status": JobStatus.QUEUED.value, "attempts": j.attempts + 1, "queued_at": op.now, "available_at": op.now}
    queue = update(t.jobs).where(j.batch_id == batch_id, j.position.in_(picked)).values(**values)
    return [outbox, queue]


# ---- reads of the API and the background loops ------------------------------------------------


def list_batches(  # noqa: ANN201
    tenant: str | None, status: str | None, queue: str | None, kind: str | None, limit: int, anchor: Any
):
    stmt = select(t.batches)
    if tenant is not None:
        stmt = stmt.where(b.tenant == tenant)
    if status:
        stmt = stmt.where(b.status == status)
    if queue:
        stmt = stmt.where(b.queue == queue)
    if kind:
        stmt = stmt.where(b.type == kind)
    if anchor is not None:
        stmt = stmt.where(or_(b.created_at < anchor.created_at, and_(b.created_at == anchor.created_at, b.id < anchor.id)))
    return stmt.order_by(b.created_at.desc(), b.id.desc()).limit(limit)


def list_jobs(batch_id: str, status: str | None, kind: str | None, limit: int, offset: int):  # noqa: ANN201
    stmt = select(t.jobs).where(j.batch_id == batch_id)
    if status:
        stmt = stmt.where(j.status == status)
    if kind:
        stmt = stmt.where(j.kind == kind)
    return stmt.order_by(j.position).limit(limit).offset(offset)


def expired_leases(now: float, limit: int):  # noqa: ANN201
    return (
        select(j.batch_id, j.position)
        .where(j.status == JobStatus.RUNNING.value, j.lease_expires_at < now)
        .order_by(j.lease_expires_at)
        .limit(limit)
    )


def stale_queued(before: float, limit: int):  # noqa: ANN201
    """Queued jobs whose message was due before `before` and is no longer in the outbox."""
    m = t.messages.c
    in_outbox = select(m.id).where(m.batch_id == j.batch_id, m.position == j.position).exists()
    return (
        select(b.tenant, j.queue, j.batch_id, j.position, j.attempts, j.available_at)
        .join(t.batches, b.id == j.batch_id)
        .where(j.status == JobStatus.QUEUED.value, j.available_at < before, ~in_outbox)
        .order_by(j.available_at)
        .limit(limit)
    )


def queue_counts(tenant: str | None):  # noqa: ANN201
    """Queued / running jobs per queue (a count over the partial indexes' rows)."""
    stmt = select(j.queue, j.status, func.count()).where(j.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
    if tenant is not None:
        stmt = stmt.join(t.batches, b.id == j.batch_id).where(b.tenant == tenant)
    return stmt.group_by(j.queue, j.status)


COUNTERS = COUNTER_FIELDS

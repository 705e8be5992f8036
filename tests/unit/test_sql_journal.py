"""The SQL store's journal of whole-batch moves going a range of positions at a time."""
from __future__ import annotations

from app.domain.states import AttemptStatus, JobKind, JobStatus
from app.store.base import BulkMove, Dispatch
from app.store.sql_journal import Journal
from app.store.sql_statements import by_position

JOB, COMP = JobKind.JOB, JobKind.COMPENSATION
S = JobStatus


def test_the_journal_survives_its_text_form():
    ops = [
        BulkMove(JOB, (S.WAITING, S.QUEUED, S.RUNNING), S.CANCELLED, 1764290000.125, False, AttemptStatus.CANCELLED),
        BulkMove(COMP, (S.FAILED,), S.WAITING, 1764290000.5, revive=True),
        Dispatch(JOB, 3, 1764290001.0),
    ]
    journal = Journal(ops, {JOB: 0, COMP: 2}, next=8, end=20)
    assert Journal.loads(journal.dumps()) == journal


def test_spans_cover_the_positions_once_and_the_budget_bounds_each():
    journal = Journal([], {}, next=0, end=11)
    spans = []
    while not journal.done:
        spans.append(journal.advance(4))
    assert spans == [(0, 4), (4, 8), (8, 11)]
    assert Journal([], {}, next=4, end=11).span(0) == (4, 11)  # no budget: the rest at once


def test_moves_go_by_position_unless_a_dispatch_leaves_jobs_waiting():
    cancel = [BulkMove(JOB, (S.WAITING, S.QUEUED), S.CANCELLED, 1.0)]
    revive = BulkMove(JOB, (S.FAILED, S.CANCELLED), S.WAITING, 1.0, revive=True)
    assert by_position(cancel, {JOB: 0})
    assert by_position([revive, Dispatch(JOB, 10, 1.0)], {JOB: 0})  # the dispatch takes every waiting job
    assert not by_position([revive, Dispatch(JOB, 10, 1.0)], {JOB: 5})  # a concurrency limit keeps 5 back
    assert not by_position([Dispatch(JOB, 2, 1.0), revive, Dispatch(JOB, 10, 1.0)], {JOB: 0})
    assert by_position([revive, Dispatch(COMP, 1, 1.0)], {JOB: 3, COMP: 0})  # only dispatched kinds matter


def test_the_move_budget_by_store():
    from app.config import Settings

    assert Settings(database_url="sqlite+aiosqlite:///./x.db").moves_per_step() == 5000  # one writer
    assert Settings(database_url="redis://127.0.0.1:6379/0").moves_per_step() == 5000  # one script at a time
    assert Settings(database_url="postgresql+asyncpg://h/db").moves_per_step() == 0  # locks its own batch only
    assert Settings(database_url="postgresql+asyncpg://h/db", move_budget=7).moves_per_step() == 7

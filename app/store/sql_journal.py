"""The SQL store's journal of whole-batch moves that go a chunk of positions at a time.

A cancel, retry or fail-fast of 100,000 jobs is a few set-based statements, but one
transaction running them holds the batch's row (PostgreSQL) or the whole database (SQLite
has one writer: every other batch waits). So the operation's own transaction moves the
jobs at positions [0, budget) and writes what is left, as JSON, in the batch's `pend`
column; each further transaction moves the next range and shortens the journal, until it
is gone. Every operation that opens a batch with a journal finishes it first (the process
that wrote it may have died), and a FAST commit refuses to land on one, so nothing commits
on top of half-moved jobs. The Redis store does the same in its `pend` field
(redis_scripts).

The moves may go by ranges because each job's outcome depends on that job alone
(sql_statements.by_position); a dispatch under a concurrency limit does not, and runs whole.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app import jsonx
from app.domain.states import AttemptStatus, JobKind, JobStatus
from app.store.base import BulkMove, Dispatch


@dataclass
class Journal:
    ops: list[BulkMove | Dispatch]
    waiting_after: dict[JobKind, int]
    next: int  # the first position not moved yet
    end: int  # one past the batch's last position when the operation committed

    def span(self, budget: int) -> tuple[int, int]:
        """The positions the next transaction moves (all that are left when budget is 0)."""
        return self.next, self.end if budget <= 0 else min(self.next + budget, self.end)

    def advance(self, budget: int) -> tuple[int, int]:
        """The positions this transaction moves; the journal then starts after them."""
        span = self.span(budget)
        self.next = span[1]
        return span

    @property
    def done(self) -> bool:
        return self.next >= self.end

    def dumps(self) -> str:
        return jsonx.dumps({
            "ops": [_op(op) for op in self.ops],
            "waiting_after": {kind.value: n for kind, n in self.waiting_after.items()},
            "next": self.next,
            "end": self.end,
        })  # fmt: skip

    @staticmethod
    def loads(text: str) -> Journal:
        raw = json.loads(text)
        return Journal(
            ops=[_from(op) for op in raw["ops"]],
            waiting_after={JobKind(kind): n for kind, n in raw["waiting_after"].items()},
            next=raw["next"],
            end=raw["end"],
        )


def _op(op: BulkMove | Dispatch) -> dict[str, Any]:
    if isinstance(op, Dispatch):
        return {"dispatch": op.kind.value, "limit": op.limit, "now": op.now}
    return {
        "move": op.kind.value, "frm": [s.value for s in op.frm], "to": op.to.value, "now": op.now,
        "revive": op.revive, "ended": op.ended.value if op.ended else None,
    }  # fmt: skip


def _from(raw: dict[str, Any]) -> BulkMove | Dispatch:
    if "dispatch" in raw:
        return Dispatch(JobKind(raw["dispatch"]), raw["limit"], raw["now"])
    return BulkMove(
        JobKind(raw["move"]), tuple(JobStatus(s) for s in raw["frm"]), JobStatus(raw["to"]), raw["now"],
        raw["revive"], AttemptStatus(raw["ended"]) if raw["ended"] else None,
    )  # fmt: skip

"""How the Redis store writes records: jobs split into fixed JSON and a state string.

Lua scripts move jobs in bulk (cancel, retry, dispatch) without ever decoding a job's
JSON: Lua's JSON would round numbers (2**60, 0.1000000000000000055…) and users get back
exactly what they sent. The fields a script changes live in a `JobState` string instead:
fields joined by \\x1f, empty for null, floats as Python's repr (exact both ways). Lua
only splits, copies and joins them (and adds one to the attempt number).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from app.domain.models import Attempt, Batch, Callbacks, CompensationSpec, Failure, Job, Webhook
from app.domain.states import COUNT_FIELDS, AttemptStatus, BatchStatus, BatchType, Counts, FailurePolicy, JobKind, JobStatus
from app.store.redis_keys import SEP

# The state string's fields, in order (redis_scripts.STATE_FIELDS says the same in Lua).
STATE = ["queue", "status", "attempts", "attempt_base", "available_at", "lease", "lease_expires_at", "started_at",
         "worker", "queued_at", "finished_at"]  # fmt: skip
FIXED = ["kind", "name", "args", "compensation", "max_attempts", "timeout_s", "original_position", "compensation_info", "created_at"]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _num(x: float | int | None) -> str:
    return "" if x is None else repr(x)


def _float(s: str) -> float | None:
    return float(s) if s else None


def encode_state(job: Job) -> str:
    assert job.status is not None
    return SEP.join(
        [
            job.queue, job.status.value, str(job.attempts), str(job.attempt_base), _num(job.available_at), job.lease or "",
            _num(job.lease_expires_at), _num(job.started_at), job.worker or "", _num(job.queued_at), _num(job.finished_at),
        ]
    )  # fmt: skip


def status_of(state: str) -> tuple[str, int]:
    """(status, attempt) of a state string: what a commit's precondition compares."""
    fields = state.split(SEP)
    return fields[1], int(fields[2])


def encode_fixed(job: Job) -> str:
    return dumps(
        {
            "kind": job.kind.value,
            "name": job.name,
            "args": job.args,
            "compensation": asdict(job.compensation) if job.compensation else None,
            "max_attempts": job.max_attempts,
            "timeout_s": job.timeout_s,
            "original_position": job.original_position,
            "compensation_info": job.compensation_info,
            "created_at": job.created_at,
        }
    )


def decode_job(batch_id: str, position: int, fixed: str, state: str, error: str | None, result: str | None, ctx: str | None) -> Job:
    f = json.loads(fixed)
    s = state.split(SEP)
    return Job(
        batch_id=batch_id,
        position=position,
        name=f["name"],
        queue=s[0],
        kind=JobKind(f["kind"]),
        args=f["args"],
        compensation=CompensationSpec.of(f["compensation"]),
        max_attempts=f["max_attempts"],
        timeout_s=f["timeout_s"],
        status=JobStatus(s[1]),
        attempts=int(s[2]),
        attempt_base=int(s[3]),
        available_at=_float(s[4]),
        lease=s[5] or None,
        lease_expires_at=_float(s[6]),
        started_at=_float(s[7]),
        worker=s[8] or None,
        error=error,
        result=json.loads(result) if result is not None else None,
        context_in=json.loads(ctx) if ctx is not None else None,
        original_position=f["original_position"],
        compensation_info=f["compensation_info"],
        created_at=f["created_at"],
        queued_at=_float(s[9]),
        finished_at=_float(s[10]),
    )


def outbox_member(position: int, attempt: int, queue: str) -> str:
    return f"{position}{SEP}{attempt}{SEP}{queue}"


def parse_outbox_member(member: str) -> tuple[int, int, str]:
    position, attempt, queue = member.split(SEP, 2)
    return int(position), int(attempt), queue


def batch_fields(batch: Batch) -> dict[str, str]:
    """The batch hash's fields other than the counts (and the version, lock and sequence)."""
    d = {
        "id": batch.id,
        "tenant": batch.tenant,
        "type": batch.type.value,
        "queue": batch.queue,
        "status": batch.status.value,
        "context": batch.context,
        "failure_policy": batch.failure_policy.value,
        "max_concurrency": batch.max_concurrency,
        "callbacks": batch.callbacks.as_dict(),
        "error": asdict(batch.error) if batch.error else None,
        "next_position": batch.next_position,
        "traceparent": batch.traceparent,
        "adds": batch.adds,
        "created_at": batch.created_at,
        "finished_at": batch.finished_at,
    }
    # updated_at apart: a FAST commit sets it without rewriting the context.
    return {"d": dumps(d), "st": batch.status.value, "er": "1" if batch.error else "", "tn": batch.tenant,
            "ut": repr(batch.updated_at)}  # fmt: skip


def counter_fields(batch: Batch) -> dict[str, str]:
    values = {f"jobs_{k}": v for k, v in batch.jobs.as_dict().items()}
    values.update({f"comps_{k}": v for k, v in batch.comps.as_dict().items()})
    return {k: str(v) for k, v in values.items()}


def decode_batch(raw: dict[str, str]) -> Batch | None:
    if not raw or "d" not in raw:
        return None
    d = json.loads(raw["d"])
    return Batch(
        id=d["id"],
        tenant=d["tenant"],
        type=BatchType(d["type"]),
        queue=d["queue"],
        status=BatchStatus(d["status"]),
        context=d["context"],
        failure_policy=FailurePolicy(d["failure_policy"]),
        max_concurrency=d["max_concurrency"],
        callbacks=Callbacks.of(d["callbacks"]),
        error=Failure(**d["error"]) if d["error"] else None,
        jobs=Counts(**{k: int(raw.get(f"jobs_{k}", 0)) for k in COUNT_FIELDS}),
        comps=Counts(**{k: int(raw.get(f"comps_{k}", 0)) for k in COUNT_FIELDS}),
        next_position=d["next_position"],
        traceparent=d["traceparent"],
        adds=d.get("adds") or {},
        version=int(raw.get("v", 0)),
        created_at=d["created_at"],
        updated_at=float(raw.get("ut") or d["created_at"]),
        finished_at=d["finished_at"],
    )


def encode_attempt(a: Attempt) -> str:
    return dumps({**asdict(a), "status": a.status.value})


def decode_attempt(raw: str) -> Attempt:
    data = json.loads(raw)
    data["status"] = AttemptStatus(data["status"])
    return Attempt(**data)


def encode_webhook(w: Webhook) -> str:
    return dumps(asdict(w))


def decode_webhook(raw: str) -> Webhook:
    return Webhook(**json.loads(raw))


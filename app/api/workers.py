"""Worker-facing routes: claim, start, heartbeat, complete, fail, report many.

The busiest routes (claim, starts, reports) answer with a pre-built JSON response: their
models document the contract without validating every message a second time.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from app.api import replies
from app.api.body import StrictJsonRoute
from app.api.deps import Svc, Worker
from app.api.schemas import ClaimIn, CompleteIn, FailIn, ReportIn, ReportsIn, StartIn, StartManyIn
from app.broker.redis_streams import GROUP
from app.domain.errors import Conflict, DomainError, Forbidden
from app.services.orchestrator import Report

router = APIRouter(prefix="/v1", tags=["workers"], route_class=StrictJsonRoute)
QueuePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]+$", max_length=100)]


def _queue_allowed(caller: Worker, queue: str) -> None:
    if not caller.may_work(queue):
        raise Forbidden(f"this key may not work queue {queue!r}")


@router.post("/queues/{queue}/claim", summary="Long-poll for up to `max` messages of a queue",
             response_model=replies.Claimed, responses=replies.WRITE_ERRORS)  # fmt: skip
async def claim(queue: QueuePath, svc: Svc, caller: Worker, body: ClaimIn | None = None) -> JSONResponse:
    _queue_allowed(caller, queue)
    body = body or ClaimIn()
    messages, ack = await svc.claims.claim(caller.tenant, queue, body.max, body.wait_s, body.worker)
    return JSONResponse({"messages": messages}, background=BackgroundTask(ack))  # acked once the answer is out


@router.get("/queues/{queue}/streams", summary="The broker streams a direct reader of a queue reads",
            response_model=replies.Streams, responses=replies.READ_ERRORS | replies.errors(409))  # fmt: skip
async def queue_streams(queue: QueuePath, svc: Svc, caller: Worker) -> dict[str, Any]:
    """For workers that read Redis Streams themselves: the stream keys and the consumer group
    (the streams of the caller's tenant)."""
    _queue_allowed(caller, queue)
    streams = svc.broker.streams(caller.tenant, queue)
    if streams is None:
        raise Conflict("this broker has no streams: claim over HTTP (POST /v1/queues/{queue}/claim)")
    return {"group": GROUP, "streams": streams}


@router.post("/jobs/{job_id}/start", summary="Take the lease of a message read straight from the broker",
             response_model=replies.Message, responses=replies.WRITE_ERRORS)  # fmt: skip
async def start(job_id: str, body: StartIn, svc: Svc, caller: Worker) -> dict[str, Any]:
    return await svc.orchestrator.start(caller.sees, job_id, body.attempt, body.worker, caller.queues, body.delivery)


def _refusal(job_id: str, attempt: int, why: DomainError) -> dict[str, Any]:
    """One refused item of a many-at-once call, with the status a single call would get."""
    return {"job_id": job_id, "attempt": attempt, "status_code": why.status, "error": {"code": why.code, "message": why.message}}


@router.post("/starts", summary="Take the leases of several messages read straight from the broker",
             response_model=replies.Started, responses=replies.WRITE_ERRORS)  # fmt: skip
async def start_many(body: StartManyIn, svc: Svc, caller: Worker) -> JSONResponse:
    """Refused ones (stale, duplicate, cancelled) are listed, not run."""
    started, refused = await svc.orchestrator.start_many(
        caller.sees, [(a.job_id, a.attempt, a.delivery) for a in body.attempts], body.worker, caller.queues
    )
    return JSONResponse({"messages": started, "refused": [_refusal(j, a, why) for j, a, why in refused]})


@router.post("/jobs/{job_id}/heartbeat", summary="Extend the lease of a running attempt",
             response_model=replies.Heartbeat, responses=replies.WRITE_ERRORS)  # fmt: skip
async def heartbeat(job_id: str, body: ReportIn, svc: Svc, caller: Worker) -> dict[str, Any]:
    return await svc.orchestrator.heartbeat(caller.sees, job_id, body.attempt, body.lease, caller.queues)


@router.post("/jobs/{job_id}/complete", summary="Report an attempt done, with result and context update",
             response_model=replies.Reported, responses=replies.WRITE_ERRORS)  # fmt: skip
async def complete(job_id: str, body: CompleteIn, svc: Svc, caller: Worker) -> dict[str, Any]:
    report = Report(job_id, body.attempt, body.lease, "completed", body.result, body.context, traceparent=body.traceparent)
    return await svc.orchestrator.report(caller.sees, report, caller.queues)


@router.post("/jobs/{job_id}/fail", summary="Report an attempt failed", response_model=replies.Reported,
             responses=replies.WRITE_ERRORS)  # fmt: skip
async def fail(job_id: str, body: FailIn, svc: Svc, caller: Worker) -> dict[str, Any]:
    report = Report(job_id, body.attempt, body.lease, "failed", error=body.error, retryable=body.retryable,
                    traceparent=body.traceparent)  # fmt: skip
    return await svc.orchestrator.report(caller.sees, report, caller.queues)


@router.post("/reports", summary="Report many attempts at once; each gets its own status",
             response_model=replies.ReportOutcomes, responses=replies.WRITE_ERRORS)  # fmt: skip
async def reports(body: ReportsIn, svc: Svc, caller: Worker) -> JSONResponse:
    """Same rules as complete / fail; a refused report (404/409/403) does not stop the others.
    Lets a busy worker send what finished together in one call."""
    items = [Report(r.job_id, r.attempt, r.lease, r.outcome, r.result, r.context, r.error, r.retryable, r.traceparent)
             for r in body.reports]  # fmt: skip
    outcomes = await svc.orchestrator.report_many(caller.sees, items, caller.queues)
    results = []
    for item, outcome in zip(body.reports, outcomes):
        if isinstance(outcome, DomainError):
            results.append(_refusal(item.job_id, item.attempt, outcome))
        else:
            results.append({**outcome, "attempt": item.attempt, "status_code": 200})
    return JSONResponse({"results": results})

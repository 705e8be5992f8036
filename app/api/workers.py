"""Worker-facing routes: claim, start, heartbeat, complete, fail, report many."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from app.api.deps import Svc, Tenant
from app.api.schemas import ClaimIn, CompleteIn, FailIn, ReportIn, ReportsIn, StartIn, StartManyIn
from app.broker.redis_streams import GROUP
from app.domain.errors import Conflict, DomainError
from app.services.orchestrator import Report

router = APIRouter(prefix="/v1", tags=["workers"])
QueuePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]+$", max_length=100)]


@router.post("/queues/{queue}/claim", summary="Long-poll for up to `max` messages of a queue")
async def claim(queue: QueuePath, svc: Svc, tenant: Tenant, body: ClaimIn | None = None) -> dict[str, Any]:
    body = body or ClaimIn()
    wait = min(body.wait_s, svc.settings.max_claim_wait_s)
    messages = await svc.claims.claim(tenant or "default", queue, body.max, wait, body.worker)
    return {"messages": messages}


@router.get("/queues/{queue}/streams", summary="The broker streams a direct reader of a queue reads")
async def queue_streams(queue: QueuePath, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    """For workers that read Redis Streams themselves: the stream keys and the consumer group."""
    streams = svc.broker.streams(tenant or "default", queue)
    if streams is None:
        raise Conflict("this broker has no streams: claim over HTTP (POST /v1/queues/{queue}/claim)")
    return {"group": GROUP, "streams": streams}


@router.post("/jobs/{job_id}/start", summary="Take the lease of a message read straight from the broker")
async def start(job_id: str, body: StartIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    return await svc.orchestrator.start(tenant, job_id, body.attempt, body.worker)


def _refusal(job_id: str, attempt: int, why: DomainError) -> dict[str, Any]:
    """One refused item of a many-at-once call, with the status a single call would get."""
    return {"job_id": job_id, "attempt": attempt, "status_code": why.status, "error": {"code": why.code, "message": why.message}}


@router.post("/starts", summary="Take the leases of several messages read straight from the broker")
async def start_many(body: StartManyIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    """Refused ones (stale, duplicate, cancelled) are listed, not run."""
    started, refused = await svc.orchestrator.start_many(tenant, [(a.job_id, a.attempt) for a in body.attempts], body.worker)
    return {"messages": started, "refused": [_refusal(job_id, attempt, why) for job_id, attempt, why in refused]}


@router.post("/jobs/{job_id}/heartbeat", summary="Extend the lease of a running attempt")
async def heartbeat(job_id: str, body: ReportIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    return await svc.orchestrator.heartbeat(tenant, job_id, body.attempt, body.lease)


@router.post("/jobs/{job_id}/complete", summary="Report an attempt done, with result and context update")
async def complete(job_id: str, body: CompleteIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    return await svc.orchestrator.report(tenant, Report(job_id, body.attempt, body.lease, "completed", body.result, body.context))


@router.post("/jobs/{job_id}/fail", summary="Report an attempt failed")
async def fail(job_id: str, body: FailIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    report = Report(job_id, body.attempt, body.lease, "failed", error=body.error, retryable=body.retryable)
    return await svc.orchestrator.report(tenant, report)


@router.post("/reports", summary="Report many attempts at once; each gets its own status")
async def reports(body: ReportsIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    """Same rules as complete / fail; a refused report (404/409) does not stop the others.
    Lets a busy worker send what finished together in one call."""
    items = [Report(r.job_id, r.attempt, r.lease, r.outcome, r.result, r.context, r.error, r.retryable) for r in body.reports]
    outcomes = await svc.orchestrator.report_many(tenant, items)
    results = []
    for item, outcome in zip(body.reports, outcomes):
        if isinstance(outcome, DomainError):
            results.append(_refusal(item.job_id, item.attempt, outcome))
        else:
            results.append({**outcome, "attempt": item.attempt, "status_code": 200})
    return {"results": results}

"""Client-facing routes: define batches and chains, read them, steer them."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.encoders import jsonable_encoder

from app.api.deps import get_services
from app.api.schemas import AddJobsIn, BatchIn, ChainIn, RetryJobsIn
from app.api.views import attempt_view, batch_view, job_view, webhook_view
from app.container import Services
from app.domain import rules
from app.domain.definitions import job_specs
from app.domain.errors import Invalid, NotFound
from app.domain.models import BatchStatus, JobKind, JobStatus

router = APIRouter(prefix="/v1", tags=["batches"])
Svc = Annotated[Services, Depends(get_services)]


async def _create(body: BatchIn, svc: Services) -> dict[str, Any]:
    problem = body.shape_error()
    if problem:
        raise Invalid(f"{problem[0]}: {problem[1]}", field=problem[0])
    raw = jsonable_encoder(body, exclude_none=True)
    callbacks = {k: raw[k] for k in ("on_complete", "on_failure", "on_event") if k in raw}
    defaults = {k: raw[k] for k in ("max_attempts", "timeout_s") if k in raw}
    batch = await svc.orchestrator.create_batch(
        type_=body.type,
        specs=job_specs(raw.get("jobs"), body.job, body.items),
        context=body.context,
        queue=body.queue,
        failure_policy=body.failure_policy,
        max_concurrency=body.max_concurrency,
        callbacks=callbacks,
        defaults=defaults,
    )
    return batch_view(batch)


@router.post("/batches", status_code=201, summary="Create a parallel batch or a chain")
async def create_batch(body: BatchIn, svc: Svc) -> dict[str, Any]:
    return await _create(body, svc)


@router.post("/chains", status_code=201, summary="Create a chain (same as a batch of type chain)")
async def create_chain(body: ChainIn, svc: Svc) -> dict[str, Any]:
    return await _create(body, svc)


@router.get("/batches", summary="List batches, newest first")
async def list_batches(
    svc: Svc,
    status: Annotated[str | None, Query(description="filter by status")] = None,
    queue: Annotated[str | None, Query(description="filter by queue")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(description="id of the last batch of the previous page")] = None,
) -> dict[str, Any]:
    if status is not None and status not in BatchStatus.ALL:
        raise Invalid(f"status must be one of {', '.join(BatchStatus.ALL)}", field="status")
    batches = await svc.store.list_batches(status, queue, limit, before)
    return {
        "batches": [batch_view(b) for b in batches],
        "next": batches[-1].id if len(batches) == limit else None,
    }


async def _batch(svc: Services, batch_id: str):  # noqa: ANN202
    batch = await svc.store.get_batch(batch_id)
    if batch is None:
        raise NotFound(f"batch {batch_id} not found")
    return batch


@router.get("/batches/{batch_id}", summary="A batch with its progress")
async def get_batch(batch_id: str, svc: Svc) -> dict[str, Any]:
    return batch_view(await _batch(svc, batch_id))


@router.get("/batches/{batch_id}/progress", summary="Progress from maintained counters (O(1))")
async def get_progress(batch_id: str, svc: Svc) -> dict[str, Any]:
    return rules.progress(await _batch(svc, batch_id))


@router.get("/batches/{batch_id}/jobs", summary="Jobs of a batch in position order")
async def list_jobs(
    batch_id: str,
    svc: Svc,
    status: Annotated[str | None, Query()] = None,
    kind: Annotated[str | None, Query(description="job, compensation or callback")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    if status is not None and status not in JobStatus.ALL:
        raise Invalid(f"status must be one of {', '.join(JobStatus.ALL)}", field="status")
    if kind is not None and kind not in JobKind.ALL:
        raise Invalid(f"kind must be one of {', '.join(JobKind.ALL)}", field="kind")
    await _batch(svc, batch_id)
    jobs = await svc.store.list_jobs(batch_id, status, kind, limit, offset)
    return {"jobs": [job_view(j) for j in jobs], "limit": limit, "offset": offset}


@router.get("/batches/{batch_id}/jobs/{job_id}", summary="One job, with its result and attempts")
async def get_job(batch_id: str, job_id: str, svc: Svc) -> dict[str, Any]:
    job = await svc.store.get_job(job_id)
    if job is None or job.batch_id != batch_id:
        raise NotFound(f"job {job_id} not found in batch {batch_id}")
    view = job_view(job)
    view["attempt_history"] = [attempt_view(a) for a in await svc.store.list_attempts(job_id)]
    return view


@router.get("/batches/{batch_id}/results", summary="Every completed job's result, keyed by job id")
async def get_results(batch_id: str, svc: Svc) -> dict[str, Any]:
    batch = await _batch(svc, batch_id)
    results: dict[str, Any] = {}
    offset, page = 0, 1000
    while True:
        jobs = await svc.store.list_jobs(batch_id, JobStatus.COMPLETED, JobKind.JOB, page, offset)
        results.update({j.id: j.result for j in jobs})
        if len(jobs) < page:
            break
        offset += page
    return {"batch_id": batch_id, "status": batch.status, "context": batch.context, "results": results}


@router.post("/batches/{batch_id}/jobs", status_code=201, summary="Add jobs to a running batch")
async def add_jobs(batch_id: str, body: AddJobsIn, svc: Svc) -> dict[str, Any]:
    raw = jsonable_encoder(body, exclude_none=True)
    batch, jobs = await svc.orchestrator.add_jobs(batch_id, job_specs(raw["jobs"]))
    return {"batch": batch_view(batch), "jobs": [job_view(j) for j in jobs]}


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch: nothing more of it is dispatched")
async def cancel_batch(batch_id: str, svc: Svc) -> dict[str, Any]:
    return batch_view(await svc.orchestrator.cancel(batch_id))


@router.post("/batches/{batch_id}/retry", summary="Run every failed job of the batch again")
async def retry_batch(batch_id: str, svc: Svc) -> dict[str, Any]:
    batch, ids = await svc.orchestrator.retry(batch_id, None)
    return {"batch": batch_view(batch), "retried": ids}


@router.post("/batches/{batch_id}/jobs/retry", summary="Run chosen failed jobs again")
async def retry_jobs(batch_id: str, body: RetryJobsIn, svc: Svc) -> dict[str, Any]:
    batch, ids = await svc.orchestrator.retry(batch_id, body.job_ids)
    return {"batch": batch_view(batch), "retried": ids}


@router.get("/batches/{batch_id}/callbacks", summary="Webhooks of a batch and every delivery attempt")
async def list_callbacks(batch_id: str, svc: Svc) -> dict[str, Any]:
    await _batch(svc, batch_id)
    return {"webhooks": [webhook_view(w) for w in await svc.store.list_webhooks(batch_id)]}

"""Client-facing routes: define batches and chains, read them, steer them."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.deps import Svc, Tenant
from app.api.schemas import AddJobsIn, BatchIn, ChainIn, RetryJobsIn, callbacks_of
from app.api.views import attempt_history, batch_summary, batch_view, job_view, webhook_view
from app.domain import rules
from app.domain.definitions import job_specs
from app.domain.errors import Invalid
from app.domain.states import BatchStatus, BatchType, FailurePolicy, JobKind, JobStatus

router = APIRouter(prefix="/v1", tags=["batches"])


async def _create(body: BatchIn, svc: Svc, tenant: str | None) -> dict[str, Any]:
    problem = body.shape_error()
    if problem:
        raise Invalid(f"{problem[0]}: {problem[1]}", field=problem[0])
    batch = await svc.orchestrator.create_batch(
        tenant=tenant or "default",
        type_=BatchType(body.type),
        specs=job_specs(body.jobs, body.job, body.items),
        context=body.context,
        queue=body.queue,
        failure_policy=FailurePolicy(body.failure_policy) if body.failure_policy else None,
        max_concurrency=body.max_concurrency,
        callbacks=callbacks_of(body),
        defaults={k: v for k, v in (("max_attempts", body.max_attempts), ("timeout_s", body.timeout_s)) if v is not None},
    )
    return batch_view(batch)


@router.post("/batches", status_code=201, summary="Create a parallel batch or a chain")
async def create_batch(body: BatchIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    return await _create(body, svc, tenant)


@router.post("/chains", status_code=201, summary="Create a chain (same as a batch of type chain)")
async def create_chain(body: ChainIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    return await _create(body, svc, tenant)


@router.get("/batches", summary="List batches, newest first (summaries: no context)")
async def list_batches(
    svc: Svc,
    tenant: Tenant,
    status: Annotated[BatchStatus | None, Query(description="filter by status")] = None,
    queue: Annotated[str | None, Query(description="filter by queue", max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(description="id of the last batch of the previous page", max_length=64)] = None,
) -> dict[str, Any]:
    batches = await svc.store.list_batches(tenant, status.value if status else None, queue, limit, before)
    return {"batches": [batch_summary(b) for b in batches], "next": batches[-1].id if len(batches) == limit else None}


@router.get("/batches/{batch_id}", summary="A batch with its progress and context")
async def get_batch(batch_id: str, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    return batch_view(await svc.orchestrator.batch(tenant, batch_id))


@router.get("/batches/{batch_id}/progress", summary="Progress from maintained counts (O(1))")
async def get_progress(batch_id: str, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    return rules.progress(await svc.orchestrator.batch(tenant, batch_id))


@router.get("/batches/{batch_id}/jobs", summary="Jobs of a batch in position order")
async def list_jobs(
    batch_id: str,
    svc: Svc,
    tenant: Tenant,
    status: Annotated[JobStatus | None, Query()] = None,
    kind: Annotated[JobKind | None, Query(description="job, compensation or callback")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    await svc.orchestrator.batch(tenant, batch_id)
    jobs = await svc.store.list_jobs(batch_id, status.value if status else None, kind.value if kind else None, limit, offset)
    return {"jobs": [job_view(j) for j in jobs], "limit": limit, "offset": offset}


@router.get("/batches/{batch_id}/jobs/{job_id}", summary="One job, with its result and attempts")
async def get_job(batch_id: str, job_id: str, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    job = await svc.orchestrator.job(tenant, batch_id, job_id)
    view = job_view(job)
    view["attempt_history"] = attempt_history(job, await svc.store.list_attempts(batch_id, job.position))
    return view


@router.get("/batches/{batch_id}/results", summary="Every completed job's result, keyed by job id")
async def get_results(batch_id: str, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    batch = await svc.orchestrator.batch(tenant, batch_id)
    results: dict[str, Any] = {}
    offset, page = 0, 1000
    while True:
        jobs = await svc.store.list_jobs(batch_id, JobStatus.COMPLETED.value, JobKind.JOB.value, page, offset)
        results.update({j.id: j.result for j in jobs})
        if len(jobs) < page:
            break
        offset += page
    return {"batch_id": batch_id, "status": batch.status.value, "context": batch.context, "results": results}


@router.post("/batches/{batch_id}/jobs", status_code=201, summary="Add jobs to a running batch")
async def add_jobs(batch_id: str, body: AddJobsIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    batch, positions = await svc.orchestrator.add_jobs(tenant, batch_id, job_specs(body.jobs), len(body.jobs))
    return {"batch": batch_summary(batch), "added": len(positions), "job_ids": [f"{batch_id}.{p}" for p in positions]}


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch: nothing more of it runs")
async def cancel_batch(batch_id: str, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    return batch_summary(await svc.orchestrator.cancel(tenant, batch_id))


@router.post("/batches/{batch_id}/retry", summary="Run every failed job of the batch again")
async def retry_batch(batch_id: str, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    batch, n = await svc.orchestrator.retry(tenant, batch_id, None)
    return {"batch": batch_summary(batch), "retried": n}


@router.post("/batches/{batch_id}/jobs/retry", summary="Run chosen failed jobs again")
async def retry_jobs(batch_id: str, body: RetryJobsIn, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    batch, n = await svc.orchestrator.retry(tenant, batch_id, body.job_ids)
    return {"batch": batch_summary(batch), "retried": n}


@router.get("/batches/{batch_id}/callbacks", summary="Webhooks of a batch and every delivery attempt")
async def list_callbacks(batch_id: str, svc: Svc, tenant: Tenant) -> dict[str, Any]:
    await svc.orchestrator.batch(tenant, batch_id)
    return {"webhooks": [webhook_view(w) for w in await svc.store.list_webhooks(batch_id)]}

"""Client-facing routes: define batches and chains, read them, steer them."""
from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from app.api import replies
from app.api.body import StrictJsonRoute
from app.api.callback_fields import vet_urls
from app.api.deps import Producer, Reader, Svc
from app.api.schemas import AddJobsIn, BatchIn, ChainIn, RetryJobsIn, callbacks_of
from app.api.views import attempt_history, batch_summary, batch_view, job_view, webhook_view
from app.domain import rules
from app.domain.definitions import job_specs
from app.domain.errors import Invalid
from app.domain.states import BatchStatus, BatchType, FailurePolicy, JobKind, JobStatus
from app.services import idempotency
from app.services.engine import new_id
from app.telemetry.tracing import valid_traceparent

router = APIRouter(prefix="/v1", tags=["batches"], route_class=StrictJsonRoute)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a creation safely: the same key with the same body within BATCHQ_IDEMPOTENCY_TTL_S "
        "(24 h) returns the first answer (Idempotent-Replayed: true) and creates nothing more.",
    ),
]
REPLAYED = {"Idempotent-Replayed": "true"}


async def _create(body: BatchIn, request: Request, svc: Svc, caller: Producer, key: str | None) -> JSONResponse:
    problem = body.shape_error()
    if problem:
        raise Invalid(f"{problem[0]}: {problem[1]}", field=problem[0])
    await vet_urls(body.callback_urls(), svc.settings.allow_private_callbacks)
    count = len(body.jobs if body.jobs is not None else body.items or [])
    if count > svc.settings.max_batch_jobs:
        raise Invalid(f"jobs: a batch holds at most {svc.settings.max_batch_jobs} jobs", field="jobs")

    async def make(batch_id: str):  # noqa: ANN202
        return await svc.orchestrator.create_batch(
            tenant=caller.tenant,
            type_=BatchType(body.type),
            specs=job_specs(body.jobs, body.job, body.items),
            context=body.context,
            queue=body.queue,
            failure_policy=FailurePolicy(body.failure_policy) if body.failure_policy else None,
            max_concurrency=body.max_concurrency,
            callbacks=callbacks_of(body),
            defaults={k: v for k, v in (("max_attempts", body.max_attempts), ("timeout_s", body.timeout_s)) if v is not None},
            count=count,
            # This request's span when tracing, else the caller's trace context as it came.
            traceparent=svc.tracing.traceparent() or valid_traceparent(request.headers.get("traceparent")),
            batch_id=batch_id,
        )

    if key is None:
        return JSONResponse(batch_view(await make(new_id())), status_code=201)

    async def create(batch_id: str) -> tuple[int, str]:
        return 201, json.dumps(batch_view(await make(batch_id)))

    async def answer_from(batch_id: str) -> tuple[int, str] | None:
        batch = await svc.store.get_batch(batch_id)
        return (201, json.dumps(batch_view(batch))) if batch is not None else None

    digest = idempotency.request_hash(request.method, request.url.path, await request.json())
    status, text, replayed = await idempotency.once(
        svc.store.idempotency, caller.tenant, key, digest, svc.settings.idempotency_ttl_s, new_id, create, answer_from,
        svc.clock,
    )  # fmt: skip
    return JSONResponse(json.loads(text), status_code=status, headers=REPLAYED if replayed else None)


@router.post(
    "/batches", status_code=201, summary="Create a parallel batch or a chain", response_model=replies.Batch,
    responses=replies.WRITE_ERRORS,
)  # fmt: skip
async def create_batch(
    body: BatchIn, request: Request, svc: Svc, caller: Producer, key: IdempotencyKey = None
) -> JSONResponse:
    return await _create(body, request, svc, caller, key)


@router.post(
    "/chains", status_code=201, summary="Create a chain (a batch of type chain)", response_model=replies.Batch,
    responses=replies.WRITE_ERRORS,
)  # fmt: skip
async def create_chain(
    body: ChainIn, request: Request, svc: Svc, caller: Producer, key: IdempotencyKey = None
) -> JSONResponse:
    return await _create(body, request, svc, caller, key)


@router.get("/batches", summary="List batches, newest first (summaries: no context)", response_model=replies.BatchPage,
            responses=replies.READ_ERRORS)  # fmt: skip
async def list_batches(
    svc: Svc,
    caller: Reader,
    status: Annotated[BatchStatus | None, Query(description="filter by status")] = None,
    queue: Annotated[str | None, Query(description="filter by queue", max_length=100)] = None,
    type: Annotated[BatchType | None, Query(description="filter by type")] = None,  # noqa: A002 (the API's name)
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(description="`next` of the previous page", max_length=64)] = None,
) -> dict[str, Any]:
    batches = await svc.store.list_batches(
        caller.sees, status.value if status else None, queue, limit, before, type.value if type else None
    )
    return {"batches": [batch_summary(b) for b in batches], "next": batches[-1].id if len(batches) == limit else None}


@router.get("/batches/{batch_id}", summary="A batch with its progress and context", response_model=replies.Batch,
            responses=replies.READ_ERRORS)  # fmt: skip
async def get_batch(batch_id: str, svc: Svc, caller: Reader) -> dict[str, Any]:
    return batch_view(await svc.orchestrator.batch(caller.sees, batch_id))


@router.get("/batches/{batch_id}/progress", summary="Progress from maintained counts (O(1))", response_model=replies.Progress,
            responses=replies.READ_ERRORS)  # fmt: skip
async def get_progress(batch_id: str, svc: Svc, caller: Reader) -> dict[str, Any]:
    return rules.progress(await svc.orchestrator.batch(caller.sees, batch_id))


@router.get("/batches/{batch_id}/jobs", summary="Jobs of a batch in position order", response_model=replies.JobPage,
            responses=replies.READ_ERRORS)  # fmt: skip
async def list_jobs(
    batch_id: str,
    svc: Svc,
    caller: Reader,
    status: Annotated[JobStatus | None, Query()] = None,
    kind: Annotated[JobKind | None, Query(description="job, compensation or callback")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0,
) -> dict[str, Any]:
    await svc.orchestrator.batch(caller.sees, batch_id)
    jobs = await svc.store.list_jobs(batch_id, status.value if status else None, kind.value if kind else None, limit, offset)
    return {"jobs": [job_view(j) for j in jobs], "limit": limit, "offset": offset}


@router.get("/batches/{batch_id}/jobs/{job_id}", summary="One job, with its result and attempts",
            response_model=replies.JobDetail, responses=replies.READ_ERRORS)  # fmt: skip
async def get_job(batch_id: str, job_id: str, svc: Svc, caller: Reader) -> dict[str, Any]:
    job = await svc.orchestrator.job(caller.sees, batch_id, job_id)
    view = job_view(job)
    view["attempt_history"] = attempt_history(job, await svc.store.list_attempts(batch_id, job.position))
    return view


@router.get("/batches/{batch_id}/results", summary="Every completed job's result, keyed by job id",
            response_model=replies.Results, responses=replies.READ_ERRORS)  # fmt: skip
async def get_results(batch_id: str, svc: Svc, caller: Reader) -> dict[str, Any]:
    batch = await svc.orchestrator.batch(caller.sees, batch_id)
    results: dict[str, Any] = {}
    offset, page = 0, 1000
    while True:
        jobs = await svc.store.list_jobs(batch_id, JobStatus.COMPLETED.value, JobKind.JOB.value, page, offset)
        results.update({j.id: j.result for j in jobs})
        if len(jobs) < page:
            break
        offset += page
    return {"batch_id": batch_id, "status": batch.status.value, "context": batch.context, "results": results}


@router.post("/batches/{batch_id}/jobs", status_code=201, summary="Add jobs to a running batch",
             response_model=replies.JobsAdded, responses=replies.WRITE_ERRORS)  # fmt: skip
async def add_jobs(
    batch_id: str, body: AddJobsIn, request: Request, svc: Svc, caller: Producer, key: IdempotencyKey = None
) -> JSONResponse:
    digest = idempotency.request_hash(request.method, request.url.path, await request.json()) if key else None
    batch, positions, replayed = await svc.orchestrator.add_jobs(
        caller.sees, batch_id, job_specs(body.jobs), len(body.jobs), key, digest
    )
    reply = {"batch": batch_summary(batch), "added": len(positions), "job_ids": [f"{batch_id}.{p}" for p in positions]}
    return JSONResponse(reply, status_code=201, headers=REPLAYED if replayed else None)


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch: nothing more of it runs",
             response_model=replies.BatchSummary, responses=replies.WRITE_ERRORS)  # fmt: skip
async def cancel_batch(batch_id: str, svc: Svc, caller: Producer) -> dict[str, Any]:
    return batch_summary(await svc.orchestrator.cancel(caller.sees, batch_id))


@router.post("/batches/{batch_id}/retry", summary="Run every failed job of the batch again",
             response_model=replies.Retried, responses=replies.WRITE_ERRORS)  # fmt: skip
async def retry_batch(batch_id: str, svc: Svc, caller: Producer) -> dict[str, Any]:
    batch, n = await svc.orchestrator.retry(caller.sees, batch_id, None)
    return {"batch": batch_summary(batch), "retried": n}


@router.post("/batches/{batch_id}/jobs/retry", summary="Run chosen failed jobs again",
             response_model=replies.Retried, responses=replies.WRITE_ERRORS)  # fmt: skip
async def retry_jobs(batch_id: str, body: RetryJobsIn, svc: Svc, caller: Producer) -> dict[str, Any]:
    batch, n = await svc.orchestrator.retry(caller.sees, batch_id, body.job_ids)
    return {"batch": batch_summary(batch), "retried": n}


@router.get("/batches/{batch_id}/callbacks", summary="Webhooks of a batch and every delivery attempt",
            response_model=replies.Callbacks, responses=replies.READ_ERRORS)  # fmt: skip
async def list_callbacks(batch_id: str, svc: Svc, caller: Reader) -> dict[str, Any]:
    await svc.orchestrator.batch(caller.sees, batch_id)
    return {"webhooks": [webhook_view(w) for w in await svc.store.list_webhooks(batch_id)]}

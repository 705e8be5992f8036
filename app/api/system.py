"""Health, readiness, queues and metrics."""
from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from app.api.auth import require_token
from app.api.deps import Tenant, get_services
from app.container import Services

router = APIRouter(tags=["system"])
Svc = Annotated[Services, Depends(get_services)]


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The store and the broker answer")
async def readyz(svc: Svc) -> JSONResponse:
    store_ok, broker_ok = await svc.store.healthy(), await svc.broker.healthy()
    ok = store_ok and broker_ok
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "store": store_ok, "broker": broker_ok},
        status_code=200 if ok else 503,
    )


async def queue_overview(svc: Services, tenant: str | None) -> list[dict[str, Any]]:
    now = time.time()
    broker_stats = await svc.broker.queue_stats(tenant, now)
    counts = await svc.store.queue_counts(tenant)
    names = sorted(set(broker_stats) | set(counts) | set(svc.settings.queues) | {"default"})
    out = []
    for name in names:
        b = broker_stats.get(name, {})
        c = counts.get(name, {})
        qcfg = svc.settings.queue_config(name)
        out.append(
            {
                "name": name,
                "declared": qcfg is not None,
                "depth": b.get("depth", 0),
                "queued": c.get("queued", 0),
                "running": c.get("running", 0),
                "oldest_age_s": round(b.get("oldest_age_s", 0.0), 3),
            }
        )
    return out


@router.get("/v1/queues", dependencies=[Depends(require_token)], summary="Each queue with depth, in-flight count and oldest message age")
async def queues(svc: Svc, tenant: Tenant) -> dict[str, Any]:
    return {"queues": await queue_overview(svc, tenant)}


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def metrics(svc: Svc) -> str:
    lines = [
        "# HELP batchq_queue_depth Messages waiting in a queue.",
        "# TYPE batchq_queue_depth gauge",
    ]
    overview = await queue_overview(svc, None)
    for q in overview:
        lines.append(f'batchq_queue_depth{{queue="{q["name"]}"}} {q["depth"]}')
    lines += ["# HELP batchq_jobs_in_flight Jobs running on a worker.", "# TYPE batchq_jobs_in_flight gauge"]
    for q in overview:
        lines.append(f'batchq_jobs_in_flight{{queue="{q["name"]}"}} {q["running"]}')
    lines += ["# HELP batchq_queue_oldest_age_seconds Age of the oldest waiting message.", "# TYPE batchq_queue_oldest_age_seconds gauge"]
    for q in overview:
        lines.append(f'batchq_queue_oldest_age_seconds{{queue="{q["name"]}"}} {q["oldest_age_s"]}')
    lines += svc.orchestrator.metrics.render()
    return "\n".join(lines) + "\n"

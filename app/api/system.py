"""Health, readiness, queues and metrics."""
from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api import replies
from app.api.replies import errors
from app.api.deps import Admin, AnyCaller, Reader, Svc
from app.container import Services

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="The process is up", response_model=replies.Health)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/me", summary="The caller's tenant and scopes", response_model=replies.Me, responses=replies.errors(401))
async def me(caller: AnyCaller) -> dict[str, Any]:
    queues = sorted(caller.queues) if caller.queues is not None else None
    return {"tenant": caller.tenant, "scopes": sorted(caller.scopes), "queues": queues}


@router.get("/v1/webhook-secret", summary="The secrets webhook deliveries are signed with (admin keys only)",
            response_model=replies.WebhookSecrets, responses=errors(401, 403, 503))  # fmt: skip
async def webhook_secret(svc: Svc, _: Admin) -> dict[str, Any]:
    """For receivers to verify deliveries (Standard Webhooks). With no BATCHQ_WEBHOOK_SECRET(S)
    configured, this installation's generated secret, made once and kept in the store."""
    return {"secrets": await svc.webhooks.secrets.current(), "generated": svc.webhooks.secrets.generated}


@router.get("/readyz", summary="The store and the broker answer", response_model=replies.Ready,
            responses={503: {"model": replies.Ready, "description": "the store or the broker does not answer"}})
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


@router.get("/v1/queues", summary="Each queue of the caller's tenant: depth, queued, running, oldest message age",
            response_model=replies.Queues, responses=replies.READ_ERRORS)  # fmt: skip
async def queues(svc: Svc, caller: Reader) -> dict[str, Any]:
    return {"queues": await queue_overview(svc, caller.sees)}


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def metrics(svc: Svc) -> Response:
    """Prometheus' text format: this replica's counts (all its processes) and the queues."""
    text = svc.metrics.exposition(await queue_overview(svc, None))
    return Response(text, media_type=CONTENT_TYPE_LATEST)


def serve_docs_to_key_holders(app: FastAPI) -> None:
    """With BATCHQ_PUBLIC_DOCS=false the contract is served to key holders only (no /docs page)."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(_: AnyCaller) -> JSONResponse:
        return JSONResponse(app.openapi())

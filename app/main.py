"""create_app(): the FastAPI application and its lifespan."""
from __future__ import annotations

import inspect
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import ui
from app.api import batches, errors, events, system, workers
from app.api.auth import configured_keys
from app.api.body import BodyLimit
from app.config import Settings, get_settings
from app.container import build_services
from app.telemetry import metrics as prometheus
from app.telemetry.requests import RequestTelemetry
from app.telemetry.tracing import Tracing, make_tracing


def create_app(settings: Settings | None = None, tracer_provider: Any = None) -> FastAPI:
    """`tracer_provider`: an OpenTelemetry TracerProvider for the spans (default: the global
    one), used when tracing is on (the `otel` extra installed, BATCHQ_TRACING true)."""
    settings = settings or get_settings()
    if settings.log_format == "json":
        logging.captureWarnings(True)  # every line JSON, warnings too (each process of `serve`)
    metrics = prometheus.Metrics(settings)
    tracing = make_tracing(settings, tracer_provider)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        services = build_services(settings, metrics, tracing)
        await services.start()
        app.state.services = services
        try:
            yield
        finally:
            await services.stop()
            prometheus.process_exits()

    app = FastAPI(
        title="batchq",
        version="0.2.0",
        description="Job orchestration: parallel batches, chains, sagas, callbacks. Workers in any language.",
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.public_docs else None,
        docs_url="/docs" if settings.public_docs else None,
        redoc_url="/redoc" if settings.public_docs else None,
        separate_input_output_schemas=False,
        **_fastapi_telemetry(tracing),
    )
    app.state.settings = settings
    app.state.api_keys = configured_keys(settings)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestTelemetry, metrics=metrics)  # outermost: it times and names every answer
    for module in (batches, workers, events, system):
        app.include_router(module.router)
    if not settings.public_docs:
        system.serve_docs_to_key_holders(app)
    ui.install(app)  # the dashboard at /ui: static files calling the /v1 API above
    return app


def _fastapi_telemetry(tracing: Tracing) -> dict[str, Any]:
    """FastAPI's own OpenTelemetry support makes the request spans (when tracing is on; off
    otherwise). Versions before it take no such argument."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": tracing.fastapi_config()}

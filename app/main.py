"""create_app(): the FastAPI application and its lifespan."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import ui
from app.api import batches, errors, events, system, workers
from app.api.auth import configured_keys
from app.api.body import BodyLimit
from app.config import Settings, get_settings
from app.container import build_services


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        services = build_services(settings)
        await services.start()
        app.state.services = services
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="batchq",
        version="0.2.0",
        description="Job orchestration: parallel batches, chains, sagas, callbacks. Workers in any language.",
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.public_docs else None,
        docs_url="/docs" if settings.public_docs else None,
        redoc_url="/redoc" if settings.public_docs else None,
        separate_input_output_schemas=False,
    )
    app.state.settings = settings
    app.state.api_keys = configured_keys(settings)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for module in (batches, workers, events, system):
        app.include_router(module.router)
    if not settings.public_docs:
        system.serve_docs_to_key_holders(app)
    ui.install(app)  # the dashboard at /ui: static files calling the /v1 API above
    return app

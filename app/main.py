"""create_app(): the FastAPI application and its lifespan."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app import ui
from app.api import batches, errors, events, system, workers
from app.api.auth import require_token
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
        version="0.1.0",
        description="Job orchestration: parallel batches, chains, sagas, callbacks. Workers in any language.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    protected = [Depends(require_token)]
    app.include_router(batches.router, dependencies=protected)
    app.include_router(workers.router, dependencies=protected)
    app.include_router(events.router, dependencies=protected)
    app.include_router(system.router)
    ui.install(app)  # the dashboard at /ui: static files calling the /v1 API above
    return app

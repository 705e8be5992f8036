"""Typed dependencies of the routes: the services, and the caller's tenant."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.container import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_tenant(request: Request) -> str | None:
    """The caller's tenant (None: an admin, who sees every tenant)."""
    return getattr(request.state, "tenant", "default")


Svc = Annotated[Services, Depends(get_services)]
Tenant = Annotated[str | None, Depends(get_tenant)]

"""Typed dependencies of the routes: the services, and the caller with the scope a route needs."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.auth import Caller, any_key, require
from app.container import Services


async def get_services(request: Request) -> Services:  # async: a plain def would run in a thread
    return request.app.state.services


Svc = Annotated[Services, Depends(get_services)]
Reader = Annotated[Caller, require("read")]
Producer = Annotated[Caller, require("produce")]
Worker = Annotated[Caller, require("work")]
Admin = Annotated[Caller, require("admin")]
AnyCaller = Annotated[Caller, Depends(any_key)]

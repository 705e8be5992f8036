"""Optional bearer-token check for the /v1 API (health and metrics stay open)."""
from __future__ import annotations

import hmac

from fastapi import Request

from app.domain.errors import DomainError


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


async def require_token(request: Request) -> None:
    expected = request.app.state.settings.api_token
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <BATCHQ_API_TOKEN>)")

"""One error shape for every answer that is not a success: {"error": {"code", "message", "field"?}}.

An unexpected exception is a 500 in that shape carrying a request id, which the log line with
its traceback carries too; a store that stays busy or unreachable is a 503 with Retry-After.
"""
from __future__ import annotations

import logging
import re
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from redis.exceptions import ResponseError
from sqlalchemy.exc import DBAPIError

from app.domain.errors import DomainError, Unavailable
from app.store.base import StoreBusy
from app.store.unreachable import UNREACHABLE
from app.store.unreachable import unreachable as is_unreachable

log = logging.getLogger("batchq.api")

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "body_too_large", 415: "unsupported_media_type", 422: "validation_error",
         503: "unavailable"}  # fmt: skip


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None, **extra: str
) -> JSONResponse:
    body: dict = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def request_id(request: Request) -> str:
    """The request's id (the request-id middleware's, when it ran), else a fresh one."""
    return getattr(request.state, "request_id", None) or request.headers.get("x-request-id") or uuid.uuid4().hex


def field_path(loc: tuple) -> str:
    """('body', 'jobs', 3, 'object', 'name') -> 'jobs[3].name'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith("form:"):
            continue  # which form of a job / compensation was given: not part of the path
        elif isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue  # pydantic's internal union labels
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's),
    read from the OpenAPI document's path templates."""
    patterns = getattr(request.app.state, "method_patterns", None)
    if patterns is None:
        patterns = [
            (
                re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$"),
                sum(1 for part in path.split("/") if part and not part.startswith("{")),  # literal segments
                {m.upper() for m in ops},
            )
            for path, ops in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.method_patterns = patterns
    matches = [(literal, methods) for pattern, literal, methods in patterns if pattern.match(request.url.path)]
    # The most specific templates only: /batches/{id}/jobs/retry, not /batches/{id}/jobs/{job_id}.
    best = max((literal for literal, _ in matches), default=0)
    return sorted({m for literal, methods in matches if literal == best for m in methods})


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else getattr(exc, "headers", None)
        return error_response(exc.status, exc.code, exc.message, exc.field, headers=headers)

    @app.exception_handler(StoreBusy)
    async def busy(_: Request, exc: StoreBusy) -> JSONResponse:
        return error_response(503, "unavailable", f"try again shortly: {exc}", headers={"Retry-After": "1"})

    async def unreachable(request: Request, exc: Exception) -> JSONResponse:
        """The store or the broker did not answer (a restart, a failover, a dropped connection):
        nothing was changed, the client retries."""
        log.warning("store or broker unreachable on %s %s: %r", request.method, request.url.path, exc,
                    extra={"request_id": request_id(request)})  # fmt: skip
        return error_response(503, "unavailable", "the store or the broker is unreachable; retry shortly",
                              headers={"Retry-After": "1"})  # fmt: skip

    for transient in UNREACHABLE:
        app.add_exception_handler(transient, unreachable)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(ResponseError)
    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        if is_unreachable(exc):
            return await unreachable(request, exc)
        return await unexpected(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = field_path(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value"))
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        return error_response(422, "validation_error", f"{field}: {message}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):  # app.api.body.BodyRejected
            return error_response(exc.status_code, headers=exc.headers, **exc.detail)
        headers = exc.headers
        if exc.status_code == 405:
            headers = {"Allow": ", ".join(allowed_methods(request))}
        code = CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.error("unexpected error (request %s) on %s %s", rid, request.method, request.url.path, exc_info=exc,
                  extra={"request_id": rid})  # fmt: skip
        return error_response(
            500, "internal_error", f"an unexpected error happened; quote request id {rid} to the operator", request_id=rid
        )

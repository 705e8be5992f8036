"""What the client raises: an API error (one shape for all), or an API it could not reach."""
from __future__ import annotations

from typing import Any

import httpx


class BatchqError(Exception):
    """The API answered with an error: `{"error": {"code", "message", "field"?}}`."""

    def __init__(self, status_code: int, code: str, message: str, field: str | None = None):
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field


class Unauthorized(BatchqError):
    """401: a missing or wrong API key."""


class NotFound(BatchqError):
    """404: no such batch or job (or the attempt a report names does not exist)."""


class Conflict(BatchqError):
    """409: the state does not allow it (the batch ended, the attempt expired or was cancelled)."""


class ApiUnreachable(ConnectionError):
    """No API URL answered (connection refused, timed out, reset) within the retry budget."""

    def __init__(self, url: str, cause: Exception):
        super().__init__(f"cannot reach the batchq API at {url} ({type(cause).__name__}: {cause or 'no detail'})")
        self.url = url


_BY_STATUS: dict[int, type[BatchqError]] = {401: Unauthorized, 404: NotFound, 409: Conflict}
_DEFAULT_CODES = {401: "unauthorized", 404: "not_found", 409: "conflict", 422: "validation_error", 503: "unavailable"}


def error_from_response(response: httpx.Response) -> BatchqError:
    """Build the error of a non-2xx reply; a body that is not the error shape still gives one."""
    status = response.status_code
    code, message, field = _DEFAULT_CODES.get(status, "http_error"), "", None
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        field = error.get("field")
    if not message:
        message = response.text.strip()[:300] or response.reason_phrase or f"HTTP {status}"
    return _BY_STATUS.get(status, BatchqError)(status, code, message, field)

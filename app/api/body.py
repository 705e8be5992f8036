"""Request bodies: bounded, JSON only, and read exactly as sent or refused with the place named.

- A body over BATCHQ_MAX_BODY_BYTES is a 413 before it is read (Content-Length) or as soon as
  the bytes read pass the limit (chunked).
- A body on a route that takes JSON must say `application/json` (or `+json`): else 415.
- JSON that cannot be read (syntax, nesting too deep, an integer with thousands of digits) is a
  400 `invalid_json`. What Python's JSON would let through but JSON does not have — NaN,
  Infinity, numbers too large for a double (1e400) — and the NUL character, which no
  store keeps, are a 422 naming where they are (`jobs[3].args.x`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyRejected(HTTPException):
    """A body refused before validation; the error handler gives it the one error shape."""

    def __init__(self, status: int, code: str, message: str, field: str = "body"):
        super().__init__(status_code=status, detail={"code": code, "message": message, "field": field})


class _Bad:
    """Stands in for a value JSON cannot hold, so that its place can be found."""

    def __init__(self, what: str):
        self.what = what


def _find(value: Any, path: str = "") -> tuple[str, str] | None:
    """(place, what) of the first value JSON cannot hold, or of a string holding NUL."""
    if isinstance(value, _Bad):
        return path or "body", value.what
    if isinstance(value, str):
        return (path or "body", "a string must not contain the NUL character (\\u0000)") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return path or "body", "a key must not contain the NUL character (\\u0000)"
            found = _find(item, f"{path}.{key}" if path else key)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find(item, f"{path}[{index}]")
            if found:
                return found
    return None


def parse_json(raw: bytes) -> Any:
    bad: list[_Bad] = []

    def number(text: str) -> float | _Bad:
        value = float(text)
        if math.isfinite(value):
            return value
        bad.append(_Bad(f"the number {text} is too large for JSON"))
        return bad[-1]

    def constant(text: str) -> _Bad:
        bad.append(_Bad(f"{text} is not a JSON number"))
        return bad[-1]

    try:
        value = json.loads(raw, parse_float=number, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise BodyRejected(400, "invalid_json", f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        raise BodyRejected(400, "invalid_json", "the body is nested too deeply")
    except UnicodeDecodeError:
        raise BodyRejected(400, "invalid_json", "the body is not UTF-8")
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise BodyRejected(400, "invalid_json", f"the body holds a number that cannot be read: {exc}")
    # Walk the value only when something was replaced or a NUL escape appears in the text.
    if bad or b"\\u0000" in raw:
        found = _find(value)
        if found:
            raise BodyRejected(422, "validation_error", f"{found[0]}: {found[1]}", field=found[0])
    return value


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is read by parse_json, and refused (415) when it is not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def strict_handler(request: Request) -> Response:
            if takes_body and _has_body(request) and not _is_json(request.headers.get("content-type", "")):
                raise BodyRejected(415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)")
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(length and length != "0") or "transfer-encoding" in request.headers


class BodyLimit:
    """Refuses bodies over `max_bytes` with a 413: at once when Content-Length says so, else as
    soon as the bytes read pass the limit (nothing of such a request is acted on)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = BodyRejected(413, "body_too_large", f"the body is larger than {self.max_bytes} bytes (BATCHQ_MAX_BODY_BYTES)")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await _send_error(send, too_large)
                    return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, counting, send)


async def _send_error(send: Send, exc: BodyRejected) -> None:
    body = json.dumps({"error": exc.detail}).encode()
    await send({"type": "http.response.start", "status": exc.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})

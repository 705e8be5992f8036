"""OpenTelemetry tracing, optional: with the `otel` extra installed and BATCHQ_TRACING true
(the default), `make_tracing` returns app.telemetry.otel's; otherwise this one, whose every
hook does nothing, and nothing imports the OpenTelemetry SDK.

What is traced: each API request (FastAPI's own server spans), each store operation and
read within one, the report of each job that carried a trace, and each webhook delivery.
The trace context of the request that creates a batch is stored on the batch, handed to
workers in every job message (`traceparent`), and sent to webhook receivers.
"""
from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from app.config import Settings

if TYPE_CHECKING:
    from app.services.orchestrator import Report
    from app.store.base import Store


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def valid_traceparent(value: str | None) -> str | None:
    """A W3C traceparent header as sent, or None when it is not one (it is stored on the batch)."""
    return value if value is not None and _TRACEPARENT.match(value) else None


def available() -> bool:
    """The `otel` extra is installed (asked without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.sdk") is not None
    except (ImportError, ValueError):
        return False


class NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def fail(self, description: str) -> None:
        pass


NO_SPAN = NoSpan()


class Tracing:
    """No tracing."""

    enabled = False

    def fastapi_config(self) -> dict[str, Any]:
        """FastAPI's `telemetry` settings (its own OpenTelemetry support): all off."""
        return {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}

    def traceparent(self) -> str | None:
        """The W3C traceparent of the current span (None: no trace)."""
        return None

    @contextmanager
    def span(
        self, name: str, parent: str | None = None, kind: str = "internal", attributes: dict[str, Any] | None = None
    ) -> Iterator[NoSpan]:
        """A span (a child of `parent`, a traceparent, if given; else of the current span)."""
        yield NO_SPAN

    @contextmanager
    def child_span(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[NoSpan]:
        """A span only within a trace (no new traces for background rounds)."""
        yield NO_SPAN

    def trace_store(self, store: Store) -> None:
        """Wrap the store's reads in child spans."""

    def reports(self, reports: Sequence[Report], outcomes: Sequence[Any], started_ns: int) -> None:
        """A span for each applied report that carried a traceparent, in the job's trace."""


def make_tracing(settings: Settings, provider: Any = None) -> Tracing:
    """`provider`: an OpenTelemetry TracerProvider (default: the global one)."""
    if not settings.tracing or not available():
        return Tracing()
    from app.telemetry.otel import OtelTracing

    return OtelTracing(provider)

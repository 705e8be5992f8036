"""Tracing with OpenTelemetry (imported only when the `otel` extra is installed and on).

Spans go to the given TracerProvider, else the global one: set one up in-process, run under
`opentelemetry-instrument`, or set OTEL_EXPORTER_OTLP_ENDPOINT (FastAPI then sets up an
OTLP exporter over HTTP; OTEL_SERVICE_NAME names the service).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.telemetry.tracing import NO_SPAN, Tracing

if TYPE_CHECKING:
    from app.services.orchestrator import Report
    from app.store.base import Store

W3C = TraceContextTextMapPropagator()
KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "server": SpanKind.SERVER, "consumer": SpanKind.CONSUMER}
# The reads of the Store interface (operations are traced by the orchestrator, named).
STORE_READS = ("get_batch", "list_batches", "get_job", "list_jobs", "list_attempts", "events_after", "list_webhooks",
               "event_heads", "queue_counts", "save_webhook")  # fmt: skip


class Span:
    def __init__(self, span: trace.Span):
        self.span = span

    def set_attribute(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def fail(self, description: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, description))


class OtelTracing(Tracing):
    enabled = True

    def __init__(self, provider: trace.TracerProvider | None = None):
        self.provider = provider
        self.tracer = trace.get_tracer("batchq", tracer_provider=provider)

    def fastapi_config(self) -> dict[str, Any]:
        # Request spans from FastAPI; its metrics are Prometheus' here (app.telemetry.metrics).
        return {"tracing": True, "tracer_provider": self.provider, "metrics": False, "logs": False,
                "operation_spans": False, "auto_configure": True}  # fmt: skip

    def traceparent(self) -> str | None:
        if not trace.get_current_span().get_span_context().is_valid:
            return None
        carrier: dict[str, str] = {}
        W3C.inject(carrier)
        return carrier.get("traceparent")

    @contextmanager
    def span(
        self, name: str, parent: str | None = None, kind: str = "internal", attributes: dict[str, Any] | None = None
    ) -> Iterator[Any]:
        context = W3C.extract({"traceparent": parent}) if parent else None
        attributes = {k: v for k, v in (attributes or {}).items() if v is not None}
        with self.tracer.start_as_current_span(name, context=context, kind=KINDS[kind], attributes=attributes) as span:
            yield Span(span)

    @contextmanager
    def child_span(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
        if not trace.get_current_span().get_span_context().is_valid:
            yield NO_SPAN
            return
        with self.span(name, attributes=attributes) as span:
            yield span

    def trace_store(self, store: Store) -> None:
        system = type(store).__name__
        for name in STORE_READS:
            setattr(store, name, self._in_span(f"store.{name}", getattr(store, name), system))

    def _in_span(self, name: str, method: Callable[..., Awaitable[Any]], system: str) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            if not trace.get_current_span().get_span_context().is_valid:
                return await method(*args, **kwargs)
            with self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes={"batchq.store": system}):
                return await method(*args, **kwargs)

        return call

    def reports(self, reports: Sequence[Report], outcomes: Sequence[Any], started_ns: int) -> None:
        here = trace.get_current_span().get_span_context()
        links = [Link(here)] if here.is_valid else None  # the request that carried the reports
        ended = time.time_ns()
        for report, outcome in zip(reports, outcomes):
            if not report.traceparent:
                continue
            result = outcome.get("status") if isinstance(outcome, dict) else "refused"
            span = self.tracer.start_span(
                "batchq.report", context=W3C.extract({"traceparent": report.traceparent}), kind=SpanKind.SERVER,
                links=links, start_time=started_ns,
                attributes={"batchq.job_id": report.job_id, "batchq.attempt": report.attempt,
                            "batchq.outcome": report.outcome, "batchq.result": str(result)},
            )  # fmt: skip
            if result == "refused":
                span.set_status(Status(StatusCode.ERROR, str(outcome)))
            span.end(end_time=ended)

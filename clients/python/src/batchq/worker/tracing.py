"""A span per job run, in the trace of the request that created its batch (OpenTelemetry).

The message's `traceparent` (W3C) is the parent; the span's own traceparent goes back with
the report, so the server's span of the report joins the trace too. Without OpenTelemetry
installed (or without a tracer provider set up) no span is made and the message's
traceparent goes back as it came.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from batchq.models import Message

try:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `otel` extra is not installed
    trace = None  # type: ignore[assignment]


class JobSpan:
    """The span of one run (or none): its traceparent, and how the run ended."""

    def __init__(self, traceparent: str | None, span: Any = None):
        self.traceparent = traceparent
        self.span = span

    def ended(self, outcome: str, error: str | None = None) -> None:
        if self.span is None:
            return
        self.span.set_attribute("batchq.outcome", outcome)
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error[:500]))


class JobTracer:
    def __init__(self, provider: Any = None):
        self.tracer = trace.get_tracer("batchq.worker", tracer_provider=provider) if trace is not None else None

    @contextmanager
    def run(self, msg: Message) -> Iterator[JobSpan]:
        given = msg.get("traceparent")
        if self.tracer is None:
            yield JobSpan(given)
            return
        w3c = TraceContextTextMapPropagator()
        parent = w3c.extract({"traceparent": given}) if given else None
        attributes: dict[str, str | int] = {"batchq.job_id": msg.get("job_id", ""), "batchq.batch_id": msg.get("batch_id", ""),
                      "batchq.attempt": msg.get("attempt", 0), "batchq.job_name": msg.get("name", ""),
                      "messaging.destination.name": msg.get("queue", "")}  # fmt: skip
        name = f"batchq.job {msg.get('name')}"
        with self.tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes) as span:
            carrier: dict[str, str] = {}
            w3c.inject(carrier)
            yield JobSpan(carrier.get("traceparent") or given, span)

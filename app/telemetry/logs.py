"""The server's log lines: text (default) or JSON, with the coordinates of what they are about.

`batch_id`, `job_id`, `attempt`, `tenant` and `request_id` are context variables, set by the
request middleware (app.telemetry.requests) and by the orchestrator around each operation;
a filter on the handlers copies them onto every record, so a line logged anywhere below
(the store, an error handler, uvicorn's access line) carries them.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from batchq.logs import FIELDS as WORKER_FIELDS
from batchq.logs import JsonFormatter as WorkerJsonFormatter

CONTEXT_FIELDS = ("batch_id", "job_id", "attempt", "tenant", "request_id")
_fields: ContextVar[dict[str, Any]] = ContextVar("batchq_log_fields", default={})


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Log lines within carry these fields (None values are left out)."""
    token = _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _fields.reset(token)


def bind(**fields: Any) -> None:
    """Add fields for the rest of the current context (within a `bound` block, until it ends)."""
    _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})


def current() -> dict[str, Any]:
    return _fields.get()


class ContextFilter(logging.Filter):
    """Copies the context fields onto each record (an explicit `extra` value wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _fields.get().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class JsonFormatter(WorkerJsonFormatter):
    """One JSON object a line (the SDK worker's format), with the server's fields too."""

    fields = (*WORKER_FIELDS, "tenant", "request_id", "method", "path", "status")

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            # uvicorn's access line: client, method, path, HTTP version, status.
            _client, method, path, _version, status = record.args
            record.method, record.path, record.status = method, path, status
        return super().format(record)


def uvicorn_config(fmt: str, level: str) -> dict[str, Any]:
    """uvicorn's logging configuration with the server's loggers added (every process of
    `batchq serve --workers N` applies it): text keeps uvicorn's look, json writes objects."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"context": {"()": "app.telemetry.logs.ContextFilter"}}
    if fmt == "json":
        for name in ("default", "access"):
            config["formatters"][name] = {"()": "app.telemetry.logs.JsonFormatter"}
        config["formatters"]["app"] = {"()": "app.telemetry.logs.JsonFormatter"}
    else:
        config["formatters"]["app"] = {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(name)s: %(message)s"}
    config["handlers"]["app"] = {"formatter": "app", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    for handler in config["handlers"].values():
        handler["filters"] = ["context"]
    config["root"] = {"handlers": ["app"], "level": level.upper()}
    # httpx logs each request at INFO (every webhook delivery): DEBUG is where that belongs.
    quiet = "DEBUG" if level.upper() == "DEBUG" else "WARNING"
    config["loggers"].update({"httpx": {"level": quiet}, "httpcore": {"level": quiet},
                              "alembic.runtime.plugins": {"level": quiet}})  # fmt: skip
    return config

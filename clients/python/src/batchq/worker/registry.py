"""Registry: job name -> handler. `@registry.job("Name")` or `registry.register("Name", fn)`."""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

Handler = Callable[..., Any]


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, fn: Handler) -> Handler:
        if not name or not name.strip():
            raise ValueError("a job name must not be empty")
        if name in self._handlers and self._handlers[name] is not fn:
            raise ValueError(f"job {name!r} already has a handler: {self._handlers[name]!r}")
        self._handlers[name] = fn
        return fn

    def job(self, name: str) -> Callable[[Handler], Handler]:
        def decorate(fn: Handler) -> Handler:
            return self.register(name, fn)

        return decorate

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)


def is_async(fn: Handler) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def load_registry(spec: str) -> Registry:
    """Import "package.module:attribute" (the current directory is importable, like `python -m`)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    registry = getattr(importlib.import_module(module_name), attr, None)
    if not isinstance(registry, Registry):
        raise ValueError(f"{spec} is not a batchq Registry (got {type(registry).__name__})")
    return registry

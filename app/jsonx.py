"""JSON out, fast and exact: orjson, falling back to the standard library for what orjson
refuses (integers beyond 64 bits, which users may send and get back unchanged).

Values reach here validated (app.api.body refuses NaN and Infinity), so orjson's turning
NaN into null never applies.
"""
from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits (or a type JSON has not)
        return json.dumps(value, separators=(",", ":"), allow_nan=False)


def dumpb(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

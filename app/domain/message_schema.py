"""JSON Schema (draft 2020-12) of the message a worker receives.

Written by hand from app/domain/rules.py `build_message` plus the `lease` and
`lease_expires_at` that /start and /claim add; tests validate real messages against it.
Exported to openapi/message.schema.json by `batchq openapi`.
"""
from __future__ import annotations

from typing import Any

_OBJECT = {"type": "object"}
_UUID_STR = {"type": "string", "minLength": 1}

COMPENSATION: dict[str, Any] = {
    "type": "object",
    "description": "Present on compensation jobs: what is being undone, and why.",
    "required": ["batch_id", "original_job_id", "original_job_name", "original_args", "error", "failed_job_id", "context"],
    "properties": {
        "batch_id": {**_UUID_STR, "description": "The batch of the job being undone."},
        "original_job_id": {**_UUID_STR, "description": "The completed job this compensation undoes."},
        "original_job_name": {"type": "string", "description": "Its job name."},
        "original_args": {**_OBJECT, "description": "The args the original job was defined with."},
        "error": {"type": ["string", "null"], "description": "The error of the failure that triggered the saga."},
        "failed_job_id": {**_UUID_STR, "description": "The job whose failure triggered the saga."},
        "context": {**_OBJECT, "description": "The context the original job ran with."},
    },
    "additionalProperties": True,
}

MESSAGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://batchq.dev/schemas/message.schema.json",
    "title": "batchq worker message",
    "description": (
        "One delivery (attempt) of a job. Read from POST /v1/queues/{queue}/claim (already started, with a lease), "
        "or from the Redis stream `{prefix}:stream:{queue}` (consumer group `workers`, field `m`, JSON, without a "
        "lease: POST /v1/jobs/{job_id}/start {attempt, worker} to get the started message, then XACK + XDEL). "
        "Report with /heartbeat, /complete or /fail naming `attempt` and `lease`. Unknown fields may be added "
        "in later versions: ignore them."
    ),
    "type": "object",
    "required": ["job_id", "batch_id", "attempt", "name", "kind", "args", "context", "position", "queue"],
    "properties": {
        "job_id": {**_UUID_STR, "description": "The job; the path parameter of the worker endpoints."},
        "batch_id": {**_UUID_STR, "description": "The batch the job belongs to."},
        "attempt": {"type": "integer", "minimum": 1, "description": "This delivery's attempt number; name it in every report."},
        "name": {"type": "string", "minLength": 1, "description": "The job type, the key of the worker's handler."},
        "kind": {
            "enum": ["job", "compensation", "callback"],
            "description": "job: a job of the batch; compensation: undoes a job (saga); callback: on_complete / on_failure job.",
        },
        "args": {
            "type": "object",
            "description": (
                "The arguments: the batch's shared context, then the job's own args (which win on a clash), then "
                "`batch_id` and `job_position`. Compensation and callback jobs get their own args and `batch_id`; "
                "a compensation's args also carry `_compensation`."
            ),
            "properties": {
                "batch_id": _UUID_STR,
                "job_position": {"type": "integer", "minimum": 0},
                "_compensation": {"$ref": "#/$defs/compensation"},
            },
            "required": ["batch_id"],
            "additionalProperties": True,
        },
        "context": {**_OBJECT, "description": "The batch's accumulated context (a chain's steps merge their updates into it)."},
        "position": {"type": "integer", "minimum": 0, "description": "The job's position in the batch."},
        "queue": {"type": "string", "minLength": 1},
        "timeout_s": {
            "type": ["number", "null"],
            "description": "The lease length: heartbeat well within it (e.g. every timeout_s / 3).",
        },
        "max_attempts": {"type": ["integer", "null"], "minimum": 1},
        "compensation": {"$ref": "#/$defs/compensation"},
        "lease": {
            "type": "string",
            "minLength": 1,
            "description": "The attempt's lease token (present once started); send it with every report.",
        },
        "lease_expires_at": {
            "type": "number",
            "description": "When the lease runs out unless a heartbeat extends it (Unix time, seconds).",
        },
    },
    "dependentRequired": {"lease": ["lease_expires_at"]},
    "additionalProperties": True,
    "$defs": {"compensation": COMPENSATION},
}

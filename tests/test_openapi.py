"""The exported contract: openapi/ is current, and real messages fit message.schema.json."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import jsonschema
import pytest

from app.broker.redis_streams import stream_key
from app.cli import openapi_documents
from conftest import STREAM_BACKENDS, redis_client

OPENAPI_DIR = Path(__file__).resolve().parents[1] / "openapi"


def test_committed_openapi_documents_are_current():
    for name, expected in openapi_documents().items():
        path = OPENAPI_DIR / name
        committed = path.read_text(encoding="utf-8") if path.exists() else None
        assert committed == expected, f"{path} is stale or missing: run `batchq openapi` and commit the result"


def message_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((OPENAPI_DIR / "message.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_rejects_a_message_missing_required_fields():
    validator = message_validator()
    assert not validator.is_valid({"job_id": "x", "attempt": 1})
    assert not validator.is_valid({"job_id": "x", "batch_id": "b", "attempt": 0, "name": "A", "kind": "job",
                                   "args": {"batch_id": "b"}, "context": {}, "position": 0, "queue": "q"})


async def test_claimed_messages_of_every_kind_match_the_schema(api):
    validator = message_validator()
    seen: dict[str, dict] = {}

    def check(msg: dict) -> None:
        validator.validate(msg)
        assert msg["lease"] and msg["lease_expires_at"].endswith("Z")
        seen.setdefault(msg["kind"], msg)

    parallel = await api.create(
        {"jobs": ["Ping", {"name": "Resize", "args": {"size": 2}}], "context": {"tenant": "acme"},
         "on_complete": {"job": {"name": "Notify", "args": {"to": "ops"}}}}
    )
    for msg in await api.claim_until(2):
        check(msg)
        await api.complete(msg, result={"ok": True})
    (callback,) = await api.claim_until(1)
    check(callback)
    await api.complete(callback)
    assert (await api.wait_status(parallel["id"], "completed"))["status"] == "completed"

    # A saga: Charge completes, Ship fails, Refund (the compensation) undoes Charge.
    await api.create({"type": "chain", "jobs": [["Charge", "Refund"], "Ship"], "context": {"order": 7}})
    (charge,) = await api.claim_until(1)
    check(charge)
    await api.complete(charge, result="charged", context={"charge_id": "ch_1"})
    (ship,) = await api.claim_until(1)
    check(ship)
    await api.fail(ship, "no courier", retryable=False)
    (refund,) = await api.claim_until(1)
    check(refund)
    await api.complete(refund)

    assert set(seen) == {"job", "callback", "compensation"}
    comp = refund["compensation"]
    assert refund["args"]["_compensation"] == comp
    assert comp["original_job_id"] == charge["job_id"] and comp["failed_job_id"] == ship["job_id"]
    assert comp["original_job_name"] == "Charge" and comp["error"] == "no courier"


@pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True)
async def test_raw_stream_entries_match_the_schema(api):
    """What a direct stream reader sees before /start: the attempt's address, nothing more."""
    validator = jsonschema.Draft202012Validator(json.loads((OPENAPI_DIR / "stream-entry.schema.json").read_text(encoding="utf-8")))
    await api.create({"jobs": ["Ping"], "context": {"k": 1}})
    redis = redis_client(api.backend)
    try:
        deadline = time.monotonic() + 10
        entries = []
        while not entries and time.monotonic() < deadline:
            entries = await redis.xrange(stream_key(api.settings.redis_prefix, "default", "default"))
            await asyncio.sleep(0.02)
    finally:
        await redis.aclose()
    assert len(entries) == 1
    raw = json.loads(entries[0][1]["m"])
    validator.validate(raw)
    assert "lease" not in raw and "args" not in raw and raw["attempt"] == 1

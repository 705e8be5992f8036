"""The server's logs: with BATCHQ_LOG_FORMAT=json every line is a JSON object, and the lines
about a batch carry its batch_id (and the job_id, attempt, tenant, request_id where they apply)."""
from __future__ import annotations

import json

import httpx
import pytest

from conftest import BACKENDS
from processes import FAST, free_port, wait_for, wait_healthy

pytestmark = pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")


def test_json_logs_are_one_object_a_line_with_the_batch_and_request(procs, tmp_path):
    p = procs(**FAST, BATCHQ_LOG_FORMAT="json", BATCHQ_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/batchq.db")
    port = free_port()
    server = p.start("server", "serve", "--port", str(port), cwd=tmp_path)  # access log on
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        wait_healthy(client, server, p)
        r = client.post("/v1/batches", json={"jobs": ["A"], "timeout_s": 1}, headers={"X-Request-Id": "req-create-1"})
        assert r.status_code == 201 and r.headers["x-request-id"] == "req-create-1", r.text
        batch_id = r.json()["id"]
        (msg,) = client.post("/v1/queues/default/claim", json={"max": 1, "wait_s": 5}).json()["messages"]
        # No report: the lease runs out and the server says so, about that job and attempt.
        wait_for(lambda: client.get(f"/v1/batches/{batch_id}").json()["status"] == "failed", 30, "the lease to run out", p)
        generated = client.get(f"/v1/batches/{batch_id}/jobs/{msg['job_id']}").headers["x-request-id"]
    p.stop("server")

    raw = [line for line in p.log("server").splitlines() if line.strip()]
    lines = [json.loads(line) for line in raw]  # every line is JSON (a failure here names the line)
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    created = [x for x in lines if x.get("batch_id") == batch_id and "created" in x["message"]]
    assert created and created[0]["request_id"] == "req-create-1" and created[0]["tenant"] == "default", lines
    access = [x for x in lines if x["logger"] == "uvicorn.access" and x.get("request_id") == generated]
    assert access and access[0]["batch_id"] == batch_id and access[0]["job_id"] == msg["job_id"] and access[0]["status"] == 200
    expired = [x for x in lines if x.get("job_id") == msg["job_id"] and "lease" in x["message"]]
    assert expired and expired[0]["attempt"] == 1 and expired[0]["batch_id"] == batch_id, lines
    ended = [x for x in lines if x.get("batch_id") == batch_id and x["message"].startswith(f"batch {batch_id} failed")]
    assert ended, lines


def test_text_logs_stay_the_default(procs, tmp_path):
    p = procs(**FAST, BATCHQ_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/batchq.db")
    port = free_port()
    server = p.start("server", "serve", "--port", str(port), cwd=tmp_path)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        wait_healthy(client, server, p)
        batch_id = client.post("/v1/batches", json={"jobs": ["A"]}).json()["id"]
    p.stop("server")
    log = p.log("server")
    assert f"INFO:     app.services.orchestrator: batch {batch_id} created" in log, log
    assert not any(line.startswith("{") for line in log.splitlines())

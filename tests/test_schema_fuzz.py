"""Schemathesis against a live server's /openapi.json: no 5xx, and every answer fits the contract.

Bounded: a fixed seed, deterministic generation, a few examples per operation. It runs the
coverage phase (every documented bound and enum, its edges and just past them) and a short
fuzzing phase over every operation, and fails on any server error, an undocumented status,
a reply that does not fit its schema or content type, a missing Allow header, or invalid
input that was accepted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from processes import serve

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "unsupported_method",
        "allow_header_conformance",
    ]
)


@pytest.mark.timeout(900)
def test_the_live_server_keeps_its_openapi_contract(procs, tmp_path):
    key = "fuzz-admin-0123456789abcdef"
    p = procs(
        BATCHQ_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/fuzz.db",
        BATCHQ_API_KEYS=json.dumps([{"key": key, "scopes": ["admin"]}]),
        BATCHQ_ALLOW_PRIVATE_CALLBACKS="true",
        BATCHQ_SSE_MAX_S="0.5",  # live event streams end at once: the run is not a long-poll
    )
    url = serve(p, tmp_path)
    st = Path(sys.executable).with_name("schemathesis")
    # The request timeout stays above the longest claim long-poll (wait_s up to 30 s): a claim
    # generated with the maximum on an empty queue answers after 30 s, as it should.
    run = subprocess.run(
        [str(st), "run", f"{url}/openapi.json", "--checks", CHECKS, "--max-examples", "8", "--seed", "20261127",
         "--generation-deterministic", "--phases", "coverage,fuzzing", "--suppress-health-check", "all",
         "--request-timeout", "60", "--workers", "1", "--no-color", "--max-failures", "20",
         "--header", f"Authorization: Bearer {key}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stdout[-12000:]}\n{run.stderr[-3000:]}\n{p.output()}"

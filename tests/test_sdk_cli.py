"""The terminal client: one-line errors (never a traceback) and the API key."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from app.cli import command_line
from conftest import BACKENDS
from processes import FAST, finished, free_port, serve

pytestmark = pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")


def cli(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*command_line(), *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd,
                          input=stdin)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_terminal_errors_are_one_line(procs, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    p = procs(**FAST)
    url = serve(p, data)
    dead = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "broken.json").write_text('{"jobs": [')
    (tmp_path / "invalid.json").write_text(json.dumps({"jobs": []}))

    def run(*args: str, stdin: str | None = None) -> str:
        return one_line_error(cli(p.env, tmp_path, *args, stdin=stdin))

    missing = tmp_path / "missing.json"
    assert run("batch", "create", str(missing), "--api-url", url) == f"error: cannot read {missing}: No such file or directory"
    assert run("batch", "create", "broken.json", "--api-url", url).startswith("error: broken.json is not valid JSON: ")
    assert run("batch", "create", "-", "--api-url", url, stdin="[1, 2]") == (
        "error: stdin must hold a JSON object (a batch definition), not list")
    assert run("batch", "get", "some-id", "--api-url", dead).startswith(f"error: cannot reach the batchq API at {dead} (")
    assert run("batch", "progress", "00000000-0000-0000-0000-000000000000", "--api-url", url) == (
        "error: not_found: batch 00000000-0000-0000-0000-000000000000 not found")
    assert run("batch", "create", "invalid.json", "--api-url", url).startswith("error: validation_error: jobs")
    assert run("worker", "nosuch.module:registry", "--api-url", url) == (
        "error: cannot load the registry nosuch.module:registry: No module named 'nosuch'")
    assert run("worker", "examples.registry:nothing", "--api-url", url).startswith(
        "error: cannot load the registry examples.registry:nothing: ")


def test_the_terminal_client_and_the_worker_send_the_api_key(procs, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    p = procs(**FAST, BATCHQ_API_TOKEN="s3cret")  # the server's setting: every /v1 call needs it
    url = serve(p, data)
    definition = tmp_path / "batch.json"
    definition.write_text(json.dumps({"jobs": [{"name": "Echo", "args": {"n": 1}}]}))

    refused = one_line_error(cli(p.env | {"BATCHQ_API_TOKEN": ""}, tmp_path, "batch", "create", str(definition),
                                 "--api-url", url))
    assert refused.startswith("error: unauthorized: ")
    created = cli(p.env, tmp_path, "batch", "create", str(definition), "--api-url", url, "--api-key", "s3cret")
    assert created.returncode == 0, created.stderr
    batch_id = json.loads(created.stdout)["id"]
    # BATCHQ_API_KEY in the environment, and the deprecated --api-token (with a warning).
    by_env = cli(p.env | {"BATCHQ_API_KEY": "s3cret", "BATCHQ_API_TOKEN": ""}, tmp_path, "batch", "get", batch_id,
                 "--api-url", url)
    assert by_env.returncode == 0 and json.loads(by_env.stdout)["id"] == batch_id, by_env.stderr
    by_token = cli(p.env | {"BATCHQ_API_TOKEN": ""}, tmp_path, "batch", "get", batch_id, "--api-url", url,
                   "--api-token", "s3cret")
    assert by_token.returncode == 0 and "deprecated" in by_token.stderr

    p.env.update(BATCHQ_API_KEY="s3cret", BATCHQ_API_TOKEN="")  # the worker's own key (the server is running)
    p.start("worker", "worker", "examples.registry:registry", "--api-url", url, "--poll-wait", "1")
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": "Bearer s3cret"}) as client:
        assert finished(client, batch_id, p)["status"] == "completed", p.output()

"""The SDK stands alone: it installs in a fresh venv without the server's dependencies, and a
project with its own `app` package runs its worker with it against a real server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from conftest import BACKENDS
from processes import FAST, ROOT, finished, serve

SERVER_ONLY = ["fastapi", "sqlalchemy", "asyncpg", "uvicorn", "alembic", "app"]
pytestmark = pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")


def run(argv: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHQ_", "PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install clients/python` and nothing else."""
    home = tmp_path_factory.mktemp("sdk-venv")
    venv = home / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], cwd=home)
    assert made.returncode == 0, made.stderr
    installed = run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     str(ROOT / "clients" / "python")], cwd=home, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_the_sdk_installs_without_the_server(sdk_venv: Path, tmp_path: Path):
    python, batchq = str(sdk_venv / "bin" / "python"), str(sdk_venv / "bin" / "batchq")
    probe = textwrap.dedent(f"""
        import importlib.util, json, pathlib, batchq
        print(json.dumps({{
            "absent": [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m) is None],
            "package": str(pathlib.Path(batchq.__file__).parent),
            "typed": (pathlib.Path(batchq.__file__).parent / "py.typed").exists(),
            "exports": sorted(n for n in ("Client", "AsyncClient", "Registry", "JobResult", "PermanentError", "Worker")
                              if hasattr(batchq, n)),
        }}))
    """)
    seen = run([python, "-c", probe], cwd=tmp_path)
    assert seen.returncode == 0, seen.stderr
    facts = json.loads(seen.stdout)
    assert facts["absent"] == SERVER_ONLY  # none of the server's dependencies, nor the server
    assert facts["package"].startswith(str(sdk_venv)) and facts["typed"]
    assert len(facts["exports"]) == 6

    helped = run([batchq, "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "worker" in helped.stdout and "batch" in helped.stdout and "serve" not in helped.stdout

    for command in ("serve", "migrate"):
        refused = run([batchq, command, "--port", "8123"], cwd=tmp_path)
        assert refused.returncode != 0 and refused.stdout == ""
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "not installed" in refused.stderr and "pip install batchq-server" in refused.stderr


JOBS = '''
"""A project's own `app` package: the name the server's package has too."""
from batchq import JobContext, JobResult, Registry

registry = Registry()


@registry.job("Shout")
def shout(args: dict, ctx: JobContext) -> JobResult:
    text = args["text"].upper()
    return JobResult(result={"text": text, "module": __name__}, context={"last": text})
'''


@pytest.mark.parametrize("venv", ["sdk-only", "with-server"])
def test_a_project_with_its_own_app_package_runs_its_worker(venv: str, request: pytest.FixtureRequest, procs,
                                                            tmp_path: Path):
    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text("")
    (project / "app" / "jobs.py").write_text(JOBS)
    data = tmp_path / "data"
    data.mkdir()
    p = procs(**FAST)
    url = serve(p, data)  # the server of this repository's venv
    command = [str(request.getfixturevalue("sdk_venv") / "bin" / "batchq")] if venv == "sdk-only" else None
    p.start("worker", "worker", "app.jobs:registry", "--api-url", url, "--poll-wait", "1", "--log-format", "json",
            cwd=project, command=command)
    with httpx.Client(base_url=url, timeout=10) as client:
        r = client.post("/v1/chains", json={"jobs": [{"name": "Shout", "args": {"text": t}} for t in ("a", "b")]})
        assert r.status_code == 201, r.text
        batch = r.json()
        done = finished(client, batch["id"], p)
        assert done["status"] == "completed", p.output()
        assert done["context"] == {"last": "B"}
        results = client.get(f"/v1/batches/{batch['id']}/results").json()["results"]
        assert sorted(r["text"] for r in results.values()) == ["A", "B"]
        assert {r["module"] for r in results.values()} == {"app.jobs"}

    # Structured logs: each job's start and end, with its coordinates.
    lines = [json.loads(line) for line in p.log("worker").splitlines() if line.startswith("{")]
    ends = [rec for rec in lines if rec.get("outcome") == "completed"]
    assert len(ends) == 2, p.output()
    for rec in ends:
        assert rec["batch_id"] == batch["id"] and rec["attempt"] == 1 and rec["job_name"] == "Shout"
        assert rec["level"] == "INFO" and rec["logger"] == "batchq.worker" and rec["worker"] and "duration_s" in rec
        assert rec["ts"].endswith("Z")
    starts = [rec for rec in lines if rec["message"].endswith("started") and rec.get("job_id")]
    assert {rec["job_id"] for rec in starts} == {rec["job_id"] for rec in ends}
    assert not [rec for rec in lines if "poll" in rec["message"]]  # polls are DEBUG

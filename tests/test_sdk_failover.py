"""Workers ride out a dead API URL and an API restart: nothing is lost and nothing runs twice."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conftest import BACKENDS
from processes import FAST, finished, free_port, serve, wait_for

pytestmark = pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected")


def test_a_worker_given_a_dead_url_first_fails_over_to_the_live_one(procs, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    p = procs(**FAST)
    url = serve(p, data)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    p.start("worker", "worker", "examples.registry:registry", "--api-url", dead, "--api-url", url,
            "--poll-wait", "1", "--concurrency", "2")
    with httpx.Client(base_url=url, timeout=10) as client:
        r = client.post("/v1/batches", json={"jobs": [{"name": "Echo", "args": {"n": i}} for i in range(4)]})
        assert r.status_code == 201, r.text
        assert finished(client, r.json()["id"], p)["status"] == "completed", p.output()
    assert f"{dead}/v1/queues/default/claim: ConnectError" in p.log("worker")


HOLD_JOBS = '''
"""Jobs that record each run and hold until the test releases them."""
import os
import pathlib
import time

from batchq import Registry

registry = Registry()
HERE = pathlib.Path(os.environ["HOLD_DIR"])


def note(line: str) -> None:
    with open(HERE / "runs.log", "a") as f:
        f.write(line + "\\n")


@registry.job("Hold")
def hold(args, ctx):
    note(f"start {ctx.job_id} {ctx.attempt}")
    while not (HERE / "release").exists():
        time.sleep(0.05)
    note(f"end {ctx.job_id} {ctx.attempt}")
    return ctx.position
'''


def test_reports_survive_an_api_restart_and_no_job_runs_twice(procs, tmp_path: Path):
    data, project = tmp_path / "data", tmp_path / "project"
    data.mkdir()
    project.mkdir()
    (project / "holdjobs.py").write_text(HOLD_JOBS)
    runs = project / "runs.log"
    port = free_port()
    # The worker knows the API by the comma-separated variable.
    p = procs(**FAST, HOLD_DIR=str(project), BATCHQ_API_URL=f"http://127.0.0.1:{port}")
    url = serve(p, data, port=port)

    def lines(kind: str) -> list[str]:
        return [line for line in (runs.read_text().splitlines() if runs.exists() else []) if line.startswith(kind)]

    p.start("worker", "worker", "holdjobs:registry", "--concurrency", "4", "--poll-wait", "1", "--report-retry-s", "120",
            cwd=project)
    with httpx.Client(base_url=url, timeout=10) as client:
        # Leases far longer than the outage: the restart must not expire them.
        jobs = [{"name": "Hold", "timeout_s": 120, "max_attempts": 2} for _ in range(4)]
        r = client.post("/v1/batches", json={"jobs": jobs})
        assert r.status_code == 201, r.text
        batch_id = r.json()["id"]
        wait_for(lambda: len(lines("start")) == 4, 30, "all four jobs to run", p)

        # The API goes away; the jobs finish while it is down, so their reports cannot land.
        p.stop("server")
        (project / "release").touch()
        wait_for(lambda: len(lines("end")) == 4, 30, "the jobs to finish", p)
        wait_for(lambda: "/v1/reports: ConnectError" in p.log("worker"), 30, "a report to fail", p)
        time.sleep(2)  # a few seconds of outage: reports back off meanwhile

        # The API comes back on the same port and database: the reports get through.
        serve(p, data, port=port, name="server-again")
        done = finished(client, batch_id, p, timeout=60)
        assert done["status"] == "completed" and done["completed"] == 4, p.output()
        jobs_after = client.get(f"/v1/batches/{batch_id}/jobs").json()["jobs"]
        assert [j["attempts"] for j in jobs_after] == [1, 1, 1, 1], jobs_after

    started = [line.split() for line in lines("start")]
    assert len({job_id for _, job_id, _ in started}) == 4 and {a for _, _, a in started} == {"1"}, runs.read_text()
    assert len(lines("end")) == 4
    assert "could not report" not in p.log("worker"), p.output()

"""The TypeScript client and worker (clients/typescript) against a real server process.

Starts the API with uvicorn on a free port (SQLite in a temporary directory), installs the
package's dev dependencies with `npm ci` when node_modules is missing or was installed from
another package-lock.json, and runs `npm test` (node's test runner) with BATCHQ_TEST_API_URL
pointing at the server. Node.js 20+ and npm are required: without them this test fails, it
never skips.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clients" / "typescript"
# Written into node_modules after `npm ci`: the hash of the lock file it installed.
STAMP = PACKAGE / "node_modules" / ".batchq-lock-sha256"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the TypeScript client's tests need Node.js 20+ and npm")
    return path


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A real API process on a free port; its URL. Fast retries so retry tests stay short."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHQ_")}
    env.update(
        BATCHQ_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/batchq.db",
        BATCHQ_BROKER_URL="sql",
        BATCHQ_RETRY_BACKOFF_BASE_S="0.1",
        BATCHQ_RETRY_BACKOFF_MAX_S="0.5",
        BATCHQ_REAPER_INTERVAL_S="0.2",
        BATCHQ_POLL_INTERVAL_S="0.05",
    )
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the server exited\n{tail(log)}"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not answer /healthz in 30 s\n{tail(log)}"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out, err = _text(exc.stdout), _text(exc.stderr)
        pytest.fail(f"{' '.join(cmd)} took over {timeout:.0f} s\n{out[-8000:]}\n{err[-4000:]}")


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired keeps bytes even when the run asked for text.
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def install(npm: str, env: dict[str, str]) -> None:
    """`npm ci` unless node_modules was installed from this very package-lock.json."""
    wanted = hashlib.sha256((PACKAGE / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    done = run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], env, timeout=240)
    if done.returncode != 0:
        pytest.fail(f"npm ci failed ({done.returncode})\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    STAMP.write_text(wanted)


def failures(tap: str) -> str:
    """Each failing test of node's TAP output with its details (they may be far from the end)."""
    lines = tap.splitlines()
    picked: list[str] = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("not ok"):
            picked += [*lines[max(0, i - 1) : i + 40], "..."]
    return "\n".join(picked)[-20000:] or "(none reported)"


@pytest.mark.timeout(300)
def test_typescript_client_and_worker(server: str) -> None:
    node, npm = tool("node"), tool("npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    major = int(version.lstrip("v").split(".")[0] or 0)
    assert major >= 20, f"the TypeScript client needs Node.js 20+, found {version}"

    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHQ_")}
    env["BATCHQ_TEST_API_URL"] = server
    install(npm, env)
    done = run([npm, "test"], env, timeout=240)
    if done.returncode != 0:
        pytest.fail(
            f"npm test failed ({done.returncode})\n--- failing tests\n{failures(done.stdout)}\n"
            f"--- end of the output\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    summary = dict(re.findall(r"^# (tests|pass|fail) (\d+)$", done.stdout, re.MULTILINE))
    assert summary.get("fail") == "0" and int(summary.get("pass", 0)) > 0, done.stdout[-4000:]

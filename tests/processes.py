"""Real processes for end-to-end tests: `batchq serve`, workers, the terminal client.

Output goes to files in the test's temporary directory and is shown when a test fails;
every process started is ended (the `procs` fixture of conftest.py).
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from app.cli import command_line

ROOT = Path(__file__).resolve().parents[1]
FINISHED = ("completed", "completed_with_failures", "failed", "cancelled")

FAST = dict(
    BATCHQ_REAPER_INTERVAL_S="0.1",
    BATCHQ_POLL_INTERVAL_S="0.05",
    BATCHQ_RETRY_BACKOFF_BASE_S="0.05",
    BATCHQ_RETRY_BACKOFF_MAX_S="0.2",
    BATCHQ_ALLOW_PRIVATE_CALLBACKS="true",  # receivers of the tests listen on 127.0.0.1
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Starts processes with output in files, and always ends them."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp = tmp
        self.env = env
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *args: str, cwd: Path = ROOT, command: Sequence[str] | None = None) -> subprocess.Popen:
        """Run `batchq ARGS` (or `command` ARGS) with its output in NAME.log."""
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            argv = [*(command or command_line()), *args]
            proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str, timeout: float = 30) -> None:
        """SIGTERM the process started as NAME and wait until it has exited."""
        for proc, log in self.procs:
            if log.name == f"{name}.log" and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=timeout)

    def output(self) -> str:
        return "\n".join(f"--- {log.name} (exit {p.poll()})\n{log.read_text(errors='replace')[-3000:]}" for p, log in self.procs)

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def clean_env(**settings: str) -> dict[str, str]:
    """The parent's environment without BATCHQ_* (so only these settings apply)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHQ_")}
    env.update(settings)
    return env


def wait_for(check: Callable[[], object], timeout: float, what: str, procs: Processes) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{procs.output()}")


def wait_healthy(client: httpx.Client, server: subprocess.Popen, procs: Processes) -> None:
    def up() -> bool:
        assert server.poll() is None, f"the server exited\n{procs.output()}"
        try:
            return client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, "the server to answer /healthz", procs)


def serve(procs: Processes, cwd: Path, port: int | None = None, name: str = "server") -> str:
    """Start `batchq serve` (on a free port unless given) and wait until it answers; returns its URL."""
    port = port or free_port()
    server = procs.start(name, "serve", "--port", str(port), "--no-access-log", cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as client:
        wait_healthy(client, server, procs)
    return url


def finished(client: httpx.Client, batch_id: str, procs: Processes, timeout: float = 30) -> dict:
    def done() -> dict | None:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        return batch if batch["status"] in FINISHED else None

    return wait_for(done, timeout, f"batch {batch_id} to finish", procs)  # type: ignore[return-value]



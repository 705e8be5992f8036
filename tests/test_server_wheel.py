"""The server as a user installs it: wheels of the SDK and the server in a fresh venv (not
editable, run from outside the repository), where `batchq migrate` finds the migrations that
the wheel carries (migrations/ mapped into the package as app.migrations) and `batchq serve`
migrates a new database on start-up."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from app.store.sql_schema import metadata
from conftest import BACKENDS
from processes import ROOT, free_port

pytestmark = [
    pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite backend not selected"),
    pytest.mark.timeout(600),  # building and installing the wheels takes a while on a busy machine
]
HEAD = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
TABLES = set(metadata.tables) | {"alembic_version"}


def run(argv: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHQ_", "PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(argv, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=timeout)


def copy_sources(to: Path) -> tuple[Path, Path]:
    """The files the two wheels are built from, copied so that building leaves the tree clean."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    sdk, server = to / "sdk", to / "server"
    shutil.copytree(ROOT / "clients" / "python", sdk, ignore=skip)
    server.mkdir()
    shutil.copy(ROOT / "pyproject.toml", server)
    for folder in ("app", "migrations"):
        shutil.copytree(ROOT / folder, server / folder, ignore=skip)
    return sdk, server


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("wheel-venv")
    sdk, server = copy_sources(home / "src")
    # No build isolation: the test extras bring a setuptools that builds both (and it is faster).
    built = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                 "--wheel-dir", str(home / "wheels"), str(sdk), str(server)], cwd=home)
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = sorted(p.name for p in (home / "wheels").glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["batchq", "batchq_server"], wheels

    # A venv of its own, filled by this pip (`--python`: ensurepip would take longer than the rest).
    # Both wheels named as files: `batchq` comes from here, never from an index.
    venv = home / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=home)
    assert made.returncode == 0, made.stderr
    installed = run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                     "--disable-pip-version-check", *(str(home / "wheels" / w) for w in wheels)], cwd=home)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_the_installed_server_carries_its_migrations(wheel_venv: Path, tmp_path: Path):
    probe = textwrap.dedent("""
        import json, app, batchq
        from app.store import migrate
        print(json.dumps({"app": app.__file__, "batchq": batchq.__file__, "migrations": str(migrate.MIGRATIONS),
                          "versions": sorted(p.name for p in (migrate.MIGRATIONS / "versions").glob("0*.py"))}))
    """)
    seen = run([str(wheel_venv / "bin" / "python"), "-c", probe], cwd=tmp_path)
    assert seen.returncode == 0, seen.stderr
    facts = json.loads(seen.stdout)
    for key in ("app", "batchq", "migrations"):  # installed copies, not the repository's (not editable)
        assert facts[key].startswith(str(wheel_venv)), facts
    assert facts["migrations"].endswith("site-packages/app/migrations")
    assert facts["versions"] == sorted(p.name for p in (ROOT / "migrations" / "versions").glob("0*.py"))


def tables(db: Path) -> tuple[set[str], list[str]]:
    with sqlite3.connect(db) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")] if "alembic_version" in names else []
    return names, versions


def test_batchq_migrate_from_the_wheel(wheel_venv: Path, tmp_path: Path):
    db = tmp_path / "migrated.db"
    for _ in range(2):  # the second run finds the schema at head and changes nothing
        migrated = run([str(wheel_venv / "bin" / "batchq"), "migrate", "--database-url", f"sqlite+aiosqlite:///{db}"],
                       cwd=tmp_path, timeout=120)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "database migrated to head" in migrated.stdout
        names, versions = tables(db)
        assert TABLES <= names, TABLES - names
        assert versions == [HEAD]


def test_batchq_serve_from_the_wheel_migrates_on_start_up(wheel_venv: Path, tmp_path: Path):
    db, port, log = tmp_path / "served.db", free_port(), tmp_path / "serve.log"
    assert not db.exists()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHQ_", "PYTHON", "VIRTUAL_ENV"))}
    env = {**clean, "BATCHQ_DATABASE_URL": f"sqlite+aiosqlite:///{db}", "BATCHQ_PORT": str(port)}
    with open(log, "wb") as out:
        server = subprocess.Popen([str(wheel_venv / "bin" / "batchq"), "serve", "--no-access-log"], cwd=tmp_path, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, ready = time.monotonic() + 90, None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:  # BATCHQ_PORT was obeyed
            while ready is None and time.monotonic() < deadline:
                assert server.poll() is None, log.read_text()
                try:
                    reply = client.get("/readyz")
                    ready = reply if reply.status_code == 200 else None
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            assert ready is not None, log.read_text()
            assert ready.json() == {"status": "ok", "store": True, "broker": True}
            created = client.post("/v1/batches", json={"type": "parallel", "jobs": ["Noop"]})
            assert created.status_code == 201, created.text
        names, versions = tables(db)
        assert TABLES <= names, TABLES - names
        assert versions == [HEAD]
    finally:
        server.terminate()
        server.wait(timeout=30)

"""The dashboard's files: served by the API from the server package (the wheel carries them),
with a policy that lets the page load nothing from elsewhere. (The browser tests are in
test_dashboard.py; these need no browser.)"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx

from processes import ROOT

ASSETS = ROOT / "app" / "ui" / "assets"


async def test_the_page_and_its_assets_are_served_and_load_nothing_from_elsewhere():
    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    # The lifespan is not run: these routes need no store.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://batchq.test") as client:
        r = await client.get("/ui")
        assert r.status_code == 307 and r.headers["location"] == "/ui/"
        for path in ("/ui/", "/ui/batches/some-id", "/ui/queues"):
            r = await client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert '<base href="/ui/">' in r.text
            assert "default-src 'self'" in r.headers["content-security-policy"]
        for asset in ASSETS.iterdir():
            r = await client.get(f"/ui/assets/{asset.name}")
            assert r.status_code == 200 and r.headers["cache-control"] == "no-cache", asset.name
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", r.text.replace("http://www.w3.org/2000/svg", "")), asset.name
        assert (await client.get("/ui/assets/missing.js")).status_code == 404
    assert not [p for p in app.openapi()["paths"] if p.startswith("/ui")]  # not part of the API


def test_the_installed_server_carries_the_dashboard(tmp_path: Path):
    """A wheel of the server holds the page and every asset (package data, not only the source tree)."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for name in ("app", "migrations"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("batchq_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {"app/ui/__init__.py", "app/ui/index.html"} | {f"app/ui/assets/{p.name}" for p in ASSETS.iterdir()}
    assert wanted <= names, sorted(wanted - names)

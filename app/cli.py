"""The server's commands of `batchq`: serve, migrate, openapi.

The `batchq` command itself belongs to the SDK (`batchq.cli`, with `worker` and `batch`);
the server adds these three through the entry-point group `batchq.commands`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any


def command_line() -> list[str]:
    """How to run `batchq` from Python (the console script beside this interpreter, else -m)."""
    import shutil

    script = shutil.which("batchq", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "batchq"]


def cmd_serve(args: argparse.Namespace) -> int:
    import logging.config
    import os
    import shutil
    import tempfile

    import uvicorn

    from app.config import get_settings
    from app.telemetry import logs
    from app.telemetry.metrics import MULTIPROC_ENV, prepare_dir

    settings = get_settings()
    # Several processes keep their metrics in files that /metrics reads together
    # (prometheus_client's multiprocess mode): a fresh directory for this run, unless given.
    made = None
    if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        made = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="batchq-metrics-")
    if os.environ.get(MULTIPROC_ENV):
        prepare_dir(os.environ[MULTIPROC_ENV])
    log_config = logs.uvicorn_config(settings.log_format, args.log_level)
    logging.config.dictConfig(log_config)
    logging.captureWarnings(True)  # warnings as log lines too (JSON when the lines are)
    if os.environ.get(MULTIPROC_ENV):
        logging.getLogger("batchq.serve").info("metrics of %d processes kept in %s", args.workers, os.environ[MULTIPROC_ENV])
    try:
        # The SQL store migrates its schema on start-up (store init), so the embedded default
        # (SQLite ./batchq.db + SQL queue) needs no separate `batchq migrate`.
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=args.access_log,
            log_config=log_config,
        )
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.config import get_settings

    url = args.database_url or get_settings().database_url
    if url.startswith(("redis://", "rediss://", "unix://")):
        print("the Redis store has no schema to migrate; nothing to do")
        return 0

    async def run() -> None:
        from app.store.migrate import upgrade
        from app.store.sql import make_engine

        engine = make_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"database migrated to head: {_redact(url)}")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    for path in write_openapi(Path(args.out)):
        print(f"wrote {path}")
    return 0


def render_json(document: dict) -> str:
    """The committed form: pretty, sorted keys, trailing newline (stable diffs)."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def openapi_documents() -> dict[str, str]:
    """File name -> content of what `batchq openapi` writes."""
    from app.config import Settings
    from app.main import create_app
    from app.api.message_schema import MESSAGE_SCHEMA, STREAM_ENTRY_SCHEMA

    app = create_app(Settings())  # no lifespan runs: nothing connects anywhere
    return {
        "openapi.json": render_json(app.openapi()),
        "message.schema.json": render_json(MESSAGE_SCHEMA),
        "stream-entry.schema.json": render_json(STREAM_ENTRY_SCHEMA),
    }


def write_openapi(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in openapi_documents().items():
        path = out / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url


# ---- commands added to `batchq` (the SDK's command) through the entry-point group
# `batchq.commands` (see the [project.entry-points] of pyproject.toml)


def add_serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the API (settings from BATCHQ_* environment variables)")
    serve.add_argument("--host", help="default: BATCHQ_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: BATCHQ_PORT or 8000")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.set_defaults(func=cmd_serve)


def add_migrate(sub: Any) -> None:
    migrate = sub.add_parser("migrate", help="bring a SQL database's schema up to date")
    migrate.add_argument("--database-url", help="default: BATCHQ_DATABASE_URL")
    migrate.set_defaults(func=cmd_migrate)


def add_openapi(sub: Any) -> None:
    openapi = sub.add_parser("openapi", help="write openapi.json and message.schema.json")
    openapi.add_argument("--out", default="openapi", help="directory (default: openapi/)")
    openapi.set_defaults(func=cmd_openapi)


if __name__ == "__main__":
    from batchq.cli import main

    sys.exit(main())

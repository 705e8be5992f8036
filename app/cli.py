"""The `batchq` command: serve, migrate, worker, openapi."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path


def command_line() -> list[str]:
    """How to run `batchq` from Python (the console script beside this interpreter, else -m)."""
    import shutil

    script = shutil.which("batchq", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "app.cli"]


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.config import get_settings

    settings = get_settings()
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
    )
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


def cmd_worker(args: argparse.Namespace) -> int:
    from app.worker import Worker, load_registry

    registry = load_registry(args.registry)
    worker = Worker(
        args.api_url,
        registry,
        queues=args.queue or ["default"],
        concurrency=args.concurrency,
        broker_url=args.broker_url,
        prefix=args.prefix,
        poll_wait_s=args.poll_wait,
        api_token=args.api_token,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stops = 0

        def on_signal() -> None:
            nonlocal stops
            stops += 1
            if stops > 1:  # a second Ctrl-C: leave now, the leases will expire
                os._exit(130)
            logging.getLogger("batchq.worker").info("stopping: finishing running jobs (signal again to quit now)")
            worker.request_stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await worker.run()

    asyncio.run(run())
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """A small HTTP client for people at a terminal: create, show, follow a batch."""
    import httpx

    headers = {"Authorization": f"Bearer {args.api_token}"} if args.api_token else {}
    with httpx.Client(base_url=args.api_url.rstrip("/"), headers=headers, timeout=30) as client:
        if args.action == "create":
            text = sys.stdin.read() if args.target == "-" else Path(args.target).read_text(encoding="utf-8")
            reply = client.post("/v1/batches", content=text, headers={"Content-Type": "application/json"})
        elif args.action == "watch":
            with client.stream("GET", f"/v1/batches/{args.target}/events", timeout=None) as reply:
                if reply.status_code != 200:
                    reply.read()
                    print(reply.text, file=sys.stderr)
                    return 1
                for line in reply.iter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        print(f"{event['at']} {event['type']:<24} {json.dumps(event['data'], separators=(',', ':'))}")
            return 0
        else:
            path = {"get": "", "progress": "/progress", "results": "/results", "cancel": "/cancel", "retry": "/retry"}
            url = f"/v1/batches/{args.target}{path[args.action]}"
            reply = client.post(url) if args.action in ("cancel", "retry") else client.get(url)
    print(json.dumps(reply.json(), indent=2))
    return 0 if reply.status_code < 400 else 1


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchq", description="Job orchestration: batches, chains, sagas.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (settings from BATCHQ_* environment variables)")
    serve.add_argument("--host", help="default: BATCHQ_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: BATCHQ_PORT or 8000")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="bring a SQL database's schema up to date")
    migrate.add_argument("--database-url", help="default: BATCHQ_DATABASE_URL")
    migrate.set_defaults(func=cmd_migrate)

    worker = sub.add_parser("worker", help="run jobs with the handlers of a registry")
    worker.add_argument("registry", help="module:attribute of a batchq Registry, e.g. examples.registry:registry")
    worker.add_argument("--queue", action="append", help="a queue to serve (repeat for several; default: default)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once")
    worker.add_argument("--api-url", default=os.environ.get("BATCHQ_API_URL", "http://127.0.0.1:8000"))
    worker.add_argument(
        "--broker-url",
        default=os.environ.get("BATCHQ_WORKER_BROKER_URL"),
        help="redis://… to read the Redis streams directly instead of claiming over HTTP",
    )
    worker.add_argument("--prefix", default=os.environ.get("BATCHQ_REDIS_PREFIX", "batchq"), help="Redis key prefix")
    worker.add_argument(
        "--api-token", default=os.environ.get("BATCHQ_API_TOKEN") or None, help="bearer token (default: BATCHQ_API_TOKEN)"
    )
    worker.add_argument("--poll-wait", type=float, default=5.0, help="long-poll wait in seconds")
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(func=cmd_worker)

    batch = sub.add_parser("batch", help="create, show, follow and steer batches over the API")
    batch.add_argument("action", choices=["create", "get", "progress", "results", "watch", "cancel", "retry"])
    batch.add_argument("target", help="create: a JSON file (or - for stdin); otherwise: the batch id")
    batch.add_argument("--api-url", default=os.environ.get("BATCHQ_API_URL", "http://127.0.0.1:8000"))
    batch.add_argument("--api-token", default=os.environ.get("BATCHQ_API_TOKEN") or None)
    batch.set_defaults(func=cmd_batch)

    openapi = sub.add_parser("openapi", help="write openapi.json and message.schema.json")
    openapi.add_argument("--out", default="openapi", help="directory (default: openapi/)")
    openapi.set_defaults(func=cmd_openapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())

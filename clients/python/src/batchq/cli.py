"""The `batchq` command: `worker` and `batch …` here, more from installed plugins.

Plugins: a distribution adds commands through the entry-point group `batchq.commands`. Each
entry point is named after its command and points at a function `add(subparsers)` that adds
the command's parser with a `func` default (parsed args -> exit code). The server
(`batchq-server`) adds `serve`, `migrate` and `openapi` this way. A plugin is imported only
when its command runs, or for `--help`: `batchq worker app.jobs:registry` imports nothing
but this package, so a project's own `app` package never meets the server's.

Errors a person can fix (a missing file, an API that does not answer, an API error) are one
line on stderr, `error: …`, and exit 1; never a traceback.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from batchq._base import DEFAULT_API_URL, DEFAULT_REPORT_RETRY_S
from batchq._version import __version__
from batchq.errors import ApiUnreachable, BatchqError
from batchq.logs import FORMATS
from batchq.logs import configure as configure_logging

PLUGIN_GROUP = "batchq.commands"
SERVER_COMMANDS = ("serve", "migrate", "openapi")  # provided by batchq-server
SDK_COMMANDS = ("worker", "batch")
BATCH_ACTIONS = ("create", "get", "progress", "results", "watch", "cancel", "retry")


class CliError(Exception):
    """A problem the person at the terminal can fix: printed as one line, exit 1."""


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


# ---- shared options ---------------------------------------------------------------------


def api_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--api-url", action="append", metavar="URL",
        help="the API; repeat it or separate URLs by commas to fail over between replicas "
             f"(default: BATCHQ_API_URL or {DEFAULT_API_URL})",
    )
    options.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY' (default: BATCHQ_API_KEY)")
    options.add_argument("--api-token", help="deprecated: use --api-key (default: BATCHQ_API_TOKEN)")
    return options


def api_urls(args: argparse.Namespace) -> list[str]:
    return list(args.api_url or [env("BATCHQ_API_URL", DEFAULT_API_URL) or DEFAULT_API_URL])


def api_key(args: argparse.Namespace) -> str | None:
    if args.api_token and not args.api_key:
        print("warning: --api-token is deprecated: use --api-key", file=sys.stderr)
    return args.api_key or args.api_token or env("BATCHQ_API_KEY") or env("BATCHQ_API_TOKEN")


# ---- worker -----------------------------------------------------------------------------


def add_worker(sub: Any) -> None:
    worker = sub.add_parser("worker", parents=[api_options()], help="run jobs with the handlers of a registry")
    worker.add_argument("registry", help="module:attribute of a batchq Registry, e.g. myapp.jobs:registry")
    worker.add_argument("--queue", action="append", help="a queue to serve (repeat for several; default: default)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default: 1)")
    worker.add_argument("--prefetch", type=int, default=None,
                        help="messages started ahead of a free slot (default: as many as --concurrency; "
                             "0 for long jobs spread over many workers)")  # fmt: skip
    worker.add_argument(
        "--broker-url", default=env("BATCHQ_WORKER_BROKER_URL"),
        help="redis://… (or redis+cluster://host:port,… for a Redis Cluster) to read the Redis streams "
             "directly instead of claiming over HTTP (needs batchq[redis]; default: BATCHQ_WORKER_BROKER_URL)",
    )
    worker.add_argument("--prefix", help=argparse.SUPPRESS)  # ignored: the API names the streams now
    worker.add_argument("--poll-wait", type=float, default=5.0, help="long-poll wait in seconds (default: 5)")
    worker.add_argument(
        "--report-retry-s", type=float, default=env("BATCHQ_REPORT_RETRY_S", str(DEFAULT_REPORT_RETRY_S)),
        help="keep retrying a report or a start this long while the API is away "
             f"(default: BATCHQ_REPORT_RETRY_S or {DEFAULT_REPORT_RETRY_S:.0f})",
    )
    worker.add_argument("--worker-id", help="how this worker is named in attempts (default: host:pid:random)")
    worker.add_argument("--log-level", default=env("BATCHQ_LOG_LEVEL", "info"), help="default: BATCHQ_LOG_LEVEL or info")
    worker.add_argument(
        "--log-format", choices=FORMATS, default=env("BATCHQ_LOG_FORMAT", "text"),
        help="text (readable) or json (one object per line; default: BATCHQ_LOG_FORMAT or text)",
    )
    worker.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from batchq.worker import Worker, load_registry

    if args.log_format not in FORMATS:
        raise CliError(f"BATCHQ_LOG_FORMAT is one of {', '.join(FORMATS)}, got {args.log_format!r}")
    configure_logging(args.log_level, args.log_format)
    try:
        registry = load_registry(args.registry)
    except (ImportError, ValueError) as exc:
        raise CliError(f"cannot load the registry {args.registry}: {exc}") from None
    try:
        worker = Worker(
            api_urls(args),
            registry,
            queues=args.queue or ["default"],
            concurrency=args.concurrency,
            prefetch=args.prefetch,
            broker_url=args.broker_url,
            poll_wait_s=args.poll_wait,
            api_key=api_key(args),
            report_retry_s=args.report_retry_s,
            worker_id=args.worker_id,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None

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


# ---- batch ------------------------------------------------------------------------------


def add_batch(sub: Any) -> None:
    batch = sub.add_parser("batch", parents=[api_options()], help="create, show, follow and steer batches over the API")
    batch.add_argument("action", choices=BATCH_ACTIONS)
    batch.add_argument("target", help="create: a JSON file (or - for stdin); otherwise: the batch id")
    batch.set_defaults(func=cmd_batch)


def read_definition(target: str) -> dict[str, Any]:
    name = "stdin" if target == "-" else target
    try:
        text = sys.stdin.read() if target == "-" else Path(target).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"cannot read {name}: not UTF-8 text") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{name} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(body, dict):
        raise CliError(f"{name} must hold a JSON object (a batch definition), not {type(body).__name__}")
    return body


def cmd_batch(args: argparse.Namespace) -> int:
    from batchq.client import Client

    body = read_definition(args.target) if args.action == "create" else None
    with Client(api_urls(args), api_key=api_key(args)) as client:
        if args.action == "watch":
            for event in client.stream_events(args.target):
                data = json.dumps(event.get("data"), separators=(",", ":"))
                print(f"{event.get('at')} {event.get('type', ''):<24} {data}", flush=True)
            return 0
        calls: dict[str, Callable[[], Any]] = {
            "create": lambda: client.create_batch(body),
            "get": lambda: client.get_batch(args.target),
            "progress": lambda: client.progress(args.target),
            "results": lambda: client.results(args.target),
            "cancel": lambda: client.cancel(args.target),
            "retry": lambda: client.retry(args.target),
        }
        print(json.dumps(calls[args.action](), indent=2))
    return 0


# ---- the command ------------------------------------------------------------------------


def plugins() -> dict[str, EntryPoint]:
    """Installed command plugins by name (not imported)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name not in SDK_COMMANDS:
            found.setdefault(ep.name, ep)
    return found


def build_parser(load: dict[str, EntryPoint]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchq", description="batchq: batches, chains and sagas of jobs, and their workers.")
    parser.add_argument("--version", action="version", version=f"batchq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_worker(sub)
    add_batch(sub)
    for name, ep in sorted(load.items()):
        try:
            add = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the other commands
            print(f"warning: cannot load the command {name} ({ep.value}): {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        add(sub)
    return parser


def first_command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = first_command(argv)
    installed = plugins()
    if command in SERVER_COMMANDS and command not in installed:
        print(f"error: `batchq {command}` comes with the batchq server, which is not installed here "
              "(pip install batchq-server)", file=sys.stderr)
        return 2
    if command in SDK_COMMANDS:
        load: dict[str, EntryPoint] = {}
    elif command in installed:
        load = {command: installed[command]}
    else:  # --help, or an unknown command: show everything there is
        load = installed
    args = build_parser(load).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except BatchqError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
    except ApiUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())

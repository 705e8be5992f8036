"""Log output of the `batchq` command: readable text (default) or JSON lines.

The worker passes the job's coordinates as `extra` fields (batch_id, job_id, attempt, name,
worker, …); the JSON format writes them as keys of the line, next to ts, level, logger and
message, so a log pipeline can follow one job or one batch across workers.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

# Record attributes written into JSON lines when a log call passed them in `extra`.
FIELDS = ("batch_id", "job_id", "attempt", "job_name", "kind", "queue", "worker", "outcome", "duration_s", "error", "count")
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    fields: tuple[str, ...] = FIELDS  # written when a record has them (the server adds its own)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in self.fields:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Send every log record at `level` and above to `stream` (stderr) in `fmt` ("text" or "json")."""
    if fmt not in FORMATS:
        raise ValueError(f"log format is one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    # httpx logs every request at INFO: that is a poll each few seconds per queue. Keep it
    # for DEBUG, where it belongs.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)

"""The Celery side of bench/compare_celery.py: a no-op task and a chord body, on Redis as
broker and result backend (its own database number). Celery is a bench-only extra
(`pip install -e '.[bench]'`), never a runtime dependency of batchq."""
from __future__ import annotations

import os

from celery import Celery

REDIS = os.environ.get("BATCHQ_BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/14")

app = Celery("bench", broker=REDIS, backend=REDIS)
app.conf.update(task_default_queue="bench", worker_hijack_root_logger=False, result_expires=600)


@app.task
def noop() -> None:
    return None


@app.task
def done(results: list) -> int:
    return len(results)

"""Prometheus metrics (prometheus_client), right with one process, N processes and N replicas.

Each replica exports its own counts and Prometheus sums them. Within a replica run as
`batchq serve --workers N`, every process writes its values to files in
PROMETHEUS_MULTIPROC_DIR and /metrics, whichever process answers it, reads them all
(prometheus_client's multiprocess mode; `batchq serve` makes that directory).

Counts are taken after an operation has committed, never inside it: a store may run an
operation more than once (an optimistic retry), and a metric must not count the tries
(see Measures). Labels hold only bounded values: a route template, never an id.
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from app.config import Settings
from app.domain.models import Batch, Job
from app.domain.states import BatchType

# The `_created` series of counters cannot be merged across processes; none are exported.
prometheus_client.disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER_QUEUES = "_other"

# Seconds. Jobs and batches run from milliseconds to hours.
LONG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The metrics of one API process (one app), registered in their own registry."""

    def __init__(self, settings: Settings | None = None):
        self.queues = QueueLabels(settings or Settings())
        self.registry = CollectorRegistry()
        r = self.registry
        self.batches_created = Counter("batchq_batches_created", "Batches and chains created.", ["type"], registry=r)
        self.messages_delivered = Counter("batchq_messages_delivered", "Attempts handed to workers (started).", registry=r)
        self.reports = Counter("batchq_reports", "Worker reports applied, by outcome (duplicates and refusals included).",
                               ["outcome", "result"], registry=r)  # fmt: skip
        self.leases_expired = Counter("batchq_leases_expired", "Running attempts whose lease ran out.", registry=r)
        self.messages_republished = Counter(
            "batchq_messages_republished", "Messages written again because the broker had lost them (reconciler).", registry=r
        )
        self.request_seconds = Histogram(
            "batchq_http_request_duration_seconds", "HTTP requests by route template, method and status class.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.requests_in_progress = Gauge(
            "batchq_http_requests_in_progress", "HTTP requests being answered.", registry=r, multiprocess_mode="livesum"
        )
        self.queue_wait_seconds = Histogram(
            "batchq_queue_wait_seconds", "From a job's message being due to its attempt starting on a worker.",
            ["queue"], buckets=LONG_BUCKETS, registry=r,
        )  # fmt: skip
        self.job_run_seconds = Histogram(
            "batchq_job_run_seconds", "From an attempt starting to its report (completed or failed).",
            ["queue", "outcome"], buckets=LONG_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "batchq_batch_duration_seconds", "From a batch's creation to its end, by type and final status.",
            ["type", "status"], buckets=LONG_BUCKETS, registry=r,
        )  # fmt: skip
        # Series of known label values exist from the start (at 0), so a rate never misses its first step.
        for type_ in BatchType:
            self.batches_created.labels(type_.value)
        for outcome, results in (("completed", ("completed", "duplicate", "refused")),
                                 ("failed", ("failed", "queued", "duplicate", "refused"))):  # fmt: skip
            for result in results:
                self.reports.labels(outcome, result)

    def exposition(self, queues: list[dict[str, Any]]) -> bytes:
        """The text format of every metric: this process's (or all processes' in multiprocess
        mode) and the queue gauges, which are read from the store and broker at scrape time."""
        path = multiproc_dir()
        if path is None:
            counted = generate_latest(self.registry)
        else:
            forget_dead_processes(path)
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path)
            counted = generate_latest(merged)
        gauges = CollectorRegistry()
        gauges.register(QueueGauges(self.queues.overview(queues)))
        return counted + generate_latest(gauges)


class QueueLabels:
    """The `queue` label: declared queues and `default` by name; undeclared ones by name too,
    up to BATCHQ_METRICS_MAX_QUEUES of them in a process, then `_other` (clients may make
    queues, and a label must stay bounded)."""

    def __init__(self, settings: Settings):
        self.declared = set(settings.queues) | {"default"}
        self.limit = settings.metrics_max_queues
        self.seen: set[str] = set()

    def __call__(self, queue: str) -> str:
        if queue in self.declared or queue in self.seen:
            return queue
        if len(self.seen) < self.limit:
            self.seen.add(queue)
            return queue
        return OTHER_QUEUES

    def overview(self, queues: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
        """Sum queue_overview() rows by label."""
        out: dict[str, dict[str, float]] = {}
        for q in queues:
            row = out.setdefault(self(q["name"]), {"depth": 0, "running": 0, "queued": 0, "oldest_age_s": 0.0})
            for key in ("depth", "running", "queued"):
                row[key] += q[key]
            row["oldest_age_s"] = max(row["oldest_age_s"], q["oldest_age_s"])
        return out


class QueueGauges:
    """The queue gauges of one scrape (a collector, so that they are never merged across
    processes: every process reads the same store)."""

    GAUGES = (
        ("batchq_queue_depth", "Messages waiting in a queue.", "depth"),
        ("batchq_jobs_queued", "Jobs the store holds as queued (a message is on its way).", "queued"),
        ("batchq_jobs_in_flight", "Jobs running on a worker.", "running"),
        ("batchq_queue_oldest_age_seconds", "Age of the oldest waiting message.", "oldest_age_s"),
    )

    def __init__(self, rows: dict[str, dict[str, float]]):
        self.rows = rows

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, help_text, key in self.GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["queue"])
            for queue, row in sorted(self.rows.items()):
                family.add_metric([queue], row[key])
            yield family


class Measures:
    """What one store operation measured, kept from the try that committed: the operation
    calls `start_try()` first thing, and `record()` runs once the store has committed."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.samples: list[tuple[Histogram, float, tuple[str, ...]]] = []
        self.ended: list[Batch] = []

    def start_try(self) -> None:
        self.samples.clear()
        self.ended.clear()

    def queue_wait(self, job: Job, now: float) -> None:
        due = job.available_at if job.available_at is not None else job.queued_at
        if due is not None:
            self.samples.append((self.metrics.queue_wait_seconds, max(0.0, now - due), (self.metrics.queues(job.queue),)))

    def job_run(self, job: Job, now: float, outcome: str) -> None:
        if job.started_at is not None:
            labels = (self.metrics.queues(job.queue), outcome)
            self.samples.append((self.metrics.job_run_seconds, max(0.0, now - job.started_at), labels))

    def batch_ended(self, batch: Batch) -> None:
        self.ended.append(batch)

    def record(self) -> None:
        for histogram, value, labels in self.samples:
            histogram.labels(*labels).observe(value)
        for batch in self.ended:
            took = max(0.0, (batch.finished_at or batch.updated_at) - batch.created_at)
            self.metrics.batch_seconds.labels(batch.type.value, batch.status.value).observe(took)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


_PID_FILE = re.compile(r"_(\d+)\.db$")


def forget_dead_processes(path: str) -> None:
    """Drop the live gauges of processes that are gone (a server process that crashed and
    was replaced); their counters and histograms stay counted."""
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _PID_FILE.search(file)
        if match and not _alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_exits() -> None:
    """This process is ending: its live gauges leave the sums (multiprocess mode)."""
    path = multiproc_dir()
    if path is not None:
        mark_process_dead(os.getpid(), path)


def prepare_dir(path: str) -> None:
    """Before the processes of a server start: an empty directory (files of an earlier run
    would count again)."""
    os.makedirs(path, exist_ok=True)
    for file in glob.glob(os.path.join(path, "*.db")):
        os.remove(file)

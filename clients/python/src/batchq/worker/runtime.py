"""The worker runtime: N concurrent slots fed by one fetch loop per queue.

Each message is run by its handler while a heartbeat keeps its lease alive; the outcome is
reported through a Reporter (POST /v1/reports, coalescing outcomes that finish together).
A refused heartbeat (409: the lease expired, the batch was cancelled) means someone else
owns the job now: the worker stops and reports nothing.

Logs: a job's start and end at INFO (with batch_id, job_id, attempt, job_name, worker,
outcome and duration_s as structured fields), polls at DEBUG. Traces: a span per run in the
batch's trace, when OpenTelemetry is installed (batchq.worker.tracing).
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from batchq._base import DEFAULT_REPORT_RETRY_S, parse_urls
from batchq.client import AsyncClient
from batchq.errors import ApiUnreachable, BatchqError
from batchq.models import Message, ReportItem
from batchq.worker.context import JobContext, JobResult, PermanentError, epoch_seconds
from batchq.worker.registry import Handler, Registry, is_async
from batchq.worker.reporter import Reporter
from batchq.worker.sources import STREAM_SCHEMES, ClaimSource, Source, StreamSource
from batchq.worker.tracing import JobSpan, JobTracer

log = logging.getLogger("batchq.worker")


@dataclass
class WorkerStats:
    completed: int = 0
    failed: int = 0
    abandoned: int = 0  # a heartbeat or report was refused (or never got through): the attempt was no longer ours


class Worker:
    """Runs the handlers of a registry on the messages of one or more queues.

    `api_url` may name several API URLs (a list, or "a,b"): requests go to one and move on to
    the next when it cannot be reached or answers 502/503/504. Reports and starts are retried
    with backoff for `report_retry_s`, so an API restart does not lose finished work.

    `concurrency` handlers run at once. `prefetch` more messages (default: as many) are
    fetched and started ahead, so that a slot that frees finds its next job waiting rather
    than waiting a round trip to the broker and the API for it; their leases are kept alive
    meanwhile. For long jobs spread over many workers, prefetch 0 keeps a worker from holding
    jobs that an idle worker could run.
    """

    def __init__(
        self,
        api_url: str | Sequence[str],
        registry: Registry,
        queues: Sequence[str] = ("default",),
        concurrency: int = 1,
        prefetch: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        broker_url: str | None = None,
        poll_wait_s: float = 5.0,
        claim_timeout_s: float = 30.0,
        heartbeat_interval_s: float | None = None,
        worker_id: str | None = None,
        api_key: str | None = None,
        report_retry_s: float = DEFAULT_REPORT_RETRY_S,
        streams_refresh_s: float = 30.0,
        tracer_provider: Any = None,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if prefetch is not None and prefetch < 0:
            raise ValueError("prefetch must be 0 or more")
        if not queues:
            raise ValueError("give at least one queue")
        self.api_urls = parse_urls(api_url)
        self.registry = registry
        self.queues = list(dict.fromkeys(queues))
        self.concurrency = concurrency
        self.prefetch = concurrency if prefetch is None else prefetch
        self.transport = transport
        self.broker_url = broker_url
        self.poll_wait_s = poll_wait_s
        self.claim_timeout_s = claim_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s  # None: a third of the job's timeout_s
        self.api_key = api_key  # sent as a bearer token when the API requires one
        self.report_retry_s = report_retry_s
        self.streams_refresh_s = streams_refresh_s
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stats = WorkerStats()
        self.job_tracer = JobTracer(tracer_provider)  # OpenTelemetry's global provider unless given
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._holding: set[tuple[str, int]] = set()  # (job id, attempt) of the messages it holds
        self._fetchers: list[asyncio.Task[None]] = []
        self._last_activity = time.monotonic()
        self._stop_requested: asyncio.Event | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)  # handlers running
        self._held = asyncio.Semaphore(self.concurrency + self.prefetch)  # messages started and not yet run
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="batchq-job")
        self.client = AsyncClient(
            self.api_urls,
            api_key=self.api_key,
            transport=self.transport,
            timeout_s=self.poll_wait_s + 30,
            report_retry_s=self.report_retry_s,
            max_connections=self.concurrency + self.prefetch + len(self.queues) + 4,
        )
        self.reporter = Reporter(self.client)
        self.source: Source
        if self.broker_url and self.broker_url.startswith(STREAM_SCHEMES):
            self.source = StreamSource(self.client, self.worker_id, self.broker_url, self.claim_timeout_s,
                                       self.streams_refresh_s)
        else:
            self.source = ClaimSource(self.client, self.worker_id)
        self._fetchers = [asyncio.create_task(self._fetch_loop(q), name=f"fetch-{q}") for q in self.queues]
        self._started = True
        self._last_activity = time.monotonic()
        log.info(
            "worker %s serving %s (concurrency %d, %s) with jobs: %s",
            self.worker_id, ", ".join(self.queues), self.concurrency,
            "redis streams" if isinstance(self.source, StreamSource) else f"HTTP claim from {', '.join(self.api_urls)}",
            ", ".join(self.registry.names) or "(none)",
            extra={"worker": self.worker_id},
        )

    async def stop(self, timeout: float | None = None) -> None:
        """Stop fetching, let running jobs finish (cancel them after `timeout`), close clients.

        A fetch in progress is allowed to return: its messages are already started and
        are run rather than left to expire.
        """
        if not self._started:
            return
        self._stopping.set()
        await asyncio.gather(*self._fetchers, return_exceptions=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._tasks:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            _done, pending = await asyncio.wait(set(self._tasks), timeout=remaining)
            if pending and deadline is not None and time.monotonic() >= deadline:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        await self.source.close()
        await self.reporter.close()
        await self.client.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._started = False
        log.info("worker %s stopped (%s)", self.worker_id, self.stats, extra={"worker": self.worker_id})

    def request_stop(self) -> None:
        """Ask a running `run()` to stop gracefully (safe from a signal handler)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def run(self) -> None:
        """Serve until request_stop() is called."""
        self._stop_requested = asyncio.Event()
        await self.start()
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    async def run_until_idle(self, idle_s: float = 0.5, timeout: float = 30.0) -> WorkerStats:
        """Serve until nothing has arrived or run for `idle_s`, then stop (for tests and scripts)."""
        await self.start()
        deadline = time.monotonic() + timeout
        try:
            while True:
                now = time.monotonic()
                if not self._tasks and now - self._last_activity >= idle_s:
                    return self.stats
                if now > deadline:
                    raise TimeoutError(f"worker still busy after {timeout}s ({len(self._tasks)} jobs running)")
                await asyncio.sleep(0.02)
        finally:
            await self.stop()

    # ---- fetching ----------------------------------------------------------------------

    async def _fetch_loop(self, queue: str) -> None:
        # Each queue's fetcher takes at most its share of the slots, so a long-poll on an
        # empty queue never holds every slot while another queue has work.
        share = max(1, min(100, (self.concurrency + self.prefetch) // len(self.queues)))
        delay = 0.5
        while not self._stopping.is_set():
            if not await self._acquire_held():
                return
            taken = 1
            while taken < share and not self._held.locked():
                await self._held.acquire()
                taken += 1
            try:
                log.debug("polling %s for up to %d messages", queue, taken, extra={"queue": queue, "worker": self.worker_id})
                messages = await self.source.fetch(queue, taken, self.poll_wait_s)
                log.debug("%d messages from %s", len(messages), queue,
                          extra={"queue": queue, "count": len(messages), "worker": self.worker_id})
                delay = 0.5
            except Exception as exc:  # noqa: BLE001 - the API or Redis may be briefly away
                messages = []
                log.warning("fetching from %s failed: %s; retrying in %.1fs", queue, exc, delay,
                            extra={"queue": queue, "worker": self.worker_id})
                await self._sleep_unless_stopping(delay)
                delay = min(delay * 2, 5.0)
            for _ in range(max(0, taken - len(messages))):
                self._held.release()
            for message in messages:
                self._last_activity = time.monotonic()
                slot = _Slot(self._held)
                attempt = (message["job_id"], message["attempt"])
                if attempt in self._holding:  # handed out again (its entry read twice): it runs here already
                    slot.free()
                    continue
                self._holding.add(attempt)
                task = asyncio.create_task(self._run(message, slot), name=f"job-{message.get('job_id')}")
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._job_done, slot, attempt))

    def _job_done(self, slot: _Slot, attempt: tuple[str, int], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._holding.discard(attempt)
        slot.free()
        self._last_activity = time.monotonic()

    async def _acquire_held(self) -> bool:
        """Wait until the worker may hold one more message; False when it is stopping instead."""
        acquire = asyncio.ensure_future(self._held.acquire())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not acquire.done():
            acquire.cancel()
        try:
            await acquire
        except asyncio.CancelledError:
            return False
        if self._stopping.is_set():
            self._held.release()
            return False
        return True

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

    # ---- running one message -----------------------------------------------------------

    def _fields(self, msg: Message, **more: Any) -> dict[str, Any]:
        """The structured log fields of a job's lines."""
        return {"batch_id": msg.get("batch_id"), "job_id": msg.get("job_id"), "attempt": msg.get("attempt"),
                "job_name": msg.get("name"), "queue": msg.get("queue"), "worker": self.worker_id, **more}

    async def _run(self, msg: Message, slot: _Slot) -> None:
        with self.job_tracer.run(msg) as span:
            await self._attempt(msg, span, slot)

    async def _attempt(self, msg: Message, span: JobSpan, slot: _Slot) -> None:
        name = msg.get("name")
        handler = self.registry.get(name) if name else None
        if handler is None:
            known = ", ".join(self.registry.names) or "none"
            error = f"UnknownJob: no handler for job {name!r} on worker {self.worker_id} (it knows: {known})"
            log.error("%s", error, extra=self._fields(msg))
            await self._report(msg, span, time.monotonic(), failure=(error, False))
            return
        beats = _Heartbeats(self, msg)  # from the start: a prefetched message keeps its lease while it waits
        try:
            async with self._slots:
                if beats.lost:  # while it waited
                    call = None
                else:
                    log.info("job %s (%s) attempt %s of batch %s started", msg["job_id"], name, msg["attempt"],
                             msg["batch_id"], extra=self._fields(msg, kind=msg.get("kind")))
                    began = time.monotonic()
                    ctx = JobContext.from_message(msg, self._add_jobs, self._loop)
                    call = beats.job = asyncio.create_task(self._call(handler, msg.get("args") or {}, ctx))
                    try:
                        await asyncio.wait({call})  # unlike `await call`, being cancelled here leaves the job to the finally
                    finally:
                        if not call.done():
                            call.cancel()  # we were cancelled (the worker is stopping)
        finally:
            beats.stop()
        if self.reporter.backlog < self.reporter.max_batch:
            # The handler is done: the worker may take another message while the report goes
            # out (with others). Only while reports keep up: a backlog holds its place until sent.
            slot.free()
        if beats.lost or call is None:
            self.stats.abandoned += 1
            span.ended("abandoned", "lease lost")
            log.warning("job %s attempt %s: lease lost; abandoning it", msg["job_id"], msg["attempt"],
                        extra=self._fields(msg, outcome="abandoned"))
            return
        try:
            value = call.result()
        except PermanentError as exc:
            await self._report(msg, span, began, failure=(_describe(exc), False))
        except asyncio.CancelledError:
            self.stats.abandoned += 1  # lost the lease while finishing, or shutting down
            span.ended("abandoned", "cancelled")
            log.warning("job %s attempt %s: cancelled", msg["job_id"], msg["attempt"],
                        extra=self._fields(msg, outcome="abandoned", duration_s=_since(began)))
        except Exception as exc:  # noqa: BLE001 - any handler error fails the attempt
            await self._report(msg, span, began, failure=(_describe(exc), True))
        else:
            await self._report(msg, span, began, value=value)

    async def _add_jobs(self, batch_id: str, jobs: list[Any], key: str) -> dict[str, Any]:
        return dict(await self.client.add_jobs(batch_id, jobs, idempotency_key=key))

    async def _call(self, handler: Handler, args: dict[str, Any], ctx: JobContext) -> Any:
        params = (args, ctx) if _wants_context(handler) else (args,)
        if is_async(handler):
            return await handler(*params)
        # Sync handlers run in a thread so they never block heartbeats or other slots; in this
        # task's context, so that their own spans (and context variables) follow the job's.
        run = contextvars.copy_context().run
        return await self._loop.run_in_executor(self._executor, functools.partial(run, handler, *params))

    def _beat_interval(self, msg: Message) -> float:
        if self.heartbeat_interval_s:
            return self.heartbeat_interval_s
        timeout = msg.get("timeout_s")
        if not timeout:  # (an older server's message): from the lease's expiry
            expires = epoch_seconds(msg.get("lease_expires_at")) or time.time() + 60
            timeout = max(1.0, expires - time.time())
        return max(0.05, float(timeout) / 3)

    async def _heartbeat(self, msg: Message) -> bool:
        """Extend the lease once: False when the attempt is no longer ours (404 / 409)."""
        try:
            await self.client.heartbeat(msg["job_id"], msg["attempt"], msg.get("lease"))
        except BatchqError as exc:
            if exc.status_code in (404, 409):
                log.info("heartbeat of job %s refused (%s)", msg["job_id"], exc, extra=self._fields(msg))
                return False
            log.warning("heartbeat of job %s failed: %s", msg["job_id"], exc, extra=self._fields(msg))
        except Exception as exc:  # noqa: BLE001 - try again next beat; the lease has slack
            log.warning("heartbeat of job %s failed: %s", msg["job_id"], exc, extra=self._fields(msg))
        return True

    async def _report(
        self, msg: Message, span: JobSpan, began: float, value: Any = None, failure: tuple[str, bool] | None = None
    ) -> None:
        result: Any = None
        context: Any = None
        if failure is None:
            result, context = (value.result, value.context) if isinstance(value, JobResult) else (value, None)
            problem = _unreportable(result, context)
            if problem:
                failure = (problem, False)
        item: ReportItem = {"job_id": msg["job_id"], "attempt": msg["attempt"], "lease": msg["lease"]}
        if failure is None:
            item["outcome"], item["result"] = "completed", result
            if context is not None:
                item["context"] = context
        else:
            item["outcome"], item["error"], item["retryable"] = "failed", failure[0][:20000] or "error", failure[1]
        if span.traceparent:
            item["traceparent"] = span.traceparent
        took = _since(began)
        try:
            await self.reporter.report(item)
        except BatchqError as exc:
            self.stats.abandoned += 1
            span.ended("abandoned", str(exc))
            log.warning("report of job %s attempt %s refused: %s", msg["job_id"], msg["attempt"], exc,
                        extra=self._fields(msg, outcome="abandoned", duration_s=took))
            return
        except ApiUnreachable as exc:  # the lease will expire and the job be delivered again
            self.stats.abandoned += 1
            span.ended("abandoned", str(exc))
            log.error("could not report job %s attempt %s within %.0fs: %s", msg["job_id"], msg["attempt"],
                      self.report_retry_s, exc, extra=self._fields(msg, outcome="abandoned", duration_s=took))
            return
        except Exception as exc:  # noqa: BLE001 - the lease will expire and the job be delivered again
            self.stats.abandoned += 1
            span.ended("abandoned", str(exc))
            log.exception("could not report job %s attempt %s", msg["job_id"], msg["attempt"],
                          extra=self._fields(msg, outcome="abandoned", duration_s=took))
            return
        span.ended("completed" if failure is None else "failed", None if failure is None else failure[0])
        if failure is None:
            self.stats.completed += 1
            log.info("job %s (%s) attempt %s completed in %.3fs", msg["job_id"], msg.get("name"), msg["attempt"], took,
                     extra=self._fields(msg, outcome="completed", duration_s=took))
        else:
            self.stats.failed += 1
            how = "failed" if failure[1] else "failed for good"
            log.info("job %s (%s) attempt %s %s in %.3fs: %s", msg["job_id"], msg.get("name"), msg["attempt"], how, took,
                     failure[0][:500], extra=self._fields(msg, outcome="failed" if failure[1] else "failed_permanently",
                                                          duration_s=took, error=failure[0][:500]))


class _Slot:
    """One of the messages a worker may hold (started, waiting for a run slot or running)."""

    def __init__(self, slots: asyncio.Semaphore):
        self._slots = slots
        self._held = True

    def free(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()


class _Heartbeats:
    """The heartbeats of one started attempt, every interval until its job has run. The first
    is due one interval after the start: most jobs end sooner, and for them no task is ever
    made. A refused beat (the attempt is no longer ours) cancels the job and marks the lease lost."""

    def __init__(self, worker: Worker, msg: Message):
        self.worker = worker
        self.msg = msg
        self.job: asyncio.Task[Any] | None = None  # the handler's run, once it has a slot
        self.lost = False
        self.interval = worker._beat_interval(msg)
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._begin)

    def _begin(self) -> None:
        if self.job is None or not self.job.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while await self.worker._heartbeat(self.msg):
            await asyncio.sleep(self.interval)
        self.lost = True
        if self.job is not None:
            self.job.cancel()

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


def _since(began: float) -> float:
    return round(time.monotonic() - began, 3)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unreportable(result: Any, context: Any) -> str | None:
    if context is not None and not isinstance(context, dict):
        return f"TypeError: a context update must be a dict, got {type(context).__name__}"
    try:
        json.dumps(result)
        json.dumps(context)
    except (TypeError, ValueError) as exc:
        return f"TypeError: the result is not JSON serializable: {exc}"
    return None


@functools.lru_cache(maxsize=512)
def _wants_context(handler: Handler) -> bool:
    """True unless the handler takes a single positional argument (`def job(args)`)."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) != 1

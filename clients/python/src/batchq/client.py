"""Typed clients for the batchq API: `Client` (blocking) and `AsyncClient` (asyncio).

    from batchq import Client

    with Client("http://127.0.0.1:8000", api_key="…") as client:
        batch = client.create_batch({"jobs": ["SendEmail", {"name": "Resize", "args": {"w": 200}}]})
        for event in client.stream_events(batch["id"]):
            print(event["type"], event["data"])

Both have the same methods with the same arguments; every reply is the JSON the API sent,
typed by the TypedDicts of `batchq.models`. An error reply raises `BatchqError` (`NotFound`
for 404, `Conflict` for 409, `Unauthorized` for 401); an API that cannot be reached raises
`ApiUnreachable`. Several API URLs may be given (a list, or "a,b"): see `batchq._base`.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import httpx

from batchq._base import (
    DEFAULT_API_URL,
    DEFAULT_REPORT_RETRY_S,
    Attempts,
    Call,
    Endpoints,
    SseParser,
    Urls,
    default_headers,
    definition,
    start_items,
)
from batchq.errors import ApiUnreachable, error_from_response
from batchq.models import (
    AddJobsReply,
    Batch,
    BatchPage,
    Caller,
    CallbacksPage,
    Event,
    EventPage,
    Health,
    HeartbeatReply,
    JobDetail,
    JobPage,
    Message,
    Progress,
    QueuesPage,
    Readiness,
    ReportItem,
    ReportOutcome,
    ReportReply,
    Results,
    RetryReply,
    StartsReply,
    StreamsInfo,
    WebhookSecrets,
)

class _Common:
    def __init__(
        self,
        api_url: str | Sequence[str],
        api_key: str | None,
        report_retry_s: float,
        backoff_base_s: float,
        backoff_max_s: float,
    ):
        self.urls = Urls(api_url)
        self.api_key = api_key
        self.report_retry_s = report_retry_s
        self._ep = Endpoints(report_retry_s)
        self._backoff = (backoff_base_s, backoff_max_s)

    @property
    def api_url(self) -> str:
        """The URL requests go to now."""
        return self.urls.current()[1]

    def _attempts(self, call: Call) -> Attempts:
        return Attempts(call, self.urls, *self._backoff)


class Client(_Common):
    """The batchq API over blocking HTTP (thread-safe: httpx.Client is)."""

    def __init__(
        self,
        api_url: str | Sequence[str] = DEFAULT_API_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        report_retry_s: float = DEFAULT_REPORT_RETRY_S,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(api_url, api_key, report_retry_s, backoff_base_s, backoff_max_s)
        self._http = httpx.Client(transport=transport, timeout=timeout_s, headers=default_headers(api_key, headers))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _send(self, call: Call, stream: bool = False) -> httpx.Response:
        attempts = self._attempts(call)
        while True:
            index, url = attempts.target()
            try:
                request = self._http.build_request(call.method, url, **call.request_kwargs())
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                wait = attempts.after_error(index, exc)
                if wait is None:
                    raise ApiUnreachable(self.urls.all[index], exc) from exc
                time.sleep(wait)
                continue
            if response.is_success or response.status_code in call.accept:
                return response
            if stream:
                response.read()
                response.close()
            wait = attempts.after_response(index, response)
            if wait is None:
                raise error_from_response(response)
            time.sleep(wait)

    def _json(self, call: Call) -> Any:
        return self._send(call).json()

    # ---- batches ------------------------------------------------------------------------

    def create_batch(
        self, body: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> Batch:
        """POST /v1/batches: a parallel batch (or a chain with `type="chain"`), from a dict and/or keywords."""
        return cast(Batch, self._json(self._ep.create_batch(definition(body, fields), idempotency_key)))

    def create_chain(
        self, body: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> Batch:
        """POST /v1/chains: jobs one after another, passing the context along."""
        return cast(Batch, self._json(self._ep.create_chain(definition(body, fields), idempotency_key)))

    def list_batches(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        type: str | None = None,  # noqa: A002 (the API's name)
        limit: int | None = None,
        before: str | None = None,
    ) -> BatchPage:
        """GET /v1/batches, newest first; the reply's `next` is the `before` of the next page."""
        return cast(BatchPage, self._json(self._ep.list_batches(status, queue, limit, before, type)))

    def get_batch(self, batch_id: str) -> Batch:
        return cast(Batch, self._json(self._ep.get_batch(batch_id)))

    def progress(self, batch_id: str) -> Progress:
        return cast(Progress, self._json(self._ep.progress(batch_id)))

    def list_jobs(
        self, batch_id: str, *, status: str | None = None, kind: str | None = None, limit: int | None = None,
        offset: int | None = None,
    ) -> JobPage:
        return cast(JobPage, self._json(self._ep.list_jobs(batch_id, status, kind, limit, offset)))

    def get_job(self, batch_id: str, job_id: str) -> JobDetail:
        """One job with its result and every attempt (`attempt_history`)."""
        return cast(JobDetail, self._json(self._ep.get_job(batch_id, job_id)))

    def results(self, batch_id: str) -> Results:
        return cast(Results, self._json(self._ep.results(batch_id)))

    def add_jobs(self, batch_id: str, jobs: list[Any], *, idempotency_key: str | None = None) -> AddJobsReply:
        """POST /v1/batches/{id}/jobs: the batch (no context), how many were added, their ids."""
        return cast(AddJobsReply, self._json(self._ep.add_jobs(batch_id, jobs, idempotency_key)))

    def cancel(self, batch_id: str) -> Batch:
        return cast(Batch, self._json(self._ep.cancel(batch_id)))

    def retry(self, batch_id: str) -> RetryReply:
        """Run every failed job of the batch again."""
        return cast(RetryReply, self._json(self._ep.retry(batch_id)))

    def retry_jobs(self, batch_id: str, job_ids: Iterable[str]) -> RetryReply:
        return cast(RetryReply, self._json(self._ep.retry_jobs(batch_id, job_ids)))

    def events(self, batch_id: str, *, after: int = 0) -> EventPage:
        """One JSON page of the batch's events with an id above `after`."""
        return cast(EventPage, self._json(self._ep.events(batch_id, after)))

    def stream_events(self, batch_id: str, *, after: int = 0) -> Iterator[Event]:
        """The batch's events as they happen (history first), until the batch ends.

        A dropped connection is resumed from the last event received (Last-Event-ID).
        """
        parser = SseParser()
        parser.last_id = str(after) if after else None
        while True:
            progressed = False
            try:
                response = self._send(self._ep.event_stream(batch_id, parser.after), stream=True)
                try:
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            progressed = True
                            yield cast(Event, event)
                finally:
                    response.close()
                return  # the server closes the stream once the batch has ended
            except httpx.TransportError as exc:
                if not progressed:
                    raise ApiUnreachable(self.api_url, exc) from exc

    def callbacks(self, batch_id: str) -> CallbacksPage:
        """Every webhook of the batch and each delivery attempt."""
        return cast(CallbacksPage, self._json(self._ep.callbacks(batch_id)))

    # ---- queues and workers -------------------------------------------------------------

    def queues(self) -> QueuesPage:
        return cast(QueuesPage, self._json(self._ep.queues()))

    def claim(self, queue: str, *, max: int = 1, wait_s: float = 0.0, worker: str | None = None) -> list[Message]:
        """Long-poll a queue for up to `max` messages, already started (each carries its lease)."""
        return cast(list[Message], self._json(self._ep.claim(queue, max, wait_s, worker))["messages"])

    def queue_streams(self, queue: str) -> StreamsInfo:
        """The Redis streams and consumer group a direct reader of the queue reads (409 on the SQL queue)."""
        return cast(StreamsInfo, self._json(self._ep.queue_streams(queue)))

    def start(self, job_id: str, attempt: int, *, worker: str | None = None) -> Message:
        """Take the lease of an attempt read straight from the broker."""
        return cast(Message, self._json(self._ep.start(job_id, attempt, worker)))

    def start_many(
        self, attempts: Iterable[tuple[str, int] | tuple[str, int, str] | Mapping[str, Any]], *, worker: str | None = None
    ) -> StartsReply:
        return cast(StartsReply, self._json(self._ep.start_many(start_items(attempts), worker)))

    def heartbeat(self, job_id: str, attempt: int, lease: str | None = None) -> HeartbeatReply:
        return cast(HeartbeatReply, self._json(self._ep.heartbeat(job_id, attempt, lease)))

    def complete(
        self, job_id: str, attempt: int, lease: str | None = None, *, result: Any = None,
        context: dict[str, Any] | None = None,
    ) -> ReportReply:
        return cast(ReportReply, self._json(self._ep.complete(job_id, attempt, lease, result, context)))

    def fail(self, job_id: str, attempt: int, lease: str | None = None, *, error: str, retryable: bool = True) -> ReportReply:
        return cast(ReportReply, self._json(self._ep.fail(job_id, attempt, lease, error, retryable)))

    def report_many(self, reports: Sequence[ReportItem]) -> list[ReportOutcome]:
        """Several outcomes in one call; each gets its own `status_code` (200, or 404/409)."""
        return cast(list[ReportOutcome], self._json(self._ep.report_many(list(reports)))["results"])

    # ---- system -------------------------------------------------------------------------

    def health(self) -> Health:
        return cast(Health, self._json(self._ep.health()))

    def ready(self) -> Readiness:
        """The store and the broker answer (`status` "ok"), or not ("unavailable")."""
        return cast(Readiness, self._json(self._ep.ready()))

    def me(self) -> Caller:
        """The tenant, scopes and queues of this client's API key."""
        return cast(Caller, self._json(self._ep.me()))

    def webhook_secret(self) -> WebhookSecrets:
        """The secrets webhook deliveries are signed with, for a receiver to verify them (admin keys only)."""
        return cast(WebhookSecrets, self._json(self._ep.webhook_secret()))


class AsyncClient(_Common):
    """The batchq API over asyncio HTTP: the same methods as `Client`, awaited."""

    def __init__(
        self,
        api_url: str | Sequence[str] = DEFAULT_API_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        report_retry_s: float = DEFAULT_REPORT_RETRY_S,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
    ):
        super().__init__(api_url, api_key, report_retry_s, backoff_base_s, backoff_max_s)
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout_s,
            headers=default_headers(api_key, headers),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _send(self, call: Call, stream: bool = False) -> httpx.Response:
        attempts = self._attempts(call)
        while True:
            index, url = attempts.target()
            try:
                request = self._http.build_request(call.method, url, **call.request_kwargs())
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                wait = attempts.after_error(index, exc)
                if wait is None:
                    raise ApiUnreachable(self.urls.all[index], exc) from exc
                await asyncio.sleep(wait)
                continue
            if response.is_success or response.status_code in call.accept:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            wait = attempts.after_response(index, response)
            if wait is None:
                raise error_from_response(response)
            await asyncio.sleep(wait)

    async def _json(self, call: Call) -> Any:
        return (await self._send(call)).json()

    # ---- batches ------------------------------------------------------------------------

    async def create_batch(
        self, body: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> Batch:
        return cast(Batch, await self._json(self._ep.create_batch(definition(body, fields), idempotency_key)))

    async def create_chain(
        self, body: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> Batch:
        return cast(Batch, await self._json(self._ep.create_chain(definition(body, fields), idempotency_key)))

    async def list_batches(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        type: str | None = None,  # noqa: A002 (the API's name)
        limit: int | None = None,
        before: str | None = None,
    ) -> BatchPage:
        return cast(BatchPage, await self._json(self._ep.list_batches(status, queue, limit, before, type)))

    async def get_batch(self, batch_id: str) -> Batch:
        return cast(Batch, await self._json(self._ep.get_batch(batch_id)))

    async def progress(self, batch_id: str) -> Progress:
        return cast(Progress, await self._json(self._ep.progress(batch_id)))

    async def list_jobs(
        self, batch_id: str, *, status: str | None = None, kind: str | None = None, limit: int | None = None,
        offset: int | None = None,
    ) -> JobPage:
        return cast(JobPage, await self._json(self._ep.list_jobs(batch_id, status, kind, limit, offset)))

    async def get_job(self, batch_id: str, job_id: str) -> JobDetail:
        return cast(JobDetail, await self._json(self._ep.get_job(batch_id, job_id)))

    async def results(self, batch_id: str) -> Results:
        return cast(Results, await self._json(self._ep.results(batch_id)))

    async def add_jobs(self, batch_id: str, jobs: list[Any], *, idempotency_key: str | None = None) -> AddJobsReply:
        return cast(AddJobsReply, await self._json(self._ep.add_jobs(batch_id, jobs, idempotency_key)))

    async def cancel(self, batch_id: str) -> Batch:
        return cast(Batch, await self._json(self._ep.cancel(batch_id)))

    async def retry(self, batch_id: str) -> RetryReply:
        return cast(RetryReply, await self._json(self._ep.retry(batch_id)))

    async def retry_jobs(self, batch_id: str, job_ids: Iterable[str]) -> RetryReply:
        return cast(RetryReply, await self._json(self._ep.retry_jobs(batch_id, job_ids)))

    async def events(self, batch_id: str, *, after: int = 0) -> EventPage:
        return cast(EventPage, await self._json(self._ep.events(batch_id, after)))

    async def stream_events(self, batch_id: str, *, after: int = 0) -> AsyncIterator[Event]:
        """The batch's events as they happen (history first), until the batch ends."""
        parser = SseParser()
        parser.last_id = str(after) if after else None
        while True:
            progressed = False
            try:
                response = await self._send(self._ep.event_stream(batch_id, parser.after), stream=True)
                try:
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            progressed = True
                            yield cast(Event, event)
                finally:
                    await response.aclose()
                return
            except httpx.TransportError as exc:
                if not progressed:
                    raise ApiUnreachable(self.api_url, exc) from exc

    async def callbacks(self, batch_id: str) -> CallbacksPage:
        return cast(CallbacksPage, await self._json(self._ep.callbacks(batch_id)))

    # ---- queues and workers -------------------------------------------------------------

    async def queues(self) -> QueuesPage:
        return cast(QueuesPage, await self._json(self._ep.queues()))

    async def claim(self, queue: str, *, max: int = 1, wait_s: float = 0.0, worker: str | None = None) -> list[Message]:
        return cast(list[Message], (await self._json(self._ep.claim(queue, max, wait_s, worker)))["messages"])

    async def queue_streams(self, queue: str) -> StreamsInfo:
        return cast(StreamsInfo, await self._json(self._ep.queue_streams(queue)))

    async def start(self, job_id: str, attempt: int, *, worker: str | None = None) -> Message:
        return cast(Message, await self._json(self._ep.start(job_id, attempt, worker)))

    async def start_many(
        self, attempts: Iterable[tuple[str, int] | tuple[str, int, str] | Mapping[str, Any]], *, worker: str | None = None
    ) -> StartsReply:
        return cast(StartsReply, await self._json(self._ep.start_many(start_items(attempts), worker)))

    async def heartbeat(self, job_id: str, attempt: int, lease: str | None = None) -> HeartbeatReply:
        return cast(HeartbeatReply, await self._json(self._ep.heartbeat(job_id, attempt, lease)))

    async def complete(
        self, job_id: str, attempt: int, lease: str | None = None, *, result: Any = None,
        context: dict[str, Any] | None = None,
    ) -> ReportReply:
        return cast(ReportReply, await self._json(self._ep.complete(job_id, attempt, lease, result, context)))

    async def fail(
        self, job_id: str, attempt: int, lease: str | None = None, *, error: str, retryable: bool = True
    ) -> ReportReply:
        return cast(ReportReply, await self._json(self._ep.fail(job_id, attempt, lease, error, retryable)))

    async def report_many(self, reports: Sequence[ReportItem]) -> list[ReportOutcome]:
        return cast(list[ReportOutcome], (await self._json(self._ep.report_many(list(reports))))["results"])

    # ---- system -------------------------------------------------------------------------

    async def health(self) -> Health:
        return cast(Health, await self._json(self._ep.health()))

    async def ready(self) -> Readiness:
        return cast(Readiness, await self._json(self._ep.ready()))

    async def me(self) -> Caller:
        return cast(Caller, await self._json(self._ep.me()))

    async def webhook_secret(self) -> WebhookSecrets:
        return cast(WebhookSecrets, await self._json(self._ep.webhook_secret()))
